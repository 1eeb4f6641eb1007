#!/usr/bin/env python3
"""Boot a Linux guest under qemu-system-x86_64 (TCG) several times and report, in host seconds,
when the console showed "acrn-sim-init: reached /init" and when QEMU exited, with the exit code.

  guests/linux/boot-times.py [--kernel K] [--initrd I] [--smp N] [--runs R] [--append '...']
                             [--acpi-off] [--qemu-arg ARG ...]

QEMU's exit status for a write of V to isa-debug-exit is (V << 1) | 1; the lines show V.
QEMU's own CPU time (user + system) is shown too: on a shared host it varies less than the
wall-clock times, which grow with the load average printed at the end.
"""

import argparse
import os
import select
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
IMAGES = os.path.join(HERE, "..", "images", "linux")
MARK = b"acrn-sim-init: reached /init"


def boot(args):
    append = "console=ttyS0 " + args.append + (" acpi=off" if args.acpi_off else "")
    cmd = [
        "qemu-system-x86_64",
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
        "-m",
        args.mem,
        "-smp",
        f"{args.smp},sockets={args.smp}",  # one CPU per socket: SeaBIOS lists one per package
        "-kernel",
        args.kernel,
        "-initrd",
        args.initrd,
        "-append",
        append.strip(),
        "-serial",
        "stdio",
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=4",
    ] + args.qemu_arg
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    buf, t_init = b"", None
    while True:
        r, _, _ = select.select([p.stdout], [], [], args.timeout)
        if not r:
            p.kill()
            p.wait()
            return None, None, None, None, buf
        chunk = os.read(p.stdout.fileno(), 65536)
        if not chunk:
            break
        buf += chunk
        if t_init is None and MARK in buf:
            t_init = time.monotonic() - t0
    _, wstatus, usage = os.wait4(p.pid, 0)  # QEMU's own CPU time: less sensitive to a busy host
    p.returncode = rc = os.waitstatus_to_exitcode(wstatus)
    cpu = usage.ru_utime + usage.ru_stime
    t_end = time.monotonic() - t0
    code = (rc >> 1) if rc & 1 else None
    return t_init, t_end, code, cpu, buf


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--kernel", default=os.path.join(IMAGES, "bzImage"))
    ap.add_argument("--initrd", default=os.path.join(IMAGES, "initramfs.cpio.gz"))
    ap.add_argument("--smp", type=int, default=1)
    ap.add_argument("--mem", default="256M")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--append", default="")
    ap.add_argument("--acpi-off", action="store_true")
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--qemu-arg", action="append", default=[])
    ap.add_argument("--log", help="write the last run's console here")
    args = ap.parse_args()
    inits, ends, cpus = [], [], []
    for i in range(args.runs):
        t_init, t_end, code, cpu, out = boot(args)
        if args.log:
            with open(args.log, "wb") as f:
                f.write(out)
        if t_init is None or t_end is None:
            print(f"run {i + 1}: no /init marker or timeout", file=sys.stderr)
            sys.stdout.buffer.write(out[-3000:])
            return 1
        inits.append(t_init)
        ends.append(t_end)
        cpus.append(cpu)
        print(
            f"run {i + 1}: /init at {t_init:.2f} s, exit at {t_end:.2f} s, "
            f"QEMU CPU {cpu:.2f} s, exit code {code}"
        )
    name = os.path.basename(args.kernel)
    acpi = "off" if args.acpi_off else "on"
    med_i, med_e = statistics.median(inits), statistics.median(ends)
    print(
        f"{name} smp={args.smp} acpi={acpi}: /init median {med_i:.2f} s "
        f"(min {min(inits):.2f}, max {max(inits):.2f}); exit median {med_e:.2f} s "
        f"(min {min(ends):.2f}, max {max(ends):.2f}); QEMU CPU median "
        f"{statistics.median(cpus):.2f} s; load average {os.getloadavg()[0]:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
