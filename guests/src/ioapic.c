/* ioapic: the UART's IRQ 4 routed through the I/O APIC to the local APIC. Phase 1 edge-triggered,
 * phase 2 level-triggered: remote IRR stays set in the RTE until the local APIC's EOI. The 8259
 * stays masked (its power-on state). */
#include "rt.h"

#define COM1 0x3F8
#define APIC 0xFEE00000u
#define IOAPIC 0xFEC00000u
static inline void apic_wr(uint32_t off, uint32_t v) { *(volatile uint32_t *)(APIC + off) = v; }
static uint32_t ioapic_rd(uint32_t reg) {
    *(volatile uint32_t *)IOAPIC = reg;
    return *(volatile uint32_t *)(IOAPIC + 0x10);
}
static void ioapic_wr(uint32_t reg, uint32_t v) {
    *(volatile uint32_t *)IOAPIC = reg;
    *(volatile uint32_t *)(IOAPIC + 0x10) = v;
}

static const char *msg;
static volatile unsigned next, irqs, rirr_seen;

static void on_com1(struct frame *f) {
    (void)f;
    irqs++;
    rirr_seen |= (ioapic_rd(0x18) >> 14) & 1; /* RTE 4, remote IRR */
    uint8_t iir = inb(COM1 + 2);
    if ((iir & 0x0F) == 0x02) {
        if (msg[next])
            outb(COM1, (uint8_t)msg[next++]);
        else
            outb(COM1 + 1, 0x00);
    }
    apic_wr(0xB0, 0); /* local APIC EOI (broadcast to the I/O APIC for a level vector) */
}

static int send(const char *m, uint32_t rte_low) {
    msg = m, next = 0, irqs = 0;
    ioapic_wr(0x18, rte_low); /* pin 4 */
    ioapic_wr(0x19, 0);       /* destination APIC ID 0 */
    outb(COM1 + 1, 0x02);
    while (msg[next] || (inb(COM1 + 1) & 0x02))
        __asm__ volatile("hlt");
    ioapic_wr(0x18, 0x10000); /* masked */
    return (int)irqs;
}

int main(void) {
    int failures = 0;
    serial_init();
    idt_init();
    set_handler(0x34, on_com1);
    uint32_t ver = ioapic_rd(0x01);
    printf("IOAPIC version %x, %u pins\n", ver & 0xFF, ((ver >> 16) & 0xFF) + 1);
    CHECK((ver & 0xFF) == 0x11, "IOAPIC version");
    apic_wr(0xF0, 0x1FF);
    outb(COM1 + 4, 0x0B);
    sti();
    int n1 = send("edge-triggered through the IOAPIC\n", 0x34);
    int n2 = send("level-triggered through the IOAPIC\n", 0x34 | (1 << 15));
    cli();
    printf("edge: %d interrupts, level: %d interrupts, remote IRR seen: %u\n", n1, n2, rirr_seen);
    CHECK(n1 == 35 && n2 == 36, "one interrupt per byte plus the last THR empty");
    CHECK(rirr_seen, "remote IRR set while a level interrupt is in service");
    CHECK(!(ioapic_rd(0x18) & (1 << 14)), "remote IRR cleared by the EOI");
    return failures;
}
