/* vnet: the virtio network device (virtio 1.0 §5.1). Exchanges N numbered frames with a peer
 * and checks every one. A "ping" NIC sends requests (at most window=N unanswered); the "pong"
 * NIC checks each and sends it back as a reply, which the ping NIC checks in turn.
 *   role=pair    (default) two NICs in this VM on one switch: NIC 0 pings NIC 1
 *   role=ping    one NIC; the peer is another VM running role=pong. Request 0 goes to the
 *                broadcast address (every retry=MS, default 200) until a reply names the peer
 *   role=pong    one NIC; answers requests until request n-1 has been answered
 *   n=N          frames (default 1000); window=N (default 8); timeout=MS without progress
 *                before giving up (default 10000; ping and pong: 30000)
 * plus the library's options (virtio.h). Queues: receiveq 0, transmitq 1 (no control queue,
 * no offloads, no VIRTIO_NET_F_MRG_RXBUF): every buffer is a virtio_net_hdr (12 bytes with
 * VIRTIO_F_VERSION_1, else 10; §5.1.6) then a frame of up to 1514 bytes.
 * Frame: destination, source, EtherType 0x88B5 (IEEE local experimental), then little-endian
 * magic 0x54454E56, kind (0 request, 1 reply) and 3 zero bytes, seq, len, sum, and len payload
 * bytes; byte i of the payload of frame seq is (seq*7 + i*13 + i/256) mod 256, len is
 * 26 + (seq*131 mod 1400), and sum is the low 32 bits of the FNV-1a 64 of the payload.
 * Output:
 *   vnet: nicK mac=xx:xx:xx:xx:xx:xx link=up|down|unknown
 *   vnet: peer mac=xx:xx:xx:xx:xx:xx                     (role=ping)
 *   result packets=N dups=D kicks=K suppressed=S irqs=I indirect=D
 *   vnet: PASS | vnet: FAIL */
#include "rt.h"
#include "virtio.h"

#define VIRTIO_NET_F_MAC 5
#define VIRTIO_NET_F_STATUS 16
#define VIRTIO_NET_S_LINK_UP 1
#define ETHERTYPE 0x88B5
#define MAGIC 0x54454E56u
#define FRAME_MAX 1514
#define HDR_ROOM 16 /* room for the 10- or 12-byte header */
#define STRIDE (HDR_ROOM + FRAME_MAX + 6)
#define RXBUFS 64
#define TXSLOTS 32
#define NUDGE_MS 1000 /* without a frame for this long, notify every queue once more */
#define OFF_MAGIC 14
#define OFF_KIND 18
#define OFF_SEQ 22
#define OFF_LEN 26
#define OFF_SUM 30
#define OFF_PAYLOAD 34

enum { PING, PONG };

struct nic {
    struct vdev *d;
    struct virtq *rx, *tx;
    uint8_t mac[6], peer[6];
    int role, have_peer;
    unsigned hdr_len, expect, next, dups, other;
    uint8_t *rxmem, *txmem;
    uint16_t txfree[TXSLOTS];
    unsigned ntxfree;
};

static int failures;
static unsigned n, window;
static const uint8_t broadcast[6] = {0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF};

