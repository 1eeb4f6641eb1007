/* sensor: a driver for the DMA sensor (sim/devices/dma_sensor.py; registers in lib/sensor.h),
 * or for the same sensor behind virtio (a virtio entropy device, -s N,virtio-sensor). It makes
 * n requests of len bytes one after the other: posts a buffer, rings the doorbell, halts until
 * the completion interrupt, and checks the sample's bytes. Each request's latency is the TSC
 * from just before the doorbell to the moment the driver sees the completed buffer.
 *   dev=sensor|virtio   which interface (default sensor: the register interface, passed
 *                       through or emulated by the device model)
 *   n=N                 requests (default 100, at most 2000)
 *   len=N               bytes per sample (default 64, at most 4096)
 *   x2apic=1            use the x2APIC (MSRs): a LAPIC-passthrough RTVM needs it
 *   stream=N            instead: stream mode, N samples at the device's period, then stop
 *   quiet=1             no per-request lines
 * Output: "lat I CYCLES" per request (printed after them all), then
 *   result n=N p50=C p99=C max=C khz=K errors=E msis=M t0=TSC t1=TSC
 * t0 and t1 bound the measured requests (the first doorbell, the last completion).
 *   sensor: PASS | sensor: FAIL */
#include "rt.h"
#include "pci.h"
#include "sensor.h"
#include "virtio.h"

#define VECTOR 0x30
#define MAX_N 2000
#define RING 16
#define MSR_APIC_BASE 0x1B
#define MSR_X2APIC_EOI 0x80B
#define MSR_X2APIC_SVR 0x80F
#define MSR_X2APIC_ID 0x802
#define XAPIC 0xFEE00000u

static struct pci_dev devs[32];
static volatile uint32_t irqs, done;
static uint32_t bar;
static int x2apic;
static uint64_t lat[MAX_N];
static uint64_t t_first, t_last; /* the measured window: the first doorbell, the last completion */

static void eoi(void) {
    if (x2apic)
        wrmsr(MSR_X2APIC_EOI, 0);
    else
        mmio_wr32(XAPIC + 0xB0, 0);
}

static void on_msi(struct frame *f) {
    (void)f;
    uint32_t intr = mmio_rd32(bar + S_INTR); /* what happened; W1C acknowledges it */
    mmio_wr32(bar + S_INTR, intr);
    irqs++;
    done = 1;
    eoi();
}

static uint32_t apic_setup(void) {
    if (x2apic) {
        wrmsr(MSR_APIC_BASE, rdmsr(MSR_APIC_BASE) | 0xC00); /* EN | EXTD */
        wrmsr(MSR_X2APIC_SVR, 0x1FF);
        return (uint32_t)rdmsr(MSR_X2APIC_ID);
    }
    mmio_wr32(XAPIC + 0xF0, 0x1FF); /* SVR: software enable, spurious vector 0xFF */
    return mmio_rd32(XAPIC + 0x20) >> 24;
}

static void wait_done(void) {
    cli();
    while (!done)
        __asm__ volatile("sti; hlt; cli"); /* STI's shadow: no wake-up is lost */
    sti();
}

static void sort(uint64_t *v, unsigned n) {
    for (unsigned i = 1; i < n; i++) {
        uint64_t x = v[i];
        unsigned j = i;
        for (; j && v[j - 1] > x; j--)
            v[j] = v[j - 1];
        v[j] = x;
    }
}

static int check(const volatile uint8_t *p, uint32_t seq, uint32_t n) {
    for (uint32_t i = 0; i < n; i++)
        if (p[i] != (uint8_t)(seq * 7 + i))
            return 0;
    return 1;
}

static int run_sensor(unsigned n, unsigned len, unsigned quiet, unsigned *errors) {
    int np = pci_scan(devs, 32);
    int k = sensor_find(devs, np);
    if (k < 0) {
        printf("sensor: FAIL: no DMA sensor on bus 0\n");
        return -1;
    }
    bar = (uint32_t)devs[k].bar[0].addr;
    set_handler(VECTOR, on_msi);
    uint32_t apic_id = apic_setup();
    if (!sensor_enable(&devs[k], apic_id, VECTOR)) {
        printf("sensor: FAIL: no MSI capability\n");
        return -1;
    }
    if (mmio_rd32(bar + S_ID) != SENSOR_ID_VALUE) {
        printf("sensor: FAIL: BAR0 at %x reads id %x\n", bar, mmio_rd32(bar + S_ID));
        return -1;
    }
    printf("sensor: 00:%02x.%x BAR0 %x, MSI vector %x to APIC %u\n", devs[k].dev, devs[k].fn, bar,
           VECTOR, apic_id);
    struct sensor_desc *ring = vio_alloc(sizeof(struct sensor_desc) * RING, 64);
    uint8_t *bufs = vio_alloc(RING * len, 64);
    sensor_start(bar, ring, RING, len, S_CTRL_EN | S_CTRL_IRQ_EN);
    sti();
    for (unsigned i = 0; i < n; i++) {
        struct sensor_desc *d = &ring[i % RING];
        d->addr = (uint32_t)(ureg)(bufs + (i % RING) * len);
        d->len = len;
        d->flags = 0;
        done = 0;
        uint64_t t0 = rdtsc();
        mmio_wr32(bar + S_TAIL, i + 1); /* the doorbell: descriptor i is the device's */
        wait_done();
        while (!(d->flags & S_DESC_DONE))
            ;
        t_last = rdtsc();
        lat[i] = t_last - t0;
        if (!i)
            t_first = t0;
        if ((d->flags & S_DESC_ERR) || d->written != len ||
            !check(bufs + (i % RING) * len, d->seq, len))
            (*errors)++;
    }
    (void)quiet;
    mmio_wr32(bar + S_CTRL, 0);
    return 0;
}

