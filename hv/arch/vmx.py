"""VMX as the processor implements it: VMCS set-up, VM entry with event injection, and the
decision, for each way the engine stopped, between a VM exit and the CPU's native behaviour.

This is the hardware half of VMX (SDM Vol. 3 Ch. 25-27); ACRN's software half is hv/vmexit.py
and the handlers. The controls are set as ACRN's vmcs.c init_exec_ctrl sets them.
"""

from __future__ import annotations

import functools

from acrn_sim.hv.common.trace import trace_injection, trace_native_event
from acrn_sim.hv.guest import vmcs as V
from acrn_sim.hv.guest.vmcs import ExitReason
from acrn_sim.hv.guest.vmsr import (
    MSR_IA32_TSC_DEADLINE,
    PASSTHROUGH_MSRS,
    X2APIC_MSR_FIRST,
    X2APIC_MSR_LAST,
    passthrough_rdmsr,
    passthrough_wrmsr,
    rdmsr_vmexit_handler,
    wrmsr_vmexit_handler,
)
from acrn_sim.sim import events, paging
from acrn_sim.sim.blockcost import IRET_MNEMONICS, ExitPolicy
from acrn_sim.sim.engine import (
    GPR_ORDER,
    MASK64,
    STOP_BUDGET,
    STOP_INSN,
    Stop,
    StopReason,
    full_register,
)
from acrn_sim.sim.hotpath import cpl0, ple_step

# Instructions that exit unconditionally or under ACRN's controls, by mnemonic.
INSN_EXIT_REASONS = {
    "cpuid": ExitReason.CPUID,
    "hlt": ExitReason.HLT,
    "rdmsr": ExitReason.RDMSR,
    "wrmsr": ExitReason.WRMSR,
    "xsetbv": ExitReason.XSETBV,
    "wbinvd": ExitReason.WBINVD,
    "invd": ExitReason.INVD,
    "rdpmc": ExitReason.RDPMC,
    "monitor": ExitReason.MONITOR,
    "mwait": ExitReason.MWAIT,
    "getsec": ExitReason.GETSEC,
}
# VMX instructions arrive as invalid opcodes (CPUID.1:ECX.VMX = 0 in Unicorn) but exit on VMX.
VMX_INSN_EXIT_REASONS = {
    "vmcall": ExitReason.VMCALL,
    "vmclear": ExitReason.VMCLEAR,
    "vmlaunch": ExitReason.VMLAUNCH,
    "vmptrld": ExitReason.VMPTRLD,
    "vmptrst": ExitReason.VMPTRST,
    "vmread": ExitReason.VMREAD,
    "vmresume": ExitReason.VMRESUME,
    "vmwrite": ExitReason.VMWRITE,
    "vmxoff": ExitReason.VMXOFF,
    "vmxon": ExitReason.VMXON,
    "invept": ExitReason.INVEPT,
    "invvpid": ExitReason.INVVPID,
    "vmfunc": ExitReason.VMFUNC,
}
IO_MNEMONICS = frozenset({"in", "out", "insb", "insw", "insd", "outsb", "outsw", "outsd"})
# The exit policy the engine enforces: instructions that must stop it *before* they execute,
# because they VM-exit under ACRN's controls (init_vmcs below): unconditional exits, I/O
# (decided against the I/O bitmap at the stop), PAUSE (decided by PAUSE-loop exiting) and
# MOV to CR0/CR4 (CR3-load and CR8 exiting are off in ACRN). CPUID exits too, but Unicorn
# hooks it in place, so the engine handles it without stopping (Engine.cpuid_exit).
EXIT_MNEMONICS = (frozenset(INSN_EXIT_REASONS) - {"cpuid"}) | IO_MNEMONICS | {"pause"}
EXIT_CR_TARGETS = ("cr0,", "cr4,")


# Whether an instruction (mnemonic without prefixes, operands) must stop the engine
exits_before = ExitPolicy(EXIT_MNEMONICS, {"mov": EXIT_CR_TARGETS})


_REG_SIZE = {"al": 1, "ax": 2, "eax": 4}
IDT_MC = 18
IO_BITMAP_SIZE = 0x2000  # bitmaps A and B, one page each