static uint32_t get32(const uint8_t *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }
static void put32(uint8_t *p, uint32_t v) { p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8), p[2] = (uint8_t)(v >> 16), p[3] = (uint8_t)(v >> 24); }
static int same_mac(const uint8_t *a, const uint8_t *b) {
    for (int i = 0; i < 6; i++)
        if (a[i] != b[i])
            return 0;
    return 1;
}
static uint32_t payload_len(uint32_t seq) { return 26 + (seq * 131) % 1400; }
static uint8_t payload_byte(uint32_t seq, uint32_t i) { return (uint8_t)(seq * 7 + i * 13 + (i >> 8)); }
static void print_mac(const uint8_t *m) {
    printf("%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
}

static int nic_open(struct nic *c, int index, int role) {
    c->role = role;
    c->d = vio_find(VIRTIO_ID_NET, index);
    if (!c->d) {
        printf("vnet: FAIL: no virtio-net device #%d\n", index);
        return -1;
    }
    struct vdev *d = c->d;
    if (vio_start(d, BIT(VIRTIO_NET_F_MAC) | BIT(VIRTIO_NET_F_STATUS)) < 0 ||
        !(c->rx = vio_setup_vq(d, 0, 0)) || !(c->tx = vio_setup_vq(d, 1, 0)))
        return -1;
    c->hdr_len = vio_has(d, VIRTIO_F_VERSION_1) ? 12 : 10;
    /* struct virtio_net_config (§5.1.4): mac[6] at 0, status at 6 */
    for (int i = 0; i < 6; i++)
        c->mac[i] = vio_has(d, VIRTIO_NET_F_MAC) ? vio_cfg8(d, (uint32_t)i)
                                                 : (uint8_t)(i == 0 ? 0x02 : i == 5 ? index : 0);
    unsigned nrx = c->rx->num < RXBUFS ? c->rx->num : RXBUFS;
    if (!vio_has(d, VIRTIO_RING_F_INDIRECT_DESC))
        nrx = nrx > c->rx->num / 2 ? c->rx->num / 2 : nrx;
    c->rxmem = vio_alloc(nrx * STRIDE, 16);
    c->txmem = vio_alloc(TXSLOTS * STRIDE, 16);
    for (unsigned i = 0; i < nrx; i++) { /* §3.1.1 step 7, §5.1.6.3: receive buffers before DRIVER_OK */
        uint8_t *b = c->rxmem + i * STRIDE;
        struct vbuf v[2] = {{b, c->hdr_len}, {b + HDR_ROOM, FRAME_MAX}};
        vq_add(c->rx, v, 0, 2, b);
    }
    c->ntxfree = TXSLOTS < c->tx->num / 2 ? TXSLOTS : c->tx->num / 2;
    for (unsigned i = 0; i < c->ntxfree; i++)
        c->txfree[i] = (uint16_t)i;
    vio_driver_ok(d);
    vq_kick(c->rx);
    vio_describe(d);
    printf("vnet: nic%d mac=", index);
    print_mac(c->mac);
    if (vio_has(d, VIRTIO_NET_F_STATUS)) {
        int up = vio_cfg16(d, 6) & VIRTIO_NET_S_LINK_UP;
        printf(" link=%s\n", up ? "up" : "down");
        CHECK(up, "nic%d: link down", index);
    } else {
        printf(" link=unknown\n");
    }
    return 0;
}

/* Frees the transmit slots the device has used. */
static void reclaim(struct nic *c) {
    uint8_t *b;
    while ((b = vq_get(c->tx, 0)))
        c->txfree[c->ntxfree++] = (uint16_t)((unsigned)(b - c->txmem) / STRIDE);
}

/* One frame out on transmitq: a zeroed header (no checksum offload, no GSO), then the frame.
 * payload 0: the standard payload of seq. */
static int send(struct nic *c, const uint8_t *dst, int kind, uint32_t seq) {
    reclaim(c);
    if (!c->ntxfree)
        return -1;
    uint8_t *b = c->txmem + c->txfree[--c->ntxfree] * STRIDE, *f = b + HDR_ROOM;
    vio_memset(b, 0, c->hdr_len);
    uint32_t len = payload_len(seq);
    vio_memcpy(f, dst, 6);
    vio_memcpy(f + 6, c->mac, 6);
    f[12] = ETHERTYPE >> 8, f[13] = ETHERTYPE & 0xFF;
    put32(f + OFF_MAGIC, MAGIC);
    put32(f + OFF_KIND, (uint32_t)kind);
    put32(f + OFF_SEQ, seq);
    put32(f + OFF_LEN, len);
    for (uint32_t i = 0; i < len; i++)
        f[OFF_PAYLOAD + i] = payload_byte(seq, i);
    put32(f + OFF_SUM, (uint32_t)fnv1a64(FNV64_INIT, f + OFF_PAYLOAD, len));
    struct vbuf v[2] = {{b, c->hdr_len}, {f, OFF_PAYLOAD + len}};
    vq_add(c->tx, v, 2, 0, b);
    vq_kick(c->tx);
    return 0;
}

/* A pong's reply: waits (up to 10 s) for a free transmit slot. */
static void reply(struct nic *c, const uint8_t *dst, uint32_t seq) {
    uint8_t to[6];
    vio_memcpy(to, dst, 6);
    for (int tries = 0; send(c, to, 1, seq) < 0; tries++)
        if (tries == 10 || !vq_wait(c->tx, 1000)) {
            printf("vnet: FAIL: no transmit buffer returned for reply %u\n", seq);
            vio_fail(c->d);
            exit(1);
        }
}

/* Checks a received frame of ours; returns its seq, or -1 (reported) if it is damaged. */
static long check_frame(struct nic *c, const uint8_t *f, uint32_t flen, int kind) {
    uint32_t seq = get32(f + OFF_SEQ), len = get32(f + OFF_LEN);
    if (get32(f + OFF_KIND) != (uint32_t)kind || len != payload_len(seq) ||
        flen != OFF_PAYLOAD + len) {
        printf("vnet: FAIL: frame seq %u kind %u len %u in %u bytes\n", seq, get32(f + OFF_KIND),
               len, flen);
        return -1;
    }
    if (!same_mac(f, c->mac) && !same_mac(f, broadcast)) {
        printf("vnet: FAIL: frame seq %u for another MAC\n", seq);
        return -1;
    }
    for (uint32_t i = 0; i < len; i++)
        if (f[OFF_PAYLOAD + i] != payload_byte(seq, i)) {
            printf("vnet: FAIL: frame seq %u payload byte %u\n", seq, i);
            return -1;
        }
    if (get32(f + OFF_SUM) != (uint32_t)fnv1a64(FNV64_INIT, f + OFF_PAYLOAD, len)) {
        printf("vnet: FAIL: frame seq %u checksum\n", seq);
        return -1;
    }
    return seq;
}

/* Takes every received frame: a pong answers requests, a ping checks replies. Returns the
 * number of frames that advanced the exchange. */
/* A notification whatever the device asked: the driver may notify at any time, and a device
 * then only looks at the avail ring again, so one it missed costs nothing to repeat. vq_kick
 * notifies only about entries added since the last kick and only when the device wants it, so
 * the last entry is made to look unkicked, with suppression off for this one kick. */
static unsigned nudges;
static void nudge(struct virtq *vq) {
    int suppress = vio_opts.suppress;
    uint32_t kicks = vq->kicks;
    vio_opts.suppress = 0;
    vq->kicked_idx = (uint16_t)(vq->avail_idx - 1);
    vq_kick(vq);
    vio_opts.suppress = suppress;
    vq->kicks = kicks; /* counted as a nudge, not a kick */
    nudges++;
}

static unsigned receive(struct nic *c) {
    unsigned progress = 0;
    uint8_t *b;
    uint32_t used;
    int refill = 0;
    while ((b = vq_get(c->rx, &used))) {
        const uint8_t *f = b + HDR_ROOM;
        uint32_t flen = used >= c->hdr_len ? used - c->hdr_len : 0;
        if (flen < OFF_PAYLOAD || f[12] != ETHERTYPE >> 8 || f[13] != (ETHERTYPE & 0xFF) ||
            get32(f + OFF_MAGIC) != MAGIC) {
            c->other++; /* not ours (e.g. the switch's own traffic) */
        } else {
            long seq = check_frame(c, f, flen, c->role == PING ? 1 : 0);
            if (seq < 0) {
                failures++;
            } else if ((unsigned long)seq == c->expect) {
                if (c->role == PING && !c->have_peer) {
                    vio_memcpy(c->peer, f + 6, 6);
                    c->have_peer = 1;
                    printf("vnet: peer mac=");
                    print_mac(c->peer);
                    printf("\n");
                }
                if (c->role == PONG)
                    reply(c, f + 6, (uint32_t)seq);
                c->expect++, progress++;
            } else if ((unsigned long)seq < c->expect) { /* a retry, or the reply to one */
                c->dups++;
                if (c->role == PONG)
                    reply(c, f + 6, (uint32_t)seq);
            } else {
                printf("vnet: FAIL: frame seq %ld, expected %u (lost frames)\n", seq, c->expect);
                failures++;
                c->expect = (unsigned)seq + 1;
            }
        }
        struct vbuf v[2] = {{b, c->hdr_len}, {b + HDR_ROOM, FRAME_MAX}};
        vq_add(c->rx, v, 0, 2, b);
        refill = 1;
    }
    if (refill)
        vq_kick(c->rx);
    return progress;
}

int main(void) {
    vio_init("vnet");
    int pair = !vio_opt_is("role", "ping") && !vio_opt_is("role", "pong");
    n = vio_opt_uint("n", 1000);
    window = vio_opt_uint("window", 8);
    if (window < 1 || window > TXSLOTS / 2)
        window = 8;
    unsigned timeout = vio_opt_uint("timeout", pair ? 10000 : 30000);
    unsigned retry = vio_opt_uint("retry", 200);

    static struct nic nics[2];
    int nnics = pair ? 2 : 1;
    if (nic_open(&nics[0], 0, vio_opt_is("role", "pong") ? PONG : PING) < 0)
        return 2;
    if (pair) {
        if (nic_open(&nics[1], 1, PONG) < 0)
            return 2;
        vio_memcpy(nics[0].peer, nics[1].mac, 6);
        nics[0].have_peer = 1;
    }

    struct virtq *queues[4];
    int nq = 0;
    for (int i = 0; i < nnics; i++)
        queues[nq++] = nics[i].rx, queues[nq++] = nics[i].tx;
    uint64_t last_progress = rdtsc(), last_hello = 0, last_nudge = 0;
    for (;;) {
        int done = 1;
        for (int i = 0; i < nnics; i++) {
            struct nic *c = &nics[i];
            if (receive(c))
                last_progress = rdtsc();
            reclaim(c);
            if (c->role == PING && !c->have_peer) {
                if (rdtsc() - last_hello >= vio_ms_to_cycles(retry)) { /* request 0, again */
                    send(c, broadcast, 0, 0);
                    c->next = 1;
                    last_hello = rdtsc();
                }
            } else if (c->role == PING) {
                while (c->next < n && c->next - c->expect < window && !send(c, c->peer, 0, c->next))
                    c->next++;
            }
            if (c->expect < n || c->ntxfree < (TXSLOTS < c->tx->num / 2 ? TXSLOTS : c->tx->num / 2))
                done = 0;
        }
        if (done || failures > 10)
            break;
        if (rdtsc() - last_progress > vio_ms_to_cycles(NUDGE_MS) &&
            rdtsc() - last_nudge > vio_ms_to_cycles(NUDGE_MS)) {
            /* A second without a frame: notify every queue once, in case the device missed a
             * notification (seen under QEMU on a loaded host: the frames stopped until the
             * timeout); the device treats one with nothing new as a no-op. */
            for (int i = 0; i < nnics; i++)
                nudge(nics[i].rx), nudge(nics[i].tx);
            last_nudge = rdtsc();
        }
        if (rdtsc() - last_progress > vio_ms_to_cycles(timeout)) {
            printf("vnet: FAIL: no progress in %u ms", timeout);
            for (int i = 0; i < nnics; i++)
                printf(" (nic%d %s: %u of %u)", i, nics[i].role == PING ? "ping" : "pong",
                       nics[i].expect, n);
            printf("\n");
            failures++;
            break;
        }
        vq_wait_any(queues, nq, nics[0].role == PING && !nics[0].have_peer ? retry : 100);
    }

    unsigned kicks = 0, suppressed = 0, irqs = 0, indirect = 0, dups = 0;
    for (int i = 0; i < nnics; i++) {
        struct nic *c = &nics[i];
        printf("vnet: nic%d %s: %u frames checked, %u duplicates, %u other frames\n", i,
               c->role == PING ? "ping" : "pong", c->expect, c->dups, c->other);
        if (i == 0 && nudges)
            printf("vnet: %u nudges\n", nudges);
        CHECK(c->expect == n, "nic%d: %u of %u frames", i, c->expect, n);
        kicks += c->rx->kicks + c->tx->kicks;
        suppressed += c->rx->kicks_suppressed + c->tx->kicks_suppressed;
        irqs += c->d->irqs;
        indirect += c->rx->indirect_used + c->tx->indirect_used;
        dups += c->dups;
        vio_reset(c->d);
    }
    printf("result packets=%u dups=%u kicks=%u suppressed=%u irqs=%u indirect=%u\n", nics[0].expect,
           dups, kicks, suppressed, irqs, indirect);
    printf(failures ? "vnet: FAIL\n" : "vnet: PASS\n");
    return failures ? 1 : 0;
}
