"""Bootable guest images made in Python: an ELF32 Multiboot or ELF64 kernel whose code is a
small prologue that sets a mode up (flat 32-bit, 32-bit paged, 64-bit), then the code given.

Layout of the one loadable segment at LOAD (1 MiB):
  LOAD + 0x000  Multiboot header (ELF32)        LOAD + 0x100  IDTR descriptor
  LOAD + 0x200  interrupt stub (IRET)           LOAD + 0x800  IDT (32-bit: 256 x 8 bytes)
  LOAD + 0x1000 IDT (64-bit: 256 x 16 bytes)    LOAD + 0x2000 entry: the prologue, then the code
Data the code may use: RAM_BUF (a scratch buffer), STACK_TOP; the 32-bit paged mode's page
directory is at PAGE_DIR (4 MiB pages); the 64-bit mode runs on the loader's identity map,
whose page directories start at PD64.
"""

from __future__ import annotations

import struct

from . import x86

LOAD = 0x100000
ENTRY = LOAD + 0x2000
IDTR = LOAD + 0x100
STUB = LOAD + 0x200
IDT32, IDT64 = LOAD + 0x800, LOAD + 0x1000
RAM_BUF = 0x1A0000
STACK_TOP = 0x1F0000
PAGE_DIR = 0x300000
PD64 = 0x3000  # sim/bootproto.py's identity map: PML4 0x1000, PDPT 0x2000, PDs 0x3000-0x6FFF
MODES = ("flat32", "paged32", "long64")
MB_MAGIC = 0x1BADB002


def mode_bits(mode: str) -> int:
    return 64 if mode == "long64" else 32


def _header_area(mode: str, idt: bool) -> bytearray:
    area = bytearray(ENTRY - LOAD)
    if mode != "long64":
        struct.pack_into("<III", area, 0, MB_MAGIC, 0, (-MB_MAGIC) & 0xFFFF_FFFF)
    area[STUB - LOAD] = 0xCF  # iret (with REX.W below for 64-bit)
    if mode == "long64":
        area[STUB - LOAD : STUB - LOAD + 2] = b"\x48\xcf"  # iretq
    if idt:
        for v in range(256):
            if mode == "long64":
                gate = struct.pack(
                    "<HHBBHII", STUB & 0xFFFF, 0x08, 0, 0x8E, STUB >> 16 & 0xFFFF, 0, 0
                )
                area[IDT64 - LOAD + 16 * v : IDT64 - LOAD + 16 * v + 16] = gate
            else:
                gate = struct.pack("<HHBBH", STUB & 0xFFFF, 0x08, 0, 0x8E, STUB >> 16)
                area[IDT32 - LOAD + 8 * v : IDT32 - LOAD + 8 * v + 8] = gate
        base, limit = (IDT64, 256 * 16 - 1) if mode == "long64" else (IDT32, 256 * 8 - 1)
        fmt = "<HQ" if mode == "long64" else "<HI"
        struct.pack_into(fmt, area, IDTR - LOAD, limit, base)
    return area


def prologue(mode: str, idt: bool) -> bytes:
    """Stack, optionally an IDT whose every vector IRETs, and (paged32) 4 MiB-page paging."""
    bits = mode_bits(mode)
    code = x86.mov_imm(x86.ESP, STACK_TOP, bits)
    if idt:
        code += x86.mov_imm(x86.EBX, IDTR, bits) + x86.LIDT_EBX
    if mode == "paged32":
        body = x86.store_edi_eax() + x86.add_eax_imm32(0x400000) + x86.add_edi_imm8(4)
        code += (
            x86.mov_imm(x86.EDI, PAGE_DIR)
            + x86.mov_imm(x86.EAX, 0x83)  # present, writable, 4 MiB page
            + x86.mov_imm(x86.ECX, 8)  # the first 32 MiB
            + body
            + x86.loop_rel8(-len(body))
            # the 4 MiB page holding the IOAPIC (0xFEC00000) and the xAPIC (0xFEE00000)
            + x86.store_abs(PAGE_DIR + 0x3FB * 4, 0xFEC00083)
            + x86.mov_from_cr(4)
            + x86.OR_EAX_IMM
            + x86.u32(0x10)  # CR4.PSE
            + x86.mov_to_cr(4)
            + x86.mov_imm(x86.EAX, PAGE_DIR)
            + x86.mov_to_cr(3)
            + x86.mov_from_cr(0)
            + x86.OR_EAX_IMM
            + x86.u32(0x8000_0000)  # CR0.PG
            + x86.mov_to_cr(0)
        )
    return code


def elf32(segment: bytes, entry: int, paddr: int = LOAD, bss: int = 0) -> bytes:
    """An ELF32 executable with one loadable segment at file offset 0x100."""
    ehdr = b"\x7fELF" + bytes([1, 1, 1]) + bytes(9)
    ehdr += struct.pack("<HHIIIIIHHHHHH", 2, 3, 1, entry, 52, 0, 0, 52, 32, 1, 40, 0, 0)
    phdr = struct.pack(
        "<IIIIIIII", 1, 0x100, paddr, paddr, len(segment), len(segment) + bss, 7, 0x1000
    )
    return ehdr + phdr + bytes(0x100 - len(ehdr) - len(phdr)) + segment


def elf64(segment: bytes, entry: int, paddr: int = LOAD, bss: int = 0) -> bytes:
    """An ELF64 executable with one loadable segment at file offset 0x100."""
    ehdr = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    ehdr += struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, entry, 64, 0, 0, 64, 56, 1, 64, 0, 0)
    phdr = struct.pack(
        "<IIQQQQQQ", 1, 7, 0x100, paddr, paddr, len(segment), len(segment) + bss, 0x1000
    )
    return ehdr + phdr + bytes(0x100 - len(ehdr) - len(phdr)) + segment


def guest(mode: str, code: bytes, idt: bool = False) -> bytes:
    """A bootable image: the mode's prologue, then `code`, then a halt loop."""
    segment = bytes(_header_area(mode, idt)) + prologue(mode, idt) + code + x86.halt_forever()
    build = elf64 if mode == "long64" else elf32
    return build(segment, ENTRY)
