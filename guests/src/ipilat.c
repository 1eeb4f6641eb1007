/* ipilat: how long a fixed IPI takes from one vCPU to another that is busy computing.
 * vCPU 0 starts vCPU 1 with INIT-SIPI-SIPI; vCPU 1 enables interrupts and runs a compute loop.
 * vCPU 0 then sends N fixed IPIs (xAPIC ICR), each after a pause of its own that varies, and
 * reads the TSC just before the ICR write; vCPU 1's handler reads the TSC on entry. Both read
 * the same TSC (one VM, no offset), so the difference is the delivery delay as the guests see
 * it. Prints "IPI delivery: min A max B cycles" (and the mean), then exits 0.
 * Command line: "n=N" (default 200). */
#include "rt.h"

#define APIC 0xFEE00000u
#define TRAMPOLINE 0x9000u
#define IPI_VECTOR 0x3B
#define TIMEOUT_CYCLES 240000000ull /* 100 ms at 2.4 GHz */

static inline uint32_t apic_rd(uint32_t off) { return *(volatile uint32_t *)(APIC + off); }
static inline void apic_wr(uint32_t off, uint32_t v) { *(volatile uint32_t *)(APIC + off) = v; }

extern char ipl_tramp_start[], ipl_tramp_end[];
static uint8_t ap_stack[4096] __attribute__((aligned(16)));
uint32_t ipl_stack_top = (uint32_t)(ap_stack + sizeof(ap_stack));
static volatile uint32_t ap_up, received;
static volatile uint64_t sent_at, received_at;
static volatile uint32_t sink;

/* The AP's start-up code, copied to TRAMPOLINE: CS = 0x900 and IP = 0 after the SIPI. */
__asm__(".section .text\n"
        ".global ipl_tramp_start, ipl_tramp_end\n"
        ".code16\n"
        "ipl_tramp_start:\n"
        "    cli\n"
        "    mov %cs, %ax\n"
        "    mov %ax, %ds\n"
        "    lgdtl (ipl_gdt_desc - ipl_tramp_start)\n"
        "    mov %cr0, %eax\n"
        "    or $1, %eax\n"
        "    mov %eax, %cr0\n"
        "    ljmpl $0x08, $ipl_pm32\n"
        ".align 8\n"
        "ipl_gdt:\n"
        "    .quad 0, 0x00CF9A000000FFFF, 0x00CF92000000FFFF\n"
        "ipl_gdt_desc:\n"
        "    .word 23\n"
        "    .long 0x9000 + (ipl_gdt - ipl_tramp_start)\n"
        "ipl_tramp_end:\n"
        ".code32\n"
        "ipl_pm32:\n"
        "    mov $0x10, %ax\n"
        "    mov %ax, %ds\n"
        "    mov %ax, %es\n"
        "    mov %ax, %ss\n"
        "    mov ipl_stack_top, %esp\n"
        "    call ap_main\n"
        "1:  hlt\n"
        "    jmp 1b\n");

static void on_ipi(struct frame *f) {
    (void)f;
    received_at = rdtsc();
    received++;
    apic_wr(0xB0, 0); /* EOI */
}

void ap_main(void) {
    idt_load();
    apic_wr(0xF0, 0x1FF);
    ap_up = 1;
    sti();
    uint32_t x = 1;
    for (;;) { /* busy: a compute loop that never halts */
        x = x * 1103515245u + 12345u;
        sink = x;
    }
}

static void send_ipi(uint32_t apic_id, uint32_t lo) {
    apic_wr(0x310, apic_id << 24);
    apic_wr(0x300, lo);
}

static unsigned arg_n(const char *s, unsigned dflt) {
    for (; s && *s; s++)
        if (s[0] == 'n' && s[1] == '=') {
            unsigned v = 0;
            for (s += 2; *s >= '0' && *s <= '9'; s++)
                v = v * 10 + (unsigned)(*s - '0');
            return v ? v : dflt;
        }
    return dflt;
}

int main(void) {
    const char *cmd = (rt_mbi && (rt_mbi->flags & 4)) ? (const char *)(ureg)rt_mbi->cmdline : "";
    unsigned n = arg_n(cmd, 200);
    serial_init();
    idt_init();
    set_handler(IPI_VECTOR, on_ipi);
    apic_wr(0xF0, 0x1FF);
    for (char *s = ipl_tramp_start, *d = (char *)TRAMPOLINE; s < ipl_tramp_end; s++, d++)
        *d = *s;
    send_ipi(1, 0x4500);                      /* INIT */
    send_ipi(1, 0x0600 | (TRAMPOLINE >> 12)); /* Startup IPI */
    uint64_t start = rdtsc();
    while (!ap_up)
        if (rdtsc() - start > TIMEOUT_CYCLES) {
            printf("ipilat: the AP did not start\n");
            return 2;
        }
    uint64_t min = ~0ull, max = 0, sum = 0;
    for (unsigned i = 0; i < n; i++) {
        /* a pause that varies, so that IPIs land at different points of the AP's time */
        for (volatile unsigned k = 0; k < 200 + (i * 7919u) % 5000u; k++)
            ;
        uint32_t before = received;
        apic_wr(0x310, 1u << 24); /* the destination first: the time covers the ICR write */
        sent_at = rdtsc();
        apic_wr(0x300, IPI_VECTOR);
        start = rdtsc();
        while (received == before)
            if (rdtsc() - start > TIMEOUT_CYCLES) {
                printf("ipilat: IPI %u was not delivered\n", i);
                return 1;
            }
        uint64_t d = received_at - sent_at;
        if (d < min)
            min = d;
        if (d > max)
            max = d;
        sum += d;
    }
    printf("IPI delivery: min %llu max %llu cycles\n", (unsigned long long)min,
           (unsigned long long)max);
    printf("IPI delivery: mean %llu cycles over %u IPIs\n",
           (unsigned long long)udivmod64(sum, n, 0), n);
    return 0;
}
