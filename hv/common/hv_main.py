"""The vCPU thread (ACRN hypervisor/common/hv_main.c vcpu_thread), as a simpy process on the
vCPU's pCPU. Each turn of its loop is one VM entry:

    vcpu_thread
      preemption_point     the Service VM's software, a pause, a reschedule (schedule())
      run_vcpu             VM entry with event injection, a slice of guest code, and the
                           processor's decision on how it stopped (vmx.vmexit)
      vmexit_round_trip    ACRN's dispatch (vmexit_handler) and handler, the resume past the
                           instruction (vcpu_resume), and the VM entry's transition

Every step costs cycles from the timing profile on the vCPU's time, and every exit is counted
and traced (hv/common/trace.py).
"""

from __future__ import annotations

from acrn_sim.hv.arch import vmx
from acrn_sim.hv.common.event import wait_native_halt
from acrn_sim.hv.common.lookahead import horizon, senders
from acrn_sim.hv.common.trace import record_exit, time_buckets, trace_guest_run
from acrn_sim.hv.guest import virq
from acrn_sim.hv.guest import vmcs as V
from acrn_sim.hv.guest.assign import POSTED_KICK
from acrn_sim.hv.guest.vcpu import RUNNING
from acrn_sim.hv.guest.vmexit import vmexit_handler
from acrn_sim.sim import events
from acrn_sim.sim.timeline import Interrupt

EXTERNAL_INTERRUPT = V.ExitReason.EXTERNAL_INTERRUPT
TRIPLE_FAULT = V.ExitReason.TRIPLE_FAULT
STOPPED = -1  # run_vcpu: the VM went down meanwhile


def launch_vcpu(vcpu) -> None:
    """ACRN launch_vcpu: the vCPU runs, on a new thread (a reset launches another)."""
    vcpu.state = RUNNING
    vcpu.epoch += 1
    vcpu.process = vcpu.env.process(vcpu_thread(vcpu))


def vcpu_thread(vcpu):
    env = vcpu.env
    epoch = vcpu.epoch
    if vcpu.wait_for_sipi:  # an AP: nothing runs until the BSP's INIT-SIPI-SIPI
        vcpu.sipi_ev = env.event()
        yield vcpu.sipi_ev
        vcpu.sipi_ev = None
    if vcpu.running(epoch) and vcpu.sched.wake_thread(vcpu):
        yield from vcpu.sched.wait_for_turn(vcpu)
    sw = vcpu.vm.software  # the Service VM's modelled software, or None
    while vcpu.state is RUNNING and vcpu.epoch == epoch:
        if preemption_due(vcpu, sw):
            yield from preemption_point(vcpu, sw, epoch)
            if not vcpu.running(epoch):
                break
        if vcpu.timer_exit_pending:
            # The hypervisor's timer (LAPIC timer vector 0xE0, ACRN tsc_deadline_timer.c)
            # interrupted this vCPU's guest code: an external-interrupt exit whose handler runs
            # the vLAPIC timer callback.
            vcpu.timer_exit_pending = False
            yield from external_interrupt_exit(vcpu, epoch)
        if vcpu.native_halt:
            # HLT without HLT exiting: the pCPU halts in the guest until an interrupt.
            if not vcpu.interrupt_pending():
                yield from wait_native_halt(vcpu)
            vcpu.native_halt = False
        reason = yield from run_vcpu(vcpu, sw, epoch)
        if reason is STOPPED:
            break
        if reason is not None:
            yield from vmexit_round_trip(vcpu, reason, epoch)
    vcpu.sched.exit_thread(vcpu)


# ------------------------------------------------------------------ between VM entries
def preemption_due(vcpu, sw) -> bool:
    """Whether preemption_point has anything to do (usually not: tested first)."""
    return (
        (sw is not None and (bool(vcpu.pending_extint) or sw.has_work()))
        or vcpu.pause_requested
        or vcpu.sched.need_resched
    )


def preemption_point(vcpu, sw, epoch: int, preempted: bool = False):
    """Where ACRN's vcpu_thread checks for work between VM entries: the Service VM's software
    (which runs on this vCPU's time), a pause, a reschedule request (schedule())."""
    if sw is not None:
        yield from service_vm_software(vcpu, sw, preempted)
    if vcpu.pause_requested:
        yield from paused(vcpu, epoch)
    if vcpu.sched.need_resched and vcpu.sched.curr is vcpu and vcpu.running(epoch):
        yield from vcpu.sched.schedule(vcpu)


