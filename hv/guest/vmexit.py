"""The VM-exit dispatch table (ACRN hypervisor/arch/x86/guest/vmexit.c).

Indexed by the basic exit reason (low 16 bits of VMX_EXIT_REASON), NR_VMX_EXIT_REASONS entries.
Each entry names its handler, whether it needs the exit qualification, and the timing-profile
cost of the handler's work. A handler returns 0, or < 0 for failure, after which the vCPU loop
injects #GP(0) as ACRN's vcpu_thread does. A handler may be a generator when it waits on the
simulated timeline (HLT's wait_event).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from acrn_sim.hv.common.event import wait_event_virtual_interrupt
from acrn_sim.hv.common.trace import record_exit, trace_note
from acrn_sim.hv.guest import vcpuid, virq, virtual_cr, vlapic_access, vmcall, vmsr
from acrn_sim.hv.guest import vmcs as V
from acrn_sim.hv.guest import vmx_io as io_emul
from acrn_sim.hv.guest.vmcs import NR_VMX_EXIT_REASONS, ExitReason


def unhandled_vmexit_handler(vcpu) -> int:
    """ACRN logs these and returns 0 (the instruction is skipped)."""
    trace_note(vcpu, f"unhandled exit {vcpu.exit_reason}")
    return 0


def undefined_vmexit_handler(vcpu) -> int:
    """RDPMC, MWAIT, MONITOR, VMX instructions: #UD (ACRN undefined_vmexit_handler)."""
    vcpu.queue_exception(virq.IDT_UD)
    return 0


def triple_fault_vmexit_handler(vcpu) -> int:
    vcpu.vm.triple_fault(vcpu, vcpu.triple_fault_reason or "triple fault")
    return 0


def external_interrupt_vmexit_handler(vcpu) -> int:
    vcpu.retain_rip()
    return 0


def hlt_vmexit_handler(vcpu):
    """Wait for a virtual interrupt unless one is pending (ACRN hlt_vmexit_handler)."""
    if vcpu.pending_exception is None and not vcpu.interrupt_pending():
        yield from wait_event_virtual_interrupt(vcpu)
    return 0


def pause_vmexit_handler(vcpu) -> int:
    vcpu.yield_current()
    return 0


def xsetbv_vmexit_handler(vcpu) -> int:
    """XCR0 checks as ACRN: index 0 only, x87 must stay set, no AVX without SSE, supported
    bits only (x87 | SSE here). #UD if CR4.OSXSAVE is clear; else a bad value gives #GP."""
    if not vcpu.engine.reg("cr4") & (1 << 18):
        vcpu.queue_exception(virq.IDT_UD)
        return 0
    rax, rcx, rdx = vcpu.engine.regs(["rax", "rcx", "rdx"])
    value = ((rdx & 0xFFFF_FFFF) << 32) | (rax & 0xFFFF_FFFF)
    if rcx & 0xFFFF_FFFF != 0 or not value & 1 or value & ~0x3:
        return -1
    vcpu.xcr0 = value
    vcpu.engine.set_xcr0(value)  # where XGETBV, XSAVE and XRSTOR read it
    return 0


def wbinvd_vmexit_handler(vcpu) -> int:
    return 0  # no caches are modelled: nothing to flush


@dataclass(frozen=True)
class ExitEntry:
    handler: Callable
    cost: str
    need_exit_qualification: bool = False


_DEFAULT = ExitEntry(unhandled_vmexit_handler, "handler_default")
_UNDEFINED = ExitEntry(undefined_vmexit_handler, "handler_default")

