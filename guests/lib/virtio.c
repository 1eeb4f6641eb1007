/* A small virtio 1.0 driver library: see virtio.h. Section numbers are those of the OASIS
 * "Virtual I/O Device (VIRTIO) Version 1.0" specification. */
#include "virtio.h"
#include "rt.h"

struct vio_opts vio_opts;
static const char *prog = "virtio";

/* ---- register access ----
 * Memory-mapped registers are reached with plain MOV/MOVZX only (the forms every MMIO
 * instruction decoder handles, ACRN's hypervisor/arch/x86/guest/instr_emul.c included). */
static inline uint8_t mmio_r8(uint32_t a) { uint32_t v; __asm__ volatile("movzbl (%1), %0" : "=r"(v) : "r"(a) : "memory"); return (uint8_t)v; }
static inline uint16_t mmio_r16(uint32_t a) { uint32_t v; __asm__ volatile("movzwl (%1), %0" : "=r"(v) : "r"(a) : "memory"); return (uint16_t)v; }
static inline uint32_t mmio_r32(uint32_t a) { uint32_t v; __asm__ volatile("movl (%1), %0" : "=r"(v) : "r"(a) : "memory"); return v; }
static inline void mmio_w8(uint32_t a, uint8_t v) { __asm__ volatile("movb %0, (%1)" ::"q"(v), "r"(a) : "memory"); }
static inline void mmio_w16(uint32_t a, uint16_t v) { __asm__ volatile("movw %0, (%1)" ::"r"(v), "r"(a) : "memory"); }
static inline void mmio_w32(uint32_t a, uint32_t v) { __asm__ volatile("movl %0, (%1)" ::"r"(v), "r"(a) : "memory"); }
static inline uint16_t inw(uint16_t p) { uint16_t v; __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(p)); return v; }
static inline uint32_t inl(uint16_t p) { uint32_t v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(p)); return v; }
static inline void outl(uint16_t p, uint32_t v) { __asm__ volatile("outl %0, %1" ::"a"(v), "Nd"(p)); }

static uint8_t r8(struct vreg r, uint32_t o) { return r.io ? inb((uint16_t)(r.base + o)) : mmio_r8(r.base + o); }
static uint16_t r16(struct vreg r, uint32_t o) { return r.io ? inw((uint16_t)(r.base + o)) : mmio_r16(r.base + o); }
static uint32_t r32(struct vreg r, uint32_t o) { return r.io ? inl((uint16_t)(r.base + o)) : mmio_r32(r.base + o); }
static void w8(struct vreg r, uint32_t o, uint8_t v) { if (r.io) outb((uint16_t)(r.base + o), v); else mmio_w8(r.base + o, v); }
static void w16(struct vreg r, uint32_t o, uint16_t v) { if (r.io) outw((uint16_t)(r.base + o), v); else mmio_w16(r.base + o, v); }
static void w32(struct vreg r, uint32_t o, uint32_t v) { if (r.io) outl((uint16_t)(r.base + o), v); else mmio_w32(r.base + o, v); }

/* Orders the avail index store before the load of flags/avail_event in vq_kick, and the
 * used_event store before the next load of used->idx (x86 only reorders a store after a
 * later load; everything else needs a compiler barrier only). */
static inline void mb(void) { __asm__ volatile("lock; addl $0, (%%esp)" ::: "memory", "cc"); }
static inline void barrier(void) { __asm__ volatile("" ::: "memory"); }

/* Legacy register block in I/O BAR0 (§4.1.4.8; linux include/uapi/linux/virtio_pci.h) */
#define L_HOST_FEATURES 0x00
#define L_GUEST_FEATURES 0x04
#define L_QUEUE_PFN 0x08 /* physical address >> 12 */
#define L_QUEUE_NUM 0x0C
#define L_QUEUE_SEL 0x0E
#define L_QUEUE_NOTIFY 0x10
#define L_STATUS 0x12
#define L_ISR 0x13
#define L_MSIX_CONFIG 0x14 /* only while MSI-X is enabled */
#define L_MSIX_QUEUE 0x16
#define L_CONFIG(msix) ((msix) ? 24 : 20)

/* struct virtio_pci_common_cfg (§4.1.4.3) */
#define C_DFSELECT 0x00
#define C_DF 0x04
#define C_GFSELECT 0x08
#define C_GF 0x0C
#define C_MSIX_CONFIG 0x10
#define C_NUM_QUEUES 0x12
#define C_STATUS 0x14
#define C_CFG_GENERATION 0x15
#define C_Q_SELECT 0x16
#define C_Q_SIZE 0x18
#define C_Q_MSIX_VECTOR 0x1A
#define C_Q_ENABLE 0x1C
#define C_Q_NOTIFY_OFF 0x1E
#define C_Q_DESC 0x20
#define C_Q_AVAIL 0x28 /* "driver area" in later versions */
#define C_Q_USED 0x30  /* "device area" */

/* struct virtio_pci_cap (§4.1.4): cfg_type values */
#define VIRTIO_PCI_CAP_COMMON_CFG 1
#define VIRTIO_PCI_CAP_NOTIFY_CFG 2
#define VIRTIO_PCI_CAP_ISR_CFG 3
#define VIRTIO_PCI_CAP_DEVICE_CFG 4
#define VIRTIO_PCI_CAP_PCI_CFG 5

