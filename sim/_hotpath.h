/*
 * acrn-sim native hot path: the state shared by the block hook (sim/_hotpath.c) and the
 * block decoder (sim/_decode.c). Field order of struct hotpath is mirrored by sim/hotpath.py.
 */
#ifndef ACRN_SIM_HOTPATH_H
#define ACRN_SIM_HOTPATH_H

#include <stdint.h>

struct decoder;

typedef int (*uc_emu_stop_fn)(void *uc);
typedef int (*uc_reg_read_fn)(void *uc, int regid, void *value);
/* Python: decode and cost a new block; returns its cost, or -1 if it stopped the engine. */
typedef int64_t (*miss_fn)(uint64_t address, uint32_t size);
/* Python: a guest store hit a page holding decoded blocks (self-modifying code). */
typedef void (*smc_fn)(uint64_t address, uint32_t size);

struct slot {
    uint64_t address;
    uint32_t size;
    uint32_t used;
    uint64_t cost;
    uint64_t ninsns;
    uint64_t shadow; /* it ends with STI/MOV SS/POP SS: its successor starts in a shadow */
};

/* Python: RDTSC (0) or RDTSCP (1) at the current instruction; returns 1 (skip Unicorn's). */
typedef int (*tsc_fn)(int rdtscp);
typedef int (*uc_reg_write_fn)(void *uc, int regid, const void *value);

struct tsc_slot {
    uint64_t block;
    uint32_t size;
    uint32_t used;
    uint64_t rip;
    uint64_t tail;
};

/* Field order is mirrored by sim/hotpath.py (HotPathState). */
struct hotpath {
    uint64_t cycles;   /* guest cycles charged in this slice */
    uint64_t budget;   /* stop at the first block that starts at or after this */
    uint64_t cur_address; /* the block executing now (last charged) */
    uint64_t cur_size;
    uint64_t stop;     /* set when the budget stopped the engine */
    uint64_t stop_address;
    uint64_t slow;     /* interrupt-window exiting: check RFLAGS.IF at every block */
    uint64_t blocks;   /* blocks executed (statistics) */
    uint64_t insns;    /* guest instructions executed (statistics) */
    /* PAUSE-loop exiting (SDM Vol. 3 §25.1.3), decided here for the PAUSEs that do not exit
     * (hp_pause_hook) and in Python for the rest (hv/arch/vmx.py): this is the only copy of
     * the loop's state. Time is the virtual TSC (tsc_base + cycles): the SDM measures it "based
     * on a counter that runs at the same rate as the TSC", and only differences matter. */
    uint64_t tsc_base;   /* the virtual TSC at the slice's start (Engine.run) */
    uint64_t ple_gap;    /* the VMCS's PLE_Gap and PLE_Window (ACRN vmcs.c init_exec_ctrl) */
    uint64_t ple_window;
    uint64_t ple_valid;  /* 0: no PAUSE yet (the next one is the first of a loop) */
    uint64_t ple_first;  /* when the loop's first PAUSE ran */
    /* When the last PAUSE ended. The gap to the next PAUSE is measured from there: PAUSE's
     * own latency (up to 140 cycles from Skylake on) exceeds ACRN's PLE_Gap (128), so a gap
     * from one PAUSE's start to the next one's would make every PAUSE of the tightest loop
     * the first of a new loop and PAUSE-loop exiting would never happen. */
    uint64_t ple_last;
    uint64_t pause_cost; /* PAUSE's own cycles (the profile's instruction class) */
    uint64_t pauses;     /* PAUSEs run inside a slice, without a stop (statistics) */
    uint64_t tsc_aux;    /* IA32_TSC_AUX, which RDTSCP loads into ECX (hp_rdtsc_hook) */
    uc_emu_stop_fn emu_stop;
    miss_fn miss_cb;
    struct slot *slots;
    uint64_t mask;
    uint64_t count;
    /* The last block looked up, so a loop that re-runs one block skips the hash probe.
     * Reset by hp_insert and hp_clear (a re-costed block must not be served stale). */
    uint64_t last_address;
    uint64_t last_size; /* 0: empty (Unicorn never reports a zero-size block) */
    uint64_t last_cost;
    uint64_t last_ninsns;
    uint64_t last_shadow;
    uint64_t cur_shadow; /* the current block's shadow flag (the interrupt window's check) */
    int rflags_id;       /* Unicorn's id of RFLAGS (the interrupt window's check) */
    /* Self-modifying-code detection (opt-in): the pages of every decoded block, a set of
     * page numbers (open addressing, 0 = empty, so page p is stored as p + 1). */
    smc_fn smc_cb;
    uint64_t *pages;
    uint64_t pages_mask;
    uint64_t pages_count;
    /* Unicorn's uc_reg_read and the register ids of CS and CR0: PAUSE's CPL (hp_enable_ple) */
    uc_reg_read_fn reg_read;
    int cs_id, cr0_id;
    /* RDTSC/RDTSCP done here (hp_rdtsc_hook): for each one in a charged block, the cycles
     * from it to the block's end (which have not run when it reads the TSC), keyed by
     * (block, instruction); Python's callback for the rest (Engine._on_rdtsc). */
    struct tsc_slot *tsc;
    uint64_t tsc_mask, tsc_count;
    tsc_fn tsc_cb;
    uc_reg_write_fn reg_write;
    int rip_id, rax_id, rdx_id, rcx_id;
    /* New blocks decoded and costed here (sim/_decode.c); NULL: every new block goes to
     * Python (miss_cb) */
    struct decoder *dec;
};

/* sim/_decode.c: decode and cost the new block at (address, size) and insert it; 0 if done,
 * -1 if Python must (miss_cb). */
int hp_decode_block(struct hotpath *hp, void *uc, uint64_t address, uint32_t size);
void hp_decoder_free(struct decoder *dec);
int hp_read_linear(struct hotpath *hp, void *uc, uint64_t linear, uint8_t *out, uint64_t size,
                   int fetch, uint64_t fault[2]);
int hp_write_linear(struct hotpath *hp, void *uc, uint64_t linear, const uint8_t *data,
                    uint64_t size, uint64_t fault[2], int *not_ram);
int hp_insert(struct hotpath *hp, uint64_t address, uint32_t size, uint64_t cost, uint64_t ninsns,
              int shadow);
int hp_insert_tsc(struct hotpath *hp, uint64_t block, uint32_t size, uint64_t rip, uint64_t tail);

#endif
