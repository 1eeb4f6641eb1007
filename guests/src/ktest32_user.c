/* ktest32_user: ring 3 in 32-bit protected mode, the 32-bit counterpart of ktest_user (SDM
 * volume 3: 5.8.7 SYSENTER and SYSEXIT, 6.12.1 the stack switch through SS0:ESP0 of the TSS,
 * 7.2.1 the 32-bit TSS, 4.3 32-bit paging with 4 MiB pages and 4.7 page-fault error codes).
 *
 * Built on the 32-bit Multiboot runtime (lib/start32.S, lib/rt.c). Ring 0 sets up a GDT with
 * ring-3 segments laid out for SYSENTER/SYSEXIT, a 32-bit TSS whose SS0:ESP0 is the ring-0
 * stack, a 256-entry IDT (a DPL-3 gate for int 0x80), 32-bit paging with 4 MiB pages, and
 * enters ring 3 with IRET. Ring 3 makes system calls through int 0x80 and SYSENTER, takes
 * page faults that ring 0 fixes, checks that privileged instructions give #GP and waits for
 * a local APIC timer interrupt; every entry to ring 0 must arrive on SS0:ESP0. One TAP line
 * per check; exit code (a 32-bit OUT to port 0xF4) 0 only if all pass, else 1. As in
 * ktest_user, RF in a fault frame is a TAP TODO unless `strict` is on the command line (QEMU
 * 7.2's TCG does not set it). */
#include "rt.h"

#define KCODE 0x08 /* SYSENTER: CS = IA32_SYSENTER_CS, SS = CS + 8 */
#define KDATA 0x10
#define UCODE 0x18 /* SYSEXIT: CS = IA32_SYSENTER_CS + 16, SS = + 24, RPL 3 */
#define UDATA 0x20
#define TSS_SEL 0x28
#define USER_CS (UCODE | 3)
#define USER_SS (UDATA | 3)

#define MSR_SYSENTER_CS 0x174
#define MSR_SYSENTER_ESP 0x175
#define MSR_SYSENTER_EIP 0x176
#define EFLAGS_IF 0x200
#define EFLAGS_RF 0x10000
#define LAPIC 0xFEE00000u
#define TIMER_VECTOR 0x30
#define SPURIOUS_VECTOR 0x3F

/* 4 MiB pages of the page directory used by the #PF checks */
#define PF_SUPER 2    /* 0x800000: supervisor */
#define PF_ABSENT 3   /* 0xC00000: not present */
#define PF_READONLY 4 /* 0x1000000: user, read-only */
#define PAGE_ADDR(i) ((uint32_t)(i) << 22)
#define PDE_P 1u
#define PDE_RW 2u
#define PDE_US 4u

static inline void outl(uint16_t port, uint32_t v) { __asm__ volatile("outl %0, %1" ::"a"(v), "Nd"(port)); }
static void kexit(uint32_t code) __attribute__((noreturn));
static void kexit(uint32_t code) {
    outl(0xF4, code);
    for (;;)
        __asm__ volatile("cli; hlt");
}

/* ---- checks, recorded from either ring, printed by ring 0 ---- */
#define MAXCHECKS 48
static struct { int ok, todo; const char *what, *why; } results[MAXCHECKS];
static volatile int nresults;
static int nprinted, failures, quiet, strict;

static void check(int ok, const char *what) {
    int n = nresults;
    if (n < MAXCHECKS) {
        results[n].ok = ok;
        results[n].what = what;
        nresults = n + 1;
    }
}
static void check_todo(int ok, int is_strict, const char *what, const char *why) {
    int n = nresults;
    check(ok, what);
    if (!ok && !is_strict && n < MAXCHECKS) {
        results[n].todo = 1;
        results[n].why = why;
    }
}
static void flush(void) {
    for (; nprinted < nresults; nprinted++) {
        int i = nprinted;
        if (!results[i].ok && !results[i].todo)
            failures++;
        printf("%s %d - %s", results[i].ok ? "ok" : "not ok", i + 1, results[i].what);
        if (results[i].todo)
            printf(" # TODO %s", results[i].why);
        printf("\n");
    }
}
#define diag(...) do { if (!quiet) { flush(); printf("# " __VA_ARGS__); } } while (0)

