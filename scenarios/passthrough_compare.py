"""The same workload three ways, and without the hypervisor: a driver (guests/src/sensor.c)
asks the DMA sensor for one sample after the other and measures each request, from its
doorbell to seeing the completed buffer, after the completion interrupt.

    acrn-sim run scenarios/passthrough_compare.py [--set n=200] [--set latency_us=50]
                                                  [--set plot=FILE.png]
    python -m acrn_sim.scenarios.passthrough_compare [--n N] [--latency-us US] [--plot FILE.png]

The ways (each its own run, a User VM on pCPU 1 beside the Service VM):
  passthrough  the board's sensor, passed through (-s 7,passthru,00/1f/0): register accesses
               reach the device with no exit, its DMA is translated by the VM's IOMMU domain,
               its MSI is remapped and injected by the hypervisor (ptirq)
  emulated     the device model's copy of the sensor (-s 7,sensor): every register access is
               an I/O request to the device model, which copies the sample into guest memory
               and injects the MSI with HC_INJECT_MSI
  virtio       the sensor behind virtio (-s 7,virtio-sensor): one notification and one
               interrupt per request, the back end in the device model
and the no-hypervisor baseline: the model has no bare-metal mode, so the baseline removes
every virtualization step from the request's path: the driver runs in a pre-launched RTVM
with LAPIC passthrough and the x2APIC (no VM exit at all: its interrupt goes to its LAPIC,
HLT and EOI are native), with the remapping unit's translation costs set to 0. What is left
is the machine's own time: the sensor's acquisition, the DMA, the interrupt's delivery and the
driver's code.

Every way uses the same acquisition time (latency_us) and sample size. Prints one line per way,
`<way>: p50 A us p99 B us`, then a table; docs/passthrough.md explains the numbers.
"""

from __future__ import annotations

import argparse
import sys

from acrn_sim.guests import image_path
from acrn_sim.scenarios import param, pre_launched, results, user_vm, with_service_vm
from acrn_sim.sim.platform import PlatformConfig
from acrn_sim.sim.timing import TimingProfile

PARAMS = ("n", "latency_us", "jitter_us", "len", "plot")
WAYS = ("passthrough", "emulated", "virtio")
BASELINE = "baseline (no hypervisor)"
ZERO_VTD = ("vtd_iotlb_hit=0", "vtd_iotlb_miss=0", "vtd_ir_remap=0")
DEVICE = "00:1f.0"


def _acq(latency_us: float, jitter_us: float) -> str:
    return f"latency_us={latency_us:g},jitter_us={jitter_us:g}"


def _board(latency_us: float, jitter_us: float) -> PlatformConfig:
    return PlatformConfig(devices=[f"{DEVICE},sensor,{_acq(latency_us, jitter_us)}"])


def _config(way: str, n: int, length: int, latency_us: float, jitter_us: float) -> list:
    cmd = f"n={n} len={length}"
    if way == BASELINE:
        vm = pre_launched(image_path("sensor.elf"), cmdline=f"{cmd} x2apic=1", pcpu=1,
                          name="DRIVER", pci_devs=[DEVICE])  # fmt: skip
        vm.vm_type, vm.lapic_passthrough = "RTVM", True
        return [vm, *with_service_vm([])]
    slot = {
        "passthrough": "7,passthru,00/1f/0",
        "emulated": f"7,sensor,{_acq(latency_us, jitter_us)}",
        "virtio": f"7,virtio-sensor,{_acq(latency_us, jitter_us)}",
    }[way]
    if way == "virtio":
        cmd += " dev=virtio"
    vm = user_vm(image_path("sensor.elf"), cmdline=cmd, pcpu=1, name="DRIVER", devices=[slot])
    return with_service_vm([vm])


def measure(way: str, n: int = 200, length: int = 64, latency_us: float = 50,
            jitter_us: float = 10, profile: TimingProfile | None = None, seed: int = 0,
            hotpath: str = "auto") -> dict:  # fmt: skip
    """One run: the guest's per-request latencies (cycles), and the VM exits of the driver's
    VM and of the Service VM between its first doorbell and its last completion."""
    from acrn_sim.hv.hypervisor import Hypervisor

    profile = profile or TimingProfile.load()
    if way == BASELINE:
        profile = TimingProfile(profile.tsc_hz, dict(profile.costs), dict(profile.classes))
        for c in ZERO_VTD:
            profile.override(c)
    consoles: dict[str, bytes] = {}

    def sink(name: str, data: bytes) -> None:
        consoles[name] = consoles.get(name, b"") + data

    hv = Hypervisor(profile, seed=seed, trace=True, console_sink=sink, hotpath=hotpath,
                    platform=_board(latency_us, jitter_us))  # fmt: skip
    hv.boot(_config(way, n, length, latency_us, jitter_us))
    hv.run(profile.tsc_hz * 10)
    vm = next(v for v in hv.vms if v.name == "DRIVER")
    text = (vm.console if not vm.is_post_launched else consoles.get("DRIVER", b"")).decode(
        errors="replace"
    )
    res = results(text.encode())
    if res is None or res.get("errors") != 0 or "sensor: PASS" not in text:
        raise RuntimeError(f"{way}: the driver did not complete:\n{text[-800:]}")
    lats = [int(ln.split()[2]) for ln in text.splitlines() if ln.startswith("lat ")]
    # the guests' TSC is the host's (the VMCS TSC offset is 0): the window in host cycles
    window = [e for e in hv.tracer.of_kind("vmexit") if res["t0"] <= e.cycle <= res["t1"]]
    svc = hv.service_vm()
    exits = sum(e.vm == vm.vm_id for e in window)
    svc_exits = sum(svc is not None and e.vm == svc.vm_id for e in window)
    return {"way": way, "lat": lats, "khz": res["khz"], "msis": res["msis"], "exits": exits,
            "svc_exits": svc_exits, "tsc_hz": profile.tsc_hz}  # fmt: skip