static int run_stream(unsigned samples, unsigned len, unsigned *errors) {
    int np = pci_scan(devs, 32);
    int k = sensor_find(devs, np);
    if (k < 0) {
        printf("sensor: FAIL: no DMA sensor on bus 0\n");
        return -1;
    }
    bar = (uint32_t)devs[k].bar[0].addr;
    set_handler(VECTOR, on_msi);
    sensor_enable(&devs[k], apic_setup(), VECTOR);
    struct sensor_desc *ring = vio_alloc(sizeof(struct sensor_desc) * RING, 64);
    uint8_t *bufs = vio_alloc(RING * len, 64);
    for (unsigned i = 0; i < RING; i++) {
        ring[i].addr = (uint32_t)(ureg)(bufs + i * len);
        ring[i].len = len;
    }
    sensor_start(bar, ring, RING, len, S_CTRL_EN | S_CTRL_IRQ_EN | S_CTRL_STREAM);
    mmio_wr32(bar + S_TAIL, RING);
    sti();
    unsigned got = 0, tail = RING;
    while (got < samples) {
        struct sensor_desc *d = &ring[got % RING];
        done = 0;
        if (!(d->flags & S_DESC_DONE))
            wait_done();
        if (!(d->flags & S_DESC_DONE))
            continue;
        if (d->written != len || !check(bufs + (got % RING) * len, d->seq, len))
            (*errors)++;
        d->flags = 0;
        mmio_wr32(bar + S_TAIL, ++tail); /* give the descriptor back */
        got++;
    }
    mmio_wr32(bar + S_CTRL, 0);
    printf("sensor: stream samples=%u seq=%u drops=%u\n", got, mmio_rd32(bar + S_SEQ),
           mmio_rd32(bar + S_DROPS));
    return 0;
}

static int run_virtio(unsigned n, unsigned len, unsigned quiet, unsigned *errors) {
    struct vdev *d = vio_find(VIRTIO_ID_RNG, 0);
    if (!d) {
        printf("sensor: FAIL: no virtio entropy device\n");
        return -1;
    }
    struct virtq *vq;
    if (vio_start(d, 0) < 0 || !(vq = vio_setup_vq(d, 0, 0)))
        return -1;
    vio_driver_ok(d);
    vio_describe(d);
    uint8_t *buf = vio_alloc(len, 64);
    for (unsigned i = 0; i < n; i++) {
        struct vbuf b = {buf, len};
        vq_add(vq, &b, 0, 1, buf);
        uint64_t t0 = rdtsc();
        vq_kick(vq);
        if (!vq_wait(vq, 10000)) {
            printf("sensor: FAIL: request %u not returned in 10 s\n", i);
            return -1;
        }
        uint32_t got;
        vq_get(vq, &got);
        t_last = rdtsc();
        lat[i] = t_last - t0;
        if (!i)
            t_first = t0;
        if (got != len || !check(buf, i, len))
            (*errors)++;
    }
    (void)quiet;
    irqs = d->irqs;
    vio_reset(d);
    return 0;
}

int main(void) {
    unsigned errors = 0;
    int virt = vio_opt_is("dev", "virtio");
    unsigned n = vio_opt_uint("n", 100), len = vio_opt_uint("len", 64);
    unsigned quiet = vio_opt_uint("quiet", 0), stream = vio_opt_uint("stream", 0);
    x2apic = (int)vio_opt_uint("x2apic", 0);
    if (n > MAX_N)
        n = MAX_N;
    if (!len || len > 4096)
        len = 64;
    if (virt) {
        vio_init("sensor");
    } else {
        serial_init();
        idt_init();
    }
    int r = stream ? run_stream(stream, len, &errors)
            : virt ? run_virtio(n, len, quiet, &errors)
                   : run_sensor(n, len, quiet, &errors);
    if (r < 0)
        return 2;
    if (!stream) {
        /* printed after the measured requests, so that the console's exits are not in them */
        if (!quiet)
            for (unsigned i = 0; i < n; i++)
                printf("lat %u %lu\n", i, (unsigned long)lat[i]);
        sort(lat, n);
        printf("result n=%u p50=%lu p99=%lu max=%lu khz=%u errors=%u msis=%u t0=%llu t1=%llu\n",
               n, (unsigned long)lat[(n - 1) / 2], (unsigned long)lat[(n * 99 + 99) / 100 - 1],
               (unsigned long)lat[n - 1], vio_tsc_khz(), errors, irqs,
               (unsigned long long)t_first, (unsigned long long)t_last);
    }
    printf(errors ? "sensor: FAIL\n" : "sensor: PASS\n");
    return errors ? 1 : 0;
}