/* ---- the platform: local APIC, 8259 PIC, vectors ----
 * The runtime's IDT has vectors 0..63: 0x20-0x2F are the PIC's IRQ 0-15, 0x30-0x3D MSI-X
 * messages, 0x3E the local APIC timer (a coarse tick that lets a halted wait time out),
 * 0x3F the APIC's spurious vector. */
#define APIC 0xFEE00000u
#define PIC_BASE 0x20
#define MSIX_FIRST 0x30
#define MSIX_LAST 0x3D
#define TICK_VEC 0x3E
#define SPURIOUS_VEC 0x3F

static uint32_t apic_rd(uint32_t off) { return mmio_r32(APIC + off); }
static void apic_wr(uint32_t off, uint32_t v) { mmio_w32(APIC + off, v); }

#define MAX_PCI 32
#define MAX_DEV 8
static struct pci_dev pcis[MAX_PCI];
static int npci;
static struct vdev devs[MAX_DEV];
static int ndev;
static struct vdev *vec_dev[64];
static uint8_t next_vec = MSIX_FIRST;
static volatile uint32_t ticks;
static uint32_t tsc_khz;

static void on_msix(struct frame *f) {
    struct vdev *d = vec_dev[f->vector];
    if (d) {
        unsigned entry = (unsigned)f->vector - d->msix_base;
        if (entry == d->config_vector)
            d->config_irqs++;
        for (int i = 0; i < d->nvqs; i++)
            if (d->vq[i].vector == entry) {
                d->irqs++;
                break;
            }
    }
    apic_wr(0xB0, 0);
}

/* INTx (§4.1.5.3, §4.1.5.4): reading the ISR status tells whether this device raised the
 * (level-triggered, possibly shared) line, and de-asserts it. Bit 0: a queue; bit 1: config. */
static void on_pic(struct frame *f) {
    unsigned irq = (unsigned)f->vector - PIC_BASE;
    if ((irq & 7) == 7) { /* spurious IRQ 7 / 15: not in service, no EOI for that chip */
        uint16_t port = irq < 8 ? 0x20 : 0xA0;
        outb(port, 0x0B); /* OCW3: read ISR */
        if (!(inb(port) & 0x80)) {
            if (irq == 15)
                outb(0x20, 0x20);
            return;
        }
    }
    for (int i = 0; i < ndev; i++) {
        struct vdev *d = &devs[i];
        if (d->irq != VIO_IRQ_INTX || d->pci->irq_line != irq)
            continue;
        uint8_t isr = r8(d->isr, 0);
        d->intx_irqs++;
        if (isr & 1)
            d->irqs++;
        if (isr & 2)
            d->config_irqs++;
    }
    if (irq >= 8)
        outb(0xA0, 0x20);
    outb(0x20, 0x20);
}

static void on_tick(struct frame *f) {
    (void)f;
    ticks++;
    apic_wr(0xB0, 0);
}

static void on_spurious(struct frame *f) { (void)f; }

static void pic_init(void) {
    outb(0x20, 0x11); outb(0xA0, 0x11); /* ICW1: edge (ELCR decides per pin), cascade, ICW4 */
    outb(0x21, PIC_BASE); outb(0xA1, PIC_BASE + 8);
    outb(0x21, 0x04); outb(0xA1, 0x02);
    outb(0x21, 0x01); outb(0xA1, 0x01); /* 8086 mode, normal EOI */
    outb(0x21, 0xFB); outb(0xA1, 0xFF); /* all masked but the cascade */
}

static void pic_unmask(unsigned irq) {
    uint16_t imr = irq < 8 ? 0x21 : 0xA1, elcr = irq < 8 ? 0x4D0 : 0x4D1;
    outb(elcr, inb(elcr) | (uint8_t)(1u << (irq & 7))); /* PCI INTx is level-triggered */
    outb(imr, inb(imr) & (uint8_t)~(1u << (irq & 7)));
}

static void apic_init(void) {
    apic_wr(0xF0, 0x100 | SPURIOUS_VEC); /* SVR: software enable */
    apic_wr(0x350, 0x700);               /* LINT0: ExtINT, the PIC's output (virtual wire) */
    apic_wr(0x360, 0x400);               /* LINT1: NMI */
    apic_wr(0x3E0, 0x3);                 /* timer: divide by 16 */
    apic_wr(0x320, 0x20000 | TICK_VEC);  /* periodic */
    apic_wr(0x380, 4000000);             /* 64M bus clocks between ticks */
}

/* ---- command line ---- */
const char *vio_cmdline(void) {
    return (rt_mbi && (rt_mbi->flags & 4)) ? (const char *)(ureg)rt_mbi->cmdline : "";
}

/* The value of key=..., found as a whole word; 0 if absent. */
static const char *opt_find(const char *key) {
    const char *s = vio_cmdline();
    while (*s) {
        while (*s == ' ')
            s++;
        const char *k = key, *w = s;
        while (*k && *w == *k)
            w++, k++;
        if (!*k && *w == '=')
            return w + 1;
        while (*s && *s != ' ')
            s++;
    }
    return 0;
}

int vio_opt_str(const char *key, char *buf, int len) {
    const char *v = opt_find(key);
    if (!v)
        return 0;
    int n = 0;
    while (v[n] && v[n] != ' ' && n < len - 1) {
        buf[n] = v[n];
        n++;
    }
    buf[n] = 0;
    return 1;
}

