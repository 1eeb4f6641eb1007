/* acrn-sim guest runtime: serial printf, IDT set-up, exits, and CPU helpers.
 * Builds for i386 (Multiboot) and x86_64 (ELF64) from the same sources. */
#ifndef ACRN_SIM_RT_H
#define ACRN_SIM_RT_H

#include <stdarg.h>
#include <stdint.h>

#if defined(__x86_64__)
typedef uint64_t ureg;
#else
typedef uint32_t ureg;
#endif

/* What the exception/interrupt stubs push, lowest address first. */
struct frame {
#if defined(__x86_64__)
    uint64_t r15, r14, r13, r12, r11, r10, r9, r8;
    uint64_t rdi, rsi, rbp, rbx, rdx, rcx, rax;
    uint64_t vector, error;
    uint64_t ip, cs, flags, sp, ss;
#else
    uint32_t edi, esi, ebp, esp_unused, ebx, edx, ecx, eax;
    uint32_t vector, error;
    uint32_t ip, cs, flags;
#endif
};

typedef void (*handler_t)(struct frame *f);

struct multiboot_info {
    uint32_t flags, mem_lower, mem_upper, boot_device, cmdline;
    uint32_t mods_count, mods_addr, syms[4], mmap_length, mmap_addr;
    uint32_t drives_length, drives_addr, config_table, boot_loader_name;
};

/* Port I/O and CPU instructions */
static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(port)); }
static inline void outw(uint16_t port, uint16_t v) { __asm__ volatile("outw %0, %1" ::"a"(v), "Nd"(port)); }
static inline uint8_t inb(uint16_t port) { uint8_t v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline uint64_t rdtsc(void) {
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}
static inline void cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4]) {
    __asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(sub));
}
static inline uint64_t rdmsr(uint32_t msr) {
    uint32_t lo, hi;
    __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
    return ((uint64_t)hi << 32) | lo;
}
static inline void wrmsr(uint32_t msr, uint64_t v) {
    __asm__ volatile("wrmsr" ::"c"(msr), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)));
}
static inline ureg read_cr0(void) { ureg v; __asm__ volatile("mov %%cr0, %0" : "=r"(v)); return v; }
static inline ureg read_cr2(void) { ureg v; __asm__ volatile("mov %%cr2, %0" : "=r"(v)); return v; }
static inline ureg read_cr4(void) { ureg v; __asm__ volatile("mov %%cr4, %0" : "=r"(v)); return v; }
static inline void write_cr0(ureg v) { __asm__ volatile("mov %0, %%cr0" ::"r"(v) : "memory"); }
static inline void write_cr3(ureg v) { __asm__ volatile("mov %0, %%cr3" ::"r"(v) : "memory"); }
static inline void write_cr4(ureg v) { __asm__ volatile("mov %0, %%cr4" ::"r"(v) : "memory"); }
static inline void cli(void) { __asm__ volatile("cli"); }
static inline void sti(void) { __asm__ volatile("sti"); }

/* 64-bit division without libgcc (a 32-bit build has no __udivmoddi4 here); rem may be 0. */
uint64_t udivmod64(uint64_t n, uint64_t d, uint64_t *rem);

/* Serial console (COM1, polled) */
void serial_init(void);
void putchar_serial(char c);
void puts_serial(const char *s);
int printf(const char *fmt, ...);
int vprintf(const char *fmt, va_list ap);

/* Interrupts: the IDT has stubs for vectors 0..63; set_handler installs a C handler. */
void idt_init(void);
void idt_load(void); /* an AP loads the IDT idt_init built */
void set_handler(int vector, handler_t h);
extern volatile int rt_faults; /* exceptions taken by the default handler */

/* Power off through QEMU's isa-debug-exit port 0xF4. */
void exit(int code) __attribute__((noreturn));

/* Set by start-up code before main(). */
extern struct multiboot_info *rt_mbi;
int main(void);

/* The Multiboot command line, whole: a loader puts the kernel's own path first (GRUB's
 * `multiboot` line, QEMU's "<-kernel file> <-append string>"), "" without one. */
static inline const char *rt_cmdline(void) {
    return (rt_mbi && (rt_mbi->flags & 4) && rt_mbi->cmdline) ? (const char *)(ureg)rt_mbi->cmdline : "";
}

/* The command line's arguments: what follows that first word (the image's path). */
static inline const char *rt_cmdline_args(void) {
    const char *s = rt_cmdline();
    while (*s == ' ')
        s++;
    while (*s && *s != ' ')
        s++;
    while (*s == ' ')
        s++;
    return s;
}

#define CHECK(cond, ...) do { if (!(cond)) { printf("FAIL: " __VA_ARGS__); printf("\n"); failures++; } } while (0)

#endif
