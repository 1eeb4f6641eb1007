"""The Python API of acrn-sim: build a platform, add VMs and devices, set costs, run, and read
typed results. The `acrn-sim` command line (scenarios/cli.py) is a thin layer over it.

    import acrn_sim

    sim = acrn_sim.Simulation(scheduler="bvt", costs={"dm_wakeup": 48_000})
    sim.add_service_vm()
    sim.add_user_vm(acrn_sim.image("bench.elf"), pcpus=[1], memory="16M", cmdline="pio 3000",
                    watched=False)
    sim.add_user_vm(acrn_sim.image("timing.elf"), pcpus=[2], memory="16M")
    result = sim.run(until="50ms")
    io = result.io_latency("POST_VM2", "uart")          # the device model's UART
    print(io.round_trip.p99, io.steps[4].name, io.steps[4].latency.p50)   # cycles
    print(result.vms["POST_VM2"].exits["IO_INSTRUCTION"].p99, result.exit_code)
    result.write_stats("stats.json")                    # schema: sim/schemas/stats.schema.json

`Simulation.from_script(path, params)` and `from_xml(path, images)` load a scenario script or an
ACRN scenario XML instead; `Scenario.load(path)` gives a script's configurations (`runs`) when
it has several (`RUNS`, e.g. scenarios/rtvm_latency.py). The package `acrn_sim` re-exports
these names (`acrn_sim.Simulation`), with `acrn_sim.image(NAME)` for a shipped guest image.

Units: times and latencies are TSC cycles (`Result.tsc_hz` per second; `Latency.us`).
Errors in what is given (a bad image, option or cost) raise acrn_sim.ConfigError with one line.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

from acrn_sim.guests.service_vm.virtio.stats import STEPS as VIRTIO_STEPS
from acrn_sim.hv.common.schedule import SCHEDULERS
from acrn_sim.hv.common.vm import POST_LAUNCHED_VM, SERVICE_VM, VmConfig
from acrn_sim.hv.hypervisor import Hypervisor
from acrn_sim.scenarios import device_model, pre_launched, service_vm, user_vm, validate
from acrn_sim.scenarios.virtio_report import virtio_json, virtio_report
from acrn_sim.sim import ConfigError
from acrn_sim.sim.paths import locate
from acrn_sim.sim.stats import SUMMARY_KEYS
from acrn_sim.sim.timing import DEFAULT_PROFILE, TimingProfile
from acrn_sim.sim.units import fmt_us, parse_simtime, parse_size

# The exit status of a run (the command line's too): the guest's own code (0-255) or these
EXIT_TIME_LIMIT, EXIT_CRASH, EXIT_STALLED = 124, 125, 126
EXIT_INTERNAL, EXIT_INTERRUPTED = 70, 130

STATS_SCHEMA_VERSION = 1

__all__ = [
    "DeviceIo",
    "IoStep",
    "Latency",
    "Result",
    "STATS_SCHEMA_VERSION",
    "Scenario",
    "Simulation",
    "VmResult",
    "csv_tables",
    "explain_first_io",
]


# ------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Latency:
    """A latency summary in cycles (nearest-rank percentiles, the mean rounded down)."""

    count: int
    total_cycles: int
    mean: int
    min: int
    p50: int
    p90: int
    p99: int
    max: int
    tsc_hz: int = 0

    @classmethod
    def from_json(cls, d: Mapping[str, Any], tsc_hz: int = 0) -> Latency:
        return cls(**{k: int(d[k]) for k in SUMMARY_KEYS}, tsc_hz=tsc_hz)

    def us(self, key: str = "p99") -> float:
        """One of the figures in microseconds (`key`: mean, min, p50, p90, p99, max)."""
        if not self.tsc_hz:
            raise ValueError("this latency has no TSC frequency")
        return getattr(self, key) * 1e6 / self.tsc_hz


@dataclass(frozen=True)
class IoStep:
    """One of the nine steps of the I/O path (hv/dm/io_req.py STEP_NAMES): it lasts from its
    own stamp to the next step's."""

    number: int
    name: str
    latency: Latency


