"""The `acrn-sim` command line.

    acrn-sim run IMAGE|SCENARIO.py|SCENARIO.xml [--load-order pre|post] [--mem SIZE]
    acrn-sim run -k BZIMAGE [-r INITRD] [-B BOOTARGS] [--mem SIZE] [--cpu-affinity 1,2] ...
                [--cmdline STR] [--until SIMTIME] [--report] [--explain] [--stats FILE]
                [--csv DIR] [--plot DIR] [--trace FILE] [--no-progress]
                [--seed N] [--profile FILE] [--cost NAME=CYCLES]... [--service-vm-busy]
                [--consoles] [--hotpath auto|native|python] [--detect-smc] [--image NAME=PATH]...
                [-s SLOT,CLASS[,OPTIONS]]... [--virtio_poll NS]
                [--pdev BB:DD.F,KIND[,KEY=VALUE]]... [--posted-interrupts] [--gdb PORT [--gdb-wait]]
    acrn-sim plot STATS.json [-o DIR]
    acrn-sim plot RESULTS.parquet [--x PARAM] [--y METRIC] [-o FILE]
    acrn-sim sweep TARGET --param NAME=V1,V2,... --out RESULTS.parquet [-- RUN OPTIONS]
    acrn-sim lab list | lab check N FILE
    acrn-sim scenario export SCENARIO.py [-o FILE] [--set KEY=VALUE]...
    acrn-sim profile [--profile FILE]
    acrn-sim bench [--hotpath native|python] [--runs N] [--json FILE] [--qemu PATH|--no-qemu]
                   [--quick]
    acrn-sim --version

Exit status of `run`: the exit code the guest wrote to port 0xF4 (0-255), or
  2    usage or configuration error (bad option, missing or invalid image, bad scenario)
  124  the simulated-time limit (--until) was reached first
  125  the VM under study triple-faulted or crashed (the others kept running)
  126  every vCPU halted with nothing left that could wake it
  70   internal error: the model itself failed (a bug: the message asks to report it); the
       statistics and trace files are still written, up to the failure
  130  interrupted (Ctrl-C); the statistics and trace files are still written
A scenario script with several configurations (RUNS) runs each in turn; each output then
gets the configuration's name: --stats out.json writes out.shared.json and out.dedicated.json,
--csv and --plot DIR write DIR/shared/ and DIR/dedicated/.
The run itself is scenarios/api.py's Simulation: this module turns options into one, and its
results into text and files.
"""

from __future__ import annotations

import argparse
import os
import re
import select
import signal
import sys
import tempfile
import traceback
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path

from acrn_sim.hv.common.vm import SERVICE_VM, VmConfig
from acrn_sim.hv.hypervisor import Hypervisor
from acrn_sim.scenarios import (
    board,
    device_model,
    pre_launched,
    service_vm,
    user_vm,
    validate,
    with_service_vm,
)
from acrn_sim.scenarios.api import (
    EXIT_CRASH,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_STALLED,
    EXIT_TIME_LIMIT,
    Result,
    Scenario,
    Simulation,
    explain_first_io,
    one_line,
    write_atomic,
)
from acrn_sim.scenarios.progress import Progress
from acrn_sim.scenarios.virtio_report import virtio_report
from acrn_sim.sim import ConfigError, unicorn_engine
from acrn_sim.sim.engine import interrupt as engine_interrupt
from acrn_sim.sim.limits import MAX_PCPUS, check_pcpus, check_vm_memory
from acrn_sim.sim.paths import locate
from acrn_sim.sim.timing import DEFAULT_PROFILE, TimingProfile
from acrn_sim.sim.units import fmt_us, parse_simtime, parse_size

