/* vbench: virtio request throughput and latency at a given batch size and queue depth.
 *   dev=blk|rng  the device (default blk): virtio-blk reads or writes, or virtio-rng reads
 *   n=N          requests (default 1000)
 *   batch=N      requests made available per notification (default 1)
 *   depth=N      requests in flight at most (default 1; raised to batch if smaller)
 *   op=read|write  (blk; default read)
 *   bs=N         bytes per request (default 4096; blk: a multiple of 512)
 *   start=S span=N  blk: requests walk sectors S .. S+N-1 (default 0 and 2048), wrapping
 * plus the library's options (virtio.h). A request's latency runs from just before vq_add to
 * the moment the driver sees it in the used ring, in TSC cycles (RDTSC); the rate divides by
 * the TSC frequency (CPUID leaf 0x40000010 under a hypervisor that has it, else the PIT).
 * Output:
 *   vbench: dev=blk op=read bs=4096 n=1000 batch=1 depth=1
 *   vbench: R requests/s; latency cycles min=.. avg=.. p50=.. p99=.. max=..
 *   result reqs=N batch=B depth=D bs=S khz=F cycles=C rps=R lat_min=.. lat_avg=.. lat_p50=..
 *          lat_p99=.. lat_max=.. kicks=K suppressed=S irqs=I errors=E     (one line)
 *   vbench: PASS | vbench: FAIL */
#include "rt.h"
#include "virtio.h"

#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1
#define MAX_DEPTH 128

struct req {
    struct {
        uint32_t type, reserved;
        uint64_t sector;
    } hdr;
    volatile uint8_t status;
    uint64_t t0;
};

static int failures;

static void sort(uint32_t *a, unsigned n) { /* Shell sort, Ciura's gaps */
    static const unsigned gaps[] = {701, 301, 132, 57, 23, 10, 4, 1};
    for (unsigned g = 0; g < sizeof gaps / sizeof gaps[0]; g++)
        for (unsigned i = gaps[g]; i < n; i++) {
            uint32_t v = a[i];
            unsigned j = i;
            for (; j >= gaps[g] && a[j - gaps[g]] > v; j -= gaps[g])
                a[j] = a[j - gaps[g]];
            a[j] = v;
        }
}

static uint32_t pct(const uint32_t *a, unsigned n, unsigned p) {
    unsigned i = (n * p + 99) / 100;
    return n ? a[i ? i - 1 : 0] : 0;
}