@dataclass(frozen=True)
class DeviceIo:
    """A VM's I/O requests through the Service VM to one device: per step and round trip."""

    vm: str
    device: str
    steps: dict[int, IoStep]
    round_trip: Latency


@dataclass(frozen=True)
class VmResult:
    name: str
    exits: dict[str, Latency]  # exit reason -> latency from the exit to the next instruction
    vcpu_time: dict[int, dict[str, int]]  # vCPU -> bucket (guest, exit, halted, paused) -> cycles
    console: str  # what the VM wrote to its console (for a User VM: the device model's UART)
    shutdown: str | None  # "poweroff", "triple_fault", "crash", or None (still running)
    exit_code: int | None  # what it wrote to port 0xF4, if it did


@dataclass
class Result:
    """What one run gives. `stats()` is the JSON document (sim/schemas/stats.schema.json);
    the typed fields are read from it, so both always agree."""

    status: str  # "done", "time_limit", "stalled", "interrupted" or "internal_error"
    exit_code: int
    sim_cycles: int
    tsc_hz: int
    hv: Hypervisor = field(repr=False)
    configs: list[VmConfig] = field(repr=False)
    configuration: str | None = None  # the script's configuration (RUNS), if it has several
    scenario: Any = None  # the script's own results (results_json), JSON
    main_vm: str | None = None
    _stats: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def end_cycle(self) -> int:
        """The simulated cycle the run ended at (as hv.hypervisor.RunResult, which a script's
        report(hv, result) reads)."""
        return self.sim_cycles

    # -- the statistics document and its typed views
    def stats(self) -> dict[str, Any]:
        if self._stats is None:
            hv = self.hv
            doc = hv.stats.to_json()
            doc["schema_version"] = STATS_SCHEMA_VERSION
            doc["run"] = {
                "status": self.status,
                "exit_code": self.exit_code,
                "configuration": self.configuration,
                "scheduler": hv.scheduler,
                "seed": hv.seed,
                "main_vm": self.main_vm,
            }
            doc["virtio"] = virtio_json(self.configs)
            doc["pcpus"] = pcpu_timeline(hv)
            doc["scenario"] = self.scenario
            self._stats = dict(sorted(doc.items()))
        return self._stats

    @property
    def vms(self) -> dict[str, VmResult]:
        doc, hz = self.stats(), self.tsc_hz
        out = {}
        for vm in self.hv.vms:
            d = doc["vms"].get(vm.name, {})
            s = vm.shutdown
            out[vm.name] = VmResult(
                name=vm.name,
                exits={r: Latency.from_json(v, hz) for r, v in d.get("exits", {}).items()},
                vcpu_time={int(k): dict(v) for k, v in d.get("vcpus", {}).items()},
                console=self.console(vm.name),
                shutdown=s.kind if s else None,
                exit_code=vm_exit_code(self.configs, vm),
            )
        return out

    @property
    def io(self) -> dict[tuple[str, str], DeviceIo]:
        """(vm, device) -> its I/O requests through the Service VM."""
        out = {}
        hz = self.tsc_hz
        for vm, devices in self.stats()["io_requests"].items():
            for dev, steps in devices.items():
                out[(vm, dev)] = DeviceIo(
                    vm,
                    dev,
                    {
                        int(k): IoStep(int(k), v["name"], Latency.from_json(v, hz))
                        for k, v in steps.items()
                        if k != "total"
                    },
                    Latency.from_json(steps["total"], hz),
                )
        return out

    def io_latency(self, vm: str, device: str | None = None) -> DeviceIo:
        """One VM's I/O to one device (or to its only device) through the Service VM."""
        mine = {dev: d for (v, dev), d in self.io.items() if v == vm}
        if device is None and len(mine) == 1:
            return next(iter(mine.values()))
        if device not in mine:
            have = ", ".join(sorted(mine)) or "none"
            raise KeyError(f"VM {vm}: no I/O to device {device!r} (devices: {have})")
        return mine[device]

    def console(self, vm: str) -> str:
        data = getattr(self.hv, "consoles", {}).get(vm)
        if data is None:
            v = next((x for x in self.hv.vms if x.name == vm), None)
            data = v.console if v is not None and not v.is_post_launched else b""
        return data.decode(errors="replace").replace("\r", "")

    @property
    def virtio(self) -> list[dict[str, Any]]:
        return self.stats()["virtio"]

    # -- the text forms
    def report(self) -> str:
        """The acrnalyze-style tables (--report), and the virtio devices' when there are."""
        text = self.hv.stats.report()
        virtio = virtio_report(self.configs, self.hv)
        return text + ("\n" + virtio if virtio else "")

    def explain(self) -> str:
        return explain_first_io(self.hv)

    def trace(self) -> dict[str, Any]:
        """The Chrome trace-event document (needs Simulation(trace=True))."""
        if not self.hv.tracer.enabled:
            raise ConfigError("this run was not traced: Simulation(trace=True)")
        return self.hv.tracer.chrome_trace()

    # -- files
    def write_stats(self, path: str | os.PathLike) -> None:
        write_atomic(path, lambda f: json.dump(self.stats(), f, indent=1, sort_keys=True))

    def write_trace(self, path: str | os.PathLike) -> None:
        doc = self.trace()
        write_atomic(path, lambda f: json.dump(doc, f, separators=(",", ":"), sort_keys=True))

    def write_csv(self, directory: str | os.PathLike) -> list[Path]:
        """The statistics' tables as CSV files in `directory` (made if missing)."""
        return write_csv(self.stats(), directory)


