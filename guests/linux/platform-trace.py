#!/usr/bin/env python3
"""Which platform pieces a Linux guest touches while it boots under QEMU (TCG), cheaply:

- port I/O and MMIO per QEMU memory region (trace events memory_region_ops_read/write), with
  the ports or offsets and access counts, after QEMU's linuxboot option ROM has handed over
  (the firmware's own accesses are left out);
- PCI configuration accesses per device (pci_cfg_read/write);
- local APIC registers written (apic_mem_writel) and IOAPIC redirection entries programmed
  (ioapic_mem_write), decoded;
- the RDMSR/WRMSR instructions the kernel executed (QEMU's -d in_asm logs each translated block
  once), with the MSR number when the block loads ECX with a constant, and the kernel function
  (from System.map; boot with nokaslr when the kernel has KASLR; Debian's package ships an
  empty System.map);
- then, if gdb is installed, a third boot under QEMU's gdbstub with a breakpoint on each of
  those sites and on each CPUID: every MSR number accessed and every CPUID leaf, with counts.

  guests/linux/platform-trace.py [--kernel K] [--initrd I] [--system-map M] [--smp N]
                                 [--append '...'] [--acpi-off] [--qemu-arg ARG ...]
"""

import argparse
import bisect
import collections
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
IMAGES = os.path.join(HERE, "..", "images", "linux")

LAPIC_REGS = {
    0x20: "ID",
    0x80: "TPR",
    0xB0: "EOI",
    0xD0: "LDR",
    0xE0: "DFR",
    0xF0: "SVR",
    0x280: "ESR",
    0x300: "ICR_LO",
    0x310: "ICR_HI",
    0x320: "LVT_TIMER",
    0x330: "LVT_THERMAL",
    0x340: "LVT_PMC",
    0x350: "LVT_LINT0",
    0x360: "LVT_LINT1",
    0x370: "LVT_ERROR",
    0x380: "TMICT",
    0x390: "TMCCT",
    0x3E0: "TDCR",
}
MSR_NAMES = {
    0x1B: "IA32_APIC_BASE",
    0x3A: "IA32_FEATURE_CONTROL",
    0x8B: "IA32_BIOS_SIGN_ID",
    0xFE: "IA32_MTRRCAP",
    0x10: "IA32_TSC",
    0x48: "IA32_SPEC_CTRL",
    0x49: "IA32_PRED_CMD",
    0x10A: "IA32_ARCH_CAPABILITIES",
    0x122: "IA32_TSX_CTRL",
    0x174: "IA32_SYSENTER_CS",
    0x175: "IA32_SYSENTER_ESP",
    0x176: "IA32_SYSENTER_EIP",
    0x179: "IA32_MCG_CAP",
    0x17A: "IA32_MCG_STATUS",
    0x1A0: "IA32_MISC_ENABLE",
    0x1D9: "IA32_DEBUGCTL",
    0x277: "IA32_PAT",
    0x2FF: "IA32_MTRR_DEF_TYPE",
    0x6E0: "IA32_TSC_DEADLINE",
    0xC0000080: "IA32_EFER",
    0xC0000081: "STAR",
    0xC0000082: "LSTAR",
    0xC0000083: "CSTAR",
    0xC0000084: "SFMASK",
    0xC0000100: "FS_BASE",
    0xC0000101: "GS_BASE",
    0xC0000102: "KERNEL_GS_BASE",
    0xC0000103: "TSC_AUX",
    0xC0010015: "AMD_HWCR",
    0xC001001F: "AMD_NB_CFG",
    0xC0011029: "AMD_DE_CFG",
    0xC0010114: "AMD_VM_CR",
    0xCE: "MSR_PLATFORM_INFO",
    0x140: "MISC_FEATURES_ENABLES",
    0x17B: "IA32_MCG_CTL",
    0x250: "MTRR_FIX64K_00000",
    0x258: "MTRR_FIX16K_80000",
    0x259: "MTRR_FIX16K_A0000",
    0xC0010000: "K7_EVNTSEL0",
    0xC0010001: "K7_EVNTSEL1",
    0xC0010002: "K7_EVNTSEL2",
    0xC0010003: "K7_EVNTSEL3",
    0xC0010007: "K7_PERFCTR3",
    0xC0010055: "K8_INT_PENDING_MSG",
}
MSR_NAMES.update(
    {0x200 + i: f"MTRR_PHYS{'BASE' if i % 2 == 0 else 'MASK'}{i // 2}" for i in range(16)}
)
MSR_NAMES.update({0x268 + i: f"MTRR_FIX4K_{0xC0000 + i * 0x8000:X}" for i in range(8)})
MSR_NAMES.update(
    {
        0x400 + 4 * b + r: f"IA32_MC{b}_{n}"
        for b in range(32)
        for r, n in enumerate(("CTL", "STATUS", "ADDR", "MISC"))
    }
)


