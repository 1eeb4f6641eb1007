/* longmode: a Multiboot (32-bit) guest that switches itself into long mode, the way a 64-bit
 * kernel's start-up code does: page tables, CR4.PAE, EFER.LME, CR0.PG, far jump. */
#include "rt.h"

static uint64_t pml4[512] __attribute__((aligned(4096)));
static uint64_t pdpt[512] __attribute__((aligned(4096)));
static uint64_t pd[512] __attribute__((aligned(4096)));
/* 0x08: the 32-bit code segment we run on; 0x10 data; 0x18: 64-bit code */
static uint64_t gdt[4] = {0, 0x00CF9A000000FFFFull, 0x00CF92000000FFFFull, 0x00AF9A000000FFFFull};

/* The 64-bit part: print through COM1, check EFER.LMA and a 64-bit computation, exit. */
__asm__(".section .text\n"
        ".code64\n"
        "lm_entry:\n"
        "  lea lm_msg(%rip), %rsi\n"
        "1: lodsb\n"
        "  test %al, %al\n"
        "  jz 2f\n"
        "  mov %al, %bl\n"
        "3: mov $0x3fd, %dx\n"
        "  in %dx, %al\n"
        "  test $0x20, %al\n"
        "  jz 3b\n"
        "  mov %bl, %al\n"
        "  mov $0x3f8, %dx\n"
        "  out %al, %dx\n"
        "  jmp 1b\n"
        "2: mov $0xc0000080, %ecx\n"
        "  rdmsr\n"
        "  test $0x400, %eax\n"
        "  jz 4f\n"
        "  movabs $0x123456789abcdef0, %rax\n"
        "  shr $32, %rax\n"
        "  cmp $0x12345678, %eax\n"
        "  jne 4f\n"
        "  mov $0, %al\n"
        "  out %al, $0xf4\n"
        "4: mov $1, %al\n"
        "  out %al, $0xf4\n"
        "  hlt\n"
        ".code32\n"
        ".section .rodata\n"
        "lm_msg: .asciz \"Hello from 64-bit long mode\\r\\n\"\n"
        ".section .text\n");

int main(void) {
    serial_init();
    printf("32-bit protected mode: switching to long mode\n");
    for (int i = 0; i < 512; i++)
        pd[i] = ((uint64_t)i << 21) | 0x83;
    pdpt[0] = (uint32_t)pd | 3;
    pml4[0] = (uint32_t)pdpt | 3;
    struct { uint16_t limit; uint32_t base; } __attribute__((packed)) gdtr = {sizeof(gdt) - 1, (uint32_t)gdt};
    __asm__ volatile("lgdt %0" ::"m"(gdtr));
    write_cr4(read_cr4() | 0x20);
    write_cr3((ureg)pml4);
    wrmsr(0xC0000080, rdmsr(0xC0000080) | (1 << 8));
    write_cr0(read_cr0() | 0x80000000u);
    __asm__ volatile("ljmp $0x18, $lm_entry");
    return 1;
}
