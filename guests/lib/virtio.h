/* A small virtio 1.0 driver library for guest programs (OASIS "Virtual I/O Device (VIRTIO)
 * Version 1.0", 2016): the PCI transport, legacy (§4.1.4.8) and modern (§4.1.4), feature
 * negotiation (§2.2, §6), the device-status sequence (§3.1.1), split virtqueues (§2.4) and
 * interrupts (MSI-X, INTx through the 8259 PIC, or none: polling).
 *
 * Command-line options every program accepts (key=value words of the Multiboot command line):
 *   transport=legacy|modern   which interface of a transitional device (default: modern if the
 *                             device has it, else legacy)
 *   irq=msix|intx|poll        completion signalling (default: msix when the device has it)
 *   indirect=0                refuse VIRTIO_RING_F_INDIRECT_DESC
 *   event_idx=0               refuse VIRTIO_RING_F_EVENT_IDX
 *   suppress=0                no notification suppression at all: refuse EVENT_IDX, never set
 *                             VRING_AVAIL_F_NO_INTERRUPT, notify after every vq_kick (a
 *                             baseline to compare the suppression mechanisms with)
 *   qsize=N                   a smaller queue size (modern only, a power of 2)
 *   notify=pio                use a notify capability in an I/O BAR when there is one
 *   khz=N                     TSC frequency, if neither CPUID nor the PIT should be asked
 *   pci=reassign              clear the virtio devices' BARs and assign them here (lib/pci.c)
 *   verbose=1                 print the BARs, every descriptor chain and notification */
#ifndef ACRN_SIM_VIRTIO_H
#define ACRN_SIM_VIRTIO_H

#include <stdint.h>
#include "pci.h"

/* Device types (§5) */
#define VIRTIO_ID_NET 1
#define VIRTIO_ID_BLOCK 2
#define VIRTIO_ID_CONSOLE 3
#define VIRTIO_ID_RNG 4

/* Device status bits (§2.1) */
#define VIRTIO_STATUS_ACKNOWLEDGE 1
#define VIRTIO_STATUS_DRIVER 2
#define VIRTIO_STATUS_DRIVER_OK 4
#define VIRTIO_STATUS_FEATURES_OK 8
#define VIRTIO_STATUS_NEEDS_RESET 64
#define VIRTIO_STATUS_FAILED 128

/* Reserved feature bits (§6) */
#define VIRTIO_F_NOTIFY_ON_EMPTY 24
#define VIRTIO_F_ANY_LAYOUT 27
#define VIRTIO_RING_F_INDIRECT_DESC 28
#define VIRTIO_RING_F_EVENT_IDX 29
#define VIRTIO_F_VERSION_1 32
#define BIT(n) (1ull << (n))

/* Split virtqueue layout (§2.4.5, §2.4.6, §2.4.8) */
#define VRING_DESC_F_NEXT 1
#define VRING_DESC_F_WRITE 2
#define VRING_DESC_F_INDIRECT 4
#define VRING_USED_F_NO_NOTIFY 1
#define VRING_AVAIL_F_NO_INTERRUPT 1

struct vring_desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags, next;
};
struct vring_avail {
    uint16_t flags, idx;
    uint16_t ring[]; /* [num], then used_event (EVENT_IDX) */
};
struct vring_used_elem {
    uint32_t id, len;
};
struct vring_used {
    uint16_t flags, idx;
    struct vring_used_elem ring[]; /* [num], then avail_event (EVENT_IDX) */
};

/* A register window: an I/O port range or (paging off) a physical memory address. */
struct vreg {
    uint32_t base;
    uint8_t io;
};

enum { VIO_ANY, VIO_LEGACY, VIO_MODERN };
enum { VIO_IRQ_DEFAULT, VIO_IRQ_MSIX, VIO_IRQ_INTX, VIO_IRQ_POLL };

#define VQ_MAX_INDIRECT 8 /* descriptors in one indirect table */
#define VIO_MAX_VQ 4
#define VIO_NO_VECTOR 0xFFFF

struct vdev;
struct virtq {
    struct vdev *dev;
    uint16_t index, num;
    volatile struct vring_desc *desc;
    volatile struct vring_avail *avail;
    volatile struct vring_used *used;
    volatile uint16_t *used_event, *avail_event; /* after the rings, with EVENT_IDX */
    struct vring_desc *indirect; /* num tables of VQ_MAX_INDIRECT, when INDIRECT_DESC is used */
    void **cookie;               /* per head descriptor: what vq_add was given */
    uint16_t free_head, num_free, last_used, avail_idx, kicked_idx;
    uint16_t vector; /* MSI-X table entry, or VIO_NO_VECTOR */
    struct vreg notify;
    uint32_t notify_off; /* offset of this queue's notify register in the window */
    /* counters, for the programs' result lines */
    uint32_t added, completed, kicks, kicks_suppressed, indirect_used;
};

