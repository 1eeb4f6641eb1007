/* ktest_cpu: what a test kernel expects of the processor and of ACRN's MSR and CPUID emulation,
 * checked natively (SDM volume 2: WRMSR, XSETBV, XGETBV; volume 3: 6.12 exception and interrupt
 * handling, 6.15 exception descriptions; volume 4: the MSRs). One TAP line per check; the exit
 * code is 0 only if every check passed (1 otherwise; 0x7F for an unexpected exception).
 *
 *   MSRs    SYSCALL's STAR/LSTAR/CSTAR/FMASK, SYSENTER_CS/ESP/EIP, FS/GS/KERNEL_GS_BASE and PAT
 *           keep what is written; a non-canonical base is #GP(0); an invalid PAT type is #GP(0);
 *           an MSR the processor does not have (0x1234) is #GP(0) on read and write
 *   XCR0    XSETBV with x87 only, then x87|SSE: XGETBV reads each back; XSETBV without x87 is
 *           #GP(0)
 *   #NP     INT n through a gate marked not present: #NP(n * 8 + 2)
 *   RF      set in the RFLAGS image of a fault (#GP), clear in that of INT n
 *   CPUID   leaf 0x40000000's signature; with "ACRNACRNACRN", leaf 0x40000010 gives the TSC in
 *           kHz; SMEP, when CPUID.7:EBX[7] offers it: executing a user page at CPL 0 is #PF
 *           with I/D set
 * Under QEMU's TCG (qemu64) the ACRN-only checks are skipped with a TAP SKIP, and the checks where
 * QEMU 7.2's TCG departs from the SDM (no #GP for a non-canonical base, an invalid PAT or an
 * unknown MSR; RF never set in a fault's frame; #NP's IDT error code) are TAP TODO there.
 * Command line: `strict` makes those ordinary checks everywhere, `quiet` drops the '#' lines. */
#include "ktest.h"

#define MSR_STAR 0xC0000081
#define MSR_LSTAR 0xC0000082
#define MSR_CSTAR 0xC0000083
#define MSR_FMASK 0xC0000084
#define MSR_FS_BASE 0xC0000100
#define MSR_GS_BASE 0xC0000101
#define MSR_KERNEL_GS_BASE 0xC0000102
#define MSR_SYSENTER_CS 0x174
#define MSR_SYSENTER_ESP 0x175
#define MSR_SYSENTER_EIP 0x176
#define MSR_PAT 0x277
#define RFLAGS_RF 0x10000
#define CR4_OSXSAVE (1ul << 18)
#define CR4_SMEP (1ul << 20)

static int n, failures, quiet, strict, acrn;

static void check(int ok, const char *what) {
    n++;
    if (!ok)
        failures++;
    printf("%s %d - %s\n", ok ? "ok" : "not ok", n, what);
}

/* A check QEMU 7.2's TCG is known to fail (it does not follow the SDM there): a TAP TODO, not a
 * failure, when not on ACRN and not `strict`. */
static void check_sdm(int ok, const char *what) {
    if (ok || acrn || strict) {
        check(ok, what);
        return;
    }
    printf("not ok %d - %s # TODO QEMU TCG differs from the SDM here\n", ++n, what);
}
static void skip(const char *what, const char *why) { printf("ok %d - %s # SKIP %s\n", ++n, what, why); }

/* Faults: the handler records and resumes at the fix-up address. */
static volatile uint64_t fixup, f_vector, f_error, f_flags, f_cr2;
static void fault_handler(struct frame *f) {
    f_vector = f->vector;
    f_error = f->error;
    f_flags = f->flags;
    f_cr2 = f->vector == 14 ? read_cr2() : 0;
    if (!quiet)
        printf("# vector %u error %lx at %lx rflags %lx\n", (unsigned)f->vector, (unsigned long)f->error,
               (unsigned long)f->ip, (unsigned long)f->flags);
    if (!fixup) {
        printf("Bail out! unexpected vector %u at %lx\n", (unsigned)f->vector, (unsigned long)f->ip);
        kt_exit(0x7F);
    }
    f->ip = fixup;
    fixup = 0;
}

/* Run one instruction with a fix-up; afterwards f_vector is what it raised, or -1. */
#define TRY(insn, ...)                                                                          \
    do {                                                                                        \
        f_vector = (uint64_t)-1;                                                                \
        __asm__ volatile("lea 1f(%%rip), %%r11\n"                                               \
                         "mov %%r11, fixup(%%rip)\n" insn "\n"                                  \
                         "movq $0, fixup(%%rip)\n"                                              \
                         "1:\n" ::__VA_ARGS__                                                   \
                         : "r11", "memory");                                                    \
    } while (0)