EXIT_USAGE = 2
# (the run's statuses are scenarios/api.py's; these names stay importable from here)
__all__ = ["EXIT_CRASH", "EXIT_STALLED", "EXIT_TIME_LIMIT", "explain_first_io", "main"]
ROOT = Path(__file__).resolve().parents[1]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, status 2, no usage dump
        raise ConfigError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="acrn-sim", description="Cycle-level simulator of the ACRN hypervisor.")
    p.add_argument("--version", action="version", version=version(), help="print the version "
                   "and the Unicorn engine in use, then exit")  # fmt: skip
    sub = p.add_subparsers(dest="command", required=True, help="what to do")
    run = sub.add_parser("run", help="run a guest image or a scenario script")
    run.add_argument(
        "target",
        nargs="?",
        help="a guest image (ELF), a scenario script (.py) or an ACRN scenario (.xml); "
        "optional with -k",
    )
    # acrn-dm's own options for a User VM's kernel (devicemodel/core/main.c: -k, -r, -B)
    run.add_argument("-k", "--kernel", metavar="BZIMAGE", help="a User VM's Linux bzImage")
    run.add_argument("-r", "--ramdisk", metavar="INITRD", help="its initrd (with -k)")
    run.add_argument("-B", "--bootargs", metavar="ARGS", help="its command line (with -k)")
    run.add_argument(
        "--load-order",
        choices=["pre", "post"],
        default="post",
        help="pre: a pre-launched VM beside the Service VM; post: a User VM",
    )
    run.add_argument("--mem", default="32M", help="guest memory (default 32M)")
    run.add_argument("--cmdline", default="", help="the guest's Multiboot command line")
    run.add_argument(
        "--cpu-affinity",
        default="1",
        metavar="PCPUS",
        help="pCPUs of the guest's vCPUs, one per vCPU, e.g. 1,2 (default 1; the Service VM "
        "is on pCPU 0)",
    )
    run.add_argument("--until", help="simulated-time limit, e.g. 10ms, 2s, 500us, 1000000cycles")
    run.add_argument(
        "--report",
        action="store_true",
        help="print the statistics (to stderr): VM exits per VM and reason, the I/O path's "
        "nine steps per VM and device, vCPU time, boot stages, virtio devices",
    )
    run.add_argument(
        "--stats",
        metavar="FILE",
        help="write the statistics as JSON (schema: sim/schemas/stats.schema.json)",
    )
    run.add_argument(
        "--csv",
        metavar="DIR",
        help="write the statistics' tables as CSV files into DIR (made if missing)",
    )
    run.add_argument(
        "--plot",
        metavar="DIR",
        help="draw latency histograms, the nine-step breakdown and the per-pCPU timeline as "
        "PNG files into DIR (needs matplotlib: pip install -e '.[plot]')",
    )
    run.add_argument(
        "--trace",
        metavar="FILE",
        help="write Chrome trace-event JSON: open it in Perfetto (ui.perfetto.dev)",
    )
    run.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="no progress line (it is drawn only when stderr is a terminal, and erased)",
    )
    run.add_argument("--seed", type=int, default=0, help="seed for the simulated entropy")
    run.add_argument(
        "--profile",
        default=str(DEFAULT_PROFILE),
        metavar="FILE",
        help="the timing profile, a TOML file of costs in cycles (default: "
        "sim/profiles/default.toml; `acrn-sim profile` lists it)",
    )
    run.add_argument(
        "--cost",
        action="append",
        default=[],
        metavar="NAME=CYCLES",
        help="override one timing-profile cost (repeatable)",
    )
    run.add_argument(
        "--service-vm-busy", action="store_true", help="run a busy workload in the Service VM"
    )
    run.add_argument(
        "--polling",
        action="store_true",
        help="User VM completes I/O requests by polling (GUEST_FLAG_IO_COMPLETION_POLLING)",
    )
    run.add_argument(
        "--explain",
        action="store_true",
        help="print the first I/O round trip through the Service VM as the nine steps",
    )
    run.add_argument(
        "--consoles",
        action="store_true",
        help="also print the other VMs' consoles, prefixed by VM name",
    )
    run.add_argument(
        "--hotpath",
        choices=["auto", "native", "python"],
        default="auto",
        help="per-block accounting in C (native, the default when built) or in Python",
    )
    run.add_argument(
        "--detect-smc",
        action="store_true",
        help="decode and cost a block again when guest code writes its bytes "
        "(self-modifying code; every guest store becomes slower)",
    )
    run.add_argument(
        "--scheduler",
        choices=["noop", "bvt", "prio"],
        help="the pCPU scheduler (default: the scenario's, else bvt as in ACRN's scenarios)",
    )
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a scenario script's own parameter (repeatable; see the script's docstring)",
    )
    run.add_argument(
        "--gdb",
        metavar="PORT",
        help="debug the guest with GDB: listen on 127.0.0.1:PORT (QEMU's -gdb tcp::PORT; "
        "`target remote :PORT`); the guest stops where it is when GDB connects "
        "(docs/gdb.md)",
    )
    run.add_argument(
        "--gdb-wait",
        action="store_true",
        help="with --gdb: wait for GDB before the guest's first instruction, stopped there "
        "until GDB continues (QEMU's -S)",
    )
    run.add_argument(
        "--pause",
        action="append",
        default=[],
        metavar="VM[/VCPU]@START:END",
        help="the Service VM's VM manager pauses a User VM (or one vCPU) at START and "
        "resumes it at END, e.g. POST_VM1@2ms:5ms (repeatable)",
    )
    run.add_argument(
        "-s",
        dest="slots",
        action="append",
        default=[],
        metavar="SLOT,CLASS[,OPTIONS]",
        help="a PCI device of the User VM, as acrn-dm's -s: 3,virtio-blk,disk.img[,ro], "
        "4,virtio-net,tap0[,vhost], 5,virtio-console,@stdio:stdio_port, 6,virtio-rnd "
        "(repeatable; see docs/virtio.md)",
    )
    run.add_argument(
        "--virtio_poll",
        "--virtio-poll",
        dest="virtio_poll",
        type=int,
        default=0,
        metavar="NS",
        help="acrn-dm's virtio poll mode: the device model looks at the rings every NS "
        "nanoseconds (1000-10000000) and the driver need not notify",
    )
    run.add_argument(
        "--image",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="for a scenario .xml: the image of the VM whose <name> or <kern_mod> is NAME "
        "('*=PATH': every VM without one) (repeatable)",
    )
    run.add_argument(
        "--pdev",
        action="append",
        default=[],
        metavar="BB:DD.F,KIND[,KEY=VALUE]",
        help="a PCI device on the board, e.g. 00:1f.0,sensor (repeatable; pass it to a User "
        "VM with -s 7,passthru,00/1f/0; see docs/passthrough.md)",
    )
    run.add_argument(
        "--posted-interrupts",
        action="store_true",
        help="the board's VT-d unit can post interrupts: passthrough MSIs go to a running "
        "vCPU with no VM exit (docs/vtd.md)",
    )
    # what a scenario script may add (load_scenario): none for an image
    run.set_defaults(
        scenario_scheduler=None, scenario_report=None, scenario_params=(), scenario_main=None,
        scenario_platform=None,
    )  # fmt: skip
    plot = sub.add_parser(
        "plot", help="draw the plots of a statistics file, or a sweep's results (matplotlib)"
    )
    plot.add_argument(
        "stats_file", metavar="FILE", help="a file written by run --stats, or sweep --out"
    )
    plot.add_argument(
        "-o", "--output", metavar="PATH", help="where to write the PNG files (default: the "
        "current directory), or a sweep's picture (default: sweep.png)"
    )  # fmt: skip
    plot.add_argument("--x", help="a sweep: the parameter on the x axis (default: the first)")
    plot.add_argument("--y", help="a sweep: the metric (default: the busiest device's p99)")
    sweep = sub.add_parser(
        "sweep",
        help="run the cross product of parameter values on Dask (scenarios/sweep.py)",
        description="Each point runs `acrn-sim run TARGET [RUN OPTIONS] ...` with one value of "
        "each parameter; one row per point goes to --out (Parquet). Give run options after --.",
    )
    sweep.add_argument("target", help="an image, a scenario script or an ACRN scenario XML")
    sweep.add_argument("run_args", nargs="*", metavar="RUN OPTIONS", help="after --")
    sweep.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=V1,V2,...",
        help="a cost, a run option or a script parameter, and its values (repeatable)",
    )
    sweep.add_argument("--out", required=True, metavar="FILE", help="the results (Parquet)")
    sweep.add_argument("--workers", type=int, default=2, help="local Dask workers (default 2)")
    sweep.add_argument(
        "--scheduler", metavar="tcp://HOST:8786", help="an existing Dask scheduler instead"
    )
    sweep.add_argument(
        "--resume", action="store_true", help="keep the points --out holds; run the others"
    )
    sweep.add_argument("--profile", default=str(DEFAULT_PROFILE), help="timing profile (TOML)")
    lab = sub.add_parser("lab", help="the classroom labs (docs/labs/) and their checker")
    lab_sub = lab.add_subparsers(
        dest="lab_command", required=True, help="list: the labs; check: check an exercise"
    )
    lab_sub.add_parser("list", help="the labs and what each exercise is")
    lab_check = lab_sub.add_parser("check", help="run a lab's exercise and check what it does")
    lab_check.add_argument("number", type=int, help="the lab's number")
    lab_check.add_argument("file", help="the student's exercise (a profile or a scenario)")
    bench = sub.add_parser("bench", help="measure host speed against bare Unicorn and QEMU")
    bench.add_argument(
        "--hotpath",
        choices=["native", "python"],
        default="native",
        help="the per-block hook to measure (default native)",
    )
    bench.add_argument("--runs", type=int, default=5, help="runs of each case (default 5)")
    bench.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    bench.add_argument(
        "--qemu",
        default="qemu-system-x86_64",
        metavar="PATH",
        help="the QEMU to compare with (default: qemu-system-x86_64, if installed)",
    )
    bench.add_argument("--no-qemu", action="store_true", help="leave QEMU out")
    bench.add_argument(
        "--linux",
        action="store_true",
        help="also boot the committed Linux once per run, under acrn-sim and QEMU (~1 min)",
    )
    bench.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes: checks that the bench runs (figures mean nothing)",
    )
    prof = sub.add_parser("profile", help="list the timing profile's costs and their sources")
    prof.add_argument(
        "--profile",
        default=str(DEFAULT_PROFILE),
        metavar="FILE",
        help="the timing profile to list (default: sim/profiles/default.toml)",
    )
    scen = sub.add_parser("scenario", help="ACRN scenario XML")
    scen_sub = scen.add_subparsers(
        dest="scenario_command", required=True, help="export: write a script as ACRN XML"
    )
    export = scen_sub.add_parser("export", help="write a scenario script's VMs as ACRN v3 XML")
    export.add_argument("script", help="a scenario script (.py)")
    export.add_argument(
        "-o", "--output", metavar="FILE", help="the XML file (and FILE's .images beside it)"
    )
    export.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a script parameter"
    )
    return p


