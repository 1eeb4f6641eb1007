"""Event delivery through the guest's IDT: what the CPU does for an exception or an interrupt.

Unicorn never delivers exceptions or interrupts (Unicorn issue #1227), so this module is the
processor's delivery microcode. It serves both a fault raised by guest code and an event the
hypervisor injects at VM entry (SDM Vol. 3 §27.6 delivers injected events "as if" they occurred
normally).

Modelled (SDM Vol. 3 §6.12-6.15): real-mode IVT; 32-bit interrupt/trap gates; 64-bit gates with
IST; delivery from ring 3 with the stack switch through the TSS (RSP0 in long mode, SS0:ESP0 in
32-bit mode; sim/segments.py loads CS and SS); the frame and error code, with RF set in the
image of a fault; IF cleared by interrupt gates; TF/NT/RF cleared; DPL check for INT n; #GP and
#NP for bad gates and code segments, #TS for a bad TSS stack; #PF while touching the IDT, GDT,
TSS or the stack; the double-fault table (Table 6-5); and a fault while delivering #DF becomes
a triple fault. IRET back to ring 3 is Unicorn's own (QEMU's helper_iret_protected).
Not modelled (documented simplification): task gates, virtual-8086 mode, LDT code segments.
They shut the VM down with a clear reason.
"""

from __future__ import annotations

import struct
from enum import IntEnum

from acrn_sim.sim import paging, segments

CONTRIBUTORY = frozenset({0, 10, 11, 12, 13})
# Fault-class exceptions (SDM Vol. 3 Table 6-1): the saved RIP is the faulting instruction's
FAULTS = frozenset({0, 5, 6, 7, 10, 11, 12, 13, 14, 16, 17, 19, 20})
RFLAGS_TF, RFLAGS_IF, RFLAGS_NT, RFLAGS_RF, RFLAGS_VM = 1 << 8, 1 << 9, 1 << 14, 1 << 16, 1 << 17


class EventType(IntEnum):
    """Interruption types, as in the VM-entry interruption-information field (SDM §24.8.3)."""

    EXTERNAL = 0
    NMI = 2
    HW_EXCEPTION = 3
    SW_INTERRUPT = 4
    PRIV_SW_EXCEPTION = 5
    SW_EXCEPTION = 6


class TripleFault(Exception):
    """The processor shut down: a fault while delivering a double fault."""


class UnsupportedDelivery(Exception):
    """A delivery this model does not implement (privilege change, task gate)."""


class _Fault(Exception):
    def __init__(self, vector: int, error_code: int | None) -> None:
        super().__init__(vector)
        self.vector = vector
        self.error_code = error_code


def _is_double_fault(first: int, second: int) -> bool:
    """SDM Vol. 3 Table 6-5."""
    if first in CONTRIBUTORY:
        return second in CONTRIBUTORY
    if first == 14:
        return second in CONTRIBUTORY or second == 14
    return False


def deliver(engine, vector: int, etype: EventType, error_code: int | None = None) -> int:
    """Deliver one event; returns the vector that was finally delivered.

    Raises TripleFault or UnsupportedDelivery.
    """
    try:
        while True:
            try:
                _deliver_once(engine, vector, etype, error_code)
                return vector
            except _Fault as f:
                if etype in SOFTWARE_EVENTS:
                    _back_to_the_instruction(engine, vector, etype)
                if etype == EventType.HW_EXCEPTION and vector == 8:
                    raise TripleFault(
                        f"fault #{f.vector} while delivering a double fault"
                    ) from None
                if etype == EventType.HW_EXCEPTION and _is_double_fault(vector, f.vector):
                    vector, error_code = 8, 0
                else:
                    vector, error_code = f.vector, f.error_code
                etype = EventType.HW_EXCEPTION
    finally:
        engine.hold_paging_state(None)


SOFTWARE_EVENTS = (EventType.SW_INTERRUPT, EventType.PRIV_SW_EXCEPTION, EventType.SW_EXCEPTION)
# (module constants: each access to an Enum member through its class costs a call in 3.11)
_EXTERNAL, _NMI, _HW_EXCEPTION = EventType.EXTERNAL, EventType.NMI, EventType.HW_EXCEPTION
# The encodings of the instructions behind software events: INT n, INT3, INTO, INT1
_SOFT_INSNS = {EventType.SW_INTERRUPT: None, EventType.SW_EXCEPTION: {3: b"\xcc", 4: b"\xce"},
               EventType.PRIV_SW_EXCEPTION: {1: b"\xf1"}}  # fmt: skip


