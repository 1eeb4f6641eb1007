"""The `acrn-sim` command line.

    acrn-sim run IMAGE|SCENARIO.py|SCENARIO.xml [--load-order pre|post] [--mem SIZE]
                [--cmdline STR] [--until SIMTIME] [--report] [--stats FILE] [--trace FILE]
                [--seed N] [--profile FILE] [--cost NAME=CYCLES]... [--service-vm-busy]
                [--consoles] [--hotpath auto|native|python] [--detect-smc] [--image NAME=PATH]...
                [-s SLOT,CLASS[,OPTIONS]]... [--virtio_poll NS]
    acrn-sim scenario export SCENARIO.py [-o FILE] [--set KEY=VALUE]...
    acrn-sim profile [--profile FILE]
    acrn-sim bench [--hotpath native|python]

Exit status of `run`: the exit code the guest wrote to port 0xF4 (0-255), or
  2    usage or configuration error (bad option, missing or invalid image, bad scenario)
  124  the simulated-time limit (--until) was reached first
  125  the VM under study triple-faulted or crashed (the others kept running)
  126  every vCPU halted with nothing left that could wake it
This module sits at the top of the import graph: it is the only place that knows all layers.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import select
import sys
from pathlib import Path

from hv.common.vm import SERVICE_VM, VmConfig
from hv.hypervisor import Hypervisor
from scenarios import device_model, pre_launched, service_vm, user_vm, with_service_vm
from scenarios.virtio_report import virtio_json, virtio_report
from sim import ConfigError
from sim.timing import DEFAULT_PROFILE, TimingProfile
from sim.units import fmt_us, parse_simtime, parse_size

EXIT_USAGE, EXIT_TIME_LIMIT, EXIT_CRASH, EXIT_STALLED = 2, 124, 125, 126


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, status 2, no usage dump
        raise ConfigError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="acrn-sim", description="Cycle-level simulator of the ACRN hypervisor.")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a guest image or a scenario script")
    run.add_argument(
        "target", help="a guest image (ELF), a scenario script (.py) or an ACRN scenario (.xml)"
    )
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
    run.add_argument("--report", action="store_true", help="print exit statistics")
    run.add_argument("--stats", metavar="FILE", help="write statistics as JSON")
    run.add_argument("--trace", metavar="FILE", help="write Chrome trace-event JSON (Perfetto)")
    run.add_argument("--seed", type=int, default=0, help="seed for the simulated entropy")
    run.add_argument("--profile", default=str(DEFAULT_PROFILE), help="timing profile (TOML)")
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
    # what a scenario script may add (load_scenario): none for an image
    run.set_defaults(
        scenario_scheduler=None, scenario_report=None, scenario_params=(), scenario_main=None
    )
    bench = sub.add_parser("bench", help="measure host speed against bare Unicorn")
    bench.add_argument("--hotpath", choices=["native", "python"], default="native")
    prof = sub.add_parser("profile", help="list the timing profile's costs and their sources")
    prof.add_argument("--profile", default=str(DEFAULT_PROFILE))
    scen = sub.add_parser("scenario", help="ACRN scenario XML")
    scen_sub = scen.add_subparsers(dest="scenario_command", required=True)
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
    spec = importlib.util.spec_from_file_location("acrn_sim_scenario", path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot load scenario script {path}")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise ConfigError(f"scenario {path} failed to load: {type(e).__name__}: {e}") from None
    if not hasattr(module, "scenario"):
        raise ConfigError(f"scenario {path} defines no scenario(opts) function")
    # Optional: SCHEDULER (the scenario's default), PARAMS (the --set keys it reads),
    # report(hv, result) -> str printed after the run, or main(opts) -> exit status for a
    # script that runs several configurations itself (it still defines scenario()).
    opts.scenario_scheduler = getattr(module, "SCHEDULER", None)
    opts.scenario_report = getattr(module, "report", None)
    opts.scenario_params = getattr(module, "PARAMS", ())
    opts.scenario_main = getattr(module, "main", None)
    try:
        configs = module.scenario(opts)
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(f"scenario {path} failed: {type(e).__name__}: {e}") from None
    if (
        not isinstance(configs, list | tuple)
        or not configs
        or not all(isinstance(c, VmConfig) for c in configs)
    ):
        raise ConfigError(f"scenario {path}: scenario() must return a list of VmConfig")
    return configs


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
    target = opts.target
    images = getattr(opts, "image", [])
    if (getattr(opts, "slots", None) or getattr(opts, "virtio_poll", 0)) and (
        target.endswith((".py", ".xml"))
    ):
        raise ConfigError("-s and --virtio_poll are for an image; a scenario gives its VMs' "
                          "devices itself (user_vm(devices=...), <virtio_devices>)")  # fmt: skip
    if images and not target.endswith(".xml"):
        raise ConfigError("--image is for a scenario .xml (an image or script names its own)")
    if target.endswith(".xml"):
        from scenarios import acrn_xml

        scenario = acrn_xml.load(target, images, opts.service_vm_busy)
        for note in scenario.notes:
            print(f"acrn-sim: {Path(target).name}: {note}", file=sys.stderr)
        opts.scenario_scheduler = scenario.scheduler
        return scenario.configs
    if target.endswith(".py"):
        if not Path(target).is_file():
            raise ConfigError(f"scenario script not found: {target}")
        return load_scenario(target, opts)
    try:
        pcpus = [int(p) for p in opts.cpu_affinity.split(",")]
    except ValueError:
        raise ConfigError(
            f"--cpu-affinity {opts.cpu_affinity!r}: expected pCPU numbers like 1,2"
        ) from None
    if opts.load_order == "post":
        vm = user_vm(
            target,
            memory=opts.mem,
            cmdline=opts.cmdline,
            polling=opts.polling,
            devices=opts.slots,
            virtio_poll=opts.virtio_poll,
            console_input=console_input(opts.slots),
        )
        vm.cpu_affinity = pcpus
        return with_service_vm([vm], busy=opts.service_vm_busy)
    if opts.slots or opts.virtio_poll:
        raise ConfigError("-s and --virtio_poll are for a User VM (--load-order post): its "
                          "device model creates the devices")  # fmt: skip
    vm = pre_launched(target, memory=opts.mem, cmdline=opts.cmdline)
    vm.cpu_affinity = pcpus
    return [vm, service_vm(opts.service_vm_busy)]


class Consoles:
    """Routes each VM's console: the VM under study unprefixed, the others on request."""

    def __init__(self, show_all: bool) -> None:
        self.main: str | None = None
        self.show_all = show_all
        self._line_start: dict[str, bool] = {}
        self.data: dict[str, bytes] = {}  # every VM's output, for a scenario's report

    def __call__(self, name: str, data: bytes) -> None:
        self.data[name] = self.data.get(name, b"") + data
        out = sys.stdout.buffer
        data = data.replace(b"\r", b"")
        if name == self.main:
            out.write(data)
        elif self.show_all:
            for ch in data:
                if self._line_start.get(name, True):
                    out.write(f"[{name}] ".encode())
                out.write(bytes([ch]))
                self._line_start[name] = ch == 0x0A
        else:
            return
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
    from scenarios import acrn_xml

    if not opts.script.endswith(".py") or not Path(opts.script).is_file():
        raise ConfigError(f"scenario script not found: {opts.script}")
    # the script sees the options of a plain `run` (its defaults) and the --set parameters
    run_opts = build_parser().parse_args(["run", opts.script])
    run_opts.mem = parse_size(run_opts.mem)
    run_opts.params = {}
    for kv in opts.set:
        key, eq, value = kv.partition("=")
        if not eq or not key:
            raise ConfigError(f"--set {kv!r}: expected KEY=VALUE")
        run_opts.params[key] = value
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