def init_vmcs(vcpu, eptp: int, io_bitmap_hpa: int) -> None:
    """ACRN vmcs.c: init_exec_ctrl (the parts the model acts on)."""
    vmcs = vcpu.vmcs
    vmcs.write(V.VMX_PIN_VM_EXEC_CONTROLS, V.VMX_PINBASED_CTLS_IRQ_EXIT)
    vmcs.write(
        V.VMX_PROC_VM_EXEC_CONTROLS,
        V.VMX_PROCBASED_CTLS_TSC_OFF
        | V.VMX_PROCBASED_CTLS_HLT
        | V.VMX_PROCBASED_CTLS_IO_BITMAP
        | V.VMX_PROCBASED_CTLS_MSR_BITMAP
        | V.VMX_PROCBASED_CTLS_RDPMC
        | V.VMX_PROCBASED_CTLS_MWAIT
        | V.VMX_PROCBASED_CTLS_MONITOR
        | V.VMX_PROCBASED_CTLS_SECONDARY,
    )
    vmcs.write(
        V.VMX_PROC_VM_EXEC_CONTROLS2,
        V.VMX_PROCBASED_CTLS2_EPT
        | V.VMX_PROCBASED_CTLS2_UNRESTRICT
        | V.VMX_PROCBASED_CTLS2_WBINVD
        | V.VMX_PROCBASED_CTLS2_PAUSE_LOOP,
    )
    vmcs.write(V.VMX_EXCEPTION_BITMAP, 1 << IDT_MC)  # only #MC, as ACRN
    vmcs.write(V.VMX_EPT_POINTER_FULL, eptp)
    vmcs.write(V.VMX_IO_BITMAP_A_FULL, io_bitmap_hpa)
    vmcs.write(V.VMX_IO_BITMAP_B_FULL, io_bitmap_hpa + 0x1000)
    vmcs.write(V.VMX_PLE_GAP, vcpu.profile.cost("ple_gap"))
    vmcs.write(V.VMX_PLE_WINDOW, vcpu.profile.cost("ple_window"))
    vcpu.engine.set_ple(vmcs.read(V.VMX_PLE_GAP), vmcs.read(V.VMX_PLE_WINDOW))
    vmcs.write(V.VMX_TSC_OFFSET_FULL, 0)
    if vcpu.vm.lapic_pt:
        # LAPIC passthrough (ACRN vmcs.c, init_exec_ctrl): physical interrupts go straight to
        # the guest (no external-interrupt exiting) and HLT does not exit.
        vmcs.clear_bits(V.VMX_PIN_VM_EXEC_CONTROLS, V.VMX_PINBASED_CTLS_IRQ_EXIT)
        vmcs.clear_bits(V.VMX_PROC_VM_EXEC_CONTROLS, V.VMX_PROCBASED_CTLS_HLT)


X2APIC_MSR_ICR = 0x830


def lapic_pt_msr(vcpu, msr: int) -> bool:
    """With LAPIC passthrough in x2APIC mode the MSR bitmap passes the x2APIC MSRs through,
    except the ICR (IPIs stay trapped, ACRN vmsr.c), and TSC_DEADLINE while the TSC offset
    is 0 (ACRN vmsr.c, init_msr_emulation; doc/tutorials/rtvm_performance_tips.rst)."""
    if not (vcpu.vm.lapic_pt and vcpu.vlapic.x2apic):
        return False
    if msr == MSR_IA32_TSC_DEADLINE:
        return vcpu.vmcs.read(V.VMX_TSC_OFFSET_FULL) == 0
    return X2APIC_MSR_FIRST <= msr <= X2APIC_MSR_LAST and msr != X2APIC_MSR_ICR


def io_access_exits(vcpu, port: int, size: int) -> bool:
    """SDM §25.1.3: with I/O bitmaps, an access exits if any of its ports' bits is set."""
    base = vcpu.vmcs.fields[V.VMX_IO_BITMAP_A_FULL]  # bitmap B follows A: one 8 KiB map
    bitmap = vcpu.hv.mem.bytes
    for p in range(port, port + size):
        p &= 0xFFFF
        if bitmap[base + (p >> 3)] & (1 << (p & 7)):
            return True
    return False


