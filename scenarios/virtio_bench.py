"""VBS-U against VBS-K, with and without EVENT_IDX, at batch sizes 1, 8 and 32: the table and
plot of docs/virtio.md, from guests/src/vbench.c runs.

    python -m acrn_sim.scenarios.virtio_bench                  # the tables (Markdown)
    python -m acrn_sim.scenarios.virtio_bench --plot FILE.png  # and the plot (needs matplotlib:
                                                      #   pip install -e '.[plot]')

Per configuration, two runs (256 and 512 requests, batch = depth) give the marginal VM exits,
notifications and interrupts per request, so set-up and the driver's own output cancel out;
latency is the guest's own (RDTSC from adding a request to seeing it used) over 512 requests,
and the device model's wake-ups per request are the device's. virtio-rnd has both back ends;
virtio-blk (VBS-U only in ACRN) shows what suppression does when completions come one by one.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from acrn_sim.guests import image_path
from acrn_sim.hv.hypervisor import Hypervisor
from acrn_sim.scenarios import results, user_vm, with_service_vm
from acrn_sim.sim.timing import TimingProfile

BATCHES = (1, 8, 32)
MODES = {"EVENT_IDX": "", "flags (no EVENT_IDX)": "event_idx=0", "none": "suppress=0"}


def _run(cmdline: str, devices: list[str]):
    profile = TimingProfile.load()
    consoles: dict[str, bytes] = {}

    def sink(name: str, data: bytes) -> None:
        consoles[name] = consoles.get(name, b"") + data

    hv = Hypervisor(profile, trace=False, console_sink=sink)
    vm = user_vm(image_path("vbench.elf"), cmdline=cmdline, devices=devices)
    configs = with_service_vm([vm])
    hv.boot(configs)
    hv.run()
    res = results(consoles.get("POST_VM1", b""))
    dm = configs[0].software.instance.dms["POST_VM1"]
    if res is None or dm.exit_code != 0:
        raise RuntimeError(f"vbench {cmdline} failed:\n{consoles.get('POST_VM1', b'').decode()}")
    exits = sum(len(v) for v in hv.stats.exits["POST_VM1"].values())
    return res, dm.pci.devices[0].stats, exits


def measure(device: str, backend: str, batch: int, mode: str, disk: Path) -> dict:
    opts = MODES[mode]
    if device == "rng":
        devices = ["6,virtio-rnd" + (",kernel=on" if backend == "VBS-K" else "")]
    else:
        devices = [f"3,virtio-blk,{disk}"]
    cmd = f"dev={device} batch={batch} depth={batch} {opts}"
    (r1, s1, e1), (r2, s2, e2) = (_run(f"{cmd} n={n}", devices) for n in (256, 512))
    return {
        "device": device, "backend": backend, "batch": batch, "mode": mode,
        "lat_avg_us": r2["lat_avg"] / (r2["khz"] / 1000),
        "lat_p99_us": r2["lat_p99"] / (r2["khz"] / 1000),
        "exits": (e2 - e1) / 256,
        "kicks": (s2.kicks - s1.kicks) / 256,
        "irqs": (s2.interrupts - s1.interrupts) / 256,
        "dm_wakeups": (s2.dm_wakeups - s1.dm_wakeups) / 256,
    }  # fmt: skip


def collect() -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        disk = Path(tmp) / "disk.img"
        disk.write_bytes(bytes(4 << 20))
        for batch in BATCHES:
            for mode in ("EVENT_IDX", "flags (no EVENT_IDX)"):
                for backend in ("VBS-U", "VBS-K"):
                    rows.append(measure("rng", backend, batch, mode, disk))
        for batch in BATCHES:
            for mode in MODES:
                rows.append(measure("blk", "VBS-U", batch, mode, disk))
    return rows


def markdown(rows: list[dict]) -> str:
    out = []
    for device, title in (
        ("rng", "virtio-rnd, 4 KiB requests"),
        ("blk", "virtio-blk, 4 KiB reads"),
    ):
        out += [f"**{title}**", "",
                "| back end | suppression | batch | latency avg (us) | p99 (us) | VM exits/req "
                "| kicks/req | interrupts/req | DM wake-ups/req |",
                "|---|---|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        for r in (r for r in rows if r["device"] == device):
            out.append(
                f"| {r['backend']} | {r['mode']} | {r['batch']} | {r['lat_avg_us']:.1f} "
                f"| {r['lat_p99_us']:.1f} | {r['exits']:.3f} | {r['kicks']:.3f} "
                f"| {r['irqs']:.3f} | {r['dm_wakeups']:.3f} |"
            )
        out.append("")
    return "\n".join(out)


def plot(rows: list[dict], path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("the plot needs matplotlib: pip install -e '.[plot]'")
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    series = [
        ("rng", b, m) for b in ("VBS-U", "VBS-K") for m in ("EVENT_IDX", "flags (no EVENT_IDX)")
    ]
    series += [("blk", "VBS-U", m) for m in MODES]
    for ax, key, label in zip(axes, ("lat_avg_us", "exits", "irqs"),
                              ("latency per request (us)", "VM exits per request",
                               "interrupts per request"), strict=True):  # fmt: skip
        for device, backend, mode in series:
            key3 = (device, backend, mode)
            pts = [r for r in rows if (r["device"], r["backend"], r["mode"]) == key3]
            style = "-" if mode == "EVENT_IDX" else "--" if mode.startswith("flags") else ":"
            ax.plot([r["batch"] for r in pts], [r[key] for r in pts], style, marker="o",
                    label=f"{device} {backend} {mode}")  # fmt: skip
        ax.set_xscale("log", base=2)
        ax.set_xticks(BATCHES, [str(b) for b in BATCHES])
        ax.set_xlabel("batch (requests per notification)")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("vbench in acrn-sim: VBS-U vs VBS-K, notification suppression")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--plot", metavar="FILE", help="also write the plot (PNG)")
    opts = p.parse_args(argv)
    rows = collect()
    print(markdown(rows))
    if opts.plot:
        plot(rows, opts.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