def service_vm_software(vcpu, sw, preempted: bool):
    """Give the Service VM's modelled kernel the interrupts it claims (the HSM upcall, its
    timer) and let it run its pending work (hv/service_vm_port.py). While it runs, the VM's
    own guest code does not. `preempted`: the interrupt came while that guest code ran."""
    env = vcpu.env
    while True:
        pending = vcpu.pending_extint
        for vector in [v for v in pending if sw.claims_vector(v)] if pending else ():
            pending.remove(vector)
            inject = vcpu.profile.cycles["inject_event"]
            if not env.spend(inject):
                yield env.timeout(inject)
            yield from sw.interrupt(vector, preempted)
        if not sw.has_work():
            return
        yield from sw.run()


def paused(vcpu, epoch: int):
    """ACRN pause_vcpu: the thread sleeps until resume_vcpu (or the VM goes down)."""
    env = vcpu.env
    vcpu.sched.sleep_thread(vcpu)
    start = env.now
    while vcpu.pause_requested and vcpu.running(epoch):
        vcpu.resume_ev = env.event()
        yield vcpu.resume_ev
    vcpu.resume_ev = None
    (vcpu.time or time_buckets(vcpu))["paused"] += env.now - start
    if vcpu.running(epoch) and vcpu.sched.wake_thread(vcpu):
        yield from vcpu.sched.wait_for_turn(vcpu)


# ----------------------------------------------------------------------- run_vcpu
def slice_budget(vcpu) -> int:
    """How far the next slice of guest code may run, in cycles: to the scheduler's quantum,
    and never past the vCPU's next timer, the pCPU's slice timer or the run's limit, so that
    nothing on the timeline is late by more than one basic block; nor more than the lookahead
    past the earliest cycle another pCPU could send it an event (hv/common/lookahead.py)."""
    cycles = vcpu.profile.cycles
    budget = cycles["sched_quantum"]
    now = vcpu.env.now
    found = vcpu.senders if vcpu.senders is not None else senders(vcpu)
    if found:
        earliest = horizon(vcpu, found)
        if earliest is not None:
            budget = min(budget, max(cycles["sync_lookahead"], earliest - now))
    if vcpu.vlapic.timer_due is not None:
        budget = min(budget, max(1, vcpu.vlapic.timer_due - now))
    slice_end = vcpu.sched.policy.slice_timer
    if slice_end is not None:  # BVT's one-shot slice timer
        budget = min(budget, max(1, slice_end - now))
    limit = vcpu.hv.run_limit
    if limit is not None:
        budget = min(budget, max(1, limit - now))
    return budget


def run_vcpu(vcpu, sw, epoch: int):
    """Generator (ACRN run_vcpu, vcpu.c, and the processor): VM entry with the event that
    acrn_handle_pending_request programmed, a slice of guest code, and the VM exit. Returns
    the exit reason; None when the guest goes on without an exit (its budget ended, or the
    CPU handled the stop natively); STOPPED when the VM went down."""
    env = vcpu.env
    if vcpu.vm.lapic_pt:
        injected = virq.deliver_passthrough(vcpu)
    else:  # (the quick test first: nothing is pending at most entries)
        injected = (
            virq.acrn_handle_pending_request(vcpu) if virq.may_have_pending_event(vcpu) else None
        )
    try:
        vmx.vmentry(vcpu)
    except events.TripleFault as tf:
        vcpu.triple_fault_reason = f"{tf} (injected at VM entry)"
        vcpu.vmcs.write(V.VMX_EXIT_REASON, TRIPLE_FAULT)
        if injected:
            yield from env.hold(vcpu.profile.cycles[injected])
        return TRIPLE_FAULT
    except events.UnsupportedDelivery as ud:
        vcpu.vm.crash(vcpu, str(ud))
        return STOPPED
    if injected:
        yield from env.hold(vcpu.profile.cycles[injected])
    # --- guest code
    start = vcpu.slice_start = env.now
    vcpu.fast_exit_cycles = 0
    tsc_base = start + vcpu.vmcs.fields[V.VMX_TSC_OFFSET_FULL]
    stop = vcpu.engine.run(slice_budget(vcpu), tsc_base)
    if stop.cycles:
        (vcpu.time or time_buckets(vcpu))["guest"] += stop.cycles - vcpu.fast_exit_cycles
        if env.spend(stop.cycles):  # nothing was due meanwhile: no kick can have come
            if vcpu.hv.tracer.enabled:
                trace_guest_run(vcpu, start, stop.cycles)
            vcpu.slice_end = None
            vcpu.last_slice_end = env.now
        else:
            yield from guest_slice(vcpu, stop.cycles, sw, epoch)
    reason, native = vmx.vmexit(vcpu, stop)
    if native and not env.spend(native):  # (env.hold, inline: once per delivered fault)
        yield env.timeout(native)
    if not (vcpu.state is RUNNING and vcpu.epoch == epoch):
        return STOPPED
    if reason is None and vcpu.hv.run_limit is not None and env.now >= vcpu.hv.run_limit:
        yield from env.hold(0)  # let the run limit end the simulation here
    return reason


