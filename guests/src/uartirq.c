/* uartirq: an interrupt-driven UART driver. The 8259 PIC is programmed (ICW1-4, vectors
 * 0x20-0x2F, only IRQ 4 unmasked); the transmitter-empty interrupt (IER.ETBEI) sends a message
 * one byte per interrupt from the handler, which acknowledges with a non-specific EOI. As a User
 * VM the interrupt comes from the device model's UART through HC_SET_IRQLINE and the vPIC. */
#include "rt.h"

#define COM1 0x3F8
static const char msg[] = "interrupt-driven UART: hello\n";
static volatile unsigned next, irqs, isr_seen;

static void on_com1(struct frame *f) {
    (void)f;
    irqs++;
    outb(0x20, 0x0B); /* OCW3: read ISR */
    isr_seen |= inb(0x20);
    uint8_t iir = inb(COM1 + 2);
    if ((iir & 0x0F) == 0x02) { /* THR empty */
        if (msg[next])
            outb(COM1, (uint8_t)msg[next++]);
        else
            outb(COM1 + 1, 0x00); /* all sent: transmitter interrupt off */
    }
    outb(0x20, 0x20); /* non-specific EOI */
}

int main(void) {
    int failures = 0;
    serial_init();
    idt_init();
    set_handler(0x24, on_com1);
    /* PIC: ICW1 edge+ICW4, ICW2 vector base, ICW3 cascade on IR2, ICW4 8086 mode */
    outb(0x20, 0x11); outb(0xA0, 0x11);
    outb(0x21, 0x20); outb(0xA1, 0x28);
    outb(0x21, 0x04); outb(0xA1, 0x02);
    outb(0x21, 0x01); outb(0xA1, 0x01);
    outb(0x21, 0xEF); outb(0xA1, 0xFF); /* OCW1: only IRQ 4 */
    outb(COM1 + 4, 0x0B);               /* DTR | RTS | OUT2: the IRQ reaches the PIC */
    outb(COM1 + 1, 0x02);               /* IER: transmitter holding register empty */
    sti();
    while (msg[next] || (inb(COM1 + 1) & 0x02))
        __asm__ volatile("hlt");
    cli();
    printf("%u interrupts for %u bytes, ISR bit 4 seen in the handler: %u\n", irqs, next,
           (isr_seen >> 4) & 1);
    CHECK(next == sizeof(msg) - 1, "sent %u of %u bytes", next, (unsigned)sizeof(msg) - 1);
    CHECK(irqs == next + 1, "one interrupt per byte plus the last THR empty (%u)", irqs);
    CHECK(isr_seen & 0x10, "ISR did not show IRQ 4 in service");
    outb(0x20, 0x0A); /* OCW3: read IRR */
    CHECK(!(inb(0x20) & 0x10), "IRQ 4 still requested");
    return failures;
}
