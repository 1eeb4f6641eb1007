/* The DMA sensor's registers and descriptors (sim/devices/dma_sensor.py documents them), and
 * the few steps every driver of it takes: find it on PCI, enable it, program its MSI. Programs
 * run with paging off: a BAR or buffer address below 4 GiB is also a pointer. */
#ifndef ACRN_SIM_SENSOR_H
#define ACRN_SIM_SENSOR_H

#include <stdint.h>
#include "pci.h"
#include "rt.h"

#define SENSOR_VENDOR 0x1234
#define SENSOR_DEVICE 0xD5A0
#define SENSOR_ID_VALUE 0x534E5344u

#define S_ID 0x00
#define S_CTRL 0x08
#define S_STATUS 0x0C
#define S_INTR 0x10
#define S_RING_LO 0x18
#define S_RING_HI 0x1C
#define S_RING_SIZE 0x20
#define S_HEAD 0x24
#define S_TAIL 0x28
#define S_PERIOD 0x2C
#define S_SAMPLE_LEN 0x30
#define S_SEQ 0x34
#define S_DROPS 0x38
#define S_DMA_ERRS 0x3C

#define S_CTRL_EN 0x1u
#define S_CTRL_STREAM 0x2u
#define S_CTRL_IRQ_EN 0x4u
#define S_CTRL_RESET 0x80000000u
#define S_STATUS_DMA_ERR 0x2u
#define S_DESC_DONE 0x1u
#define S_DESC_ERR 0x2u

struct sensor_desc {
    uint64_t addr;
    uint32_t len;
    volatile uint32_t flags;
    volatile uint64_t timestamp;
    volatile uint32_t seq;
    volatile uint32_t written;
};

static inline uint32_t mmio_rd32(uint32_t a) { return *(volatile uint32_t *)a; }
static inline void mmio_wr32(uint32_t a, uint32_t v) { *(volatile uint32_t *)a = v; }

/* The first DMA sensor on bus 0 (pci_scan has placed its BAR if the firmware had not), or -1. */
static inline int sensor_find(struct pci_dev *devs, int n) {
    for (int i = 0; i < n; i++)
        if (devs[i].vendor == SENSOR_VENDOR && devs[i].device == SENSOR_DEVICE && devs[i].bar[0].size)
            return i;
    return -1;
}

/* Memory decoding and bus mastering on, INTx off; MSI to the given APIC id and vector. Returns
 * the MSI capability's offset (0: none). */
static inline uint8_t sensor_enable(const struct pci_dev *d, uint32_t apic_id, uint8_t vector) {
    pci_enable(d, 0);
    uint8_t msi = pci_find_cap(d, PCI_CAP_MSI, 0);
    if (msi) {
        pci_write32(d, msi + 4, 0xFEE00000u | (apic_id & 0xFF) << 12); /* physical, fixed */
        pci_write32(d, msi + 8, 0);
        pci_write16(d, msi + 12, vector);
        pci_write16(d, msi + 2, pci_read16(d, msi + 2) | 1); /* MSI enable */
    }
    return msi;
}

/* One descriptor ring at ring (size entries), samples of len bytes, interrupts on. */
static inline void sensor_start(uint32_t bar, struct sensor_desc *ring, uint32_t size, uint32_t len,
                                uint32_t ctrl) {
    mmio_wr32(bar + S_CTRL, S_CTRL_RESET);
    mmio_wr32(bar + S_RING_LO, (uint32_t)(ureg)ring);
    mmio_wr32(bar + S_RING_HI, 0);
    mmio_wr32(bar + S_RING_SIZE, size);
    mmio_wr32(bar + S_SAMPLE_LEN, len);
    mmio_wr32(bar + S_CTRL, ctrl);
}

#endif
