/* hello: the smallest guest. Prints a greeting and what the boot loader passed. */
#include "rt.h"

int main(void) {
    serial_init();
    printf("Hello from an ACRN guest!\n");
    if (rt_mbi && (rt_mbi->flags & 1))
        printf("memory: %u KiB low, %u KiB high\n", rt_mbi->mem_lower, rt_mbi->mem_upper);
    if (rt_mbi && (rt_mbi->flags & 4)) /* the arguments: the loader puts the image's path first */
        printf("cmdline: '%s'\n", rt_cmdline_args());
    return 0;
}
