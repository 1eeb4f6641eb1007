"""Segment loads that change the privilege level, done by the CPU model rather than by Unicorn.

Unicorn's x86-64 engine writes only the selector when CS, SS, DS or ES is set through its
register API (docs/unicorn.md, "Modes, segments, paging"): the hidden part (base, limit,
attributes) and the current privilege level, which QEMU keeps in `hflags` and takes from SS's
DPL, stay as they were. An event delivered from ring 3 (SDM Vol. 3 §6.12.1: the stack switch to
the TSS's RSP0 or an IST stack) and SYSCALL (Vol. 2B, SYSCALL; Unicorn's own SYSCALL only calls
the hook and moves RIP past the instruction) load CS and SS, so the model writes the segment
caches and recomputes the hflags itself, in the engine's saved CPU state, as QEMU's
cpu_x86_load_seg_cache does (target/i386/cpu.h). The offsets are checked at start-up
(sim/selftest.py).
"""

from __future__ import annotations

import ctypes
import struct
from dataclasses import dataclass

from acrn_sim.sim.selftest import CTX_HFLAGS_OFFSET, CTX_SEGS_OFFSET, SEG_CACHE_SIZE

ES, CS, SS, DS, FS, GS = range(6)  # QEMU's segs[] order (R_ES ... R_GS)
# Descriptor attribute bits as QEMU keeps them (the descriptor's second dword, SDM §3.4.5)
DESC_TYPE_SHIFT, DESC_S, DESC_DPL_SHIFT, DESC_P = 8, 1 << 12, 13, 1 << 15
DESC_L, DESC_B, DESC_G = 1 << 21, 1 << 22, 1 << 23
DESC_CODE = 1 << 11
DESC_ATTR_MASK = 0x00F0FF00
# hflags (QEMU target/i386/cpu.h)
HF_CPL_MASK, HF_CS32, HF_SS32, HF_ADDSEG, HF_LMA, HF_CS64 = (
    3,
    1 << 4,
    1 << 5,
    1 << 6,
    1 << 14,
    1 << 15,
)
CR0_PE = 1
RFLAGS_VM = 1 << 17


@dataclass(frozen=True)
class Descriptor:
    selector: int
    base: int
    limit: int  # in bytes, granularity applied
    flags: int  # the attribute bits (DESC_*) of the second dword

    @property
    def dpl(self) -> int:
        return (self.flags >> DESC_DPL_SHIFT) & 3

    @property
    def present(self) -> bool:
        return bool(self.flags & DESC_P)

    @property
    def is_code(self) -> bool:
        return bool(self.flags & DESC_S) and bool(self.flags & DESC_CODE)

    @property
    def is_writable_data(self) -> bool:
        return bool(self.flags & DESC_S) and not self.flags & DESC_CODE and bool(self.flags & 0x200)


def decode(selector: int, raw: bytes) -> Descriptor:
    lo, hi = struct.unpack_from("<II", raw)
    base = (lo >> 16) | ((hi & 0xFF) << 16) | (hi & 0xFF00_0000)
    limit = (lo & 0xFFFF) | (hi & 0x000F_0000)
    if hi & DESC_G:
        limit = (limit << 12) | 0xFFF
    return Descriptor(selector, base, limit, hi & DESC_ATTR_MASK)


def null_stack_segment(rpl: int) -> Descriptor:
    """The NULL SS that a 64-bit privilege change loads (SDM §6.14.4): RPL = the new CPL, and
    QEMU's cache carries that DPL, which is where its CPL comes from."""
    return Descriptor(rpl, 0, 0, rpl << DESC_DPL_SHIFT)


def load(engine, segments: dict[int, Descriptor]) -> None:
    """Write the given segment caches (index -> descriptor) and recompute the hflags the way
    QEMU's cpu_x86_load_seg_cache does for each load, CS before SS."""

    def edit(ptr: int) -> None:
        hflags = ctypes.c_uint32.from_address(ptr + CTX_HFLAGS_OFFSET)
        h = hflags.value
        for index in sorted(segments, key=lambda i: (i != CS, i != SS, i)):
            d = segments[index]
            seg = ptr + CTX_SEGS_OFFSET + index * SEG_CACHE_SIZE
            ctypes.c_uint32.from_address(seg).value = d.selector & 0xFFFF
            ctypes.c_uint64.from_address(seg + 8).value = d.base
            ctypes.c_uint32.from_address(seg + 16).value = d.limit & 0xFFFF_FFFF
            ctypes.c_uint32.from_address(seg + 20).value = d.flags
            if index == CS:
                if h & HF_LMA and d.flags & DESC_L:
                    h |= HF_CS32 | HF_SS32 | HF_CS64
                else:
                    h = (h & ~(HF_CS32 | HF_CS64)) | (HF_CS32 if d.flags & DESC_B else 0)
            if index == SS:
                h = (h & ~HF_CPL_MASK) | d.dpl
        ss_flags = ctypes.c_uint32.from_address(ptr + CTX_SEGS_OFFSET + SS * SEG_CACHE_SIZE + 20)
        new = HF_SS32 if ss_flags.value & DESC_B else 0
        if not h & HF_CS64:
            cr0 = engine.reg("cr0")
            rflags = engine.reg("rflags")
            if not cr0 & CR0_PE or rflags & RFLAGS_VM or not h & HF_CS32:
                new |= HF_ADDSEG
            else:
                bases = [
                    ctypes.c_uint64.from_address(ptr + CTX_SEGS_OFFSET + i * SEG_CACHE_SIZE + 8)
                    for i in (DS, ES, SS)
                ]
                new |= HF_ADDSEG if any(b.value for b in bases) else 0
        hflags.value = (h & ~(HF_SS32 | HF_ADDSEG)) | new

    engine.edit_cpu_state(edit)
