"""Statistics: counts, totals and latency percentiles, as JSON and as a printed table.

The exit table follows acrnalyze's columns (misc/debug_tools/acrn_trace/scripts/acrnalyze.py: event,
count, time consumed, share) plus latency percentiles.
"""

from __future__ import annotations

import math
import struct
from array import array
from collections import defaultdict
from collections.abc import Callable
from operator import sub
from typing import Any

from acrn_sim.sim.units import fmt_us

PERCENTILES = (50, 90, 99)


def percentile(sorted_values: list[int], p: int) -> int:
    """Nearest-rank percentile of an already sorted list (exact, no interpolation)."""
    if not sorted_values:
        return 0
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def histogram(values) -> list[list[int]]:
    """Latencies counted in log-spaced buckets, four per octave (a bucket holds the values
    whose three leading bits are the same; below 8 cycles, each value is its own bucket):
    [[lower, upper (exclusive), count], ...] for the buckets that are not empty, in order.
    Exact integers, so the same values give the same buckets everywhere."""
    counts: dict[int, int] = defaultdict(int)
    for v in values:
        shift = max(v.bit_length() - 3, 0)
        counts[(v >> shift) << shift] += 1
    out = []
    for lower, n in sorted(counts.items()):
        shift = max(lower.bit_length() - 3, 0)
        out.append([lower, lower + (1 << shift), n])
    return out


# Every latency summary in the statistics has these keys, in cycles (the mean rounded down)
SUMMARY_KEYS = ("count", "total_cycles", "mean", "min", "p50", "p90", "p99", "max")


def summarize(values: list[int]) -> dict[str, int]:
    s = sorted(values)
    total = sum(s)
    out = {
        "count": len(s),
        "total_cycles": total,
        "mean": total // len(s) if s else 0,
        "min": s[0] if s else 0,
        "max": s[-1] if s else 0,
    }
    for p in PERCENTILES:
        out[f"p{p}"] = percentile(s, p)
    return out


