/*
 * acrn-sim native block decoder: a new basic block decoded and costed without calling Python.
 *
 * The block hook (sim/_hotpath.c) calls hp_decode_block for a block its table does not hold.
 * It does what Engine._new_block (sim/engine.py) and BlockDecoder.decode_block
 * (sim/blockcost.py) do, for the common case, from the same inputs and with the same answer:
 *  - the code's bytes, read through the guest's page tables (the walk of sim/paging.py, SDM
 *    Vol. 3 §4.3-4.5) from Unicorn's guest-physical memory;
 *  - the code size, 16, 32 or 64, from CR0.PE, EFER.LMA and CS's descriptor (Engine.code_bits);
 *  - the instructions, from capstone's C API on the very handles the Python binding opened,
 *    so both decode alike (the binding's cs_insn layout for the pinned capstone 5.0.9; the
 *    engine checks it at start-up, sim/hotpath.py);
 *  - each instruction's cost and exit policy from a table keyed by mnemonic and by whether an
 *    operand is in memory. Python fills an entry the first time a mnemonic is seen
 *    (InstructionCoster and the hypervisor's ExitPolicy): the rules live in Python only.
 * It leaves the block to Python (returns -1) whenever Python has more to do than count: a page
 * fault on the fetch, bytes capstone cannot decode, an instruction the engine must stop in front
 * of (a VM exit, RDRAND, an IRET while an NMI is blocked), a watched address (boot markers), or
 * a real-mode start-up CS (Engine.enter_real_mode). Such blocks are few; Python decides them as
 * before, so the table gets the same entries either way (a test runs every guest both ways).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "_hotpath.h"

/* capstone 5.0's cs_insn (capstone.h; the Python binding's _cs_insn), detail off */
struct cs_insn5 {
    unsigned int id;
    uint64_t address;
    uint16_t size;
    uint8_t bytes[24];
    char mnemonic[32];
    char op_str[160];
    void *detail;
};

typedef _Bool (*cs_disasm_iter_fn)(size_t handle, const uint8_t **code, size_t *size,
                                   uint64_t *address, struct cs_insn5 *insn);
typedef struct cs_insn5 *(*cs_malloc_fn)(size_t handle);
typedef void (*cs_free_fn)(struct cs_insn5 *insn, size_t count);
typedef int (*uc_mem_read_fn)(void *uc, uint64_t address, void *bytes, uint64_t size);
typedef int (*uc_mem_write_fn)(void *uc, uint64_t address, const void *bytes, uint64_t size);

/* Unicorn's uc_x86_mmr (GDTR) and uc_x86_msr (unicorn/x86.h) */
struct uc_mmr {
    uint16_t selector;
    uint64_t base;
    uint32_t limit;
    uint32_t flags;
};
struct uc_msr {
    uint32_t rid;
    uint64_t value;
};

/* One mnemonic's entry, as Python fills it (sim/hotpath.py Klass mirrors it). */
#define KLASS_STOP 1 /* the engine stops in front of it: Python decides the block */
#define KLASS_IRET 2 /* an IRET: a stop while an NMI is blocked */
#define KLASS_TSC 4  /* RDTSC/RDTSCP: its tail goes in the hook's table (hp_insert_tsc) */
#define KLASS_OPERANDS 4
#define KLASS_OPERAND_LEN 16
struct klass {
    char mnemonic[32];
    uint8_t mem;  /* an operand is in memory ('[' in the operands) */
    uint8_t used;
    int32_t flags;
    int64_t cost; /* cycles (the profile's instruction class) */
    /* operand starts that make it a stop (MOV to CR0/CR4: "cr0,"); "" ends the list */
    char operands[KLASS_OPERANDS][KLASS_OPERAND_LEN];
    /* operand starts that make it block interrupts for the next instruction (MOV SS: "ss,";
     * STI: any, which nshadow = 1 with "" says); nshadow of them */
    int32_t nshadow;
    char shadow[2][8];
};
/* Python: fill `out` for (mnemonic, mem); 0, or -1 on an error (Python then decodes). */
typedef int (*classify_fn)(const char *mnemonic, int mem, struct klass *out);

enum { REG_CR0, REG_CR3, REG_CR4, REG_CS, REG_GDTR, REG_MSR, NREGS };

