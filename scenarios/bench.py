"""`acrn-sim bench`: host-speed figures, each measured in the same run as its references.

Host time is read here (time.perf_counter) and only here: it measures the simulator, never
feeds the simulation. Every case runs `runs` times, interleaved (run 1 of every case, then
run 2, ...), so a noisy, shared host spreads its noise over all cases; each figure is the
median of the runs with their minimum and maximum. The references, measured in the same run:
- bare Unicorn: the same bench.elf code from the same boot state in a fresh engine with no
  hooks (the same library acrn-sim runs on: see the engine line);
- QEMU TCG, when qemu-system-x86_64 is installed: the same bench.elf booted by QEMU
  (`-kernel`, Multiboot), a large and a small iteration count, and the difference of their
  times, so that QEMU's start-up and the guest's boot cancel out;
- exit costs in compute-loop instructions: an exit's host time divided by the time bare
  Unicorn takes per instruction of the compute loop in this run (what the exit could have run).
"""

from __future__ import annotations

import json
import platform
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from unicorn import UC_ARCH_X86, UC_MODE_64, Uc

from acrn_sim.guests import image_path
from acrn_sim.hv.hypervisor import Hypervisor
from acrn_sim.scenarios import device_model, pre_launched, service_vm, user_vm, with_service_vm
from acrn_sim.sim import unicorn_engine
from acrn_sim.sim.timing import TimingProfile

# What the issue asks an exit to cost at most, in compute-loop instructions of bare Unicorn.
TARGET_CPUID_INSNS = 6_000
TARGET_IOREQ_INSNS = 50_000


@dataclass(frozen=True)
class Sizes:
    compute: int = 20_000_000  # iterations of the 5-instruction loop
    memory: int = 10_000_000  # iterations of the array loop
    exits: int = 20_000
    scaling: int = 2_000_000  # iterations of the memory loop, per VM
    # QEMU: (small, large) iteration counts, whose time difference is the loop's
    qemu_compute: tuple[int, int] = (1_000_000, 400_000_000)
    qemu_memory: tuple[int, int] = (1_000_000, 200_000_000)


# A smoke test of the bench itself (the tests): the figures mean nothing at these sizes.
QUICK = Sizes(
    compute=200_000,
    memory=100_000,
    exits=200,
    scaling=20_000,
    qemu_compute=(1_000, 200_000),
    qemu_memory=(1_000, 100_000),
)


@dataclass
class Figure:
    """One figure over the runs: `values` in run order."""

    unit: str
    values: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def show(self, fmt: str = "{:,.0f}") -> str:
        """'median (min-max)', or the single value of a single run."""
        if not self.values:
            return "n/a"
        if len(self.values) == 1:
            return fmt.format(self.median)
        lo, hi = min(self.values), max(self.values)
        return f"{fmt.format(self.median)} ({fmt.format(lo)}-{fmt.format(hi)})"


class _OrNone(dict):
    """Figures by name; one that has no value (QEMU's, when noise swamped it) shows n/a."""

    def __missing__(self, name: str) -> Figure:
        return Figure("")


@dataclass
class Timed:
    seconds: float
    hv: Hypervisor


def _boot(cmdlines: list[str], hotpath: str) -> Hypervisor:
    configs = [
        pre_launched(
            image_path("bench.elf"), memory=16 << 20, cmdline=c, pcpu=i + 1, name=f"PRE_VM{i}"
        )
        for i, c in enumerate(cmdlines)
    ]
    hv = Hypervisor(TimingProfile.load(), trace=False, hotpath=hotpath)
    hv.boot(configs + [service_vm()])
    return hv


def _run(cmdlines: list[str], hotpath: str = "native") -> Timed:
    hv = _boot(cmdlines, hotpath)
    t0 = time.perf_counter()
    hv.run()
    seconds = time.perf_counter() - t0
    for vm in hv.vms[: len(cmdlines)]:
        if not vm.shutdown or vm.shutdown.exit_code != 0:
            raise RuntimeError(f"bench guest failed in {vm.name}: {vm.shutdown}")
    return Timed(seconds, hv)


def _user_vm_seconds(vm, hotpath: str, failure: str | None = None) -> float:
    """Host seconds of a run of the User VM `vm` beside the Service VM, to its exit code 0
    (else RuntimeError: `failure`, or the VM and its exit code)."""
    hv = Hypervisor(TimingProfile.load(), trace=False, hotpath=hotpath)
    configs = with_service_vm([vm])
    hv.boot(configs)
    t0 = time.perf_counter()
    hv.run()
    seconds = time.perf_counter() - t0
    dm = device_model(configs, vm.name)
    if dm.exit_code != 0:
        raise RuntimeError(failure or f"bench guest failed in {vm.name}: {dm.exit_code}")
    return seconds


