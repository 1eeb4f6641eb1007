/* ktest_exit: exits with the code given on the command line, as `outl(code, 0xF4)`.
 *
 *   qemu-system-x86_64 -kernel ktest_exit.elf -append 42 -device isa-debug-exit,iobase=0xf4,iosize=4
 *
 * The Multiboot command line starts with the image's own path (GRUB passes the `multiboot`
 * line; QEMU's -kernel passes "<kernel file> <-append string>"), so argv[0] is the path and
 * the code is atoi(argv[1]). Without an argument it exits with 0. QEMU then ends with status
 * (code << 1) | 1. */
#include "ktest.h"

int ktest_main(uint32_t magic, struct multiboot_info *mbi) {
    serial_init();
    char *argv[16];
    int argc = kt_args(mbi, argv, 16);
    printf("ktest_exit: multiboot magic %x (%s)\n", magic, magic == MULTIBOOT_BOOTLOADER_MAGIC ? "ok" : "BAD");
    if (mbi && (mbi->flags & (1u << 9)) && mbi->boot_loader_name)
        printf("ktest_exit: boot loader '%s'\n", (const char *)(uintptr_t)mbi->boot_loader_name);
    if (mbi && (mbi->flags & (1u << 2)) && mbi->cmdline)
        printf("ktest_exit: command line '%s'\n", (const char *)(uintptr_t)mbi->cmdline);
    else
        printf("ktest_exit: no command line (flags %x)\n", mbi ? mbi->flags : 0);
    printf("ktest_exit: argc %d\n", argc);
    for (int i = 0; i < argc; i++)
        printf("ktest_exit: argv[%d] = '%s'\n", i, argv[i]);
    if (magic != MULTIBOOT_BOOTLOADER_MAGIC)
        return 0x7E;
    long code = argc >= 2 ? kt_atol(argv[1]) : 0;
    printf("ktest_exit: exit %ld\n", code);
    return (int)code;
}