def vm_exit_code(configs: list[VmConfig], vm) -> int | None:
    """The code a VM wrote to port 0xF4: a User VM's as its device model saw it."""
    if vm.is_post_launched:
        dm = device_model(configs, vm.name)
        return dm.exit_code if dm is not None else None
    s = vm.shutdown
    return s.exit_code if s is not None and s.kind == "poweroff" else None


def pcpu_timeline(hv: Hypervisor) -> dict[str, Any]:
    """Per pCPU: which vCPU held it from which cycle (null: idle), and the cycles each held
    it; from the scheduler's switches (hv/common/schedule.py SchedControl.history)."""
    out: dict[str, Any] = {}
    end = hv.stats.end_cycle
    for pcpu, ctl in hv.sched_controls().items():
        timeline: list[list[Any]] = []
        for cycle, thread in ctl.history:
            who = f"{thread.vm.name}/{thread.vcpu_id}" if thread is not None else None
            if timeline and timeline[-1][0] == cycle:
                timeline[-1][1] = who  # several switches in one cycle: the last one holds it
            elif not timeline or timeline[-1][1] != who:
                timeline.append([cycle, who])
        held: dict[str, int] = {}
        for (start, who), nxt in zip(timeline, [*timeline[1:], [end, None]], strict=True):
            if who is not None and nxt[0] > start:
                held[who] = held.get(who, 0) + min(nxt[0], end) - start
        out[str(pcpu)] = {"held": dict(sorted(held.items())), "timeline": timeline}
    return out


