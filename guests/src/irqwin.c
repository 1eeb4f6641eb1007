/* irqwin: an external interrupt made pending while IF = 0 must wait for STI and the
 * one-instruction STI shadow, then arrive through the IDT (the harness injects vector 0x31). */
#include "rt.h"

static volatile int taken;

static void on_irq(struct frame *f) { (void)f; taken++; }

int main(void) {
    int failures = 0;
    serial_init();
    idt_init();
    set_handler(0x31, on_irq);
    cli();
    for (volatile int i = 0; i < 2000; i++)
        ;
    int early = taken;
    sti();
    for (volatile int i = 0; i < 2000 && !taken; i++)
        ;
    printf("interrupt while IF=0: %d, after STI: %d\n", early, taken);
    CHECK(early == 0, "interrupt delivered with IF=0");
    CHECK(taken == 1, "interrupt not delivered after STI");
    return failures;
}