def qemu_cmd(args, extra):
    append = "console=ttyS0 " + args.append + (" acpi=off" if args.acpi_off else "")
    return [
        "qemu-system-x86_64",
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
        "-m",
        args.mem,
        "-smp",
        f"{args.smp},sockets={args.smp}",
        "-kernel",
        args.kernel,
        "-initrd",
        args.initrd,
        "-append",
        append.strip(),
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=4",
        *args.qemu_arg,
        *extra,
    ]


def run(cmd, timeout):
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout)


def after_firmware(lines):
    """The lines after QEMU's linuxboot ROM fetched the command line (then the kernel runs)."""
    last = 0
    for i, ln in enumerate(lines):
        if ln.startswith("fw_cfg_select") and "'cmdline_data'" in ln:
            last = i
    return lines[last + 1 :]


MR = re.compile(
    r"memory_region_ops_(read|write) cpu (-?\d+) mr \S+ addr (0x[0-9a-f]+) "
    r"value (0x[0-9a-f]+) size (\d+) name '([^']*)'"
)


def report_io(lines, out):
    regions = collections.defaultdict(lambda: collections.Counter())
    messages = collections.Counter()
    for ln in lines:
        m = MR.match(ln)
        if not m:
            continue
        rw, cpu, addr, value, size, name = m.groups()
        addr = int(addr, 16)
        if name == "apic-msi" and (cpu == "-1" or addr >= 0xFEE01000):
            # not the CPU's access: an interrupt message (IOAPIC or MSI) that QEMU delivers as
            # a write to 0xFEExxxxx (address: destination; data: vector and mode)
            messages[(addr, int(value, 16))] += 1
            continue
        regions[name][(addr, rw[0].upper(), int(size))] += 1
    out.append("## Port I/O and MMIO by QEMU memory region (offset within the region for MMIO)")
    for name, c in sorted(regions.items(), key=lambda kv: -sum(kv[1].values())):
        per = collections.defaultdict(collections.Counter)
        for (addr, rw, size), n in c.items():
            per[addr][f"{rw}{size}"] += n
        items = ", ".join(
            f"{a:#x} " + "/".join(f"{k}x{v}" for k, v in sorted(per[a].items()))
            for a in sorted(per)
        )
        out.append(f"- {name}: {sum(c.values())} accesses: {items}")
    out.append("## Interrupt messages (IOAPIC and MSI) delivered to the local APICs")
    for (addr, data), n in sorted(messages.items()):
        out.append(
            f"- address {addr:#x} (APIC {(addr >> 12) & 0xFF:#x}) data {data:#x} "
            f"(vector {data & 0xFF:#x}): x{n}"
        )


def report_pci(lines, out):
    devs = collections.Counter()
    for ln in lines:
        m = re.match(r"pci_cfg_(read|write) (\S+) (\S+) @(0x[0-9a-f]+)", ln)
        if m:
            devs[(m.group(3), m.group(2), m.group(1))] += 1
    out.append("## PCI configuration space (mechanism 1) by device")
    for (bdf, name, rw), n in sorted(devs.items()):
        out.append(f"- {bdf} {name}: {rw} x{n}")


IOAPIC_WRITE = re.compile(
    r"ioapic_mem_write .*addr (0x[0-9a-f]+) regsel: (0x[0-9a-f]+) size \S+ val (0x[0-9a-f]+)"
)


def report_apic(lines, out):
    regs = collections.Counter()
    for ln in lines:
        m = re.match(r"apic_mem_writel (0x[0-9a-f]+) = (0x[0-9a-f]+)", ln)
        if m:
            off = int(m.group(1), 16)
            regs[LAPIC_REGS.get(off, hex(off))] += 1
    reads = collections.Counter()
    for ln in lines:
        m = re.match(r"apic_mem_readl (0x[0-9a-f]+)", ln)
        if m:
            off = int(m.group(1), 16)
            reads[LAPIC_REGS.get(off, hex(off))] += 1
    out.append("## Local APIC (xAPIC MMIO) registers")
    out.append("- written: " + ", ".join(f"{k} x{v}" for k, v in regs.most_common()))
    out.append("- read: " + ", ".join(f"{k} x{v}" for k, v in reads.most_common()))
    # IOAPIC: IOREGSEL then IOWIN; redirection entry n is registers 0x10 + 2n (low), +1 (high)
    sel, rte = 0, {}
    for ln in lines:
        m = IOAPIC_WRITE.match(ln)
        if not m:
            continue
        addr, val = int(m.group(1), 16), int(m.group(3), 16)
        if addr == 0:
            sel = val
        elif addr == 0x10 and 0x10 <= sel < 0x40:
            pin, hi = (sel - 0x10) // 2, (sel - 0x10) % 2
            lo_hi = rte.setdefault(pin, [0x10000, 0])
            lo_hi[hi] = val
    out.append("## IOAPIC redirection entries at the end (unmasked ones)")
    for pin, (lo, hi) in sorted(rte.items()):
        if lo & 0x10000:
            continue
        out.append(
            f"- pin {pin}: vector {lo & 0xFF:#x}, {'level' if lo & 0x8000 else 'edge'}, "
            f"{'low' if lo & 0x2000 else 'high'}, {'logical' if lo & 0x800 else 'physical'} "
            f"dest {hi >> 24:#x}, delivery {(lo >> 8) & 7}"
        )
    masked = [p for p, (lo, _) in sorted(rte.items()) if lo & 0x10000]
    out.append(f"- programmed but masked: pins {masked}")


