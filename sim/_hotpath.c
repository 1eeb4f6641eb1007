/*
 * acrn-sim native hot path: the per-basic-block hook of the vCPU engine.
 *
 * Registered with Unicorn's own C API (uc_hook_add, UC_HOOK_BLOCK). For every block Unicorn is
 * about to run it looks up the block's cost in an open-addressing table keyed by
 * (address, size), stops the engine when the cycle budget is spent, and otherwise charges the
 * cost. Python is called only for a block the table does not hold (to decode and cost it once,
 * sim/blockcost.py), and for every block while `slow` is set (the interrupt window, which needs
 * RFLAGS.IF). The pure-Python path in sim/engine.py does the same steps with the same fields, so
 * both give the same cycle counts.
 *
 * The module is built as a CPython extension only so that pip builds it; Python reaches the
 * functions below through ctypes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef int (*uc_emu_stop_fn)(void *uc);
/* Python: decode and cost a new block; returns its cost, or -1 if it stopped the engine. */
typedef int64_t (*miss_fn)(uint64_t address, uint32_t size);
/* Python: the whole per-block step, for slow mode. */
typedef void (*slow_fn)(uint64_t address, uint32_t size);

struct slot {
    uint64_t address;
    uint32_t size;
    uint32_t used;
    uint64_t cost;
    uint64_t ninsns;
};

/* Field order is mirrored by sim/hotpath.py (HotPathState). */
struct hotpath {
    uint64_t cycles;   /* guest cycles charged in this slice */
    uint64_t budget;   /* stop at the first block that starts at or after this */
    uint64_t cur_address; /* the block executing now (last charged) */
    uint64_t cur_size;
    uint64_t stop;     /* set when the budget stopped the engine */
    uint64_t stop_address;
    uint64_t slow;     /* call slow_cb for every block */
    uint64_t blocks;   /* blocks executed (statistics) */
    uint64_t insns;    /* guest instructions executed (statistics) */
    uc_emu_stop_fn emu_stop;
    miss_fn miss_cb;
    slow_fn slow_cb;
    struct slot *slots;
    uint64_t mask;
    uint64_t count;
    /* The last block looked up, so a loop that re-runs one block skips the hash probe.
     * Reset by hp_insert and hp_clear (a re-costed block must not be served stale). */
    uint64_t last_address;
    uint64_t last_size; /* 0: empty (Unicorn never reports a zero-size block) */
    uint64_t last_cost;
    uint64_t last_ninsns;
};

static inline uint64_t hash_key(uint64_t address, uint32_t size) {
    uint64_t h = address * 0x9E3779B97F4A7C15ull ^ ((uint64_t)size << 17);
    return h ^ (h >> 29);
}

static struct slot *find(struct hotpath *hp, uint64_t address, uint32_t size) {
    uint64_t i = hash_key(address, size) & hp->mask;
    for (;;) {
        struct slot *s = &hp->slots[i];
        if (!s->used)
            return s;
        if (s->address == address && s->size == size)
            return s;
        i = (i + 1) & hp->mask;
    }
}

static int grow(struct hotpath *hp) {
    uint64_t old_n = hp->mask + 1, n = old_n * 2;
    struct slot *old = hp->slots;
    struct slot *slots = calloc(n, sizeof *slots);
    if (!slots)
        return -1;
    hp->slots = slots;
    hp->mask = n - 1;
    hp->count = 0;
    for (uint64_t i = 0; i < old_n; i++)
        if (old[i].used) {
            struct slot *s = find(hp, old[i].address, old[i].size);
            *s = old[i];
            hp->count++;
        }
    free(old);
    return 0;
}

struct hotpath *hp_new(void *emu_stop, void *miss_cb, void *slow_cb) {
    struct hotpath *hp = calloc(1, sizeof *hp);
    if (!hp)
        return NULL;
    hp->mask = 1023;
    hp->slots = calloc(hp->mask + 1, sizeof *hp->slots);
    if (!hp->slots) {
        free(hp);
        return NULL;
    }
    hp->emu_stop = (uc_emu_stop_fn)emu_stop;
    hp->miss_cb = (miss_fn)miss_cb;
    hp->slow_cb = (slow_fn)slow_cb;
    return hp;
}

void hp_free(struct hotpath *hp) {
    if (hp) {
        free(hp->slots);
        free(hp);
    }
}

int hp_insert(struct hotpath *hp, uint64_t address, uint32_t size, uint64_t cost, uint64_t ninsns) {
    if ((hp->count + 1) * 2 > hp->mask + 1 && grow(hp) < 0)
        return -1;
    struct slot *s = find(hp, address, size);
    if (!s->used) {
        s->used = 1;
        s->address = address;
        s->size = size;
        hp->count++;
    }
    s->cost = cost;
    s->ninsns = ninsns;
    hp->last_size = 0;
    return 0;
}

void hp_clear(struct hotpath *hp) {
    memset(hp->slots, 0, (hp->mask + 1) * sizeof *hp->slots);
    hp->count = 0;
    hp->last_size = 0;
}

/* The UC_HOOK_BLOCK callback: void (uc_engine *, uint64_t, uint32_t, void *user_data). */
void hp_block_hook(void *uc, uint64_t address, uint32_t size, void *user_data) {
    struct hotpath *hp = user_data;
    if (__builtin_expect(hp->slow, 0)) {
        hp->slow_cb(address, size);
        return;
    }
    if (__builtin_expect(address != hp->last_address || size != hp->last_size, 0)) {
        struct slot *s = find(hp, address, size);
        if (!s->used) {
            if (hp->miss_cb(address, size) < 0)
                return; /* Python stopped the engine (the block must be translated again) */
            s = find(hp, address, size); /* inserted by the callback (the table may have grown) */
        }
        hp->last_address = address;
        hp->last_size = size;
        hp->last_cost = s->cost;
        hp->last_ninsns = s->ninsns;
    }
    if (__builtin_expect(hp->cycles >= hp->budget, 0)) {
        hp->stop = 1;
        hp->stop_address = address;
        hp->emu_stop(uc);
        return;
    }
    hp->cycles += hp->last_cost;
    hp->cur_address = address;
    hp->cur_size = size;
    hp->blocks++;
    hp->insns += hp->last_ninsns;
}

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_hotpath",
                                    "acrn-sim native block hook (used through ctypes)", -1, NULL};

PyMODINIT_FUNC PyInit__hotpath(void) { return PyModule_Create(&module); }
