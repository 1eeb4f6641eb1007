"""A vCPU and its thread (ACRN hypervisor/arch/x86/guest/vcpu.c, common/hv_main.c).

`vcpu_thread` is ACRN's loop, as a simpy process on the vCPU's pCPU:
handle pending requests -> VM entry -> run guest code -> VM exit -> dispatch -> repeat.
Every step costs simulated cycles from the timing profile, and every exit is traced and counted.
"""

from __future__ import annotations

from collections import deque
from enum import Enum

from hv import virq, vmx
from hv import vmcs as V
from hv.vmexit import dispatch_table, exit_reason_name
from hv.vmsr import MsrState
from sim import events
from sim.engine import Engine

VCPU_EVENT_IOREQ, VCPU_EVENT_VIRTUAL_INTERRUPT = 0, 1


class VcpuState(Enum):
    INIT = "init"
    RUNNING = "running"
    ZOMBIE = "zombie"  # its VM is shut down; the thread ends


class Vcpu:
    def __init__(self, vm, vcpu_id: int, pcpu_id: int) -> None:
        hv = vm.hv
        self.hv = hv
        self.vm = vm
        self.vcpu_id = vcpu_id
        self.pcpu_id = pcpu_id
        self.env = hv.env
        self.profile = hv.profile
        self.decoder = hv.decoder
        self.engine = Engine(hv.decoder, vm.rng_next, hv.hotpath)
        self.vmcs = V.Vmcs()
        self.msrs = MsrState(bsp=vcpu_id == 0)
        self.state = VcpuState.INIT
        self.pending_exception: tuple[int, int | None] | None = None
        self.pending_extint: deque[int] = deque()
        self.inst_len = 0
        self.exit_reason = 0
        self.exit_qualification = 0
        self.triple_fault_reason = ""
        self.xcr0 = 1
        self.ple_first: int | None = None
        self.ple_last: int | None = None
        self._wait = None  # simpy event of wait_event
        self._halted = 0  # cycles of the current exit spent waiting, not handling
        self._wait_start = 0
        self.process = None
        self._names = (vm.vm_id, vm.name, vcpu_id)
        self._slice_start = 0
        self._fast_exit_cycles = 0  # exits handled inside the current slice (CPUID)
        self.engine.cpuid_exit = self.cpuid_fastpath

    # --------------------------------------------------------------- helpers
    def now_cycles(self) -> int:
        return int(self.env.now)

    def host_tsc(self) -> int:
        return self.now_cycles()

    def guest_tsc(self) -> int:
        return (self.host_tsc() + self.vmcs.read(V.VMX_TSC_OFFSET_FULL)) & ((1 << 64) - 1)

    def retain_rip(self) -> None:
        self.inst_len = 0

    def queue_exception(self, vector: int, error_code: int = 0) -> None:
        virq.vcpu_queue_exception(self, vector, error_code)

    def queue_external_interrupt(self, vector: int) -> None:
        """Make an external interrupt pending and wake the vCPU if it halts."""
        self.pending_extint.append(vector)
        self.signal_event_virtual_interrupt()

    def yield_current(self) -> None:
        """A reschedule request (ACRN yield_current); the noop scheduler has nothing else."""

    def wait_event_virtual_interrupt(self):
        """ACRN wait_event(VCPU_EVENT_VIRTUAL_INTERRUPT): the thread sleeps."""
        self._wait = self.env.event()
        self._wait_start = self.now_cycles()
        yield self._wait
        self._wait = None
        self._account_wait()

    def _account_wait(self) -> None:
        waited = self.now_cycles() - self._wait_start
        self._wait_start = self.now_cycles()
        self._halted += waited
        self.hv.stats.add_time(self.vm.name, self.vcpu_id, "halted", waited)

    def end_of_run(self) -> None:
        """The run is over: count a wait still in progress as halted time."""
        if self._wait is not None and not self._wait.triggered:
            self._account_wait()

    def signal_event_virtual_interrupt(self) -> None:
        if self._wait is not None and not self._wait.triggered:
            self._wait.succeed()

    # --------------------------------------------------------------- tracing
    def _trace(self, kind: str, name: str, **args) -> None:
        vm_id, _, vcpu_id = self._names
        self.hv.tracer.instant(kind, name, self.now_cycles(), self.pcpu_id, vm_id, vcpu_id, **args)

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
        self.process = self.env.process(self.vcpu_thread())

    def stop(self) -> None:
        """The VM is going down: end the thread at its next step."""
        self.state = VcpuState.ZOMBIE
        self.signal_event_virtual_interrupt()

    def _budget(self) -> int:
        # A slice ends at the scheduler quantum or at the run limit, whichever comes first, so
        # that nothing on the timeline is late by more than one basic block.
        budget = self.profile.cost("sched_quantum")
        limit = self.hv.run_limit
        if limit is not None:
            budget = min(budget, max(1, limit - self.now_cycles()))
        return budget

    def vcpu_thread(self):
        env = self.env
        prof = self.profile
        tracer = self.hv.tracer
        stats = self.hv.stats
        vm_id, vm_name, vcpu_id = self._names
        exit_hw, entry_hw, dispatch = (
            prof.cost("vmexit_hw"),
            prof.cost("vmentry_hw"),
            prof.cost("vmexit_dispatch"),
        )
        while self.state is VcpuState.RUNNING:
            # --- VM entry: acrn_handle_pending_request, then event injection
            injected = virq.acrn_handle_pending_request(self)
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
                yield env.timeout(prof.cost("inject_event"))
            if reason is None:
                # --- guest code
                start = self._slice_start = self.now_cycles()
                self._fast_exit_cycles = 0
                tsc_base = start + self.vmcs.read(V.VMX_TSC_OFFSET_FULL)
                stop = self.engine.run(self._budget(), tsc_base)
                if stop.cycles:
                    tracer.span("run", f"VM{vm_id} vCPU{vcpu_id}", start, stop.cycles,
                                self.pcpu_id, vm_id, vcpu_id)  # fmt: skip
                    stats.add_time(vm_name, vcpu_id, "guest", stop.cycles - self._fast_exit_cycles)
                    yield env.timeout(stop.cycles)
                reason, native = vmx.vmexit(self, stop)
                if native:
                    yield env.timeout(native)
                if self.state is not VcpuState.RUNNING:
                    break
                if reason is None:
                    if self.hv.run_limit is not None and self.now_cycles() >= self.hv.run_limit:
                        yield env.timeout(0)  # let the run limit end the simulation here
                    continue
            # --- VM exit: hardware transition, then ACRN's dispatch
            exit_start = self.now_cycles()
            self.exit_reason = reason
            self.inst_len = self.vmcs.read(V.VMX_EXIT_INSTR_LEN)
            entry = dispatch_table[reason]
            self.exit_qualification = (
                self.vmcs.read(V.VMX_EXIT_QUALIFICATION) if entry.need_exit_qualification else 0
            )
            rip = self.vmcs.read(V.VMX_GUEST_RIP)
            yield env.timeout(exit_hw + dispatch)
            ret = entry.handler(self)
            if not isinstance(ret, int):  # a generator: the handler waits on the timeline
                ret = yield from ret
            yield env.timeout(prof.cost(entry.cost))
            if ret < 0:
                self.queue_exception(virq.IDT_GP, 0)  # ACRN vcpu_thread: handler failure
            if self.state is not VcpuState.RUNNING:
                self._record_exit(reason, exit_start, rip)
                break
            if self.inst_len:
                self.engine.set_reg("rip", rip + self.inst_len)
            yield env.timeout(entry_hw)
            self._record_exit(reason, exit_start, rip)

    def cpuid_fastpath(self, rip: int, offset: int) -> int:
        """A CPUID exit handled while the engine runs (Unicorn hooks CPUID in place): the same
        VMCS fields, handler, costs, trace and statistics as the dispatch path in vcpu_thread,
        charged to the running slice. Returns the round trip in cycles."""
        prof = self.profile
        entry = dispatch_table[V.ExitReason.CPUID]
        self.vmcs.write(V.VMX_EXIT_REASON, V.ExitReason.CPUID)
        self.vmcs.write(V.VMX_EXIT_INSTR_LEN, 2)
        self.vmcs.write(V.VMX_GUEST_RIP, rip)
        self.exit_reason = V.ExitReason.CPUID
        self.exit_qualification = 0
        entry.handler(self)
        cost = (prof.cost("vmexit_hw") + prof.cost("vmexit_dispatch") + prof.cost(entry.cost)
                + prof.cost("vmentry_hw"))  # fmt: skip
        self._fast_exit_cycles += cost
        self._record_exit(V.ExitReason.CPUID, self._slice_start + offset, rip, cost)
        return cost

    def _record_exit(self, reason: int, start: int, rip: int, latency: int | None = None) -> None:
        vm_id, vm_name, vcpu_id = self._names
        if latency is None:
            latency = self.now_cycles() - start
        name = exit_reason_name(reason)
        self.hv.stats.record_exit(vm_name, name, latency)
        self.hv.stats.add_time(vm_name, vcpu_id, "exit", latency - self._halted)
        self._halted = 0
        self.hv.tracer.span(
            "vmexit", name, start, latency, self.pcpu_id, vm_id, vcpu_id,
            reason=int(reason), rip=f"{rip:#x}", qualification=f"{self.exit_qualification:#x}",
        )  # fmt: skip
