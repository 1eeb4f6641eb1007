"""Virtual interrupt and exception injection (ACRN hypervisor/arch/x86/guest/virq.c).

Pending events are injected at VM entry in ACRN's order (acrn_handle_pending_request): exception,
then NMI, then EXTINT (the vPIC's output, through the vLAPIC's LINT0), then EVENT (the vLAPIC's
highest acceptable vector), then vectors queued directly (`queue_external_interrupt`, used by tests
and HC_INJECT_MSI). An external interrupt that cannot be taken yet (RFLAGS.IF = 0, or blocking by
STI/MOV SS) turns on interrupt-window exiting instead; exit 7 comes as soon as it can be taken."""

from __future__ import annotations

from acrn_sim.hv.common.trace import trace_native_event
from acrn_sim.hv.guest.vmcs import (
    VMX_ENTRY_EXCEPTION_ERROR_CODE,
    VMX_ENTRY_INT_INFO_FIELD,
    VMX_EXIT_INT_ERROR_CODE,
    VMX_EXIT_INT_INFO,
    VMX_GUEST_INTERRUPTIBILITY_INFO,
    VMX_INT_INFO_ERR_CODE_VALID,
    VMX_INT_INFO_VALID,
    VMX_INT_STATE_NMI_BLOCKING,
    VMX_PROC_VM_EXEC_CONTROLS,
    VMX_PROCBASED_CTLS_IRQ_WIN,
    VMX_PROCBASED_CTLS_NMI_WINEXIT,
)
from acrn_sim.sim import events
from acrn_sim.sim.events import CONTRIBUTORY, EventType

IDT_DE, IDT_UD, IDT_DF, IDT_GP, IDT_PF, IDT_MC = 0, 6, 8, 13, 14, 18
EXCEPTION_TRAPS = frozenset({3, 4})  # #BP, #OF: RIP already past the instruction
EXCEPTION_ABORTS = frozenset({IDT_DF, IDT_MC})
EXC_ERROR_CODE = frozenset({8, 10, 11, 12, 13, 14, 17, 21})
RFLAGS_IF = 1 << 9
INJECT = "inject_event"  # the cost of a VM-entry injection


def _class(vector: int) -> str:
    if vector in CONTRIBUTORY:
        return "contributory"
    return "pf" if vector == IDT_PF else "benign"


def vcpu_queue_exception(vcpu, vector: int, error_code: int = 0) -> None:
    """ACRN vcpu_queue_exception: merge with a pending exception per SDM Table 6-5."""
    prev = vcpu.pending_exception
    if prev is not None:
        pv = prev[0]
        if pv == IDT_DF:
            vcpu.vm.triple_fault(vcpu, "exception while a double fault is pending")
            return
        if (_class(pv) == "contributory" and _class(vector) == "contributory") or (
            _class(pv) == "pf" and _class(vector) != "benign"
        ):
            vector, error_code = IDT_DF, 0
    vcpu.pending_exception = (vector, error_code if vector in EXC_ERROR_CODE else None)
    # A fault is re-executed: keep RIP on the instruction (ACRN vcpu_inject_exception).
    if vector not in EXCEPTION_TRAPS:
        vcpu.retain_rip()


def exception_vmexit_handler(vcpu) -> int:
    """Exit 0: an exception in the bitmap (only #MC under ACRN) is logged and re-injected."""
    info = vcpu.vmcs.read(VMX_EXIT_INT_INFO)
    err = vcpu.vmcs.read(VMX_EXIT_INT_ERROR_CODE) if info & VMX_INT_INFO_ERR_CODE_VALID else 0
    vcpu_queue_exception(vcpu, info & 0xFF, err)
    vcpu.retain_rip()
    return 0


def nmi_window_vmexit_handler(vcpu) -> int:
    """Exit 8 (ACRN nmi_window_vmexit_handler): NMIs are no longer blocked; turn NMI-window
    exiting off and keep RIP: the pending-request path injects the NMI."""
    vcpu.vmcs.clear_bits(VMX_PROC_VM_EXEC_CONTROLS, VMX_PROCBASED_CTLS_NMI_WINEXIT)
    vcpu.retain_rip()
    return 0


def interrupt_window_vmexit_handler(vcpu) -> int:
    """Exit 7: turn window exiting off and keep RIP; the pending-request path injects."""
    vcpu.vmcs.clear_bits(VMX_PROC_VM_EXEC_CONTROLS, VMX_PROCBASED_CTLS_IRQ_WIN)
    vcpu.retain_rip()
    return 0


