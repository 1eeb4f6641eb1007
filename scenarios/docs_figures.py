"""Regenerates every figure and table that README.md and docs/ quote from a command, so that the
docs say what the commands print.

    python -m acrn_sim.scenarios.docs_figures          # rewrite the figures (and the PNGs)
    python -m acrn_sim.scenarios.docs_figures --check  # exit 1, naming each stale figure
    python -m acrn_sim.scenarios.docs_figures --list   # the figures, their files and commands

A figure is the text between two Markdown comments, which render as nothing:

    <!-- figure: NAME -->
    ...what the figure's function makes...
    <!-- /figure -->

Each function below runs the command the docs show (the real command line, in a child
process, or the function it names) and formats what it prints; the numbers in the prose
around a table are in the figure too when they come from a run. PNG files are drawn only when
rewriting: their pixels depend on matplotlib's version, and their data is what the tests of
scenarios/plots.py check.
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START = re.compile(r"^<!-- figure: ([\w-]+) -->$", re.M)
END = "<!-- /figure -->"


@dataclass(frozen=True)
class Figure:
    name: str
    file: str  # relative to the repository
    command: str  # what the docs say to run
    make: Callable[[], str]


def acrn_sim(*args: str) -> tuple[str, str]:
    """`acrn-sim ARGS` as a user runs it: (stdout, stderr); a failure is an error."""
    p = subprocess.run(
        [sys.executable, "-m", "acrn_sim.scenarios.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if p.returncode != 0:
        raise RuntimeError(f"acrn-sim {' '.join(args)} exited {p.returncode}: {p.stderr[-300:]}")
    return p.stdout, p.stderr


def _round_trip(*args: str) -> int:
    """The guest-measured PIO round trip timing.elf prints ('out to vUART: min N ...')."""
    out, _ = acrn_sim("run", *args)
    return int(re.search(r"out to vUART: min (\d+)", out).group(1))


def fig_explain() -> str:
    out, err = acrn_sim("run", "guests/images/hello.elf", "--explain")
    first = out.splitlines()[0]
    return "\n".join(["```", "$ acrn-sim run guests/images/hello.elf --explain", first, "...",
                      err.rstrip("\n"), "```"])  # fmt: skip


def fig_round_trips() -> str:
    base = _round_trip("guests/images/timing.elf")
    polling = _round_trip("guests/images/timing.elf", "--polling")
    busy = _round_trip("guests/images/timing.elf", "--service-vm-busy")
    wakeup = _round_trip("guests/images/timing.elf", "--cost", "dm_wakeup=48000")
    two = _round_trip("scenarios/two_user_vms.py")
    return "\n".join([
        "| command | guest-measured PIO round trip to the device model |",
        "|---|---|",
        f"| `acrn-sim run guests/images/timing.elf` | {base:,} cycles ({base / 2400:.1f} us) |",
        f"| `... --polling` (GUEST_FLAG_IO_COMPLETION_POLLING) | {polling:,}: polling saves the "
        f"notify hypercall and the wake-up, {base - polling:,} cycles (~5,000 as ACRN measured) |",
        f"| `... --service-vm-busy` | {busy:,}: the device model's thread competes with the "
        "Service VM's own workload |",
        f"| `... --cost dm_wakeup=48000` | {wakeup:,}: twice the device model's wake-up |",
        "",
        "`--report` adds the I/O latency broken into these steps (mean, p50, p99, max) per VM and",
        "device, numbered as `--explain` numbers them. `acrn-sim run scenarios/two_user_vms.py`",
        "puts a second User VM that floods the device model beside the timing guest: its round",
        f"trip grows to {two:,} cycles, because HSM and both device models share Service VM",
        "vCPU 0 (the HSM interrupt cuts into the other device model's work, and equal-priority",
        "device-model threads are served in arrival order).",
    ])  # fmt: skip


def fig_report() -> str:
    out, err = acrn_sim("run", "guests/images/timing.elf", "--load-order", "pre", "--report")
    blocks = err.split("\n\n")
    cpuid = int(re.search(r"cpuid: min (\d+)", out).group(1))
    return "\n".join([
        "```",
        "$ acrn-sim run guests/images/timing.elf --load-order pre --report",
        out.rstrip("\n"),
        blocks[0],
        "",
        blocks[1],
        "",
        blocks[2].splitlines()[0],
        "...",
        "```",
        "",
        f"The guest measured its own CPUID round trip with RDTSC: {cpuid:,} cycles, in the",
        "~2,000-2,400 cycles ACRN measured on Tiger Lake. The table shows, per VM and exit",
        "reason, what ACRN's `acrnalyze` shows (count, cycles, share) plus latency percentiles.",
    ])  # fmt: skip


def fig_rtvm() -> str:
    out, _ = acrn_sim("run", "scenarios/rtvm_latency.py")
    summary = out[out.index("Timer wake-up latency") :].rstrip("\n")
    return "\n".join(["```", "$ acrn-sim run scenarios/rtvm_latency.py", "...  (the guest's own",
                      "     lines, each configuration's)", summary, "```"])  # fmt: skip


def _cluster_io_p99_us(*args: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        stats = Path(tmp) / "s.json"
        acrn_sim("run", "scenarios/automotive_sdc.py", *args, "--stats", str(stats))
        doc = json.loads(stats.read_text())
    row = next(r for r in doc["scenario"]["vms"] if r["vm"] == "CLUSTER")
    return row["io_p99"] * 1e6 / doc["tsc_hz"]


def fig_cockpit() -> str:
    out, _ = acrn_sim("run", "scenarios/automotive_sdc.py")
    with_inherit = _cluster_io_p99_us("--scheduler", "prio")
    without = _cluster_io_p99_us("--scheduler", "prio", "--set", "inherit=no")
    return "\n".join([
        "```",
        "$ acrn-sim run scenarios/automotive_sdc.py",
        out.rstrip("\n"),
        "```",
        "",
        "A row per User VM: its pCPUs and type; for the frame-driven VMs the number of frames, the",
        "deadline misses (a frame still running at the next frame's release) and the frame",
        "response time from release to done (p50, p99, max); then the VM's I/O round trips",
        "through the Service VM (the latency of its port I/O exits). Change the placement, the",
        "scheduler or the Service VM's policy and rerun: `--set cluster_rt=no --set cluster=3`",
        "puts the cluster on the rear seats' pCPU as a standard VM (it then misses deadlines);",
        "under `--scheduler prio`, `--set inherit=no` turns off device-model priority",
        f"inheritance, and the cluster's I/O p99 rises from {with_inherit:.1f} to {without:.1f} us",
        "because its requests queue behind the infotainment VM's storage work.",
    ])  # fmt: skip


def fig_smc() -> str:
    plain, _ = acrn_sim("run", "guests/images/smc.elf")
    smc, _ = acrn_sim("run", "guests/images/smc.elf", "--detect-smc")
    left = ["$ acrn-sim run guests/images/smc.elf", *plain.splitlines()]
    right = ["$ acrn-sim run guests/images/smc.elf --detect-smc", *smc.splitlines()]
    width = max(len(x) for x in left) + 4
    rows = [f"{a:<{width}}{b}".rstrip() for a, b in zip(left, right, strict=False)]
    return "\n".join(["```", *rows, "```"])


def fig_virtio_report() -> str:
    cmd = ["run", "guests/images/vbench.elf", "--cmdline", "dev=rng n=512", "-s", "6,virtio-rnd",
           "--report"]  # fmt: skip
    _, err = acrn_sim(*cmd)
    table = err[err.index("Virtio devices: per request") :].split("\n\n")[0]
    shown = 'acrn-sim run guests/images/vbench.elf --cmdline "dev=rng n=512" -s 6,virtio-rnd'
    return "\n".join(["```", f"$ {shown} --report", "...", table, "```"])


def fig_virtio_bench() -> str:
    from acrn_sim.scenarios import virtio_bench

    return virtio_bench.markdown(virtio_bench.collect()).rstrip("\n")


def fig_nine_steps() -> str:
    """docs/architecture.md's table: each step's function and where it is."""
    from acrn_sim.guests.service_vm import dm, hsm
    from acrn_sim.hv.common import hv_main
    from acrn_sim.hv.dm import io_req
    from acrn_sim.hv.guest import vmx_io

    rows = [
        (1, "the `in`/`out` exits (reason 30); the hypervisor decodes the access",
         vmx_io.pio_instr_vmexit_handler, "pio_instr_vmexit_handler"),
        (2, "the request goes into the vCPU's slot, PENDING; upcall 0xF3 to Service VM vCPU 0",
         io_req.acrn_insert_request, "acrn_insert_request"),
        (3, "HSM's interrupt handler queues the dispatch work", hsm.Hsm.ioreq_intr_handler,
         "Hsm.ioreq_intr_handler"),
        (4, "HSM marks it PROCESSING and wakes the device model's I/O thread",
         hsm.Hsm.ioreq_dispatch, "Hsm.ioreq_dispatch"),
        (5, "the device model finds the device by port and calls its emulation",
         dm.DeviceModel.handle_vmexit, "DeviceModel.handle_vmexit"),
        (6, "the device writes the result into the slot", dm.DeviceModel.emulate_inout,
         "DeviceModel.emulate_inout"),
        (7, "COMPLETE, then HC_NOTIFY_REQUEST_FINISH (unless the VM polls)",
         hsm.Hsm.complete_request, "Hsm.complete_request"),
        (8, "the hypervisor copies the value back, the slot is FREE",
         io_req.dm_emulate_io_complete, "dm_emulate_io_complete"),
        (9, "RIP past the instruction, VM entry", hv_main.vcpu_resume, "vcpu_resume"),
    ]  # fmt: skip
    lines = ["| step | name | what happens | function | where |", "|---|---|---|---|---|"]
    for n, what, fn, name in rows:
        path = Path(inspect.getsourcefile(fn)).resolve().relative_to(ROOT).as_posix()
        line = inspect.getsourcelines(fn)[1]
        lines.append(f"| {n} | `{io_req.STEP_NAMES[n]}` | {what} | `{name}` | {path}:{line} |")
    return "\n".join(lines)


FIGURES = [
    Figure("explain", "README.md", "acrn-sim run guests/images/hello.elf --explain", fig_explain),
    Figure("round-trips", "README.md", "acrn-sim run guests/images/timing.elf [...]",
           fig_round_trips),
    Figure("report", "README.md", "acrn-sim run guests/images/timing.elf --load-order pre "
           "--report", fig_report),
    Figure("rtvm", "README.md", "acrn-sim run scenarios/rtvm_latency.py", fig_rtvm),
    Figure("cockpit", "README.md", "acrn-sim run scenarios/automotive_sdc.py", fig_cockpit),
    Figure("smc", "README.md", "acrn-sim run guests/images/smc.elf [--detect-smc]", fig_smc),
    Figure("nine-steps", "docs/architecture.md", "(the code: inspect)", fig_nine_steps),
    Figure("virtio-report", "docs/virtio.md", "acrn-sim run guests/images/vbench.elf ... "
           "--report", fig_virtio_report),
    Figure("virtio-bench", "docs/virtio.md", "python -m acrn_sim.scenarios.virtio_bench",
           fig_virtio_bench),
]  # fmt: skip


def _draw_pngs(root: Path) -> None:
    """The pictures the docs show: drawn from the same runs, when rewriting."""
    from acrn_sim.scenarios import plots, virtio_bench

    with tempfile.TemporaryDirectory() as tmp:
        stats = Path(tmp) / "s.json"
        acrn_sim("run", "scenarios/two_user_vms.py", "--stats", str(stats))
        doc = plots.load_stats(str(stats))
    out = root / "docs" / "plots"
    plots.plot_all(doc, out)
    virtio_bench.plot(virtio_bench.collect(), str(root / "docs" / "virtio-bench.png"))


# ------------------------------------------------------------------------------ regions
class DocsError(Exception):
    """A figure's markers are missing or broken."""


