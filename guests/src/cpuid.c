/* cpuid: checks the virtual CPUID that ACRN gives a VM (vcpuid.c). */
#include "rt.h"

static int same(uint32_t a, uint32_t b, uint32_t c, const char *s) {
    uint32_t w[3] = {a, b, c};
    const char *p = (const char *)w;
    for (int i = 0; i < 12; i++)
        if (p[i] != s[i])
            return 0;
    return 1;
}

int main(void) {
    int failures = 0;
    uint32_t r[4];
    serial_init();
    cpuid(0x40000000, 0, r);
    printf("leaf 0x40000000: max %x signature '%c%c%c%c...'\n", r[0], r[1] & 0xff, (r[1] >> 8) & 0xff,
           (r[1] >> 16) & 0xff, r[1] >> 24);
    CHECK(same(r[1], r[2], r[3], "ACRNACRNACRN"), "hypervisor signature");
    CHECK(r[0] == 0x40000010, "max hypervisor leaf %x", r[0]);
    cpuid(0x40000010, 0, r);
    printf("TSC frequency: %u kHz\n", r[0]);
    CHECK(r[0] > 0, "TSC kHz");
    cpuid(0, 0, r);
    CHECK(same(r[1], r[3], r[2], "GenuineIntel"), "vendor");
    cpuid(1, 0, r);
    CHECK(r[2] & (1u << 31), "hypervisor bit");
    CHECK(!(r[2] & (1u << 5)), "VMX must be hidden");
    printf("family/model/stepping %x, features ecx %x edx %x\n", r[0], r[2], r[3]);
    cpuid(0x80000001, 0, r);
    CHECK(r[3] & (1u << 29), "long mode bit");
    printf(failures ? "cpuid: FAILED\n" : "cpuid: all checks passed\n");
    return failures;
}