def load_scenario(path: str, opts) -> list[VmConfig]:
    """A scenario script's VMs for `opts` (scenarios/api.py Scenario), and what else it gives
    the run (opts.scenario_*): its scheduler, parameters, report, main and configurations."""
    scenario = Scenario.load(path, getattr(opts, "params", None))
    opts.scenario = scenario
    opts.scenario_scheduler = scenario.scheduler
    opts.scenario_report = scenario.report_fn
    opts.scenario_params = scenario.params_known
    opts.scenario_main = scenario.main
    opts.scenario_platform = board.scenario_platform(
        scenario.platform, opts, f"scenario {scenario.path}"
    )
    if not hasattr(opts, "run"):
        opts.run = None
    return scenario.configs(opts)


def _one_line(e: BaseException) -> str:
    return one_line(e)


_PCPU_LIST = re.compile(r"\s*\d{1,30}\s*(,\s*\d{1,30}\s*)*", re.ASCII)


def parse_pcpus(text: str) -> list[int]:
    """--cpu-affinity: pCPU numbers like 1,2 (ASCII digits), checked against the limits."""
    if not _PCPU_LIST.fullmatch(text):
        raise ConfigError(
            f"--cpu-affinity {text!r}: expected pCPU numbers like 1,2 (each 0 to {MAX_PCPUS - 1})"
        )
    pcpus = [int(p) for p in text.split(",")]
    check_pcpus(pcpus, f"--cpu-affinity {text}")
    return pcpus


