/* ktest_nmi: NMIs are blocked from the delivery of an NMI until the next IRET (SDM vol. 3
 * §6.7.1 "Handling Multiple NMIs"), the IRET of any handler: an NMI that comes meanwhile is
 * held (one, not counted twice) and delivered right after that IRET.
 *
 *   qemu-system-x86_64 -kernel ktest_nmi.elf -device isa-debug-exit,iobase=0xf4,iosize=4
 *
 * Self-NMIs go through the local APIC's ICR (delivery mode NMI, physical destination = our
 * APIC ID), as in ktest_user. The NMI handler, on its first entry, sends itself another NMI
 * and spins: the second must not arrive until the handler has returned. On a later entry it
 * sends one and executes INT3: the #BP handler's IRET unblocks NMIs, so the held NMI arrives
 * right after INT3, nested inside the first NMI handler (the case Linux's NMI entry code
 * guards against, arch/x86/entry/entry_64.S). TAP lines; exit code 0 if every check passes. */
#include "ktest.h"

#define LAPIC 0xFEE00000ul
#define SPIN 200000

static volatile uint32_t *lapic(unsigned reg) { return (volatile uint32_t *)(LAPIC + reg); }

static int n, failures;
static uint32_t apic_id;
static volatile int nmis, depth, max_depth, bps, phase;
static volatile int seen_in_spin, seen_before_int3, seen_after_int3, depth_after_int3;

static void check(int ok, const char *what) {
    printf("%s %d - %s\n", ok ? "ok" : "not ok", ++n, what);
    if (!ok)
        failures++;
}

static void self_nmi(void) {
    *lapic(0x310) = apic_id << 24;
    *lapic(0x300) = 0x4400; /* delivery mode NMI, assert, physical, no shorthand */
}

static void spin(void) {
    for (volatile int i = 0; i < SPIN; i++)
        ;
}

static void bp_handler(struct frame *f) {
    (void)f;
    bps++; /* returns with IRETQ (the runtime's stub) */
}

static void nmi_handler(struct frame *f) {
    (void)f;
    int me = ++nmis;
    if (++depth > max_depth)
        max_depth = depth;
    if (phase == 1 && me == 1) {
        self_nmi(); /* held: NMIs are blocked until this handler's IRET */
        spin();
        seen_in_spin = nmis;
    } else if (phase == 2 && me == 3) {
        self_nmi();
        spin();
        seen_before_int3 = nmis;
        __asm__ volatile("int3"); /* its handler's IRET unblocks NMIs */
        seen_after_int3 = nmis;
        depth_after_int3 = max_depth;
    }
    depth--;
}

int ktest_main(uint32_t magic, struct multiboot_info *mbi) {
    (void)mbi;
    serial_init();
    printf("# ktest_nmi: NMI blocking until IRET (SDM vol. 3 6.7.1)\n");
    check(magic == MULTIBOOT_BOOTLOADER_MAGIC, "entered through Multiboot");
    outb(0x21, 0xFF); /* mask the 8259s */
    outb(0xA1, 0xFF);
    uint16_t cs;
    __asm__ volatile("mov %%cs, %0" : "=r"(cs));
    kt_idt_init(cs);
    kt_set_handler(2, nmi_handler);
    kt_set_handler(3, bp_handler);
    *lapic(0xF0) = 0x1FF; /* software-enabled, spurious vector 0xFF */
    apic_id = *lapic(0x20) >> 24;

    phase = 1;
    self_nmi();
    for (int i = 0; i < 20 && nmis < 2; i++)
        spin();
    check(seen_in_spin == 1, "an NMI sent inside the NMI handler is held while it runs");
    check(nmis == 2, "the held NMI is delivered after the handler's IRET");
    check(max_depth == 1, "no NMI handler ran nested inside another");

    phase = 2;
    self_nmi();
    for (int i = 0; i < 20 && nmis < 4; i++)
        spin();
    check(seen_before_int3 == 3, "held again in the next NMI handler");
    check(bps == 1 && seen_after_int3 == 4, "the #BP handler's IRET unblocks NMIs: the held one comes right after it");
    check(depth_after_int3 == 2, "that NMI ran nested inside the first handler");
    check(nmis == 4, "no NMI lost or delivered twice");
    printf("1..%d\n", n);
    printf("# ktest_nmi: %d checks, %d failed\n", n, failures);
    return failures ? 1 : 0;
}
