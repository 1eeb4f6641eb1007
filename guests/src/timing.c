/* timing: what a guest measures with RDTSC for three kinds of VM exit handled in the
 * hypervisor: CPUID, an OUT to the vUART (its scratch register), and an RDMSR (PAT). */
#include "rt.h"

#define N 64 /* samples per kind; a power of two so the average needs no 64-bit division */

static void do_cpuid(int i) {
    uint32_t r[4];
    (void)i;
    cpuid(0, 0, r);
}
static void do_out(int i) { outb(0x3FF, (uint8_t)i); }
static void do_rdmsr(int i) {
    (void)i;
    (void)rdmsr(0x277);
}

static void measure(const char *what, void (*op)(int)) {
    uint64_t min = ~0ull, total = 0;
    for (int i = 0; i < N; i++) {
        uint64_t t0 = rdtsc();
        op(i);
        uint64_t d = rdtsc() - t0;
        total += d;
        if (d < min)
            min = d;
    }
    printf("%s: min %lu avg %lu cycles per exit round trip\n", what, (unsigned long)min,
           (unsigned long)(total >> 6));
}

int main(void) {
    serial_init();
    measure("cpuid", do_cpuid);
    measure("out to vUART", do_out);
    measure("rdmsr", do_rdmsr);
    return 0;
}
