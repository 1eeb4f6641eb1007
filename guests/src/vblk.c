/* vblk: the virtio block device (virtio 1.0 §5.2; request types as in linux
 * include/uapi/linux/virtio_blk.h). Each request is a chain: a 16-byte header (type, reserved,
 * sector) the device reads, the data (read by the device for a write, written for a read) and
 * a status byte it writes.
 *   n=N          sectors (default 1000), from sector start=S (default 0)
 *   spr=N        sectors per request (default 8, at most 64)
 *   depth=N      requests in flight (default 8)
 *   seed=N       pattern seed (default 1)
 *   mode=rw      (default) write the pattern, VIRTIO_BLK_T_FLUSH if offered, read back, verify
 *   mode=read    only read the n sectors and print their checksum
 *   ro=1         the disk must be read-only: VIRTIO_BLK_F_RO offered, a write must fail with
 *                VIRTIO_BLK_S_IOERR; then the sectors are read and checksummed
 *   serial=STR   the serial VIRTIO_BLK_T_GET_ID must return
 * plus the library's options (virtio.h). The pattern: sector L, 32-bit little-endian word j
 * (0..127) is w = L*0x9E3779B1 + j*0x85EBCA77 + seed*0xC2B2AE3D (mod 2^32), then w ^= w >> 16.
 * Output:
 *   vblk: capacity=C sectors blk_size=B ro=0|1 flush=0|1
 *   vblk: serial='...' (status S)
 *   vblk: write to a read-only disk: status=1          (ro=1)
 *   vblk: flush status=0                               (when VIRTIO_BLK_F_FLUSH was negotiated)
 *   vblk: checksum start=S sectors=N fnv1a64=H         (FNV-1a 64 of the bytes, in order)
 *   result sectors=N writes=W reads=R kicks=K suppressed=S irqs=I indirect=D errors=E
 *   vblk: PASS | vblk: FAIL */
#include "rt.h"
#include "virtio.h"

#define VIRTIO_BLK_F_RO 5
#define VIRTIO_BLK_F_BLK_SIZE 6
#define VIRTIO_BLK_F_FLUSH 9
#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1
#define VIRTIO_BLK_T_FLUSH 4
#define VIRTIO_BLK_T_GET_ID 8
#define VIRTIO_BLK_S_OK 0
#define VIRTIO_BLK_S_IOERR 1
#define VIRTIO_BLK_S_UNSUPP 2
#define SECTOR 512
#define WINDOW 1024 /* sectors buffered at once */

struct blk_hdr {
    uint32_t type, reserved;
    uint64_t sector;
};
struct req {
    struct blk_hdr hdr;
    volatile uint8_t status;
    uint32_t data_len;
};

static struct vdev *d;
static struct virtq *vq;
static struct req *reqs;
static unsigned depth, spr, seed;
static int failures;
static unsigned writes, reads, errors;

static uint32_t pattern(uint64_t lba, unsigned j) {
    uint32_t w = (uint32_t)lba * 0x9E3779B1u + j * 0x85EBCA77u + seed * 0xC2B2AE3Du;
    return w ^ (w >> 16);
}

/* One request in slot r; data 0 for none. */
static void submit(struct req *r, uint32_t type, uint64_t sector, void *data, uint32_t len) {
    r->hdr.type = type;
    r->hdr.reserved = 0;
    r->hdr.sector = sector;
    r->status = 0xFF;
    r->data_len = len;
    struct vbuf b[3];
    int n = 0;
    b[n++] = (struct vbuf){&r->hdr, sizeof r->hdr};
    if (len)
        b[n++] = (struct vbuf){data, len};
    b[n++] = (struct vbuf){&r->status, 1};
    int out = type == VIRTIO_BLK_T_OUT ? n - 1 : 1;
    if (vq_add(vq, b, out, n - out, r) < 0) {
        printf("vblk: FAIL: no room in the ring\n");
        exit(1);
    }
}

/* Waits for slot r's request alone and returns its status. */
static uint8_t wait_one(struct req *r) {
    vq_kick(vq);
    struct req *got;
    uint32_t len;
    while (!(got = vq_get(vq, &len)))
        if (!vq_wait(vq, 10000)) {
            printf("vblk: FAIL: request type %u: no completion in 10 s\n", r->hdr.type);
            vio_fail(d);
            exit(1);
        }
    CHECK(got == r, "completion for another request");
    return r->status;
}

