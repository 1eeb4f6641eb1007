/* smc: self-modifying code. A 10-byte routine in its own page runs N times; then the guest
 * rewrites it in place with a routine of the same length (two cheap XORs become two DIVs) and
 * runs it N times again. It prints the cycles of both runs, read with RDTSC (simulated
 * cycles), and their results. The translator always runs the new bytes (result 42). With
 * `--detect-smc` the block is also decoded and costed again, so the second run costs the
 * DIVs; without it, the block keeps the cost of its first bytes. */
#include "rt.h"

#define N 200

/* mov eax, 7 ; xor edx, edx ; xor edx, edx ; ret   -> 7 */
static const uint8_t before[10] = {0xb8, 7, 0, 0, 0, 0x31, 0xd2, 0x31, 0xd2, 0xc3};
/* mov eax, 42 ; div ecx ; div ecx ; ret   (ECX = 1, EDX = 0) -> 42 */
static const uint8_t after[10] = {0xb8, 42, 0, 0, 0, 0xf7, 0xf1, 0xf7, 0xf1, 0xc3};

static uint8_t code[4096] __attribute__((aligned(4096)));

static void load(const uint8_t *src) {
    volatile uint8_t *dst = code;
    for (unsigned i = 0; i < sizeof before; i++)
        dst[i] = src[i];
}

static unsigned run(uint32_t *cycles) {
    unsigned r = 0;
    uint64_t t0 = rdtsc();
    for (unsigned i = 0; i < N; i++) {
        unsigned a, d = 0, c = 1;
        __asm__ volatile("call *%3" : "=&a"(a), "+d"(d), "+c"(c) : "r"(code) : "memory", "cc");
        r = a;
    }
    *cycles = (uint32_t)(rdtsc() - t0);
    return r;
}

int main(void) {
    uint32_t c1, c2;
    serial_init();
    load(before);
    unsigned r1 = run(&c1);
    load(after);
    unsigned r2 = run(&c2);
    printf("smc: before %u cycles, result %u\n", c1, r1);
    printf("smc: after %u cycles, result %u\n", c2, r2);
    return (r1 == 7 && r2 == 42) ? 0 : 1;
}