def user_vm_kernel_options(opts) -> None:
    """acrn-dm's -k/-r/-B: -k names the image (a bzImage), -B its command line. The image
    argument then goes; -r and -B need -k, as acrn-dm's -r and -B go with its -k."""
    kernel = getattr(opts, "kernel", None)
    if kernel is None:
        if getattr(opts, "ramdisk", None) or getattr(opts, "bootargs", None) is not None:
            raise ConfigError("-r and -B go with -k (a User VM's kernel)")
        if opts.target is None:
            raise ConfigError("run needs an image, a scenario, or -k BZIMAGE")
        return
    if opts.target is not None:
        raise ConfigError(f"-k names the image: give either -k or {opts.target!r}, not both")
    if opts.load_order != "post":
        raise ConfigError("-k loads a User VM's kernel as acrn-dm does: use --load-order post")
    if opts.bootargs is not None and opts.cmdline:
        raise ConfigError("give the command line once: -B or --cmdline")
    opts.target = kernel
    if opts.bootargs is not None:
        opts.cmdline = opts.bootargs


def console_input(slots: list[str]) -> bytes:
    """With a virtio-console on stdio, what the simulator's standard input holds when it is a
    pipe or a file (`acrn-sim run ... < input.txt`), read at once; nothing from a terminal."""
    if not any("virtio-console" in s and "stdio" in s for s in slots):
        return b""
    try:
        if sys.stdin is None or sys.stdin.isatty():
            return b""
        ready, _, _ = select.select([sys.stdin], [], [], 0)
        return sys.stdin.buffer.read() if ready else b""
    except (OSError, ValueError):
        return b""


def configs_for(opts) -> list[VmConfig]:
    user_vm_kernel_options(opts)
    # guests/images/..., scenarios/... work from any directory (sim/paths.py)
    target = opts.target = locate(opts.target)
    images = getattr(opts, "image", [])
    if (getattr(opts, "slots", None) or getattr(opts, "virtio_poll", 0)) and (
        target.endswith((".py", ".xml"))
    ):
        raise ConfigError("-s and --virtio_poll are for an image; a scenario gives its VMs' "
                          "devices itself (user_vm(devices=...), <virtio_devices>)")  # fmt: skip
    if images and not target.endswith(".xml"):
        raise ConfigError("--image is for a scenario .xml (an image or script names its own)")
    if target.endswith(".xml"):
        from acrn_sim.scenarios import acrn_xml

        scenario = acrn_xml.load(target, images, opts.service_vm_busy)
        for note in scenario.notes:
            print(f"acrn-sim: {Path(target).name}: {note}", file=sys.stderr)
        opts.scenario_scheduler = scenario.scheduler
        return scenario.configs
    if target.endswith(".py"):
        if not Path(target).is_file():
            raise ConfigError(f"scenario script not found: {target}")
        return load_scenario(target, opts)
    pcpus = parse_pcpus(opts.cpu_affinity)
    check_vm_memory(opts.mem, "--mem")
    validate.check_cmdline("--cmdline", opts.cmdline)
    if opts.load_order == "post":
        vm = user_vm(
            target,
            memory=opts.mem,
            cmdline=opts.cmdline,
            polling=opts.polling,
            initrd=getattr(opts, "ramdisk", None),
            devices=opts.slots,
            virtio_poll=opts.virtio_poll,
            console_input=console_input(opts.slots),
        )
        vm.cpu_affinity = pcpus
        return validate.check_configs(with_service_vm([vm], busy=opts.service_vm_busy), target)
    if opts.slots or opts.virtio_poll:
        raise ConfigError("-s and --virtio_poll are for a User VM (--load-order post): its "
                          "device model creates the devices")  # fmt: skip
    vm = pre_launched(target, memory=opts.mem, cmdline=opts.cmdline)
    vm.cpu_affinity = pcpus
    return validate.check_configs([vm, service_vm(opts.service_vm_busy)], target)