/* Moves count sectors from first between the disk and buf (sector first + i at buf + i*512),
 * spr sectors per request, up to depth requests in flight. Returns the failed requests. */
static unsigned transfer(uint32_t type, uint64_t first, unsigned count, uint8_t *buf) {
    static uint16_t free_slot[64];
    unsigned nfree = depth, inflight = 0, bad = 0;
    uint64_t next = first, end = first + count;
    for (unsigned i = 0; i < depth; i++)
        free_slot[i] = (uint16_t)i;
    while (next < end || inflight) {
        int added = 0;
        while (next < end && nfree && vq_free(vq) >= 3) {
            struct req *r = &reqs[free_slot[--nfree]];
            unsigned nsec = end - next < spr ? (unsigned)(end - next) : spr;
            submit(r, type, next, buf + (next - first) * SECTOR, nsec * SECTOR);
            next += nsec, inflight++, added = 1;
            if (type == VIRTIO_BLK_T_OUT)
                writes++;
            else
                reads++;
        }
        if (added)
            vq_kick(vq);
        if (!vq_wait(vq, 10000)) {
            printf("vblk: FAIL: %u requests not completed in 10 s\n", inflight);
            vio_fail(d);
            exit(1);
        }
        struct req *r;
        uint32_t len;
        while ((r = vq_get(vq, &len))) {
            inflight--;
            free_slot[nfree++] = (uint16_t)(r - reqs);
            /* the device wrote the status byte, and for a read the data before it */
            uint32_t expect = 1 + (type == VIRTIO_BLK_T_IN ? r->data_len : 0);
            if (r->status != VIRTIO_BLK_S_OK || len != expect) {
                if (bad++ < 5)
                    printf("vblk: FAIL: %s sector %llu: status %u, used len %u (expected %u)\n",
                           type == VIRTIO_BLK_T_IN ? "read" : "write",
                           (unsigned long long)r->hdr.sector, r->status, len, expect);
            }
        }
    }
    return bad;
}

