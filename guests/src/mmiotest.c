/* mmiotest: MMIO to a device-model BAR through the IOREQ path. Finds the test device at
 * 00:03.0, sizes and programs its BAR0, then checks each instruction form the hypervisor's
 * decoder supports, and that an unsupported one raises #UD in the guest. */
#include "rt.h"

#define BAR 0xC0000000u

static uint32_t cfg(int dev, int reg, int write, uint32_t v) {
    uint32_t addr = 0x80000000u | (dev << 11) | (reg & 0xFC);
    __asm__ volatile("outl %0, %1" ::"a"(addr), "Nd"((uint16_t)0xCF8));
    if (write)
        __asm__ volatile("outl %0, %1" ::"a"(v), "Nd"((uint16_t)0xCFC));
    else
        __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"((uint16_t)0xCFC));
    return v;
}

static volatile int ud_count;
static volatile int ud_skip;
static void on_ud(struct frame *f) {
    ud_count++;
    f->ip += ud_skip;
}

/* RFLAGS after an instruction: CF, ZF, SF as 0/1 via SETcc. */
#define FLAGS(insn, ...)                                                                       \
    ({                                                                                         \
        uint8_t c, z, s_;                                                                      \
        __asm__ volatile(insn "; setc %0; setz %1; sets %2"                                    \
                         : "=q"(c), "=q"(z), "=q"(s_)                                          \
                         : __VA_ARGS__                                                         \
                         : "memory", "cc");                                                    \
        (c << 2) | (z << 1) | s_;                                                              \
    })

static uint32_t ram_buf[8];

