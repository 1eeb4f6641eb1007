"""A vCPU and its thread (ACRN hypervisor/arch/x86/guest/vcpu.c, common/hv_main.c).

`vcpu_thread` is ACRN's loop, as a simpy process on the vCPU's pCPU:
handle pending requests -> VM entry -> run guest code -> VM exit -> dispatch -> repeat.
Every step costs simulated cycles from the timing profile, and every exit is traced and counted.
"""

from __future__ import annotations

from collections import deque
from enum import Enum

import simpy

from hv.arch import vmx
from hv.common.schedule import THREAD_STS_BLOCKED, BvtData
from hv.guest import virq, vmcall
from hv.guest import vmcs as V
from hv.guest.vlapic import VLapic
from hv.guest.vmexit import REASON_NAMES, dispatch_table
from hv.guest.vmsr import MsrState
from hv.public import ACRN_IOREQ_STATE_COMPLETE, OFF_PROCESSED
from sim import events
from sim.engine import Engine

VCPU_EVENT_IOREQ, VCPU_EVENT_VIRTUAL_INTERRUPT = 0, 1


def _fire(ev) -> None:
    """Wake whoever waits on a simpy event, if anyone still does."""
    if ev is not None and not ev.triggered:
        ev.succeed()


class VcpuState(Enum):
    INIT = "init"
    RUNNING = "running"
    ZOMBIE = "zombie"  # its VM is shut down; the thread ends


_RUNNING = VcpuState.RUNNING  # tested at every step of the thread (a module constant is cheaper)
_VMCALL = V.ExitReason.VMCALL  # (likewise: a hypercall of the Service VM's software per I/O)


