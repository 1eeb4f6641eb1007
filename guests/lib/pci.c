/* PCI configuration mechanism 1, bus-0 scan, capabilities and BARs (see pci.h). */
#include "pci.h"
#include "rt.h"

static inline void outl(uint16_t port, uint32_t v) { __asm__ volatile("outl %0, %1" ::"a"(v), "Nd"(port)); }
static inline uint32_t inl(uint16_t port) { uint32_t v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline uint16_t inw(uint16_t port) { uint16_t v; __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port)); return v; }

/* Mechanism 1: bit 31 enable, bus 23:16, device 15:11, function 10:8, dword register 7:2. The
 * data port 0xCFC..0xCFF reaches the byte lanes of that dword. */
static void select(const struct pci_dev *d, uint8_t off) {
    outl(0xCF8, 0x80000000u | (uint32_t)d->bus << 16 | (uint32_t)d->dev << 11 |
                    (uint32_t)d->fn << 8 | (off & 0xFC));
}

uint32_t pci_read32(const struct pci_dev *d, uint8_t off) { select(d, off); return inl(0xCFC); }
uint16_t pci_read16(const struct pci_dev *d, uint8_t off) { select(d, off); return inw(0xCFC + (off & 2)); }
uint8_t pci_read8(const struct pci_dev *d, uint8_t off) { select(d, off); return inb(0xCFC + (off & 3)); }
void pci_write32(const struct pci_dev *d, uint8_t off, uint32_t v) { select(d, off); outl(0xCFC, v); }
void pci_write16(const struct pci_dev *d, uint8_t off, uint16_t v) { select(d, off); outw(0xCFC + (off & 2), v); }
void pci_write8(const struct pci_dev *d, uint8_t off, uint8_t v) { select(d, off); outb(0xCFC + (off & 3), v); }

uint8_t pci_find_cap(const struct pci_dev *d, uint8_t id, uint8_t after) {
    if (!(pci_read16(d, PCI_STATUS) & PCI_STATUS_CAPS))
        return 0;
    uint8_t p = after ? pci_read8(d, after + 1) : pci_read8(d, PCI_CAP_PTR);
    for (int guard = 0; p >= 0x40 && guard < 48; guard++) { /* a loop in the list ends here */
        p &= 0xFC;
        if (pci_read8(d, p) == id)
            return p;
        p = pci_read8(d, p + 1);
    }
    return 0;
}

void pci_enable(const struct pci_dev *d, int intx) {
    uint16_t cmd = pci_read16(d, PCI_COMMAND) | PCI_CMD_IO | PCI_CMD_MEM | PCI_CMD_MASTER;
    cmd = intx ? cmd & ~PCI_CMD_INTX_DISABLE : cmd | PCI_CMD_INTX_DISABLE;
    pci_write16(d, PCI_COMMAND, cmd);
}

/* Sizing (PCI 3.0 §6.2.5.1): write all ones, read back the mask of the address bits the BAR
 * implements, restore. Decoding is off meanwhile so the probe value never decodes. */
static void size_bars(struct pci_dev *d) {
    uint16_t cmd = pci_read16(d, PCI_COMMAND);
    pci_write16(d, PCI_COMMAND, cmd & ~(PCI_CMD_IO | PCI_CMD_MEM));
    for (int i = 0; i < 6; i++) {
        uint8_t reg = PCI_BAR0 + 4 * i;
        uint32_t orig = pci_read32(d, reg);
        pci_write32(d, reg, 0xFFFFFFFFu);
        uint32_t mask = pci_read32(d, reg);
        pci_write32(d, reg, orig);
        struct pci_bar *b = &d->bar[i];
        if (mask == 0 || mask == 0xFFFFFFFFu)
            continue; /* not implemented */
        if (mask & 1) { /* I/O: bits 31:2; a 16-bit decoder reads 0 above bit 15 */
            uint32_t m = mask & ~3u;
            if (!(m & 0xFFFF0000u))
                m |= 0xFFFF0000u;
            b->io = 1;
            b->size = ~m + 1;
            b->addr = orig & ~3u;
            continue;
        }
        uint64_t m = mask & ~0xFu, a = orig & ~0xFu;
        if (((mask >> 1) & 3) == 2 && i < 5) { /* type 10b: 64-bit, the next BAR is the high half */
            uint8_t hi = reg + 4;
            uint32_t orig_hi = pci_read32(d, hi);
            pci_write32(d, hi, 0xFFFFFFFFu);
            m |= (uint64_t)pci_read32(d, hi) << 32;
            pci_write32(d, hi, orig_hi);
            a |= (uint64_t)orig_hi << 32;
            b->is64 = 1;
        } else {
            m |= 0xFFFFFFFF00000000ull;
        }
        b->size = ~m + 1;
        b->addr = a;
        if (b->is64)
            i++; /* the high half is not a BAR of its own */
    }
    pci_write16(d, PCI_COMMAND, cmd);
}