def cmd_run(opts) -> int:
    opts.mem = parse_size(opts.mem)
    profile = TimingProfile.load(opts.profile)
    for assignment in opts.cost:
        profile.override(assignment)
    until = parse_simtime(opts.until, profile.tsc_hz) if opts.until else None
    opts.params = {}
    for kv in opts.set:
        key, eq, value = kv.partition("=")
        if not eq or not key:
            raise ConfigError(f"--set {kv!r}: expected KEY=VALUE")
        opts.params[key] = value
    opts.profile_obj = profile
    configs = configs_for(opts)
    unknown = set(opts.params) - set(opts.scenario_params)
    if unknown:
        raise ConfigError(f"--set: unknown parameter {sorted(unknown)[0]!r} for this run")
    if opts.scenario_main is not None:
        return opts.scenario_main(opts)
    commands = [c for spec in opts.pause for c in parse_pause(spec, profile.tsc_hz)]
    if commands:
        svc = next((c for c in configs if c.load_order == SERVICE_VM), None)
        if svc is None:
            raise ConfigError("--pause needs a Service VM (its VM manager pauses User VMs)")
        svc.vm_manager = svc.vm_manager + commands
    consoles = Consoles(opts.consoles)
    watched = [c for c in configs if c.watched]
    consoles.main = watched[0].name if watched else None
    hv = Hypervisor(
        profile,
        seed=opts.seed,
        trace=bool(opts.trace),
        console_sink=consoles,
        hotpath=opts.hotpath,
        scheduler=opts.scheduler or opts.scenario_scheduler or "bvt",
        detect_smc=opts.detect_smc,
    )
    hv.consoles = consoles.data
    hv.boot(configs)
    result = hv.run(until)
    if opts.scenario_report is not None:
        print(opts.scenario_report(hv, result))

    if opts.explain:
        print(explain_first_io(hv), file=sys.stderr)
    if opts.report:
        print(hv.stats.report(), file=sys.stderr)
        virtio = virtio_report(configs, hv)
        if virtio:
            print(virtio, file=sys.stderr)
    if opts.stats:
        stats = hv.stats.to_json()
        stats["virtio"] = virtio_json(configs)
        _write(opts.stats, lambda f: json.dump(stats, f, indent=1, sort_keys=True))
    if opts.trace:
        _write(
            opts.trace,
            lambda f: json.dump(hv.tracer.chrome_trace(), f, separators=(",", ":"), sort_keys=True),
        )

    when = f"at {fmt_us(result.end_cycle, profile.tsc_hz)} us"
    for vm in hv.vms:
        s = vm.shutdown
        if s and s.kind in ("triple_fault", "crash"):
            where = f" (rip {s.rip:#x})" if s.rip is not None else ""
            print(
                f"acrn-sim: VM {vm.name}: {s.kind.replace('_', ' ')}: {s.reason}{where}; "
                "VM shut down, the others kept running",
                file=sys.stderr,
            )
    main = next((vm for vm in hv.vms if vm.name == consoles.main), None)
    if result.status == "time_limit":
        print(f"acrn-sim: simulated-time limit reached {when}", file=sys.stderr)
        return EXIT_TIME_LIMIT
    if result.status == "stalled":
        print(f"acrn-sim: every vCPU is halted and nothing can wake it {when}", file=sys.stderr)
        return EXIT_STALLED
    if main is None or main.shutdown is None:
        return 0
    if main.shutdown.kind == "poweroff":
        if main.shutdown.exit_code is None:  # a User VM: its device model saw the 0xF4 write
            return dm_exit_code(configs, main.name)
        return main.shutdown.exit_code
    return EXIT_CRASH