/* ---- descriptor tables, stacks, paging ---- */
struct tss32 {
    uint16_t link, r0;
    uint32_t esp0;
    uint16_t ss0, r1;
    uint32_t esp1;
    uint16_t ss1, r2;
    uint32_t esp2;
    uint16_t ss2, r3;
    uint32_t cr3, eip, eflags, eax, ecx, edx, ebx, esp, ebp, esi, edi;
    uint16_t es, r4, cs, r5, ss, r6, ds, r7, fs, r8, gs, r9, ldt, r10, trap, iomap;
} __attribute__((packed));

#define STACK 16384
static uint8_t esp0_stack[STACK] __attribute__((aligned(16)));
static uint8_t user_stack[STACK] __attribute__((aligned(16)));
static struct tss32 tss __attribute__((aligned(16)));
static uint64_t gdt[6] __attribute__((aligned(8)));
static uint32_t pd[1024] __attribute__((aligned(4096)));

struct gate32 { uint16_t off0, sel; uint8_t zero, attr; uint16_t off1; } __attribute__((packed));
static struct gate32 idt[256] __attribute__((aligned(8)));
extern uint32_t isr_stub_table[64];
void kt32_isr80(void);
void kt32_sysenter_entry(void);

static int on_stack(uint32_t sp, const uint8_t *stack) {
    return sp >= (uint32_t)stack && sp < (uint32_t)stack + STACK;
}
static uint32_t cur_esp(void) { uint32_t sp; __asm__ volatile("mov %%esp, %0" : "=r"(sp)); return sp; }
static uint16_t cur_cs(void) { uint16_t cs; __asm__ volatile("mov %%cs, %0" : "=r"(cs)); return cs; }
static uint16_t cur_ss(void) { uint16_t ss; __asm__ volatile("mov %%ss, %0" : "=r"(ss)); return ss; }
static uint32_t cur_eflags(void) { uint32_t f; __asm__ volatile("pushfl; pop %0" : "=r"(f)); return f; }
static volatile uint32_t *lapic(unsigned reg) { return (volatile uint32_t *)(LAPIC + reg); }
static void invlpg(uint32_t a) { __asm__ volatile("invlpg (%0)" ::"r"(a) : "memory"); }

static void set_gate(int v, uint32_t addr, int dpl) {
    idt[v].off0 = (uint16_t)addr;
    idt[v].sel = KCODE;
    idt[v].zero = 0;
    idt[v].attr = (uint8_t)(0x8E | (dpl & 3) << 5); /* present, 32-bit interrupt gate */
    idt[v].off1 = (uint16_t)(addr >> 16);
}

static void setup(void) {
    gdt[0] = 0;
    gdt[KCODE / 8] = 0x00CF9A000000FFFFull;
    gdt[KDATA / 8] = 0x00CF92000000FFFFull;
    gdt[UCODE / 8] = 0x00CFFA000000FFFFull;
    gdt[UDATA / 8] = 0x00CFF2000000FFFFull;
    tss.esp0 = (uint32_t)esp0_stack + STACK;
    tss.ss0 = KDATA;
    tss.iomap = sizeof(tss); /* no I/O permission bitmap */
    uint32_t base = (uint32_t)&tss, limit = sizeof(tss) - 1;
    gdt[TSS_SEL / 8] = (limit & 0xFFFF) | (uint64_t)(base & 0xFFFFFF) << 16 | 0x89ull << 40 /* 32-bit TSS */
                       | (uint64_t)((limit >> 16) & 0xF) << 48 | (uint64_t)(base >> 24) << 56;
    struct { uint16_t limit; uint32_t base; } __attribute__((packed)) gdtr = {sizeof(gdt) - 1, (uint32_t)gdt};
    __asm__ volatile("lgdt %0\n"
                     "ljmp %1, $1f\n"
                     "1: mov %2, %%ax\n"
                     "mov %%ax, %%ss\n"
                     "mov %%ax, %%ds\n"
                     "mov %%ax, %%es\n"
                     "mov %%ax, %%fs\n"
                     "mov %%ax, %%gs\n"
                     "ltr %w3\n"
                     :
                     : "m"(gdtr), "i"(KCODE), "i"(KDATA), "r"((uint16_t)TSS_SEL)
                     : "eax", "memory");
    for (int v = 0; v < 256; v++) {
        if (v < 64)
            set_gate(v, isr_stub_table[v], 0);
        else
            idt[v] = (struct gate32){0, 0, 0, 0, 0};
    }
    set_gate(0x80, (uint32_t)kt32_isr80, 3);
    set_gate(0x81, (uint32_t)kt32_isr80, 0);
    struct { uint16_t limit; uint32_t base; } __attribute__((packed)) idtr = {sizeof(idt) - 1, (uint32_t)idt};
    __asm__ volatile("lidt %0" ::"m"(idtr));

    /* 32-bit paging, 4 MiB pages (CR4.PSE): identity map of 4 GiB, uncached from 3 GiB up */
    for (uint32_t i = 0; i < 1024; i++)
        pd[i] = (i << 22) | 0x83 | (i >= 768 ? 0x18 : 0);
    pd[0] |= PDE_US; /* this image, its data and stacks: open to ring 3 */
    pd[PF_ABSENT] &= ~PDE_P;
    pd[PF_READONLY] = (pd[PF_READONLY] | PDE_US) & ~PDE_RW;
    write_cr4(read_cr4() | 0x10);
    write_cr3((uint32_t)pd);
    write_cr0(read_cr0() | 0x80000000u);
}