class Vcpu:
    # Fixed attributes: a vCPU has more than the 30 that CPython 3.11 keeps in a class's
    # shared key table, past which every `self.x` of the exit path falls back to a slower
    # dict lookup (measured: 3% of the host instructions of an IOREQ round trip).
    __slots__ = (
        "_exit_latencies",
        "_fast_exit_cycles",
        "_halted",
        "_init_seen",
        "_ioreq_wait",
        "_last_slice_end",
        "_names",
        "_resume_ev",
        "_sipi_ev",
        "_slice_end",
        "_slice_start",
        "_time",
        "_timer_exit_pending",
        "_turn_ev",
        "_wait",
        "_wait_start",
        "bvt",
        "current_ioreq",
        "decoder",
        "engine",
        "env",
        "epoch",
        "exit_qualification",
        "exit_reason",
        "exit_start",
        "hv",
        "inst_len",
        "msrs",
        "native_halt",
        "pause_requested",
        "pcpu_ready",
        "pcpu_id",
        "pending_exception",
        "pending_extint",
        "pending_nmi",
        "ple_first",
        "ple_last",
        "process",
        "profile",
        "sched",
        "sched_priority",
        "state",
        "thread_status",
        "triple_fault_reason",
        "vcpu_id",
        "vlapic",
        "vm",
        "vmcs",
        "wait_for_sipi",
        "xcr0",
    )

    def __init__(self, vm, vcpu_id: int, pcpu_id: int) -> None:
        hv = vm.hv
        self.hv = hv
        self.vm = vm
        self.vcpu_id = vcpu_id
        self.pcpu_id = pcpu_id
        self.env = hv.env
        self.profile = hv.profile
        self.decoder = hv.decoder
        self.epoch = 0  # bumped at each launch: a thread of an earlier run must stop
        self.reset()
        self.inst_len = 0
        self.exit_reason = 0
        self.exit_qualification = 0
        self.triple_fault_reason = ""
        self.xcr0 = 1
        self.ple_first: int | None = None
        self.ple_last: int | None = None
        self.exit_start = 0
        self._halted = 0  # cycles of the current exit spent waiting, not handling
        self._wait_start = 0
        self.process = None
        self._names = (vm.vm_id, vm.name, vcpu_id)
        # This vCPU's containers in hv.stats, resolved at first use (see _time_buckets)
        self._time: dict[str, int] | None = None
        self._exit_latencies: dict[int, list[int]] = {}
        self._slice_start = 0
        self._fast_exit_cycles = 0  # exits handled inside the current slice (CPUID)
        # scheduling (hv/schedule.py): this vCPU is a thread object on its pCPU
        self.sched = hv.sched_control(pcpu_id)
        self.sched_priority = vm.sched_priority
        self.bvt = BvtData(vm.config.bvt_weight)
        self.thread_status = THREAD_STS_BLOCKED
        self.pcpu_ready = 0  # when a switch to this thread completes (grant_pcpu)
        self._turn_ev = None
        self._resume_ev = None
        self._timer_exit_pending = False  # the hypervisor timer (vector 0xE0) hit this vCPU
        self.native_halt = False  # HLT without HLT exiting (LAPIC passthrough)
        self._sipi_ev = None
        self._last_slice_end = -1

    # --------------------------------------------------------------- helpers
    def reset(self) -> None:
        """Power-on state (ACRN reset_vcpu): a fresh CPU, VMCS and MSRs, nothing pending."""
        hv, vm = self.hv, self.vm
        self.engine = Engine(hv.decoder, vm.rng_next, hv.hotpath, hv.detect_smc)
        self.engine.cpuid_exit = self.cpuid_fastpath
        self.vmcs = V.Vmcs()
        self.msrs = MsrState(bsp=self.vcpu_id == 0)
        self.state = VcpuState.INIT
        self.pending_exception: tuple[int, int | None] | None = None
        self.pending_extint: deque[int] = deque()
        self.pending_nmi = False
        self.vlapic = VLapic(self)
        self._wait = self._ioreq_wait = None
        self._slice_end = None
        self.current_ioreq = None
        # An AP waits for INIT-SIPI-SIPI (ACRN: APs start in VCPU_INIT until the BSP's SIPI).
        self.wait_for_sipi = self.vcpu_id != 0
        self._init_seen = False
        self.pause_requested = False  # the VM manager's pause (ACRN pause_vcpu)

    def now_cycles(self) -> int:
        return self.env.now  # simpy's clock (pinned, see sim/timeline.py): always an int here

    def host_tsc(self) -> int:
        return self.env.now

    def guest_tsc(self) -> int:
        return (self.host_tsc() + self.vmcs.read(V.VMX_TSC_OFFSET_FULL)) & ((1 << 64) - 1)

    def retain_rip(self) -> None:
        self.inst_len = 0

    def queue_exception(self, vector: int, error_code: int = 0) -> None:
        virq.vcpu_queue_exception(self, vector, error_code)

    def queue_external_interrupt(self, vector: int, in_callback: bool = False) -> None:
        """Make an external interrupt pending and wake or kick the vCPU. `in_callback`: the
        caller is a timeline callback (Hypervisor.after) and this is its last action."""
        self.pending_extint.append(vector)
        self.signal_event_virtual_interrupt(in_callback)

    def kick(self, why: str) -> bool:
        """ACRN kick_vcpu: an IPI (NOTIFY_VCPU_VECTOR 0xE1) makes a vCPU running guest code
        exit. Here it preempts the slice: the exit is charged at this cycle, then the thread
        handles what is pending (the Service VM's software, a pause, a reschedule) and runs
        the rest of the slice. (The slice's guest code already ran: only its timing moves.)"""
        if self._slice_end is not None and self.env.now < self._slice_end:
            self._slice_end = None
            self.process.interrupt(why)
            return True
        return False

    # ------------------------------------------------------- IOREQ completion
    def wait_event_ioreq(self, slot):
        """Notification mode: sleep on VCPU_EVENT_IOREQ until HC_NOTIFY_REQUEST_FINISH wakes
        the thread (ACRN wait_event / signal_event); then the slot must read COMPLETE."""
        while slot.processed != ACRN_IOREQ_STATE_COMPLETE:
            self._ioreq_wait = self.env.event()
            self.sched.sleep_thread(self)
            yield self._ioreq_wait
            self._ioreq_wait = None
            if self.state is not _RUNNING:
                return
            if self.sched.wake_thread(self):
                yield from self.sched.wait_for_turn(self)

    def signal_event_ioreq(self) -> None:
        """From HC_NOTIFY_REQUEST_FINISH: wake_thread, which reaches the vCPU's pCPU with a
        reschedule IPI; the thread runs again after `vcpu_wakeup` cycles."""
        ev = self._ioreq_wait
        if ev is not None and not ev.triggered:
            self._wake_after_ipi(ev)

    def _wake_after_ipi(self, ev) -> None:
        """Fire `ev`, which the thread waits on, `vcpu_wakeup` cycles from now: the IPI to the
        vCPU's pCPU and the switch from its idle thread."""
        env = self.env

        def wake(_ev) -> None:
            if not ev.triggered:
                env.wake(ev, tail_call=True)

        env.call_later(self.profile.cycles["vcpu_wakeup"], wake)

    def spin_until_complete(self, slot):
        """Polling mode: the vCPU spins on its pCPU reading the slot's state (ACRN loops on
        PAUSE). The model wakes at the write of COMPLETE, then adds the spin loop's
        `ioreq_poll_notice` to see it: the same bytes, without one event per PAUSE."""
        if slot.processed != ACRN_IOREQ_STATE_COMPLETE:
            ev = self.env.event()
            addr = slot.base + OFF_PROCESSED

            def on_write() -> None:
                if slot.processed == ACRN_IOREQ_STATE_COMPLETE and not ev.triggered:
                    ev.succeed()

            self.hv.mem.watch(addr, on_write)
            yield ev
            self.hv.mem.unwatch(addr)
        yield from self.env.hold(self.profile.cycles["ioreq_poll_notice"])

    # ------------------------------------------------- the Service VM's software
    def _run_paravirt(self, pv, preempted: bool = False):
        """Hand the upcalls it claims to the Service VM's modelled software and let it run
        its pending work on this vCPU (while it runs, the VM's own guest code does not).
        `preempted`: the interrupt arrived while the VM's own guest code was running."""
        while True:
            pending = self.pending_extint
            for vector in [v for v in pending if pv.claims_vector(v)] if pending else ():
                pending.remove(vector)
                inject = self.profile.cycles["inject_event"]
                if not self.env.spend(inject):
                    yield self.env.timeout(inject)
                yield from pv.interrupt(self, vector, preempted)
            if not pv.has_work(self):
                return
            yield from pv.run(self)

    def paravirt_hypercall(self, hcall_id: int, param1: int = 0, param2: int = 0):
        """A hypercall made by the Service VM's modelled software: a VMCALL exit (reason 18)
        with the same costs, handler, trace and statistics as a guest's, charged to this
        vCPU. Returns the result (0 or -errno).
        Simplified: the modelled kernel runs at CPL 0 and its VMCALL's registers are its own,
        so the parameters go to the dispatch directly; the guest's registers are untouched."""
        prof = self.profile
        start = self.env.now
        entry = dispatch_table[_VMCALL]
        self.exit_reason = _VMCALL
        self.exit_qualification = 0
        env = self.env
        cycles = prof.cycles["vmexit_hw"] + prof.cycles["vmexit_dispatch"]
        if not env.spend(cycles):
            yield env.timeout(cycles)
        ret = vmcall.hypercall(self, hcall_id, param1, param2)
        cycles = prof.cycles[entry.cost] + prof.cycles["vmentry_hw"]
        if not env.spend(cycles):
            yield env.timeout(cycles)
        self._record_exit(_VMCALL, start)
        return ret

    def interrupt_pending(self) -> bool:
        """An interrupt waits: NMI, the vPIC's output (BSP), the vLAPIC, or a queued one."""
        if not virq.may_have_pending_event(self):
            return False
        if self.pending_nmi or self.pending_extint or self.vlapic.pending_intr() is not None:
            return True
        return (self.vcpu_id == 0 and self.vlapic.accepts_extint()
                and self.vm.vpic.pending_vector() is not None)  # fmt: skip

    def queue_nmi(self) -> None:
        self.pending_nmi = True
        self.signal_event_virtual_interrupt()

    def yield_current(self) -> None:
        """ACRN yield_current: a reschedule request on this pCPU (PAUSE-loop exits)."""
        self.sched.need_resched = True

    def wait_event_virtual_interrupt(self):
        """ACRN wait_event(VCPU_EVENT_VIRTUAL_INTERRUPT): the thread sleeps."""
        self._wait = self.env.event()
        self._wait_start = self.env.now
        self.sched.sleep_thread(self)
        yield self._wait
        self._wait = None
        self._account_wait()
        if self.state is _RUNNING:
            if self.sched.wake_thread(self):
                yield from self.sched.wait_for_turn(self)

    def _account_wait(self, in_exit: bool = True) -> None:
        """Count the wait since _wait_start as halted time; a wait inside an exit (HLT's
        handler) is also taken out of that exit's handling time."""
        waited = self.env.now - self._wait_start
        self._wait_start = self.env.now
        if in_exit:
            self._halted += waited
        (self._time or self._time_buckets())["halted"] += waited

    def end_of_run(self) -> None:
        """The run is over: count a wait still in progress as halted time."""
        if self._wait is not None and not self._wait.triggered:
            self._account_wait()

    def signal_event_virtual_interrupt(self, in_callback: bool = False) -> None:
        """An interrupt is pending: wake the vCPU if it waits for one (HLT), or kick it if
        it runs guest code, so the interrupt is taken at the next VM entry. `in_callback`:
        called as the last action of a timeline callback (see succeed_in_callback)."""
        w = self._wait
        if w is not None and not w.triggered:
            if in_callback:
                self.env.wake(w, tail_call=True)
            else:
                w.succeed()
        else:
            self.kick("interrupt")

    def hv_timer_interrupt(self) -> None:
        """The vLAPIC timer runs on a hypervisor timer of this vCPU's pCPU (LAPIC timer
        vector 0xE0, ACRN vlapic.c/timer.c): its physical interrupt makes whichever vCPU runs
        guest code on that pCPU exit. With LAPIC passthrough the guest owns the timer."""
        if self.vm.lapic_pt:
            return
        curr = self.sched.curr
        if curr is self:
            if self._slice_end is not None or self._last_slice_end == self.env.now:
                self._slice_end = None  # the slice ends here: its budget stopped at the expiry
                self._timer_exit_pending = True
        elif curr is not None:
            curr.kick("hv timer")

    # ------------------------------------------------------------------ SMP
    def init_received(self) -> None:
        """INIT (ACRN vlapic_process_init_sipi): an AP that waits for its start gets ready
        for the Startup IPI. INIT to an AP that already runs is not modelled (noted)."""
        if self.wait_for_sipi:
            self._init_seen = True
        else:
            self.trace_note("INIT to a running vCPU ignored (not modelled)")

    def sipi_received(self, vector: int) -> None:
        """The first Startup IPI after INIT starts the AP in real mode at CS = vector << 8,
        IP = 0 (SDM §8.4.4.1); later ones are ignored, as on hardware."""
        if not (self.wait_for_sipi and self._init_seen):
            return
        self.wait_for_sipi = False
        self.engine.enter_real_mode(vector << 8)
        self._trace("vm", f"VM{self.vm.vm_id} vCPU{self.vcpu_id} SIPI {vector:#x}")
        ev = self._sipi_ev
        if ev is not None:
            self._wake_after_ipi(ev)

    # ------------------------------------------------------- pCPU scheduling
    def grant_pcpu(self, cost: int) -> None:
        """The scheduler picked this thread: it runs after the context switch's `cost`."""
        self.pcpu_ready = self.env.now + cost
        ev, self._turn_ev = self._turn_ev, None
        if ev is not None and not ev.triggered:
            ev.succeed()

    def has_pcpu(self) -> bool:
        return self.sched.curr is self and self.env.now >= self.pcpu_ready

    def pcpu_granted(self):
        """Generator: until the switch to this thread is done, or the scheduler picks it."""
        if self.sched.curr is self:
            yield from self.env.hold(self.pcpu_ready - self.env.now)
        else:
            self._turn_ev = self.env.event()
            yield self._turn_ev

    # ---------------------------------------------------------- pause/resume
    def pause(self) -> None:
        """ACRN pause_vcpu: the vCPU stops at its next VM entry (a slice is kicked) and its
        thread sleeps until resume_vcpu. An exit in progress (an I/O request) completes."""
        if not self.pause_requested:
            self.pause_requested = True
            self._trace("vm", f"VM{self.vm.vm_id} vCPU{self.vcpu_id} pause")
            self.kick("pause")

    def resume(self) -> None:
        if self.pause_requested:
            self.pause_requested = False
            self._trace("vm", f"VM{self.vm.vm_id} vCPU{self.vcpu_id} resume")
            _fire(self._resume_ev)

    def _paused(self, epoch: int):
        self.sched.sleep_thread(self)
        start = self.env.now
        while self.pause_requested and self.running(epoch):
            self._resume_ev = self.env.event()
            yield self._resume_ev
        self._resume_ev = None
        (self._time or self._time_buckets())["paused"] += self.env.now - start
        if self.running(epoch):
            if self.sched.wake_thread(self):
                yield from self.sched.wait_for_turn(self)

    def _preemption_due(self, pv) -> bool:
        """Whether _preemption_point has anything to do (usually not: tested first)."""
        return (
            (pv is not None and (bool(self.pending_extint) or pv.has_work(self)))
            or self.pause_requested
            or self.sched.need_resched
        )

    def _preemption_point(self, pv, epoch: int, preempted: bool = False):
        """Where ACRN's vcpu_thread checks for work between exits: the Service VM's
        software, a pause, a reschedule request."""
        if pv is not None:
            yield from self._run_paravirt(pv, preempted)
        if self.pause_requested:
            yield from self._paused(epoch)
        if self.sched.need_resched and self.sched.curr is self and self.running(epoch):
            yield from self.sched.schedule(self)

    # --------------------------------------------------------------- tracing
    def _trace(self, kind: str, name: str, **args) -> None:
        tracer = self.hv.tracer
        if tracer.enabled:
            vm_id, _, vcpu_id = self._names
            tracer.instant(kind, name, self.env.now, self.pcpu_id, vm_id, vcpu_id, **args)

    def trace_note(self, text: str) -> None:
        self._trace("note", text)

    def trace_injection(self, vector: int, etype) -> None:
        self._trace("inject", f"inject {vector:#x}", vector=vector, type=etype.name)

    def trace_native_event(self, vector: int, rip: int) -> None:
        self._trace("exception", f"exception {vector}", vector=vector, rip=f"{rip:#x}")

    def trace_hypercall(self, hcall_id: int, ret: int) -> None:
        self._trace("hypercall", f"hypercall {hcall_id:#x}", id=f"{hcall_id:#x}", ret=ret)

    # ------------------------------------------------------------ the thread
    def launch(self) -> None:
        self.state = VcpuState.RUNNING
        self.epoch += 1
        self.process = self.env.process(self.vcpu_thread())

    def running(self, epoch: int) -> bool:
        return self.state is _RUNNING and self.epoch == epoch

    def stop(self) -> None:
        """The VM is going down: end the thread at its next step."""
        self.state = VcpuState.ZOMBIE
        self.signal_event_virtual_interrupt()
        if self.sched.curr is not self:
            self.sched.exit_thread(self)  # a runnable thread waiting for its turn
        for ev in (self._turn_ev, self._resume_ev, self._sipi_ev):
            _fire(ev)
        self._turn_ev = None

    def _budget(self) -> int:
        # A slice ends at the scheduler quantum or at the run limit, whichever comes first, so
        # that nothing on the timeline is late by more than one basic block.
        budget = self.profile.cycles["sched_quantum"]
        now = self.env.now
        if self.vlapic.timer_due is not None:  # never past the next timer expiry
            budget = min(budget, max(1, self.vlapic.timer_due - now))
        slice_end = self.sched.policy.slice_timer
        if slice_end is not None:  # nor past the scheduler's slice timer (BVT)
            budget = min(budget, max(1, slice_end - now))
        limit = self.hv.run_limit
        if limit is not None:
            budget = min(budget, max(1, limit - self.env.now))
        return budget

    def vcpu_thread(self):
        env = self.env
        prof = self.profile
        tracer = self.hv.tracer
        vm_id, vm_name, vcpu_id = self._names
        exit_hw, entry_hw, dispatch = (
            prof.cycles["vmexit_hw"],
            prof.cycles["vmentry_hw"],
            prof.cycles["vmexit_dispatch"],
        )
        pv = self.vm.paravirt
        epoch = self.epoch
        if self.wait_for_sipi:  # an AP: nothing runs until the BSP's INIT-SIPI-SIPI
            self._sipi_ev = env.event()
            yield self._sipi_ev
            self._sipi_ev = None
        if self.running(epoch):
            if self.sched.wake_thread(self):
                yield from self.sched.wait_for_turn(self)
        # (`self.running(epoch)` is spelled out in this loop: it is tested three times an exit)
        while self.state is _RUNNING and self.epoch == epoch:
            if self._preemption_due(pv):
                yield from self._preemption_point(pv, epoch)
                if not self.running(epoch):
                    break
            if self._timer_exit_pending:
                # The hypervisor's timer (LAPIC timer vector 0xE0, ACRN
                # tsc_deadline_timer.c) interrupted this vCPU's guest code: an
                # external-interrupt exit whose handler runs the vLAPIC timer callback.
                self._timer_exit_pending = False
                yield from self._interrupt_exit()
            if self.native_halt:
                # HLT without HLT exiting: the pCPU halts in the guest until an interrupt.
                if not self.interrupt_pending():
                    yield from self._native_halt_wait()
                self.native_halt = False
            # --- VM entry: acrn_handle_pending_request, then event injection
            vmcs_fields = self.vmcs.fields  # (a reset replaces the VMCS: fetched per entry)
            if self.vm.lapic_pt:
                injected = virq.deliver_passthrough(self)
            else:
                # (the quick test first: nothing pending at most entries, no further call)
                injected = (
                    virq.acrn_handle_pending_request(self)
                    if virq.may_have_pending_event(self)
                    else None
                )
            try:
                vmx.vmentry(self)
                reason = None
            except events.TripleFault as tf:
                self.triple_fault_reason = f"{tf} (injected at VM entry)"
                reason = V.ExitReason.TRIPLE_FAULT
                self.vmcs.write(V.VMX_EXIT_REASON, reason)
            except events.UnsupportedDelivery as ud:
                self.vm.crash(self, str(ud))
                break
            if injected:
                yield from env.hold(prof.cycles[injected])
            if reason is None:
                # --- guest code
                start = self._slice_start = env.now
                self._fast_exit_cycles = 0
                tsc_base = start + vmcs_fields[V.VMX_TSC_OFFSET_FULL]
                stop = self.engine.run(self._budget(), tsc_base)
                if stop.cycles:
                    if tracer.enabled:
                        tracer.span(
                            "run",
                            f"VM{vm_id} vCPU{vcpu_id}",
                            start,
                            stop.cycles,
                            self.pcpu_id,
                            vm_id,
                            vcpu_id,
                        )
                    guest = stop.cycles - self._fast_exit_cycles
                    (self._time or self._time_buckets())["guest"] += guest
                    if env.spend(stop.cycles):  # nothing due meanwhile: no kick can come
                        self._slice_end = None
                        self._last_slice_end = env.now
                    else:
                        yield from self._guest_time(stop.cycles, pv)
                reason, native = vmx.vmexit(self, stop)
                if native:
                    yield from env.hold(native)
                if not (self.state is _RUNNING and self.epoch == epoch):
                    break
                if reason is None:
                    if self.hv.run_limit is not None and self.env.now >= self.hv.run_limit:
                        yield from env.hold(0)  # let the run limit end the simulation here
                    continue
            # --- VM exit: hardware transition, then ACRN's dispatch
            exit_start = self.exit_start = env.now
            self.exit_reason = reason
            vmcs_fields = self.vmcs.fields  # VMREADs (Vmcs.read without the call)
            self.inst_len = vmcs_fields[V.VMX_EXIT_INSTR_LEN]
            entry = dispatch_table[reason]
            self.exit_qualification = (
                vmcs_fields[V.VMX_EXIT_QUALIFICATION] if entry.need_exit_qualification else 0
            )
            rip = vmcs_fields[V.VMX_GUEST_RIP]
            if not env.spend(exit_hw + dispatch):
                yield env.timeout(exit_hw + dispatch)
            ret = entry.handler(self)
            if not isinstance(ret, int):  # a generator: the handler waits on the timeline
                ret = yield from ret
            handled = prof.cycles[entry.cost]
            if not env.spend(handled):
                yield env.timeout(handled)
            if not (self.state is _RUNNING and self.epoch == epoch):  # shut down, paused, reset
                self._record_exit(reason, exit_start, rip)
                break
            if ret < 0:
                self.queue_exception(virq.IDT_GP, 0)  # ACRN vcpu_thread: handler failure
            if self.inst_len:
                self.engine.set_rip(rip + self.inst_len)
            tr, self.current_ioreq = self.current_ioreq, None
            if tr is not None:
                tr.step(9, "RIP past the instruction, VM entry")
            if not env.spend(entry_hw):
                yield env.timeout(entry_hw)
            if tr is not None:
                tr.finish()
            self._record_exit(reason, exit_start, rip)
        self.sched.exit_thread(self)

    def _native_halt_wait(self):
        """The guest halted its own (passed-through) CPU: time passes as halted, no exit."""
        self._wait = self.env.event()
        self._wait_start = self.env.now  # end_of_run counts a wait still in progress
        yield self._wait
        self._wait = None
        self._account_wait(in_exit=False)  # halted inside the guest, not inside an exit

    def _interrupt_exit(self):
        """An external-interrupt exit (reason 1) taken while guest code ran: the physical
        interrupt (a kick IPI 0xE1, the hypervisor timer 0xE0) and its handler."""
        start = self.env.now
        self.exit_qualification = 0
        yield from self.env.hold(self._round_trip("handler_default"))
        self._record_exit(V.ExitReason.EXTERNAL_INTERRUPT, start)

    def cpuid_fastpath(self, rip: int, offset: int) -> int:
        """A CPUID exit handled while the engine runs (Unicorn hooks CPUID in place): the same
        VMCS fields, handler, costs, trace and statistics as the dispatch path in vcpu_thread,
        charged to the running slice. Returns the round trip in cycles."""
        entry = dispatch_table[V.ExitReason.CPUID]
        self.vmcs.write(V.VMX_EXIT_REASON, V.ExitReason.CPUID)
        self.vmcs.write(V.VMX_EXIT_INSTR_LEN, 2)
        self.vmcs.write(V.VMX_GUEST_RIP, rip)
        self.exit_reason = V.ExitReason.CPUID
        self.exit_qualification = 0
        entry.handler(self)
        cost = self._round_trip(entry.cost)
        self._fast_exit_cycles += cost
        self._record_exit(V.ExitReason.CPUID, self._slice_start + offset, rip, cost)
        return cost

    def _round_trip(self, handler_cost: str) -> int:
        """Cycles of an exit handled without waiting: transitions, dispatch and handler."""
        prof = self.profile
        return (
            prof.cycles["vmexit_hw"]
            + prof.cycles["vmexit_dispatch"]
            + prof.cycles[handler_cost]
            + prof.cycles["vmentry_hw"]
        )

    def _guest_time(self, cycles: int, pv):
        """Let simulated time pass for a guest slice. A kick for the modelled Service VM
        software preempts it: that software runs at the kick, then the rest of the slice.
        (The guest code itself already ran: only its timing is shifted, documented.)
        vcpu_thread first tries `advance`: this generator is for a slice during which
        something else is due."""
        env = self.env
        end = self.env.now + cycles
        while True:
            self._slice_end = end
            try:
                wait = end - env.now
                if not env.spend(wait):  # (`hold` without a generator)
                    yield env.timeout(wait)
                self._slice_end = None
                self._last_slice_end = end
                return
            except simpy.Interrupt:
                remaining = end - self.env.now
                if not self.vm.lapic_pt:  # with LAPIC passthrough interrupts do not exit
                    yield from self._interrupt_exit()
                yield from self._preemption_point(pv, self.epoch, preempted=True)
                if not self.running(self.epoch):
                    return
                end = self.env.now + remaining

    def _time_buckets(self) -> dict[str, int]:
        """This vCPU's time buckets in hv.stats, created at its first use (as a vCPU that
        never ran has none). The hot paths add to them as `(self._time or
        self._time_buckets())[bucket] += cycles`."""
        _, vm_name, vcpu_id = self._names
        self._time = self.hv.stats.vcpu_buckets(vm_name, vcpu_id)
        return self._time

    def _record_exit(
        self, reason: int, start: int, rip: int | None = None, latency: int | None = None
    ) -> None:
        """Count the exit and trace it (`rip`: the guest's, read here if not given)."""
        if latency is None:
            latency = self.env.now - start
        latencies = self._exit_latencies.get(reason)
        if latencies is None:  # the first exit of this reason
            latencies = self._exit_latencies[reason] = self.hv.stats.exit_latencies(
                self._names[1], REASON_NAMES[reason]
            )
        latencies.append(latency)
        (self._time or self._time_buckets())["exit"] += latency - self._halted
        self._halted = 0
        tracer = self.hv.tracer
        if tracer.enabled:
            vm_id, _, vcpu_id = self._names
            name = REASON_NAMES[reason]
            if rip is None:
                rip = self.engine.reg("rip")
            tracer.span(
                "vmexit",
                name,
                start,
                latency,
                self.pcpu_id,
                vm_id,
                vcpu_id,
                reason=int(reason),
                rip=f"{rip:#x}",
                qualification=f"{self.exit_qualification:#x}",
            )