struct decoder {
    uc_reg_read_fn reg_read;
    uc_mem_read_fn mem_read;
    uc_mem_write_fn mem_write;
    cs_disasm_iter_fn disasm_iter;
    cs_free_fn cs_free;
    size_t cs_handle[3]; /* 16-, 32- and 64-bit code */
    struct cs_insn5 *insn[3];
    classify_fn classify;
    struct klass *classes;
    uint64_t classes_mask, classes_count;
    uint64_t *watch; /* addresses whose blocks Python must see (Engine.watch_blocks) */
    uint64_t nwatch;
    uint64_t iret_exits; /* an NMI is blocked: IRET stops (Engine.set_iret_exits) */
    uint64_t off;        /* Python decodes every block (a real-mode start-up CS) */
    int regs[NREGS];     /* Unicorn's register ids */
    uint8_t *buf;
    uint64_t buf_size;
    uint64_t decoded, deferred; /* blocks decoded here, and left to Python (statistics) */
};

#define CR0_PE (1ull << 0)
#define CR0_PG (1ull << 31)
#define CR4_PSE (1ull << 4)
#define CR4_PAE (1ull << 5)
#define EFER_LMA (1ull << 10)
#define MSR_EFER 0xC0000080u
#define PF_I 16
#define PHYS_MASK 0x000FFFFFFFFFF000ull
#define CR0_WP (1ull << 16)
#define PF_P 1
#define PF_W 2

/* sim/paging.py translate's check(): not present, or read-only for a write under CR0.WP */
#define CHECK(entry)                                                                           \
    do {                                                                                       \
        if (!((entry) & 1))                                                                    \
            return -1;                                                                         \
        if (wp && !((entry) & 2)) {                                                            \
            *err |= PF_P;                                                                      \
            return -1;                                                                         \
        }                                                                                      \
    } while (0)

struct paging {
    uint64_t cr0, cr3, cr4, efer;
};

static void read_paging(struct decoder *d, void *uc, struct paging *ps) {
    struct uc_msr msr = {MSR_EFER, 0};
    ps->cr0 = ps->cr3 = ps->cr4 = 0;
    d->reg_read(uc, d->regs[REG_CR0], &ps->cr0);
    d->reg_read(uc, d->regs[REG_CR3], &ps->cr3);
    d->reg_read(uc, d->regs[REG_CR4], &ps->cr4);
    d->reg_read(uc, d->regs[REG_MSR], &msr);
    ps->efer = msr.value;
}

/* Guest-physical read, as Engine.read_phys: unmapped bytes read as all ones. */
static void read_phys(struct decoder *d, void *uc, uint64_t gpa, uint8_t *out, uint64_t size) {
    if (d->mem_read(uc, gpa, out, size) == 0)
        return;
    for (uint64_t i = 0; i < size; i++)
        if (d->mem_read(uc, gpa + i, out + i, 1) != 0)
            out[i] = 0xFF;
}

static uint64_t entry_at(struct decoder *d, void *uc, uint64_t address, int size) {
    uint8_t b[8] = {0};
    uint64_t v = 0;
    read_phys(d, uc, address, b, (uint64_t)size);
    memcpy(&v, b, (size_t)size); /* (little-endian host, as the guest) */
    return v;
}

/* sim/paging.py translate (a supervisor access): the guest-physical address of
 * `*linear` in *gpa, or -1 with the fault's error code in *err. *linear is left as the walk
 * used it (32-bit and PAE paging take its low 32 bits), which is the address a #PF reports. */
