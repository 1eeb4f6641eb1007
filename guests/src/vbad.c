/* vbad: a driver that breaks the virtio rules on purpose, one way per run, to show what a
 * back end does with bad input from a guest (virtio 1.0 §2.4 "driver MUST" rules). It sets
 * up the device as usual (lib/virtio.c), does the one bad thing, waits, reports what the
 * device did, then resets the device and checks that a correct request works again.
 *   case=addr      an entropy buffer at a guest-physical address past the end of RAM
 *                  (addr=GPA to choose it; default: 64 KiB past the end of RAM)
 *   case=loop      a descriptor chain whose next pointers form a loop (0 -> 1 -> 0)
 *   case=long      an indirect table with more descriptors than the queue holds
 *   case=nested    an indirect table that holds an indirect descriptor
 *   case=rodesc    a virtio-blk read whose data buffer is device-readable (the device is
 *                  asked to write into a read-only descriptor)
 *   case=qsize     a queue size that is not a power of 2 (modern transport)
 *   case=notify    a notification for queue 7, which does not exist
 *   case=usedidx   the driver moves the used ring's index backwards, then makes a request
 * Devices: virtio-rng, except case=rodesc (virtio-blk).
 * Output:
 *   vbad: case=C status=0xSS needs_reset=0|1 used=N config_irqs=I [blk_status=S]
 *   vbad: recovered=0|1
 *   vbad: PASS (the device reacted as the specification allows and works after a reset)
 * Exit codes: 0 pass, 1 the device did something else, 2 no device. */
#include "rt.h"
#include "virtio.h"

static int failures;

static inline void mmio_w16(uint32_t a, uint16_t v) { __asm__ volatile("movw %0, (%1)" ::"r"(v), "r"(a) : "memory"); }
static void w16(struct vreg r, uint32_t off, uint16_t v) {
    if (r.io)
        outw((uint16_t)(r.base + off), v);
    else
        mmio_w16(r.base + off, v);
}

/* Puts head into the available ring and moves idx (§2.4.6), bypassing vq_add's checks. */
static void publish(struct virtq *vq, uint16_t head) {
    vq->avail->ring[vq->avail_idx % vq->num] = head;
    __asm__ volatile("" ::: "memory");
    vq->avail->idx = ++vq->avail_idx;
    vq->added++;
}

/* Notifies queue q directly (§4.1.5.2), whatever the device said about notifications. */
static void notify(struct vdev *d, unsigned q) {
    if (d->modern) /* queue_notify_off = the queue index, as ACRN's and QEMU's devices have it */
        w16(d->notify, q * d->notify_mult, (uint16_t)q);
    else
        w16(d->common, 0x10, (uint16_t)q); /* legacy QUEUE_NOTIFY */
}

static void settle(void) { /* let the device model look (about 2 ms), interrupts on */
    uint64_t end = rdtsc() + vio_ms_to_cycles(2);
    __asm__ volatile("sti");
    while (rdtsc() < end)
        ;
    __asm__ volatile("cli");
}

static uint8_t buf[4096] __attribute__((aligned(4096)));
static struct vring_desc table[1024] __attribute__((aligned(16)));

/* A correct request after a reset: one rng buffer (or a blk read of one sector). */
static int works(struct vdev *d, int blk) {
    struct virtq *vq;
    d->nvqs = 0;
    vio_memset(&d->vq[0], 0, sizeof d->vq[0]); /* the driver's ring state starts over too */
    if (vio_start(d, 0) < 0 || !(vq = vio_setup_vq(d, 0, 0)))
        return 0;
    vio_driver_ok(d);
    static struct {
        uint32_t type, reserved;
        uint64_t sector;
    } hdr;
    static volatile uint8_t status;
    status = 0xFF;
    if (blk) {
        struct vbuf b[3] = {{&hdr, 16}, {buf, 512}, {&status, 1}};
        vq_add(vq, b, 1, 2, buf);
    } else {
        struct vbuf b = {buf, 64};
        vq_add(vq, &b, 0, 1, buf);
    }
    vq_kick(vq);
    if (!vq_wait(vq, 1000))
        return 0;
    return vq_get(vq, 0) == buf && (!blk || status == 0);
}

