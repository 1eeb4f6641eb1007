/* smp: the boot CPU starts the second vCPU with INIT-SIPI-SIPI (SDM 8.4.4), both print, and
 * a fixed IPI from vCPU 0 reaches vCPU 1. The AP starts in real mode at 0x9000 (vector 9),
 * loads a flat GDT, enters protected mode and calls ap_main on its own stack. */
#include "rt.h"

#define APIC 0xFEE00000u
#define TRAMPOLINE 0x9000u
#define IPI_VECTOR 0x3A
#define TIMEOUT_CYCLES 240000000ull /* 100 ms at 2.4 GHz */

static inline uint32_t apic_rd(uint32_t off) { return *(volatile uint32_t *)(APIC + off); }
static inline void apic_wr(uint32_t off, uint32_t v) { *(volatile uint32_t *)(APIC + off) = v; }

extern char ap_tramp_start[], ap_tramp_end[];
static uint8_t ap_stack[4096] __attribute__((aligned(16)));
uint32_t ap_stack_top = (uint32_t)(ap_stack + sizeof(ap_stack));
static volatile int ap_up, ap_got_ipi, console_lock;
static volatile uint32_t ap_apic_id;

/* The AP's start-up code, copied to TRAMPOLINE: CS = 0x900 and IP = 0 after the SIPI. */
__asm__(".section .text\n"
        ".global ap_tramp_start, ap_tramp_end\n"
        ".code16\n"
        "ap_tramp_start:\n"
        "    cli\n"
        "    mov %cs, %ax\n"
        "    mov %ax, %ds\n"
        "    lgdtl (ap_gdt_desc - ap_tramp_start)\n"
        "    mov %cr0, %eax\n"
        "    or $1, %eax\n"
        "    mov %eax, %cr0\n"
        "    ljmpl $0x08, $ap_pm32\n"
        ".align 8\n"
        "ap_gdt:\n"
        "    .quad 0, 0x00CF9A000000FFFF, 0x00CF92000000FFFF\n"
        "ap_gdt_desc:\n"
        "    .word 23\n"
        "    .long 0x9000 + (ap_gdt - ap_tramp_start)\n"
        "ap_tramp_end:\n"
        ".code32\n"
        "ap_pm32:\n"
        "    mov $0x10, %ax\n"
        "    mov %ax, %ds\n"
        "    mov %ax, %es\n"
        "    mov %ax, %ss\n"
        "    mov ap_stack_top, %esp\n"
        "    call ap_main\n"
        "1:  hlt\n"
        "    jmp 1b\n");

static void lock(void) {
    while (__atomic_exchange_n(&console_lock, 1, __ATOMIC_ACQUIRE))
        __asm__ volatile("pause");
}
static void unlock(void) { __atomic_store_n(&console_lock, 0, __ATOMIC_RELEASE); }

static void on_ipi(struct frame *f) {
    (void)f;
    ap_got_ipi++;
    apic_wr(0xB0, 0); /* EOI */
}

void ap_main(void) {
    idt_load();
    apic_wr(0xF0, 0x1FF); /* each CPU enables its own LAPIC */
    ap_apic_id = apic_rd(0x20) >> 24;
    lock();
    printf("AP: vCPU with APIC ID %u is up\n", ap_apic_id);
    unlock();
    ap_up = 1;
    sti();
    while (!ap_got_ipi)
        __asm__ volatile("hlt");
    lock();
    printf("AP: IPI %x received\n", IPI_VECTOR);
    unlock();
    ap_up = 2;
    for (;;)
        __asm__ volatile("hlt");
}

static int wait_for(int value) {
    uint64_t start = rdtsc();
    while (ap_up != value)
        if (rdtsc() - start > TIMEOUT_CYCLES)
            return 0;
    return 1;
}

static void send_ipi(uint32_t apic_id, uint32_t lo) {
    apic_wr(0x310, apic_id << 24);
    apic_wr(0x300, lo);
}

int main(void) {
    int failures = 0;
    serial_init();
    idt_init();
    set_handler(IPI_VECTOR, on_ipi);
    apic_wr(0xF0, 0x1FF);
    for (char *s = ap_tramp_start, *d = (char *)TRAMPOLINE; s < ap_tramp_end; s++, d++)
        *d = *s;
    lock();
    printf("BSP: APIC ID %u, starting vCPU 1 with INIT-SIPI-SIPI\n", apic_rd(0x20) >> 24);
    unlock();
    send_ipi(1, 0x4500);                        /* INIT, level assert */
    send_ipi(1, 0x0600 | (TRAMPOLINE >> 12));   /* Startup IPI */
    send_ipi(1, 0x0600 | (TRAMPOLINE >> 12));   /* the second one is ignored */
    CHECK(wait_for(1), "the AP did not start");
    CHECK(ap_apic_id == 1, "AP APIC ID %u", ap_apic_id);
    send_ipi(1, IPI_VECTOR);                    /* fixed, physical destination 1 */
    CHECK(wait_for(2), "the AP did not take the IPI");
    lock();
    printf("BSP: both vCPUs printed; %s\n", failures ? "FAILED" : "PASS");
    unlock();
    return failures ? 1 : 0;
}