# ------------------------------------------------------------------------------ the run
class Simulation:
    """A platform to build and run: VMs, their devices, costs, the scheduler.

    Defaults follow the command line's: the default timing profile, BVT, seed 0, the
    native hot path when it is built, no trace."""

    def __init__(
        self,
        *,
        profile: str | os.PathLike | TimingProfile | None = None,
        costs: Mapping[str, int] | None = None,
        scheduler: str | None = None,
        seed: int = 0,
        hotpath: str = "auto",
        detect_smc: bool = False,
        trace: bool = False,
        platform: Any = None,
    ) -> None:
        if isinstance(profile, TimingProfile):
            self.profile = profile
        else:
            self.profile = TimingProfile.load(str(profile) if profile else str(DEFAULT_PROFILE))
        for name, cycles in (costs or {}).items():
            self.set_cost(name, cycles)
        if scheduler is not None and scheduler not in SCHEDULERS:
            raise ConfigError(f"unknown scheduler {scheduler!r} (choose from "
                              f"{', '.join(SCHEDULERS)})")  # fmt: skip
        self.scheduler = scheduler
        self.seed = seed
        self.hotpath = hotpath
        self.detect_smc = detect_smc
        self.trace = trace
        self.platform = platform  # a board (scenarios/board.py); None: the built-in one
        self.configs: list[VmConfig] = []  # given whole (a script's, an XML's)
        self._service: dict[str, Any] | None = None
        self._user_vms: list[VmConfig] = []
        self._others: list[VmConfig] = []
        self._pauses: list[tuple[int, str, str, int | None]] = []
        self.scenario_results: Callable[[Hypervisor, Any], Any] | None = None
        self.configuration: str | None = None
        self.hv: Hypervisor | None = None
        self.boot_stages = None
        self.notes: list[str] = []  # a scenario XML's: what is parsed but not modelled
        self._built: list[VmConfig] | None = None

    # -- the platform
    def set_cost(self, name: str, cycles: int) -> None:
        """Change one cost of the timing profile (`acrn-sim profile` lists them)."""
        self.profile.override(f"{name}={cycles}")

    def add_service_vm(self, busy: bool = False, pcpu: int = 0) -> None:
        """The Service VM (its built-in guest idles, or computes when `busy`) with HSM and a
        device model for each User VM."""
        if self._service is not None:
            raise ConfigError("a scenario has at most one Service VM")
        self._service = {"busy": busy, "pcpu": pcpu}

    def add_user_vm(
        self,
        image: str,
        *,
        name: str | None = None,
        pcpus: Iterable[int] = (1,),
        memory: int | str = "32M",
        cmdline: str = "",
        devices: Iterable[str] = (),
        polling: bool = False,
        virtio_poll: int = 0,
        initrd: str | None = None,
        console_input: bytes = b"",
        rtvm: bool = False,
        priority: str = "PRIO_LOW",
        watched: bool = True,
    ) -> VmConfig:
        """A post-launched User VM, created by its device model in the Service VM.
        `devices`: PCI devices as acrn-dm's -s ("3,virtio-blk,disk.img", "6,virtio-rnd");
        `rtvm`: an RTVM with LAPIC passthrough and polling I/O completion."""
        n = len(self._user_vms) + 1
        vm = user_vm(
            image,
            memory=_size(memory),
            cmdline=cmdline,
            name=name or f"POST_VM{n}",
            polling=polling or rtvm,
            initrd=initrd,
            devices=list(devices),
            virtio_poll=virtio_poll,
            console_input=console_input,
        )
        vm.cpu_affinity = list(pcpus)
        vm.priority = priority
        vm.watched = watched
        if rtvm:
            vm.vm_type, vm.lapic_passthrough = "RTVM", True
        validate.check_config(vm)
        self._user_vms.append(vm)
        return vm

    def add_pre_launched_vm(
        self,
        image: str,
        *,
        name: str | None = None,
        pcpus: Iterable[int] = (1,),
        memory: int | str = "32M",
        cmdline: str = "",
        watched: bool = True,
    ) -> VmConfig:
        """A VM the hypervisor launches itself, beside the Service VM."""
        n = sum(c.load_order != POST_LAUNCHED_VM for c in self._others)
        vm = pre_launched(image, memory=_size(memory), cmdline=cmdline, name=name or f"PRE_VM{n}")
        vm.cpu_affinity = list(pcpus)
        vm.watched = watched
        validate.check_config(vm)
        self._others.append(vm)
        return vm

    def add_configs(self, configs: Iterable[VmConfig]) -> None:
        """VMs given whole (what a scenario script's scenario() returns)."""
        self.configs.extend(validate.check_configs(list(configs), "add_configs"))

    def pause(self, vm: str, start: int | str, end: int | str, vcpu: int | None = None) -> None:
        """The Service VM's VM manager pauses `vm` (or one vCPU) at `start` and resumes it at
        `end` (cycles, or "2ms"-style times)."""
        t0, t1 = (self._cycles(t) for t in (start, end))
        if not vm or t1 <= t0:
            raise ConfigError(f"pause of {vm!r}: needs a VM name and an end after the start")
        self._pauses += [(t0, "pause", vm, vcpu), (t1, "resume", vm, vcpu)]

    # -- loaders
    @classmethod
    def from_script(
        cls, path: str, params: Mapping[str, str] | None = None, run: str | None = None, **kw
    ) -> Simulation:
        """A scenario script (scenarios/*.py); `run`: one of its configurations (RUNS)."""
        sim = cls(**kw)
        Scenario.load(path, params).setup(sim, run)
        return sim

    @classmethod
    def from_xml(
        cls, path: str, images: Iterable[str] = (), service_vm_busy: bool = False, **kw
    ) -> Simulation:
        """An ACRN scenario XML (v3); `images`: "NAME=PATH" as --image. Its notes (what is
        parsed but not modelled) are in `sim.notes`."""
        from acrn_sim.scenarios import acrn_xml

        loaded = acrn_xml.load(path, list(images), service_vm_busy)
        kw.setdefault("scheduler", loaded.scheduler)
        sim = cls(**kw)
        sim.add_configs(loaded.configs)
        sim.notes = list(loaded.notes)
        return sim

    # -- running
    def build(self) -> list[VmConfig]:
        """The VMs of the run, checked (made once)."""
        if self._built is not None:
            return self._built
        configs = list(self.configs)
        if self._service is not None:
            svc = service_vm(self._service["busy"], self._service["pcpu"], self._user_vms)
            configs = [*self._others, svc, *self._user_vms, *configs]
        elif self._user_vms:
            raise ConfigError("User VMs need a Service VM: add_service_vm()")
        else:
            configs = [*self._others, *configs]
        if not configs:
            raise ConfigError("no VM to run: add one")
        if self._pauses:
            svc = next((c for c in configs if c.load_order == SERVICE_VM), None)
            if svc is None:
                raise ConfigError("pause needs a Service VM (its VM manager pauses User VMs)")
            svc.vm_manager = svc.vm_manager + self._pauses
        self._built = validate.check_configs(configs, "the scenario")
        return self._built

    @property
    def main_vm(self) -> str | None:
        """The VM under study: the first watched one (its console is the run's)."""
        watched = [c for c in self.build() if c.watched]
        return watched[0].name if watched else None

    def boot(
        self,
        console: Callable[[str, bytes], None] | None = None,
        boot_stages: bool = False,
    ) -> Hypervisor:
        """Create the hypervisor and boot the VMs (run() does it when not done).
        `console(vm, data)` sees every VM's console output as it comes; `boot_stages` times
        the boot chain of the VM under study when it is a User VM (scenarios/boot_stages.py)."""
        configs = self.build()
        consoles: dict[str, bytes] = {}

        def sink(name: str, data: bytes) -> None:
            consoles[name] = consoles.get(name, b"") + data
            if console is not None:
                console(name, data)

        hv = Hypervisor(
            self.profile,
            seed=self.seed,
            trace=self.trace,
            console_sink=sink,
            hotpath=self.hotpath,
            scheduler=self.scheduler or "bvt",
            detect_smc=self.detect_smc,
            platform=self.platform,
        )
        hv.consoles = consoles
        self.hv = hv
        if boot_stages:
            from acrn_sim.scenarios.boot_stages import BootStages

            main_cfg = next((c for c in configs if c.name == self.main_vm), None)
            if main_cfg is not None and main_cfg.load_order == POST_LAUNCHED_VM:
                stages = self.boot_stages = BootStages.install(hv, main_cfg)
                hv.console_sink = lambda name, data: (stages.console(hv, name, data),
                                                      sink(name, data))  # fmt: skip
        hv.boot(configs)
        return hv

    def run(self, until: int | str | None = None) -> Result:
        """Run until every watched VM is off, `until` (cycles or "10ms"), or nothing can
        happen. A failure of the model raises; `result()` then has what was recorded."""
        if self.hv is None:
            self.boot()
        limit = self._cycles(until) if until is not None else None
        outcome = self.hv.run(limit)
        return self.result(outcome.status)

    def result(self, status: str) -> Result:
        """The run's result as it stands (after run(), or after a failure: status
        "interrupted" or "internal_error")."""
        hv = self.hv
        if hv is None:
            raise ConfigError("nothing ran yet")
        if status in ("interrupted", "internal_error"):
            hv.stats.end_cycle = hv.now()
        configs = self.build()
        code = self._exit_code(status)
        scenario = None
        if self.scenario_results is not None and status in ("done", "time_limit", "stalled"):
            scenario = _json_value(self.scenario_results(hv, SimpleNamespace(
                status=status, end_cycle=hv.stats.end_cycle)))  # fmt: skip
        return Result(
            status=status,
            exit_code=code,
            sim_cycles=hv.stats.end_cycle,
            tsc_hz=self.profile.tsc_hz,
            hv=hv,
            configs=configs,
            configuration=self.configuration,
            scenario=scenario,
            main_vm=self.main_vm,
        )

    def _exit_code(self, status: str) -> int:
        """The command line's exit status for this run (README, "Exit status")."""
        if status == "interrupted":
            return EXIT_INTERRUPTED
        if status == "internal_error":
            return EXIT_INTERNAL
        if status == "time_limit":
            return EXIT_TIME_LIMIT
        if status == "stalled":
            return EXIT_STALLED
        main = next((vm for vm in self.hv.vms if vm.name == self.main_vm), None)
        if main is None or main.shutdown is None:
            return 0
        if main.shutdown.kind == "poweroff":
            code = vm_exit_code(self.build(), main)
            return code if code is not None else EXIT_CRASH
        return EXIT_CRASH

    def _cycles(self, t: int | str) -> int:
        if isinstance(t, int) and not isinstance(t, bool):
            if t < 0:
                raise ConfigError(f"a time of {t} cycles: must not be negative")
            return t
        return parse_simtime(str(t), self.profile.tsc_hz)


