"""RTVM timer wake-up latency, cyclictest-style, in two configurations:

  shared     the latency VM is a standard User VM sharing pCPU 1 with a busy User VM under
             the BVT scheduler (weights 1 and 1)
  dedicated  the latency VM is an RTVM with LAPIC passthrough and polling I/O completion on
             its own pCPU 2; the busy User VM keeps pCPU 1

In both, the Service VM runs a busy workload on pCPU 0 and the busy User VM does storage I/O
through the device model. The guest (workload.elf "cyclic N US") arms the TSC-deadline timer
US microseconds ahead, halts, and measures with RDTSC how late its handler runs.

    acrn-sim run scenarios/rtvm_latency.py [--set samples=N] [--set interval_us=US]

runs the two configurations (RUNS) one after the other and prints both histograms and their
summary. Parameters: samples (default 300), interval_us (default 500). Every output option
applies to each configuration: --stats out.json writes out.shared.json and
out.dedicated.json, whose "scenario" section holds that configuration's histogram.
"""

from __future__ import annotations

from acrn_sim.guests import image_path
from acrn_sim.scenarios import histogram, param, results, simulate, user_vm, with_service_vm
from acrn_sim.sim import ConfigError

PARAMS = ("samples", "interval_us")
RUNS = ("shared", "dedicated")
SCHEDULER = "bvt"


def _configs(mode: str, samples: int, interval_us: int):
    rt = user_vm(image_path("workload.elf"), cmdline=f"cyclic {samples} {interval_us}",
                 name="LATENCY_VM")  # fmt: skip
    noisy = user_vm(image_path("workload.elf"), cmdline="io 1000000 20", name="BUSY_VM", pcpu=1)
    noisy.watched = False
    if mode == "shared":
        rt.cpu_affinity = [1]
    else:
        rt.cpu_affinity = [2]
        rt.vm_type = "RTVM"
        rt.lapic_passthrough = True
        rt.io_completion_polling = True
        rt.priority = "PRIO_HIGH"
    return with_service_vm([rt, noisy], busy=True)


def _params(opts) -> tuple[int, int]:
    samples, interval_us = param(opts, "samples", 300), param(opts, "interval_us", 500)
    if samples <= 0 or interval_us <= 0:
        raise ConfigError("--set samples and interval_us must be positive")
    return samples, interval_us


def scenario(opts):
    """The configuration opts.run names (RUNS); the dedicated one when none is named (the
    scenario XML export, tests)."""
    return _configs(getattr(opts, "run", None) or "dedicated", *_params(opts))


def results_json(hv, result) -> dict:
    """This configuration's histogram (1 us buckets, >= 100 us in the last) and the guest's
    own min/avg/max in cycles: the statistics' "scenario" section."""
    console = hv.consoles.get("LATENCY_VM", b"")
    r = results(console)
    lat_vm = next(vm for vm in hv.vms if vm.name == "LATENCY_VM")
    return {
        "configuration": "dedicated" if lat_vm.lapic_pt else "shared",
        "histogram_us": {str(b): n for b, n in sorted(histogram(console).items())},
        "latency_cycles": {k: r[k] for k in ("min", "avg", "max")} if r else None,
        "samples": r.get("samples") if r else None,
    }


def summary(runs: dict) -> str:
    """Both histograms and their summary, after the two runs (runs: name -> api Result)."""
    out = {}
    for mode, res in runs.items():
        s = res.scenario or {}
        lat = s.get("latency_cycles")
        out[mode] = {
            "hist": {int(b): n for b, n in (s.get("histogram_us") or {}).items()},
            "result": dict(lat) if lat else None,
            "hz": res.tsc_hz,
        }
    first = next(iter(runs.values()))
    configs = first.configs
    lat_cfg = next(c for c in configs if c.name == "LATENCY_VM")
    samples, interval_us = (int(x) for x in lat_cfg.cmdline.split()[1:3])
    return format_report(out, samples, interval_us)


def run_both(opts, samples: int, interval_us: int) -> dict[str, dict]:
    out = {}
    for mode in ("shared", "dedicated"):
        hv, _ = simulate(_configs(mode, samples, interval_us), opts, scheduler="bvt")
        console = hv.consoles.get("LATENCY_VM", b"")
        out[mode] = {"hist": histogram(console), "result": results(console),
                     "hz": hv.profile.tsc_hz}  # fmt: skip
    return out


def format_report(out: dict[str, dict], samples: int, interval_us: int) -> str:
    lines = [f"Timer wake-up latency, {samples} samples every {interval_us} us "
             "(Service VM and a User VM busy)", ""]  # fmt: skip
    for mode, title in (("shared", "shared pCPU under BVT, standard VM"),
                        ("dedicated", "dedicated pCPU, RTVM with LAPIC passthrough")):  # fmt: skip
        hist = out[mode]["hist"]
        peak = max(hist.values(), default=1)
        lines.append(f"{mode}: {title}")
        lines.append("   latency    count")
        for b in sorted(hist):
            label = f">= {b} us" if b == 100 else f"{b:>3}-{b + 1:<3} us"
            lines.append(f"  {label:>10} {hist[b]:>6} {'#' * max(1, 40 * hist[b] // peak)}")
        lines.append("")
    lines.append(f"  {'configuration':<11} {'min us':>8} {'avg us':>8} {'max us':>8}")
    for mode in ("shared", "dedicated"):
        r, hz = out[mode]["result"], out[mode]["hz"]
        if r is None:
            lines.append(f"  {mode:<11} (no result: the guest did not finish)")
            continue
        us = [f"{r[k] * 1e6 / hz:8.2f}" for k in ("min", "avg", "max")]
        lines.append(f"  {mode:<11} {us[0]} {us[1]} {us[2]}")
    return "\n".join(lines)
