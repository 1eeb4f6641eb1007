/* lowload: a Multiboot image linked low, at 0x2000-0x8FFF (lib/link32low.ld), where a boot
 * loader might keep its own data. A loader must put its boot data (the info structure, the
 * memory map, the command line) where the image does not load: QEMU's (hw/i386/multiboot.c)
 * puts the command line after the image and the info structure at 0x9500.
 *   qemu-system-x86_64 -kernel lowload.elf -append 'a b' -device isa-debug-exit,iobase=0xf4,iosize=4
 * TAP lines; exit code 0 if every check passes, 1 otherwise. */
#include "rt.h"

#define TABLE 256
#define BASE 0x2000u

extern char image_end[];

/* Loaded from the file with the image, read back below. */
static const unsigned char table[TABLE] = {
#define R(i) (unsigned char)((i) * 7 + 3)
#define R8(i) R(i), R(i + 1), R(i + 2), R(i + 3), R(i + 4), R(i + 5), R(i + 6), R(i + 7)
#define R64(i) R8(i), R8(i + 8), R8(i + 16), R8(i + 24), R8(i + 32), R8(i + 40), R8(i + 48), R8(i + 56)
    R64(0), R64(64), R64(128), R64(192)};

static int n, failures;

static void check(int ok, const char *what) {
    printf("%s %d - %s\n", ok ? "ok" : "not ok", ++n, what);
    if (!ok)
        failures++;
}

/* Whether [a, a + len) overlaps the image, BASE-image_end. */
static int in_image(unsigned a, unsigned len) { return a < (unsigned)image_end && a + len > BASE; }

int main(void) {
    serial_init();
    unsigned code = (unsigned)main, end = (unsigned)image_end;
    printf("lowload: image %x-%x, main at %x, table at %x\n", BASE, end, code, (unsigned)table);
    check(code >= BASE && end <= 0x9000, "the image runs where it is linked, below 0x9000");
    int intact = 1;
    for (unsigned i = 0; i < TABLE; i++)
        intact &= table[i] == (unsigned char)(i * 7 + 3);
    check(intact, "its data loaded intact");
    unsigned mbi = (unsigned)rt_mbi;
    check(mbi && !in_image(mbi, 88), "the Multiboot info structure lies outside the image");
    const char *cmd = rt_cmdline();
    unsigned len = 0;
    while (cmd[len])
        len++;
    check(*cmd && !in_image((unsigned)cmd, len + 1), "the command line lies outside the image");
    if (rt_mbi && (rt_mbi->flags & (1u << 6)))
        check(rt_mbi->mmap_length && !in_image(rt_mbi->mmap_addr, rt_mbi->mmap_length),
              "the memory map lies outside the image");
    else
        check(0, "the memory map lies outside the image (no map given)");
    printf("lowload: arguments '%s'\n", rt_cmdline_args());
    printf("1..%d\n", n);
    printf("# lowload: %d checks, %d failed\n", n, failures);
    return failures ? 1 : 0;
}