def may_have_pending_event(vcpu) -> bool:
    """False when no exception, NMI or interrupt can be pending: nothing queued, no request
    in the vLAPIC's IRR, none in the vPIC's (the master's IRR also carries the slave's
    cascade request). Most VM entries take this quick answer."""
    return bool(
        vcpu.pending_exception is not None
        or vcpu.pending_nmi
        or vcpu.pending_extint
        or vcpu.vlapic.irr
        or (vcpu.vcpu_id == 0 and vcpu.vm.vpic.chips[0].irr)
    )


def acrn_handle_pending_request(vcpu) -> str | None:
    """Before VM entry: program VM-entry event injection. Returns the cost name of the
    injection, or None if nothing was injected."""
    if not may_have_pending_event(vcpu):
        return None
    vmcs = vcpu.vmcs
    if vcpu.pending_exception is not None:
        vector, err = vcpu.pending_exception
        vcpu.pending_exception = None
        info = VMX_INT_INFO_VALID | (EventType.HW_EXCEPTION << 8) | vector
        if err is not None:
            info |= VMX_INT_INFO_ERR_CODE_VALID
            vmcs.write(VMX_ENTRY_EXCEPTION_ERROR_CODE, err)
        vmcs.write(VMX_ENTRY_INT_INFO_FIELD, info)
        return INJECT
    if vcpu.pending_nmi:  # NMI: no IF check; blocked by a shadow or by an NMI not yet IRETed
        if not vmcs.read(VMX_GUEST_INTERRUPTIBILITY_INFO) & (3 | VMX_INT_STATE_NMI_BLOCKING):
            vcpu.pending_nmi = False
            vmcs.write(VMX_ENTRY_INT_INFO_FIELD, VMX_INT_INFO_VALID | (EventType.NMI << 8) | 2)
            return INJECT
        # ACRN virq.c: keep the request and exit when the NMI window opens (SDM §25.2)
        vmcs.set_bits(VMX_PROC_VM_EXEC_CONTROLS, VMX_PROCBASED_CTLS_NMI_WINEXIT)
    # EXTINT (the vPIC, through LINT0), then EVENT (the vLAPIC), then queued vectors.
    vpic = vcpu.vm.vpic if vcpu.vcpu_id == 0 and vcpu.vlapic.accepts_extint() else None
    sources = (
        (vpic.pending_vector() if vpic is not None else None, vpic),
        (vcpu.vlapic.pending_intr(), vcpu.vlapic),
        (vcpu.pending_extint[0] if vcpu.pending_extint else None, None),
    )
    for vector, source in sources:
        if vector is None:
            continue
        blocked = vmcs.read(VMX_GUEST_INTERRUPTIBILITY_INFO) & 3
        if blocked or not vcpu.engine.reg("rflags") & RFLAGS_IF:
            vmcs.set_bits(VMX_PROC_VM_EXEC_CONTROLS, VMX_PROCBASED_CTLS_IRQ_WIN)
            return None
        vmcs.write(
            VMX_ENTRY_INT_INFO_FIELD, VMX_INT_INFO_VALID | (EventType.EXTERNAL << 8) | vector
        )
        if source is None:
            vcpu.pending_extint.popleft()
        else:
            source.intr_accepted(vector)
        vmcs.clear_bits(VMX_PROC_VM_EXEC_CONTROLS, VMX_PROCBASED_CTLS_IRQ_WIN)
        return INJECT
    return None


def deliver_passthrough(vcpu) -> str | None:
    """LAPIC passthrough (ACRN doc/tutorials/rtvm_performance_tips.rst): the guest owns its (x2APIC)
    LAPIC, so its interrupts reach the guest IDT with no VM exit and no injection. The vLAPIC model
    stands for that physical LAPIC. Exceptions and NMIs the hypervisor queues still go through VM-
    entry injection. Returns the cost name of what was delivered."""
    if vcpu.pending_exception is not None or vcpu.pending_nmi:
        return acrn_handle_pending_request(vcpu)
    lapic = vcpu.vlapic
    vector = lapic.pending_intr()
    if vector is None:
        return None
    if vcpu.vmcs.read(VMX_GUEST_INTERRUPTIBILITY_INFO) & 3:
        return None
    if not vcpu.engine.reg("rflags") & RFLAGS_IF:
        return None  # taken natively once the guest sets IF (checked at each slice end)
    lapic.intr_accepted(vector)
    trace_native_event(vcpu, vector, vcpu.engine.reg("rip"))
    events.deliver(vcpu.engine, vector, EventType.EXTERNAL, None)
    return "lapic_pt_irq_delivery"
