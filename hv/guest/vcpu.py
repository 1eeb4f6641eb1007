"""A vCPU: its state (ACRN struct acrn_vcpu, hypervisor/arch/x86/guest/vcpu.c).

What a vCPU holds: its registers (the engine that runs its guest code), its VMCS, MSRs and
vLAPIC, its run state, the events pending for it, and its place as a thread on its pCPU. Its
thread, ACRN's vcpu_thread, is hv/common/hv_main.py; its waits are hv/common/event.py.
"""

from __future__ import annotations

from collections import deque
from enum import Enum

from acrn_sim.hv.common.event import wake_after_ipi
from acrn_sim.hv.common.schedule import THREAD_STS_BLOCKED, BvtData
from acrn_sim.hv.common.trace import trace_event
from acrn_sim.hv.guest import vmcs as V
from acrn_sim.hv.guest.virq import may_have_pending_event, vcpu_queue_exception
from acrn_sim.hv.guest.vlapic import VLapic
from acrn_sim.hv.guest.vmexit import cpuid_exit_in_place
from acrn_sim.hv.guest.vmsr import MsrState
from acrn_sim.sim.engine import Engine


class VcpuState(Enum):
    INIT = "init"
    RUNNING = "running"
    ZOMBIE = "zombie"  # its VM is shut down; the thread ends


RUNNING = VcpuState.RUNNING  # (tested at every step of the thread: a module constant)


def _fire(ev) -> None:
    """Wake whoever waits on a simpy event, if anyone still does."""
    if ev is not None and not ev.triggered:
        ev.succeed()


