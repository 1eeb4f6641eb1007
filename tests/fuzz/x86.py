"""Hand-encoded x86 instruction forms for generated guests (checked against capstone in
tests/test_fuzz_harness.py). Each function returns the instruction's bytes; `bits` is the
code size the bytes run in (32 or 64), where the encoding differs."""

from __future__ import annotations

import struct

EAX, ECX, EDX, EBX, ESP, EBP, ESI, EDI = range(8)


def u32(v: int) -> bytes:
    return struct.pack("<I", v & 0xFFFF_FFFF)


def mov_imm(reg: int, value: int, bits: int = 32) -> bytes:
    """mov r32, imm32 (zero-extends in 64-bit mode); a 64-bit value: mov r64, imm64."""
    if bits == 64 and value >> 32:
        rex = 0x48 | (1 if reg >= 8 else 0)
        return bytes([rex, 0xB8 + (reg & 7)]) + struct.pack("<Q", value & (1 << 64) - 1)
    prefix = b"\x41" if reg >= 8 else b""
    return prefix + bytes([0xB8 + (reg & 7)]) + u32(value)


def mov_r8_imm(value: int) -> bytes:
    """mov r8, imm64 (64-bit mode only): ACRN's hypercall id register."""
    return b"\x49\xb8" + struct.pack("<Q", value & (1 << 64) - 1)


def mov_dx(port: int) -> bytes:
    return b"\x66\xba" + struct.pack("<H", port & 0xFFFF)


def out_dx(size: int) -> bytes:
    return {1: b"\xee", 2: b"\x66\xef", 4: b"\xef"}[size]


def in_dx(size: int) -> bytes:
    return {1: b"\xec", 2: b"\x66\xed", 4: b"\xed"}[size]


def out_imm(port: int) -> bytes:
    return bytes([0xE6, port & 0xFF])  # out imm8, al


def in_imm(port: int) -> bytes:
    return bytes([0xE4, port & 0xFF])  # in al, imm8


def rep(insn: bytes) -> bytes:
    return b"\xf3" + insn


OUTSB, INSB, OUTSD, INSD = b"\x6e", b"\x6c", b"\x6f", b"\x6d"
MOVSB, MOVSD, STOSB, STOSD = b"\xa4", b"\xa5", b"\xaa", b"\xab"


def store_ebx(size: int) -> bytes:
    """mov [ebx/rbx], al/ax/eax (ModRM 00 000 011)."""
    return {1: b"\x88\x03", 2: b"\x66\x89\x03", 4: b"\x89\x03"}[size]


def load_ebx(size: int) -> bytes:
    """mov al/ax/eax, [ebx/rbx]."""
    return {1: b"\x8a\x03", 2: b"\x66\x8b\x03", 4: b"\x8b\x03"}[size]


def store_abs(addr: int, value: int) -> bytes:
    """mov dword [disp32], imm32 (C7 /0 with ModRM 00 000 101: absolute in 32-bit mode,
    RIP-relative in 64-bit mode, so 64-bit code uses mov [rbx] instead)."""
    return b"\xc7\x05" + u32(addr) + u32(value)


RDMSR, WRMSR, CPUID, RDTSC = b"\x0f\x32", b"\x0f\x30", b"\x0f\xa2", b"\x0f\x31"
VMCALL, PAUSE, HLT = b"\x0f\x01\xc1", b"\xf3\x90", b"\xf4"
STI, CLI, IRET = b"\xfb", b"\xfa", b"\xcf"
XSETBV, WBINVD, INT3, NOP = b"\x0f\x01\xd1", b"\x0f\x09", b"\xcc", b"\x90"
RDRAND_EAX = b"\x0f\xc7\xf0"
INVLPG_EBX = b"\x0f\x01\x3b"  # invlpg [ebx]
LIDT_EBX = b"\x0f\x01\x1b"  # lidt [ebx]
DEC_ECX = b"\xff\xc9"  # dec ecx (the one-byte 0x49 is a REX prefix in 64-bit mode)
OR_EAX_IMM = b"\x0d"  # or eax, imm32


def mov_to_cr(cr: int, reg: int = EAX) -> bytes:
    return bytes([0x0F, 0x22, 0xC0 | (cr << 3) | reg])


def mov_from_cr(cr: int, reg: int = EAX) -> bytes:
    return bytes([0x0F, 0x20, 0xC0 | (cr << 3) | reg])


def int_n(n: int) -> bytes:
    return bytes([0xCD, n & 0xFF])


def jmp_rel8(delta: int) -> bytes:
    """jmp to `delta` bytes from the start of this 2-byte instruction."""
    return bytes([0xEB, (delta - 2) & 0xFF])


def jmp_rel32(delta: int) -> bytes:
    return b"\xe9" + u32(delta - 5)


def jnz_rel8(delta: int) -> bytes:
    return bytes([0x75, (delta - 2) & 0xFF])


def jae_rel32(delta: int) -> bytes:
    return b"\x0f\x83" + u32(delta - 6)


def add_edi_imm8(v: int) -> bytes:
    return bytes([0x83, 0xC7, v & 0xFF])


def add_eax_imm32(v: int) -> bytes:
    return b"\x05" + u32(v)


def store_edi_eax() -> bytes:
    return b"\x89\x07"  # mov [edi/rdi], eax


def loop_rel8(delta: int) -> bytes:
    return bytes([0xE2, (delta - 2) & 0xFF])


def halt_forever() -> bytes:
    """cli; hlt; jmp back to the hlt: stays halted (an NMI or INIT aside)."""
    return CLI + HLT + jmp_rel8(-1)