def _run_user(cmdline: str, hotpath: str) -> float:
    """Host seconds for a User VM whose I/O all goes through the Service VM."""
    return _user_vm_seconds(
        user_vm(image_path("bench.elf"), memory=16 << 20, cmdline=cmdline), hotpath
    )


LINUX_KERNEL, LINUX_INITRD = image_path("linux/bzImage"), image_path("linux/initramfs.cpio.gz")
LINUX_MEM_MIB = 128


def _linux_seconds(hotpath: str) -> float:
    """Host seconds of the committed Linux's whole boot as a User VM: the device model loads the
    kernel (acrn-dm's -k/-r/-B), /init runs and powers the VM off (exit code 0)."""
    vm = user_vm(LINUX_KERNEL, memory=LINUX_MEM_MIB << 20, cmdline="console=ttyS0",
                 initrd=LINUX_INITRD)  # fmt: skip
    return _user_vm_seconds(vm, hotpath, "Linux did not boot to /init and power off")


def _bare_unicorn_seconds(cmdline: str) -> float:
    """The same image and boot state, in a fresh engine with no hooks at all."""
    hv = _boot([cmdline], "python")
    src = hv.vms[0].vcpus[0].engine
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    for gpa, hpa, size, _perm in hv.vms[0].ept.regions():
        uc.mem_map_ptr(gpa, size, 7, hv.mem.host_ptr(hpa))
    uc.context_restore(src.uc.context_save())
    rip = src.reg("rip")
    t0 = time.perf_counter()
    uc.emu_start(rip, 0xFFFF_FFFF_FFFF_FFFF)  # ends at the guest's final HLT
    return time.perf_counter() - t0


def qemu_command(
    qemu: str, cmdline: str, kernel: str = image_path("bench.elf"), mem_mib: int = 64,
    initrd: str | None = None,
) -> list[str]:  # fmt: skip
    """A guest under QEMU's TCG (bench.elf by default): Multiboot or a bzImage through -kernel,
    the guest's exit code through isa-debug-exit at port 0xF4 (QEMU then exits with status
    code * 2 + 1)."""
    return [
        qemu,
        "-accel", "tcg", "-m", str(mem_mib), "-display", "none", "-nodefaults", "-no-reboot",
        "-serial", "null", "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
        "-kernel", kernel, *(["-initrd", initrd] if initrd else []), "-append", cmdline,
    ]  # fmt: skip


def _qemu_run_seconds(cmd: list[str], what: str, timeout: int) -> float:
    """Host seconds of a QEMU run that must end with the guest's exit(0) (status 1)."""
    t0 = time.perf_counter()
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    seconds = time.perf_counter() - t0
    if p.returncode != 1:
        err = p.stderr.decode(errors="replace").strip()
        raise RuntimeError(f"{what} under QEMU: status {p.returncode}: {err}")
    return seconds


def _qemu_seconds(qemu: str, cmdline: str) -> float:
    return _qemu_run_seconds(qemu_command(qemu, cmdline), "bench guest", 300)


def _qemu_linux_seconds(qemu: str) -> float:
    """The same kernel and initramfs under QEMU's TCG, 1 vCPU, the same memory; /init's exit
    code reaches QEMU through isa-debug-exit (acrnsim.exit=0)."""
    cmd = qemu_command(qemu, "console=ttyS0 acrnsim.exit=0", LINUX_KERNEL, LINUX_MEM_MIB,
                       LINUX_INITRD)  # fmt: skip
    return _qemu_run_seconds(cmd, "Linux", 600)


def qemu_version(qemu: str) -> str:
    p = subprocess.run([qemu, "--version"], capture_output=True, text=True, timeout=60)
    return p.stdout.splitlines()[0].strip() if p.returncode == 0 and p.stdout else "unknown"


