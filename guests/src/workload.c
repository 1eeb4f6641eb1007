/* workload: the guests of the latency scenarios, chosen by the Multiboot command line.
 *   cyclic N US        cyclictest: N wake-ups, each US microseconds after the previous one, on
 *                      the x2APIC TSC-deadline timer; prints the wake-up latency histogram
 *                      (1 us buckets) and min/avg/max in cycles
 *   frame N US WORK IOS   N frames released every US microseconds; each computes WORK
 *                      microseconds' worth of loop iterations and reads IOS "sensor" values
 *                      (RTC, through the device model); a frame that ends after the next
 *                      release misses its deadline. Prints misses and response percentiles
 *   io N WORK          N storage requests (port 0x1F0, costly in the device model) with WORK
 *                      microseconds of computing between them; prints I/O latency percentiles
 *   compute            computes forever
 * Results are one line each, "result key=value ...", for the scenario's report. */
#include "rt.h"

#define MAX_SAMPLES 512
static uint32_t samples[MAX_SAMPLES];
static unsigned nsamples;
static volatile unsigned fired;
static uint32_t khz; /* TSC kHz from the hypervisor's CPUID leaf 0x40000010 */

static uint64_t div64(uint64_t n, uint64_t d) { return udivmod64(n, d, 0); }

static const char *word(const char *s, unsigned *v) {
    while (*s == ' ')
        s++;
    *v = 0;
    while (*s >= '0' && *s <= '9')
        *v = *v * 10 + (unsigned)(*s++ - '0');
    return s;
}

static int starts(const char *s, const char *w) {
    while (*w)
        if (*s++ != *w++)
            return 0;
    return 1;
}

static void on_timer(struct frame *f) {
    (void)f;
    fired++;
    wrmsr(0x80B, 0); /* x2APIC EOI */
}

static void x2apic_timer_init(void) {
    wrmsr(0x1B, rdmsr(0x1B) | (1u << 10) | (1u << 11)); /* x2APIC mode */
    wrmsr(0x80F, 0x1FF);                                   /* SVR: enabled */
    wrmsr(0x832, 0x40000 | 0x30);                          /* LVT timer: TSC deadline */
    set_handler(0x30, on_timer);
}

static void sleep_until(uint64_t deadline) {
    unsigned before = fired;
    wrmsr(0x6E0, deadline);
    while (fired == before)
        __asm__ volatile("sti; hlt; cli");
}

static void add_sample(uint64_t v) {
    if (nsamples < MAX_SAMPLES)
        samples[nsamples++] = v > 0xFFFFFFFFu ? 0xFFFFFFFFu : (uint32_t)v;
}

static uint32_t pct(unsigned p) { /* samples sorted */
    if (!nsamples)
        return 0;
    unsigned i = (nsamples * p + 99) / 100;
    return samples[i ? i - 1 : 0];
}

static void sort_samples(void) {
    for (unsigned i = 1; i < nsamples; i++) {
        uint32_t v = samples[i];
        unsigned j = i;
        for (; j && samples[j - 1] > v; j--)
            samples[j] = samples[j - 1];
        samples[j] = v;
    }
}

static volatile uint32_t sink;
static uint32_t spin_per_us; /* loop iterations per microsecond, measured once */

static void spin(uint32_t n) {
    uint32_t x = sink;
    for (uint32_t i = 0; i < n; i++)
        x = x * 1103515245u + 12345u;
    sink = x;
}

static void calibrate(void) {
    uint64_t t = rdtsc();
    spin(100000);
    uint64_t d = rdtsc() - t;
    spin_per_us = (uint32_t)div64(100000ull * khz, 1000ull * (d ? d : 1));
    if (!spin_per_us)
        spin_per_us = 1;
}

static void cyclic(unsigned n, unsigned us) {
    enum { BUCKETS = 100 };
    static unsigned hist[BUCKETS + 1];
    uint64_t interval = div64((uint64_t)us * khz, 1000), sum = 0, min = ~0ull, max = 0;
    x2apic_timer_init();
    for (unsigned i = 0; i < n; i++) {
        uint64_t deadline = rdtsc() + interval;
        sleep_until(deadline);
        uint64_t lat = rdtsc() - deadline;
        sum += lat;
        if (lat < min)
            min = lat;
        if (lat > max)
            max = lat;
        uint64_t b = div64(lat * 1000, khz); /* whole microseconds */
        hist[b < BUCKETS ? b : BUCKETS]++;
    }
    for (unsigned b = 0; b <= BUCKETS; b++)
        if (hist[b])
            printf("hist %u %u\n", b, hist[b]);
    printf("result samples=%u min=%lu avg=%lu max=%lu\n", n, (unsigned long)min,
           (unsigned long)div64(sum, n), (unsigned long)max);
}

static void frames(unsigned n, unsigned us, unsigned work, unsigned ios) {
    uint64_t period = div64((uint64_t)us * khz, 1000);
    unsigned misses = 0;
    x2apic_timer_init();
    calibrate();
    uint64_t release = rdtsc() + period;
    for (unsigned i = 0; i < n; i++) {
        sleep_until(release);
        spin(work * spin_per_us);
        for (unsigned k = 0; k < ios; k++) {
            outb(0x70, 0x00);
            sink += inb(0x71);
        }
        uint64_t done = rdtsc();
        add_sample(done - release);
        release += period;
        if (done > release) {
            misses++;
            while (release < done) /* skip the releases already past */
                release += period;
        }
    }
    sort_samples();
    printf("result frames=%u misses=%u p50=%u p99=%u max=%u\n", n, misses, pct(50), pct(99),
           pct(100));
}

static void io(unsigned n, unsigned work) {
    calibrate();
    for (unsigned i = 0; i < n; i++) {
        spin(work * spin_per_us);
        uint64_t t = rdtsc();
        sink += inb(0x1F0);
        add_sample(rdtsc() - t);
    }
    sort_samples();
    printf("result ios=%u p50=%u p99=%u max=%u\n", n, pct(50), pct(99), pct(100));
}

int main(void) {
    const char *cmd = rt_cmdline_args();
    uint32_t r[4];
    serial_init();
    idt_init();
    cpuid(0x40000010, 0, r);
    khz = r[0] ? r[0] : 2400000;
    unsigned a, b, c, d;
    if (starts(cmd, "cyclic")) {
        word(word(cmd + 6, &a), &b);
        cyclic(a, b);
    } else if (starts(cmd, "frame")) {
        word(word(word(word(cmd + 5, &a), &b), &c), &d);
        frames(a, b, c, d);
    } else if (starts(cmd, "io")) {
        word(word(cmd + 2, &a), &b);
        io(a, b);
    } else if (starts(cmd, "compute")) {
        for (;;)
            spin(1000000);
    } else {
        printf("workload: unknown command line '%s'\n", cmd);
        return 2;
    }
    return 0;
}
