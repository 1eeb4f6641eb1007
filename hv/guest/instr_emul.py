"""MMIO instruction decode and emulation (ACRN hypervisor/arch/x86/guest/instr_emul.c).

The instruction is fetched through the guest's page tables and classified by its opcode bytes
against ACRN's table (instr_emul.c, the opcode map of decode_prefixes/decode_opcode); capstone
supplies the operands. Supported:
  MOV 88 89 8A 8B A1 A3 C6/0 C7/0; MOVZX 0F B6, 0F B7; MOVSX 0F BE (byte only);
  MOVS A4 A5 and STOS AA AB (REP: one iteration per exit, RIP kept while RCX != 0);
  OR 08 09 and 80/81/83 /1; AND 23 and 81/83 /4 (and 80 /4); SUB 2B; CMP 39 3B and 80/81/83 /7;
  TEST 84 85; BT 0F BA /4 imm8.
CMP, SUB, AND, OR, TEST and BT update RFLAGS as the hardware would. Anything else: #UD.
An OR/AND with a memory destination reads the device, then writes it (two requests).
"""

from __future__ import annotations

from dataclasses import dataclass

import capstone
from capstone import x86_const as cx

from acrn_sim.sim import paging
from acrn_sim.sim.engine import MASK64, full_register

_PREFIXES = {0x66, 0x67, 0xF2, 0xF3, 0x2E, 0x36, 0x3E, 0x26, 0x64, 0x65, 0xF0}
_cs_cache: dict[int, capstone.Cs] = {}

# RFLAGS bits
CF, PF, AF, ZF, SF, OF = 1 << 0, 1 << 2, 1 << 4, 1 << 6, 1 << 7, 1 << 11
ARITH_FLAGS = CF | PF | AF | ZF | SF | OF
DF = 1 << 10

# kinds: how the instruction uses the MMIO operand
READ, WRITE, RMW = "read", "write", "rmw"


def _cs(bits: int) -> capstone.Cs:
    if bits not in _cs_cache:
        mode = {16: capstone.CS_MODE_16, 32: capstone.CS_MODE_32, 64: capstone.CS_MODE_64}[bits]
        cs = capstone.Cs(capstone.CS_ARCH_X86, mode)
        cs.detail = True
        _cs_cache[bits] = cs
    return _cs_cache[bits]


class DecodeError(Exception):
    pass


@dataclass
class Decoded:
    insn: object  # capstone instruction
    op: str  # mov_load, mov_store, movzx, movsx, movs, stos, or, and, sub, cmp, test, bt
    kind: str  # READ, WRITE or RMW of the memory operand
    size: int  # memory operand size (becomes mmio_request.size)
    rep: bool = False
    mem_first: bool = True  # the memory operand is the first (destination) operand

    @property
    def length(self) -> int:
        return self.insn.size


