/* ticker: a periodic LAPIC timer (2 ms) wakes the guest, which prints "tick N" and keeps the
 * longest gap between two ticks, measured with RDTSC. Used to watch a pause: a paused VM
 * prints nothing, and on resume it goes on where it stopped (its TSC kept counting, so it
 * sees one long gap). Exits 0 after 10 ticks. */
#include "rt.h"

#define APIC 0xFEE00000u
#define PERIOD 4800000u /* 2 ms at 2.4 GHz, divide by 1 */
#define TICKS 10

static inline void apic_wr(uint32_t off, uint32_t v) { *(volatile uint32_t *)(APIC + off) = v; }
static volatile unsigned ticks;

static void on_timer(struct frame *f) {
    (void)f;
    ticks++;
    apic_wr(0xB0, 0);
}

int main(void) {
    serial_init();
    idt_init();
    set_handler(0x30, on_timer);
    apic_wr(0xF0, 0x1FF);
    apic_wr(0x3E0, 0xB);
    apic_wr(0x320, 0x20000 | 0x30); /* periodic, vector 0x30 */
    apic_wr(0x380, PERIOD);
    sti();
    uint64_t last = rdtsc(), max_gap = 0;
    unsigned seen = 0;
    while (seen < TICKS) {
        __asm__ volatile("hlt");
        if (ticks == seen)
            continue;
        seen = ticks;
        uint64_t now = rdtsc();
        if (now - last > max_gap)
            max_gap = now - last;
        last = now;
        printf("tick %u\n", seen);
    }
    apic_wr(0x380, 0);
    printf("longest gap %lu us\n", (unsigned long)(max_gap / 2400));
    return 0;
}