unsigned vio_opt_uint(const char *key, unsigned dflt) {
    const char *v = opt_find(key);
    if (!v || !*v || *v == ' ')
        return dflt;
    unsigned x = 0, base = 10;
    if (v[0] == '0' && (v[1] == 'x' || v[1] == 'X'))
        base = 16, v += 2;
    for (;; v++) {
        unsigned d;
        if (*v >= '0' && *v <= '9')
            d = (unsigned)(*v - '0');
        else if (base == 16 && (*v | 0x20) >= 'a' && (*v | 0x20) <= 'f')
            d = (unsigned)((*v | 0x20) - 'a' + 10);
        else
            break;
        x = x * base + d;
    }
    return x;
}

int vio_opt_is(const char *key, const char *value) {
    const char *v = opt_find(key);
    if (!v)
        return 0;
    while (*value && *v == *value)
        v++, value++;
    return !*value && (!*v || *v == ' ');
}

/* ---- helpers ---- */
#define POOL_SIZE (3u << 20)
static uint8_t pool[POOL_SIZE] __attribute__((aligned(4096)));
static uint32_t pool_used;

void *vio_alloc(uint32_t size, uint32_t align) {
    uint32_t at = (pool_used + align - 1) & ~(align - 1);
    if (at + size > POOL_SIZE) {
        printf("%s: FAIL: out of memory (%u bytes wanted)\n", prog, size);
        exit(3);
    }
    pool_used = at + size;
    vio_memset(pool + at, 0, size);
    return pool + at;
}

void vio_memcpy(volatile void *dst, const volatile void *src, uint32_t n) {
    volatile uint8_t *d = dst;
    const volatile uint8_t *s = src;
    while (n--)
        *d++ = *s++;
}

void vio_memset(volatile void *dst, uint8_t v, uint32_t n) {
    volatile uint8_t *d = dst;
    while (n--)
        *d++ = v;
}

uint64_t fnv1a64(uint64_t h, const volatile void *p, uint32_t n) {
    const volatile uint8_t *b = p;
    while (n--)
        h = (h ^ *b++) * 0x100000001b3ull;
    return h;
}

/* TSC frequency: acrn-sim (like ACRN) reports it in CPUID leaf 0x40000010 (EAX, kHz) under a
 * hypervisor signature; elsewhere (QEMU TCG) it is measured against 10 ms of PIT channel 2. */
uint32_t vio_tsc_khz(void) {
    if (tsc_khz)
        return tsc_khz;
    uint32_t r[4];
    cpuid(1, 0, r);
    if (r[2] & (1u << 31)) {
        cpuid(0x40000000, 0, r);
        if (r[0] >= 0x40000010 && r[0] < 0x40010000) {
            cpuid(0x40000010, 0, r);
            if (r[0])
                return tsc_khz = r[0];
        }
    }
    outb(0x61, (uint8_t)((inb(0x61) & ~0x02) | 0x01)); /* gate 2 on, speaker off */
    outb(0x43, 0xB0);                                   /* channel 2, lo/hi, mode 0 */
    outb(0x42, 11932 & 0xFF);                           /* 10 ms at 1.193182 MHz */
    outb(0x42, 11932 >> 8);
    uint64_t t0 = rdtsc();
    uint32_t spins = 0;
    while (!(inb(0x61) & 0x20) && ++spins < 100000000u)
        ;
    uint64_t d = rdtsc() - t0;
    tsc_khz = (uint32_t)udivmod64(d, 10, 0);
    if (!tsc_khz)
        tsc_khz = 1000000;
    return tsc_khz;
}

uint64_t vio_ms_to_cycles(unsigned ms) { return (uint64_t)ms * vio_tsc_khz(); }

/* ---- set-up ---- */
void vio_init(const char *name) {
    prog = name;
    serial_init();
    idt_init();
    vio_opts.transport = vio_opt_is("transport", "legacy")   ? VIO_LEGACY
                         : vio_opt_is("transport", "modern") ? VIO_MODERN
                                                             : VIO_ANY;
    vio_opts.irq = vio_opt_is("irq", "msix")   ? VIO_IRQ_MSIX
                   : vio_opt_is("irq", "intx") ? VIO_IRQ_INTX
                   : vio_opt_is("irq", "poll") ? VIO_IRQ_POLL
                                               : VIO_IRQ_DEFAULT;
    vio_opts.indirect = (int)vio_opt_uint("indirect", 1);
    vio_opts.suppress = (int)vio_opt_uint("suppress", 1);
    vio_opts.event_idx = vio_opts.suppress ? (int)vio_opt_uint("event_idx", 1) : 0;
    vio_opts.qsize = vio_opt_uint("qsize", 0);
    vio_opts.pio_notify = vio_opt_is("notify", "pio");
    vio_opts.verbose = (int)vio_opt_uint("verbose", 0);
    tsc_khz = vio_opts.khz = vio_opt_uint("khz", 0);
    for (int v = PIC_BASE; v < PIC_BASE + 16; v++)
        set_handler(v, on_pic);
    for (int v = MSIX_FIRST; v <= MSIX_LAST; v++)
        set_handler(v, on_msix);
    set_handler(TICK_VEC, on_tick);
    set_handler(SPURIOUS_VEC, on_spurious);
    pic_init();
    apic_init();
    if (vio_opt_is("pci", "reassign")) /* test the BAR assignment of lib/pci.c */
        pci_forget_bars(0x1AF4);
    npci = pci_scan(pcis, MAX_PCI);
}