/* ---- entering and leaving ring 3, int 0x80 and SYSENTER entries ---- */
uint32_t kt32_kernel_esp;
uint32_t kt32_enter_user(void (*entry)(void), uint32_t user_sp);
void kt32_leave_user(uint32_t value) __attribute__((noreturn));
uint32_t kt32_sysenter(uint32_t nr, uint32_t a1, uint32_t user_eip, uint32_t user_esp);
void kt32_int80(struct frame *f);

__asm__(".text\n"
        ".global kt32_enter_user\n"
        "kt32_enter_user:\n"
        "  push %ebx\n  push %esi\n  push %edi\n  push %ebp\n"
        "  mov %esp, kt32_kernel_esp\n"
        "  mov 20(%esp), %eax\n" /* entry */
        "  mov 24(%esp), %ecx\n" /* user stack */
        "  mov $0x23, %dx\n"     /* DS/ES: the DPL-3 data segment, kept by IRET to ring 3 */
        "  mov %dx, %ds\n  mov %dx, %es\n"
        "  pushl $0x23\n"        /* SS */
        "  push %ecx\n"          /* ESP */
        "  pushl $0x202\n"       /* EFLAGS: IF, IOPL 0 */
        "  pushl $0x1b\n"        /* CS */
        "  push %eax\n"          /* EIP */
        "  iret\n"
        ".global kt32_leave_user\n"
        "kt32_leave_user:\n"
        "  mov 4(%esp), %eax\n"
        "  mov kt32_kernel_esp, %esp\n"
        "  mov $0x10, %dx\n  mov %dx, %ds\n  mov %dx, %es\n"
        "  pop %ebp\n  pop %edi\n  pop %esi\n  pop %ebx\n"
        "  ret\n"
        /* int 0x80 (and the DPL-0 gate 0x81): the runtime's frame layout, then kt32_int80 */
        ".global kt32_isr80\n"
        "kt32_isr80:\n"
        "  push $0\n  push $0x80\n"
        "  pusha\n"
        "  push %esp\n"
        "  cld\n"
        "  call kt32_int80\n"
        "  add $4, %esp\n"
        "  popa\n"
        "  add $8, %esp\n"
        "  iret\n"
        /* SYSENTER: ESP = IA32_SYSENTER_ESP, CS/SS from IA32_SYSENTER_CS, IF = 0. The caller
         * passes its return EIP in EDX and ESP in ECX (for SYSEXIT), the call in EAX, EBX. */
        ".global kt32_sysenter_entry\n"
        "kt32_sysenter_entry:\n"
        "  push %ecx\n  push %edx\n  push %ebx\n  push %esi\n  push %edi\n  push %ebp\n"
        "  push %ecx\n  push %edx\n  push %ebx\n  push %eax\n"
        "  cld\n"
        "  call kt32_sysenter\n"
        "  add $16, %esp\n"
        "  pop %ebp\n  pop %edi\n  pop %esi\n  pop %ebx\n  pop %edx\n  pop %ecx\n"
        "  sti\n"
        "  sysexit\n");

