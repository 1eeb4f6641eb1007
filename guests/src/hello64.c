/* hello64: an ELF64 guest, entered directly in long mode. */
#include "rt.h"

int main(void) {
    serial_init();
    uint64_t efer = rdmsr(0xC0000080);
    printf("Hello from a 64-bit ACRN guest!\n");
    printf("EFER.LMA=%u CR0.PG=%u\n", (unsigned)((efer >> 10) & 1), (unsigned)(read_cr0() >> 31));
    if (rt_mbi && (rt_mbi->flags & 1))
        printf("memory: %u KiB high\n", rt_mbi->mem_upper);
    return ((efer >> 10) & 1) ? 0 : 1;
}