def vmentry(vcpu) -> None:
    """VM entry: write back RIP, then deliver the event programmed for injection
    (SDM §27.6). Raises events.TripleFault / events.UnsupportedDelivery."""
    vmcs = vcpu.vmcs
    engine = vcpu.engine
    proc = vmcs.fields[V.VMX_PROC_VM_EXEC_CONTROLS]
    engine.window_exiting = bool(proc & V.VMX_PROCBASED_CTLS_IRQ_WIN)
    info = vmcs.fields[V.VMX_ENTRY_INT_INFO_FIELD]
    if info & V.VMX_INT_INFO_VALID:
        vmcs.write(V.VMX_ENTRY_INT_INFO_FIELD, 0)
        err = vmcs.read(V.VMX_ENTRY_EXCEPTION_ERROR_CODE)
        etype = events.EventType((info >> 8) & 7)
        trace_injection(vcpu, info & 0xFF, etype)
        events.deliver(
            engine, info & 0xFF, etype, err if info & V.VMX_INT_INFO_ERR_CODE_VALID else None
        )
        vmcs.write(V.VMX_GUEST_INTERRUPTIBILITY_INFO, 0)
        if etype is events.EventType.NMI:
            # SDM Vol. 3 §6.7.1, §27.6.1.2 (virtual NMIs): NMIs are blocked until the next
            # IRET; the engine stops in front of IRETs meanwhile (_iret_stop)
            vcpu.nmi_blocked = True
            engine.set_iret_exits(True)


@functools.cache
def _io_form(mnemonic: str, op_str: str) -> tuple[int, int | None]:
    """What the text of an IN/OUT/INS/OUTS says: (qualification without the port, the
    immediate port or None for DX), per SDM Table 27-5. Cached: a guest has few of them."""
    m = mnemonic.split()[-1]
    ops = [o.strip() for o in op_str.split(",")] if op_str else []
    if m in ("in", "out"):
        reg, port_op = (ops[0], ops[1]) if m == "in" else (ops[1], ops[0])
        size = _REG_SIZE.get(reg, 1)
        port, imm = (None, 0) if port_op == "dx" else (int(port_op, 0), 1)
        string = rep = 0
    else:
        size = {"b": 1, "w": 2, "d": 4}[m[-1]]
        port, imm, string = None, 0, 1
        rep = 1 if mnemonic.startswith("rep") else 0
    is_in = 1 if m.startswith("in") else 0
    return (size - 1) | (is_in << 3) | (string << 4) | (rep << 5) | (imm << 6), port


def _io_qualification(vcpu, insn) -> tuple[int, int, int]:
    """(qualification, port, size) of IN/OUT per SDM Table 27-5."""
    q, port = _io_form(insn.mnemonic, insn.op_str)
    if port is None:
        port = vcpu.engine.reg("rdx") & 0xFFFF
    return q | (port << 16), port, (q & 7) + 1


def _cr_qualification(insn) -> int:
    """MOV to CR (SDM Table 27-3): CR number bits 3:0, type 0, GPR bits 11:8."""
    cr, gpr = [o.strip() for o in insn.op_str.split(",")]
    return int(cr[2:]) | (GPR_ORDER.index(full_register(gpr)) << 8)


_IO_INSTRUCTION = ExitReason.IO_INSTRUCTION  # (an Enum member lookup costs a call)
# (the same for the stops and event types of a fault: an exception storm makes one per fault)
_STOP_WINDOW, _STOP_MEM_VIOLATION = StopReason.WINDOW, StopReason.MEM_VIOLATION
_STOP_EXCEPTION, _STOP_INVALID_OPCODE = StopReason.EXCEPTION, StopReason.INVALID_OPCODE
_HW_EXCEPTION, _SW_EXCEPTION = events.EventType.HW_EXCEPTION, events.EventType.SW_EXCEPTION
_SW_INTERRUPT = events.EventType.SW_INTERRUPT