def _size(memory: int | str) -> int:
    return (
        memory
        if isinstance(memory, int) and not isinstance(memory, bool)
        else parse_size(str(memory))
    )


def _json_value(value: Any) -> Any:
    """A script's results as plain JSON (keys as strings), or a one-line error."""
    try:
        return json.loads(json.dumps(value, sort_keys=True))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"the scenario's results_json() is not JSON: {e}") from None


# ---------------------------------------------------------------------- scenario scripts
class Scenario:
    """A scenario script: `scenario(opts) -> [VmConfig]`, and optionally SCHEDULER, PARAMS (the
    --set keys it reads), RUNS (names of configurations run one after the other: opts.run is
    the one being built), report(hv, result) -> str (printed after a run),
    results_json(hv, result) -> JSON (the statistics' "scenario" section), and
    summary({run: Result}) -> str (printed after all runs)."""

    def __init__(self, path: str, module: ModuleType, attrs: dict[str, Any], params) -> None:
        self.path = path
        self.module = module
        self.scheduler: str | None = attrs["scheduler"]
        self.params_known: tuple[str, ...] = attrs["params"]
        self.report_fn = attrs["report"]
        self.main = attrs["main"]
        self.platform = attrs.get("platform")  # PLATFORM: the board (scenarios/board.py)
        self.scenario_fn = attrs["scenario"]
        self.results_fn = getattr(module, "results_json", None)
        self.summary_fn = getattr(module, "summary", None)
        runs = getattr(module, "RUNS", ())
        if isinstance(runs, str) or not all(isinstance(r, str) and r for r in runs):
            raise ConfigError(f"scenario {path}: RUNS must be a list of names")
        self.runs: tuple[str, ...] = tuple(runs)
        self.params = dict(params or {})
        unknown = set(self.params) - set(self.params_known)
        if unknown:
            raise ConfigError(f"--set: unknown parameter {sorted(unknown)[0]!r} for this script")

    @classmethod
    def load(cls, path: str, params: Mapping[str, str] | None = None) -> Scenario:
        path = locate(path)  # the scripts in scenarios/ also from another directory
        if not str(path).endswith(".py") or not Path(path).is_file():
            raise ConfigError(f"scenario script not found: {path}")
        try:
            spec = importlib.util.spec_from_file_location("acrn_sim_scenario", path)
        except (ValueError, OSError) as e:
            raise ConfigError(f"cannot load scenario script {path}: {e}") from None
        if spec is None or spec.loader is None:
            raise ConfigError(f"cannot load scenario script {path}")
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except (Exception, SystemExit) as e:
            raise ConfigError(f"scenario {path} failed to load: {one_line(e)}") from None
        attrs = validate.check_module(module, f"scenario {path}", tuple(SCHEDULERS))
        if attrs["scenario"] is None:
            raise ConfigError(f"scenario {path} defines no scenario(opts) function")
        for name in ("results_json", "summary"):
            fn = getattr(module, name, None)
            if fn is not None and not callable(fn):
                raise ConfigError(f"scenario {path}: {name} must be a function")
        return cls(str(path), module, attrs, params)

    def configs(self, opts: Any) -> list[VmConfig]:
        """The script's VMs for `opts` (the command line's options: mem, cmdline, params,
        service_vm_busy, run ...)."""
        opts.params = dict(self.params)
        try:
            configs = self.scenario_fn(opts)
        except ConfigError:
            raise
        except (Exception, SystemExit) as e:
            raise ConfigError(f"scenario {self.path} failed: {one_line(e)}") from None
        return validate.check_configs(configs, f"scenario {self.path}")

    def setup(self, sim: Simulation, run: str | None = None, opts: Any = None) -> None:
        """Give `sim` the script's VMs (configuration `run`), scheduler and results."""
        if run is not None and run not in self.runs:
            raise ConfigError(f"scenario {self.path}: no configuration {run!r} (it has: "
                              f"{', '.join(self.runs) or 'one'})")  # fmt: skip
        if opts is None:
            opts = default_options(sim)
        opts.run = run
        opts.profile_obj = sim.profile
        sim.add_configs(self.configs(opts))
        if sim.scheduler is None:
            sim.scheduler = self.scheduler
        sim.configuration = run
        sim.scenario_results = self.results_fn


