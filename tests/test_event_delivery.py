"""The fast parts of event delivery (sim/events.py): the registers it reads in one call, the
paging state it holds for the delivery, the real-mode path no shipped guest takes, and the
#UD stop's test for VMX instructions (only those are decoded)."""

from __future__ import annotations

import random
import struct

import capstone
from unicorn import UC_ARCH_X86, UC_MODE_64, Uc
from unicorn import x86_const as X

from acrn_sim.hv.arch import vmx
from acrn_sim.sim import events, ucapi
from acrn_sim.sim.blockcost import BlockDecoder
from acrn_sim.sim.engine import MSR_EFER, Engine, may_be_vmx
from acrn_sim.sim.timing import TimingProfile

RFLAGS_TF, RFLAGS_IF = 1 << 8, 1 << 9


def _engine() -> Engine:
    return Engine(BlockDecoder(TimingProfile.load(), vmx.exits_before), lambda bits: 0, "python")


def test_system_register_batch_reads_what_the_binding_reads():
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.reg_write(X.UC_X86_REG_IDTR, (0, 0xFFFF_8000_0000_1000, 0xFFF, 0))
    uc.reg_write(X.UC_X86_REG_GDTR, (0, 0x2000, 0x7F, 0))
    uc.msr_write(MSR_EFER, 0x501)
    uc.reg_write(X.UC_X86_REG_RSP, 0x1234_5678_9ABC)
    batch = ucapi.SystemRegBatch(
        uc, [X.UC_X86_REG_RSP, X.UC_X86_REG_CS], [X.UC_X86_REG_IDTR, X.UC_X86_REG_GDTR],
        [MSR_EFER],
    )  # fmt: skip
    want = [uc.reg_read(X.UC_X86_REG_RSP), uc.reg_read(X.UC_X86_REG_CS)]
    for reg in (X.UC_X86_REG_IDTR, X.UC_X86_REG_GDTR):
        want += uc.reg_read(reg)[1:3]
    want.append(uc.msr_read(MSR_EFER))
    assert batch.read() == want == [0x1234_5678_9ABC, want[1], 0xFFFF_8000_0000_1000, 0xFFF,
                                    0x2000, 0x7F, 0x501]  # fmt: skip


def test_real_mode_delivery_through_the_ivt_and_the_paging_state_released():
    """SDM Vol. 3 §20.1.4 (real-address mode interrupts): FLAGS, CS and IP pushed on SS:SP,
    IF and TF cleared, CS:IP from the IVT's far pointer."""
    eng = _engine()
    eng.uc.mem_map(0, 0x10000)
    eng.enter_real_mode(0x100)
    eng.set_regs({"rip": 0x20, "rsp": 0x800, "rflags": 0x2 | RFLAGS_IF | RFLAGS_TF})
    eng.set_table_reg("idtr", 0, 0x3FF)
    eng.write_phys(0x21 * 4, struct.pack("<HH", 0x40, 0x200))
    assert events.deliver(eng, 0x21, events.EventType.SW_INTERRUPT) == 0x21
    rip, rsp, rflags, cs = eng.regs(["rip", "rsp", "rflags", "cs"])
    assert (cs, rip, rsp) == (0x200, 0x40, 0x7FA)
    assert not rflags & (RFLAGS_IF | RFLAGS_TF)
    assert eng.read_phys(0x7FA, 6) == struct.pack("<HHH", 0x20, 0x100, 0x302)
    assert eng._held_paging_state is None  # deliver held it only while it ran


def test_a_triple_fault_releases_the_paging_state():
    eng = _engine()
    eng.uc.mem_map(0, 0x10000)
    eng.enter_real_mode(0x100)
    eng.set_table_reg("idtr", 0, 0x3)  # only vector 0 in the IVT: #GP, #DF, then shutdown
    try:
        events.deliver(eng, 6, events.EventType.HW_EXCEPTION)
    except events.TripleFault:
        pass
    else:
        raise AssertionError("no triple fault")
    assert eng._held_paging_state is None
    assert eng.paging_state().cr0 & 1 == 0  # read from the registers again


def test_every_vmx_instruction_passes_the_ud_stop_test():
    """may_be_vmx is a superset: whatever capstone decodes as a VMX instruction (the only
    #UD stops the VM-exit decision needs decoded) passes it, in all three code sizes."""
    rng = random.Random(7)
    modes = {16: capstone.CS_MODE_16, 32: capstone.CS_MODE_32, 64: capstone.CS_MODE_64}
    decoders = {b: capstone.Cs(capstone.CS_ARCH_X86, m) for b, m in modes.items()}
    prefixes = [*b"\x26\x2e\x36\x3e\x64\x65\x66\x67\xf0\xf2\xf3", *range(0x40, 0x50), 0x0F]
    seen = set()
    for _ in range(30_000):
        code = bytes(rng.choice(prefixes) for _ in range(rng.choice((0, 0, 1, 2, 4))))
        code += b"\x0f" + bytes([rng.choice((0x01, 0x38, 0x78, 0x79, 0xC7))])
        code = (code + rng.randbytes(15))[:15]
        for dec in decoders.values():
            for _, _, mnemonic, _ in dec.disasm_lite(code, 0x1000, 1):
                if mnemonic in vmx.VMX_INSN_EXIT_REASONS:
                    seen.add(mnemonic)
                    assert may_be_vmx(code), code.hex()
    assert seen == set(vmx.VMX_INSN_EXIT_REASONS)
    assert not may_be_vmx(b"\x0f\x0b" + bytes(13))  # UD2
    assert not may_be_vmx(b"\x66\x06" + bytes(13))  # PUSH ES in 64-bit code
    assert may_be_vmx(b"\x66\x0f\xc7\x30" + bytes(11))  # VMCLEAR [rax]
