"""`acrn-sim lab`: the classroom labs of docs/labs/, and the checker of their exercises.

    acrn-sim lab list
    acrn-sim lab check N FILE

The checker runs the student's work (a timing profile or a scenario script, as the lab's
exercise asks) through the simulator and verifies what it does, never the text of an answer.
It prints one line per check, `ok` or `not ok` with what was expected and what the run gave,
and exits 0 only when every check passes.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from acrn_sim.sim import ConfigError
from acrn_sim.sim.timing import DEFAULT_PROFILE, TimingProfile

ROOT = Path(__file__).resolve().parents[1]
TIMING = "guests/images/timing.elf"
LINUX_KERNEL = "guests/images/linux/bzImage"
LINUX_INITRD = "guests/images/linux/initramfs.cpio.gz"


@dataclass
class Run:
    status: int
    stdout: str
    stderr: str
    stats: dict


def run(*args: str) -> Run:
    """`acrn-sim run ARGS --stats FILE` in a fresh process, from the repository's top."""
    with tempfile.TemporaryDirectory() as tmp:
        stats_file = Path(tmp) / "stats.json"
        p = subprocess.run(
            [
                sys.executable,
                "-m",
                "acrn_sim.scenarios.cli",
                "run",
                *args,
                "--stats",
                str(stats_file),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        stats = json.loads(stats_file.read_text()) if stats_file.exists() else {}
    return Run(p.returncode, p.stdout, p.stderr, stats)


def measured(text: str, what: str) -> int | None:
    """timing.elf's `WHAT: min N ...` line (the first VM that printed it, in --consoles form)."""
    m = re.search(rf"{re.escape(what)}: min (\d+)", text)
    return int(m.group(1)) if m else None


def check(ok: bool, text: str) -> tuple[bool, str]:
    return ok, text


# ------------------------------------------------------------------------- lab 1
def lab1(path: Path) -> list[tuple[bool, str]]:
    """A timing profile whose CPUID round trip, as the guest measures it, is 3,000 +/- 50
    cycles, with the hardware transitions (vmexit_hw, vmentry_hw) left as they are."""
    try:
        profile = TimingProfile.load(path)
    except ConfigError as e:
        return [check(False, f"the profile loads ({e})")]
    default = TimingProfile.load(DEFAULT_PROFILE)
    out = []
    for name in ("vmexit_hw", "vmentry_hw"):
        same = profile.cycles[name] == default.cycles[name]
        out.append(check(same, f"{name} unchanged ({profile.cycles[name]}, default "
                               f"{default.cycles[name]})"))  # fmt: skip
    r = run(TIMING, "--load-order", "pre", "--profile", str(path))
    cpuid = measured(r.stdout, "cpuid")
    out.append(check(r.status == 0 and cpuid is not None, "timing.elf runs and measures CPUID"))
    if cpuid is not None:
        out.append(check(abs(cpuid - 3000) <= 50, f"CPUID round trip 3000 +/- 50 (got {cpuid})"))
        rdmsr, base = (
            measured(r.stdout, "rdmsr"),
            measured(run(TIMING, "--load-order", "pre").stdout, "rdmsr"),
        )
        out.append(check(rdmsr == base, f"the RDMSR round trip is untouched ({rdmsr}, was {base})"))
    return out


# ---------------------------------------------------------------------- labs 2-5
def _scenario_configs(path: Path):
    """The VMs a scenario script gives, with the command line's defaults."""
    from acrn_sim.scenarios.cli import build_parser, load_scenario

    opts = build_parser().parse_args(["run", str(path)])
    opts.mem, opts.params, opts.profile_obj = 32 << 20, {}, TimingProfile.load()
    return load_scenario(str(path), opts)


def lab2(path: Path) -> list[tuple[bool, str]]:
    """A scenario with two User VMs, one of them running timing.elf, in which that guest's port
    I/O round trip through the Service VM is at least 1.5 times what it is alone, with the
    default costs (the device models of both VMs share Service VM vCPU 0)."""
    configs = _scenario_configs(path)
    users = [c for c in configs if c.load_order == "POST_LAUNCHED_VM"]
    out = [check(len(users) == 2, f"two User VMs ({len(users)})")]
    probe = [c for c in users if c.image.endswith("timing.elf")]
    out.append(check(len(probe) == 1, "one of them runs timing.elf"))
    r = run(str(path), "--consoles")
    shared = measured(r.stdout, "out to vUART")
    alone = measured(run(TIMING).stdout, "out to vUART")
    out.append(check(r.status == 0 and shared is not None, "the scenario runs to its end"))
    if shared is not None and alone:
        out.append(check(shared >= 1.5 * alone,
                         f"round trip {shared} >= 1.5 x {alone} alone"))  # fmt: skip
    return out


def lab3(path: Path) -> list[tuple[bool, str]]:
    """A scenario in which timing.elf's I/O round trip is shorter than with notification by
    the notify hypercall's exit and the vCPU's wake-up, less noticing COMPLETE: polling."""
    configs = _scenario_configs(path)
    users = [c for c in configs if c.image.endswith("timing.elf")]
    out = [check(len(users) == 1, "timing.elf runs as a VM")]
    if not users:
        return out
    out.append(check(users[0].io_completion_polling, "its I/O completes by polling"))
    r = run(str(path), "--consoles")
    got = measured(r.stdout, "out to vUART")
    notify = measured(run(TIMING).stdout, "out to vUART")
    c = TimingProfile.load().cycles
    saved = c["vmexit_hw"] + c["vmexit_dispatch"] + c["vcpu_wakeup"] - c["ioreq_poll_notice"]
    if got is not None and notify:
        out.append(check(notify - got == saved, f"saves {saved} cycles (got {notify - got})"))
    else:
        out.append(check(False, "timing.elf measured its round trip"))
    return out


def lab4(path: Path) -> list[tuple[bool, str]]:
    """A scenario in which the latency guest (workload.elf "cyclic ...", named LATENCY_VM)
    wakes within 1 us at worst while a busy User VM and a busy Service VM run: an RTVM on a
    pCPU of its own, with LAPIC passthrough."""
    configs = _scenario_configs(path)
    rt = next((c for c in configs if c.name == "LATENCY_VM"), None)
    out = [check(rt is not None, "a VM named LATENCY_VM")]
    if rt is None:
        return out
    others = {p for c in configs if c is not rt for p in c.cpu_affinity}
    out.append(check(not set(rt.cpu_affinity) & others, "its pCPUs are its own"))
    out.append(check(rt.vm_type == "RTVM" and rt.lapic_passthrough, "an RTVM with LAPIC PT"))
    busy = [c for c in configs if c is not rt and c.load_order == "POST_LAUNCHED_VM"]
    out.append(check(bool(busy), "another User VM runs beside it"))
    r = run(str(path), "--consoles")
    m = re.search(r"^result samples=\d+ .*max=(\d+)", r.stdout, re.M)
    if m:
        hz = TimingProfile.load().tsc_hz
        us = int(m.group(1)) / hz * 1e6
        out.append(check(us <= 1.0, f"worst wake-up {us:.2f} us <= 1 us"))
    else:
        out.append(check(False, "the latency guest printed its result line"))
    return out


def _vbench_p50(stdout: str) -> int | None:
    m = re.search(r"result .*?lat_p50=(\d+)", stdout)
    return int(m.group(1)) if m else None


def lab5(path: Path) -> list[tuple[bool, str]]:
    """A scenario running vbench on virtio-rnd at batch 8 whose per-request latency is at
    least 25% below the user-space back end's: the in-kernel back end (VBS-K)."""
    configs = _scenario_configs(path)
    vm = next((c for c in configs if c.image.endswith("vbench.elf")), None)
    out = [check(vm is not None, "vbench.elf runs as a VM")]
    if vm is None:
        return out
    rnd = [d for d in vm.devices if "virtio-rnd" in d or "virtio-rng" in d]
    out.append(check(len(rnd) == 1, f"one virtio-rnd device ({vm.devices})"))
    out.append(check("batch=8" in vm.cmdline, "vbench at batch 8"))
    r = run(str(path), "--consoles")
    got = _vbench_p50(r.stdout)
    base = _vbench_p50(
        run("guests/images/vbench.elf", "--cmdline", vm.cmdline, "-s", "6,virtio-rnd").stdout
    )
    if got is not None and base:
        out.append(check(got <= 0.75 * base, f"p50 {got} <= 0.75 x {base} (user space)"))
    else:
        out.append(check(False, "vbench printed its result line"))
    return out


# ------------------------------------------------------------------------- lab 6
SENSOR_EMULATED = ("guests/images/sensor.elf", "--pdev", "00:1f.0,sensor", "-s", "7,sensor")


def _sensor_p50(stdout: str) -> int | None:
    m = re.search(r"^result n=(\d+) p50=(\d+) .*errors=0", stdout, re.M)
    return int(m.group(2)) if m else None


def lab6(path: Path) -> list[tuple[bool, str]]:
    """A scenario running sensor.elf in a User VM whose requests take at most half as long
    (p50) as with the device model's emulated sensor, its DMA translated by VT-d: the board's
    sensor passed through (-s 7,passthru,00/1f/0)."""
    configs = _scenario_configs(path)
    vm = next((c for c in configs if c.image.endswith("sensor.elf")), None)
    out = [check(vm is not None, "sensor.elf runs as a VM")]
    if vm is None:
        return out
    out.append(check(vm.load_order == "POST_LAUNCHED_VM", f"a User VM ({vm.load_order})"))
    r = run(str(path), "--consoles")
    got = _sensor_p50(r.stdout)
    out.append(check(r.status == 0 and got is not None, "the driver got its samples, no errors"))
    vtd = r.stats.get("vtd", {})
    translations = sum(u["translations"] for u in vtd.get("units", []))
    out.append(check(translations > 0 and not vtd.get("faults"),
                     f"the device's DMA went through VT-d ({translations} translations, "
                     f"{len(vtd.get('faults', []))} faults)"))  # fmt: skip
    emulated = _sensor_p50(run(*SENSOR_EMULATED).stdout)
    if got is not None and emulated:
        out.append(check(got <= 0.5 * emulated, f"p50 {got} <= 0.5 x {emulated} (emulated)"))
    return out


# ------------------------------------------------------------------------- lab 7
def _stage(stderr: str, name: str) -> float | None:
    m = re.search(rf"^\s*{re.escape(name)}\s+[\d.]+\s+([\d.]+)", stderr, re.M)
    return float(m.group(1)) if m else None


def lab7(path: Path) -> list[tuple[bool, str]]:
    """A scenario booting the committed Linux as a User VM whose kernel gets from start_kernel
    to /init at least 20% faster than with `console=ttyS0` alone, still reaching /init: every
    character the kernel prints goes through the device model's UART."""
    configs = _scenario_configs(path)
    vm = next((c for c in configs if c.image.endswith("bzImage")), None)
    out = [check(vm is not None, "a User VM boots guests/images/linux/bzImage")]
    if vm is None:
        return out
    r = run(str(path), "--report")
    out.append(check(r.status == 0 and "reached /init" in r.stdout, "/init runs and exits 0"))
    base = run("-k", LINUX_KERNEL, "-r", LINUX_INITRD, "-B", "console=ttyS0", "--mem", "128M",
               "--report")  # fmt: skip
    got, ref = (
        _stage(r.stderr, "start_kernel to /init"),
        _stage(base.stderr, "start_kernel to /init"),
    )
    if got is not None and ref:
        out.append(
            check(got <= 0.8 * ref, f"start_kernel to /init {got:.0f} us <= 0.8 x {ref:.0f}")
        )
    else:
        out.append(check(False, "--report timed the boot's stages"))
    return out


@dataclass(frozen=True)
class Lab:
    number: int
    title: str
    doc: str
    exercise: str  # what FILE is
    check: Callable[[Path], list[tuple[bool, str]]]


LABS = {
    lab.number: lab
    for lab in (
        Lab(1, "A VM exit: CPUID", "docs/labs/lab1-vm-exit.md", "a timing profile (.toml)", lab1),
        Lab(2, "The nine-step I/O path", "docs/labs/lab2-io-path.md", "a scenario script", lab2),
        Lab(
            3,
            "Notification against polling",
            "docs/labs/lab3-polling.md",
            "a scenario script",
            lab3,
        ),  # fmt: skip
        Lab(
            4,
            "Schedulers and an RTVM's worst case",
            "docs/labs/lab4-rtvm.md",
            "a scenario script",
            lab4,
        ),  # fmt: skip
        Lab(
            5, "Virtio: VBS-U against VBS-K", "docs/labs/lab5-virtio.md", "a scenario script", lab5
        ),  # fmt: skip
        Lab(
            6,
            "Passthrough and a VT-d fault",
            "docs/labs/lab6-passthrough.md",
            "a scenario script",
            lab6,
        ),  # fmt: skip
        Lab(
            7,
            "Boot a Linux User VM and time its boot chain",
            "docs/labs/lab7-linux.md",
            "a scenario script",
            lab7,
        ),  # fmt: skip
    )
}


def list_labs() -> str:
    return "\n".join(f"  {n}  {lab.title}  ({lab.doc}; exercise: {lab.exercise})"
                     for n, lab in sorted(LABS.items()))  # fmt: skip


def check_lab(number: int, file: str) -> int:
    lab = LABS.get(number)
    if lab is None:
        raise ConfigError(f"lab {number}: no such lab (acrn-sim lab list)")
    path = Path(file)
    if not path.is_file():
        raise ConfigError(f"lab {number}: {file} is not a file ({lab.exercise} expected)")
    if lab.exercise.startswith("a timing profile"):
        try:
            tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"lab {number}: {file} is not a TOML profile ({e})") from None
    elif path.suffix != ".py":
        raise ConfigError(f"lab {number}: {file}: {lab.exercise} expected")
    print(f"lab {number}: {lab.title}: checking {file}")
    results = lab.check(path.resolve())
    for ok, text in results:
        print(f"  {'ok    ' if ok else 'not ok'}  {text}")
    passed = all(ok for ok, _ in results)
    print(f"lab {number}: {'PASS' if passed else 'not yet'}")
    return 0 if passed else 1
