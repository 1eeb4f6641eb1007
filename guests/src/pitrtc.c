/* pitrtc: the device model's timers. The PIT's channel 0 in rate-generator mode (1 kHz) and
 * the RTC's periodic interrupt (register A rate 1024 Hz, register B PIE) reach the guest
 * through HC_SET_IRQLINE and the 8259 pair (IRQ 0 and IRQ 8). The guest counts both for
 * 20 ms of TSC time and checks the rates, and that latching the PIT counter reads a count
 * that goes down. */
#include "rt.h"

static volatile unsigned pit_irqs, rtc_irqs;

static void on_pit(struct frame *f) {
    (void)f;
    pit_irqs++;
    outb(0x20, 0x20);
}

static void on_rtc(struct frame *f) {
    (void)f;
    rtc_irqs++;
    outb(0x70, 0x0C);
    (void)inb(0x71); /* reading register C acknowledges */
    outb(0xA0, 0x20);
    outb(0x20, 0x20);
}

static unsigned pit_read(void) {
    outb(0x43, 0x00); /* latch channel 0 */
    unsigned lo = inb(0x40);
    return lo | ((unsigned)inb(0x40) << 8);
}

int main(void) {
    int failures = 0;
    uint32_t r[4];
    serial_init();
    idt_init();
    cpuid(0x40000010, 0, r);
    uint64_t khz = r[0] ? r[0] : 2400000;
    set_handler(0x20, on_pit);
    set_handler(0x28, on_rtc);
    outb(0x20, 0x11); outb(0xA0, 0x11);
    outb(0x21, 0x20); outb(0xA1, 0x28);
    outb(0x21, 0x04); outb(0xA1, 0x02);
    outb(0x21, 0x01); outb(0xA1, 0x01);
    outb(0x21, 0xFA); outb(0xA1, 0xFE); /* IRQ 0, 2 (cascade) and 8 */
    outb(0x43, 0x34);                   /* channel 0, LSB then MSB, mode 2 */
    outb(0x40, 1193 & 0xFF);
    outb(0x40, 1193 >> 8);              /* 1193182 / 1193 = 1000 Hz */
    outb(0x70, 0x0A); outb(0x71, 0x26); /* rate 6: 1024 Hz */
    outb(0x70, 0x0B); outb(0x71, 0x42); /* PIE, 24-hour */
    unsigned c1 = pit_read(), c2 = pit_read();
    sti();
    uint64_t start = rdtsc(), span = 20 * khz; /* 20 ms */
    while (rdtsc() - start < span)
        __asm__ volatile("hlt");
    cli();
    printf("in 20 ms: %u PIT interrupts, %u RTC interrupts; PIT count %u then %u\n", pit_irqs,
           rtc_irqs, c1, c2);
    CHECK(pit_irqs >= 19 && pit_irqs <= 21, "PIT rate: %u", pit_irqs);
    CHECK(rtc_irqs >= 19 && rtc_irqs <= 22, "RTC rate: %u", rtc_irqs);
    CHECK(c1 <= 1193 && c2 < c1, "PIT counter does not count down: %u %u", c1, c2);
    printf("pitrtc: %s\n", failures ? "FAILED" : "all checks passed");
    return failures;
}