static int wrmsr_gp(uint32_t msr, uint64_t v) {
    TRY("wrmsr", "c"(msr), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)));
    return f_vector == 13 && f_error == 0;
}
static int rdmsr_gp(uint32_t msr) {
    f_vector = (uint64_t)-1;
    __asm__ volatile("lea 1f(%%rip), %%r11\n"
                     "mov %%r11, fixup(%%rip)\n"
                     "rdmsr\n"
                     "movq $0, fixup(%%rip)\n"
                     "1:\n" ::"c"(msr)
                     : "rax", "rdx", "r11", "memory");
    return f_vector == 13 && f_error == 0;
}
static int xsetbv_gp(uint64_t v) {
    TRY("xsetbv", "c"(0), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)));
    return f_vector == 13 && f_error == 0;
}
static uint64_t xgetbv0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (uint64_t)hi << 32 | lo;
}
static void xsetbv0(uint64_t v) { __asm__ volatile("xsetbv" ::"c"(0), "a"((uint32_t)v), "d"((uint32_t)(v >> 32))); }

static void msrs(void) {
    static const uint32_t keep[] = {MSR_STAR, MSR_LSTAR, MSR_CSTAR, MSR_FMASK, MSR_SYSENTER_CS, MSR_SYSENTER_ESP,
                                    MSR_SYSENTER_EIP, MSR_FS_BASE, MSR_GS_BASE, MSR_KERNEL_GS_BASE};
    int ok = 1;
    for (unsigned i = 0; i < sizeof(keep) / sizeof(keep[0]); i++) {
        uint64_t v = keep[i] == MSR_SYSENTER_CS ? 0x10 : keep[i] == MSR_FMASK ? 0x47700 : 0xffff800000123000ull + i * 8;
        if (keep[i] == MSR_STAR)
            v = 0x0023001000000000ull;
        uint64_t old = rdmsr(keep[i]);
        wrmsr(keep[i], v);
        if (rdmsr(keep[i]) != v) {
            ok = 0;
            printf("# MSR %x reads %lx after writing %lx\n", keep[i], (unsigned long)rdmsr(keep[i]), (unsigned long)v);
        }
        if (keep[i] != MSR_GS_BASE && keep[i] != MSR_FS_BASE)
            wrmsr(keep[i], old);
        else
            wrmsr(keep[i], 0);
    }
    check(ok, "STAR, LSTAR, CSTAR, FMASK, SYSENTER_CS/ESP/EIP, FS/GS/KERNEL_GS_BASE keep what is written");
    check_sdm(wrmsr_gp(MSR_FS_BASE, 0x0000800000000000ull), "WRMSR FS_BASE with a non-canonical address: #GP(0)");
    check_sdm(wrmsr_gp(MSR_GS_BASE, 0x8000000000000000ull), "WRMSR GS_BASE with a non-canonical address: #GP(0)");
    check_sdm(wrmsr_gp(MSR_KERNEL_GS_BASE, 0x1234567812345678ull),
          "WRMSR KERNEL_GS_BASE with a non-canonical address: #GP(0)");
    check_sdm(wrmsr_gp(MSR_LSTAR, 0x0000900000000000ull), "WRMSR LSTAR with a non-canonical address: #GP(0)");
    uint64_t pat = rdmsr(MSR_PAT);
    wrmsr(MSR_PAT, 0x0007040600070406ull);
    check(rdmsr(MSR_PAT) == 0x0007040600070406ull, "PAT keeps a valid value");
    check_sdm(wrmsr_gp(MSR_PAT, 0x0007040600070402ull), "WRMSR PAT with memory type 2 (reserved): #GP(0)");
    wrmsr(MSR_PAT, pat);
    check_sdm(rdmsr_gp(0x1234), "RDMSR of an MSR the processor does not have (0x1234): #GP(0)");
    check_sdm(wrmsr_gp(0x1234, 1), "WRMSR of an MSR the processor does not have (0x1234): #GP(0)");
}

static void xcr0(void) {
    uint32_t r[4];
    cpuid(1, 0, r);
    if (!(r[2] & (1u << 26))) {
        skip("XSETBV/XGETBV", "no XSAVE in CPUID.1:ECX");
        return;
    }
    write_cr4(read_cr4() | CR4_OSXSAVE);
    cpuid(1, 0, r);
    check((r[2] & (1u << 27)) != 0, "CPUID.1:ECX.OSXSAVE follows CR4.OSXSAVE");
    xsetbv0(1);
    check(xgetbv0() == 1, "XSETBV(XCR0 = x87): XGETBV reads 1");
    xsetbv0(3);
    check(xgetbv0() == 3, "XSETBV(XCR0 = x87 | SSE): XGETBV reads 3");
    check(xsetbv_gp(2), "XSETBV without x87: #GP(0)");
    check(xgetbv0() == 3, "XCR0 unchanged by the refused XSETBV");
}

