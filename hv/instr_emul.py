"""MMIO instruction decode and emulation (ACRN hypervisor/arch/x86/guest/instr_emul.c).

This core covers the MOV family ACRN supports (88, 89, 8A, 8B, A1, A3, C6, C7, MOVZX 0F B6/B7,
MOVSX 0F BE). The rest of ACRN's table (STOS, MOVS, AND, OR, TEST, CMP, SUB, BT, with flags) is
for the IOREQ path's MMIO work. A form outside the table gets #UD, as in ACRN.
The instruction is fetched through the guest's page tables, like ACRN's decode_instruction.
"""

from __future__ import annotations

import capstone
from capstone import x86_const as cx

from sim import paging
from sim.engine import MASK64

_SUPPORTED = {"mov", "movzx", "movsx"}
_cs_cache: dict[int, capstone.Cs] = {}


def _cs(bits: int) -> capstone.Cs:
    if bits not in _cs_cache:
        mode = {16: capstone.CS_MODE_16, 32: capstone.CS_MODE_32, 64: capstone.CS_MODE_64}[bits]
        cs = capstone.Cs(capstone.CS_ARCH_X86, mode)
        cs.detail = True
        _cs_cache[bits] = cs
    return _cs_cache[bits]


class DecodeError(Exception):
    pass


def decode(vcpu):
    """Return (capstone instruction, memory operand size). Raises DecodeError or PageFault."""
    engine = vcpu.engine
    rip = engine.reg("rip")
    code = engine.read_linear(rip, 15, fetch=True)
    insns = list(_cs(engine.code_bits()).disasm(code, rip, 1))
    if not insns or insns[0].mnemonic not in _SUPPORTED:
        raise DecodeError(insns[0].mnemonic if insns else "undecodable bytes")
    insn = insns[0]
    mem = [op for op in insn.operands if op.type == cx.X86_OP_MEM]
    if len(mem) != 1:
        raise DecodeError(insn.mnemonic)
    return insn, mem[0].size


def _reg_write(vcpu, insn, op, value: int) -> None:
    """Write a register operand with the architectural width rules."""
    name = insn.reg_name(op.reg)
    full = _FULL.get(name, name)
    size = op.size
    old = vcpu.engine.reg(full)
    if size == 8:
        new = value & MASK64
    elif size == 4:
        new = value & 0xFFFF_FFFF  # 32-bit destinations zero-extend in 64-bit mode
    elif size == 2:
        new = (old & ~0xFFFF) | (value & 0xFFFF)
    elif name in ("ah", "bh", "ch", "dh"):
        new = (old & ~0xFF00) | ((value & 0xFF) << 8)
    else:
        new = (old & ~0xFF) | (value & 0xFF)
    vcpu.engine.set_reg(full, new & MASK64)


def _reg_read(vcpu, insn, op) -> int:
    name = insn.reg_name(op.reg)
    v = vcpu.engine.reg(_FULL.get(name, name))
    if name in ("ah", "bh", "ch", "dh"):
        return (v >> 8) & 0xFF
    return v & (MASK64 >> (64 - 8 * op.size))


def is_write(insn) -> bool:
    """Whether the memory operand is the destination (the MOV family: operand 0)."""
    return insn.operands[0].type == cx.X86_OP_MEM


def emulate(vcpu, insn, mem_size: int, read_mem, write_mem) -> None:
    """Carry out the instruction against a device: read_mem(size) -> value, write_mem(v)."""
    dst, src = insn.operands[0], insn.operands[1]
    if dst.type == cx.X86_OP_MEM:
        value = src.imm if src.type == cx.X86_OP_IMM else _reg_read(vcpu, insn, src)
        write_mem(value & (MASK64 >> (64 - 8 * mem_size)))
        return
    value = read_mem()
    if insn.mnemonic == "movsx":
        bits = 8 * mem_size
        if value & (1 << (bits - 1)):
            value -= 1 << bits
    _reg_write(vcpu, insn, dst, value & MASK64)


def fault_to_guest(vcpu, pf: paging.PageFault) -> None:
    """A page fault while fetching the instruction is injected as #PF (ACRN decode path)."""
    vcpu.engine.set_reg("cr2", pf.linear)
    vcpu.queue_exception(14, pf.error_code)


_FULL = {}
for _r in ("ax", "bx", "cx", "dx"):
    _FULL.update({"e" + _r: "r" + _r, _r: "r" + _r, _r[0] + "l": "r" + _r, _r[0] + "h": "r" + _r})
for _r in ("si", "di", "sp", "bp"):
    _FULL.update({"e" + _r: "r" + _r, _r: "r" + _r, _r + "l": "r" + _r})
for _n in range(8, 16):
    _FULL.update({f"r{_n}d": f"r{_n}", f"r{_n}w": f"r{_n}", f"r{_n}b": f"r{_n}"})