def guest_slice(vcpu, cycles: int, sw, epoch: int):
    """Let the time of a slice of guest code pass, when something else is due meanwhile. A
    kick (an IPI, a reschedule, the Service VM's upcall) cuts in: its external-interrupt exit
    is taken at the kick's cycle, then whatever it asked for, then the rest of the slice.
    (The slice's guest code already ran: only its timing moves. docs/simplifications.md)"""
    env = vcpu.env
    end = env.now + cycles
    traced = vcpu.hv.tracer.enabled
    while True:
        vcpu.slice_end = end
        piece = env.now  # the trace shows the slice's time in the pieces a kick leaves
        try:
            wait = end - env.now
            if not env.spend(wait):
                yield env.timeout(wait)
            vcpu.slice_end = None
            vcpu.last_slice_end = end
            if traced:
                trace_guest_run(vcpu, piece, end - piece)
            return
        except Interrupt as kick:
            remaining = end - env.now
            if traced and env.now > piece:
                trace_guest_run(vcpu, piece, env.now - piece)
            # With LAPIC passthrough interrupts do not exit; nor does a posted interrupt's
            # notification that reaches a vCPU in guest mode (hv/guest/assign.py)
            if not vcpu.vm.lapic_pt and kick.cause != POSTED_KICK:
                yield from external_interrupt_exit(vcpu, epoch)
            yield from preemption_point(vcpu, sw, epoch, preempted=True)
            if not vcpu.running(epoch):
                return
            end = env.now + remaining


# ---------------------------------------------------------------- the exit round trip
def external_interrupt_exit(vcpu, epoch: int):
    """A physical interrupt while guest code ran (a kick IPI 0xE1, the hypervisor's timer
    0xE0): an EXTERNAL_INTERRUPT exit (reason 1), its round trip like any other exit's."""
    vmx.external_interrupt_exit(vcpu)
    yield from vmexit_round_trip(vcpu, EXTERNAL_INTERRUPT, epoch)


def vmexit_round_trip(vcpu, reason: int, epoch: int, handler=None):
    """Generator: one VM exit, from the processor's exit to the guest's next instruction:
    the exit transition and ACRN's dispatch, the handler (which may wait on the timeline), its
    cost, the resume past the instruction (vcpu_resume) and the VM entry transition. A
    handler that fails makes the vCPU inject #GP(0), as ACRN's vcpu_thread does. The exit is
    then counted and traced. `handler`: instead of the dispatch table's (the Service VM's
    modelled kernel passes its hypercall's parameters itself, hv/service_vm_port.py)."""
    env = vcpu.env
    cycles = vcpu.profile.cycles
    exit_start = vcpu.exit_start = env.now
    vcpu.exit_reason = reason
    fields = vcpu.vmcs.fields  # (VMREADs, as subscripts)
    rip = fields[V.VMX_GUEST_RIP]
    c = cycles["vmexit_hw"] + cycles["vmexit_dispatch"]
    if not env.spend(c):
        yield env.timeout(c)
    entry, ret = vmexit_handler(vcpu, handler)
    if not isinstance(ret, int):  # a generator: the handler waits on the timeline
        ret = yield from ret
    c = cycles[entry.cost]
    if not env.spend(c):
        yield env.timeout(c)
    if not (vcpu.state is RUNNING and vcpu.epoch == epoch):  # shut down, paused, reset
        record_exit(vcpu, reason, exit_start, rip)
        return
    if ret < 0:
        vcpu.queue_exception(virq.IDT_GP, 0)
    req = vcpu_resume(vcpu, rip)
    # The processor treats the first PAUSE after a VM entry as the first of a loop (SDM Vol. 3
    # §25.1.3); the loop's state is the engine hook's (sim/hotpath.py)
    vcpu.engine.st.ple_valid = 0
    c = cycles["vmentry_hw"]
    if not env.spend(c):
        yield env.timeout(c)
    if req is not None:
        req.finish("vmexit_round_trip")
    record_exit(vcpu, reason, exit_start, rip)


def vcpu_resume(vcpu, rip: int):
    """Step 9 of an I/O (ACRN run_vcpu): RIP past the instruction unless the handler kept it
    (vcpu_retain_rip), then VM entry. Returns the I/O request of this exit, if it had one."""
    if vcpu.inst_len:
        vcpu.engine.set_rip(rip + vcpu.inst_len)
    req, vcpu.req = vcpu.req, None
    if req is not None:
        req.stamp(9, "vcpu_resume", "RIP past the instruction, VM entry")
    return req
