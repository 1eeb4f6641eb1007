"""Plots of a run's statistics (`acrn-sim plot STATS.json`, `acrn-sim run ... --plot DIR`).

Each plot is made in two steps: `*_data` takes the statistics document (the JSON of --stats,
sim/schemas/stats.schema.json) and returns exactly the numbers drawn; `draw_*` hands them to
matplotlib (the optional extra `plot`: pip install -e '.[plot]'). Tests compare the data with
the statistics, so a plot cannot show other figures than the file it came from.

- latency: per VM and device, the histogram of the I/O round trips through the Service VM,
  p50 and p99 marked (per VM and exit reason when no I/O went through the Service VM);
- exits: per VM and exit reason, the latency's min to max and p50 to p99;
- steps: the nine steps of the I/O path as stacked bars (mean cycles of each step), one bar per
  VM and device;
- timeline: per pCPU, which vCPU held it when (the scheduler's switches).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from acrn_sim.sim import ConfigError

PERCENTILE_KEYS = ("min", "p50", "p90", "p99", "max")


def require_matplotlib():
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError(
            "plots need matplotlib: pip install -e '.[plot]' (or pip install matplotlib)"
        ) from None
    return plt


# ------------------------------------------------------------------------------- data
def histogram_data(stats: dict[str, Any]) -> list[dict[str, Any]]:
    """One histogram per VM and device: its I/O round trips through the Service VM, as the
    statistics count them (`histograms.io_requests`, buckets in microseconds), with the p50
    and p99 of the round trip's summary to mark. Without such I/O (pre-launched VMs only),
    one per VM and exit reason (`histograms.exits`)."""
    hz = stats["tsc_hz"]
    us = lambda c: c * 1e6 / hz  # noqa: E731
    out = []
    for vm, devices in sorted(stats["histograms"]["io_requests"].items()):
        for dev, buckets in sorted(devices.items()):
            total = stats["io_requests"][vm][dev]["total"]
            out.append({
                "vm": vm, "what": f"I/O to {dev}, round trip",
                "buckets": [(us(lo), us(hi), n) for lo, hi, n in buckets],
                "count": total["count"], "p50": us(total["p50"]), "p99": us(total["p99"]),
            })  # fmt: skip
    if out:
        return out
    for vm, reasons in sorted(stats["histograms"]["exits"].items()):
        for reason, buckets in sorted(reasons.items()):
            s = stats["vms"][vm]["exits"][reason]
            out.append({
                "vm": vm, "what": f"exit {reason}",
                "buckets": [(us(lo), us(hi), n) for lo, hi, n in buckets],
                "count": s["count"], "p50": us(s["p50"]), "p99": us(s["p99"]),
            })  # fmt: skip
    return out


def exits_data(stats: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry per VM and exit reason: its latency percentiles in microseconds."""
    hz = stats["tsc_hz"]
    out = []
    for vm, d in sorted(stats["vms"].items()):
        for reason, s in sorted(d.get("exits", {}).items()):
            out.append({
                "vm": vm, "what": f"exit {reason}", "count": s["count"],
                "cycles": {k: s[k] for k in PERCENTILE_KEYS},
                "us": {k: s[k] * 1e6 / hz for k in PERCENTILE_KEYS},
            })  # fmt: skip
    return out


def steps_data(stats: dict[str, Any]) -> dict[str, Any]:
    """Stacked bars: a bar per (VM, device), a segment per step (its mean, microseconds)."""
    hz = stats["tsc_hz"]
    bars, names = [], {}
    for vm, devices in sorted(stats["io_requests"].items()):
        for dev, steps in sorted(devices.items()):
            seg = {}
            for k, s in steps.items():
                if k != "total":
                    seg[int(k)] = s["mean"] * 1e6 / hz
                    names[int(k)] = s["name"]
            bars.append({"label": f"{vm}\n{dev}", "vm": vm, "device": dev, "steps": seg,
                         "requests": steps["total"]["count"]})  # fmt: skip
    return {"bars": bars, "step_names": dict(sorted(names.items()))}


def timeline_data(stats: dict[str, Any]) -> dict[str, Any]:
    """Per pCPU, the intervals (start us, length us, who) during which a vCPU held it."""
    hz, end = stats["tsc_hz"], stats["sim_cycles"]
    rows = {}
    for pcpu, d in sorted((stats.get("pcpus") or {}).items(), key=lambda kv: int(kv[0])):
        tl = d["timeline"]
        spans = []
        for (start, who), (nxt, _) in zip(tl, [*tl[1:], [end, None]], strict=True):
            stop = min(nxt, end)
            if who is not None and stop > start:
                spans.append((start * 1e6 / hz, (stop - start) * 1e6 / hz, who))
        rows[int(pcpu)] = spans
    who_all = sorted({w for spans in rows.values() for _, _, w in spans})
    return {"pcpus": rows, "vcpus": who_all, "end_us": end * 1e6 / hz}


