/*
 * acrn-sim native hot path: the per-basic-block hook of the vCPU engine.
 *
 * Registered with Unicorn's own C API (uc_hook_add, UC_HOOK_BLOCK). For every block Unicorn is
 * about to run it looks up the block's cost in an open-addressing table keyed by
 * (address, size), stops the engine when the cycle budget is spent, and otherwise charges the
 * cost. A block the table does not hold is decoded and costed once, in C (sim/_decode.c) or,
 * when that cannot decide it, by Python (sim/blockcost.py). While interrupt-window exiting is
 * on (`slow`), it also stops in front of a block that would run with RFLAGS.IF set outside an
 * interrupt shadow. The pure-Python path in sim/engine.py does the same steps with the same
 * fields, so both give the same cycle counts. A PAUSE has a code hook of its own (hp_pause_hook), which
 * decides PAUSE-loop exiting and stops the engine only for the PAUSEs Python must see.
 *
 * The module is built as a CPython extension so that pip builds it. Python reaches the hook's
 * functions through ctypes (Unicorn calls them, not Python); the few Unicorn calls made at
 * every VM exit are Python functions at the end of this file.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "_hotpath.h"

#define HP_STOP_BUDGET 1 /* hp->stop: the budget ran out (sim/engine.py Engine.run) */
#define HP_STOP_WINDOW 2 /* the interrupt window is open */
#define RFLAGS_IF (1ull << 9)

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

struct hotpath *hp_new(void *emu_stop, void *miss_cb) {
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
    return hp;
}

void hp_free(struct hotpath *hp) {
    if (hp) {
        hp_decoder_free(hp->dec);
        free(hp->tsc);
        free(hp->pages);
        free(hp->slots);
        free(hp);
    }
}

static int page_find(struct hotpath *hp, uint64_t key, uint64_t **at) {
    uint64_t i = hash_key(key, 0) & hp->pages_mask;
    for (;;) {
        uint64_t *p = &hp->pages[i];
        if (*p == key || *p == 0) {
            *at = p;
            return *p == key;
        }
        i = (i + 1) & hp->pages_mask;
    }
}

static int page_add(struct hotpath *hp, uint64_t page) {
    uint64_t *at;
    if ((hp->pages_count + 1) * 2 > hp->pages_mask + 1) {
        uint64_t old_n = hp->pages_mask + 1, *old = hp->pages;
        uint64_t *pages = calloc(old_n * 2, sizeof *pages);
        if (!pages)
            return -1;
        hp->pages = pages;
        hp->pages_mask = old_n * 2 - 1;
        for (uint64_t i = 0; i < old_n; i++)
            if (old[i]) {
                page_find(hp, old[i], &at);
                *at = old[i];
            }
        free(old);
    }
    if (!page_find(hp, page + 1, &at)) {
        *at = page + 1;
        hp->pages_count++;
    }
    return 0;
}

int hp_enable_smc(struct hotpath *hp, void *smc_cb) {
    hp->pages_mask = 255;
    hp->pages = calloc(hp->pages_mask + 1, sizeof *hp->pages);
    if (!hp->pages)
        return -1;
    hp->smc_cb = (smc_fn)smc_cb;
    return 0;
}

void hp_enable_ple(struct hotpath *hp, void *reg_read, int cs_id, int cr0_id, int rflags_id) {
    hp->reg_read = (uc_reg_read_fn)reg_read;
    hp->cs_id = cs_id;
    hp->cr0_id = cr0_id;
    hp->rflags_id = rflags_id;
}

int hp_insert(struct hotpath *hp, uint64_t address, uint32_t size, uint64_t cost, uint64_t ninsns,
              int shadow) {
    if (hp->smc_cb) {
        for (uint64_t page = address >> 12; page <= (address + size - 1) >> 12; page++)
            if (page_add(hp, page) < 0)
                return -1;
    }
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
    s->shadow = (uint64_t)(shadow != 0);
    hp->last_size = 0;
    return 0;
}