struct vdev {
    struct pci_dev *pci;
    uint16_t type;
    const char *name;
    int modern; /* the transport in use */
    int has_legacy, has_modern;
    struct vreg common, isr, cfg, notify; /* legacy: common = BAR0, cfg follows it */
    uint32_t notify_mult;
    uint64_t offered, features;
    int irq; /* VIO_IRQ_MSIX, _INTX or _POLL */
    uint8_t msix_cap;
    uint16_t msix_size;
    volatile uint32_t *msix_table;
    uint8_t msix_base;      /* the CPU vector of table entry 0; entry e raises msix_base + e */
    uint16_t config_vector; /* table entry for configuration changes, or VIO_NO_VECTOR */
    uint32_t irqs;          /* queue interrupts taken (MSI-X messages, or INTx with ISR bit 0) */
    uint32_t config_irqs, intx_irqs;
    int nvqs;
    struct virtq vq[VIO_MAX_VQ];
};

/* Options from the command line (see the top of this file), filled by vio_init. */
struct vio_opts {
    int transport, irq, indirect, event_idx, suppress, pio_notify, verbose;
    unsigned qsize;
    uint32_t khz;
};
extern struct vio_opts vio_opts;

/* ---- command line ---- */
/* The Multiboot command line ("" if none). QEMU's -kernel and GRUB put the image path first;
 * every function below looks only at key=value words, so that word is ignored. */
const char *vio_cmdline(void);
/* Copies the value of key (up to len-1 characters) into buf; 0 if absent. */
int vio_opt_str(const char *key, char *buf, int len);
unsigned vio_opt_uint(const char *key, unsigned dflt); /* decimal or 0x hex */
int vio_opt_is(const char *key, const char *value);

/* ---- set-up ---- */
/* Parses the common options, installs interrupt handlers, sets up the PIC and local APIC,
 * scans PCI. prog names the program in messages. */
void vio_init(const char *prog);
/* The index-th (0, 1, ...) virtio device of this type, with its transport chosen and mapped
 * and its interrupt mode decided; 0 if there is none. */
struct vdev *vio_find(uint16_t type, int index);
/* §3.1.1 steps 1-6: reset, ACKNOWLEDGE, DRIVER, negotiation of want (plus the ring features
 * the options allow and VERSION_1 on the modern transport), FEATURES_OK and its read-back, and
 * the configuration interrupt vector. Returns 0, or -1 after setting FAILED. */
int vio_start(struct vdev *d, uint64_t want);
/* §3.1.1 step 7 for one queue (§4.1.5.1.3 modern, §4.1.4.8 legacy). max = 0: the device's size
 * (or qsize=). Returns the queue, or 0 after setting FAILED. */
struct virtq *vio_setup_vq(struct vdev *d, int index, unsigned max);
void vio_driver_ok(struct vdev *d); /* §3.1.1 step 8 */
void vio_fail(struct vdev *d);      /* sets FAILED */
void vio_reset(struct vdev *d);     /* writes 0 to device_status and waits for it (§4.1.4.3.2) */
uint8_t vio_status(struct vdev *d);
int vio_has(const struct vdev *d, int bit);
void vio_describe(const struct vdev *d); /* one line: where, transport, irq, features */

/* Device-specific configuration (§4.1.4.6 modern, with config_generation §2.3.1; §4.1.4.8
 * legacy). */
uint8_t vio_cfg8(struct vdev *d, uint32_t off);
uint16_t vio_cfg16(struct vdev *d, uint32_t off);
uint32_t vio_cfg32(struct vdev *d, uint32_t off);
uint64_t vio_cfg64(struct vdev *d, uint32_t off);
void vio_cfg_w32(struct vdev *d, uint32_t off, uint32_t v);

/* ---- virtqueues ---- */
struct vbuf {
    const volatile void *addr;
    uint32_t len;
};
/* Exposes out device-readable buffers then in device-writable ones as one chain (one
 * indirect descriptor when INDIRECT_DESC was negotiated and the chain is longer than one).
 * Returns 0, or -1 if the ring has no room. cookie (not 0) comes back from vq_get. */
int vq_add(struct virtq *vq, const struct vbuf *b, int out, int in, void *cookie);
/* Notifies the device of what vq_add published since the last kick, unless it asked not to
 * be (VRING_USED_F_NO_NOTIFY, or avail_event with EVENT_IDX, §2.4.9). */
void vq_kick(struct virtq *vq);
/* The next used buffer's cookie (and the bytes written to it), or 0 if there is none. A used
 * entry naming a descriptor that is not the head of a chain in flight ends the program
 * (exit code 4). */
void *vq_get(struct virtq *vq, uint32_t *len);
int vq_has_used(struct virtq *vq);
uint16_t vq_free(const struct virtq *vq);
/* Waits for a used buffer on vq (halting until an interrupt, or spinning with irq=poll).
 * Returns 1, or 0 after timeout_ms milliseconds. */
int vq_wait(struct virtq *vq, unsigned timeout_ms);
/* The same for any of n queues. */
int vq_wait_any(struct virtq **vqs, int n, unsigned timeout_ms);

/* ---- helpers ---- */
void *vio_alloc(uint32_t size, uint32_t align); /* zeroed, from a static pool; never freed */
uint32_t vio_tsc_khz(void);                      /* CPUID 0x40000010, the PIT, or khz= */
uint64_t vio_ms_to_cycles(unsigned ms);
uint64_t fnv1a64(uint64_t h, const volatile void *p, uint32_t n); /* start with FNV64_INIT */
#define FNV64_INIT 0xcbf29ce484222325ull
void vio_memcpy(volatile void *dst, const volatile void *src, uint32_t n);
void vio_memset(volatile void *dst, uint8_t v, uint32_t n);

#endif