def _classify(code: bytes, bits: int) -> tuple[str, str, bool, bool]:
    """(op, kind, rep, mem_first) from the opcode bytes, or DecodeError (ACRN's table)."""
    i = 0
    rep = False
    while i < len(code) and code[i] in _PREFIXES:
        rep |= code[i] in (0xF2, 0xF3)
        i += 1
    if bits == 64 and i < len(code) and 0x40 <= code[i] <= 0x4F:
        i += 1
    op = code[i]
    modrm_reg = (code[i + 1] >> 3) & 7 if i + 1 < len(code) else 0
    if op == 0x0F:
        op2 = code[i + 1]
        reg = (code[i + 2] >> 3) & 7 if i + 2 < len(code) else 0
        if op2 in (0xB6, 0xB7):
            return "movzx", READ, False, False
        if op2 == 0xBE:
            return "movsx", READ, False, False
        if op2 == 0xBA and reg == 4:
            return "bt", READ, False, True
        raise DecodeError(f"0F {op2:02X}")
    table = {
        0x88: ("mov_store", WRITE, True), 0x89: ("mov_store", WRITE, True),
        0x8A: ("mov_load", READ, False), 0x8B: ("mov_load", READ, False),
        0xA1: ("mov_load", READ, False), 0xA3: ("mov_store", WRITE, True),
        0xA4: ("movs", WRITE, True), 0xA5: ("movs", WRITE, True),
        0xAA: ("stos", WRITE, True), 0xAB: ("stos", WRITE, True),
        0x08: ("or", RMW, True), 0x09: ("or", RMW, True),
        0x23: ("and", READ, False), 0x2B: ("sub", READ, False),
        0x39: ("cmp", READ, True), 0x3B: ("cmp", READ, False),
        0x84: ("test", READ, True), 0x85: ("test", READ, True),
    }  # fmt: skip
    if op in table:
        name, kind, mem_first = table[op]
        return name, kind, rep and name in ("movs", "stos"), mem_first
    if op in (0xC6, 0xC7) and modrm_reg == 0:
        return "mov_store", WRITE, False, True
    if op in (0x80, 0x81, 0x83):
        group = {1: ("or", RMW), 4: ("and", RMW), 7: ("cmp", READ)}.get(modrm_reg)
        if group:
            return group[0], group[1], False, True
    raise DecodeError(f"{op:02X}")


def decode(vcpu) -> Decoded:
    """Fetch and decode the instruction at RIP. Raises DecodeError or PageFault."""
    engine = vcpu.engine
    rip = engine.reg("rip")
    code = engine.read_linear(rip, 15, fetch=True)
    bits = engine.code_bits()
    insns = list(_cs(bits).disasm(code, rip, 1))
    if not insns:
        raise DecodeError("undecodable bytes")
    insn = insns[0]
    op, kind, rep, mem_first = _classify(bytes(insn.bytes), bits)
    mem = [o for o in insn.operands if o.type == cx.X86_OP_MEM]
    if not mem:
        raise DecodeError(insn.mnemonic)
    return Decoded(insn, op, kind, mem[0].size, rep, mem_first)


def is_write(d: Decoded) -> bool:
    return d.kind == WRITE


# ------------------------------------------------------------------ registers
def _mask(size: int) -> int:
    return MASK64 >> (64 - 8 * size)


def _reg_read(vcpu, insn, op) -> int:
    name = insn.reg_name(op.reg)
    v = vcpu.engine.reg(full_register(name))
    if name in ("ah", "bh", "ch", "dh"):
        return (v >> 8) & 0xFF
    return v & _mask(op.size)


def _reg_write(vcpu, insn, op, value: int) -> None:
    """Write a register operand with the architectural width rules."""
    name = insn.reg_name(op.reg)
    full = full_register(name)
    old = vcpu.engine.reg(full)
    size = op.size
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


def _other(d: Decoded):
    """The non-memory operand (register or immediate), if any."""
    ops = [o for o in d.insn.operands if o.type != cx.X86_OP_MEM]
    return ops[0] if ops else None


def _value_of(vcpu, d: Decoded, op) -> int:
    if op.type == cx.X86_OP_IMM:
        return op.imm & _mask(d.size)
    return _reg_read(vcpu, d.insn, op)


# ---------------------------------------------------------------------- flags
def _parity(v: int) -> bool:
    return bin(v & 0xFF).count("1") % 2 == 0


def _logic_flags(result: int, size: int) -> int:
    r = result & _mask(size)
    return (PF if _parity(r) else 0) | (ZF if r == 0 else 0) | (SF if r >> (8 * size - 1) else 0)


def _sub_flags(a: int, b: int, size: int) -> int:
    m = _mask(size)
    a, b = a & m, b & m
    r = (a - b) & m
    sign = 8 * size - 1
    f = _logic_flags(r, size)
    if a < b:
        f |= CF
    if (a ^ b ^ r) & 0x10:
        f |= AF
    if ((a ^ b) & (a ^ r)) >> sign & 1:
        f |= OF
    return f