static struct tsc_slot *tsc_find(struct hotpath *hp, uint64_t block, uint32_t size, uint64_t rip) {
    uint64_t i = (hash_key(block, size) ^ hash_key(rip, 0)) & hp->tsc_mask;
    for (;;) {
        struct tsc_slot *s = &hp->tsc[i];
        if (!s->used || (s->block == block && s->size == size && s->rip == rip))
            return s;
        i = (i + 1) & hp->tsc_mask;
    }
}

/* An RDTSC or RDTSCP at `rip` in the block (block, size), `tail` cycles from it to the block's
 * end. Without hp_enable_tsc there is no table: nothing to keep. */
int hp_insert_tsc(struct hotpath *hp, uint64_t block, uint32_t size, uint64_t rip, uint64_t tail) {
    if (!hp->tsc)
        return 0;
    if ((hp->tsc_count + 1) * 2 > hp->tsc_mask + 1) {
        uint64_t old_n = hp->tsc_mask + 1;
        struct tsc_slot *old = hp->tsc, *t = calloc(old_n * 2, sizeof *t);
        if (!t)
            return -1;
        hp->tsc = t;
        hp->tsc_mask = old_n * 2 - 1;
        for (uint64_t i = 0; i < old_n; i++)
            if (old[i].used)
                *tsc_find(hp, old[i].block, old[i].size, old[i].rip) = old[i];
        free(old);
    }
    struct tsc_slot *s = tsc_find(hp, block, size, rip);
    if (!s->used) {
        s->used = 1;
        s->block = block;
        s->size = size;
        s->rip = rip;
        hp->tsc_count++;
    }
    s->tail = tail;
    return 0;
}

int hp_enable_tsc(struct hotpath *hp, void *reg_write, void *tsc_cb, int rip_id, int rax_id,
                  int rdx_id, int rcx_id) {
    hp->tsc_mask = 255;
    hp->tsc = calloc(hp->tsc_mask + 1, sizeof *hp->tsc);
    if (!hp->tsc)
        return -1;
    hp->reg_write = (uc_reg_write_fn)reg_write;
    hp->tsc_cb = (tsc_fn)tsc_cb;
    hp->rip_id = rip_id;
    hp->rax_id = rax_id;
    hp->rdx_id = rdx_id;
    hp->rcx_id = rcx_id;
    return 0;
}

/* RDTSC/RDTSCP (a UC_HOOK_INSN callback; returning 1 skips Unicorn's own, which would read
 * the host's clock): the virtual TSC at this instruction, as Engine.now gives it. The block
 * hook charged the whole block when it started, so the cycles from this instruction to the
 * block's end have not run yet and are taken off. ACRN does not exit on RDTSC (TSC
 * offsetting, vmcs.c); the value is the guest's TSC. Python does the cases without a table
 * entry (a block decoded before the entry could be made). */
static int rdtsc(void *uc, struct hotpath *hp, int rdtscp) {
    uint64_t tail = 0;
    if (hp->cur_size) {
        uint64_t rip = 0;
        hp->reg_read(uc, hp->rip_id, &rip);
        struct tsc_slot *s = tsc_find(hp, hp->cur_address, (uint32_t)hp->cur_size, rip);
        if (!s->used)
            return hp->tsc_cb(rdtscp);
        tail = s->tail;
    }
    uint64_t t = hp->tsc_base + hp->cycles - tail;
    uint64_t lo = t & 0xFFFFFFFFull, hi = t >> 32;
    hp->reg_write(uc, hp->rax_id, &lo);
    hp->reg_write(uc, hp->rdx_id, &hi);
    if (rdtscp)
        hp->reg_write(uc, hp->rcx_id, &hp->tsc_aux);
    return 1;
}

int hp_rdtsc_hook(void *uc, void *user_data) { return rdtsc(uc, user_data, 0); }

int hp_rdtscp_hook(void *uc, void *user_data) { return rdtsc(uc, user_data, 1); }

void hp_clear(struct hotpath *hp) {
    memset(hp->slots, 0, (hp->mask + 1) * sizeof *hp->slots);
    hp->count = 0;
    if (hp->tsc) {
        memset(hp->tsc, 0, (hp->tsc_mask + 1) * sizeof *hp->tsc);
        hp->tsc_count = 0;
    }
    if (hp->pages) {
        memset(hp->pages, 0, (hp->pages_mask + 1) * sizeof *hp->pages);
        hp->pages_count = 0;
    }
    hp->last_size = 0;
}