#define SYS_ECHO 1
#define SYS_ARM_TIMER 2
#define SYS_EXIT 60
static volatile uint32_t se_cs, se_ss, se_eflags, se_esp, se_user_eip, i80_cs, i80_ss, i80_esp, i80_user_esp,
    i80_user_ss, i80_kss;

uint32_t kt32_sysenter(uint32_t nr, uint32_t a1, uint32_t user_eip, uint32_t user_esp) {
    (void)user_esp;
    se_cs = cur_cs();
    se_ss = cur_ss();
    se_eflags = cur_eflags();
    se_esp = cur_esp();
    se_user_eip = user_eip;
    flush();
    if (nr == SYS_ECHO)
        return a1 + 1;
    if (nr == SYS_ARM_TIMER) {
        *lapic(0x3E0) = 0xB;
        *lapic(0x320) = TIMER_VECTOR;
        *lapic(0x380) = a1;
        return 0;
    }
    if (nr == SYS_EXIT)
        kt32_leave_user(a1);
    return (uint32_t)-38;
}

/* What a ring change pushes beyond struct frame: the outer ESP and SS. */
static uint32_t outer(struct frame *f, int i) { return ((uint32_t *)(&f->flags + 1))[i]; }

void kt32_int80(struct frame *f) {
    i80_cs = f->cs;
    i80_user_esp = outer(f, 0);
    i80_user_ss = outer(f, 1);
    i80_esp = cur_esp();
    i80_kss = cur_ss();
    flush();
    if (f->vector == 0x80 && f->eax == SYS_ECHO)
        f->eax = f->ebx + 1;
    else if (f->vector == 0x80 && f->eax == SYS_EXIT)
        kt32_leave_user(f->ebx);
    else
        f->eax = (uint32_t)-38;
}

/* ---- faults ---- */
volatile uint32_t kt32_fixup_ip;
static volatile uint32_t f_vector, f_error, f_cs, f_flags, f_cr2, f_esp, f_ss;
static volatile int pf_count;

static void record(struct frame *f) {
    f_vector = f->vector;
    f_error = f->error;
    f_cs = f->cs;
    f_flags = f->flags;
    f_esp = cur_esp();
    f_ss = cur_ss();
    f_cr2 = f->vector == 14 ? read_cr2() : 0;
}

static void gp_handler(struct frame *f) {
    record(f);
    diag("vector %u error %x at %x cs %x eflags %x\n", (unsigned)f->vector, (unsigned)f->error, (unsigned)f->ip,
         (unsigned)f->cs, (unsigned)f->flags);
    if (!kt32_fixup_ip) {
        printf("Bail out! unexpected #GP\n");
        kexit(0x7F);
    }
    f->ip = kt32_fixup_ip;
    kt32_fixup_ip = 0;
}

static void pf_handler(struct frame *f) {
    record(f);
    pf_count++;
    diag("#PF error %x at %x cs %x cr2 %x\n", (unsigned)f->error, (unsigned)f->ip, (unsigned)f->cs, (unsigned)f_cr2);
    uint32_t i = f_cr2 >> 22;
    if (i == PF_SUPER)
        pd[i] |= PDE_US;
    else if (i == PF_ABSENT)
        pd[i] |= PDE_P | PDE_US;
    else if (i == PF_READONLY)
        pd[i] |= PDE_RW;
    else {
        printf("Bail out! unexpected #PF\n");
        kexit(0x7F);
    }
    invlpg(f_cr2);
}

#define UTRY(insn, ...)                                                                        \
    do {                                                                                       \
        f_vector = (uint32_t)-1;                                                               \
        __asm__ volatile("movl $1f, kt32_fixup_ip\n" insn "\n"                                 \
                         "movl $0, kt32_fixup_ip\n"                                            \
                         "1:\n" ::__VA_ARGS__                                                  \
                         : "memory");                                                          \
    } while (0)