# ------------------------------------------------------------------------------ drawing
def draw_histograms(data: list[dict[str, Any]], path: Path) -> None:
    plt = require_matplotlib()
    n = len(data)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, h in zip(axes.flat, data, strict=False):
        lows = [lo for lo, _, _ in h["buckets"]]
        widths = [hi - lo for lo, hi, _ in h["buckets"]]
        ax.bar(lows, [c for _, _, c in h["buckets"]], width=widths, align="edge",
               color="tab:blue", edgecolor="white", linewidth=0.3)  # fmt: skip
        ax.axvline(h["p50"], color="k", lw=1.5, label=f"p50 {h['p50']:.1f} us")
        ax.axvline(h["p99"], color="tab:red", lw=1.5, label=f"p99 {h['p99']:.1f} us")
        ax.set_xscale("log")
        ax.set_title(f"{h['vm']}: {h['what']} (n={h['count']})", fontsize=9)
        ax.set_xlabel("latency (us)")
        ax.set_ylabel("count")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def draw_exits(data: list[dict[str, Any]], path: Path) -> None:
    plt = require_matplotlib()
    n = max(1, len(data))
    fig, ax = plt.subplots(figsize=(8, 0.45 * n + 1.2))
    for i, e in enumerate(data):
        us = e["us"]
        ax.plot([us["min"], us["max"]], [i, i], color="0.7", lw=1)
        ax.plot([us["p50"], us["p99"]], [i, i], color="tab:blue", lw=5, solid_capstyle="butt")
        ax.plot(us["p50"], i, "|", color="k", ms=14, mew=2)
        ax.plot(us["p99"], i, "|", color="tab:red", ms=14, mew=2)
    ax.set_yticks(range(len(data)), [f"{e['vm']}: {e['what']} (n={e['count']})" for e in data])
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("latency (us): min-max line, p50-p99 bar; p50 black, p99 red")
    ax.set_title("VM exits per VM and reason")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def draw_steps(data: dict[str, Any], path: Path) -> None:
    plt = require_matplotlib()
    bars = data["bars"]
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(bars) + 3), 4.5))
    colors = plt.get_cmap("tab10")
    bottoms = [0.0] * len(bars)
    for step, name in data["step_names"].items():
        heights = [b["steps"].get(step, 0.0) for b in bars]
        ax.bar(range(len(bars)), heights, bottom=bottoms, color=colors((step - 1) % 10),
               label=f"{step} {name}")  # fmt: skip
        bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
    ax.set_xticks(range(len(bars)), [b["label"] for b in bars])
    ax.set_ylabel("mean time per request (us)")
    ax.set_title("The I/O path's nine steps, per VM and device")
    ax.legend(fontsize=8, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def draw_timeline(data: dict[str, Any], path: Path) -> None:
    plt = require_matplotlib()
    pcpus = sorted(data["pcpus"])
    fig, ax = plt.subplots(figsize=(10, 0.6 * len(pcpus) + 1.5))
    colors = plt.get_cmap("tab20")
    color_of = {w: colors(i % 20) for i, w in enumerate(data["vcpus"])}
    for row, p in enumerate(pcpus):
        spans = data["pcpus"][p]
        for w in data["vcpus"]:
            mine = [(s, d) for s, d, who in spans if who == w]
            if mine:
                ax.broken_barh(mine, (row - 0.4, 0.8), color=color_of[w])
    handles = [plt.Rectangle((0, 0), 1, 1, color=color_of[w]) for w in data["vcpus"]]
    ax.legend(handles, data["vcpus"], fontsize=8, bbox_to_anchor=(1.01, 1), loc="upper left")
    ax.set_yticks(range(len(pcpus)), [f"pCPU{p}" for p in pcpus])
    ax.set_xlim(0, data["end_us"] or 1)
    ax.set_xlabel("simulated time (us)")
    ax.set_title("Which vCPU held each pCPU (white: idle)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


PLOTS = {
    "latency.png": (histogram_data, draw_histograms),
    "exits.png": (exits_data, draw_exits),
    "io_steps.png": (steps_data, draw_steps),
    "pcpu_timeline.png": (timeline_data, draw_timeline),
}


def plot_all(stats: dict[str, Any], directory: str | Path) -> list[Path]:
    """Every plot of `stats` into `directory` (made if missing); a plot with nothing to show
    (no I/O through the Service VM, say) is left out."""
    require_matplotlib()
    d = Path(directory)
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot make {directory}: {e.strerror or e}") from None
    written = []
    for name, (make, draw) in PLOTS.items():
        data = make(stats)
        empty = not data or (isinstance(data, dict) and not (data.get("bars") or
                                                              data.get("pcpus")))  # fmt: skip
        if empty:
            continue
        draw(data, d / name)
        written.append(d / name)
    return written


def load_stats(path: str) -> dict[str, Any]:
    """A statistics file, checked against the schema (one line when it is not one)."""
    from acrn_sim.sim.schema import check_stats

    try:
        stats = json.loads(Path(path).read_text())
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise ConfigError(f"{path} is not JSON: {e}") from None
    problems = check_stats(stats)
    if problems:
        raise ConfigError(f"{path} is not an acrn-sim statistics file: {problems[0]}")
    return stats


def cmd_plot(stats_path: str, output: str) -> int:
    """`acrn-sim plot STATS.json -o DIR`: prints the files written."""
    require_matplotlib()
    stats = load_stats(stats_path)
    for path in plot_all(stats, output):
        print(path)
    return 0