static int walk(struct decoder *d, void *uc, const struct paging *ps, uint64_t *linear, int fetch,
                int write, uint64_t *gpa, uint32_t *err) {
    uint64_t la = *linear;
    int wp = write && ps->cr0 & CR0_WP; /* a supervisor write checks R/W only with CR0.WP */
    *err = (fetch ? PF_I : 0) | (write ? PF_W : 0);
    if (!(ps->cr0 & CR0_PG)) {
        *gpa = ps->efer & EFER_LMA ? la : la & 0xFFFFFFFFull;
        return 0;
    }
    if (!(ps->cr4 & CR4_PAE)) { /* 32-bit paging, 4 KiB or (PSE) 4 MiB pages */
        la &= 0xFFFFFFFFull;
        *linear = la;
        uint64_t pde = entry_at(d, uc, (ps->cr3 & 0xFFFFF000ull) + (la >> 22) * 4, 4);
        CHECK(pde);
        if (pde & 0x80 && ps->cr4 & CR4_PSE) {
            *gpa = (pde & 0xFFC00000ull) | (la & 0x3FFFFF);
            return 0;
        }
        uint64_t pte = entry_at(d, uc, (pde & 0xFFFFF000ull) + ((la >> 12) & 0x3FF) * 4, 4);
        CHECK(pte);
        *gpa = (pte & 0xFFFFF000ull) | (la & 0xFFF);
        return 0;
    }
    uint64_t pdpte;
    if (ps->efer & EFER_LMA) { /* 4-level paging */
        uint64_t pml4e = entry_at(d, uc, (ps->cr3 & PHYS_MASK) + ((la >> 39) & 0x1FF) * 8, 8);
        CHECK(pml4e);
        pdpte = entry_at(d, uc, (pml4e & PHYS_MASK) + ((la >> 30) & 0x1FF) * 8, 8);
        CHECK(pdpte);
        if (pdpte & 0x80) {
            *gpa = (pdpte & 0x000FFFFFC0000000ull) | (la & 0x3FFFFFFF);
            return 0;
        }
    } else { /* PAE paging: 4 PDPTEs at CR3[31:5] */
        la &= 0xFFFFFFFFull;
        *linear = la;
        pdpte = entry_at(d, uc, (ps->cr3 & 0xFFFFFFE0ull) + (la >> 30) * 8, 8);
        if (!(pdpte & 1))
            return -1;
    }
    uint64_t pde = entry_at(d, uc, (pdpte & PHYS_MASK) + ((la >> 21) & 0x1FF) * 8, 8);
    CHECK(pde);
    if (pde & 0x80) {
        *gpa = (pde & 0x000FFFFFFFE00000ull) | (la & 0x1FFFFF);
        return 0;
    }
    uint64_t pte = entry_at(d, uc, (pde & PHYS_MASK) + ((la >> 12) & 0x1FF) * 8, 8);
    CHECK(pte);
    *gpa = (pte & PHYS_MASK) | (la & 0xFFF);
    return 0;
}

/* Engine.read_linear and write_linear: page by page, as the Python ones, so a fault on a later
 * page leaves the earlier ones done. A read (data NULL) fills `out`; a write copies `data` and
 * sets *not_ram when a page was not RAM (its bytes went nowhere). 0, or -1 with the page
 * fault's linear address and error code in fault[0], fault[1]. */
static int access_linear(struct decoder *d, void *uc, const struct paging *ps, uint64_t linear,
                         uint8_t *out, const uint8_t *data, uint64_t size, int fetch,
                         uint64_t fault[2], int *not_ram) {
    while (size) {
        uint64_t chunk = 0x1000 - (linear & 0xFFF), gpa, la = linear;
        uint32_t err;
        if (chunk > size)
            chunk = size;
        if (walk(d, uc, ps, &la, fetch, data != NULL, &gpa, &err) < 0) {
            fault[0] = la;
            fault[1] = err;
            return -1;
        }
        if (data) {
            if (d->mem_write(uc, gpa, data, chunk) != 0)
                *not_ram = 1;
            data += chunk;
        } else {
            read_phys(d, uc, gpa, out, chunk);
            out += chunk;
        }
        linear += chunk;
        size -= chunk;
    }
    return 0;
}

static int read_linear(struct decoder *d, void *uc, const struct paging *ps, uint64_t linear,
                       uint8_t *out, uint64_t size, int fetch, uint64_t fault[2]) {
    return access_linear(d, uc, ps, linear, out, NULL, size, fetch, fault, NULL);
}

/* Engine.read_linear for Python (sim/_hotpath.c read_linear) */
int hp_read_linear(struct hotpath *hp, void *uc, uint64_t linear, uint8_t *out, uint64_t size,
                   int fetch, uint64_t fault[2]) {
    struct paging ps;
    read_paging(hp->dec, uc, &ps);
    return read_linear(hp->dec, uc, &ps, linear, out, size, fetch, fault);
}

/* Engine.write_linear for Python (sim/_hotpath.c write_linear) */
int hp_write_linear(struct hotpath *hp, void *uc, uint64_t linear, const uint8_t *data,
                    uint64_t size, uint64_t fault[2], int *not_ram) {
    struct paging ps;
    read_paging(hp->dec, uc, &ps);
    *not_ram = 0;
    return access_linear(hp->dec, uc, &ps, linear, NULL, data, size, 0, fault, not_ram);
}

/* Engine.code_bits: 16, 32 or 64 */
static int code_bits(struct decoder *d, void *uc, const struct paging *ps) {
    uint64_t cs = 0, fault[2];
    struct uc_mmr gdtr = {0, 0, 0, 0};
    uint8_t hi[4];
    if (!(ps->cr0 & CR0_PE))
        return 16;
    d->reg_read(uc, d->regs[REG_CS], &cs);
    d->reg_read(uc, d->regs[REG_GDTR], &gdtr);
    if ((cs | 7) > gdtr.limit)
        return 32;
    if (read_linear(d, uc, ps, gdtr.base + (cs & ~7ull) + 4, hi, 4, 0, fault) < 0)
        return 32;
    uint32_t h = (uint32_t)hi[0] | (uint32_t)hi[1] << 8 | (uint32_t)hi[2] << 16 |
                 (uint32_t)hi[3] << 24;
    if (ps->efer & EFER_LMA && h & (1u << 21))
        return 64;
    return h & (1u << 22) ? 32 : 16;
}