def vmexit(vcpu, stop: Stop) -> tuple[int | None, int]:
    """Turn an engine stop into (exit reason or None, extra cycles for native work).

    None means no VM exit: the CPU handled it natively (exception delivery through the guest
    IDT, an untrapped port, a PAUSE inside the PLE window, RDRAND) and the guest goes on.
    """
    vmcs = vcpu.vmcs
    r = stop.reason
    vmcs.fields[V.VMX_GUEST_INTERRUPTIBILITY_INFO] = (
        V.VMX_INT_STATE_STI_BLOCKING if stop.shadow else 0
    ) | (V.VMX_INT_STATE_NMI_BLOCKING if vcpu.nmi_blocked else 0)
    if r is STOP_BUDGET:  # the two common stops first
        return None, 0
    if r is STOP_INSN:
        return _insn_stop(vcpu, stop)
    if r is _STOP_EXCEPTION:
        vector = stop.vector
        if vmcs.fields[V.VMX_EXCEPTION_BITMAP] & (1 << vector) and not stop.software:
            info = V.VMX_INT_INFO_VALID | (_HW_EXCEPTION << 8) | vector
            if stop.error_code is not None:
                info |= V.VMX_INT_INFO_ERR_CODE_VALID
                vmcs.write(V.VMX_EXIT_INT_ERROR_CODE, stop.error_code)
            vmcs.write(V.VMX_EXIT_INT_INFO, info)
            return _exit(vcpu, stop, ExitReason.EXCEPTION_OR_NMI, 0, 0), 0
        etype = _HW_EXCEPTION
        if stop.software:
            etype = _SW_EXCEPTION if vector in (3, 4) else _SW_INTERRUPT
        return _native_event(vcpu, stop, vector, etype, stop.error_code)
    if r is _STOP_INVALID_OPCODE:
        insn = stop.insn
        reason = VMX_INSN_EXIT_REASONS.get(insn.mnemonic) if insn else None
        if reason is not None:
            return _exit(vcpu, stop, reason, 0, insn.size), 0
        return _native_event(vcpu, stop, 6, _HW_EXCEPTION, None)
    if r is _STOP_WINDOW:
        return _exit(vcpu, stop, ExitReason.INTERRUPT_WINDOW, 0, 0), 0
    if r is _STOP_MEM_VIOLATION:
        apic_page = vcpu.msrs.apic_base & ~0xFFF
        if stop.gpa & ~0xFFF == apic_page and not vcpu.vlapic.x2apic and stop.access != "x":
            # The xAPIC page is the APIC-access page: exit 44 with the offset and the access
            # type (0 linear read, 1 linear write) in the qualification (SDM Table 27-6).
            q = (stop.gpa & 0xFFF) | ((1 if stop.access == "w" else 0) << 12)
            return _exit(vcpu, stop, ExitReason.APIC_ACCESS, q, 0), 0
        acc = {"r": 1, "w": 2, "x": 4}[stop.access]
        walked = vcpu.vm.ept.walk(stop.gpa)
        perms = (walked[1] & 7) if walked else 0
        q = acc | (perms << 3) | (1 << 7) | (1 << 8)
        vmcs.write(V.VMX_GUEST_PHYSICAL_ADDR_FULL, stop.gpa)
        vmcs.write(V.VMX_GUEST_LINEAR_ADDR, stop.address)
        return _exit(vcpu, stop, ExitReason.EPT_VIOLATION, q, 0), 0
    vcpu.vm.crash(vcpu, f"engine stopped unexpectedly at {stop.rip:#x}: {stop.detail}")
    return None, 0


def _native_event(vcpu, stop: Stop, vector: int, etype, error_code) -> tuple[int | None, int]:
    """The CPU delivers the event through the guest's IDT, with no VM exit (the exception
    bitmap does not have it, SDM Vol. 3 §25.2), or meets a triple fault, which exits (§25.2)."""
    cost = vcpu.profile.classes["serializing"].cycles
    try:
        events.deliver(vcpu.engine, vector, etype, error_code)
    except events.TripleFault as tf:
        vcpu.triple_fault_reason = f"{tf} (first: vector {vector} at {stop.rip:#x})"
        return _exit(vcpu, stop, ExitReason.TRIPLE_FAULT, 0, 0), cost
    except events.UnsupportedDelivery as ud:
        vcpu.vm.crash(vcpu, str(ud))
        return None, cost
    if vcpu.hv.tracer.enabled:
        trace_native_event(vcpu, vector, stop.rip)
    return None, cost


# Instructions that fault with #GP(0) at CPL > 0; the privilege check comes before any VM exit
# (SDM Vol. 3 §25.1.1). MOV to CR is in the list through "mov" (the exit policy stops only at
# MOV to CR0/CR4). RDPMC is allowed at CPL 3 only with CR4.PCE, which the model never sets.
PRIVILEGED_MNEMONICS = frozenset(
    {"hlt", "rdmsr", "wrmsr", "wbinvd", "invd", "xsetbv", "mov", "rdpmc"}
)
RFLAGS_IOPL_SHIFT = 12