/* The UC_HOOK_BLOCK callback: void (uc_engine *, uint64_t, uint32_t, void *user_data). */
void hp_block_hook(void *uc, uint64_t address, uint32_t size, void *user_data) {
    struct hotpath *hp = user_data;
    if (__builtin_expect(address != hp->last_address || size != hp->last_size, 0)) {
        struct slot *s = find(hp, address, size);
        if (!s->used) {
            /* A new block: decoded here when it can be (sim/_decode.c), else by Python */
            if ((!hp->dec || hp_decode_block(hp, uc, address, size) < 0) &&
                hp->miss_cb(address, size) < 0)
                return; /* Python stopped the engine (the block must be translated again) */
            s = find(hp, address, size); /* inserted by either (the table may have grown) */
        }
        hp->last_address = address;
        hp->last_size = size;
        hp->last_cost = s->cost;
        hp->last_ninsns = s->ninsns;
        hp->last_shadow = s->shadow;
    }
    if (__builtin_expect(hp->cycles >= hp->budget, 0)) {
        hp->stop = HP_STOP_BUDGET;
        hp->stop_address = address;
        hp->emu_stop(uc);
        return;
    }
    if (__builtin_expect(hp->slow, 0)) {
        /* Interrupt-window exiting (SDM Vol. 3 §25.2): exit before an instruction that runs
         * with RFLAGS.IF = 1 and no blocking by STI/MOV SS, the shadow of the block that just
         * ended right here. Checked at block starts, as the Python hook does (Engine._py_step). */
        int shadow = hp->cur_size && hp->cur_shadow && hp->cur_address + hp->cur_size == address;
        uint64_t rflags = 0;
        if (!shadow && (hp->reg_read(uc, hp->rflags_id, &rflags), rflags & RFLAGS_IF)) {
            hp->stop = HP_STOP_WINDOW;
            hp->stop_address = address;
            hp->emu_stop(uc);
            return;
        }
    }
    hp->cycles += hp->last_cost;
    hp->cur_shadow = hp->last_shadow;
    hp->cur_address = address;
    hp->cur_size = size;
    hp->blocks += hp->last_ninsns != 0; /* (one that starts with an exiting instruction: none ran) */
    hp->insns += hp->last_ninsns;
}

/* A UC_HOOK_CODE callback registered on one address: an instruction that must exit (found
 * when its block was decoded). Stopping here ends the run before the instruction executes,
 * with RIP on it. (Unicorn's `exits` do the same, but every uc_emu_start then invalidates the
 * translation of every block leading to an exit, and the next run translates them again.) */
void hp_exit_hook(void *uc, uint64_t address, uint32_t size, void *user_data) {
    struct hotpath *hp = user_data;
    (void)address, (void)size;
    hp->emu_stop(uc);
}

/* A UC_HOOK_CODE callback registered on one PAUSE, in place of hp_exit_hook: PAUSE-loop
 * exiting (SDM Vol. 3 §25.1.3). A PAUSE more than PLE_Gap after the previous one ended (or
 * the first one since a VM entry) starts a loop; one more than PLE_Window after the loop's
 * first VM-exits; at CPL > 0 a PAUSE neither counts nor exits. A PAUSE
 * that does not exit is done here, with no stop: the loop's state is updated, PAUSE's cost
 * charged, and Unicorn runs it (a NOP). The block hook charged this block only up to the
 * PAUSE (sim/blockcost.py BlockInfo), so the rest of it, from the next instruction to the
 * block's end, is charged here as the block hook charges a block: exactly what a stop in
 * front of the PAUSE charged, when the next run started a block at the next instruction.
 * (The engine decodes that rest with the block, Engine._new_block.)
 * Anything else stops the engine in front of the PAUSE, and Python decides it from the same
 * state (hv/arch/vmx.py, sim/hotpath.py ple_step): an exit, slow mode (the interrupt window),
 * a PAUSE past the slice's budget, a rest not decoded. sim/engine.py _py_pause is this in
 * Python. */