dispatch_table: list[ExitEntry] = [_DEFAULT] * NR_VMX_EXIT_REASONS
for _reason, _entry in {
    ExitReason.EXCEPTION_OR_NMI: ExitEntry(virq.exception_vmexit_handler, "handler_exception"),
    ExitReason.EXTERNAL_INTERRUPT: ExitEntry(external_interrupt_vmexit_handler, "handler_default"),
    ExitReason.TRIPLE_FAULT: ExitEntry(triple_fault_vmexit_handler, "handler_default"),
    ExitReason.INTERRUPT_WINDOW: ExitEntry(virq.interrupt_window_vmexit_handler, "handler_default"),
    ExitReason.NMI_WINDOW: ExitEntry(virq.nmi_window_vmexit_handler, "handler_default"),
    ExitReason.CPUID: ExitEntry(vcpuid.cpuid_vmexit_handler, "handler_cpuid"),
    ExitReason.HLT: ExitEntry(hlt_vmexit_handler, "handler_hlt"),
    ExitReason.RDPMC: _UNDEFINED,
    ExitReason.VMCALL: ExitEntry(vmcall.vmcall_vmexit_handler, "handler_vmcall"),
    ExitReason.CR_ACCESS: ExitEntry(virtual_cr.cr_access_vmexit_handler, "handler_cr_access", True),
    ExitReason.IO_INSTRUCTION: ExitEntry(io_emul.pio_instr_vmexit_handler, "handler_io_hv", True),
    ExitReason.RDMSR: ExitEntry(vmsr.rdmsr_vmexit_handler, "handler_msr"),
    ExitReason.WRMSR: ExitEntry(vmsr.wrmsr_vmexit_handler, "handler_msr"),
    ExitReason.MWAIT: _UNDEFINED,
    ExitReason.MONITOR: _UNDEFINED,
    ExitReason.PAUSE: ExitEntry(pause_vmexit_handler, "handler_pause"),
    ExitReason.EPT_VIOLATION: ExitEntry(
        io_emul.ept_violation_vmexit_handler, "handler_ept_violation", True
    ),
    ExitReason.WBINVD: ExitEntry(wbinvd_vmexit_handler, "handler_default"),
    ExitReason.APIC_ACCESS: ExitEntry(
        vlapic_access.apic_access_vmexit_handler, "handler_apic_access", True
    ),
    ExitReason.XSETBV: ExitEntry(xsetbv_vmexit_handler, "handler_xsetbv"),
    ExitReason.VMFUNC: _UNDEFINED,
}.items():
    dispatch_table[_reason] = _entry
for _reason in range(ExitReason.VMCLEAR, ExitReason.VMXON + 1):
    dispatch_table[_reason] = _UNDEFINED  # no nested VMX: #UD (ACRN without CONFIG_NVMX)
dispatch_table[ExitReason.INVEPT] = _UNDEFINED
dispatch_table[ExitReason.INVVPID] = _UNDEFINED


def vmexit_handler(vcpu, handler=None):
    """ACRN vmexit_handler: the dispatch table's entry for the basic exit reason, the exit
    qualification read if the entry needs it, the instruction length, and the handler called
    (`handler` instead of the entry's: see hv_main.vmexit_round_trip). Returns (the entry, the
    handler's result: an int, or a generator for a handler that waits on the timeline)."""
    fields = vcpu.vmcs.fields
    entry = dispatch_table[vcpu.exit_reason]
    vcpu.inst_len = fields[V.VMX_EXIT_INSTR_LEN]
    vcpu.exit_qualification = (
        fields[V.VMX_EXIT_QUALIFICATION] if entry.need_exit_qualification else 0
    )
    return entry, (handler or entry.handler)(vcpu)


_CPUID = ExitReason.CPUID


def cpuid_exit_in_place(vcpu, rip: int, offset: int) -> int:
    """A CPUID exit taken while the engine runs: Unicorn hooks CPUID in place, so the exit is
    handled inside the slice, without stopping the engine. The same VMCS fields, dispatch,
    handler, costs and record as hv_main.vmexit_round_trip, with the costs summed and charged
    to the running slice (`offset`: cycles into it). Returns the round trip's cycles."""
    fields = vcpu.vmcs.fields
    fields[V.VMX_EXIT_REASON] = _CPUID
    fields[V.VMX_EXIT_INSTR_LEN] = 2
    fields[V.VMX_GUEST_RIP] = rip
    vcpu.exit_reason = _CPUID
    entry, _ = vmexit_handler(vcpu)
    cycles = vcpu.profile.cycles
    cost = (
        cycles["vmexit_hw"] + cycles["vmexit_dispatch"] + cycles[entry.cost] + cycles["vmentry_hw"]
    )
    vcpu.fast_exit_cycles += cost
    vcpu.engine.st.ple_valid = 0  # a VM entry: the next PAUSE starts a loop (vmexit_round_trip)
    record_exit(vcpu, _CPUID, vcpu.slice_start + offset, rip, cost)
    return cost
