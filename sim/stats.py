"""Statistics: counts, totals and latency percentiles, as JSON and as a printed table.

The exit table follows acrnalyze's columns (ACRN_FACTS §2.2 / TIMING_SOURCES §2.2: event,
count, time consumed, share) plus latency percentiles.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from sim.units import fmt_us

PERCENTILES = (50, 90, 99)


def percentile(sorted_values: list[int], p: int) -> int:
    """Nearest-rank percentile of an already sorted list (exact, no interpolation)."""
    if not sorted_values:
        return 0
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def summarize(values: list[int]) -> dict[str, int]:
    s = sorted(values)
    out = {"count": len(s), "total_cycles": sum(s), "min": s[0] if s else 0,
           "max": s[-1] if s else 0}  # fmt: skip
    for p in PERCENTILES:
        out[f"p{p}"] = percentile(s, p)
    return out


class Stats:
    def __init__(self, tsc_hz: int) -> None:
        self.tsc_hz = tsc_hz
        # (vm name) -> reason name -> latencies in cycles
        self.exits: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        # (vm name, vcpu) -> bucket ("guest", "exit", "halted") -> cycles
        self.vcpu_time: dict[tuple[str, int], dict[str, int]] = defaultdict(
            lambda: defaultdict(int)
        )
        self.end_cycle = 0

    def record_exit(self, vm: str, reason: str, latency: int) -> None:
        self.exits[vm][reason].append(latency)

    def add_time(self, vm: str, vcpu: int, bucket: str, cycles: int) -> None:
        self.vcpu_time[(vm, vcpu)][bucket] += cycles

    def to_json(self) -> dict[str, Any]:
        vms: dict[str, Any] = {}
        for vm in sorted(self.exits):
            vms.setdefault(vm, {})["exits"] = {
                r: summarize(v) for r, v in sorted(self.exits[vm].items())
            }
        for (vm, vcpu), buckets in sorted(self.vcpu_time.items()):
            vms.setdefault(vm, {}).setdefault("vcpus", {})[str(vcpu)] = dict(
                sorted(buckets.items())
            )
        return {"tsc_hz": self.tsc_hz, "sim_cycles": self.end_cycle, "vms": vms}

    def report(self) -> str:
        hz = self.tsc_hz
        lines = [f"simulated time: {self.end_cycle} cycles = {fmt_us(self.end_cycle, hz)} us "
                 f"(TSC {hz / 1e9:g} GHz)"]  # fmt: skip
        for vm in sorted(self.exits):
            rows = {r: summarize(v) for r, v in self.exits[vm].items()}
            total = sum(r["total_cycles"] for r in rows.values()) or 1
            lines.append("")
            lines.append(f"VM {vm}: VM exits")
            lines.append(
                f"  {'exit reason':<22}{'count':>8}{'cycles':>14}{'time%':>8}"
                f"{'p50':>9}{'p90':>9}{'p99':>9}{'max':>10}"
            )
            for reason, r in sorted(rows.items(), key=lambda kv: (-kv[1]["total_cycles"], kv[0])):
                lines.append(
                    f"  {reason:<22}{r['count']:>8}{r['total_cycles']:>14}"
                    f"{100 * r['total_cycles'] / total:>7.1f}%"
                    f"{r['p50']:>9}{r['p90']:>9}{r['p99']:>9}{r['max']:>10}"
                )
        if self.vcpu_time:
            lines.append("")
            lines.append("vCPU time (cycles)")
            lines.append(f"  {'vm':<16}{'vcpu':>5}{'guest':>14}{'exits':>14}{'halted':>14}")
            for (vm, vcpu), b in sorted(self.vcpu_time.items()):
                lines.append(
                    f"  {vm:<16}{vcpu:>5}{b.get('guest', 0):>14}{b.get('exit', 0):>14}"
                    f"{b.get('halted', 0):>14}"
                )
        return "\n".join(lines)
