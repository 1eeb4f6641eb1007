/* timing: what a guest measures with RDTSC for three kinds of VM exit handled in the
 * hypervisor: CPUID, an OUT to the vUART (its scratch register), and an RDMSR (PAT). */
#include "rt.h"

#define N 64

static void report(const char *what, uint64_t min, uint64_t total) {
    printf("%s: min %lu avg %lu cycles per exit round trip\n", what, (unsigned long)min,
           (unsigned long)(total >> 6) /* N = 64 */);
}

int main(void) {
    uint32_t r[4];
    uint64_t t0, t1, d, min, total;
    serial_init();

    min = ~0ull, total = 0;
    for (int i = 0; i < N; i++) {
        t0 = rdtsc();
        cpuid(0, 0, r);
        t1 = rdtsc();
        d = t1 - t0;
        total += d;
        if (d < min)
            min = d;
    }
    report("cpuid", min, total);

    min = ~0ull, total = 0;
    for (int i = 0; i < N; i++) {
        t0 = rdtsc();
        outb(0x3FF, (uint8_t)i);
        t1 = rdtsc();
        d = t1 - t0;
        total += d;
        if (d < min)
            min = d;
    }
    report("out to vUART", min, total);

    min = ~0ull, total = 0;
    for (int i = 0; i < N; i++) {
        t0 = rdtsc();
        (void)rdmsr(0x277);
        t1 = rdtsc();
        d = t1 - t0;
        total += d;
        if (d < min)
            min = d;
    }
    report("rdmsr", min, total);
    return 0;
}