static volatile int timer_fired;
static volatile uint32_t t_cs, t_flags, t_esp, t_user_esp, t_user_ss, t_ss;
static void timer_handler(struct frame *f) {
    t_cs = f->cs;
    t_flags = f->flags;
    t_user_esp = outer(f, 0);
    t_user_ss = outer(f, 1);
    t_esp = cur_esp();
    t_ss = cur_ss();
    timer_fired++;
    *lapic(0xB0) = 0;
}
static void spurious_handler(struct frame *f) { (void)f; }

/* ---- ring 3 ---- */
static inline uint32_t u_int80(uint32_t nr, uint32_t a1) {
    uint32_t r;
    __asm__ volatile("int $0x80" : "=a"(r) : "a"(nr), "b"(a1) : "memory");
    return r;
}
static inline uint32_t u_sysenter(uint32_t nr, uint32_t a1) {
    uint32_t r;
    __asm__ volatile("mov %%esp, %%ecx\n"
                     "mov $1f, %%edx\n"
                     "sysenter\n"
                     "1:\n"
                     : "=a"(r)
                     : "a"(nr), "b"(a1)
                     : "ecx", "edx", "memory");
    return r;
}

static volatile uint32_t u_value;

static void user_main(void) {
    check(cur_cs() == USER_CS && cur_ss() == USER_SS, "IRET entered ring 3 (CS 0x1b, SS 0x23)");
    check(on_stack(cur_esp(), user_stack), "ring 3 runs on its own stack");

    uint32_t r = u_int80(SYS_ECHO, 41);
    check(r == 42, "int 0x80: the DPL-3 gate ran the call and returned EAX");
    check(i80_kss == KDATA && on_stack(i80_esp, esp0_stack), "int 0x80: the handler ran on SS0:ESP0 of the TSS");
    check(i80_cs == USER_CS && i80_user_ss == USER_SS && on_stack(i80_user_esp, user_stack),
          "int 0x80: the frame holds the ring 3 CS, and the outer SS:ESP");

    UTRY("int $0x81");
    check(f_vector == 13 && f_error == ((0x81 << 3) | 2), "int 0x81 (DPL-0 gate) at CPL 3 gives #GP(0x40a)");

    r = u_sysenter(SYS_ECHO, 99);
    check(r == 100, "SYSENTER: the call ran and SYSEXIT returned EAX");
    check(se_cs == KCODE && se_ss == KDATA && !(se_eflags & EFLAGS_IF) && on_stack(se_esp, esp0_stack),
          "SYSENTER: CS/SS from IA32_SYSENTER_CS, ESP from IA32_SYSENTER_ESP, IF clear");
    check(cur_cs() == USER_CS && cur_ss() == USER_SS && (cur_eflags() & EFLAGS_IF),
          "SYSEXIT: back in ring 3 (CS 0x1b, SS 0x23) with IF set");

    volatile uint32_t *super = (volatile uint32_t *)PAGE_ADDR(PF_SUPER);
    volatile uint32_t *absent = (volatile uint32_t *)(PAGE_ADDR(PF_ABSENT) + 8);
    volatile uint32_t *ro = (volatile uint32_t *)(PAGE_ADDR(PF_READONLY) + 16);
    f_vector = (uint32_t)-1;
    u_value = *super;
    check(f_vector == 14 && f_error == 0x5 && f_cr2 == (uint32_t)super,
          "#PF: user read of a supervisor page, error code 0x5, CR2");
    check(u_value == 0x5a5a1234, "#PF: after the fix the read completed in ring 3");
    check(f_ss == KDATA && on_stack(f_esp, esp0_stack) && f_cs == USER_CS, "#PF: from CS 0x1b onto SS0:ESP0");
    f_vector = (uint32_t)-1;
    *absent = 0xabcdef;
    check(f_vector == 14 && f_error == 0x6 && f_cr2 == (uint32_t)absent && *absent == 0xabcdef,
          "#PF: user write to a not-present page, error code 0x6, CR2, completed");
    f_vector = (uint32_t)-1;
    *ro = 7;
    check(f_vector == 14 && f_error == 0x7 && f_cr2 == (uint32_t)ro && *ro == 7,
          "#PF: user write to a read-only page, error code 0x7, CR2, completed");

    UTRY("hlt");
    check(f_vector == 13 && f_error == 0 && f_cs == USER_CS, "HLT at CPL 3 gives #GP(0)");
    check_todo((f_flags & EFLAGS_RF) != 0, strict, "RF is set in the EFLAGS image of a fault (#GP)",
               "QEMU 7.2 TCG does not set RF in fault frames");
    UTRY("cli");
    check(f_vector == 13 && f_error == 0, "CLI at CPL 3 with IOPL 0 gives #GP(0)");
    UTRY("mov %%eax, %%cr3", "a"(0u));
    check(f_vector == 13 && f_error == 0, "MOV to CR3 at CPL 3 gives #GP(0)");
    UTRY("rdmsr", "c"(MSR_SYSENTER_CS));
    check(f_vector == 13 && f_error == 0, "RDMSR at CPL 3 gives #GP(0)");
    UTRY("outb %%al, $0xf4", "a"(0xEE));
    check(f_vector == 13 && f_error == 0, "OUT to port 0xF4 at CPL 3 (IOPL 0, no I/O bitmap) gives #GP(0)");

    u_sysenter(SYS_ARM_TIMER, 1000000);
    for (volatile uint32_t spin = 0; !timer_fired && spin < 200000000u; spin++)
        ;
    check(timer_fired == 1, "LAPIC timer interrupt taken in ring 3");
    check(t_cs == USER_CS && (t_flags & EFLAGS_IF) && t_user_ss == USER_SS && on_stack(t_user_esp, user_stack),
          "timer: the frame holds the ring 3 CS, EFLAGS with IF, and the outer SS:ESP");
    check(t_ss == KDATA && on_stack(t_esp, esp0_stack), "timer: the handler ran on SS0:ESP0 of the TSS");

    u_int80(SYS_EXIT, 0x600d);
    for (;;)
        ;
}