static const char *type_name(uint16_t t) {
    switch (t) {
    case VIRTIO_ID_NET: return "virtio-net";
    case VIRTIO_ID_BLOCK: return "virtio-blk";
    case VIRTIO_ID_CONSOLE: return "virtio-console";
    case VIRTIO_ID_RNG: return "virtio-rng";
    default: return "virtio";
    }
}

/* The virtio device type of a PCI function (§4.1.2.1, §4.1.2.3): 0x1040 + type for a modern device ID;
 * a transitional ID (0x1000-0x103F) carries the type in the subsystem device ID. */
static uint16_t virtio_type(const struct pci_dev *p) {
    if (p->vendor != 0x1AF4)
        return 0;
    if (p->device >= 0x1040 && p->device <= 0x107F)
        return p->device - 0x1040;
    if (p->device >= 0x1000 && p->device <= 0x103F)
        return p->subsys_id;
    return 0;
}

static struct vreg bar_reg(const struct pci_dev *p, int bar, uint32_t off) {
    struct vreg r = {0, 0};
    if (bar < 6 && p->bar[bar].size && p->bar[bar].addr < 0x100000000ull) {
        r.base = (uint32_t)p->bar[bar].addr + off;
        r.io = p->bar[bar].io;
    }
    return r;
}

/* The modern interface's capabilities (§4.1.4): the first of each type the driver can use. */
static void find_modern(struct vdev *d) {
    struct pci_dev *p = d->pci;
    int have_common = 0, have_notify = 0, have_isr = 0;
    for (uint8_t c = pci_find_cap(p, PCI_CAP_VENDOR, 0); c; c = pci_find_cap(p, PCI_CAP_VENDOR, c)) {
        uint8_t type = pci_read8(p, c + 3), bar = pci_read8(p, c + 4);
        uint32_t off = pci_read32(p, c + 8);
        struct vreg r = bar_reg(p, bar, off);
        if (!r.base)
            continue;
        if (type == VIRTIO_PCI_CAP_COMMON_CFG && !have_common) {
            d->common = r;
            have_common = 1;
        } else if (type == VIRTIO_PCI_CAP_NOTIFY_CFG &&
                   (!have_notify || (vio_opts.pio_notify && r.io && !d->notify.io))) {
            d->notify = r;
            d->notify_mult = pci_read32(p, c + 16);
            have_notify = 1;
        } else if (type == VIRTIO_PCI_CAP_ISR_CFG && !have_isr) {
            d->isr = r;
            have_isr = 1;
        } else if (type == VIRTIO_PCI_CAP_DEVICE_CFG && !d->cfg.base) {
            d->cfg = r;
        }
    }
    d->has_modern = have_common && have_notify && have_isr;
}

static int msix_enabled(const struct vdev *d) { return d->irq == VIO_IRQ_MSIX; }

struct vdev *vio_find(uint16_t type, int index) {
    for (int i = 0; i < npci; i++) {
        struct pci_dev *p = &pcis[i];
        if (virtio_type(p) != type || index-- > 0)
            continue;
        for (int k = 0; k < ndev; k++)
            if (devs[k].pci == p)
                return &devs[k];
        if (ndev == MAX_DEV)
            return 0;
        struct vdev *d = &devs[ndev++];
        d->pci = p;
        d->type = type;
        d->name = type_name(type);
        d->config_vector = VIO_NO_VECTOR;
        /* Legacy interface: a transitional device ID with an I/O BAR0 (§4.1.2.3, §4.1.4.8) */
        d->has_legacy = p->device < 0x1040 && p->bar[0].size && p->bar[0].io;
        find_modern(d);
        if (vio_opts.transport == VIO_LEGACY && !d->has_legacy) {
            printf("%s: %s at %02x:%02x.%x has no legacy interface\n", prog, d->name, p->bus,
                   p->dev, p->fn);
            return 0;
        }
        if (vio_opts.transport == VIO_MODERN && !d->has_modern) {
            printf("%s: %s at %02x:%02x.%x has no modern interface\n", prog, d->name, p->bus,
                   p->dev, p->fn);
            return 0;
        }
        d->modern = vio_opts.transport == VIO_LEGACY ? 0 : d->has_modern;
        if (!d->modern) {
            d->common = bar_reg(p, 0, 0);
            d->isr = bar_reg(p, 0, L_ISR);
            d->notify = d->common;
        }
        /* MSI-X (PCI 3.0 §6.8.2): the table's BAR and offset */
        d->msix_cap = pci_find_cap(p, PCI_CAP_MSIX, 0);
        if (d->msix_cap) {
            uint32_t t = pci_read32(p, d->msix_cap + 4);
            struct vreg tab = bar_reg(p, t & 7, t & ~7u);
            d->msix_size = (pci_read16(p, d->msix_cap + 2) & 0x7FF) + 1;
            d->msix_table = tab.io ? 0 : (volatile uint32_t *)(ureg)tab.base;
        }
        d->irq = vio_opts.irq;
        if (d->irq == VIO_IRQ_DEFAULT)
            d->irq = d->msix_table ? VIO_IRQ_MSIX : VIO_IRQ_INTX;
        if (d->irq == VIO_IRQ_MSIX && !d->msix_table) {
            printf("%s: %s has no usable MSI-X table\n", prog, d->name);
            return 0;
        }
        if (d->irq == VIO_IRQ_INTX && (p->irq_pin == 0 || p->irq_line == 0 || p->irq_line >= 16)) {
            printf("%s: %s has no legacy IRQ (pin %u line %u)\n", prog, d->name, p->irq_pin,
                   p->irq_line);
            return 0;
        }
        if (d->irq == VIO_IRQ_MSIX) {
            uint8_t n = (uint8_t)(d->msix_size < 1 + VIO_MAX_VQ ? d->msix_size : 1 + VIO_MAX_VQ);
            if (next_vec + n - 1 > MSIX_LAST) {
                printf("%s: out of MSI-X vectors\n", prog);
                return 0;
            }
            d->msix_base = next_vec;
            for (uint8_t e = 0; e < n; e++)
                vec_dev[next_vec + e] = d;
            next_vec += n;
        }
        pci_enable(p, d->irq == VIO_IRQ_INTX);
        /* MSI-X enable (message control bit 15) also moves the legacy device config (§4.1.4.8) */
        if (d->msix_cap) {
            uint16_t ctl = pci_read16(p, d->msix_cap + 2) & ~0x4000; /* function mask off */
            pci_write16(p, d->msix_cap + 2, msix_enabled(d) ? ctl | 0x8000 : ctl & ~0x8000);
        }
        if (!d->modern)
            d->cfg = (struct vreg){d->common.base + L_CONFIG(msix_enabled(d)), 1};
        if (d->irq == VIO_IRQ_INTX)
            pic_unmask(p->irq_line);
        return d;
    }
    return 0;
}