def _set_flags(vcpu, flags: int, which: int = ARITH_FLAGS) -> None:
    rflags = vcpu.engine.reg("rflags")
    vcpu.engine.set_reg("rflags", (rflags & ~which) | (flags & which))


# ------------------------------------------------------------------ emulation
def emulate(vcpu, d: Decoded, read_mem, write_mem) -> None:
    """Carry out the instruction against a device: read_mem() -> value, write_mem(value).
    For REP STOS/MOVS one iteration is done; RIP stays while RCX is not zero (ACRN)."""
    size, insn, op = d.size, d.insn, d.op
    other = _other(d)
    if op == "mov_store":
        write_mem(_value_of(vcpu, d, other))
    elif op == "mov_load":
        _reg_write(vcpu, insn, other, read_mem())
    elif op == "movzx":
        _reg_write(vcpu, insn, other, read_mem())
    elif op == "movsx":
        v = read_mem()
        if v >> (8 * size - 1) & 1:
            v -= 1 << (8 * size)
        _reg_write(vcpu, insn, other, v & MASK64)
    elif op == "or":
        r = read_mem() | _value_of(vcpu, d, other)
        write_mem(r & _mask(size))
        _set_flags(vcpu, _logic_flags(r, size))
    elif op == "and":
        if d.mem_first:  # 81/83 /4: memory destination
            r = read_mem() & _value_of(vcpu, d, other)
            write_mem(r & _mask(size))
        else:  # 23: register destination
            r = _reg_read(vcpu, insn, other) & read_mem()
            _reg_write(vcpu, insn, other, r)
        _set_flags(vcpu, _logic_flags(r, size))
    elif op == "sub":
        a, b = _reg_read(vcpu, insn, other), read_mem()
        _reg_write(vcpu, insn, other, (a - b) & _mask(size))
        _set_flags(vcpu, _sub_flags(a, b, size))
    elif op == "cmp":
        m, o = read_mem(), _value_of(vcpu, d, other)
        _set_flags(vcpu, _sub_flags(m, o, size) if d.mem_first else _sub_flags(o, m, size))
    elif op == "test":
        _set_flags(vcpu, _logic_flags(read_mem() & _value_of(vcpu, d, other), size))
    elif op == "bt":
        bit = other.imm % (8 * size)
        _set_flags(vcpu, CF if (read_mem() >> bit) & 1 else 0, CF)
    elif op in ("stos", "movs"):
        _string_iteration(vcpu, d, read_mem, write_mem)


def _string_iteration(vcpu, d: Decoded, read_mem, write_mem) -> None:
    e = vcpu.engine
    size = d.size
    rcx, rsi, rdi, rflags = e.regs(["rcx", "rsi", "rdi", "rflags"])
    bits = e.code_bits()
    amask = MASK64 if bits == 64 else 0xFFFF_FFFF
    if d.rep and rcx & amask == 0:
        return  # REP with a zero count: nothing to do
    step = -size if rflags & DF else size
    if d.op == "stos":
        write_mem(e.reg("rax") & _mask(size))
    else:  # MOVS: the other side is guest RAM, reached through its linear address
        if d.kind == WRITE:  # destination is the device: read the source from RAM
            write_mem(int.from_bytes(e.read_linear(rsi & amask, size), "little"))
        else:
            e.write_linear(rdi & amask, read_mem().to_bytes(size, "little"))
        e.set_reg("rsi", (rsi & ~amask) | ((rsi + step) & amask))
    e.set_reg("rdi", (rdi & ~amask) | ((rdi + step) & amask))
    if d.rep:
        rcx = (rcx & ~amask) | ((rcx - 1) & amask)
        e.set_reg("rcx", rcx)
        if rcx & amask:
            vcpu.retain_rip()  # re-execute for the next iteration (ACRN emulate_movs/stos)


def fault_to_guest(vcpu, pf: paging.PageFault) -> None:
    """A page fault while fetching the instruction is injected as #PF (ACRN decode path)."""
    vcpu.engine.set_reg("cr2", pf.linear)
    vcpu.queue_exception(14, pf.error_code)