class Vcpu:
    # Fixed attributes: CPython 3.11 keeps at most 30 in a class's shared key table, past which
    # every `self.x` falls back to a slower dict lookup, and a vCPU has more.
    __slots__ = (
        "bvt",
        "engine",
        "env",
        "epoch",
        "exit_latencies",
        "exit_qualification",
        "exit_reason",
        "exit_start",
        "fast_exit_cycles",
        "halted",
        "hv",
        "init_seen",
        "inst_len",
        "ioreq_wait",
        "last_slice_end",
        "msrs",
        "native_halt",
        "pause_requested",
        "pcpu_id",
        "pcpu_ready",
        "pending_exception",
        "pending_extint",
        "pending_nmi",
        "nmi_blocked",
        "process",
        "profile",
        "req",
        "resume_ev",
        "sched",
        "sched_priority",
        "senders",
        "sipi_ev",
        "slice_end",
        "slice_start",
        "state",
        "thread_status",
        "time",
        "timer_exit_pending",
        "triple_fault_reason",
        "turn_ev",
        "vcpu_id",
        "vlapic",
        "vm",
        "vmcs",
        "wait_ev",
        "wait_for_sipi",
        "wait_start",
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
        self.epoch = 0  # bumped at each launch: a thread of an earlier run must stop
        self.reset()
        self.inst_len = 0
        self.exit_reason = 0
        self.exit_qualification = 0
        self.exit_start = 0
        self.triple_fault_reason = ""
        self.xcr0 = 1
        self.process = None
        # accounting (hv/common/trace.py): this vCPU's containers in hv.stats, resolved once
        self.time: dict[str, int] | None = None
        self.exit_latencies: dict[int, list[int]] = {}
        self.halted = 0  # cycles of the current exit spent waiting, not handling
        self.wait_start = 0
        # the running slice of guest code (hv/common/hv_main.py)
        self.slice_start = 0
        self.slice_end: int | None = None  # while its guest time passes: a kick may cut in
        self.last_slice_end = -1
        self.fast_exit_cycles = 0  # exits handled inside the running slice (CPUID)
        self.timer_exit_pending = False  # the hypervisor timer (vector 0xE0) hit this vCPU
        self.native_halt = False  # HLT without HLT exiting (LAPIC passthrough)
        # scheduling (hv/common/schedule.py): this vCPU is a thread object on its pCPU
        self.sched = hv.sched_control(pcpu_id)
        self.sched_priority = vm.sched_priority
        self.bvt = BvtData(vm.config.bvt_weight)
        self.thread_status = THREAD_STS_BLOCKED
        self.pcpu_ready = 0  # when a switch to this thread completes
        self.turn_ev = None
        self.resume_ev = None
        self.sipi_ev = None
        self.senders: tuple | None = None  # hv/common/lookahead.py senders()

    def reset(self) -> None:
        """Power-on state (ACRN reset_vcpu): a fresh CPU, VMCS and MSRs, nothing pending."""
        hv, vm = self.hv, self.vm
        old = getattr(self, "engine", None)
        if old is not None:
            old.close()  # (a reset: free the old CPU now, see Engine.close)
        self.engine = Engine(hv.decoder, vm.rng_next, hv.hotpath, hv.detect_smc)
        self.engine.cpuid_exit = lambda rip, offset: cpuid_exit_in_place(self, rip, offset)
        self.vmcs = V.Vmcs()
        self.msrs = MsrState(bsp=self.vcpu_id == 0)
        self.state = VcpuState.INIT
        self.pending_exception: tuple[int, int | None] | None = None
        self.pending_extint: deque[int] = deque()
        self.pending_nmi = False
        self.nmi_blocked = False  # an NMI was delivered and no IRET has run since (SDM §6.7.1)
        self.vlapic = VLapic(self)
        self.wait_ev = self.ioreq_wait = None
        self.slice_end = None
        self.req = None  # the I/O request of the exit being handled (ACRN vcpu->req)
        # An AP waits for INIT-SIPI-SIPI (ACRN: APs start in VCPU_INIT until the BSP's SIPI).
        self.wait_for_sipi = self.vcpu_id != 0
        self.init_seen = False
        self.pause_requested = False  # the VM manager's pause (ACRN pause_vcpu)

    # ------------------------------------------------------------- time
    def host_tsc(self) -> int:
        return self.env.now

    def guest_tsc(self) -> int:
        return (self.env.now + self.vmcs.read(V.VMX_TSC_OFFSET_FULL)) & ((1 << 64) - 1)

    # ---------------------------------------------------- pending events
    def retain_rip(self) -> None:
        self.inst_len = 0

    def queue_exception(self, vector: int, error_code: int = 0) -> None:
        vcpu_queue_exception(self, vector, error_code)

    def queue_external_interrupt(self, vector: int, tail_call: bool = False) -> None:
        """An external interrupt becomes pending; wake or kick the vCPU. `tail_call`: the
        caller is a timer callback and this is its last action (Timeline.wake)."""
        self.pending_extint.append(vector)
        self.signal_event_virtual_interrupt(tail_call)

    def queue_nmi(self) -> None:
        self.pending_nmi = True
        self.signal_event_virtual_interrupt()

    def interrupt_pending(self) -> bool:
        """An interrupt waits: NMI, the vPIC's output (BSP), the vLAPIC, or a queued one."""
        if not may_have_pending_event(self):
            return False
        nmi = self.pending_nmi and not self.nmi_blocked  # (a blocked one cannot end a HLT)
        if nmi or self.pending_extint or self.vlapic.pending_intr() is not None:
            return True
        return (self.vcpu_id == 0 and self.vlapic.accepts_extint()
                and self.vm.vpic.pending_vector() is not None)  # fmt: skip

    def signal_event_virtual_interrupt(self, tail_call: bool = False) -> None:
        """ACRN vcpu_make_request: an interrupt is pending. Wake the vCPU if it waits for one
        (HLT), or kick it if it runs guest code, so it is taken at the next VM entry."""
        w = self.wait_ev
        if w is not None and not w.triggered:
            self.env.wake(w, tail_call)
        else:
            self.kick("interrupt")

    def kick(self, why: str) -> bool:
        """ACRN kick_vcpu: an IPI (NOTIFY_VCPU_VECTOR 0xE1) makes a vCPU that runs guest code
        exit. It cuts into the slice whose guest time is passing: hv_main.guest_slice."""
        if self.slice_end is not None and self.env.now < self.slice_end:
            self.slice_end = None
            self.process.interrupt(why)
            return True
        return False

    def hv_timer_interrupt(self) -> None:
        """The vLAPIC timer runs on a hypervisor timer of this vCPU's pCPU (LAPIC timer
        vector 0xE0, ACRN vlapic.c/timer.c): its physical interrupt makes whichever vCPU runs
        guest code on that pCPU exit. With LAPIC passthrough the guest owns the timer."""
        if self.vm.lapic_pt:
            return
        curr = self.sched.curr
        if curr is self:
            if self.slice_end is not None or self.last_slice_end == self.env.now:
                self.slice_end = None  # the slice ends here: its budget stopped at the expiry
                self.timer_exit_pending = True
        elif curr is not None:
            curr.kick("hv timer")

    def yield_current(self) -> None:
        """ACRN yield_current: a reschedule request on this pCPU (PAUSE-loop exits)."""
        self.sched.need_resched = True

    # ----------------------------------------------------------------- SMP
    def init_received(self) -> None:
        """INIT (ACRN vlapic_process_init_sipi): an AP that waits for its start gets ready
        for the Startup IPI. INIT to an AP that already runs is not modelled (noted)."""
        if self.wait_for_sipi:
            self.init_seen = True
        else:
            trace_event(self, "note", "INIT to a running vCPU ignored (not modelled)")

    def sipi_received(self, vector: int) -> None:
        """The first Startup IPI after INIT starts the AP in real mode at CS = vector << 8,
        IP = 0 (SDM §8.4.4.1); later ones are ignored, as on hardware."""
        if not (self.wait_for_sipi and self.init_seen):
            return
        self.wait_for_sipi = False
        self.engine.enter_real_mode(vector << 8)
        trace_event(self, "vm", f"VM{self.vm.vm_id} vCPU{self.vcpu_id} SIPI {vector:#x}")
        if self.sipi_ev is not None:
            wake_after_ipi(self, self.sipi_ev)

    # ------------------------------------------------------- pause/resume
    def pause(self) -> None:
        """ACRN pause_vcpu: the vCPU stops at its next VM entry (a slice is kicked) and its
        thread sleeps until resume_vcpu. An exit in progress (an I/O request) completes."""
        if not self.pause_requested:
            self.pause_requested = True
            trace_event(self, "vm", f"VM{self.vm.vm_id} vCPU{self.vcpu_id} pause")
            self.kick("pause")

    def resume(self) -> None:
        if self.pause_requested:
            self.pause_requested = False
            trace_event(self, "vm", f"VM{self.vm.vm_id} vCPU{self.vcpu_id} resume")
            _fire(self.resume_ev)

    # ---------------------------------------------------------- lifecycle
    def running(self, epoch: int) -> bool:
        """Whether the thread of launch `epoch` should go on (a reset launches a new one)."""
        return self.state is RUNNING and self.epoch == epoch

    def is_running(self) -> bool:
        return self.state is RUNNING

    def stop(self) -> None:
        """The VM is going down: end the thread at its next step."""
        self.state = VcpuState.ZOMBIE
        self.signal_event_virtual_interrupt()
        if self.sched.curr is not self:
            self.sched.exit_thread(self)  # a runnable thread waiting for its turn
        for ev in (self.turn_ev, self.resume_ev, self.sipi_ev):
            _fire(ev)
        self.turn_ev = None