uint8_t vio_status(struct vdev *d) { return r8(d->common, d->modern ? C_STATUS : L_STATUS); }
static void set_status(struct vdev *d, uint8_t s) { w8(d->common, d->modern ? C_STATUS : L_STATUS, s); }
static void add_status(struct vdev *d, uint8_t s) { set_status(d, vio_status(d) | s); }
void vio_fail(struct vdev *d) { add_status(d, VIRTIO_STATUS_FAILED); }
int vio_has(const struct vdev *d, int bit) { return (d->features >> bit) & 1; }

void vio_reset(struct vdev *d) {
    set_status(d, 0);
    for (int i = 0; i < 1000000 && vio_status(d); i++) /* §4.1.4.3.2: wait for 0 */
        __asm__ volatile("pause");
}

/* One MSI-X table entry (PCI 3.0 §6.8.2.6-9): a message to the local APIC at 0xFEE00000 with
 * the destination APIC ID in bits 19:12, fixed delivery, edge, the vector in the data. */
static void msix_program(struct vdev *d, unsigned entry) {
    volatile uint32_t *e = d->msix_table + 4 * entry;
    uint32_t apic_id = apic_rd(0x20) >> 24;
    e[3] = 1; /* masked while it changes */
    e[0] = APIC | (apic_id << 12);
    e[1] = 0;
    e[2] = d->msix_base + entry;
    e[3] = 0;
}

static unsigned queue_entry(const struct vdev *d, int q) {
    unsigned n = d->msix_size < 1 + VIO_MAX_VQ ? d->msix_size : 1 + VIO_MAX_VQ;
    return (unsigned)q + 1 < n ? (unsigned)q + 1 : n - 1; /* too few entries: the last is shared */
}

int vio_start(struct vdev *d, uint64_t want) {
    vio_reset(d);                                 /* 1 */
    add_status(d, VIRTIO_STATUS_ACKNOWLEDGE);     /* 2 */
    add_status(d, VIRTIO_STATUS_DRIVER);          /* 3 */
    uint64_t ring = (vio_opts.indirect ? BIT(VIRTIO_RING_F_INDIRECT_DESC) : 0) |
                    (vio_opts.event_idx ? BIT(VIRTIO_RING_F_EVENT_IDX) : 0);
    if (d->modern) { /* 4: feature bits 0-63 through the select registers (§4.1.4.3) */
        w32(d->common, C_DFSELECT, 0);
        d->offered = r32(d->common, C_DF);
        w32(d->common, C_DFSELECT, 1);
        d->offered |= (uint64_t)r32(d->common, C_DF) << 32;
        if (!(d->offered & BIT(VIRTIO_F_VERSION_1))) {
            printf("%s: FAIL: modern %s does not offer VIRTIO_F_VERSION_1\n", prog, d->name);
            vio_fail(d);
            return -1;
        }
        d->features = d->offered & (want | ring | BIT(VIRTIO_F_VERSION_1));
        w32(d->common, C_GFSELECT, 0);
        w32(d->common, C_GF, (uint32_t)d->features);
        w32(d->common, C_GFSELECT, 1);
        w32(d->common, C_GF, (uint32_t)(d->features >> 32));
        add_status(d, VIRTIO_STATUS_FEATURES_OK); /* 5 */
        if (!(vio_status(d) & VIRTIO_STATUS_FEATURES_OK)) { /* 6 */
            printf("%s: FAIL: %s did not accept features %llx\n", prog, d->name,
                   (unsigned long long)d->features);
            vio_fail(d);
            return -1;
        }
    } else { /* legacy: bits 0-31 only, and no FEATURES_OK (§3.1.2) */
        d->offered = r32(d->common, L_HOST_FEATURES);
        d->features = d->offered & (want | ring) & 0xFFFFFFFFu;
        w32(d->common, L_GUEST_FEATURES, (uint32_t)d->features);
    }
    if (d->irq == VIO_IRQ_MSIX) { /* per-bus set-up: the configuration-change vector */
        d->config_vector = 0;
        msix_program(d, 0);
        uint32_t reg = d->modern ? C_MSIX_CONFIG : L_MSIX_CONFIG;
        w16(d->common, reg, 0);
        if (r16(d->common, reg) != 0) {
            printf("%s: FAIL: %s refused MSI-X config vector 0\n", prog, d->name);
            vio_fail(d);
            return -1;
        }
    }
    return 0;
}

