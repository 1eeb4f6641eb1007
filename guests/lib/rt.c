/* acrn-sim guest runtime. */
#include "rt.h"

#define COM1 0x3F8
struct multiboot_info *rt_mbi;
volatile int rt_faults;

void serial_init(void) {
    outb(COM1 + 1, 0x00); /* IER: no interrupts */
    outb(COM1 + 3, 0x80); /* LCR: DLAB */
    outb(COM1 + 0, 0x01); /* divisor 1: 115200 baud */
    outb(COM1 + 1, 0x00);
    outb(COM1 + 3, 0x03); /* 8N1 */
    outb(COM1 + 2, 0xC7); /* FIFO on, cleared */
    outb(COM1 + 4, 0x03); /* DTR | RTS */
}

void putchar_serial(char c) {
    if (c == '\n')
        putchar_serial('\r');
    while (!(inb(COM1 + 5) & 0x20)) /* LSR.THRE */
        ;
    outb(COM1, (uint8_t)c);
}

void puts_serial(const char *s) {
    while (*s)
        putchar_serial(*s++);
}

uint64_t udivmod64(uint64_t n, uint64_t d, uint64_t *rem) {
    uint64_t q = 0, r = 0;
    for (int i = 63; i >= 0; i--) {
        r = (r << 1) | ((n >> i) & 1);
        if (r >= d) {
            r -= d;
            q |= 1ull << i;
        }
    }
    if (rem)
        *rem = r;
    return q;
}

static void put_uint(unsigned long long v, unsigned base, int width, char pad) {
    char buf[24];
    int n = 0;
    do {
        uint64_t d;
        v = udivmod64(v, base, &d);
        buf[n++] = (char)(d < 10 ? '0' + d : 'a' + d - 10);
    } while (v);
    while (n < width--)
        putchar_serial(pad);
    while (n)
        putchar_serial(buf[--n]);
}

int vprintf(const char *fmt, va_list ap) {
    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            putchar_serial(*fmt);
            continue;
        }
        fmt++;
        char pad = ' ';
        int width = 0, longs = 0;
        if (*fmt == '0')
            pad = '0', fmt++;
        while (*fmt >= '0' && *fmt <= '9')
            width = width * 10 + (*fmt++ - '0');
        while (*fmt == 'l')
            longs++, fmt++;
        switch (*fmt) {
        case 'd': {
            long long v = longs >= 2 ? va_arg(ap, long long) : longs ? va_arg(ap, long) : va_arg(ap, int);
            if (v < 0) {
                putchar_serial('-');
                v = -v;
            }
            put_uint((unsigned long long)v, 10, width, pad);
            break;
        }
        case 'u':
        case 'x': {
            unsigned long long v = longs >= 2 ? va_arg(ap, unsigned long long)
                                   : longs    ? va_arg(ap, unsigned long)
                                              : va_arg(ap, unsigned);
            put_uint(v, *fmt == 'u' ? 10 : 16, width, pad);
            break;
        }
        case 'p':
            puts_serial("0x");
            put_uint((unsigned long long)(ureg)va_arg(ap, void *), 16, width, pad);
            break;
        case 's':
            puts_serial(va_arg(ap, const char *));
            break;
        case 'c':
            putchar_serial((char)va_arg(ap, int));
            break;
        default:
            putchar_serial(*fmt);
        }
    }
    return 0;
}

int printf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    return 0;
}

void exit(int code) {
    outb(0xF4, (uint8_t)code);
    for (;;)
        __asm__ volatile("cli; hlt");
}

/* ---- IDT ---- */
#define NVEC 64
extern ureg isr_stub_table[NVEC];
static handler_t handlers[NVEC];

#if defined(__x86_64__)
struct gate { uint16_t off0, sel; uint8_t ist, attr; uint16_t off1; uint32_t off2, rsvd; } __attribute__((packed));
#else
struct gate { uint16_t off0, sel; uint8_t zero, attr; uint16_t off1; } __attribute__((packed));
#endif
static struct gate idt[NVEC] __attribute__((aligned(16)));

void idt_init(void) {
    uint16_t cs;
    __asm__ volatile("mov %%cs, %0" : "=r"(cs));
    for (int i = 0; i < NVEC; i++) {
        ureg a = isr_stub_table[i];
        idt[i].off0 = (uint16_t)a;
        idt[i].sel = cs;
        idt[i].attr = 0x8E; /* present, DPL 0, interrupt gate */
        idt[i].off1 = (uint16_t)(a >> 16);
#if defined(__x86_64__)
        idt[i].ist = 0;
        idt[i].off2 = (uint32_t)(a >> 32);
        idt[i].rsvd = 0;
#else
        idt[i].zero = 0;
#endif
    }
    idt_load();
}

void idt_load(void) {
    struct { uint16_t limit; ureg base; } __attribute__((packed)) idtr = {sizeof(idt) - 1, (ureg)idt};
    __asm__ volatile("lidt %0" ::"m"(idtr));
}

void set_handler(int vector, handler_t h) { handlers[vector] = h; }

/* Called by the stubs. */
void rt_trap(struct frame *f) {
    if (f->vector < NVEC && handlers[f->vector]) {
        handlers[f->vector](f);
        return;
    }
    rt_faults++;
    printf("unhandled exception %u error %x at %p\n", (unsigned)f->vector, (unsigned)f->error, (void *)(ureg)f->ip);
    exit(0x7F);
}