def symbolizer(path):
    if not path or not os.path.exists(path):
        return None
    addrs, names = [], []
    with open(path) as f:
        for ln in f:
            a, t, n = ln.split()[:3]
            if t in "tTwW":
                addrs.append(int(a, 16))
                names.append(n)
    order = sorted(range(len(addrs)), key=addrs.__getitem__)
    addrs = [addrs[i] for i in order]
    names = [names[i] for i in order]

    def sym(a):
        i = bisect.bisect_right(addrs, a) - 1
        return names[i] if i >= 0 and a - addrs[i] < 0x10000 else "?"

    return sym


def msr_sites(asm_log):
    """Addresses of the RDMSR/WRMSR the kernel executed (the firmware's left out), with the
    constant ECX of their block if there is one."""
    sites = {}
    block = []
    with open(asm_log, errors="replace") as f:
        for ln in f:
            if ln.startswith("IN:") or ln.startswith("----"):
                block = []
                continue
            m = re.match(r"(0x[0-9a-f]+):\s+(?:[0-9a-f]{2} )+\s*(\S+)\s*(.*)", ln)
            if not m:
                continue
            addr, op, operands = int(m.group(1), 16), m.group(2), m.group(3)
            block.append((op, operands))
            # the kernel: its virtual addresses, or physical ones from the decompressor at 1 MiB
            # up to the kernel's early code below 64 MiB (SeaBIOS runs below 1 MiB and at the
            # top of RAM)
            kernel = addr >= 0xFFFFFFFF80000000 or 0x100000 <= addr < 0x4000000
            if op == "cpuid" and kernel:
                sites[addr] = (op, None)
            if op in ("rdmsr", "wrmsr") and kernel:
                ecx = None
                for pop, pops in reversed(block[:-1]):
                    mm = re.match(r"\$(0x[0-9a-f]+), %ecx$", pops)
                    if pop == "movl" and mm:
                        ecx = int(mm.group(1), 16)
                        break
                    if "%ecx" in pops.split(",")[-1]:
                        break
                sites[addr] = (op, ecx)
    return sites


def report_msrs(sites, sym, out):
    out.append("## RDMSR/WRMSR executed by the kernel (a site may run many times)")
    by = collections.defaultdict(set)
    for addr, (op, ecx) in sites.items():
        if op == "cpuid":
            continue
        key = (
            f"{ecx:#x} {MSR_NAMES.get(ecx, '')}".strip()
            if ecx is not None
            else "(ECX not constant)"
        )
        by[key].add(f"{op} in {sym(addr) if sym else hex(addr)}")
    for key in sorted(by):
        out.append(f"- {key}: " + ", ".join(sorted(by[key])))