static uint64_t klass_hash(const char *mnemonic, int mem) {
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (const char *p = mnemonic; *p; p++)
        h = (h ^ (uint8_t)*p) * 0x100000001b3ull;
    return h ^ (uint64_t)mem;
}

static struct klass *klass_slot(struct klass *table, uint64_t mask, const char *mnemonic, int mem) {
    uint64_t i = klass_hash(mnemonic, mem) & mask;
    for (;;) {
        struct klass *k = &table[i];
        if (!k->used || (k->mem == mem && strcmp(k->mnemonic, mnemonic) == 0))
            return k;
        i = (i + 1) & mask;
    }
}

/* The entry for (mnemonic, mem), asking Python the first time; NULL if Python failed. */
static struct klass *klass_get(struct decoder *d, const char *mnemonic, int mem) {
    struct klass *k = klass_slot(d->classes, d->classes_mask, mnemonic, mem);
    if (k->used)
        return k;
    if ((d->classes_count + 1) * 2 > d->classes_mask + 1) {
        uint64_t n = (d->classes_mask + 1) * 2;
        struct klass *t = calloc(n, sizeof *t);
        if (!t)
            return NULL;
        for (uint64_t i = 0; i <= d->classes_mask; i++)
            if (d->classes[i].used)
                *klass_slot(t, n - 1, d->classes[i].mnemonic, d->classes[i].mem) = d->classes[i];
        free(d->classes);
        d->classes = t;
        d->classes_mask = n - 1;
        k = klass_slot(t, n - 1, mnemonic, mem);
    }
    struct klass out;
    memset(&out, 0, sizeof out);
    if (strlen(mnemonic) >= sizeof out.mnemonic || d->classify(mnemonic, mem, &out) != 0)
        return NULL;
    strcpy(out.mnemonic, mnemonic);
    out.mem = (uint8_t)mem;
    out.used = 1;
    *k = out;
    d->classes_count++;
    return k;
}

/* blockcost.py shadow_after: STI, MOV SS, POP SS */
static int shadow_after(const struct klass *k, const char *op_str) {
    for (int i = 0; i < k->nshadow && i < 2; i++)
        if (strncmp(op_str, k->shadow[i], strnlen(k->shadow[i], sizeof k->shadow[i])) == 0)
            return 1;
    return 0;
}

static int stops(const struct decoder *d, const struct klass *k, const char *op_str) {
    if (k->flags & KLASS_STOP || (k->flags & KLASS_IRET && d->iret_exits))
        return 1;
    for (int i = 0; i < KLASS_OPERANDS && k->operands[i][0]; i++)
        if (strncmp(op_str, k->operands[i], strnlen(k->operands[i], KLASS_OPERAND_LEN)) == 0)
            return 1;
    return 0;
}

int hp_decode_block(struct hotpath *hp, void *uc, uint64_t address, uint32_t size) {
    struct decoder *d = hp->dec;
    struct paging ps;
    uint64_t fault[2];
    if (d->off)
        goto defer;
    for (uint64_t i = 0; i < d->nwatch; i++)
        if (d->watch[i] >= address && d->watch[i] - address < size)
            goto defer;
    if (size > d->buf_size) {
        uint8_t *b = realloc(d->buf, size);
        if (!b)
            goto defer;
        d->buf = b;
        d->buf_size = size;
    }
    read_paging(d, uc, &ps);
    if (read_linear(d, uc, &ps, address, d->buf, size, 1, fault) < 0)
        goto defer; /* Python reports the fetch's #PF */
    int bits = code_bits(d, uc, &ps), which = bits == 16 ? 0 : bits == 32 ? 1 : 2;
    const uint8_t *code = d->buf;
    size_t left = size;
    uint64_t at = address, cost = 0, ninsns = 0;
    uint64_t tsc_rip[8], tsc_before[8]; /* RDTSCs: where, and the cycles in front of each */
    int ntsc = 0;
    struct cs_insn5 *insn = d->insn[which];
    struct klass *last = NULL;
    while (left) {
        if (!d->disasm_iter(d->cs_handle[which], &code, &left, &at, insn))
            goto defer; /* bytes capstone cannot decode: Python keeps what it can */
        int mem = strchr(insn->op_str, '[') != NULL;
        struct klass *k = klass_get(d, insn->mnemonic, mem);
        if (!k || stops(d, k, insn->op_str))
            goto defer;
        if (k->flags & KLASS_TSC) {
            if (ntsc == 8)
                goto defer;
            tsc_rip[ntsc] = insn->address;
            tsc_before[ntsc++] = cost;
        }
        cost += (uint64_t)k->cost;
        ninsns++;
        last = k;
    }
    /* (insn still holds the last instruction, and no klass_get moved the table since) */
    int shadow = last && shadow_after(last, insn->op_str);
    for (int i = 0; i < ntsc; i++) /* (tail: from the RDTSC, itself included, to the end) */
        if (hp_insert_tsc(hp, address, size, tsc_rip[i], cost - tsc_before[i]) < 0)
            goto defer;
    if (hp_insert(hp, address, size, cost, ninsns, shadow) < 0)
        goto defer;
    d->decoded++;
    return 0;
defer:
    d->deferred++;
    return -1;
}