/* Used-buffer notification suppression (§2.4.7): without EVENT_IDX the flag
 * VRING_AVAIL_F_NO_INTERRUPT; with it (flags stay 0) used_event, "interrupt me once you
 * write used ring entry used_event": last_used asks for the next one, last_used + 0x8000
 * (kept ahead by vq_get) for none. */
static void suppress(struct virtq *vq, int on) {
    if (!vio_opts.suppress)
        return; /* suppress=0: interrupts are always wanted */
    if (vio_has(vq->dev, VIRTIO_RING_F_EVENT_IDX))
        *vq->used_event = (uint16_t)(vq->last_used + (on ? 0x8000 : 0));
    else
        vq->avail->flags = on ? VRING_AVAIL_F_NO_INTERRUPT : 0;
}

struct virtq *vio_setup_vq(struct vdev *d, int index, unsigned max) {
    if (index >= VIO_MAX_VQ || index != d->nvqs) {
        printf("%s: queues must be set up in order, at most %d\n", prog, VIO_MAX_VQ);
        vio_fail(d);
        return 0;
    }
    struct virtq *vq = &d->vq[index];
    struct vreg c = d->common;
    w16(c, d->modern ? C_Q_SELECT : L_QUEUE_SEL, (uint16_t)index);
    unsigned num = r16(c, d->modern ? C_Q_SIZE : L_QUEUE_NUM);
    if (num == 0 || (d->modern && r16(c, C_Q_ENABLE))) {
        printf("%s: FAIL: %s queue %d is not available (size %u)\n", prog, d->name, index, num);
        vio_fail(d);
        return 0;
    }
    if (!max)
        max = vio_opts.qsize;
    if (d->modern && max && max < num) { /* §4.1.4.3: the driver may reduce queue_size */
        unsigned p = 1;
        while (p * 2 <= max)
            p *= 2;
        num = p;
        w16(c, C_Q_SIZE, (uint16_t)num);
    }
    /* §2.4.2 / legacy layout: descriptor table, avail ring (+ used_event), then at the next
     * 4096-byte boundary the used ring (+ avail_event). One block, 4096-aligned, so the legacy
     * QUEUE_PFN can name it; the modern registers get the three addresses. */
    uint32_t avail_off = 16 * num;
    uint32_t used_off = (avail_off + 6 + 2 * num + 4095) & ~4095u;
    uint32_t total = used_off + 6 + 8 * num;
    uint8_t *mem = vio_alloc(total, 4096);
    vq->dev = d;
    vq->index = (uint16_t)index;
    vq->num = (uint16_t)num;
    vq->desc = (volatile struct vring_desc *)mem;
    vq->avail = (volatile struct vring_avail *)(mem + avail_off);
    vq->used = (volatile struct vring_used *)(mem + used_off);
    vq->used_event = (volatile uint16_t *)(mem + avail_off + 4 + 2 * num);
    vq->avail_event = (volatile uint16_t *)(mem + used_off + 4 + 8 * num);
    vq->cookie = vio_alloc(num * sizeof(void *), 4);
    if (vio_has(d, VIRTIO_RING_F_INDIRECT_DESC))
        vq->indirect = vio_alloc(num * VQ_MAX_INDIRECT * sizeof(struct vring_desc), 16);
    for (unsigned i = 0; i < num; i++)
        vq->desc[i].next = (uint16_t)(i + 1);
    vq->num_free = (uint16_t)num;
    vq->vector = VIO_NO_VECTOR;
    if (d->irq == VIO_IRQ_MSIX) {
        vq->vector = (uint16_t)queue_entry(d, index);
        msix_program(d, vq->vector);
    }
    /* Used-buffer notifications start suppressed; vq_wait_any asks for them only while it
     * halts (see suppress below). */
    suppress(vq, 1);
    if (d->modern) {
        w32(c, C_Q_DESC, (uint32_t)(ureg)vq->desc);
        w32(c, C_Q_DESC + 4, 0);
        w32(c, C_Q_AVAIL, (uint32_t)(ureg)vq->avail);
        w32(c, C_Q_AVAIL + 4, 0);
        w32(c, C_Q_USED, (uint32_t)(ureg)vq->used);
        w32(c, C_Q_USED + 4, 0);
        w16(c, C_Q_MSIX_VECTOR, vq->vector);
        if (r16(c, C_Q_MSIX_VECTOR) != vq->vector)
            goto no_vector;
        /* §4.1.4.4: this queue's notify register is at cap.offset + queue_notify_off *
         * notify_off_multiplier */
        vq->notify = d->notify;
        vq->notify_off = r16(c, C_Q_NOTIFY_OFF) * d->notify_mult;
        w16(c, C_Q_ENABLE, 1);
    } else {
        w32(c, L_QUEUE_PFN, (uint32_t)(ureg)mem >> 12);
        if (d->irq == VIO_IRQ_MSIX) {
            w16(c, L_MSIX_QUEUE, vq->vector);
            if (r16(c, L_MSIX_QUEUE) != vq->vector)
                goto no_vector;
        }
        vq->notify = d->common;
        vq->notify_off = L_QUEUE_NOTIFY;
    }
    d->nvqs++;
    if (vio_opts.verbose)
        printf("%s:   queue %d size %u vector %u notify %x+%x\n", prog, index, num, vq->vector,
               vq->notify.base, vq->notify_off);
    return vq;
no_vector:
    printf("%s: FAIL: %s refused MSI-X vector %u for queue %d\n", prog, d->name, vq->vector, index);
    vio_fail(d);
    return 0;
}