def explain_first_io(hv: Hypervisor) -> str:
    """The first I/O round trip through the Service VM, as DESIGN.md's nine steps."""
    done = hv.ioreq_steps.complete()
    if not done:
        return "acrn-sim: --explain: no I/O request went through the Service VM in this run"
    r = done[0]
    hz = hv.profile.tsc_hz
    steps, what = r.steps, r.what
    lines = [
        f"The first I/O round trip through the Service VM (VM {r.vm}, request {r.req_id}, "
        f"device '{r.device or 'HSM'}'):",
        f"  {'step':>4} {'at (us)':>12} {'cycles':>8} {'us':>9}  what happens",
    ]
    order = sorted(k for k in steps if k <= 9)
    for a, b in zip(order, order[1:] + [10], strict=True):
        d = steps[b] - steps[a]
        lines.append(f"  {a:>4} {fmt_us(steps[a], hz):>12} {d:>8} {fmt_us(d, hz):>9}  {what[a]}")
    total = steps[10] - steps[1]
    lines.append(
        f"  round trip: {total} cycles = {fmt_us(total, hz)} us, from the VM exit to "
        "the guest's next instruction"
    )
    return "\n".join(lines)


def dm_exit_code(configs: list[VmConfig], name: str) -> int:
    """The code a User VM wrote to port 0xF4, as its device model saw it."""
    dm = device_model(configs, name)
    return dm.exit_code if dm and dm.exit_code is not None else EXIT_CRASH


def _write(path: str, dump) -> None:
    try:
        with open(path, "w") as f:
            dump(f)
            f.write("\n")
    except OSError as e:
        raise ConfigError(f"cannot write {path}: {e.strerror}") from None


def main(argv: list[str] | None = None) -> int:
    try:
        opts = build_parser().parse_args(argv)
        if opts.command == "profile":
            print(TimingProfile.load(opts.profile).describe())
            return 0
        if opts.command == "bench":
            from scenarios.bench import run_bench

            run_bench(hotpath=opts.hotpath)
            return 0
        if opts.command == "scenario":
            return cmd_export(opts)
        return cmd_run(opts)
    except ConfigError as e:
        print(f"acrn-sim: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
