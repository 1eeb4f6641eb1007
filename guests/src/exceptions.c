/* exceptions: the guest's own IDT handles #UD (from VMCALL in a VM that may not make
 * hypercalls), #DE, #BP, INT n, and #PF with its error code and CR2. */
#include "rt.h"

static volatile unsigned seen[64];
static volatile unsigned last_error;
static volatile ureg last_cr2;
static volatile ureg skip;

static void on_fault(struct frame *f) {
    seen[f->vector]++;
    last_error = (unsigned)f->error;
    if (f->vector == 14)
        last_cr2 = read_cr2();
    f->ip += skip; /* faults point at the instruction: step over it */
}

static void on_trap(struct frame *f) { seen[f->vector]++; }

static uint32_t page_dir[1024] __attribute__((aligned(4096)));

int main(void) {
    int failures = 0;
    serial_init();
    idt_init();
    set_handler(0, on_fault);
    set_handler(6, on_fault);
    set_handler(14, on_fault);
    set_handler(3, on_trap);
    set_handler(0x30, on_trap);

    skip = 3;
    __asm__ volatile("vmcall" ::: "memory");
    printf("VMCALL -> #UD taken %u time(s)\n", seen[6]);
    CHECK(seen[6] == 1, "#UD from VMCALL");

    skip = 2;
    __asm__ volatile("xor %%edx, %%edx; divl %%ecx" ::"a"(7), "c"(0) : "edx", "memory");
    printf("DIV by zero -> #DE taken %u time(s)\n", seen[0]);
    CHECK(seen[0] == 1, "#DE");

    __asm__ volatile("int3" ::: "memory");
    __asm__ volatile("int $0x30" ::: "memory");
    printf("INT3 -> #BP %u, INT 0x30 -> %u\n", seen[3], seen[0x30]);
    CHECK(seen[3] == 1 && seen[0x30] == 1, "software interrupts");

    /* Paging with one 4 MiB page: everything above 4 MiB is not present. */
    page_dir[0] = 0x83; /* present, writable, 4 MiB */
    write_cr4(read_cr4() | 0x10); /* PSE */
    write_cr3((ureg)page_dir);
    write_cr0(read_cr0() | 0x80000000u);
    skip = 2;
    __asm__ volatile(".byte 0x8b, 0x18" ::"a"(0x00800000) : "ebx", "memory"); /* mov (%eax),%ebx */
    printf("read of 0x800000 -> #PF error %x cr2 %p\n", last_error, (void *)last_cr2);
    CHECK(seen[14] == 1 && last_error == 0 && last_cr2 == 0x800000, "#PF on read");
    __asm__ volatile(".byte 0x89, 0x18" ::"a"(0x00C00010), "b"(1) : "memory"); /* mov %ebx,(%eax) */
    printf("write to 0xc00010 -> #PF error %x cr2 %p\n", last_error, (void *)last_cr2);
    CHECK(seen[14] == 2 && last_error == 2 && last_cr2 == 0xC00010, "#PF on write");
    write_cr0(read_cr0() & ~0x80000000u);

    printf(failures ? "exceptions: FAILED\n" : "exceptions: all checks passed\n");
    return failures;
}