class Consoles:
    """Routes each VM's console to standard output: the VM under study's unprefixed, the others'
    (--consoles) each line whole and prefixed by the VM's name. With --consoles every VM's
    output is held until its line ends, so that two VMs never interleave within a line;
    `flush` prints what is left at the end of the run."""

    def __init__(self, show_all: bool, main: str | None = None) -> None:
        self.main = main
        self.show_all = show_all
        self._partial: dict[str, bytes] = {}
        self.before_write = lambda: None  # the progress line steps aside (scenarios/progress.py)

    def __call__(self, name: str, data: bytes) -> None:
        data = data.replace(b"\r", b"")
        if name != self.main and not self.show_all:
            return
        out = sys.stdout.buffer
        if not self.show_all:  # only the VM under study: as it comes
            self.before_write()
            out.write(data)
            out.flush()
            return
        text = self._partial.pop(name, b"") + data
        *whole, rest = text.split(b"\n")
        if rest:
            self._partial[name] = rest
        if whole:
            self.before_write()
            out.write(b"".join(self._prefix(name) + line + b"\n" for line in whole))
            out.flush()

    def _prefix(self, name: str) -> bytes:
        return b"" if name == self.main else f"[{name}] ".encode()

    def flush(self) -> None:
        """The lines still open at the end of the run, each ended."""
        if not self._partial:
            return
        out = sys.stdout.buffer
        for name, rest in sorted(self._partial.items()):
            out.write(self._prefix(name) + rest + b"\n")
        self._partial.clear()
        out.flush()


def parse_pause(spec: str, tsc_hz: int) -> list[tuple[int, str, str, int | None]]:
    """VM[/VCPU]@START:END -> the VM manager's pause and resume commands."""
    try:
        target, window = spec.split("@", 1)
        start, end = window.split(":", 1)
        name, _, vcpu = target.partition("/")
        vcpu_id = int(vcpu) if vcpu else None
    except ValueError:
        raise ConfigError(f"--pause {spec!r}: expected VM[/VCPU]@START:END") from None
    t0, t1 = parse_simtime(start, tsc_hz), parse_simtime(end, tsc_hz)
    if not name or t1 <= t0:
        raise ConfigError(f"--pause {spec!r}: needs a VM name and END after START")
    return [(t0, "pause", name, vcpu_id), (t1, "resume", name, vcpu_id)]


def cmd_export(opts) -> int:
    """`acrn-sim scenario export`: the script's configs as ACRN v3 XML, images beside."""
    from acrn_sim.scenarios import acrn_xml

    opts.script = locate(opts.script)
    if not opts.script.endswith(".py") or not Path(opts.script).is_file():
        raise ConfigError(f"scenario script not found: {opts.script}")
    # the script sees the options of a plain `run` (its defaults) and the --set parameters
    run_opts = build_parser().parse_args(["run", opts.script])
    run_opts.mem = parse_size(run_opts.mem)
    run_opts.params = parse_params(opts.set)
    run_opts.profile_obj = TimingProfile.load(run_opts.profile)
    configs = load_scenario(opts.script, run_opts)
    unknown = set(run_opts.params) - set(run_opts.scenario_params)
    if unknown:
        raise ConfigError(f"--set: unknown parameter {sorted(unknown)[0]!r} for this script")
    text, images = acrn_xml.to_xml(configs, run_opts.scenario_scheduler or "bvt")
    if opts.output is None:
        sys.stdout.write(text)
        return 0
    _write(opts.output, lambda f: f.write(text.rstrip("\n")))
    acrn_xml.write_sidecar(opts.output, images)
    return 0


def parse_params(assignments: list[str]) -> dict[str, str]:
    params = {}
    for kv in assignments:
        key, eq, value = kv.partition("=")
        if not eq or not key:
            raise ConfigError(f"--set {kv!r}: expected KEY=VALUE")
        params[key] = value
    return params


OUTPUT_OPTIONS = ("report", "explain", "stats", "trace", "csv", "plot", "gdb")