def default_options(sim: Simulation | None = None) -> SimpleNamespace:
    """The options a script sees outside the command line: those of a plain `acrn-sim run`."""
    return SimpleNamespace(
        mem=32 << 20, cmdline="", service_vm_busy=False, polling=False, params={},
        seed=sim.seed if sim else 0, hotpath=sim.hotpath if sim else "auto",
        profile_obj=sim.profile if sim else TimingProfile.load(), run=None,
    )  # fmt: skip


def one_line(e: BaseException) -> str:
    """An exception as 'Type: message' on one line, for a message about a user's script."""
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}"[:300] if text else type(e).__name__


# ------------------------------------------------------------------------ text and files
def explain_first_io(hv: Hypervisor) -> str:
    """The first I/O round trip through the Service VM, as the nine steps of ACRN's I/O path
    (docs/architecture.md)."""
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


def csv_tables(stats: Mapping[str, Any]) -> dict[str, list[list[Any]]]:
    """The statistics' tables, as rows (the first one the header): the same figures as the
    JSON, one file each with --csv."""
    lat = list(SUMMARY_KEYS)
    exits = [["vm", "exit_reason", *lat]]
    vcpus = [["vm", "vcpu", "guest", "exit", "halted", "paused"]]
    for vm, d in sorted(stats["vms"].items()):
        for reason, s in sorted(d.get("exits", {}).items()):
            exits.append([vm, reason, *(s[k] for k in lat)])
        for vcpu, b in sorted(d.get("vcpus", {}).items(), key=lambda kv: int(kv[0])):
            vcpus.append([vm, int(vcpu), *(b.get(k, 0) for k in vcpus[0][2:])])
    steps = [["vm", "device", "step", "name", *lat]]
    for vm, devices in sorted(stats["io_requests"].items()):
        for dev, rows in sorted(devices.items()):
            for k, s in sorted(rows.items(), key=lambda kv: _step_key(kv[0])):
                steps.append([vm, dev, k, s["name"], *(s[x] for x in lat)])
    virtio = [["vm", "device", "slot", "step", *lat]]
    for d in stats.get("virtio") or []:
        for step in VIRTIO_STEPS:
            s = d.get("steps", {}).get(step)
            if s is not None:
                virtio.append([d["vm"], d["device"], d["slot"], step, *(s[x] for x in lat)])
    pcpus = [["pcpu", "vm_vcpu", "cycles_held"]]
    for p, d in sorted((stats.get("pcpus") or {}).items(), key=lambda kv: int(kv[0])):
        for who, cycles in sorted(d["held"].items()):
            pcpus.append([int(p), who, cycles])
    hists = [["kind", "vm", "what", "lower_cycles", "upper_cycles", "count"]]
    for kind, by_vm in sorted(stats["histograms"].items()):
        for vm, whats in sorted(by_vm.items()):
            for what, buckets in sorted(whats.items()):
                hists.extend([kind, vm, what, *b] for b in buckets)
    run = stats["run"]
    summary = [
        ["key", "value"],
        ["schema_version", stats["schema_version"]],
        ["status", run["status"]],
        ["exit_code", run["exit_code"]],
        ["configuration", run["configuration"] or ""],
        ["scheduler", run["scheduler"]],
        ["tsc_hz", stats["tsc_hz"]],
        ["sim_cycles", stats["sim_cycles"]],
    ]
    return {"run": summary, "exits": exits, "vcpu_time": vcpus, "io_steps": steps,
            "virtio_steps": virtio, "pcpu_time": pcpus, "histograms": hists}  # fmt: skip