int main(void) {
    vio_init("vbench");
    int rng = vio_opt_is("dev", "rng"), write = vio_opt_is("op", "write");
    unsigned n = vio_opt_uint("n", 1000), batch = vio_opt_uint("batch", 1);
    unsigned depth = vio_opt_uint("depth", 1), bs = vio_opt_uint("bs", 4096);
    unsigned start = vio_opt_uint("start", 0), span = vio_opt_uint("span", 2048);
    if (!n)
        n = 1;
    if (batch < 1)
        batch = 1;
    if (depth < batch)
        depth = batch;
    if (depth > MAX_DEPTH)
        depth = MAX_DEPTH, batch = batch > depth ? depth : batch;
    if (!rng && (bs < 512 || bs % 512))
        bs = 4096;
    if (rng && (bs < 1 || bs > 65536))
        bs = 4096;

    struct vdev *d = vio_find(rng ? VIRTIO_ID_RNG : VIRTIO_ID_BLOCK, 0);
    if (!d) {
        printf("vbench: FAIL: no %s device\n", rng ? "virtio-rng" : "virtio-blk");
        return 2;
    }
    struct virtq *vq;
    if (vio_start(d, 0) < 0 || !(vq = vio_setup_vq(d, 0, 0)))
        return 2;
    vio_driver_ok(d);
    vio_describe(d);
    unsigned per_req = rng ? 1 : vio_has(d, VIRTIO_RING_F_INDIRECT_DESC) ? 1 : 3;
    if (depth * per_req > vq->num) {
        depth = vq->num / per_req;
        batch = batch > depth ? depth : batch;
    }
    if (!rng) {
        uint64_t cap = vio_cfg64(d, 0);
        if ((uint64_t)start + span > cap)
            span = cap > start ? (unsigned)(cap - start) : 0;
        if (span < bs / 512) {
            printf("vbench: FAIL: disk too small (%llu sectors)\n", (unsigned long long)cap);
            return 2;
        }
    }
    uint32_t khz = vio_tsc_khz();
    printf("vbench: dev=%s op=%s bs=%u n=%u batch=%u depth=%u\n", rng ? "rng" : "blk",
           rng ? "read" : write ? "write" : "read", bs, n, batch, depth);

    struct req *reqs = vio_alloc(depth * sizeof(struct req), 16);
    uint8_t *data = vio_alloc(depth * bs, 4096);
    uint32_t *lat = vio_alloc(n * 4, 4);
    static uint16_t free_slot[MAX_DEPTH];
    unsigned nfree = depth, inflight = 0, submitted = 0, done = 0, errors = 0;
    uint64_t sector = start;
    for (unsigned i = 0; i < depth; i++)
        free_slot[i] = (uint16_t)i;
    vio_memset(data, 0xA5, depth * bs);

    uint64_t t_start = rdtsc();
    while (done < n) {
        unsigned k = n - submitted < batch ? n - submitted : batch;
        if (k && nfree >= k) {
            for (unsigned i = 0; i < k; i++) {
                unsigned s = free_slot[--nfree];
                struct req *r = &reqs[s];
                uint8_t *buf = data + s * bs;
                r->t0 = rdtsc();
                if (rng) {
                    struct vbuf b = {buf, bs};
                    vq_add(vq, &b, 0, 1, r);
                } else {
                    r->hdr.type = write ? VIRTIO_BLK_T_OUT : VIRTIO_BLK_T_IN;
                    r->hdr.reserved = 0;
                    r->hdr.sector = sector;
                    r->status = 0xFF;
                    sector += bs / 512;
                    if (sector + bs / 512 > (uint64_t)start + span)
                        sector = start;
                    struct vbuf b[3] = {{&r->hdr, 16}, {buf, bs}, {&r->status, 1}};
                    vq_add(vq, b, write ? 2 : 1, write ? 1 : 2, r);
                }
                submitted++, inflight++;
            }
            vq_kick(vq);
            continue; /* room for another batch? */
        }
        if (!vq_wait(vq, 10000)) {
            printf("vbench: FAIL: %u requests not completed in 10 s\n", inflight);
            vio_fail(d);
            return 1;
        }
        uint64_t now = rdtsc();
        struct req *r;
        while ((r = vq_get(vq, 0))) {
            uint64_t l = now - r->t0;
            lat[done++] = l > 0xFFFFFFFFu ? 0xFFFFFFFFu : (uint32_t)l;
            inflight--;
            free_slot[nfree++] = (uint16_t)(r - reqs);
            if (!rng && r->status != 0)
                errors++;
        }
    }
    uint64_t cycles = rdtsc() - t_start;

    uint64_t sum = 0;
    for (unsigned i = 0; i < n; i++)
        sum += lat[i];
    sort(lat, n);
    uint32_t avg = (uint32_t)udivmod64(sum, n, 0);
    uint32_t rps = (uint32_t)udivmod64((uint64_t)n * khz * 1000, cycles ? cycles : 1, 0);
    printf("vbench: %u requests/s; latency cycles min=%u avg=%u p50=%u p99=%u max=%u\n", rps,
           lat[0], avg, pct(lat, n, 50), pct(lat, n, 99), lat[n - 1]);
    CHECK(errors == 0, "%u requests failed", errors);
    printf("result reqs=%u batch=%u depth=%u bs=%u khz=%u cycles=%llu rps=%u lat_min=%u "
           "lat_avg=%u lat_p50=%u lat_p99=%u lat_max=%u kicks=%u suppressed=%u irqs=%u "
           "errors=%u\n",
           n, batch, depth, bs, khz, (unsigned long long)cycles, rps, lat[0], avg,
           pct(lat, n, 50), pct(lat, n, 99), lat[n - 1], vq->kicks, vq->kicks_suppressed,
           d->irqs, errors);
    vio_reset(d);
    printf(failures ? "vbench: FAIL\n" : "vbench: PASS\n");
    return failures ? 1 : 0;
}
