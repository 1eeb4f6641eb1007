/* bench: workloads for `acrn-sim bench`, chosen by the Multiboot command line:
 *   compute N   N iterations of a 5-instruction register-only loop (one basic block): the
 *               worst case for per-block accounting
 *   memory N    N iterations of a loop that loads and stores an array (a typical kernel)
 *   cpuid N     N CPUID exits
 *   pio N       N IN instructions from port 0x80 (an exit the hypervisor completes) */
#include "rt.h"

static unsigned arg(const char *s, const char *word) {
    for (; *s; s++) {
        const char *a = s, *b = word;
        while (*b && *a == *b)
            a++, b++;
        if (!*b) {
            unsigned v = 0;
            while (*a == ' ')
                a++;
            while (*a >= '0' && *a <= '9')
                v = v * 10 + (unsigned)(*a++ - '0');
            return v ? v : 1;
        }
    }
    return 0;
}

int main(void) {
    const char *cmd = rt_cmdline_args();
    unsigned n;
    if ((n = arg(cmd, "compute"))) {
        uint32_t a = 1, b = 2, c = 0;
        __asm__ volatile("1: add %%ebx, %%eax\n"
                         "   xor %%eax, %%ebx\n"
                         "   add $1, %%edx\n"
                         "   dec %%ecx\n"
                         "   jnz 1b\n"
                         : "+a"(a), "+b"(b), "+d"(c), "+c"(n));
        return (int)(a & 0); /* result unused: 0 */
    }
    if ((n = arg(cmd, "memory"))) {
        static volatile uint32_t a[1024];
        for (uint32_t i = 0; i < n; i++)
            a[i & 1023] += i ^ a[(i * 7) & 1023];
        return (int)(a[0] & 0);
    }
    if ((n = arg(cmd, "cpuid"))) {
        uint32_t r[4];
        while (n--)
            cpuid(0, 0, r);
        return 0;
    }
    if ((n = arg(cmd, "pio"))) {
        while (n--)
            (void)inb(0x80);
        return 0;
    }
    return 1;
}
