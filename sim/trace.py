"""Structured trace events on the simulated timeline, and their Chrome trace-event export.

An event is (cycle, pcpu, vm, vcpu, kind, name, dur, args). Spans ("X") carry a duration; the
export puts each on a pCPU track and/or a vCPU track, so Perfetto shows what each physical CPU
ran and what each vCPU did (guest code, VM exits by reason, halts).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

PCPU_PID = 0


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

    def of_kind(self, kind: str) -> list[TraceEvent]:
        return [e for e in self.events if e.kind == kind]

    # ------------------------------------------------------------- export
    def _us(self, cycles: int) -> float:
        # Exact integer arithmetic first, then one rounding: the same input gives the same text.
        return round(cycles * 1_000_000 / self.tsc_hz, 6)

    def chrome_trace(self) -> dict[str, Any]:
        """Chrome trace-event JSON ('JSON Object Format'), loadable in Perfetto."""
        out: list[dict[str, Any]] = []
        out.append({"ph": "M", "pid": PCPU_PID, "name": "process_name", "args": {"name": "pCPUs"}})
        for p in sorted(self.pcpus):
            out.append(
                {
                    "ph": "M",
                    "pid": PCPU_PID,
                    "tid": p,
                    "name": "thread_name",
                    "args": {"name": f"pCPU{p}"},
                }
            )
        for vm_id, name in sorted(self.vm_names.items()):
            out.append(
                {
                    "ph": "M",
                    "pid": vm_id + 1,
                    "name": "process_name",
                    "args": {"name": f"VM{vm_id} {name}"},
                }
            )
        for (vm_id, vcpu), pcpu in sorted(self.vcpu_pcpu.items()):
            out.append(
                {
                    "ph": "M",
                    "pid": vm_id + 1,
                    "tid": vcpu,
                    "name": "thread_name",
                    "args": {"name": f"vCPU{vcpu} (pCPU{pcpu})"},
                }
            )
        for e in self.events:
            args = dict(e.args)
            args["cycle"] = e.cycle
            base = {"name": e.name, "cat": e.kind, "ts": self._us(e.cycle), "args": args}
            if e.dur >= 0:
                base["ph"] = "X"
                base["dur"] = self._us(e.dur)
                args["cycles"] = e.dur
            else:
                base["ph"] = "i"
                base["s"] = "t"
            if e.vm is not None and e.vcpu is not None:
                out.append({**base, "pid": e.vm + 1, "tid": e.vcpu})
            if e.kind == "run" or e.vm is None:
                # What the pCPU executes: guest slices and hypervisor-only work.
                out.append({**base, "pid": PCPU_PID, "tid": e.pcpu})
        return {
            "traceEvents": out,
            "displayTimeUnit": "ns",
            "otherData": {"tsc_hz": self.tsc_hz, "generator": "acrn-sim"},
        }

    def write_chrome(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump(self.chrome_trace(), f, separators=(",", ":"), sort_keys=True)
            f.write("\n")