void vio_driver_ok(struct vdev *d) { add_status(d, VIRTIO_STATUS_DRIVER_OK); }

void vio_describe(const struct vdev *d) {
    static const char *irqs[] = {"?", "msix", "intx", "poll"};
    const struct pci_dev *p = d->pci;
    printf("%s: %s at %02x:%02x.%x id %04x:%04x transport=%s irq=%s", prog, d->name, p->bus,
           p->dev, p->fn, p->vendor, p->device, d->modern ? "modern" : "legacy", irqs[d->irq]);
    if (d->irq == VIO_IRQ_INTX)
        printf(" line=%u", p->irq_line);
    if (d->irq == VIO_IRQ_MSIX)
        printf(" msix_entries=%u", d->msix_size);
    printf(" offered=%llx features=%llx\n", (unsigned long long)d->offered,
           (unsigned long long)d->features);
    if (vio_opts.verbose) {
        for (int i = 0; i < 6; i++)
            if (p->bar[i].size)
                printf("%s:   BAR%d %s %llx size %llx%s%s\n", prog, i, p->bar[i].io ? "io" : "mem",
                       (unsigned long long)p->bar[i].addr, (unsigned long long)p->bar[i].size,
                       p->bar[i].is64 ? " 64-bit" : "", p->bar[i].assigned ? " (assigned here)" : "");
        if (d->modern)
            printf("%s:   common %x isr %x cfg %x notify %x%s mult %u\n", prog, d->common.base,
                   d->isr.base, d->cfg.base, d->notify.base, d->notify.io ? " (io)" : "",
                   d->notify_mult);
    }
}

/* ---- device-specific configuration ---- */
static uint8_t generation(struct vdev *d) { return d->modern ? r8(d->common, C_CFG_GENERATION) : 0; }

uint8_t vio_cfg8(struct vdev *d, uint32_t off) { return r8(d->cfg, off); }
uint16_t vio_cfg16(struct vdev *d, uint32_t off) { return r16(d->cfg, off); }
uint32_t vio_cfg32(struct vdev *d, uint32_t off) { return r32(d->cfg, off); }
void vio_cfg_w32(struct vdev *d, uint32_t off, uint32_t v) { w32(d->cfg, off, v); }
uint64_t vio_cfg64(struct vdev *d, uint32_t off) {
    /* §4.1.3.1, §2.3.1: a field wider than 32 bits is read as two 32-bit halves; config_generation
     * unchanged across the reads means they belong together. */
    for (;;) {
        uint8_t g = generation(d);
        uint64_t v = r32(d->cfg, off) | (uint64_t)r32(d->cfg, off + 4) << 32;
        if (generation(d) == g)
            return v;
    }
}

/* ---- virtqueues (§2.4) ---- */
uint16_t vq_free(const struct virtq *vq) { return vq->num_free; }

int vq_add(struct virtq *vq, const struct vbuf *b, int out, int in, void *cookie) {
    int n = out + in;
    if (!cookie)
        return -1; /* vq_get tells "nothing" and "not in flight" by a null cookie */
    int indirect = vq->indirect && n > 1 && n <= VQ_MAX_INDIRECT;
    if (n == 0 || vq->num_free < (indirect ? 1 : n))
        return -1;
    uint16_t head = vq->free_head;
    if (indirect) { /* §2.4.5.3: one descriptor pointing at a table of n */
        struct vring_desc *t = vq->indirect + (uint32_t)head * VQ_MAX_INDIRECT;
        for (int i = 0; i < n; i++) {
            t[i].addr = (uint32_t)(ureg)b[i].addr;
            t[i].len = b[i].len;
            t[i].flags = (uint16_t)((i >= out ? VRING_DESC_F_WRITE : 0) |
                                    (i + 1 < n ? VRING_DESC_F_NEXT : 0));
            t[i].next = (uint16_t)(i + 1);
        }
        vq->desc[head].addr = (uint32_t)(ureg)t;
        vq->desc[head].len = (uint32_t)(n * sizeof(struct vring_desc));
        vq->desc[head].flags = VRING_DESC_F_INDIRECT;
        vq->free_head = vq->desc[head].next;
        vq->num_free--;
        vq->indirect_used++;
    } else { /* §2.4.5: a chain through next */
        uint16_t i = head, last = head;
        for (int k = 0; k < n; k++) {
            vq->desc[i].addr = (uint32_t)(ureg)b[k].addr;
            vq->desc[i].len = b[k].len;
            vq->desc[i].flags = (uint16_t)((k >= out ? VRING_DESC_F_WRITE : 0) |
                                           (k + 1 < n ? VRING_DESC_F_NEXT : 0));
            last = i;
            i = vq->desc[i].next;
        }
        vq->free_head = vq->desc[last].next;
        vq->num_free = (uint16_t)(vq->num_free - n);
    }
    vq->cookie[head] = cookie;
    if (vio_opts.verbose)
        printf("vq%u: add head %u (%d out, %d in%s)\n", vq->index, head, out, in,
               indirect ? ", indirect" : "");
    /* §2.4.6: the head goes into the next ring slot, then (after a write barrier) idx moves */
    vq->avail->ring[vq->avail_idx % vq->num] = head;
    barrier();
    vq->avail->idx = ++vq->avail_idx;
    vq->added++;
    return 0;
}