static void np_and_rf(void) {
    kt_set_gate(0x82, kt_stub(0x80), 0x08, 0, 0, 0); /* not present */
    TRY("int $0x82");
    /* QEMU 7.2's TCG gives vector * 16 + 2 here (fixed in later QEMU) */
    check_sdm(f_vector == 11 && f_error == ((0x82 << 3) | 2), "INT 0x82 through a not-present gate: #NP(0x412)");
    check_sdm((f_flags & RFLAGS_RF) != 0, "RF is set in the RFLAGS image of that #NP (a fault)");
    f_vector = (uint64_t)-1;
    kt_set_gate(0x82, kt_stub(0x80), 0x08, 0, 0, 1);
    wrmsr_gp(0x1234, 1);
    check_sdm(f_vector == 13 && (f_flags & RFLAGS_RF) != 0, "RF is set in the RFLAGS image of a #GP (a fault)");
}

static void cpuids(void) {
    uint32_t r[4];
    cpuid(0x40000000, 0, r);
    char sig[13];
    for (int i = 0; i < 12; i++)
        sig[i] = (char)(r[1 + i / 4] >> (8 * (i % 4)));
    sig[12] = 0;
    if (!quiet)
        printf("# hypervisor signature '%s', max leaf %x\n", sig, r[0]);
    if (kt_streq(sig, "ACRNACRNACRN")) {
        check(r[0] >= 0x40000010, "CPUID 0x40000000: ACRN's signature and max leaf 0x40000010");
        cpuid(0x40000010, 0, r);
        check(r[0] != 0, "CPUID 0x40000010: the TSC frequency in kHz");
        if (!quiet)
            printf("# TSC %u kHz\n", r[0]);
    } else {
        skip("CPUID 0x40000000/0x40000010", "not ACRN");
    }
    cpuid(7, 0, r);
    if (!(r[1] & (1u << 7))) {
        skip("SMEP", "not in CPUID.7:EBX");
        return;
    }
    /* A 2 MiB user page holding RET, executed at CPL 0 with CR4.SMEP: #PF, I/D and P set. */
    const int page = 5;
    uint64_t addr = (uint64_t)page << 21;
    *(volatile uint8_t *)addr = 0xC3;
    kt_pd[page] |= 4; /* U/S */
    write_cr3((uint64_t)kt_pml4);
    write_cr4(read_cr4() | CR4_SMEP);
    TRY("jmp *%0", "r"(addr)); /* faults on the fetch: nothing runs there */
    check(f_vector == 14 && (f_error & 0x11) == 0x11 && f_cr2 == addr,
          "SMEP: executing a user page at CPL 0 is #PF (I/D=1, P=1, CR2 = the page)");
    write_cr4(read_cr4() & ~CR4_SMEP);
    TRY("call *%0", "r"(addr));
    check(f_vector == (uint64_t)-1, "without SMEP the same call runs");
    kt_pd[page] &= ~4ull;
    write_cr3((uint64_t)kt_pml4);
}

int ktest_main(uint32_t magic, struct multiboot_info *mbi) {
    serial_init();
    char *argv[16];
    int argc = kt_args(mbi, argv, 16);
    for (int i = 1; i < argc; i++) {
        if (kt_streq(argv[i], "quiet"))
            quiet = 1;
        else if (kt_streq(argv[i], "strict"))
            strict = 1;
    }
    uint32_t r[4];
    cpuid(0x40000000, 0, r);
    acrn = r[1] == 0x4e524341 && r[2] == 0x4e524341 && r[3] == 0x4e524341; /* "ACRN" x 3 */
    printf("# ktest_cpu: MSRs, XCR0, #NP, RF, CPUID\n");
    check(magic == MULTIBOOT_BOOTLOADER_MAGIC, "entered through Multiboot");
    uint16_t cs;
    __asm__ volatile("mov %%cs, %0" : "=r"(cs));
    kt_idt_init(cs);
    for (int v = 0; v < 32; v++)
        kt_set_handler(v, fault_handler);
    msrs();
    xcr0();
    np_and_rf();
    cpuids();
    printf("1..%d\n", n);
    printf("# ktest_cpu: %d checks, %d failed\n", n, failures);
    return failures ? 1 : 0;
}
