/* Helpers shared by the ktest_* kernels: exit, Multiboot command line, a 256-entry IDT. */
#include "ktest.h"

void kt_exit(uint32_t code) {
    outl(0xF4, code);
    for (;;)
        __asm__ volatile("cli; hlt");
}

int kt_streq(const char *a, const char *b) {
    while (*a && *a == *b)
        a++, b++;
    return *a == *b;
}

long kt_atol(const char *s) {
    int neg = 0;
    unsigned long v = 0;
    if (*s == '-')
        neg = 1, s++;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        for (s += 2;; s++) {
            int d = (*s >= '0' && *s <= '9') ? *s - '0' : (*s >= 'a' && *s <= 'f') ? *s - 'a' + 10
                                                        : (*s >= 'A' && *s <= 'F') ? *s - 'A' + 10 : -1;
            if (d < 0)
                break;
            v = v * 16 + (unsigned)d;
        }
    } else {
        for (; *s >= '0' && *s <= '9'; s++)
            v = v * 10 + (unsigned)(*s - '0');
    }
    return neg ? -(long)v : (long)v;
}

static char argbuf[1024];

int kt_args(struct multiboot_info *mbi, char **argv, int max) {
    if (!mbi || !(mbi->flags & (1u << 2)) || !mbi->cmdline)
        return 0;
    const char *src = (const char *)(uintptr_t)mbi->cmdline;
    int argc = 0;
    unsigned n = 0;
    while (*src && argc < max) {
        while (*src == ' ' || *src == '\t')
            src++;
        if (!*src)
            break;
        argv[argc++] = &argbuf[n];
        while (*src && *src != ' ' && *src != '\t' && n < sizeof(argbuf) - 1)
            argbuf[n++] = *src++;
        if (n < sizeof(argbuf))
            argbuf[n++] = 0;
        if (n >= sizeof(argbuf) - 1)
            break;
    }
    return argc;
}

/* ---- IDT: 16-byte gates (SDM volume 3, section 6.14.1) ---- */
struct gate64 {
    uint16_t off0, sel;
    uint8_t ist, attr;
    uint16_t off1;
    uint32_t off2, rsvd;
} __attribute__((packed));
static struct gate64 idt[256] __attribute__((aligned(16)));
static handler_t handlers[256];
extern uint64_t isr_stub_table[64];

uint64_t kt_stub(int vector) { return vector == 0x80 ? (uint64_t)isr_int80 : isr_stub_table[vector]; }

void kt_set_gate(int vector, uint64_t addr, uint16_t cs, int dpl, int ist, int present) {
    struct gate64 *g = &idt[vector];
    g->off0 = (uint16_t)addr;
    g->sel = cs;
    g->ist = (uint8_t)(ist & 7);
    g->attr = (uint8_t)((present ? 0x80 : 0) | (dpl & 3) << 5 | 0xE); /* 64-bit interrupt gate */
    g->off1 = (uint16_t)(addr >> 16);
    g->off2 = (uint32_t)(addr >> 32);
    g->rsvd = 0;
}

void kt_idt_init(uint16_t cs) {
    for (int v = 0; v < 256; v++) {
        if (v < 64 || v == 0x80)
            kt_set_gate(v, kt_stub(v), cs, 0, 0, 1);
        else
            kt_set_gate(v, 0, cs, 0, 0, 0);
    }
    struct { uint16_t limit; uint64_t base; } __attribute__((packed)) idtr = {sizeof(idt) - 1, (uint64_t)idt};
    __asm__ volatile("lidt %0" ::"m"(idtr));
}

void kt_set_handler(int vector, handler_t h) { handlers[vector] = h; }

void ktest_trap(struct frame *f) {
    if (f->vector < 256 && handlers[f->vector]) {
        handlers[f->vector](f);
        return;
    }
    printf("# unexpected vector %u error %lx at %lx cs %lx rsp %lx cr2 %lx\n", (unsigned)f->vector,
           (unsigned long)f->error, (unsigned long)f->ip, (unsigned long)f->cs, (unsigned long)f->sp,
           (unsigned long)read_cr2());
    printf("Bail out! unexpected exception\n");
    kt_exit(0x7F);
}