class Stats:
    """A run's statistics. Everything is summarized when read (`to_json`, `report`,
    `io_requests`), not at the end of the run: a run whose statistics nobody reads does not
    sort its latencies."""

    def __init__(self, tsc_hz: int, ioreq_steps: StepLatency | None = None) -> None:
        self.tsc_hz = tsc_hz
        # (vm name) -> reason name -> latencies in cycles
        self.exits: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        # (vm name, vcpu) -> bucket ("guest", "exit", "halted") -> cycles
        self.vcpu_time: dict[tuple[str, int], dict[str, int]] = defaultdict(
            lambda: defaultdict(int)
        )
        self.end_cycle = 0
        self.ioreq_steps = ioreq_steps if ioreq_steps is not None else StepLatency()
        # name -> a callable giving more of the JSON (a device's own counters): read with it
        self.sections: dict[str, Any] = {}

    @property
    def io_requests(self) -> dict:
        """The I/O path's per-step summary (StepLatency.breakdown), made at each read."""
        return self.ioreq_steps.breakdown()

    # A vCPU resolves its containers once and appends or adds to them itself (hv/common/trace.py):
    # its exits are the hottest path of the model, and a call per exit would cost more.
    def exit_latencies(self, vm: str, reason: str) -> list[int]:
        """The list that `vm`'s exits of `reason` append their latencies to."""
        return self.exits[vm][reason]

    def vcpu_buckets(self, vm: str, vcpu: int) -> dict[str, int]:
        """(vm, vcpu)'s time: bucket ("guest", "exit", "halted", "paused") -> cycles."""
        return self.vcpu_time[(vm, vcpu)]

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
        return {
            "tsc_hz": self.tsc_hz,
            "sim_cycles": self.end_cycle,
            "vms": vms,
            "io_requests": self.io_requests,
            "histograms": self.histograms(),
            **{name: section() for name, section in sorted(self.sections.items())},
        }

    def histograms(self) -> dict[str, Any]:
        """The latency distributions behind the summaries (`histogram`): each I/O device's
        round trips through the Service VM, and each VM exit reason's latencies."""
        exits = {
            vm: {r: histogram(v) for r, v in sorted(reasons.items())}
            for vm, reasons in sorted(self.exits.items())
        }
        io = {
            vm: {dev: histogram(v) for dev, v in devices.items()}
            for vm, devices in self.ioreq_steps.round_trips().items()
        }
        return {"io_requests": io, "exits": exits}

    def report(self) -> str:
        hz = self.tsc_hz
        io_requests = self.io_requests
        lines = [
            f"simulated time: {self.end_cycle} cycles = {fmt_us(self.end_cycle, hz)} us "
            f"(TSC {hz / 1e9:g} GHz)"
        ]
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
        for vm, devices in sorted(io_requests.items()):
            for dev, steps in sorted(devices.items()):
                total = steps["total"]
                lines.append("")
                lines.append(
                    f"VM {vm}: I/O through the Service VM, device '{dev}': "
                    f"{total['count']} requests, cycles per step"
                )
                # numbered as --explain numbers them: step k lasts until the next step
                lines.append(f"  {'step':<20}{'mean':>9}{'p50':>9}{'p99':>9}{'max':>9}")
                for k, r in steps.items():
                    name = f"{k:>2} {r['name']}" if k != "total" else "round trip"
                    lines.append(
                        f"  {name:<20}{r['mean']:>9}{r['p50']:>9}{r['p99']:>9}{r['max']:>9}"
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


# A row of n step times in array("q")'s layout (native int64), for n = 1 .. 10
_PACK_ROW = {n: struct.Struct(f"={n}q").pack for n in range(1, 11)}


class StepRecord:
    """One request's passage through numbered steps: for each step reached, its cycle, the
    function that did it (`by`) and what happened (`what`); the unit that served it
    (`device`) and who completed it (`completed_by`), as the serving side reports them."""

    __slots__ = ("req_id", "vm", "vcpu", "steps", "by", "what", "device", "completed_by")

    def __init__(self, req_id: int, vm: str, vcpu: int) -> None:
        self.req_id = req_id
        self.vm = vm
        self.vcpu = vcpu
        self.steps: dict[int, int] = {}
        self.by: dict[int, str] = {}
        self.what: dict[int, str] = {}
        self.device: str | None = None
        self.completed_by: str | None = None

    def stamp_at(self, step: int, cycle: int, by: str, what: str) -> None:
        """Step `step` reached at `cycle`. The first stamp of a step counts: a second HSM
        interrupt that finds the request still PENDING (it came for another VM's request)
        does not move its step 3."""
        if step not in self.steps:
            self.steps[step] = cycle
            self.by[step] = by
            self.what[step] = what

    def durations(self) -> dict[int, int]:
        """Each step's duration: until the next step present."""
        steps = self.steps
        present = sorted(steps)
        return {a: steps[b] - steps[a] for a, b in zip(present, present[1:], strict=False)}


class StepLatency:
    """Requests that pass numbered steps (the I/O path's nine): per-step durations.

    The side that starts a request gives it an id (`begin`, at step 1); every side then stamps
    the steps it does, the starting side on the record it holds, the others by the request's
    id (`stamp`, at the clock's cycle). A step lasts until the next one; step 10 is "back in
    the guest".

    Every finished request adds its step times, as one row of integers, to the rows of its
    (VM, device), and `breakdown` takes the differences when read; no per-request object is
    kept for the summary, so memory grows by a few words per request. The first `keep`
    requests are also kept whole, with each step's function and text, for `--explain` and for
    tests (`requests`, `complete()`); later ones are not kept, so memory stays bounded.
    """

    def __init__(self, clock=None, keep: int = 1_000, names: dict[int, str] | None = None) -> None:
        self.clock = clock  # the simulation's Timeline: the timestamps of `stamp`
        self.keep = keep
        # step number -> its short name, carried by `breakdown` (the I/O path's are in
        # hv/dm/io_req.py STEP_NAMES); "total" is the round trip
        self.names = dict(names or {})
        # called with each finished record (the trace's step slices), when set
        self.on_finish: Callable[[StepRecord], None] | None = None
        self.requests: dict[int, StepRecord] = {}  # the kept ones, by id
        self.active: dict[int, StepRecord] = {}  # begun and not finished, by id
        # (vm, device, the steps present in order) -> their cycles, one row per request (a
        # list instead of an array for a group with a value outside 64 bits)
        self.rows: dict[tuple[str, str, tuple[int, ...]], array | list[int]] = {}

    def keeping(self) -> bool:
        """Whether the next request will be kept whole (its texts are wanted)."""
        return len(self.requests) < self.keep

    def begin(self, req_id: int, vm: str, vcpu: int, cycle: int, by: str, what: str):
        """Step 1 of request `req_id` of (vm, vcpu)."""
        r = StepRecord(req_id, vm, vcpu)
        r.steps[1] = cycle
        r.by[1] = by
        r.what[1] = what
        if self.keeping():
            self.requests[req_id] = r
        self.active[req_id] = r
        return r

    def stamp(
        self,
        req_id: int,
        step: int,
        by: str,
        what: str,
        device: str | None = None,
        completed_by: str | None = None,
    ) -> None:
        """A step of request `req_id`, reached now, by another side than the one that began it
        (which names the unit that serves it, and who completed it, when it knows)."""
        r = self.active.get(req_id)
        if r is not None:
            steps = r.steps
            if step not in steps:  # (StepRecord.stamp_at, without the call)
                steps[step] = self.clock.now
                r.by[step] = by
                r.what[step] = what
            if device:
                r.device = device
            if completed_by:
                r.completed_by = completed_by

    def finish(self, r: StepRecord, cycle: int, by: str, what: str) -> None:
        """Step 10, back in the guest: the request's timestamps join its group's, as one row
        of a flat array per (VM, device, steps present); `breakdown` takes the differences."""
        steps = r.steps
        steps[10] = cycle
        r.by[10] = by
        r.what[10] = what
        self.active.pop(r.req_id, None)
        key = (r.vm, r.device or "unclaimed", tuple(steps))
        rows = self.rows.get(key)
        if rows is None:
            rows = self.rows[key] = array("q")
        try:
            # As bytes: array.extend converts each int through PyArg_Parse, struct packs them
            # at once
            rows.frombytes(_PACK_ROW[len(steps)](*steps.values()))
        except (struct.error, KeyError):
            # A timestamp outside 64 bits (or an unexpected shape): the group goes on as a
            # plain list, which holds any integer (slower, and only ever in such a run)
            if isinstance(rows, array):
                rows = self.rows[key] = rows.tolist()
            rows.extend(steps.values())
        if self.on_finish is not None:
            self.on_finish(r)

    def complete(self) -> list[StepRecord]:
        """The kept requests that reached their end (step 10 = back in the guest), in order."""
        return [r for _id, r in sorted(self.requests.items()) if 10 in r.steps]

    def breakdown(self) -> dict:
        """vm -> device -> step -> summary (count, mean, p50, p99, max ...) in cycles, over
        every finished request. A step lasts until the next step present."""
        out: dict = {}
        names = self.names
        for (vm, dev), steps in sorted(self._groups().items()):
            out.setdefault(vm, {})[dev] = {
                k: {"name": names.get(int(k), "") if k != "total" else "round_trip", **summarize(v)}
                for k, v in sorted(steps.items(), key=lambda kv: _step_order(kv[0]))
            }
        return out

    def round_trips(self) -> dict[str, dict[str, list[int]]]:
        """vm -> device -> every finished request's round trip (step 1 to 10), in cycles."""
        out: dict[str, dict[str, list[int]]] = {}
        for (vm, dev), steps in sorted(self._groups().items()):
            out.setdefault(vm, {})[dev] = steps["total"]
        return out

    def _groups(self) -> dict[tuple[str, str], dict[str, list[int]]]:
        """(vm, device) -> step ("1".."9", "total") -> durations."""
        groups: dict[tuple[str, str], dict[str, list[int]]] = {}
        for (vm, dev, shape), rows in sorted(self.rows.items()):
            g = groups.setdefault((vm, dev), {})
            width = len(shape)
            column = {step: rows[i::width] for i, step in enumerate(shape)}
            present = sorted(shape)
            for a, b in zip(present, present[1:], strict=False):
                g.setdefault(str(a), []).extend(map(sub, column[b], column[a]))
            g.setdefault("total", []).extend(map(sub, column[10], column[1]))
        return groups


def _step_order(key: str) -> tuple[int, int]:
    """Step keys in number order ("1" .. "9"), the round trip ("total") last."""
    return (1, 0) if key == "total" else (0, int(key))