int main(void) {
    vio_init("vblk");
    unsigned n = vio_opt_uint("n", 1000), start = vio_opt_uint("start", 0);
    spr = vio_opt_uint("spr", 8);
    depth = vio_opt_uint("depth", 8);
    seed = vio_opt_uint("seed", 1);
    int ro = (int)vio_opt_uint("ro", 0), read_only_mode = vio_opt_is("mode", "read");
    if (spr < 1 || spr > 64)
        spr = 8;
    if (depth < 1 || depth > 64)
        depth = 8;

    d = vio_find(VIRTIO_ID_BLOCK, 0);
    if (!d) {
        printf("vblk: FAIL: no virtio-blk device\n");
        return 2;
    }
    if (vio_start(d, BIT(VIRTIO_BLK_F_RO) | BIT(VIRTIO_BLK_F_BLK_SIZE) | BIT(VIRTIO_BLK_F_FLUSH)) < 0 ||
        !(vq = vio_setup_vq(d, 0, 0)))
        return 2;
    vio_driver_ok(d);
    vio_describe(d);
    if (depth * 3 > vq->num && !vio_has(d, VIRTIO_RING_F_INDIRECT_DESC))
        depth = vq->num / 3;
    if (depth > vq->num)
        depth = vq->num;

    /* struct virtio_blk_config (§5.2.4): capacity at 0 (512-byte sectors), blk_size at 20 */
    uint64_t capacity = vio_cfg64(d, 0);
    uint32_t blk_size = vio_has(d, VIRTIO_BLK_F_BLK_SIZE) ? vio_cfg32(d, 20) : SECTOR;
    printf("vblk: capacity=%llu sectors blk_size=%u ro=%d flush=%d\n",
           (unsigned long long)capacity, blk_size, vio_has(d, VIRTIO_BLK_F_RO),
           vio_has(d, VIRTIO_BLK_F_FLUSH));
    CHECK((uint64_t)start + n <= capacity, "sectors %u..%u beyond the capacity", start, start + n);
    if ((uint64_t)start + n > capacity)
        n = capacity > start ? (unsigned)(capacity - start) : 0;

    reqs = vio_alloc(depth * sizeof(struct req), 16);
    uint8_t *buf = vio_alloc(WINDOW * SECTOR, 4096);

    /* VIRTIO_BLK_T_GET_ID: up to 20 bytes of serial, NUL-terminated if shorter */
    {
        char *id = vio_alloc(21, 4);
        submit(&reqs[0], VIRTIO_BLK_T_GET_ID, 0, id, 20);
        uint8_t st = wait_one(&reqs[0]);
        printf("vblk: serial='%s' (status %u)\n", st == VIRTIO_BLK_S_OK ? id : "", st);
        char want[21];
        if (vio_opt_str("serial", want, sizeof want)) {
            int same = st == VIRTIO_BLK_S_OK;
            for (int i = 0; same && (want[i] || id[i]); i++)
                same = want[i] == id[i];
            CHECK(same, "serial '%s', expected '%s'", id, want);
        }
    }

    if (ro) {
        CHECK(vio_has(d, VIRTIO_BLK_F_RO), "ro=1 but VIRTIO_BLK_F_RO not offered");
        vio_memset(buf, 0x5A, SECTOR);
        submit(&reqs[0], VIRTIO_BLK_T_OUT, start, buf, SECTOR);
        uint8_t st = wait_one(&reqs[0]);
        printf("vblk: write to a read-only disk: status=%u\n", st);
        CHECK(st == VIRTIO_BLK_S_IOERR, "write to a read-only disk: status %u, expected IOERR", st);
        writes++;
    } else if (!read_only_mode) {
        CHECK(!vio_has(d, VIRTIO_BLK_F_RO), "the disk is read-only (VIRTIO_BLK_F_RO)");
        for (unsigned s = 0; s < n; s += WINDOW) {
            unsigned cnt = n - s < WINDOW ? n - s : WINDOW;
            uint32_t *w = (uint32_t *)buf;
            for (unsigned k = 0; k < cnt; k++)
                for (unsigned j = 0; j < SECTOR / 4; j++)
                    w[k * SECTOR / 4 + j] = pattern(start + s + k, j);
            errors += transfer(VIRTIO_BLK_T_OUT, start + s, cnt, buf);
        }
        if (vio_has(d, VIRTIO_BLK_F_FLUSH)) {
            submit(&reqs[0], VIRTIO_BLK_T_FLUSH, 0, 0, 0);
            uint8_t st = wait_one(&reqs[0]);
            printf("vblk: flush status=%u\n", st);
            CHECK(st == VIRTIO_BLK_S_OK, "flush status %u", st);
        }
    }

    /* Read back (verifying the pattern unless only reading) and checksum in sector order. */
    uint64_t h = FNV64_INIT;
    unsigned mismatches = 0;
    int verify = !ro && !read_only_mode;
    for (unsigned s = 0; s < n; s += WINDOW) {
        unsigned cnt = n - s < WINDOW ? n - s : WINDOW;
        vio_memset(buf, 0xEE, cnt * SECTOR);
        errors += transfer(VIRTIO_BLK_T_IN, start + s, cnt, buf);
        h = fnv1a64(h, buf, cnt * SECTOR);
        const uint32_t *w = (const uint32_t *)buf;
        for (unsigned k = 0; verify && k < cnt; k++)
            for (unsigned j = 0; j < SECTOR / 4; j++)
                if (w[k * SECTOR / 4 + j] != pattern(start + s + k, j)) {
                    if (mismatches++ < 5)
                        printf("vblk: FAIL: sector %u word %u: %x, expected %x\n", start + s + k,
                               j, w[k * SECTOR / 4 + j], pattern(start + s + k, j));
                    break;
                }
    }
    printf("vblk: checksum start=%u sectors=%u fnv1a64=%016llx\n", start, n, (unsigned long long)h);
    CHECK(errors == 0, "%u requests failed", errors);
    CHECK(mismatches == 0, "%u sectors read back wrong", mismatches);
    printf("result sectors=%u writes=%u reads=%u kicks=%u suppressed=%u irqs=%u indirect=%u "
           "errors=%u\n",
           n, writes, reads, vq->kicks, vq->kicks_suppressed, d->irqs, vq->indirect_used,
           errors + mismatches);
    vio_reset(d);
    printf(failures ? "vblk: FAIL\n" : "vblk: PASS\n");
    return failures ? 1 : 0;
}
