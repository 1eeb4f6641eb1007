/* vcons: the virtio console (virtio 1.0 §5.3) as a second console beside the UART. Without
 * VIRTIO_CONSOLE_F_MULTIPORT (which it refuses) the device has port 0 only: receiveq is queue 0,
 * transmitq queue 1.
 *   lines=N      lines written to port 0 (default 5): "virtio-console line I of N\n"
 *   read=N       then wait for N bytes from the host (default 0) and write them back as
 *                "echo: ...\n"
 *   timeout=MS   how long to wait for them (default 5000)
 *   emerg=1      also write "virtio-console emergency write\n" through emerg_wr, one
 *                character per 32-bit write, if VIRTIO_CONSOLE_F_EMERG_WRITE is offered
 * plus the library's options (virtio.h). Output (on the UART):
 *   vcons: wrote N lines (B bytes)
 *   vcons: received N bytes: '...'                     (read=N)
 *   result lines=N bytes_out=B bytes_in=I kicks=K suppressed=S irqs=I
 *   vcons: PASS | vcons: FAIL */
#include "rt.h"
#include "virtio.h"

#define VIRTIO_CONSOLE_F_SIZE 0
#define VIRTIO_CONSOLE_F_MULTIPORT 1
#define VIRTIO_CONSOLE_F_EMERG_WRITE 2
#define RXBUFS 4
#define RXSIZE 64
#define LINE 96

static int failures;
static struct vdev *d;
static struct virtq *rx, *tx;
static unsigned bytes_out;

static unsigned fmt_uint(char *p, unsigned v) {
    char t[12];
    unsigned n = 0, k = 0;
    do
        t[n++] = (char)('0' + v % 10);
    while (v /= 10);
    while (n)
        p[k++] = t[--n];
    return k;
}

static unsigned append(char *p, const char *s) {
    unsigned n = 0;
    while (s[n])
        p[n] = s[n], n++;
    return n;
}

/* One buffer out on transmitq (§5.3.6); waits until the device has used it. */
static void send(const char *s, unsigned len) {
    struct vbuf b = {s, len};
    vq_add(tx, &b, 1, 0, (void *)s);
    vq_kick(tx);
    while (!vq_get(tx, 0))
        if (!vq_wait(tx, 5000)) {
            printf("vcons: FAIL: transmit buffer not used in 5 s\n");
            vio_fail(d);
            exit(1);
        }
    bytes_out += len;
}

int main(void) {
    vio_init("vcons");
    unsigned lines = vio_opt_uint("lines", 5), want_in = vio_opt_uint("read", 0);
    unsigned timeout = vio_opt_uint("timeout", 5000);
    d = vio_find(VIRTIO_ID_CONSOLE, 0);
    if (!d) {
        printf("vcons: FAIL: no virtio-console device\n");
        return 2;
    }
    if (vio_start(d, BIT(VIRTIO_CONSOLE_F_SIZE) | BIT(VIRTIO_CONSOLE_F_EMERG_WRITE)) < 0 ||
        !(rx = vio_setup_vq(d, 0, 0)) || !(tx = vio_setup_vq(d, 1, 0)))
        return 2;
    /* §3.1.1 step 7: receive buffers go in before DRIVER_OK; the kick waits until after it */
    uint8_t *rxmem = vio_alloc(RXBUFS * RXSIZE, 16);
    for (int i = 0; i < RXBUFS; i++) {
        struct vbuf b = {rxmem + i * RXSIZE, RXSIZE};
        vq_add(rx, &b, 0, 1, rxmem + i * RXSIZE);
    }
    vio_driver_ok(d);
    vq_kick(rx);
    vio_describe(d);
    if (vio_has(d, VIRTIO_CONSOLE_F_SIZE)) /* struct virtio_console_config: cols, rows */
        printf("vcons: size %ux%u\n", vio_cfg16(d, 0), vio_cfg16(d, 2));

    char *line = vio_alloc(LINE, 16);
    for (unsigned i = 1; i <= lines; i++) {
        unsigned n = append(line, "virtio-console line ");
        n += fmt_uint(line + n, i);
        n += append(line + n, " of ");
        n += fmt_uint(line + n, lines);
        line[n++] = '\n';
        send(line, n);
    }
    printf("vcons: wrote %u lines (%u bytes)\n", lines, bytes_out);
    if (vio_opt_uint("emerg", 0)) {
        if (vio_has(d, VIRTIO_CONSOLE_F_EMERG_WRITE)) {
            for (const char *s = "virtio-console emergency write\n"; *s; s++)
                vio_cfg_w32(d, 8, (uint8_t)*s); /* emerg_wr at offset 8 (§5.3.4) */
            printf("vcons: emergency write done\n");
        } else {
            printf("vcons: VIRTIO_CONSOLE_F_EMERG_WRITE not offered\n");
        }
    }

    unsigned got = 0;
    char *in = vio_alloc(RXBUFS * RXSIZE * 4 + 1, 4);
    uint64_t deadline = rdtsc() + vio_ms_to_cycles(timeout);
    while (got < want_in) {
        uint64_t now = rdtsc();
        if (now >= deadline || !vq_wait(rx, (unsigned)udivmod64(deadline - now, vio_tsc_khz(), 0) + 1))
            break;
        uint8_t *p;
        uint32_t len;
        int refill = 0;
        while ((p = vq_get(rx, &len))) {
            CHECK(len <= RXSIZE, "device wrote %u bytes into a %u-byte buffer", len, RXSIZE);
            for (uint32_t i = 0; i < len && got < RXBUFS * RXSIZE * 4; i++)
                in[got++] = (char)p[i];
            struct vbuf b = {p, RXSIZE};
            vq_add(rx, &b, 0, 1, p);
            refill = 1;
        }
        if (refill)
            vq_kick(rx);
    }
    if (want_in) {
        unsigned text = got; /* without the line ending */
        in[text] = 0;
        while (text && (in[text - 1] == '\n' || in[text - 1] == '\r'))
            in[--text] = 0;
        printf("vcons: received %u bytes: '%s'\n", got, in);
        CHECK(got >= want_in, "received %u of %u bytes", got, want_in);
        unsigned n = append(line, "echo: ");
        for (unsigned i = 0; i < text && n < LINE - 1; i++)
            line[n++] = in[i];
        line[n++] = '\n';
        send(line, n);
    }
    printf("result lines=%u bytes_out=%u bytes_in=%u kicks=%u suppressed=%u irqs=%u\n", lines,
           bytes_out, got, tx->kicks + rx->kicks, tx->kicks_suppressed + rx->kicks_suppressed,
           d->irqs);
    vio_reset(d);
    printf(failures ? "vcons: FAIL\n" : "vcons: PASS\n");
    return failures ? 1 : 0;
}