def _pct(sorted_values: list[int], p: int) -> int:
    k = max(1, -(-p * len(sorted_values) // 100))  # nearest rank
    return sorted_values[k - 1]


def summarize(row: dict) -> dict:
    lat = sorted(row["lat"])
    us = 1e6 / row["tsc_hz"]
    n = len(lat)
    return {**row, "n": n, "p50_us": _pct(lat, 50) * us, "p99_us": _pct(lat, 99) * us,
            "mean_us": sum(lat) / n * us, "exits_per_req": row["exits"] / n,
            "svc_exits_per_req": row["svc_exits"] / n}  # fmt: skip


def collect(n: int = 200, length: int = 64, latency_us: float = 50, jitter_us: float = 10,
            **kw) -> list[dict]:  # fmt: skip
    return [summarize(measure(w, n, length, latency_us, jitter_us, **kw))
            for w in (BASELINE, *WAYS)]  # fmt: skip


def lines(rows: list[dict]) -> list[str]:
    return [f"{r['way']}: p50 {r['p50_us']:.1f} us p99 {r['p99_us']:.1f} us" for r in rows]


def table(rows: list[dict]) -> str:
    base = rows[0]["p50_us"]
    out = ["| way | p50 (us) | p99 (us) | mean (us) | p50 vs baseline | VM exits per request "
           "| Service VM exits per request |", "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        out.append(f"| {r['way']} | {r['p50_us']:.1f} | {r['p99_us']:.1f} | {r['mean_us']:.1f} "
                   f"| {r['p50_us'] / base:.3f}x | {r['exits_per_req']:.2f} "
                   f"| {r['svc_exits_per_req']:.2f} |")  # fmt: skip
    return "\n".join(out)


def plot(rows: list[dict], path: str) -> str | None:
    """A bar chart of p50 and p99 per way; None, or why there is no plot."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "the plot needs matplotlib: pip install -e '.[plot]'"
    fig, ax = plt.subplots(figsize=(7, 3.6))
    names = [r["way"].replace(" (no hypervisor)", "\n(no hypervisor)") for r in rows]
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], [r["p50_us"] for r in rows], 0.4, label="p50")
    ax.bar([x + 0.2 for x in xs], [r["p99_us"] for r in rows], 0.4, label="p99")
    ax.set_xticks(list(xs), names, fontsize=8)
    ax.set_ylabel("request latency (us)")
    ax.set_title("One DMA sensor request: passed through, emulated, virtio (acrn-sim)")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return None


def report(rows: list[dict], plot_path: str | None) -> str:
    out = lines(rows[1:]) + [lines(rows[:1])[0], "", table(rows)]
    base, pt = rows[0]["p50_us"], rows[1]["p50_us"]
    out.append("")
    out.append(f"passthrough vs baseline: {pt / base:.3f}x "
               f"({'within' if pt <= 1.1 * base else 'NOT within'} 10%)")  # fmt: skip
    if plot_path:
        why = plot(rows, plot_path)
        out.append(f"plot: {why}" if why else f"plot: {plot_path}")
    return "\n".join(out)


def scenario(opts):
    """The passthrough run (what `scenario export` and a plain run would see)."""
    n = param(opts, "n", 200)
    return _config("passthrough", n, param(opts, "len", 64), param(opts, "latency_us", 50.0, float),
                   param(opts, "jitter_us", 10.0, float))  # fmt: skip


def PLATFORM(opts) -> PlatformConfig:  # noqa: N802 (the scenario attribute's name)
    return _board(param(opts, "latency_us", 50.0, float), param(opts, "jitter_us", 10.0, float))


def main(opts) -> int:
    rows = collect(param(opts, "n", 200), param(opts, "len", 64),
                   param(opts, "latency_us", 50.0, float), param(opts, "jitter_us", 10.0, float),
                   profile=opts.profile_obj, seed=opts.seed, hotpath=opts.hotpath)  # fmt: skip
    print(report(rows, param(opts, "plot", None, str)))
    return 0


def cli(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200, help="requests per way (default 200)")
    p.add_argument("--latency-us", type=float, default=50, help="acquisition time (default 50)")
    p.add_argument("--jitter-us", type=float, default=10, help="its spread (default 10)")
    p.add_argument("--len", type=int, default=64, help="sample bytes (default 64)")
    p.add_argument("--plot", metavar="FILE", help="also write the plot (PNG)")
    a = p.parse_args(argv)
    print(report(collect(a.n, a.len, a.latency_us, a.jitter_us), a.plot))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
