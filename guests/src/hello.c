/* hello: the smallest guest. Prints a greeting and what the boot loader passed. */
#include "rt.h"

int main(void) {
    serial_init();
    printf("Hello from an ACRN guest!\n");
    if (rt_mbi && (rt_mbi->flags & 1))
        printf("memory: %u KiB low, %u KiB high\n", rt_mbi->mem_lower, rt_mbi->mem_upper);
    if (rt_mbi && (rt_mbi->flags & 4))
        printf("cmdline: '%s'\n", (const char *)(ureg)rt_mbi->cmdline);
    return 0;
}