int main(void) {
    serial_init();
    const char *cmd = (rt_mbi && (rt_mbi->flags & 4) && rt_mbi->cmdline) ? (const char *)rt_mbi->cmdline : "";
    for (const char *p = cmd; *p; p++) {
        if ((p == cmd || p[-1] == ' ') && p[0] == 's' && p[1] == 't' && p[2] == 'r' && p[3] == 'i' && p[4] == 'c' &&
            p[5] == 't' && (p[6] == 0 || p[6] == ' '))
            strict = 1;
        if ((p == cmd || p[-1] == ' ') && p[0] == 'q' && p[1] == 'u' && p[2] == 'i' && p[3] == 'e' && p[4] == 't' &&
            (p[5] == 0 || p[5] == ' '))
            quiet = 1;
    }
    printf("# ktest32_user: ring 3 in 32-bit protected mode (TSS SS0:ESP0, int 0x80, SYSENTER, #PF, #GP, LAPIC timer)\n");
    outb(0x21, 0xFF); /* 8259s masked */
    outb(0xA1, 0xFF);
    *(volatile uint32_t *)PAGE_ADDR(PF_SUPER) = 0x5a5a1234; /* before paging: identity */
    setup();
    check(cur_cs() == KCODE && (read_cr0() & 0x80000001u) == 0x80000001u, "GDT, TSS, IDT and 32-bit paging (PSE) set up");
    set_handler(13, gp_handler);
    set_handler(14, pf_handler);
    set_handler(TIMER_VECTOR, timer_handler);
    set_handler(SPURIOUS_VECTOR, spurious_handler);
    *lapic(0xF0) = 0x100 | SPURIOUS_VECTOR;
    *lapic(0x350) = 0x10000;
    *lapic(0x360) = 0x10000;
    *lapic(0x370) = 0x10000;
    wrmsr(MSR_SYSENTER_CS, KCODE);
    wrmsr(MSR_SYSENTER_ESP, (uint32_t)esp0_stack + STACK);
    wrmsr(MSR_SYSENTER_EIP, (uint32_t)kt32_sysenter_entry);

    flush();
    uint32_t r = kt32_enter_user(user_main, (uint32_t)user_stack + STACK - 4);
    flush();
    check(r == 0x600d && cur_cs() == KCODE, "exit system call returned to ring 0");
    check(pf_count == 3, "exactly three page faults");
    flush();
    printf("1..%d\n", nresults);
    printf("# ktest32_user: %d checks, %d failed\n", nresults, failures);
    kexit(failures ? 1 : 0);
}
