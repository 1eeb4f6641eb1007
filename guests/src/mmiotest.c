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
static void on_ud(struct frame *f) {
    ud_count++;
    f->ip += 2; /* add %eax,(%ebx): 01 03 */
}

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
    /* ADD to memory is outside ACRN's decoder table: #UD in the guest */
    __asm__ volatile(".byte 0x01, 0x03" ::"a"(1), "b"(BAR + 0x60) : "memory");
    CHECK(ud_count == 1, "unsupported form must give #UD (%d)", ud_count);
    /* moving the BAR moves the range */
    cfg(3, 0x10, 1, BAR + 0x10000);
    __asm__ volatile("mov (%1), %0" : "=r"(v) : "r"(BAR + 0x10000));
    __asm__ volatile("mov (%1), %0" : "=r"(r) : "r"(BAR));
    CHECK(v == 0x4F494D4Du && r == 0xFFFFFFFFu, "BAR move: %x %x", v, r);
    printf(failures ? "mmiotest: FAILED\n" : "mmiotest: all checks passed\n");
    return failures;
}