void hp_pause_hook(void *uc, uint64_t address, uint32_t size, void *user_data) {
    struct hotpath *hp = user_data;
    uint64_t now = hp->tsc_base + hp->cycles; /* (modulo 2**64: only differences matter) */
    uint64_t first = hp->ple_first;
    /* PAUSE-loop exiting applies at CPL 0 only, and counts only PAUSEs there (CPL: CS's RPL
     * in protected mode, as hv/arch/vmx.py reads it) */
    uint64_t cs = 0, cr0 = 0;
    hp->reg_read(uc, hp->cs_id, &cs);
    if (cs & 3) /* (CR0 only then: in the kernel's spin loops RPL is 0) */
        hp->reg_read(uc, hp->cr0_id, &cr0);
    int cpl0 = !(cs & 3 && cr0 & 1);
    if (cpl0 && (!hp->ple_valid || now - hp->ple_last > hp->ple_gap))
        first = now; /* the first PAUSE of a loop */
    uint64_t next = address + size, end = hp->cur_address + hp->cur_size;
    uint64_t cost = 0, ninsns = 0;
    if (hp->slow || (cpl0 && now - first > hp->ple_window) ||
        hp->cycles + hp->pause_cost >= hp->budget ||
        size == 0 || size > 15 || hp->cur_size == 0 || address < hp->cur_address || next > end) {
        hp->emu_stop(uc);
        return;
    }
    if (next < end) {
        struct slot *s = find(hp, next, (uint32_t)(end - next));
        if (!s->used) {
            hp->emu_stop(uc);
            return;
        }
        cost = s->cost;
        ninsns = s->ninsns;
        hp->cur_address = next;
        hp->cur_size = end - next;
        hp->cur_shadow = s->shadow;
        hp->blocks += ninsns != 0;
    }
    if (cpl0) {
        hp->ple_valid = 1;
        hp->ple_first = first;
        hp->ple_last = now + hp->pause_cost;
    }
    hp->cycles += hp->pause_cost + cost;
    hp->insns += 1 + ninsns;
    hp->pauses++;
}

/* The UC_HOOK_MEM_WRITE callback (only with SMC detection): a store to a page that holds
 * decoded code goes to Python, which drops the blocks it overlaps (sim/engine.py). Unicorn
 * itself translates such blocks again (QEMU's SMC handling); this keeps their costs right. */
void hp_mem_write_hook(void *uc, int type, uint64_t address, int size, int64_t value,
                       void *user_data) {
    struct hotpath *hp = user_data;
    uint64_t *at;
    (void)uc, (void)type, (void)value;
    if (page_find(hp, (address >> 12) + 1, &at) ||
        page_find(hp, ((address + (uint64_t)size - 1) >> 12) + 1, &at))
        hp->smc_cb(address, (uint32_t)size);
}

/* ---- The Unicorn C calls made at every VM exit, as Python functions (sim/ucapi.py).
 * ctypes spends about 0.2 us converting and checking a call's arguments and releasing the GIL;
 * these take Python ints or prepared capsules and call Unicorn's public C API
 * (unicorn/unicorn.h) directly, keeping the GIL (Unicorn calls back into Python from its hooks
 * on this thread, and PyGILState_Ensure there sees the GIL already held). The functions'
 * addresses come from the loaded libunicorn through `bind`, once, with the binding's UcError
 * class, which a failed call raises as Uc's own methods do. */
typedef int (*reg_batch_fn)(void *uc, int *regs, void **vals, int count);
typedef int (*emu_start_fn)(void *uc, uint64_t begin, uint64_t until, uint64_t timeout,
                            size_t count);
static reg_batch_fn uc_read_batch, uc_write_batch;
static emu_start_fn uc_start;
static PyObject *uc_error; /* unicorn.UcError */
static PyObject *str_hook_exception;

/* bind(uc_reg_read_batch, uc_reg_write_batch, uc_emu_start, UcError) */
static PyObject *py_bind(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 4)
        return PyErr_Format(PyExc_TypeError, "bind takes 3 function addresses and UcError");
    uc_read_batch = (reg_batch_fn)PyLong_AsVoidPtr(args[0]);
    uc_write_batch = (reg_batch_fn)PyLong_AsVoidPtr(args[1]);
    uc_start = (emu_start_fn)PyLong_AsVoidPtr(args[2]);
    if (PyErr_Occurred())
        return NULL;
    Py_XSETREF(uc_error, Py_NewRef(args[3]));
    Py_RETURN_NONE;
}

