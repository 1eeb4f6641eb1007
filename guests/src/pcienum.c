/* pcienum: enumerates PCI bus 0 through configuration mechanism 1 (0xCF8/0xCFC) and prints
 * what it finds. In a User VM, HSM latches 0xCF8 itself and sends 0xCFC accesses to the device
 * model as PCICFG requests. */
#include "rt.h"

static uint32_t cfg_read(int bus, int dev, int func, int reg) {
    uint32_t v;
    uint32_t addr = 0x80000000u | (bus << 16) | (dev << 11) | (func << 8) | (reg & 0xFC);
    __asm__ volatile("outl %0, %1" ::"a"(addr), "Nd"((uint16_t)0xCF8));
    __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"((uint16_t)0xCFC));
    return v;
}

int main(void) {
    int failures = 0, found = 0;
    serial_init();
    for (int dev = 0; dev < 32; dev++) {
        uint32_t id = cfg_read(0, dev, 0, 0);
        if ((id & 0xFFFF) == 0xFFFF)
            continue;
        uint32_t cls = cfg_read(0, dev, 0, 8);
        printf("00:%02x.0 %04x:%04x class %04x\n", dev, id & 0xFFFF, id >> 16, cls >> 16);
        found++;
    }
    /* With the enable bit clear, configuration data reads all ones. */
    uint32_t v;
    __asm__ volatile("outl %0, %1" ::"a"(0u), "Nd"((uint16_t)0xCF8));
    __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"((uint16_t)0xCFC));
    CHECK(v == 0xFFFFFFFFu, "disabled config read gave %x", v);
    CHECK(found >= 1, "no host bridge");
    printf("%d device(s) on bus 0\n", found);
    return failures;
}
