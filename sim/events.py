"""Event delivery through the guest's IDT: what the CPU does for an exception or an interrupt.

Unicorn never delivers exceptions or interrupts (Unicorn issue #1227), so this module is the
processor's delivery microcode. It serves both a fault raised by guest code and an event the
hypervisor injects at VM entry (SDM Vol. 3 §27.6 delivers injected events "as if" they occurred
normally).

Modelled (SDM Vol. 3 §6.12-6.15): real-mode IVT; 32-bit interrupt/trap gates; 64-bit gates with
IST; the frame and error code; IF cleared by interrupt gates; TF/NT/RF cleared; DPL check for
INT n; #GP/#NP for bad gates; #PF while touching the IDT or the stack; the double-fault table
(Table 6-5); and a fault while delivering #DF becomes a triple fault.
Not modelled (documented simplification): delivery that changes privilege level (a stack
switch through the TSS from ring 3) and task gates. They shut the VM down with a clear reason.
"""

from __future__ import annotations

import struct
from enum import IntEnum

from sim import paging

CONTRIBUTORY = frozenset({0, 10, 11, 12, 13})
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
    while True:
        try:
            _deliver_once(engine, vector, etype, error_code)
            return vector
        except _Fault as f:
            if etype == EventType.HW_EXCEPTION and vector == 8:
                raise TripleFault(f"fault #{f.vector} while delivering a double fault") from None
            if etype == EventType.HW_EXCEPTION and _is_double_fault(vector, f.vector):
                vector, error_code = 8, 0
            else:
                vector, error_code = f.vector, f.error_code
            etype = EventType.HW_EXCEPTION


def _deliver_once(engine, vector: int, etype: EventType, error_code: int | None) -> None:
    rip, rsp, rflags, cs, cr0 = engine.regs(["rip", "rsp", "rflags", "cs", "cr0"])
    external = 1 if etype in (EventType.EXTERNAL, EventType.NMI) else 0
    idt_base, idt_limit = engine.table_reg("idtr")

    def read(linear: int, size: int) -> bytes:
        try:
            return engine.read_linear(linear, size)
        except paging.PageFault as pf:
            engine.set_reg("cr2", pf.linear)
            raise _Fault(14, pf.error_code) from None

    if not cr0 & paging.CR0_PE:  # real mode: IVT of 4-byte far pointers
        if vector * 4 + 3 > idt_limit:
            raise _Fault(13, 0)
        ip, seg = struct.unpack("<HH", read(idt_base + vector * 4, 4))
        sp = (rsp - 6) & 0xFFFF
        ss_base = engine.reg("ss") << 4
        frame = struct.pack("<HHH", rip & 0xFFFF, cs, rflags & 0xFFFF)
        engine.write_phys(ss_base + sp, frame)
        engine.set_regs(
            {
                "rsp": (rsp & ~0xFFFF) | sp,
                "rip": ip,
                "cs": seg,
                "rflags": rflags & ~(RFLAGS_IF | RFLAGS_TF),
            }
        )
        return

    long_mode = bool(engine.msr_read(0xC000_0080) & paging.EFER_LMA)
    gate_size = 16 if long_mode else 8
    idt_err = vector * 8 + 2 + external
    if vector * gate_size + gate_size - 1 > idt_limit:
        raise _Fault(13, idt_err)
    gate = read(idt_base + vector * gate_size, gate_size)
    lo, hi = struct.unpack_from("<II", gate)
    gate_type, dpl, present = (hi >> 8) & 0xF, (hi >> 13) & 3, (hi >> 15) & 1
    if gate_type == 0x5 and not long_mode:
        raise UnsupportedDelivery(f"vector {vector:#x} uses a task gate")
    if gate_type not in (0xE, 0xF):
        raise _Fault(13, idt_err)
    cpl = cs & 3
    if etype in (EventType.SW_INTERRUPT, EventType.PRIV_SW_EXCEPTION, EventType.SW_EXCEPTION):
        if cpl > dpl:
            raise _Fault(13, idt_err)
    if not present:
        raise _Fault(11, idt_err)
    selector = lo >> 16
    offset = (lo & 0xFFFF) | (hi & 0xFFFF_0000)
    if selector & ~3 == 0:
        raise _Fault(13, external)
    if cpl != 0:
        raise UnsupportedDelivery(
            f"vector {vector:#x} raised at CPL {cpl}: privilege-changing delivery is not modelled"
        )
    push_err = etype == EventType.HW_EXCEPTION and error_code is not None
    new_flags = rflags & ~(RFLAGS_TF | RFLAGS_NT | RFLAGS_RF | RFLAGS_VM)
    if gate_type == 0xE:
        new_flags &= ~RFLAGS_IF

    if long_mode:
        offset |= struct.unpack_from("<I", gate, 8)[0] << 32
        ist = struct.unpack_from("<I", gate, 4)[0] & 7
        new_rsp = rsp
        if ist:
            tr_base = engine.uc_tr_base()
            new_rsp = struct.unpack("<Q", read(tr_base + 0x24 + 8 * (ist - 1), 8))[0]
        new_rsp &= ~0xF
        words = [engine.reg("ss"), rsp, rflags, cs, rip]
        if push_err:
            words.append(error_code)
        frame = struct.pack(f"<{len(words)}Q", *words)
        word_mask = 0xFFFF_FFFF_FFFF_FFFF
    else:
        new_rsp = rsp & 0xFFFF_FFFF
        words = [rflags & 0xFFFF_FFFF, cs, rip & 0xFFFF_FFFF]
        if push_err:
            words.append(error_code)
        frame = struct.pack(f"<{len(words)}I", *words)
        word_mask = 0xFFFF_FFFF
    new_rsp = (new_rsp - len(frame)) & word_mask
    # frame is packed in push order; memory order is the reverse (lowest address = last pushed)
    step = 8 if long_mode else 4
    mem = b"".join(frame[i : i + step] for i in range(len(frame) - step, -1, -step))
    try:
        if not engine.write_linear(new_rsp, mem):
            raise UnsupportedDelivery(f"stack at {new_rsp:#x} is not in RAM")
    except paging.PageFault as pf:
        engine.set_reg("cr2", pf.linear)
        raise _Fault(14, pf.error_code) from None
    engine.set_regs({"rsp": new_rsp, "rip": offset, "cs": selector, "rflags": new_flags})