class Bench:
    def __init__(self, hotpath: str, sizes: Sizes, qemu: str | None, linux: bool = False) -> None:
        self.hotpath = hotpath
        self.sizes = sizes
        self.qemu = qemu
        self.linux = linux
        self.figures: dict[str, Figure] = {}
        self.insns: dict[str, int] = {}  # guest instructions of each loop's acrn-sim run

    def add(self, name: str, unit: str, value: float) -> None:
        self.figures.setdefault(name, Figure(unit)).values.append(value)

    def one_run(self) -> None:
        s = self.sizes
        for kind, n, qn in (
            ("memory", s.memory, s.qemu_memory),
            ("compute", s.compute, s.qemu_compute),
        ):
            cmd = f"{kind} {n}"
            bare = _bare_unicorn_seconds(cmd)
            sim = _run([cmd], self.hotpath)
            insns = sim.hv.vms[0].vcpus[0].engine.st.insns  # the same code runs in both
            self.insns[kind] = insns
            self.add(f"{kind}_bare_mips", "M instructions/s", insns / bare / 1e6)
            self.add(f"{kind}_sim_mips", "M instructions/s", insns / sim.seconds / 1e6)
            self.add(f"{kind}_sim_over_bare", "ratio", bare / sim.seconds)
            if self.qemu:
                small, large = qn
                t_small = _qemu_seconds(self.qemu, f"{kind} {small}")
                t_large = _qemu_seconds(self.qemu, f"{kind} {large}")
                if t_large > t_small:  # (else host noise swamped the loop: no figure)
                    loop_insns = insns / n * (large - small)  # the same loop, per iteration
                    qemu_ips = loop_insns / (t_large - t_small)
                    self.add(f"{kind}_qemu_mips", "M instructions/s", qemu_ips / 1e6)
                    self.add(f"{kind}_bare_over_qemu", "ratio", insns / bare / qemu_ips)
                    self.add(f"{kind}_sim_over_qemu", "ratio", insns / sim.seconds / qemu_ips)
        compute_ips = self.figures["compute_bare_mips"].values[-1] * 1e6

        cpuid = _run([f"cpuid {s.exits}"], self.hotpath)
        pio = _run([f"pio {s.exits}"], self.hotpath)
        ioreq = _run_user(f"pio {s.exits}", self.hotpath)
        for name, seconds in (("cpuid", cpuid.seconds), ("pio_hv", pio.seconds),
                              ("ioreq", ioreq)):  # fmt: skip
            self.add(f"{name}_per_s", "per host second", s.exits / seconds)
            self.add(f"{name}_insns", "compute-loop instructions", seconds / s.exits * compute_ips)

        one = _run([f"memory {s.scaling}"], self.hotpath)
        eight = _run([f"memory {s.scaling}"] * 8, self.hotpath)
        tsc = one.hv.profile.tsc_hz
        self.add("host_s_1vm", "host s", one.seconds)
        self.add("host_s_8vm", "host s", eight.seconds)
        self.add("sim_ms_1vm", "simulated ms", one.hv.now() / tsc * 1e3)
        self.add("sim_ms_8vm", "simulated ms", eight.hv.now() / tsc * 1e3)
        self.add("host_per_sim_1vm", "host s per simulated s", one.seconds / (one.hv.now() / tsc))
        self.add(
            "host_per_sim_8vm", "host s per simulated s", eight.seconds / (eight.hv.now() / tsc)
        )
        self.add("scaling_8_over_1", "ratio", eight.seconds / one.seconds)

        if self.linux:
            sim_s = _linux_seconds(self.hotpath)
            self.add("linux_sim_s", "host s", sim_s)
            if self.qemu:
                qemu_s = _qemu_linux_seconds(self.qemu)
                self.add("linux_qemu_s", "host s", qemu_s)
                self.add("linux_sim_over_qemu", "ratio", sim_s / qemu_s)

    def report(self, out: Callable[[str], None]) -> None:
        f = _OrNone(self.figures)
        pct = "{:.0%}"
        cols = [("bare Unicorn", "bare_mips"), ("acrn-sim", "sim_mips")]
        ratios = [("acrn-sim/bare", "sim_over_bare")]
        if self.qemu:
            cols.append(("QEMU TCG", "qemu_mips"))
            ratios += [("bare/QEMU", "bare_over_qemu"), ("acrn-sim/QEMU", "sim_over_qemu")]
        out("guest code, million instructions per host second (MIPS):")
        out(
            (
                f"  {'loop':<8} {'instructions':>12}" + "".join(f"  {c:<20}" for c, _ in cols)
            ).rstrip()
        )
        for kind in ("memory", "compute"):
            out(
                f"  {kind:<8} {self.insns[kind] / 1e6:>10.1f} M"
                + "".join(f"  {f[f'{kind}_{key}'].show():<20}" for _, key in cols).rstrip()
            )
        out("  ratios, run by run:" + "".join(f"  {c:<17}" for c, _ in ratios).rstrip())
        for kind in ("memory", "compute"):
            out(
                f"    {kind:<17}"
                + "".join(f"  {f[f'{kind}_{key}'].show(pct):<17}" for _, key in ratios).rstrip()
            )
        out("  (memory: a loop that loads and stores an array, typical code; compute: a")
        out("   5-instruction register-only loop, the worst case for per-block accounting)")
        if self.qemu:
            out("  (QEMU: the difference of a large and a small iteration count, so that its")
            out("   start-up and the guest's boot cancel out)")

        ips = f["compute_bare_mips"]
        out("exits per host second, and one exit's host time in instructions of the compute loop")
        out(f"(bare Unicorn ran that loop at {ips.show()} MIPS in this run):")
        rows = (
            ("CPUID exit (emulated in place)", "cpuid", TARGET_CPUID_INSNS),
            ("PIO exit completed in the hypervisor", "pio_hv", None),
            ("PIO round trip through the IOREQ path", "ioreq", TARGET_IOREQ_INSNS),
        )
        for label, key, target in rows:
            cost = f"{f[key + '_insns'].show()} instructions"
            if target is not None:
                cost += f" (target <= {target:,})"
            out(f"  {label:<38} {f[key + '_per_s'].show():<26} = {cost}")
        out("  (the IOREQ path: the User VM's exit, the Service VM's HSM and device model, back)")

        out("8-VM scenario (8 pre-launched VMs, one pCPU each, the same work per VM):")
        for n, key in ((1, "1vm"), (8, "8vm")):
            out(
                f"  {n} VM{'s: ' if n > 1 else ':  '}{f['host_s_' + key].show('{:.3f}')} host s "
                f"for {f['sim_ms_' + key].median:.3f} simulated ms "
                f"({f['host_per_sim_' + key].show('{:.2f}')} host s per simulated s)"
            )
        out(f"  host time 8 VMs / 1 VM = {f['scaling_8_over_1'].show('{:.2f}')} (linear: 8.00)")
        if self.linux:
            out(f"boot Linux (guests/images/linux, 1 vCPU, {LINUX_MEM_MIB} MiB, to /init and "
                "power-off):")  # fmt: skip
            out(f"  acrn-sim (a User VM, -k/-r/-B)  {f['linux_sim_s'].show('{:.2f}')} host s")
            if self.qemu:
                out(f"  QEMU TCG (-kernel/-initrd)      {f['linux_qemu_s'].show('{:.2f}')} host s")
                out(f"  acrn-sim / QEMU = {f['linux_sim_over_qemu'].show('{:.2f}')}")

    def to_json(self, runs: int) -> dict:
        return {
            "engine": unicorn_engine.describe(),
            "library": unicorn_engine.loaded_library(),
            "hotpath": self.hotpath,
            "runs": runs,
            "python": platform.python_version(),
            "qemu": qemu_version(self.qemu) if self.qemu else None,
            "sizes": asdict(self.sizes),
            "instructions": self.insns,
            "targets": {"cpuid_insns": TARGET_CPUID_INSNS, "ioreq_insns": TARGET_IOREQ_INSNS},
            "figures": {
                name: {
                    "unit": fig.unit,
                    "median": fig.median,
                    "min": min(fig.values),
                    "max": max(fig.values),
                    "values": fig.values,
                }
                for name, fig in self.figures.items()
            },
        }