int main(void) {
    int failures = 0;
    serial_init();
    idt_init();
    set_handler(6, on_ud);
    uint32_t id = cfg(3, 0, 0, 0);
    CHECK(id == 0x8f008086, "test device at 00:03.0: %x", id);
    cfg(3, 0x10, 1, 0xFFFFFFFFu);
    uint32_t mask = cfg(3, 0x10, 0, 0);
    printf("BAR0 size mask %x -> %u bytes\n", mask, ~mask + 1);
    CHECK(mask == 0xFFFFF000u, "BAR sizing");
    cfg(3, 0x10, 1, BAR);
    cfg(3, 0x04, 1, 0x2); /* memory decoding on */

    uint32_t v, r;
    __asm__ volatile("mov (%1), %0" : "=r"(v) : "r"(BAR)); /* 8B: mov r32, m32 */
    printf("signature %x\n", v);
    CHECK(v == 0x4F494D4Du, "MOV load (8B)");
    __asm__ volatile("movl %1, 0x10(%0)" ::"r"(BAR), "r"(0x12345678u) : "memory"); /* 89 */
    __asm__ volatile("mov 0x10(%1), %0" : "=r"(r) : "r"(BAR));
    CHECK(r == 0x12345678u, "MOV store/load 32 (89/8B): %x", r);
    __asm__ volatile("movb %1, 0x20(%0)" ::"r"(BAR), "q"((uint8_t)0xAB) : "memory"); /* 88 */
    uint8_t b;
    __asm__ volatile("movb 0x20(%1), %0" : "=q"(b) : "r"(BAR)); /* 8A */
    CHECK(b == 0xAB, "MOV 8-bit (88/8A): %x", b);
    __asm__ volatile("movw %1, 0x30(%0)" ::"r"(BAR), "r"((uint16_t)0xBEEF) : "memory"); /* 66 89 */
    uint16_t w;
    __asm__ volatile("movw 0x30(%1), %0" : "=r"(w) : "r"(BAR)); /* 66 8B */
    CHECK(w == 0xBEEF, "MOV 16-bit: %x", w);
    __asm__ volatile("movl $0xCAFEF00D, 0x40(%0)" ::"r"(BAR) : "memory"); /* C7 /0 */
    __asm__ volatile("movb $0x5A, 0x40(%0)" ::"r"(BAR) : "memory");     /* C6 /0 */
    __asm__ volatile("mov 0x40(%1), %0" : "=r"(r) : "r"(BAR));
    CHECK(r == 0xCAFEF05Au, "MOV imm (C7/C6): %x", r);
    __asm__ volatile("movzbl 0x20(%1), %0" : "=r"(r) : "r"(BAR)); /* 0F B6 */
    CHECK(r == 0xAB, "MOVZX byte: %x", r);
    __asm__ volatile("movzwl 0x30(%1), %0" : "=r"(r) : "r"(BAR)); /* 0F B7 */
    CHECK(r == 0xBEEF, "MOVZX word: %x", r);
    __asm__ volatile("movsbl 0x20(%1), %0" : "=r"(r) : "r"(BAR)); /* 0F BE */
    CHECK(r == 0xFFFFFFABu, "MOVSX byte: %x", r);
    __asm__ volatile("movl %%eax, (0xC0000050)" ::"a"(0x600DF00Du) : "memory"); /* A3 */
    __asm__ volatile("movl (0xC0000050), %%eax" : "=a"(r)); /* A1 */
    CHECK(r == 0x600DF00Du, "MOV moffs (A1/A3): %x", r);
    /* STOS: rep stosl of 4 dwords into the device */
    {
        uint32_t cnt = 4, dst = BAR + 0x100;
        __asm__ volatile("cld; rep stosl" : "+c"(cnt), "+D"(dst) : "a"(0xA5A5A5A5u) : "memory");
        uint32_t x, y;
        __asm__ volatile("mov 0x100(%1), %0" : "=r"(x) : "r"(BAR));
        __asm__ volatile("mov 0x10c(%1), %0" : "=r"(y) : "r"(BAR));
        CHECK(cnt == 0 && dst == BAR + 0x110 && x == 0xA5A5A5A5u && y == 0xA5A5A5A5u,
              "REP STOS: cnt %u dst %x %x %x", cnt, dst, x, y);
    }
    /* MOVS: RAM -> device and device -> RAM */
    {
        for (int i = 0; i < 4; i++)
            ram_buf[i] = 0x11111111u * (i + 1);
        uint32_t cnt = 4, src = (uint32_t)ram_buf, dst = BAR + 0x200;
        __asm__ volatile("cld; rep movsl" : "+c"(cnt), "+S"(src), "+D"(dst)::"memory");
        uint32_t x;
        __asm__ volatile("mov 0x20c(%1), %0" : "=r"(x) : "r"(BAR));
        CHECK(cnt == 0 && x == 0x44444444u, "REP MOVS to device: %x", x);
        cnt = 4, src = BAR + 0x200, dst = (uint32_t)&ram_buf[4];
        __asm__ volatile("cld; rep movsl" : "+c"(cnt), "+S"(src), "+D"(dst)::"memory");
        CHECK(ram_buf[4] == 0x11111111u && ram_buf[7] == 0x44444444u, "REP MOVS from device");
    }
    /* OR, AND (read-modify-write and register forms), SUB, CMP, TEST, BT with flags */
    __asm__ volatile("movl $0x0F0F0000, 0x300(%0)" ::"r"(BAR) : "memory");
    __asm__ volatile("orl %1, 0x300(%0)" ::"r"(BAR), "r"(0x000000F0u) : "memory", "cc"); /* 09 */
    __asm__ volatile("orl $0x3, 0x300(%0)" ::"r"(BAR) : "memory", "cc");                /* 83 /1 */
    __asm__ volatile("mov 0x300(%1), %0" : "=r"(r) : "r"(BAR));
    CHECK(r == 0x0F0F00F3u, "OR: %x", r);
    __asm__ volatile("andl $0xFFFFFF0F, 0x300(%0)" ::"r"(BAR) : "memory", "cc"); /* 81 /4 */
    __asm__ volatile("mov 0x300(%1), %0" : "=r"(r) : "r"(BAR));
    CHECK(r == 0x0F0F0003u, "AND imm: %x", r);
    r = 0x00FF00FF;
    __asm__ volatile("andl 0x300(%1), %0" : "+r"(r) : "r"(BAR) : "cc"); /* 23 */
    CHECK(r == 0x000F0003u, "AND reg: %x", r);
    r = 0x0F0F0004;
    __asm__ volatile("subl 0x300(%1), %0" : "+r"(r) : "r"(BAR) : "cc"); /* 2B */
    CHECK(r == 1, "SUB: %x", r);
    int f = FLAGS("cmpl %3, 0x300(%4)", "r"(0x0F0F0003u), "r"(BAR)); /* 39: equal */
    CHECK(f == 2, "CMP equal flags %x", f);
    f = FLAGS("cmpl 0x300(%4), %3", "r"(0x1u), "r"(BAR)); /* 3B: 1 - big: CF, SF */
    CHECK(f == 5, "CMP below flags %x", f);
    f = FLAGS("cmpl $0x7FFFFFFF, 0x300(%3)", "r"(BAR)); /* 81 /7: small - max: CF, SF */
    CHECK(f == 5, "CMP imm flags %x", f);
    f = FLAGS("testl %3, 0x300(%4)", "r"(0xF0000000u), "r"(BAR)); /* 85: zero */
    CHECK(f == 2, "TEST flags %x", f);
    f = FLAGS("btl $1, 0x300(%3)", "r"(BAR)); /* 0F BA /4: bit 1 of ...03 is set */
    CHECK(f & 4, "BT sets CF (%x)", f);
    f = FLAGS("btl $2, 0x300(%3)", "r"(BAR));
    CHECK(!(f & 4), "BT clears CF (%x)", f);
    /* Forms outside ACRN's decoder table give #UD in the guest */
    ud_skip = 2;
    __asm__ volatile(".byte 0x01, 0x03" ::"a"(1), "b"(BAR + 0x60) : "memory"); /* ADD m, r */
    ud_skip = 3;
    __asm__ volatile(".byte 0x0f, 0xbf, 0x03" ::"b"(BAR + 0x60) : "eax", "memory"); /* MOVSX w */
    CHECK(ud_count == 2, "unsupported forms must give #UD (%d)", ud_count);
    /* moving the BAR moves the range */
    cfg(3, 0x10, 1, BAR + 0x10000);
    __asm__ volatile("mov (%1), %0" : "=r"(v) : "r"(BAR + 0x10000));
    __asm__ volatile("mov (%1), %0" : "=r"(r) : "r"(BAR));
    CHECK(v == 0x4F494D4Du && r == 0xFFFFFFFFu, "BAR move: %x %x", v, r);
    printf(failures ? "mmiotest: FAILED\n" : "mmiotest: all checks passed\n");
    return failures;
}