def _back_to_the_instruction(engine, vector: int, etype: EventType) -> None:
    """A fault while delivering INT n, INT3, INTO or INT1 (a gate with DPL < CPL, a gate not
    present, ...) is a fault of that instruction: its frame holds the instruction's own
    address (SDM Vol. 3 §6.5, §6.12.1.1; QEMU's do_interrupt_all uses the INT's EIP), while RIP
    already points past it. Found from the bytes before RIP (no prefixes)."""
    rip = engine.reg("rip")
    want = _SOFT_INSNS[etype]
    candidates = [bytes([0xCD, vector])]
    if want is not None and vector in want:
        candidates.insert(0, want[vector])
    for insn in candidates:
        n = len(insn)
        try:
            if rip >= n and engine.read_linear(rip - n, n, fetch=True) == insn:
                engine.set_reg("rip", rip - n)
                return
        except paging.PageFault:
            return


def _read(engine, linear: int, size: int) -> bytes:
    """A read the delivery makes (IDT, GDT, TSS): a page fault there is #PF, CR2 its address."""
    try:
        return engine.read_linear(linear, size)
    except paging.PageFault as pf:
        engine.set_reg("cr2", pf.linear)
        raise _Fault(14, pf.error_code) from None


def _deliver_once(engine, vector: int, etype: EventType, error_code: int | None) -> None:
    # Every register the delivery reads, in one call (an exception storm delivers one event
    # per few guest instructions, so the delivery's own cost decides how fast it runs)
    rip, rsp, rflags, cs, ss, cr0, cr3, cr4, idt_base, idt_limit, gdt_base, gdt_limit, efer = (
        engine.event_state()
    )
    # The delivery changes no paging control register: its reads and writes through the page
    # tables all use this state (read once, not at each access; released by deliver)
    engine.hold_paging_state(paging.PagingState(cr0, cr3, cr4, efer))
    external = 1 if etype is _EXTERNAL or etype is _NMI else 0

    if not cr0 & paging.CR0_PE:  # real mode: IVT of 4-byte far pointers
        if vector * 4 + 3 > idt_limit:
            raise _Fault(13, 0)
        ip, seg = struct.unpack("<HH", _read(engine, idt_base + vector * 4, 4))
        sp = (rsp - 6) & 0xFFFF
        frame = struct.pack("<HHH", rip & 0xFFFF, cs, rflags & 0xFFFF)
        engine.write_phys((ss << 4) + sp, frame)
        engine.set_regs(
            {
                "rsp": (rsp & ~0xFFFF) | sp,
                "rip": ip,
                "cs": seg,
                "rflags": rflags & ~(RFLAGS_IF | RFLAGS_TF),
            }
        )
        return

    long_mode = efer & paging.EFER_LMA
    if rflags & RFLAGS_VM:
        raise UnsupportedDelivery(f"vector {vector:#x} raised in virtual-8086 mode")
    gate_size = 16 if long_mode else 8
    idt_err = vector * 8 + 2 + external
    if vector * gate_size + gate_size - 1 > idt_limit:
        raise _Fault(13, idt_err)
    gate = _read(engine, idt_base + vector * gate_size, gate_size)
    lo, hi = struct.unpack_from("<II", gate)
    gate_type, dpl, present = (hi >> 8) & 0xF, (hi >> 13) & 3, (hi >> 15) & 1
    if gate_type == 0x5 and not long_mode:
        raise UnsupportedDelivery(f"vector {vector:#x} uses a task gate")
    if gate_type not in (0xE, 0xF):
        raise _Fault(13, idt_err)
    cpl = cs & 3
    if etype in SOFTWARE_EVENTS:
        if cpl > dpl:
            raise _Fault(13, idt_err)
    if not present:
        raise _Fault(11, idt_err)
    selector = lo >> 16
    offset = (lo & 0xFFFF) | (hi & 0xFFFF_0000)
    if selector & ~3 == 0:
        raise _Fault(13, external)
    # The gate's code segment (SDM §6.12.1.1): a code segment of DPL <= CPL, present; a
    # conforming one keeps the CPL, any other runs the handler at its DPL. (Its attributes
    # are read from the raw descriptor: a segments.Descriptor is made only for a load.)
    raw = _gdt_entry(engine, gdt_base, gdt_limit, selector, external)
    flags = int.from_bytes(raw[4:], "little") & segments.DESC_ATTR_MASK
    code_dpl = (flags >> segments.DESC_DPL_SHIFT) & 3
    seg_err = (selector & 0xFFFC) | external
    if (
        not (flags & segments.DESC_S and flags & segments.DESC_CODE)
        or code_dpl > cpl
        or (long_mode and not flags & segments.DESC_L)
    ):
        raise _Fault(13, seg_err)
    if not flags & segments.DESC_P:
        raise _Fault(11, seg_err)
    new_cpl = cpl if flags & _DESC_CONFORMING else code_dpl
    push_err = etype is _HW_EXCEPTION and error_code is not None
    new_flags = rflags & ~(RFLAGS_TF | RFLAGS_NT | RFLAGS_RF | RFLAGS_VM)
    if gate_type == 0xE:
        new_flags &= ~RFLAGS_IF
    # The RFLAGS image of a fault has RF set, so that IRET back to the faulting instruction
    # does not take an instruction breakpoint again (SDM §17.3.1.1; ACRN's
    # vcpu_inject_exception sets it for the faults it injects, virq.c)
    pushed_flags = rflags
    if etype is _HW_EXCEPTION and vector in FAULTS:
        pushed_flags |= RFLAGS_RF
    loads: dict[int, segments.Descriptor] = {}
    if new_cpl != cpl or selector != cs:
        code = segments.decode(selector, raw)
        loads[segments.CS] = segments.Descriptor(
            (selector & 0xFFFC) | new_cpl, code.base, code.limit, code.flags
        )

    # The frame, in memory order (the last word pushed at the lowest address)
    if long_mode:
        offset |= struct.unpack_from("<I", gate, 8)[0] << 32
        ist = struct.unpack_from("<I", gate, 4)[0] & 7
        new_rsp = rsp
        if new_cpl < cpl:  # the stack of the new privilege level, from the TSS (§6.14.4)
            new_rsp = _tss_read(engine, 4 + 8 * new_cpl, 8)
            loads[segments.SS] = segments.null_stack_segment(new_cpl)
        if ist:
            new_rsp = _tss_read(engine, 0x24 + 8 * (ist - 1), 8)
        new_rsp &= ~0xF
        if push_err:
            mem = struct.pack("<6Q", error_code, rip, cs, pushed_flags, rsp, ss)
        else:
            mem = struct.pack("<5Q", rip, cs, pushed_flags, rsp, ss)
        new_rsp = (new_rsp - len(mem)) & 0xFFFF_FFFF_FFFF_FFFF
    else:
        new_rsp = rsp & 0xFFFF_FFFF
        words = [rip & 0xFFFF_FFFF, cs, pushed_flags & 0xFFFF_FFFF]
        if new_cpl < cpl:  # SS0:ESP0 (or SS1:ESP1) from the 32-bit TSS (§6.12.1, §7.2.1)
            new_rsp = _tss_read(engine, 4 + 8 * new_cpl, 4)
            ss_sel = _tss_read(engine, 8 + 8 * new_cpl, 2)
            new_ss = segments.decode(
                ss_sel, _gdt_entry(engine, gdt_base, gdt_limit, ss_sel, external, fault=10)
            )
            if (ss_sel & 3) != new_cpl or new_ss.dpl != new_cpl or not new_ss.is_writable_data:
                raise _Fault(10, (ss_sel & 0xFFFC) | external)
            if not new_ss.present:
                raise _Fault(12, (ss_sel & 0xFFFC) | external)
            loads[segments.SS] = new_ss
            words += (rsp & 0xFFFF_FFFF, ss)
        if push_err:
            words.insert(0, error_code)
        mem = struct.pack(f"<{len(words)}I", *words)
        new_rsp = (new_rsp - len(mem)) & 0xFFFF_FFFF
    try:
        if not engine.write_linear(new_rsp, mem):
            raise UnsupportedDelivery(f"stack at {new_rsp:#x} is not in RAM")
    except paging.PageFault as pf:
        engine.set_reg("cr2", pf.linear)
        raise _Fault(14, pf.error_code) from None
    if loads:
        engine.set_regs({"rsp": new_rsp, "rip": offset, "rflags": new_flags})
        segments.load(engine, loads)
    else:
        engine.set_regs({"rsp": new_rsp, "rip": offset, "cs": selector, "rflags": new_flags})


_DESC_CONFORMING = 1 << 10


def _gdt_entry(
    engine, gdt_base: int, gdt_limit: int, selector: int, external: int, fault: int = 13
) -> bytes:
    """The GDT descriptor of a selector the delivery loads, raw; a bad selector is #GP (or
    `fault`) with the selector as error code, a page fault on the GDT is #PF."""
    index = selector & ~7
    if selector & 4 or index + 7 > gdt_limit:  # (LDT selectors are not modelled)
        raise _Fault(fault, (selector & 0xFFFC) | external)
    return _read(engine, gdt_base + index, 8)


def _tss_read(engine, offset: int, size: int) -> int:
    """A field of the current TSS; past TR's limit it is #TS(TR selector) (SDM §6.12.1.2)."""
    tr, base, limit, _ = engine.task_register()
    if offset + size - 1 > limit:
        raise _Fault(10, tr & 0xFFFC)
    return int.from_bytes(_read(engine, base + offset, size), "little")
