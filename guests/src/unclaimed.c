/* unclaimed: I/O and MMIO that nothing claims. Reads give all ones, writes are dropped
 * (ACRN's default PIO/MMIO handlers for the Service VM and pre-launched VMs). */
#include "rt.h"

int main(void) {
    int failures = 0;
    serial_init();
    uint8_t p = inb(0x80);
    uint16_t w;
    __asm__ volatile("inw %1, %0" : "=a"(w) : "Nd"((uint16_t)0x2E8));
    outb(0x80, 0x12);
    volatile uint32_t *mmio = (volatile uint32_t *)0xFED00000u;
    volatile uint8_t *mmio8 = (volatile uint8_t *)0xFED00010u;
    uint32_t v = mmio[0];
    mmio[1] = 0xdeadbeef;
    uint32_t v2 = mmio[1];
    uint32_t z = *mmio8; /* movzx */
    printf("port 0x80: %x, port 0x2e8 (word): %x, mmio: %x %x, byte %x\n", p, w, v, v2, z);
    CHECK(p == 0xff && w == 0xffff, "unclaimed ports read all ones");
    CHECK(v == 0xffffffffu && v2 == 0xffffffffu && z == 0xff, "unclaimed MMIO reads all ones");
    return failures;
}