def _io_permitted(vcpu, port: int, size: int) -> bool:
    """Protected-mode I/O at CPL > IOPL: allowed only if the TSS's I/O permission bitmap
    clears every port's bit (SDM Vol. 1 §19.5.2); no bitmap, or one past TR's limit, is #GP."""
    engine = vcpu.engine
    cs, rflags, cr0 = engine.regs(["cs", "rflags", "cr0"])
    if not cr0 & 1 or cs & 3 <= (rflags >> RFLAGS_IOPL_SHIFT) & 3:
        return True
    _, base, limit, _ = engine.task_register()
    try:
        if limit < 0x67:
            return False
        iomap = int.from_bytes(engine.read_linear(base + 0x66, 2), "little")
        first, last = iomap + (port >> 3), iomap + ((port + size - 1) >> 3)
        if last > limit:
            return False
        bits = int.from_bytes(engine.read_linear(base + first, last - first + 1), "little")
    except paging.PageFault:
        return False
    mask = ((1 << size) - 1) << (port & 7)
    return not bits & mask


def _insn_stop(vcpu, stop: Stop) -> tuple[int | None, int]:
    insn = stop.insn
    engine = vcpu.engine
    m = insn.mnemonic.split()[-1]
    if m in PRIVILEGED_MNEMONICS and engine.reg("cs") & 3 and engine.reg("cr0") & 1:
        return _native_event(vcpu, stop, 13, events.EventType.HW_EXCEPTION, 0)
    if m in IO_MNEMONICS:
        q, port, size = _io_qualification(vcpu, insn)
        if not _io_permitted(vcpu, port, size):
            return _native_event(vcpu, stop, 13, events.EventType.HW_EXCEPTION, 0)
        if io_access_exits(vcpu, port, size):
            return _exit(vcpu, stop, _IO_INSTRUCTION, q, insn.size), 0
        # Not trapped: the access reaches the machine's port bus. No physical devices are
        # modelled behind it, so reads float to all ones and writes go nowhere.
        if m == "in":
            mask = (1 << (8 * size)) - 1
            rax = engine.reg("rax")
            engine.set_reg("rax", (rax & ~mask & MASK64) | mask)
        elif m != "out":
            return _exit(vcpu, stop, ExitReason.IO_INSTRUCTION, q, insn.size), 0
        engine.set_reg("rip", stop.rip + insn.size)
        return None, _native_cost(vcpu, insn)
    if m == "mov":
        return _exit(vcpu, stop, ExitReason.CR_ACCESS, _cr_qualification(insn), insn.size), 0
    if m == "hlt" and not vcpu.vmcs.read(V.VMX_PROC_VM_EXEC_CONTROLS) & V.VMX_PROCBASED_CTLS_HLT:
        vcpu.native_halt = (
            True  # the CPU halts in the guest; the thread waits (hv/common/hv_main.py)
        )
        engine.set_reg("rip", stop.rip + insn.size)
        return None, _native_cost(vcpu, insn)
    if m in ("rdmsr", "wrmsr") and engine.reg("rcx") & 0xFFFF_FFFF in PASSTHROUGH_MSRS:
        # Not in ACRN's MSR bitmap: the processor reads or writes it, no VM exit
        handler = passthrough_rdmsr if m == "rdmsr" else passthrough_wrmsr
        if handler(vcpu, engine.reg("rcx") & 0xFFFF_FFFF) < 0:
            return _native_event(vcpu, stop, 13, events.EventType.HW_EXCEPTION, 0)
        engine.set_reg("rip", stop.rip + insn.size)
        return None, _native_cost(vcpu, insn)
    if m in ("rdmsr", "wrmsr") and lapic_pt_msr(vcpu, engine.reg("rcx") & 0xFFFF_FFFF):
        handler = rdmsr_vmexit_handler if m == "rdmsr" else wrmsr_vmexit_handler
        if handler(vcpu) < 0:
            return _native_event(vcpu, stop, 13, events.EventType.HW_EXCEPTION, 0)
        engine.set_reg("rip", stop.rip + insn.size)
        return None, _native_cost(vcpu, insn)
    if m in ("rdrand", "rdseed"):
        # Not an exit under ACRN's controls; Unicorn's native one reads host entropy, so the
        # CPU model draws from the seeded generator instead (determinism).
        dst = insn.op_str.strip()
        bits = (
            64
            if dst.startswith("r") and not dst.endswith(("d", "w"))
            else (
                16
                if dst in ("ax", "bx", "cx", "dx", "si", "di", "bp", "sp") or dst.endswith("w")
                else 32
            )
        )
        engine.set_reg(full_register(dst), engine.rdrand_value(bits))
        engine.set_reg("rflags", (engine.reg("rflags") & ~0x8D5) | 1)  # CF=1, others 0
        engine.set_reg("rip", stop.rip + insn.size)
        return None, _native_cost(vcpu, insn)
    if m in IRET_MNEMONICS:
        return _iret_stop(vcpu, stop)
    if m == "pause":
        # PAUSE-loop exiting (SDM §25.1.3): exit once a spin loop of PAUSEs no more than
        # PLE_GAP apart has lasted PLE_WINDOW cycles. Most PAUSEs never stop the engine: its
        # PAUSE hook does those that do not exit (sim/_hotpath.c hp_pause_hook), on the
        # state decided here too (the hook's, sim/hotpath.py).
        st = engine.st
        if cpl0(*engine.regs(("cs", "cr0"))) and ple_step(st, stop.cycles):
            return _exit(vcpu, stop, ExitReason.PAUSE, 0, insn.size), 0
        st.insns += 1
        st.pauses += 1
        engine.set_reg("rip", stop.rip + insn.size)
        return None, _native_cost(vcpu, insn)
    return _exit(vcpu, stop, INSN_EXIT_REASONS[m], 0, insn.size), 0