def cmd_run(opts) -> int:
    """`acrn-sim run`: the options become a Simulation (scenarios/api.py) per configuration of
    the target (one, or a script's RUNS), run one after the other, each with every output."""
    opts.mem = parse_size(opts.mem)
    profile = TimingProfile.load(opts.profile)
    for assignment in opts.cost:
        profile.override(assignment)
    until = parse_simtime(opts.until, profile.tsc_hz) if opts.until else None
    opts.params = parse_params(opts.set)
    opts.profile_obj = profile
    for path in (opts.stats, opts.trace):
        if path:
            _check_writable(path)
    for path in (opts.csv, opts.plot):
        if path:
            _check_directory(path)
    if opts.plot:
        from acrn_sim.scenarios import plots

        plots.require_matplotlib()  # before the run, not after it
    opts.run = None
    configs = configs_for(opts)
    unknown = set(opts.params) - set(opts.scenario_params)
    if unknown:
        raise ConfigError(f"--set: unknown parameter {sorted(unknown)[0]!r} for this run")
    scenario = getattr(opts, "scenario", None)
    if opts.scenario_main is not None and not (scenario and scenario.runs):
        given = [f"--{o}" for o in OUTPUT_OPTIONS if getattr(opts, o)]
        if given:
            raise ConfigError(
                f"scenario {opts.target} runs itself (main()), so {given[0]} cannot apply to "
                "it: give it RUNS instead (see scenarios/rtvm_latency.py)"
            )
        return _scenario_main(opts)
    runs: list[tuple[str | None, list[VmConfig]]] = [(None, configs)]
    if scenario is not None and scenario.runs:
        runs = []
        for name in scenario.runs:
            opts.run = name
            runs.append((name, load_scenario(opts.target, opts)))
    opts.gdb_server = _gdb_listener(opts, len(runs))
    commands = [c for spec in opts.pause for c in parse_pause(spec, profile.tsc_hz)]
    results: dict[str | None, Result] = {}
    status = 0
    for name, run_configs in runs:
        if commands:
            svc = next((c for c in run_configs if c.load_order == SERVICE_VM), None)
            if svc is None:
                raise ConfigError("--pause needs a Service VM (its VM manager pauses User VMs)")
            svc.vm_manager = svc.vm_manager + commands
        sim = Simulation(
            profile=profile,
            scheduler=opts.scheduler or opts.scenario_scheduler or "bvt",
            seed=opts.seed,
            hotpath=opts.hotpath,
            detect_smc=opts.detect_smc,
            trace=bool(opts.trace),
            platform=board.platform_for(opts),
        )
        sim.add_configs(run_configs)
        sim.configuration = name
        sim.scenario_results = scenario.results_fn if scenario is not None else None
        if len(runs) > 1 and (opts.report or opts.explain):
            print(f"== {opts.target}: configuration {name} ==", file=sys.stderr)
        code, result = _run_one(opts, sim, until, name if len(runs) > 1 else None)
        if result is None or code in (EXIT_INTERNAL, EXIT_INTERRUPTED):
            return code
        results[name] = result
        status = status or code
    if scenario is not None and scenario.summary_fn is not None:
        try:
            text = scenario.summary_fn(results)
        except (Exception, SystemExit) as e:
            raise ConfigError(f"scenario {opts.target}: summary() failed: {_one_line(e)}") from None
        print(text)
    return status


def gdb_port(text: str) -> int:
    """--gdb PORT: a TCP port number, 1 to 65535 (ASCII digits)."""
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 65535:
        raise ConfigError(f"--gdb {text!r}: expected a TCP port number, 1 to 65535")
    return int(text)


def _gdb_listener(opts, runs: int):
    """The socket GDB connects to (hv/debug.py), listening before the guest boots; None
    without --gdb."""
    if getattr(opts, "gdb", None) is None:
        if getattr(opts, "gdb_wait", False):
            raise ConfigError("--gdb-wait goes with --gdb PORT")
        return None
    port = gdb_port(opts.gdb)
    if runs > 1:
        raise ConfigError(f"--gdb debugs one run; scenario {opts.target} has {runs}")
    from acrn_sim.hv.debug import open_listener

    server = open_listener(port)
    what = ("waiting for GDB before the first guest instruction" if opts.gdb_wait
            else "the guest runs; it stops when GDB connects")  # fmt: skip
    print(f"acrn-sim: GDB stub listening on 127.0.0.1:{port} ({what}; in GDB: "
          f"target remote :{port})", file=sys.stderr, flush=True)  # fmt: skip
    return server