/* BARs the firmware left at 0 get addresses from fixed windows that this program owns:
 *   I/O     0xC000 .. 0xFFFF
 *   memory  0xD0000000 .. 0xDFFFFFFF (below QEMU's and acrn-dm's other fixed ranges)
 * Each window's allocation starts above every BAR already placed in it, so it never overlaps
 * what the firmware assigned. A 64-bit BAR placed above 4 GiB is moved into the window too:
 * with paging off this program cannot reach it there. */
#define IO_WIN_LO 0xC000u
#define IO_WIN_HI 0x10000u
#define MEM_WIN_LO 0xD0000000u
#define MEM_WIN_HI 0xE0000000u

static int needs_address(const struct pci_bar *b) {
    return b->size && (b->addr == 0 || b->addr >= 0x100000000ull);
}

static void assign_bars(struct pci_dev *devs, int n) {
    uint64_t io_next = IO_WIN_LO, mem_next = MEM_WIN_LO;
    for (int k = 0; k < n; k++)
        for (int i = 0; i < 6; i++) {
            struct pci_bar *b = &devs[k].bar[i];
            if (!b->size || needs_address(b))
                continue;
            uint64_t end = b->addr + b->size;
            if (b->io && b->addr >= IO_WIN_LO && end > io_next)
                io_next = end;
            if (!b->io && b->addr >= MEM_WIN_LO && b->addr < MEM_WIN_HI && end > mem_next)
                mem_next = end;
        }
    for (int k = 0; k < n; k++) {
        struct pci_dev *d = &devs[k];
        for (int i = 0; i < 6; i++) {
            struct pci_bar *b = &d->bar[i];
            if (!needs_address(b))
                continue;
            uint64_t *next = b->io ? &io_next : &mem_next;
            uint64_t limit = b->io ? IO_WIN_HI : MEM_WIN_HI;
            uint64_t a = (*next + b->size - 1) & ~(b->size - 1); /* natural alignment */
            if (a + b->size > limit) {
                printf("pci: %02x:%02x.%x BAR%d (%lu bytes): no room in the window\n", d->bus,
                       d->dev, d->fn, i, (unsigned long)b->size);
                continue;
            }
            *next = a + b->size;
            b->addr = a;
            b->assigned = 1;
            uint8_t reg = PCI_BAR0 + 4 * i;
            pci_write32(d, reg, (uint32_t)a | (pci_read32(d, reg) & (b->io ? 3u : 0xFu)));
            if (b->is64)
                pci_write32(d, reg + 4, 0);
        }
    }
}

void pci_forget_bars(uint16_t vendor) {
    for (int dev = 0; dev < 32; dev++)
        for (int fn = 0; fn < 8; fn++) {
            struct pci_dev d = {.bus = 0, .dev = (uint8_t)dev, .fn = (uint8_t)fn};
            if (pci_read16(&d, PCI_VENDOR) != vendor || (pci_read8(&d, PCI_HEADER_TYPE) & 0x7F))
                continue;
            pci_write16(&d, PCI_COMMAND, pci_read16(&d, PCI_COMMAND) & ~(PCI_CMD_IO | PCI_CMD_MEM));
            for (int i = 0; i < 6; i++)
                pci_write32(&d, PCI_BAR0 + 4 * i, 0);
        }
}

int pci_scan(struct pci_dev *out, int max) {
    int n = 0;
    for (int dev = 0; dev < 32 && n < max; dev++) {
        for (int fn = 0; fn < 8 && n < max; fn++) {
            struct pci_dev *d = &out[n];
            *d = (struct pci_dev){.bus = 0, .dev = (uint8_t)dev, .fn = (uint8_t)fn};
            uint32_t id = pci_read32(d, PCI_VENDOR);
            if ((id & 0xFFFF) == 0xFFFF) {
                if (fn == 0)
                    break;
                continue;
            }
            d->vendor = (uint16_t)id;
            d->device = (uint16_t)(id >> 16);
            uint32_t rc = pci_read32(d, PCI_REVISION);
            d->revision = (uint8_t)rc;
            d->class_code = rc >> 8;
            uint8_t ht = pci_read8(d, PCI_HEADER_TYPE);
            if ((ht & 0x7F) == 0) {
                uint32_t ss = pci_read32(d, PCI_SUBSYS_VENDOR);
                d->subsys_vendor = (uint16_t)ss;
                d->subsys_id = (uint16_t)(ss >> 16);
                d->irq_line = pci_read8(d, PCI_INT_LINE);
                d->irq_pin = pci_read8(d, PCI_INT_PIN);
                size_bars(d);
            }
            n++;
            if (fn == 0 && !(ht & 0x80))
                break; /* single-function device */
        }
    }
    assign_bars(out, n);
    return n;
}
