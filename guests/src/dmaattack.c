/* dmaattack: a guest that turns its passthrough DMA sensor against memory it does not own. It
 * posts one descriptor per target address, so that the device writes a sample there by DMA,
 * then points the descriptor ring itself at foreign memory, so that the device's descriptor
 * fetch reads it. Under VT-d every such access is translated by the VM's own domain (its EPT):
 * it faults and does not happen; the descriptors in the guest's own memory still complete.
 *   targets=A,B,...   addresses (hex) to write by DMA (up to 8)
 *   ring=A            an address (hex) to read descriptors from (optional)
 *   probe=A           an address (hex) to read with the CPU (e.g. another device's BAR)
 * Output: the PCI functions the VM sees, one line per attempt, then "dmaattack: done". */
#include "rt.h"
#include "pci.h"
#include "sensor.h"

#define VECTOR 0x30
#define XAPIC 0xFEE00000u

static struct pci_dev devs[32];
static volatile uint32_t done, intr_seen;
static uint32_t bar;
static struct sensor_desc ring[8] __attribute__((aligned(64)));
static uint8_t own[64] __attribute__((aligned(64)));

static void on_msi(struct frame *f) {
    (void)f;
    uint32_t intr = mmio_rd32(bar + S_INTR);
    mmio_wr32(bar + S_INTR, intr);
    intr_seen |= intr;
    done = 1;
    mmio_wr32(XAPIC + 0xB0, 0);
}

static void wait_done(void) {
    cli();
    while (!done)
        __asm__ volatile("sti; hlt; cli");
    sti();
}

/* Parses "key=0xA,0xB" from the command line into v[]; returns how many. */
static int hex_list(const char *key, uint32_t *v, int max) {
    const char *s = rt_cmdline(); /* key=value words; a leading image path never matches */
    int klen = 0, n = 0;
    while (key[klen])
        klen++;
    while (*s) {
        int match = 1;
        for (int i = 0; i < klen; i++)
            if (s[i] != key[i])
                match = 0;
        if (match && s[klen] == '=') {
            s += klen + 1;
            while (*s && *s != ' ' && n < max) {
                uint32_t x = 0;
                if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X'))
                    s += 2;
                for (;; s++) {
                    char c = *s;
                    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                          : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
                    if (d < 0)
                        break;
                    x = x << 4 | (uint32_t)d;
                }
                v[n++] = x;
                if (*s == ',')
                    s++;
            }
            return n;
        }
        while (*s && *s != ' ')
            s++;
        while (*s == ' ')
            s++;
    }
    return 0;
}

int main(void) {
    serial_init();
    idt_init();
    int np = pci_scan(devs, 32);
    for (int i = 0; i < np; i++)
        printf("dmaattack: sees %02x:%02x.%x %04x:%04x\n", devs[i].bus, devs[i].dev, devs[i].fn,
               devs[i].vendor, devs[i].device);
    uint32_t probe[1];
    if (hex_list("probe", probe, 1))
        printf("dmaattack: probe %x reads %x\n", probe[0], mmio_rd32(probe[0]));
    int k = sensor_find(devs, np);
    if (k < 0) {
        printf("dmaattack: no DMA sensor to attack with\n");
        printf("dmaattack: done\n");
        return 0;
    }
    bar = (uint32_t)devs[k].bar[0].addr;
    set_handler(VECTOR, on_msi);
    mmio_wr32(XAPIC + 0xF0, 0x1FF);
    sensor_enable(&devs[k], mmio_rd32(XAPIC + 0x20) >> 24, VECTOR);
    uint32_t targets[8];
    int nt = hex_list("targets", targets, 8);
    sensor_start(bar, ring, 8, sizeof(own), S_CTRL_EN | S_CTRL_IRQ_EN);
    sti();
    for (int i = 0; i < nt; i++) {
        ring[i].addr = targets[i];
        ring[i].len = sizeof(own);
        ring[i].flags = 0;
        done = 0;
        mmio_wr32(bar + S_TAIL, (uint32_t)i + 1);
        wait_done();
        printf("dmaattack: DMA write to %x: descriptor flags %x, device status %x\n", targets[i],
               ring[i].flags, mmio_rd32(bar + S_STATUS));
    }
    uint32_t foreign[1];
    if (hex_list("ring", foreign, 1)) {
        sensor_start(bar, (struct sensor_desc *)(ureg)foreign[0], 8, sizeof(own),
                     S_CTRL_EN | S_CTRL_IRQ_EN);
        done = 0;
        intr_seen = 0;
        mmio_wr32(bar + S_TAIL, 1);
        wait_done();
        printf("dmaattack: descriptor read from %x: device status %x, dma errors %u, intr %x\n",
               foreign[0], mmio_rd32(bar + S_STATUS), mmio_rd32(bar + S_DMA_ERRS), intr_seen);
    }
    mmio_wr32(bar + S_CTRL, 0);
    printf("dmaattack: done\n");
    return 0;
}
