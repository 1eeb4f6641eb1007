"""What a vCPU's thread records: its VM exits (a latency sample per exit and reason, and a span
on the vCPU's trace track), its time by bucket, and instant events (ACRN's trace points,
hypervisor/common/trace.c TRACE_2L, and its `vmexit` sampling, hypervisor/debug/profiling.c).

The containers live in sim/stats.py; a vCPU resolves its own lists and buckets there once and
then appends and adds to them directly, because its exits are the hottest path of the model.
"""

from __future__ import annotations

from acrn_sim.hv.guest.vmcs import REASON_NAMES


def time_buckets(vcpu) -> dict[str, int]:
    """The vCPU's time buckets ("guest", "exit", "halted", "paused" -> cycles), created at
    first use (a vCPU that never ran has none). Hot paths add to them as
    `(vcpu.time or time_buckets(vcpu))[bucket] += cycles`."""
    vcpu.time = vcpu.hv.stats.vcpu_buckets(vcpu.vm.name, vcpu.vcpu_id)
    return vcpu.time


def record_exit(vcpu, reason: int, start: int, rip: int, latency: int | None = None) -> None:
    """Count one VM exit (its latency: from the exit to the guest's next instruction) and trace
    it as a span on the vCPU's track. Time the exit spent waiting (`vcpu.halted`, HLT's wait
    for an interrupt) is counted as halted, not as exit handling."""
    if latency is None:
        latency = vcpu.env.now - start
    latencies = vcpu.exit_latencies.get(reason)
    if latencies is None:  # the first exit of this reason
        latencies = vcpu.exit_latencies[reason] = vcpu.hv.stats.exit_latencies(
            vcpu.vm.name, REASON_NAMES[reason]
        )
    latencies.append(latency)
    (vcpu.time or time_buckets(vcpu))["exit"] += latency - vcpu.halted
    vcpu.halted = 0
    tracer = vcpu.hv.tracer
    if tracer.enabled:
        tracer.span(
            "vmexit",
            REASON_NAMES[reason],
            start,
            latency,
            vcpu.pcpu_id,
            vcpu.vm.vm_id,
            vcpu.vcpu_id,
            reason=int(reason),
            rip=f"{rip:#x}",
            qualification=f"{vcpu.exit_qualification:#x}",
        )


def trace_guest_run(vcpu, start: int, cycles: int) -> None:
    """A slice of guest code, as a span on the vCPU's track (callers test tracer.enabled)."""
    vm_id = vcpu.vm.vm_id
    vcpu.hv.tracer.span(
        "run", f"VM{vm_id} vCPU{vcpu.vcpu_id}", start, cycles, vcpu.pcpu_id, vm_id, vcpu.vcpu_id
    )


def trace_event(vcpu, kind: str, name: str, **args) -> None:
    """An instant event on the vCPU's track, now."""
    tracer = vcpu.hv.tracer
    if tracer.enabled:
        tracer.instant(kind, name, vcpu.env.now, vcpu.pcpu_id, vcpu.vm.vm_id, vcpu.vcpu_id, **args)


def trace_note(vcpu, text: str) -> None:
    trace_event(vcpu, "note", text)


def trace_injection(vcpu, vector: int, etype) -> None:
    trace_event(vcpu, "inject", f"inject {vector:#x}", vector=vector, type=etype.name)


def trace_native_event(vcpu, vector: int, rip: int) -> None:
    trace_event(vcpu, "exception", f"exception {vector}", vector=vector, rip=f"{rip:#x}")


def trace_hypercall(vcpu, hcall_id: int, ret: int) -> None:
    trace_event(vcpu, "hypercall", f"hypercall {hcall_id:#x}", id=f"{hcall_id:#x}", ret=ret)
