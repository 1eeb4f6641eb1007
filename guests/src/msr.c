/* msr: the MSRs ACRN emulates (vmsr.c), and #GP(0) for one it does not know. */
#include "rt.h"

static volatile int gp_count;

static void on_gp(struct frame *f) {
    gp_count++;
    f->ip += 2; /* skip the RDMSR/WRMSR (0F 32 / 0F 30) */
}

int main(void) {
    int failures = 0;
    serial_init();
    idt_init();
    set_handler(13, on_gp);

    uint64_t tsc = rdmsr(0x10);
    wrmsr(0x10, 1000000000ull);
    uint64_t t2 = rdmsr(0x10);
    printf("TSC %lx -> wrote 1e9, reads %lu\n", (unsigned long)tsc, (unsigned long)t2);
    CHECK(t2 >= 1000000000ull && t2 < 1000000000ull + 100000, "TSC write");
    uint64_t adj = rdmsr(0x3B);
    printf("TSC_ADJUST after the write: %lx\n", (unsigned long)adj);
    CHECK(adj != 0, "TSC_ADJUST follows a TSC write");

    wrmsr(0x6E0, 0x123456789ull); /* ACRN: ignored unless the LVT timer is in deadline mode */
    CHECK(rdmsr(0x6E0) == 0, "TSC_DEADLINE outside deadline mode reads 0");
    uint64_t apic = rdmsr(0x1B);
    printf("APIC_BASE %lx\n", (unsigned long)apic);
    CHECK((apic & ~0xfffull) == 0xFEE00000ull && (apic & 0x900) == 0x900, "APIC_BASE");

    uint64_t efer = rdmsr(0xC0000080);
    wrmsr(0xC0000080, efer | (1 << 11));
    CHECK(rdmsr(0xC0000080) & (1 << 11), "EFER.NXE");
    wrmsr(0xC0000080, efer);

    wrmsr(0x277, 0x0007040600070406ull);
    CHECK(rdmsr(0x277) == 0x0007040600070406ull, "PAT");
    int before = gp_count;
    wrmsr(0x277, 0x0202020202020202ull); /* memory type 2 is reserved: #GP */
    CHECK(gp_count == before + 1, "bad PAT gives #GP");

    CHECK(rdmsr(0x1A0) & 1, "MISC_ENABLE fast strings");
    wrmsr(0xC0000100, 0x1000);
    wrmsr(0xC0000101, 0x2000);
    wrmsr(0xC0000102, 0x3000);
    CHECK(rdmsr(0xC0000100) == 0x1000 && rdmsr(0xC0000101) == 0x2000 && rdmsr(0xC0000102) == 0x3000,
          "FS/GS/KERNEL_GS bases");

    before = gp_count;
    uint64_t v = rdmsr(0x12345);
    (void)v;
    CHECK(gp_count == before + 1, "unknown MSR read gives #GP");
    wrmsr(0x12345, 1);
    CHECK(gp_count == before + 2, "unknown MSR write gives #GP");
    printf("#GP taken: %d\n", gp_count);
    printf(failures ? "msr: FAILED\n" : "msr: all checks passed\n");
    return failures;
}
