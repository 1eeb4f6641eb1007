/* vrng: the virtio entropy device (virtio 1.0 §5.4). Reads N bytes through requestq (queue 0)
 * in device-writable buffers, several in flight, and prints the FNV-1a 64-bit hash of the
 * bytes in the order the device returned them (with a seeded back end, a fixed value).
 *   bytes=N    how many bytes (default 4096)
 *   chunk=N    bytes per buffer (default 64)
 *   depth=N    buffers in flight (default 4)
 * plus the library's options (virtio.h). Output:
 *   vrng: bytes=N fnv1a64=HHHHHHHHHHHHHHHH
 *   result bytes=N requests=R kicks=K suppressed=S irqs=I
 *   vrng: PASS | vrng: FAIL */
#include "rt.h"
#include "virtio.h"

#define MAX_DEPTH 64

int main(void) {
    int failures = 0;
    vio_init("vrng");
    unsigned total = vio_opt_uint("bytes", 4096), chunk = vio_opt_uint("chunk", 64);
    unsigned depth = vio_opt_uint("depth", 4);
    if (depth > MAX_DEPTH)
        depth = MAX_DEPTH;
    if (!depth || !chunk)
        depth = 1, chunk = 64;
    struct vdev *d = vio_find(VIRTIO_ID_RNG, 0);
    if (!d) {
        printf("vrng: FAIL: no virtio-rng device\n");
        return 2;
    }
    struct virtq *vq;
    if (vio_start(d, 0) < 0 || !(vq = vio_setup_vq(d, 0, 0)))
        return 2;
    vio_driver_ok(d);
    vio_describe(d);
    if (depth > vq->num)
        depth = vq->num;

    uint8_t *bufs = vio_alloc(depth * chunk, 16);
    uint8_t *seen = vio_alloc(256, 1);
    static unsigned size[MAX_DEPTH]; /* bytes asked in each buffer */
    uint64_t h = FNV64_INIT;
    unsigned got = 0, pending = 0, inflight = 0, requests = 0, distinct = 0;
    for (unsigned i = 0; i < depth && pending < total; i++) {
        size[i] = total - pending < chunk ? total - pending : chunk;
        struct vbuf b = {bufs + i * chunk, size[i]};
        vq_add(vq, &b, 0, 1, bufs + i * chunk);
        pending += size[i], inflight++;
    }
    vq_kick(vq);
    while (inflight) {
        if (!vq_wait(vq, 10000)) {
            printf("vrng: FAIL: no buffer returned in 10 s (%u of %u bytes)\n", got, total);
            vio_fail(d);
            return 1;
        }
        uint32_t len;
        uint8_t *p;
        int refill = 0;
        while ((p = vq_get(vq, &len))) {
            unsigned slot = (unsigned)(p - bufs) / chunk;
            inflight--, requests++;
            pending -= size[slot];
            if (len > size[slot]) {
                printf("vrng: FAIL: device wrote %u bytes into a %u-byte buffer\n", len, size[slot]);
                failures++;
                len = size[slot];
            }
            h = fnv1a64(h, p, len);
            for (uint32_t i = 0; i < len; i++)
                if (!seen[p[i]]++)
                    distinct++;
            got += len;
            /* §5.4.6: the device may return fewer bytes than asked; ask again for the rest */
            if (got + pending < total) {
                unsigned want = total - got - pending;
                size[slot] = want < chunk ? want : chunk;
                struct vbuf b = {p, size[slot]};
                vq_add(vq, &b, 0, 1, p);
                pending += size[slot], inflight++, refill = 1;
            }
        }
        if (refill)
            vq_kick(vq);
    }
    printf("vrng: bytes=%u fnv1a64=%016llx distinct=%u\n", got, (unsigned long long)h, distinct);
    CHECK(got == total, "got %u bytes, wanted %u", got, total);
    CHECK(total < 64 || distinct > 1, "all %u bytes are the same value", got);
    printf("result bytes=%u requests=%u kicks=%u suppressed=%u irqs=%u\n", got, requests, vq->kicks,
           vq->kicks_suppressed, d->irqs);
    vio_reset(d);
    printf(failures ? "vrng: FAIL\n" : "vrng: PASS\n");
    return failures ? 1 : 0;
}