def _iret_stop(vcpu, stop: Stop) -> tuple[int | None, int]:
    """An IRET while an NMI is blocked (the engine stops in front of IRETs only then): NMIs are
    unblocked (SDM Vol. 3 §6.7.1) and the IRET runs natively. With NMI-window exiting on (an
    NMI waits), the exit comes right after the IRET (SDM §25.2): the IRET runs alone, as the
    first block of a one-cycle slice, and a fault it raises is decided as any stop."""
    vcpu.nmi_blocked = False
    engine = vcpu.engine
    engine.set_iret_exits(False)
    vcpu.vmcs.fields[V.VMX_GUEST_INTERRUPTIBILITY_INFO] &= ~V.VMX_INT_STATE_NMI_BLOCKING
    if not vcpu.vmcs.read(V.VMX_PROC_VM_EXEC_CONTROLS) & V.VMX_PROCBASED_CTLS_NMI_WINEXIT:
        return None, 0
    after = engine.run(1, engine.tsc_base + stop.cycles)
    if after.reason is STOP_BUDGET:
        return _exit(vcpu, after, ExitReason.NMI_WINDOW, 0, 0), after.cycles
    reason, native = vmexit(vcpu, after)
    return reason, native + after.cycles


def _native_cost(vcpu, insn) -> int:
    """The instruction ran natively (no exit): its own cost, as a block's instruction."""
    return vcpu.engine.decoder.coster.cost(insn.mnemonic, insn.op_str)


def external_interrupt_exit(vcpu) -> None:
    """A physical interrupt arrived while the vCPU's guest code ran (external-interrupt
    exiting is on, SDM §25.2): an exit with reason 1, no qualification, no instruction to
    skip, RIP where the guest stands."""
    fields = vcpu.vmcs.fields
    fields[V.VMX_EXIT_REASON] = ExitReason.EXTERNAL_INTERRUPT
    fields[V.VMX_EXIT_QUALIFICATION] = 0
    fields[V.VMX_EXIT_INSTR_LEN] = 0
    fields[V.VMX_GUEST_RIP] = vcpu.engine.reg("rip")


def _exit(vcpu, stop: Stop, reason: int, qualification: int, inst_len: int) -> int:
    """Record a VM exit in the VMCS (SDM §27.2), with the guest state the model reads."""
    rsp, rflags, cr0, cr3, cr4 = vcpu.engine.guest_state()
    reason = int(reason)
    fields = vcpu.vmcs.fields  # nine VMWRITEs, as stores into the field table
    fields[V.VMX_EXIT_REASON] = reason
    fields[V.VMX_EXIT_QUALIFICATION] = qualification
    fields[V.VMX_EXIT_INSTR_LEN] = inst_len
    fields[V.VMX_GUEST_RIP] = stop.rip
    fields[V.VMX_GUEST_RSP] = rsp
    fields[V.VMX_GUEST_RFLAGS] = rflags
    fields[V.VMX_GUEST_CR0] = cr0
    fields[V.VMX_GUEST_CR3] = cr3
    fields[V.VMX_GUEST_CR4] = cr4
    return reason