def regions(text: str, where: str) -> dict[str, tuple[int, int]]:
    """Figure name -> (start, end) of its content in `text`."""
    out: dict[str, tuple[int, int]] = {}
    for m in START.finditer(text):
        name = m.group(1)
        begin = m.end() + 1
        end = text.find("\n" + END, m.end())
        nxt = START.search(text, m.end())
        if end < 0 or (nxt is not None and nxt.start() < end):
            raise DocsError(f"{where}: figure {name!r} has no {END} before the next figure")
        if name in out:
            raise DocsError(f"{where}: figure {name!r} appears twice")
        out[name] = (begin, end + 1)
    return out


def update(root: Path, figures: list[Figure], write: bool) -> list[str]:
    """Make each figure and compare it with the docs under `root` (rewrite them when
    `write`): the names of the figures that differed."""
    stale = []
    by_file: dict[str, list[Figure]] = {}
    for f in figures:
        by_file.setdefault(f.file, []).append(f)
    for file, figs in by_file.items():
        path = root / file
        text = path.read_text()
        found = regions(text, file)
        for f in figs:
            if f.name not in found:
                raise DocsError(f"{file}: no figure {f.name!r} (<!-- figure: {f.name} -->)")
        new = text
        for f in sorted(figs, key=lambda f: -found[f.name][0]):  # from the end: offsets hold
            start, end = found[f.name]
            content = f.make().rstrip("\n") + "\n"
            if new[start:end] != content:
                stale.append(f"{file}: {f.name}")
                new = new[:start] + content + new[end:]
        if write and new != text:
            path.write_text(new)
    return stale


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m acrn_sim.scenarios.docs_figures",
                                description=__doc__.splitlines()[0])  # fmt: skip
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if stale")
    p.add_argument("--list", action="store_true", help="list the figures and their commands")
    p.add_argument("--only", action="append", default=[], metavar="NAME", help="one figure")
    p.add_argument("--root", default=str(ROOT), help=argparse.SUPPRESS)  # tests: a copy
    opts = p.parse_args(argv)
    if opts.list:
        for f in FIGURES:
            print(f"{f.name:<14} {f.file:<22} {f.command}")
        return 0
    figures = [f for f in FIGURES if not opts.only or f.name in opts.only]
    unknown = set(opts.only) - {f.name for f in FIGURES}
    if unknown:
        print(f"docs_figures: error: no figure {sorted(unknown)[0]!r}", file=sys.stderr)
        return 2
    try:
        stale = update(Path(opts.root), figures, write=not opts.check)
    except (DocsError, OSError, RuntimeError) as e:
        print(f"docs_figures: error: {e}", file=sys.stderr)
        return 2
    for s in stale:
        verb = (
            "is stale (python -m acrn_sim.scenarios.docs_figures rewrites it)"
            if opts.check
            else "rewritten"
        )
        print(f"docs_figures: {s} {verb}", file=sys.stderr if opts.check else sys.stdout)
    if not opts.check and not opts.only:
        _draw_pngs(Path(opts.root))
    return 1 if opts.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