def _run_one(opts, sim: Simulation, until: int | None, run: str | None):
    """One configuration: boot, run (Ctrl-C and failures of the model handled), print, write
    the outputs. (exit status, Result or None)"""
    consoles = Consoles(opts.consoles, sim.main_vm)
    try:
        hv = sim.boot(console=consoles, boot_stages=opts.report)
    except ConfigError:
        raise
    except Exception as e:
        _raise_if_the_scripts(e, opts.target)
        print(internal_error_message(e, sim.hv), file=sys.stderr)
        return EXIT_INTERNAL, None
    debugger = None
    if getattr(opts, "gdb_server", None) is not None:
        from acrn_sim.hv.debug import GdbSession

        debugger = GdbSession(hv, sim.main_vm, opts.gdb_server, opts.gdb_wait)
    previous = signal.signal(signal.SIGINT, _on_sigint)
    try:
        with Progress(hv, enabled=None if opts.progress else False) as progress:
            consoles.before_write = progress.clear
            result = sim.run(until)
        if debugger is not None:
            debugger.finish(result.exit_code)
    except ConfigError:
        raise
    except KeyboardInterrupt:
        consoles.flush()
        _write_outputs(opts, sim.result("interrupted"), run, after_failure=True)
        print(f"acrn-sim: interrupted at cycle {hv.now()}", file=sys.stderr)
        return EXIT_INTERRUPTED, None
    except Exception as e:
        consoles.flush()
        _raise_if_the_scripts(e, opts.target)
        print(internal_error_message(e, hv), file=sys.stderr)
        _write_outputs(opts, sim.result("internal_error"), run, after_failure=True)
        return EXIT_INTERNAL, None
    finally:
        signal.signal(signal.SIGINT, previous)
        if debugger is not None:
            debugger.finish(EXIT_INTERNAL)  # (done already, unless the run failed)
    consoles.flush()
    if opts.scenario_report is not None:
        try:
            text = opts.scenario_report(hv, result)
        except (Exception, SystemExit) as e:
            raise ConfigError(f"scenario {opts.target}: report() failed: {_one_line(e)}") from None
        print(text)
    if opts.explain:
        print(result.explain(), file=sys.stderr)
    if opts.report:
        print(hv.stats.report(), file=sys.stderr)
        if sim.boot_stages is not None:
            stages = sim.boot_stages
            print(stages.report(hv, device_model(sim.build(), stages.vm_name)), file=sys.stderr)
        virtio = virtio_report(sim.build(), hv)
        if virtio:
            print(virtio, file=sys.stderr)
    _write_outputs(opts, result, run)
    when = f"at {fmt_us(result.sim_cycles, hv.profile.tsc_hz)} us"
    for vm in hv.vms:
        s = vm.shutdown
        if s and s.kind in ("triple_fault", "crash"):
            where = f" (rip {s.rip:#x})" if s.rip is not None else ""
            print(
                f"acrn-sim: VM {vm.name}: {s.kind.replace('_', ' ')}: {s.reason}{where}; "
                "VM shut down, the others kept running",
                file=sys.stderr,
            )
    if result.status == "time_limit":
        print(f"acrn-sim: simulated-time limit reached {when}", file=sys.stderr)
    elif result.status == "stalled":
        print(f"acrn-sim: every vCPU is halted and nothing can wake it {when}", file=sys.stderr)
    return result.exit_code, result


def output_path(path: str, run: str | None) -> str:
    """A configuration's own file when a script has several: out.json -> out.shared.json."""
    if run is None:
        return path
    p = Path(path)
    return str(p.with_name(f"{p.stem}.{run}{p.suffix}"))


def _raise_if_the_scripts(e: BaseException, target: str) -> None:
    """An exception raised by a scenario script's own code (a software factory it gave, for
    one) is the script's error, not the model's: ConfigError naming the script."""
    if not target.endswith(".py"):
        return
    orig = _original_exception(e)
    script = Path(target).resolve()
    frames = [Path(f.f_code.co_filename) for f, _ in traceback.walk_tb(orig.__traceback__)]
    if frames and any(f == script or f.resolve() == script for f in frames[-1:]):
        raise ConfigError(f"scenario {target} failed: {_one_line(orig)}") from None


def _on_sigint(signum, frame) -> None:
    """Ctrl-C during the run: guest code that runs now stops and the run raises
    KeyboardInterrupt from the engine (sim.engine.interrupt); elsewhere, at once."""
    if not engine_interrupt():
        raise KeyboardInterrupt


def _scenario_main(opts) -> int:
    """A script's own main(opts): its exit status must be 0-255."""
    try:
        status = opts.scenario_main(opts)
    except ConfigError:
        raise
    except (Exception, SystemExit) as e:
        raise ConfigError(f"scenario {opts.target}: main() failed: {_one_line(e)}") from None
    if not isinstance(status, int) or isinstance(status, bool) or not 0 <= status <= 255:
        raise ConfigError(
            f"scenario {opts.target}: main() must return an exit status 0-255, not {status!r:.40}"
        )
    return status


def internal_error_message(e: BaseException, hv: Hypervisor | None = None) -> str:
    """One line for a failure of the model itself: the exception, the innermost frame of the
    project's code (which tells one bug from another), the VM and the simulated cycle."""
    orig = _original_exception(e)
    where, vm = _innermost_project_frame(orig)
    at = f" at cycle {hv.now()}" if hv is not None else ""
    in_vm = f" in VM {vm}" if vm else ""
    loc = f" ({where})" if where else ""
    return f"acrn-sim: internal error{in_vm}{at}: {_one_line(orig)}{loc}; please report it"


def _original_exception(e: BaseException) -> BaseException:
    """The exception a simulation process raised. simpy re-raises a process's failure as
    type(e)(*e.args) with the original as its cause; where that re-creation itself fails
    (an exception whose constructor takes other arguments), the original is still the
    failed event's value in simpy's step frame."""
    if e.__cause__ is not None:
        return e.__cause__
    tb = e.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_name == "step" and "simpy" in frame.f_code.co_filename:
            value = getattr(frame.f_locals.get("event"), "_value", None)
            if isinstance(value, BaseException):
                return value
        tb = tb.tb_next
    return e