def _step_key(key: str) -> tuple[int, int]:
    return (1, 0) if key == "total" else (0, int(key))


def _step_key(key: str) -> tuple[int, int]:
    return (1, 0) if key == "total" else (0, int(key))


def write_csv(stats: Mapping[str, Any], directory: str | os.PathLike) -> list[Path]:
    d = Path(directory)
    if d.exists() and not d.is_dir():
        raise ConfigError(f"--csv {directory}: not a directory")
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot make {directory}: {e.strerror or e}") from None
    written = []
    for name, rows in csv_tables(stats).items():
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows)
        path = d / f"{name}.csv"
        text = buf.getvalue().rstrip("\n")
        write_atomic(path, lambda f, text=text: f.write(text))
        written.append(path)
    return written


def write_atomic(path: str | os.PathLike, dump: Callable[[Any], Any]) -> None:
    """Write a file whole or not at all: into a temporary file in the same directory, then
    renamed over the target, so that a crash never leaves half a file. (A target that exists
    and is not a regular file, such as /dev/stdout or a pipe, is written in place.)"""
    path = os.fspath(path)
    try:
        if os.path.exists(path) and not os.path.isfile(path):
            with open(path, "w") as f:
                dump(f)
                f.write("\n")
            return
        directory = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(
            dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp"
        )
        try:
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(fd, 0o666 & ~umask)  # as open() would have made it
            with os.fdopen(fd, "w") as f:
                dump(f)
                f.write("\n")
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as e:
        raise ConfigError(f"cannot write {path}: {e.strerror or e}") from None
