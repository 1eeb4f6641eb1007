/* PCI for guest programs: configuration mechanism 1 (ports 0xCF8/0xCFC), a bus-0 scan, the
 * capability list, and BAR decoding and assignment (PCI Local Bus Specification 3.0, §3.2.2.3.2
 * and §6.2.5). Programs run with paging off, so a BAR address below 4 GiB is also a pointer. */
#ifndef ACRN_SIM_PCI_H
#define ACRN_SIM_PCI_H

#include <stdint.h>

/* Configuration header offsets (type 0) */
#define PCI_VENDOR 0x00
#define PCI_DEVICE 0x02
#define PCI_COMMAND 0x04
#define PCI_STATUS 0x06
#define PCI_REVISION 0x08
#define PCI_CLASS 0x09 /* prog-if, subclass, class: 3 bytes */
#define PCI_HEADER_TYPE 0x0E
#define PCI_BAR0 0x10
#define PCI_SUBSYS_VENDOR 0x2C
#define PCI_SUBSYS_ID 0x2E
#define PCI_CAP_PTR 0x34
#define PCI_INT_LINE 0x3C
#define PCI_INT_PIN 0x3D

#define PCI_CMD_IO 0x0001
#define PCI_CMD_MEM 0x0002
#define PCI_CMD_MASTER 0x0004
#define PCI_CMD_INTX_DISABLE 0x0400
#define PCI_STATUS_CAPS 0x0010

#define PCI_CAP_MSI 0x05
#define PCI_CAP_VENDOR 0x09
#define PCI_CAP_MSIX 0x11

struct pci_bar {
    uint64_t addr; /* 0: not implemented */
    uint64_t size;
    uint8_t io;    /* 1: I/O space */
    uint8_t is64;  /* a 64-bit memory BAR (it uses the next BAR register too) */
    uint8_t assigned; /* 1: this program placed it (the firmware had left it at 0) */
};

struct pci_dev {
    uint8_t bus, dev, fn;
    uint16_t vendor, device, subsys_vendor, subsys_id;
    uint8_t revision, irq_line, irq_pin;
    uint32_t class_code; /* class << 16 | subclass << 8 | prog-if */
    struct pci_bar bar[6];
};

/* Configuration mechanism 1: 8/16/32-bit accesses at any offset 0..255. */
uint32_t pci_read32(const struct pci_dev *d, uint8_t off);
uint16_t pci_read16(const struct pci_dev *d, uint8_t off);
uint8_t pci_read8(const struct pci_dev *d, uint8_t off);
void pci_write32(const struct pci_dev *d, uint8_t off, uint32_t v);
void pci_write16(const struct pci_dev *d, uint8_t off, uint16_t v);
void pci_write8(const struct pci_dev *d, uint8_t off, uint8_t v);

/* Scans bus 0 (every function of a multi-function device) and fills out[] up to max entries;
 * returns how many functions it found. Sizes every BAR and assigns those left at 0. */
int pci_scan(struct pci_dev *out, int max);

/* Clears every BAR of every bus-0 function of this vendor, as firmware that assigns nothing
 * would leave them, so that pci_scan's assignment can be tried under any firmware. */
void pci_forget_bars(uint16_t vendor);

/* The offset of the first (after = 0) or next capability with this ID, or 0. */
uint8_t pci_find_cap(const struct pci_dev *d, uint8_t id, uint8_t after);

/* Turns on I/O and memory decoding and bus mastering; intx = 0 also sets Interrupt Disable. */
void pci_enable(const struct pci_dev *d, int intx);

#endif