def _innermost_project_frame(e: BaseException) -> tuple[str, str | None]:
    """('path/file.py:line in function', the VM of the nearest frame that knows one)."""
    where, vm = "", None
    for frame, lineno in traceback.walk_tb(e.__traceback__):
        path = Path(frame.f_code.co_filename)
        try:
            rel = path.resolve().relative_to(ROOT)
        except ValueError:
            continue
        if rel.parts[0] in (".venv", "tests"):
            continue
        where = f"{rel.as_posix()}:{lineno} in {frame.f_code.co_name}"
        for name in ("vcpu", "self", "vm"):
            obj = frame.f_locals.get(name)
            obj = getattr(obj, "vm", obj)
            vm_name = getattr(obj, "name", None)
            if isinstance(vm_name, str) and hasattr(obj, "vcpus"):
                vm = vm_name
                break
    return where, vm


def _check_writable(path: str) -> None:
    """Before the run: an output file's directory exists and is writable."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"cannot write {path}: it is a directory")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise ConfigError(f"cannot write {path}: no directory {parent}")
    if not os.access(parent, os.W_OK) and not os.access(p, os.W_OK):
        raise ConfigError(f"cannot write {path}: permission denied")
    if p.exists() and not p.is_file():
        return  # /dev/stdout, a pipe: written in place (api.write_atomic)
    # A regular file is written through a temporary file beside it (api.write_atomic): make
    # one now, so that a directory that takes none (/proc) fails before the run, not after it
    try:
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{p.name}.", suffix=".check")
    except OSError as e:
        raise ConfigError(f"cannot write {path}: {e.strerror or e}") from None
    os.close(fd)
    os.unlink(tmp)


def _check_directory(path: str) -> None:
    """Before the run: an output directory exists or can be made where it is asked for."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"cannot write into {path}: it is not a directory")
    parent = p if p.exists() else p.parent if str(p.parent) else Path(".")
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        raise ConfigError(f"cannot write into {path}: permission denied")


def _write_outputs(opts, result: Result, run: str | None, after_failure: bool = False) -> None:
    """The statistics, trace, CSV and plot files of one run. After a failure of the run (an
    internal error, Ctrl-C), each is written as far as the run went; a file that cannot be
    made then is reported in a line, without hiding the first error."""
    outputs = []
    if opts.stats:
        outputs.append((output_path(opts.stats, run), result.write_stats))
    if opts.trace:
        outputs.append((output_path(opts.trace, run), result.write_trace))
    if opts.csv:
        outputs.append((_output_dir(opts.csv, run), result.write_csv))
    if opts.plot and not after_failure:
        from acrn_sim.scenarios import plots

        outputs.append((_output_dir(opts.plot, run), lambda d: plots.plot_all(result.stats(), d)))
    for path, write in outputs:
        if not after_failure:
            write(path)
            continue
        try:
            write(path)
        except Exception as e:
            print(f"acrn-sim: note: {path} not written: {_one_line(e)}", file=sys.stderr)


def _output_dir(path: str, run: str | None) -> str:
    return path if run is None else str(Path(path) / run)


def _write(path: str, dump) -> None:
    write_atomic(path, dump)


def version() -> str:
    """The package version and the Unicorn library in use (sim/unicorn_engine.py)."""
    try:
        v = package_version("acrn-sim")
    except PackageNotFoundError:  # run from a source tree that was not installed
        v = "(not installed)"
    return f"acrn-sim {v}, engine: {unicorn_engine.describe()}"


def main(argv: list[str] | None = None) -> int:
    try:
        opts = build_parser().parse_args(argv)
        if opts.command == "profile":
            print(TimingProfile.load(opts.profile).describe())
            return 0
        if opts.command == "bench":
            from acrn_sim.scenarios.bench import QUICK, run_bench

            if opts.runs < 1:
                raise ConfigError("--runs: at least 1")
            if opts.json:
                _write(opts.json, lambda f: None)  # fail now, not after the runs
            run_bench(
                hotpath=opts.hotpath,
                runs=opts.runs,
                sizes=QUICK if opts.quick else None,
                qemu=None if opts.no_qemu else opts.qemu,
                json_path=opts.json,
                linux=opts.linux,
            )
            return 0
        if opts.command == "scenario":
            return cmd_export(opts)
        if opts.command == "plot":
            if opts.stats_file.endswith(".parquet"):
                from acrn_sim.scenarios.sweep import plot_sweep

                print(plot_sweep(opts.stats_file, opts.y, opts.x, opts.output or "sweep.png"))
                return 0
            from acrn_sim.scenarios import plots

            return plots.cmd_plot(opts.stats_file, opts.output or ".")
        if opts.command == "sweep":
            from acrn_sim.scenarios.sweep import run_sweep

            if opts.workers < 1:
                raise ConfigError("--workers: at least 1")
            return run_sweep(opts)
        if opts.command == "lab":
            from acrn_sim.scenarios.labs import check_lab, list_labs

            if opts.lab_command == "list":
                print(list_labs())
                return 0
            return check_lab(opts.number, opts.file)
        return cmd_run(opts)
    except ConfigError as e:
        print(f"acrn-sim: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("acrn-sim: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # the last resort: a failure outside a run (cmd_run handles its own)
        print(internal_error_message(e), file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())


def load_script_params(path: str) -> tuple[str, ...]:
    """The --set parameters a scenario script reads (its PARAMS)."""
    return Scenario.load(path).params_known