static PyObject *raise_uc_error(int err) {
    PyObject *exc = PyObject_CallFunction(uc_error, "i", err);
    if (exc) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
    return NULL;
}

/* A prepared uc_reg_read_batch/uc_reg_write_batch (a RegBatch's arrays): ids int32[n], ptrs
 * void*[n] pointing into vals uint64[n]. */
struct batch {
    void *uc;
    int *ids;
    void **ptrs;
    uint64_t *vals;
    long n;
};

#define BATCH_CAPSULE "acrn_sim.batch"

static void batch_free(PyObject *capsule) {
    PyMem_Free(PyCapsule_GetPointer(capsule, BATCH_CAPSULE));
}

/* batch(uc, ids, ptrs, vals, n) -> a capsule for reg_read, reg_write and runner. The arrays
 * belong to the RegBatch, which keeps them (and this capsule) alive together. */
static PyObject *py_batch(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 5 || !uc_read_batch)
        return PyErr_Format(PyExc_TypeError, "batch(uc, ids, ptrs, vals, n) after bind");
    struct batch *b = PyMem_Calloc(1, sizeof *b);
    if (!b)
        return PyErr_NoMemory();
    b->uc = PyLong_AsVoidPtr(args[0]);
    b->ids = PyLong_AsVoidPtr(args[1]);
    b->ptrs = PyLong_AsVoidPtr(args[2]);
    b->vals = PyLong_AsVoidPtr(args[3]);
    b->n = PyLong_AsLong(args[4]);
    PyObject *capsule = PyErr_Occurred() ? NULL : PyCapsule_New(b, BATCH_CAPSULE, batch_free);
    if (!capsule)
        PyMem_Free(b);
    return capsule;
}

static PyObject *batch_values(struct batch *b) {
    int err = uc_read_batch(b->uc, b->ids, b->ptrs, (int)b->n);
    if (err)
        return raise_uc_error(err);
    PyObject *out = PyList_New(b->n);
    if (!out)
        return NULL;
    for (long i = 0; i < b->n; i++) {
        PyObject *v = PyLong_FromUnsignedLongLong(b->vals[i]);
        if (!v) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, v);
    }
    return out;
}

/* reg_read(batch) -> the n registers' values, a list of ints */
static PyObject *py_reg_read(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 1)
        return PyErr_Format(PyExc_TypeError, "reg_read(batch)");
    struct batch *b = PyCapsule_GetPointer(args[0], BATCH_CAPSULE);
    return b ? batch_values(b) : NULL;
}

/* reg_write(batch, values): the n values (ints, taken modulo 2**64) into the registers */
static PyObject *py_reg_write(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 2)
        return PyErr_Format(PyExc_TypeError, "reg_write(batch, values)");
    struct batch *b = PyCapsule_GetPointer(args[0], BATCH_CAPSULE);
    if (!b)
        return NULL;
    PyObject *seq = PySequence_Fast(args[1], "reg_write: values must be a sequence");
    if (!seq)
        return NULL;
    if (PySequence_Fast_GET_SIZE(seq) != b->n) {
        Py_DECREF(seq);
        return PyErr_Format(PyExc_ValueError, "reg_write: %ld registers, %zd values", b->n,
                            PySequence_Fast_GET_SIZE(seq));
    }
    for (long i = 0; i < b->n; i++) {
        b->vals[i] = PyLong_AsUnsignedLongLongMask(PySequence_Fast_GET_ITEM(seq, i));
        if (PyErr_Occurred()) {
            Py_DECREF(seq);
            return NULL;
        }
    }
    Py_DECREF(seq);
    int err = uc_write_batch(b->uc, b->ids, b->ptrs, (int)b->n);
    if (err)
        return raise_uc_error(err);
    Py_RETURN_NONE;
}

/* ---- One run of guest code at a VM entry, in one call (Engine.run).
 * A runner holds what every run of one engine needs: the Uc object (for the binding's
 * `_hook_exception`), the hook state, and the stop registers' batch. */