def find_qemu(qemu: str | None = "qemu-system-x86_64") -> str | None:
    """The QEMU to compare with: a path or a name on PATH; None to leave it out."""
    return shutil.which(qemu) if qemu else None


def run_bench(
    out: Callable[[str], None] = print,
    hotpath: str = "native",
    runs: int = 5,
    sizes: Sizes | None = None,
    qemu: str | None = "qemu-system-x86_64",
    json_path: str | None = None,
    linux: bool = False,
) -> dict[str, float]:
    """Run every case `runs` times; print the report; write the figures as JSON if asked.
    Returns each figure's median."""
    qemu_path = find_qemu(qemu)
    bench = Bench(hotpath, sizes or Sizes(), qemu_path, linux)
    out(f"acrn-sim bench: engine {unicorn_engine.describe()}, {hotpath} hot path")
    out(
        f"each case {runs} time{'s' if runs > 1 else ''}, interleaved; a figure is the median "
        "(min-max) of the runs"
    )
    if qemu_path:
        compared = f"QEMU TCG ({qemu_version(qemu_path)})"
    else:
        compared = f"no QEMU ({qemu} not found)" if qemu else "no QEMU (--no-qemu)"
    out(f"references in the same run: bare Unicorn (the same library, no hooks), {compared}")
    for _ in range(runs):
        bench.one_run()
    bench.report(out)
    if json_path is not None:
        with open(json_path, "w") as fh:
            json.dump(bench.to_json(runs), fh, indent=1, sort_keys=True)
            fh.write("\n")
    return {name: fig.median for name, fig in bench.figures.items()}
