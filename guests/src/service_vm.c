/* service_vm: the Service VM's built-in guest. "idle" halts; "busy" (Multiboot command line)
 * keeps its vCPU computing, to load the Service VM. */
#include "rt.h"

static int has(const char *s, const char *w) {
    for (; *s; s++) {
        const char *a = s, *b = w;
        while (*a && *b && *a == *b)
            a++, b++;
        if (!*b)
            return 1;
    }
    return 0;
}

int main(void) {
    serial_init();
    const char *cmd = rt_cmdline_args();
    if (has(cmd, "busy")) {
        printf("Service VM: busy workload\n");
        volatile uint32_t x = 1;
        for (;;)
            x = x * 1103515245u + 12345u;
    }
    printf("Service VM: idle\n");
    for (;;)
        __asm__ volatile("hlt");
}
