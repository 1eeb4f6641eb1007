/* reset: asks for a platform reset through the reset control register (0xCF9) and checks,
 * on the second boot, that CMOS RAM (kept by the device model) survived it. */
#include "rt.h"

static uint8_t cmos_read(uint8_t i) { outb(0x70, i); return inb(0x71); }
static void cmos_write(uint8_t i, uint8_t v) { outb(0x70, i); outb(0x71, v); }

int main(void) {
    serial_init();
    if (cmos_read(0x50) != 0x5A) {
        cmos_write(0x50, 0x5A);
        printf("first boot: resetting through 0xCF9\n");
        outb(0xCF9, 0x06); /* SYS_RST | RST_CPU */
        for (;;)
            __asm__ volatile("hlt");
    }
    printf("second boot: CMOS 0x50 = %x\n", cmos_read(0x50));
    return 0;
}