struct runner {
    PyObject *uc_obj;
    PyObject *regs_capsule;
    struct hotpath *hp;
    struct batch *regs;
};

#define RUNNER_CAPSULE "acrn_sim.runner"

static void runner_free(PyObject *capsule) {
    struct runner *r = PyCapsule_GetPointer(capsule, RUNNER_CAPSULE);
    if (r) {
        Py_XDECREF(r->uc_obj);
        Py_XDECREF(r->regs_capsule);
        PyMem_Free(r);
    }
}

/* runner(uc_obj, hp, regs) -> a capsule for run(); `hp`: the address of the hook state
 * (native or Python hook: the same layout); `regs`: the stop registers' batch capsule. */
static PyObject *py_runner(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 3 || !uc_start)
        return PyErr_Format(PyExc_TypeError, "runner(uc_obj, hp, regs) after bind");
    struct hotpath *hp = PyLong_AsVoidPtr(args[1]);
    struct batch *regs = PyCapsule_GetPointer(args[2], BATCH_CAPSULE);
    if (PyErr_Occurred())
        return NULL;
    struct runner *r = PyMem_Calloc(1, sizeof *r);
    if (!r)
        return PyErr_NoMemory();
    PyObject *capsule = PyCapsule_New(r, RUNNER_CAPSULE, runner_free);
    if (!capsule) {
        PyMem_Free(r);
        return NULL;
    }
    r->uc_obj = Py_NewRef(args[0]);
    r->regs_capsule = Py_NewRef(args[2]);
    r->hp = hp;
    r->regs = regs;
    return capsule;
}

/* run(runner, begin, budget, slow) -> (uc_err, stop, cycles, [stop registers]).
 * With `budget` an int, a new slice: cycles 0, the budget, no current block, `slow` as given.
 * With None, a further round of the same slice (after a block was translated again).
 * Then: uc_emu_start from `begin` until a hook stops it, as Uc.emu_start does (its
 * `_hook_exception` cleared before, raised after when the run itself succeeded); then the
 * stop registers, read in one batch. `stop`: whether the budget stopped the run; `cycles`:
 * the slice's cycles so far. */
static PyObject *py_run(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 4)
        return PyErr_Format(PyExc_TypeError, "run(runner, begin, budget, slow)");
    struct runner *r = PyCapsule_GetPointer(args[0], RUNNER_CAPSULE);
    if (!r)
        return NULL;
    uint64_t begin = PyLong_AsUnsignedLongLong(args[1]);
    if (PyErr_Occurred())
        return NULL;
    struct hotpath *hp = r->hp;
    if (args[2] != Py_None) {
        uint64_t budget = PyLong_AsUnsignedLongLong(args[2]);
        int slow = PyObject_IsTrue(args[3]);
        if (PyErr_Occurred() || slow < 0)
            return NULL;
        hp->cycles = 0;
        hp->budget = budget;
        hp->cur_size = 0;
        hp->slow = (uint64_t)slow;
    }
    hp->stop = 0;
    if (PyObject_SetAttr(r->uc_obj, str_hook_exception, Py_None) < 0)
        return NULL;
    int err = uc_start(r->regs->uc, begin, UINT64_MAX, 0, 0);
    if (!err) {
        PyObject *exc = PyObject_GetAttr(r->uc_obj, str_hook_exception);
        if (!exc)
            return NULL;
        if (exc != Py_None) {
            PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
            Py_DECREF(exc);
            return NULL;
        }
        Py_DECREF(exc);
    }
    PyObject *regs = batch_values(r->regs);
    if (!regs)
        return NULL;
    PyObject *cycles = PyLong_FromUnsignedLongLong(hp->cycles);
    PyObject *out = cycles ? PyTuple_New(4) : NULL;
    if (!out) {
        Py_XDECREF(cycles);
        Py_DECREF(regs);
        return NULL;
    }
    PyTuple_SET_ITEM(out, 0, PyLong_FromLong(err));
    PyTuple_SET_ITEM(out, 1, PyLong_FromUnsignedLongLong(hp->stop));
    PyTuple_SET_ITEM(out, 2, cycles);
    PyTuple_SET_ITEM(out, 3, regs);
    return out;
}