/* §2.4.9 (vring_need_event, as in linux include/uapi/linux/virtio_ring.h): notify if the device's avail_event
 * lies in [old, new). */
static int need_event(uint16_t event, uint16_t new_idx, uint16_t old) {
    return (uint16_t)(new_idx - event - 1) < (uint16_t)(new_idx - old);
}

void vq_kick(struct virtq *vq) {
    mb();
    uint16_t old = vq->kicked_idx, now = vq->avail_idx;
    vq->kicked_idx = now;
    if (old == now)
        return;
    int need;
    if (!vio_opts.suppress) {
        need = 1;
    } else if (vio_has(vq->dev, VIRTIO_RING_F_EVENT_IDX)) {
        need = need_event(*vq->avail_event, now, old);
    } else {
        need = !(vq->used->flags & VRING_USED_F_NO_NOTIFY);
    }
    if (!need) {
        vq->kicks_suppressed++;
        return;
    }
    vq->kicks++;
    if (vio_opts.verbose)
        printf("vq%u: notify (avail idx %u)\n", vq->index, now);
    /* §4.1.5.2: the queue index, 16 bits, to the queue's notify register */
    w16(vq->notify, vq->notify_off, vq->index);
}

int vq_has_used(struct virtq *vq) { return vq->used->idx != vq->last_used; }

void *vq_get(struct virtq *vq, uint32_t *len) {
    if (!vq_has_used(vq))
        return 0;
    barrier(); /* read the element only after seeing idx (x86 keeps loads in order) */
    volatile struct vring_used_elem *e = &vq->used->ring[vq->last_used % vq->num];
    uint16_t head = (uint16_t)e->id;
    if (len)
        *len = e->len;
    if (head >= vq->num) {
        printf("%s: FAIL: vq%u: device returned head %u (ring size %u)\n", prog, vq->index,
               head, vq->num);
        exit(4);
    }
    if (!vq->cookie[head]) {
        printf("%s: FAIL: vq%u: device returned head %u, which is not in flight\n", prog,
               vq->index, head);
        exit(4);
    }
    vq->last_used++;
    /* Return the chain to the free list. */
    uint16_t i = head, n = 1;
    while (vq->desc[i].flags & VRING_DESC_F_NEXT) {
        i = vq->desc[i].next;
        n++;
    }
    vq->desc[i].next = vq->free_head;
    vq->free_head = head;
    vq->num_free = (uint16_t)(vq->num_free + n);
    vq->completed++;
    void *cookie = vq->cookie[head];
    vq->cookie[head] = 0;
    if (vio_has(vq->dev, VIRTIO_RING_F_EVENT_IDX)) /* keep "not yet" ahead of last_used */
        *vq->used_event = (uint16_t)(vq->last_used + 0x8000);
    return cookie;
}

static int any_used(struct virtq **vqs, int n) {
    for (int i = 0; i < n; i++)
        if (vq_has_used(vqs[i]))
            return 1;
    return 0;
}

/* Halting waits ask for used-buffer notifications (§2.4.7: used_event = the next entry
 * with EVENT_IDX, else VRING_AVAIL_F_NO_INTERRUPT clear), look at the used rings once more
 * (an entry the device added before it could see the request raised nothing), halt, and
 * suppress them again. A polling wait never asks. */
int vq_wait_any(struct virtq **vqs, int n, unsigned timeout_ms) {
    uint64_t deadline = rdtsc() + vio_ms_to_cycles(timeout_ms);
    int poll = 1;
    for (int i = 0; i < n; i++)
        if (vqs[i]->dev->irq != VIO_IRQ_POLL)
            poll = 0;
    for (;;) {
        cli();
        if (any_used(vqs, n))
            return 1;
        if (rdtsc() > deadline)
            return 0;
        if (poll) {
            __asm__ volatile("pause");
            continue;
        }
        for (int i = 0; i < n; i++)
            suppress(vqs[i], 0);
        mb();
        if (!any_used(vqs, n))
            __asm__ volatile("sti; hlt; cli"); /* STI's shadow: no wake-up is lost */
        for (int i = 0; i < n; i++)
            suppress(vqs[i], 1);
    }
}

int vq_wait(struct virtq *vq, unsigned timeout_ms) { return vq_wait_any(&vq, 1, timeout_ms); }