def gdb_msrs(args, sites, log):
    """Boot once more with QEMU's gdbstub and a breakpoint on every RDMSR/WRMSR/CPUID site:
    gdb prints ECX, EDX and EAX at each hit (the MSR and the value written; CPUID's leaf in
    EAX and subleaf in ECX) and continues."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = [
        "set pagination off",
        "set confirm off",
        "set architecture i386:x86-64",
        f"target remote 127.0.0.1:{port}",
    ]
    for addr, (op, _) in sorted(sites.items()):
        script += [
            f"break *{addr:#x}",
            "commands",
            "silent",
            f'printf "MSR {op} {addr:#x} %x %x %x\\n", $ecx, $edx, $eax',
            "continue",
            "end",
        ]
    # (for CPUID the line carries ECX = subleaf, EDX, EAX = leaf)
    script += ["continue"]
    gdbfile = log + ".gdb"
    with open(gdbfile, "w") as f:
        f.write("\n".join(script) + "\n")
    q = subprocess.Popen(
        qemu_cmd(args, ["-serial", "null", "-S", "-gdb", f"tcp:127.0.0.1:{port}"]),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with open(log, "w") as f:
            subprocess.run(
                ["gdb", "-nx", "-batch", "-x", gdbfile],
                stdout=f,
                stderr=subprocess.STDOUT,
                timeout=args.timeout,
            )
    finally:
        q.wait(timeout=args.timeout)


def report_msr_values(log, sym, out):
    hits, leaves = collections.Counter(), collections.Counter()
    with open(log, errors="replace") as f:
        for ln in f:
            m = re.match(r"MSR (\w+) (0x[0-9a-f]+) ([0-9a-f]+) ([0-9a-f]+) ([0-9a-f]+)", ln)
            if m:
                op, addr, ecx = m.group(1), int(m.group(2), 16), int(m.group(3), 16)
                if op == "cpuid":
                    leaf = int(m.group(5), 16)
                    sub = (
                        ecx
                        if leaf
                        in (4, 7, 0xB, 0xD, 0xF, 0x10, 0x12, 0x14, 0x17, 0x18, 0x1F, 0x8000001D)
                        else None
                    )
                    leaves[(leaf, sub)] += 1
                    continue
                where = sym(addr) if sym else hex(addr)
                hits[(ecx, op, where)] += 1
    out.append("## MSR accesses, by number (ECX read at each RDMSR/WRMSR under gdb)")
    per = collections.defaultdict(list)
    for (ecx, op, where), n in sorted(hits.items()):
        per[ecx].append(f"{op} x{n} in {where}")
    for ecx in sorted(per):
        out.append(f"- {ecx:#x} {MSR_NAMES.get(ecx, '')}: " + ", ".join(per[ecx]))
    out.append("## CPUID leaves executed (leaf[.subleaf] x count)")
    out.append(
        "- "
        + ", ".join(
            f"{leaf:#x}{'' if sub is None else f'.{sub}'} x{n}"
            for (leaf, sub), n in sorted(leaves.items())
        )
    )


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--kernel", default=os.path.join(IMAGES, "bzImage"))
    ap.add_argument("--initrd", default=os.path.join(IMAGES, "initramfs.cpio.gz"))
    ap.add_argument("--system-map", default=os.path.join(HERE, "build", "obj", "System.map"))
    ap.add_argument("--smp", type=int, default=2)
    ap.add_argument("--mem", default="256M")
    ap.add_argument("--append", default="")
    ap.add_argument("--acpi-off", action="store_true")
    ap.add_argument("--qemu-arg", action="append", default=[])
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--keep", help="keep the raw logs in this directory")
    ap.add_argument(
        "--no-msr-values",
        dest="msr_values",
        action="store_false",
        help="skip the third boot, under gdb, that reads ECX at every RDMSR/WRMSR",
    )
    ap.add_argument("--logs", help="only analyse the logs a previous --keep left in this directory")
    args = ap.parse_args()
    if args.logs:
        args.keep = args.logs
    tmp = args.keep or tempfile.mkdtemp(prefix="platform-trace-")
    os.makedirs(tmp, exist_ok=True)
    trace, asm = os.path.join(tmp, "trace.log"), os.path.join(tmp, "in_asm.log")
    events = [
        "memory_region_ops_read",
        "memory_region_ops_write",
        "pci_cfg_read",
        "pci_cfg_write",
        "apic_mem_readl",
        "apic_mem_writel",
        "ioapic_mem_write",
        "fw_cfg_select",
    ]
    if not args.logs:
        console = "file:" + os.path.join(tmp, "console.log")
        enable = sum((["-trace", f"enable={e}"] for e in events), [])
        run(qemu_cmd(args, ["-serial", console, *enable, "-D", trace]), args.timeout)
        run(qemu_cmd(args, ["-serial", "null", "-d", "in_asm", "-D", asm]), args.timeout)
    with open(trace, errors="replace") as f:
        lines = after_firmware(f.read().splitlines())
    out = [
        f"# {os.path.basename(args.kernel)} smp={args.smp} append='{args.append}'"
        f"{' acpi=off' if args.acpi_off else ''}"
    ]
    report_io(lines, out)
    report_pci(lines, out)
    report_apic(lines, out)
    sites = msr_sites(asm)
    sym = symbolizer(args.system_map)
    report_msrs(sites, sym, out)
    if args.msr_values and shutil.which("gdb"):
        log = os.path.join(tmp, "gdb-msr.log")
        if not args.logs:
            gdb_msrs(args, sites, log)
        report_msr_values(log, sym, out)
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