/* The arguments read_linear and write_linear share: the hook (which must have a decoder), the
 * uc_engine and the linear address; 0, or -1 with the exception set. */
static int linear_args(PyObject *const *args, const char *name, struct hotpath **hp, void **uc,
                       uint64_t *linear) {
    *hp = PyLong_AsVoidPtr(args[0]);
    *uc = PyLong_AsVoidPtr(args[1]);
    *linear = PyLong_AsUnsignedLongLongMask(args[2]);
    if (PyErr_Occurred())
        return -1;
    if (!*hp || !(*hp)->dec) {
        PyErr_Format(PyExc_ValueError, "%s: no decoder", name);
        return -1;
    }
    return 0;
}

/* A page fault, as both return it: (linear, error_code) */
static PyObject *fault_tuple(const uint64_t fault[2]) {
    return Py_BuildValue("(KK)", (unsigned long long)fault[0], (unsigned long long)fault[1]);
}

/* read_linear(hp, uc, linear, size, fetch) -> the bytes, or (linear, error_code) of the page
 * fault: Engine.read_linear through sim/_decode.c's page walk, for a hook with a decoder. */
static PyObject *py_read_linear(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    struct hotpath *hp;
    void *uc;
    uint64_t linear;
    if (nargs != 5)
        return PyErr_Format(PyExc_TypeError, "read_linear(hp, uc, linear, size, fetch)");
    if (linear_args(args, "read_linear", &hp, &uc, &linear) < 0)
        return NULL;
    Py_ssize_t size = PyLong_AsSsize_t(args[3]);
    int fetch = PyObject_IsTrue(args[4]);
    if (PyErr_Occurred() || fetch < 0)
        return NULL;
    if (size < 0)
        return PyErr_Format(PyExc_ValueError, "read_linear: a negative size");
    PyObject *out = PyBytes_FromStringAndSize(NULL, size);
    if (!out)
        return NULL;
    uint64_t fault[2];
    if (hp_read_linear(hp, uc, linear, (uint8_t *)PyBytes_AS_STRING(out), (uint64_t)size, fetch,
                       fault) < 0) {
        Py_DECREF(out);
        return fault_tuple(fault);
    }
    return out;
}

/* write_linear(hp, uc, linear, data) -> True, False (a page was not RAM), or (linear,
 * error_code) of the page fault: Engine.write_linear through sim/_decode.c's page walk. */
static PyObject *py_write_linear(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    struct hotpath *hp;
    void *uc;
    uint64_t linear;
    if (nargs != 4)
        return PyErr_Format(PyExc_TypeError, "write_linear(hp, uc, linear, data)");
    if (linear_args(args, "write_linear", &hp, &uc, &linear) < 0)
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[3], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    uint64_t fault[2];
    int not_ram = 0;
    int r = hp_write_linear(hp, uc, linear, view.buf, (uint64_t)view.len, fault, &not_ram);
    PyBuffer_Release(&view);
    return r < 0 ? fault_tuple(fault) : PyBool_FromLong(!not_ram);
}

static PyMethodDef methods[] = {
    {"read_linear", (PyCFunction)(void (*)(void))py_read_linear, METH_FASTCALL, NULL},
    {"write_linear", (PyCFunction)(void (*)(void))py_write_linear, METH_FASTCALL, NULL},
    {"bind", (PyCFunction)(void (*)(void))py_bind, METH_FASTCALL, NULL},
    {"reg_read", (PyCFunction)(void (*)(void))py_reg_read, METH_FASTCALL, NULL},
    {"reg_write", (PyCFunction)(void (*)(void))py_reg_write, METH_FASTCALL, NULL},
    {"batch", (PyCFunction)(void (*)(void))py_batch, METH_FASTCALL, NULL},
    {"runner", (PyCFunction)(void (*)(void))py_runner, METH_FASTCALL, NULL},
    {"run", (PyCFunction)(void (*)(void))py_run, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_hotpath",
    "acrn-sim native block hook (through ctypes) and Unicorn calls at VM exits", -1, methods};

PyMODINIT_FUNC PyInit__hotpath(void) {
    str_hook_exception = PyUnicode_InternFromString("_hook_exception");
    if (!str_hook_exception)
        return NULL;
    return PyModule_Create(&module);
}
