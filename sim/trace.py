"""Structured trace events on the simulated timeline, and their Chrome trace-event export.

An event is (cycle, pcpu, vm, vcpu, kind, name, dur, args). Spans ("X") carry a duration; the
export puts each on a pCPU track and/or a vCPU track, so Perfetto shows what each physical CPU
ran and what each vCPU did (guest code, VM exits by reason, halts).

Beside the events, the tracer keeps what the export links and counts:
- each finished request of a step recorder (`io_request`, sim/stats.py StepLatency): its steps
  become slices on the track of the side that did each one, tied together by a flow;
- counters (`counter`): a value that changes over time, such as a run queue's length.

The export (`chrome_trace`) follows the Trace Event Format (the "JSON Object Format": X
complete events, i instants, C counters, M metadata, and flows as `bind_id` with `flow_out` /
`flow_in` on slices, which Perfetto's JSON importer reads) and is checked, as Perfetto reads
it, by sim/tracecheck.py:
- times are whole nanoseconds, each rounded once from its cycle; a slice's duration is its
  rounded end minus its rounded start, so slices that touch in cycles touch in nanoseconds;
- process and thread ids start at 1 (0 is the kernel's swapper in Perfetto), every thread id
  is used by one process only (Perfetto keys threads by tid), and each is named;
- no displayTimeUnit: Perfetto would take "ns" as the unit of ts itself, Chrome only as the
  unit to display.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

# Processes of the export, by pid: the pCPUs, the hypervisor's own work, then one per VM
PCPU_PID, HV_PID, VM_PID_BASE = 1, 2, 3


@dataclass
class TraceEvent:
    cycle: int
    pcpu: int
    vm: int | None
    vcpu: int | None
    kind: str
    name: str
    dur: int = 0
    args: dict[str, Any] = field(default_factory=dict)


class Tracer:
    def __init__(self, tsc_hz: int, enabled: bool = True) -> None:
        self.tsc_hz = tsc_hz
        self.enabled = enabled
        self.events: list[TraceEvent] = []
        self.vm_names: dict[int, str] = {}
        self.vcpu_pcpu: dict[tuple[int, int], int] = {}
        self.pcpus: set[int] = set()
        # finished requests of a step recorder (sim/stats.py StepRecord), in finishing order
        self.requests: list[Any] = []
        # (track kind, key) -> [(cycle, value)], in time order
        self.counters: dict[tuple[str, Any], list[tuple[int, int]]] = defaultdict(list)
        # step number -> its short name, for the step slices (hv/dm/io_req.py STEP_NAMES)
        self.step_names: dict[int, str] = {}

    def register_vcpu(self, vm_id: int, vm_name: str, vcpu_id: int, pcpu: int) -> None:
        self.vm_names[vm_id] = vm_name
        self.vcpu_pcpu[(vm_id, vcpu_id)] = pcpu
        self.pcpus.add(pcpu)

    def span(
        self,
        kind: str,
        name: str,
        start: int,
        dur: int,
        pcpu: int,
        vm: int | None = None,
        vcpu: int | None = None,
        **args: Any,
    ) -> None:
        if self.enabled:
            self.events.append(TraceEvent(start, pcpu, vm, vcpu, kind, name, dur, args))

    def instant(
        self,
        kind: str,
        name: str,
        at: int,
        pcpu: int,
        vm: int | None = None,
        vcpu: int | None = None,
        **args: Any,
    ) -> None:
        if self.enabled:
            self.events.append(TraceEvent(at, pcpu, vm, vcpu, kind, name, -1, args))

    def counter(self, kind: str, key: Any, at: int, value: int) -> None:
        """A counter's new value (kind "runq": key is the pCPU)."""
        if self.enabled:
            series = self.counters[(kind, key)]
            if series and series[-1][0] == at:
                series[-1] = (at, value)  # the value at the end of that cycle counts
            elif not series or series[-1][1] != value:
                series.append((at, value))

    def io_request(self, record: Any) -> None:
        """A finished request of the I/O path (a StepRecord: vm, vcpu, req_id, device, steps,
        by, what), for the step slices and their flow."""
        if self.enabled:
            self.requests.append(record)

    def of_kind(self, kind: str) -> list[TraceEvent]:
        return [e for e in self.events if e.kind == kind]

    # ------------------------------------------------------------- export
    def ns(self, cycles: int) -> int:
        """A cycle count as whole nanoseconds, rounded half up, in exact integer arithmetic."""
        return (2 * cycles * 1_000_000_000 + self.tsc_hz) // (2 * self.tsc_hz)

    def chrome_trace(self) -> dict[str, Any]:
        """Chrome trace-event JSON ('JSON Object Format'), loadable in Perfetto."""
        return _Export(self).document()

    def write_chrome(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump(self.chrome_trace(), f, separators=(",", ":"), sort_keys=True)
            f.write("\n")


def step_side(step: int, by: str) -> str:
    """Which side did a step of the I/O path, from the function that stamped it: the vCPU's
    exit and entry (1, 9), the hypervisor's slot handling (2, 8), the device model's functions,
    or the Service VM's kernel (HSM and its in-kernel clients)."""
    if step in (1, 9, 10):
        return "vcpu"
    if step in (2, 8):
        return "hv"
    if by.startswith("DeviceModel."):
        return "dm"
    return "sos"


class _Export:
    """One export: tracks and their ids, then the events in time order."""

    def __init__(self, tracer: Tracer) -> None:
        self.t = tracer
        self.tids: dict[tuple, int] = {}
        self.meta: list[dict[str, Any]] = []
        self.used_pids: set[int] = set()
        self.counters = dict(tracer.counters)
        self.out: list[tuple[tuple, dict[str, Any]]] = []  # (sort key, event)

    def tid(self, key: tuple) -> int:
        return self.tids[key]

    def document(self) -> dict[str, Any]:
        t = self.t
        steps = self._step_slices()
        # Thread ids: pCPUs, then each VM's vCPUs, then the I/O lanes, in that order
        for p in sorted(t.pcpus):
            self._thread(("pcpu", p), PCPU_PID, f"pCPU{p}")
        for (vm_id, vcpu), pcpu in sorted(t.vcpu_pcpu.items()):
            self._thread(("vcpu", vm_id, vcpu), VM_PID_BASE + vm_id, f"vCPU{vcpu} (pCPU{pcpu})")
        lanes = sorted({s[0] for s in steps if s[0][0] != "vcpu"}, key=_lane_order)
        for lane in lanes:
            self._thread(lane, self._lane_pid(lane), self._lane_name(lane))
        if any(kind == "ioreq_slots" for kind, _ in self.counters):
            self._thread(("hv-counters",), HV_PID, "IOREQ slots")
        self.meta.insert(0, _meta(PCPU_PID, None, "process_name", "pCPUs"))
        if HV_PID in self.used_pids:
            self.meta.insert(1, _meta(HV_PID, None, "process_name", "hypervisor"))
        for vm_id, name in sorted(t.vm_names.items()):
            self.meta.append(_meta(VM_PID_BASE + vm_id, None, "process_name", f"VM{vm_id} {name}"))
        self._events()
        self._steps(steps)
        self._counters()
        self.out.sort(key=lambda kv: kv[0])
        return {
            "traceEvents": self.meta + [e for _, e in self.out],
            "otherData": {"tsc_hz": t.tsc_hz, "generator": "acrn-sim", "time_unit": "us"},
        }

    def _thread(self, key: tuple, pid: int, name: str) -> None:
        tid = self.tids[key] = len(self.tids) + 1
        self.used_pids.add(pid)
        self.meta.append(_meta(pid, tid, "thread_name", name))

    # -- the recorded events
    def _events(self) -> None:
        t, ns = self.t, self.t.ns
        for seq, e in enumerate(t.events):
            args = dict(e.args)
            args["cycle"] = e.cycle
            start = ns(e.cycle)
            base = {"name": e.name, "cat": e.kind, "ts": start / 1000, "args": args}
            end = start
            if e.dur >= 0:
                end = ns(e.cycle + e.dur)
                base["ph"] = "X"
                base["dur"] = (end - start) / 1000
                args["cycles"] = e.dur
            else:
                base["ph"] = "i"
                base["s"] = "t"
            key = (start, 0, -end, seq)
            if e.vm is not None and e.vcpu is not None:
                tid = self.tids.get(("vcpu", e.vm, e.vcpu))
                if tid is not None:
                    self.out.append((key, {**base, "pid": VM_PID_BASE + e.vm, "tid": tid}))
            if e.kind == "run" or e.vm is None:
                # What the pCPU executes: guest slices and hypervisor-only work.
                tid = self.tids[("pcpu", e.pcpu)]
                self.out.append((key, {**base, "pid": PCPU_PID, "tid": tid}))

    # -- the I/O path: a slice per step on its side's track, a flow through them
    def _step_slices(self) -> list[tuple[tuple, int, int, Any, int]]:
        """(lane, start cycle, end cycle, record, step) for every step of every request; the
        Service VM's and the device models' steps go to lanes in which none overlap."""
        t = self.t
        vm_of_req = {e.args["req"]: e.vm for e in t.events if e.kind == "ioreq" and "req" in e.args}
        raw: list[tuple[str, Any, int, int, Any, int]] = []
        for r in t.requests:
            vm_id = vm_of_req.get(r.req_id)
            present = sorted(r.steps)
            for a, b in zip(present, present[1:], strict=False):
                side = step_side(a, r.by.get(a, ""))
                if side == "vcpu":
                    if vm_id is None:
                        side = "hv"  # no exit span to nest in: the hypervisor's lane
                    else:
                        raw.append((side, (vm_id, r.vcpu), r.steps[a], r.steps[b], r, a))
                        continue
                owner = (r.vm, r.vcpu) if side == "hv" else (r.vm if side == "dm" else "")
                raw.append((side, owner, r.steps[a], r.steps[b], r, a))
        out: list[tuple[tuple, int, int, Any, int]] = []
        lane_ends: dict[tuple, list[int]] = defaultdict(list)
        for side, owner, start, end, r, step in sorted(
            raw, key=lambda s: (s[2], -s[3], s[4].req_id, s[5])
        ):
            if side == "vcpu":
                out.append((("vcpu", *owner), start, end, r, step))
                continue
            ends = lane_ends[(side, owner)]
            for i, last in enumerate(ends):
                if last <= start:
                    ends[i] = end
                    break
            else:
                i = len(ends)
                ends.append(end)
            out.append(((side, owner, i), start, end, r, step))
        # requests in flight: a slot is in use from step 2 (PENDING) to step 8 (FREE)
        deltas: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for r in t.requests:
            if 2 in r.steps and 8 in r.steps:
                deltas[r.vm] += [(r.steps[2], 1), (r.steps[8], -1)]
        for vm, ds in deltas.items():
            level, series = 0, []
            for cycle, d in sorted(ds, key=lambda x: (x[0], x[1])):
                level += d
                if series and series[-1][0] == cycle:
                    series[-1] = (cycle, level)
                else:
                    series.append((cycle, level))
            self.counters[("ioreq_slots", vm)] = series
        return out

    def _lane_pid(self, lane: tuple) -> int:
        side = lane[0]
        if side == "hv":
            return HV_PID
        svc = next((i for i, n in sorted(self.t.vm_names.items()) if n == "Service_VM"), None)
        if svc is None:  # a Service VM under another name: the one that runs the steps
            svc = min(self.t.vm_names, default=0)
        return VM_PID_BASE + svc

    @staticmethod
    def _lane_name(lane: tuple) -> str:
        side, owner, i = lane
        more = f" ({i + 1})" if i else ""
        if side == "hv":
            return f"I/O requests {owner[0]} vCPU{owner[1]}{more}"
        if side == "dm":
            return f"acrn-dm {owner}{more}"
        return f"HSM{more}"

    def _steps(self, steps: list[tuple[tuple, int, int, Any, int]]) -> None:
        t, ns = self.t, self.t.ns
        chains: dict[int, list[tuple[tuple, dict[str, Any]]]] = defaultdict(list)
        for lane, start, end, r, step in steps:
            if lane[0] == "vcpu":
                pid, tid = VM_PID_BASE + lane[1], self.tids.get(lane)
                if tid is None:
                    continue
            else:
                pid, tid = self._lane_pid(lane), self.tids[lane]
            s, e = ns(start), ns(end)
            name = t.step_names.get(step, "")
            ev = {
                "ph": "X",
                "cat": "ioreq_step",
                "name": f"step {step} {name}".rstrip(),
                "ts": s / 1000,
                "dur": (e - s) / 1000,
                "pid": pid,
                "tid": tid,
                "bind_id": r.req_id,
                "args": {
                    "req": r.req_id,
                    "vm": r.vm,
                    "vcpu": r.vcpu,
                    "device": r.device or "unclaimed",
                    "step": step,
                    "by": r.by.get(step, ""),
                    "what": r.what.get(step, ""),
                    "cycle": start,
                    "cycles": end - start,
                },
            }
            chains[r.req_id].append(((s, 1, r.req_id, step), ev))
        for chain in chains.values():
            chain.sort(key=lambda kv: kv[0])
            for i, (key, ev) in enumerate(chain):
                if len(chain) > 1:
                    if i > 0:
                        ev["flow_in"] = True
                    if i < len(chain) - 1:
                        ev["flow_out"] = True
                else:
                    del ev["bind_id"]
                self.out.append((key, ev))

    def _counters(self) -> None:
        ns = self.t.ns
        for (kind, key), series in sorted(self.counters.items(), key=lambda kv: str(kv[0])):
            if kind == "runq":
                pid, tid = PCPU_PID, self.tids.get(("pcpu", key))
                name, arg = f"run queue pCPU{key}", "vCPUs"
            elif kind == "ioreq_slots":
                pid, tid = HV_PID, self.tids[("hv-counters",)]
                name, arg = f"IOREQ slots {key}", "in use"
            else:
                continue
            if tid is None:
                continue
            last: dict[int, tuple[int, int]] = {}
            for cycle, value in series:  # one value per nanosecond: the last one
                last[ns(cycle)] = (cycle, value)
            for at, (_cycle, value) in sorted(last.items()):
                ev = {"ph": "C", "name": name, "pid": pid, "tid": tid, "ts": at / 1000,
                      "args": {arg: value}}  # fmt: skip
                self.out.append(((at, 2, name), ev))


def _lane_order(lane: tuple) -> tuple:
    side, owner, i = lane
    return ({"hv": 0, "sos": 1, "dm": 2}[side], str(owner), i)


def _meta(pid: int, tid: int | None, what: str, name: str) -> dict[str, Any]:
    ev: dict[str, Any] = {"ph": "M", "pid": pid, "name": what, "args": {"name": name}}
    if tid is not None:
        ev["tid"] = tid
    return ev