struct decoder *hp_decoder_new(struct hotpath *hp, void *reg_read, void *mem_read,
                               void *mem_write, void *disasm_iter, void *cs_malloc, void *cs_free,
                               const uint64_t handles[3], void *classify, const int regs[NREGS]) {
    struct decoder *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->reg_read = (uc_reg_read_fn)reg_read;
    d->mem_read = (uc_mem_read_fn)mem_read;
    d->mem_write = (uc_mem_write_fn)mem_write;
    d->disasm_iter = (cs_disasm_iter_fn)disasm_iter;
    d->cs_free = (cs_free_fn)cs_free;
    d->classify = (classify_fn)classify;
    memcpy(d->regs, regs, sizeof d->regs);
    d->classes_mask = 1023;
    d->classes = calloc(d->classes_mask + 1, sizeof *d->classes);
    d->buf_size = 4096;
    d->buf = malloc(d->buf_size);
    int ok = d->classes && d->buf;
    for (int i = 0; i < 3; i++) {
        d->cs_handle[i] = (size_t)handles[i];
        d->insn[i] = ok ? ((cs_malloc_fn)cs_malloc)((size_t)handles[i]) : NULL;
        ok = ok && d->insn[i];
    }
    if (!ok) {
        hp_decoder_free(d);
        return NULL;
    }
    hp->dec = d;
    return d;
}

void hp_decoder_free(struct decoder *d) {
    if (!d)
        return;
    for (int i = 0; i < 3; i++)
        if (d->insn[i])
            d->cs_free(d->insn[i], 1);
    free(d->classes);
    free(d->watch);
    free(d->buf);
    free(d);
}

/* Engine.set_iret_exits and the real-mode start-up CS (Engine.enter_real_mode) */
void hp_decoder_set(struct hotpath *hp, int iret_exits, int off) {
    hp->dec->iret_exits = (uint64_t)iret_exits;
    hp->dec->off = (uint64_t)off;
}

/* Engine.watch_blocks: the blocks holding these addresses are left to Python. */
int hp_decoder_watch(struct hotpath *hp, const uint64_t *addresses, uint64_t n) {
    struct decoder *d = hp->dec;
    uint64_t *w = n ? malloc(n * sizeof *w) : NULL;
    if (n && !w)
        return -1;
    if (n)
        memcpy(w, addresses, n * sizeof *w);
    free(d->watch);
    d->watch = w;
    d->nwatch = n;
    return 0;
}

/* The statistics: out[0] blocks decoded here, out[1] left to Python. */
void hp_decoder_stats(struct hotpath *hp, uint64_t out[2]) {
    out[0] = hp->dec->decoded;
    out[1] = hp->dec->deferred;
}

/* Decode `size` bytes at `code` as capstone's C API gives them to hp_decode_block, into
 * `count` (address, size) pairs and mnemonics of 32 bytes: the start-up check that the cs_insn
 * layout above is the loaded capstone's (sim/hotpath.py). Returns the instructions decoded. */
int hp_decoder_probe(struct hotpath *hp, int bits, const uint8_t *code, uint64_t size,
                     uint64_t address, uint64_t *pairs, char *mnemonics, int count) {
    struct decoder *d = hp->dec;
    int which = bits == 16 ? 0 : bits == 32 ? 1 : 2, n = 0;
    size_t left = size;
    while (n < count && left && d->disasm_iter(d->cs_handle[which], &code, &left, &address,
                                               d->insn[which])) {
        pairs[2 * n] = d->insn[which]->address;
        pairs[2 * n + 1] = d->insn[which]->size;
        memcpy(mnemonics + 32 * n, d->insn[which]->mnemonic, 32);
        n++;
    }
    return n;
}
