/* The ktest_* kernels: Multiboot images that enter long mode themselves (ktest_start.S),
 * print on COM1 with the guest runtime and exit with a 32-bit OUT to port 0xF4. */
#ifndef KTEST_H
#define KTEST_H

#include "rt.h"

#define MULTIBOOT_BOOTLOADER_MAGIC 0x2BADB002u

static inline void outl(uint16_t port, uint32_t v) { __asm__ volatile("outl %0, %1" ::"a"(v), "Nd"(port)); }

/* Page tables built by ktest_start.S: kt_pd[i] maps [i * 2 MiB, (i + 1) * 2 MiB). */
extern uint64_t kt_pml4[512], kt_pdpt[512], kt_pd[2048];
extern uint32_t kt_mb_magic, kt_mb_info;

/* Entry of a test kernel; its return value is the exit code. */
int ktest_main(uint32_t magic, struct multiboot_info *mbi);

/* outl(code, 0xF4): QEMU's isa-debug-exit (iosize=4) and acrn-sim power the machine off. */
void kt_exit(uint32_t code) __attribute__((noreturn));

/* The Multiboot command line split at spaces into argv (argv[0] is what the loader put first:
 * GRUB and QEMU put the kernel's own path there). Returns argc; at most max entries. The
 * strings are copied into a static buffer. */
int kt_args(struct multiboot_info *mbi, char **argv, int max);
long kt_atol(const char *s); /* decimal, or hex with 0x; an optional leading '-' */
int kt_streq(const char *a, const char *b);

/* Interrupts: a 256-entry IDT. Vectors 0..63 go to the runtime's stubs, 0x80 to isr_int80;
 * all through ktest_trap, which calls the handler set for the vector. */
void kt_idt_init(uint16_t cs);
void kt_set_gate(int vector, uint64_t addr, uint16_t cs, int dpl, int ist, int present);
uint64_t kt_stub(int vector);
void kt_set_handler(int vector, handler_t h);
void ktest_trap(struct frame *f);
extern void isr_int80(void);

#endif