int main(void) {
    vio_init("vbad");
    char which[16] = "addr";
    vio_opt_str("case", which, sizeof which);
    int blk = vio_opt_is("case", "rodesc");
    struct vdev *d = vio_find(blk ? VIRTIO_ID_BLOCK : VIRTIO_ID_RNG, 0);
    if (!d) {
        printf("vbad: FAIL: no %s device\n", blk ? "virtio-blk" : "virtio-rng");
        return 2;
    }
    struct virtq *vq;
    if (vio_start(d, 0) < 0)
        return 2;
    if (vio_opt_is("case", "qsize")) {
        if (!d->modern) {
            printf("vbad: FAIL: case=qsize needs the modern transport\n");
            return 2;
        }
        w16(d->common, 0x16, 0);   /* queue_select */
        w16(d->common, 0x18, 100); /* queue_size: not a power of 2 */
    }
    if (!(vq = vio_setup_vq(d, 0, 0)) && !vio_opt_is("case", "qsize"))
        return 2;
    vio_driver_ok(d);
    vio_describe(d);
    uint32_t ram_end = (rt_mbi->mem_upper + 1024) * 1024;
    uint32_t bad = vio_opt_uint("addr", ram_end + 0x10000);
    uint16_t used_before = vq ? vq->used->idx : 0;
    volatile uint8_t blk_status = 0xFF;

    if (vio_opt_is("case", "addr")) {
        vq->desc[0] = (struct vring_desc){bad, 256, VRING_DESC_F_WRITE, 0};
        publish(vq, 0);
        notify(d, 0);
    } else if (vio_opt_is("case", "loop")) {
        vq->desc[0] = (struct vring_desc){(uint32_t)(ureg)buf, 16, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 1};
        vq->desc[1] = (struct vring_desc){(uint32_t)(ureg)buf + 16, 16, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 0};
        publish(vq, 0);
        notify(d, 0);
    } else if (vio_opt_is("case", "long") || vio_opt_is("case", "nested")) {
        if (!vio_has(d, VIRTIO_RING_F_INDIRECT_DESC)) {
            printf("vbad: FAIL: the device did not offer VIRTIO_RING_F_INDIRECT_DESC\n");
            return 2;
        }
        unsigned n = vio_opt_is("case", "long") ? vq->num + 1 : 2;
        for (unsigned i = 0; i < n; i++)
            table[i] = (struct vring_desc){(uint32_t)(ureg)buf + 8 * i, 8,
                                           (uint16_t)(VRING_DESC_F_WRITE | (i + 1 < n ? VRING_DESC_F_NEXT : 0)),
                                           (uint16_t)(i + 1)};
        if (vio_opt_is("case", "nested"))
            table[1] = (struct vring_desc){(uint32_t)(ureg)&table[8], 32, VRING_DESC_F_INDIRECT, 0};
        vq->desc[0] = (struct vring_desc){(uint32_t)(ureg)table, n * 16, VRING_DESC_F_INDIRECT, 0};
        publish(vq, 0);
        notify(d, 0);
    } else if (blk) {
        static struct {
            uint32_t type, reserved;
            uint64_t sector;
        } hdr = {0, 0, 0}; /* VIRTIO_BLK_T_IN */
        vq->desc[0] = (struct vring_desc){(uint32_t)(ureg)&hdr, 16, VRING_DESC_F_NEXT, 1};
        vq->desc[1] = (struct vring_desc){(uint32_t)(ureg)buf, 512, VRING_DESC_F_NEXT, 2}; /* no WRITE */
        vq->desc[2] = (struct vring_desc){(uint32_t)(ureg)&blk_status, 1, VRING_DESC_F_WRITE, 0};
        publish(vq, 0);
        notify(d, 0);
    } else if (vio_opt_is("case", "notify")) {
        notify(d, 7);
    } else if (vio_opt_is("case", "usedidx")) {
        struct vbuf b = {buf, 64};
        vq_add(vq, &b, 0, 1, buf);
        vq_kick(vq);
        if (!vq_wait(vq, 1000) || !vq_get(vq, 0)) {
            printf("vbad: FAIL: the first request did not complete\n");
            return 1;
        }
        used_before = vq->used->idx;
        vq->used->idx = (uint16_t)(used_before - 1); /* the driver writes the used ring */
        vq->last_used--;
        used_before = vq->used->idx;
        vq_add(vq, &b, 0, 1, buf);
        notify(d, 0);
    } else if (!vio_opt_is("case", "qsize")) {
        printf("vbad: FAIL: unknown case\n");
        return 2;
    }
    settle();
    uint8_t status = vio_status(d);
    int needs_reset = !!(status & VIRTIO_STATUS_NEEDS_RESET);
    unsigned used = vq ? (uint16_t)(vq->used->idx - used_before) : 0;
    printf("vbad: case=%s status=0x%x needs_reset=%d used=%u config_irqs=%u", which, status,
           needs_reset, used, d->config_irqs);
    if (blk)
        printf(" blk_status=%u", blk_status);
    printf("\n");
    if (blk) /* the request fails with VIRTIO_BLK_S_IOERR; the device goes on */
        CHECK(!needs_reset && used == 1 && blk_status == 1, "rodesc: status %u", blk_status);
    else if (vio_opt_is("case", "notify")) /* ignored */
        CHECK(!needs_reset && used == 0, "notify: the device changed");
    else /* a broken ring: DEVICE_NEEDS_RESET, nothing used */
        CHECK(needs_reset && used == 0, "the device did not ask for a reset");
    vio_reset(d);
    int ok = works(d, blk);
    printf("vbad: recovered=%d\n", ok);
    CHECK(ok, "the device did not work again after a reset");
    vio_reset(d);
    printf(failures ? "vbad: FAIL\n" : "vbad: PASS\n");
    return failures ? 1 : 0;
}
