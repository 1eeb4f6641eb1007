"""ELF32/ELF64 executable parsing: the loadable segments and the entry point."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from acrn_sim.sim import ConfigError

PT_LOAD = 1


@dataclass(frozen=True)
class Segment:
    paddr: int
    vaddr: int
    data: bytes
    memsz: int


@dataclass(frozen=True)
class ElfImage:
    bits: int
    machine: int
    entry: int
    segments: tuple[Segment, ...]

    @property
    def low(self) -> int:
        return min(s.paddr for s in self.segments)

    @property
    def high(self) -> int:
        return max(s.paddr + s.memsz for s in self.segments)


def parse_elf(data: bytes, name: str) -> ElfImage:
    """The loadable segments and entry of an ELF executable. Total: any bytes give an
    ElfImage or a one-line ConfigError (header fields are file offsets and sizes the file
    itself may contradict; each is checked against the file's length before use)."""
    if len(data) < 52 or data[:4] != b"\x7fELF":
        raise ConfigError(f"{name}: not an ELF file")
    ei_class, ei_data = data[4], data[5]
    if ei_data != 1 or ei_class not in (1, 2):
        raise ConfigError(f"{name}: unsupported ELF (need little-endian ELF32 or ELF64)")
    if ei_class == 1:
        ehfmt, phfmt = struct.Struct("<HHIIIIIHHH"), struct.Struct("<IIIIIIII")
    else:
        ehfmt, phfmt = struct.Struct("<HHIQQQIHHH"), struct.Struct("<IIQQQQQQ")
    if 16 + ehfmt.size > len(data):
        raise ConfigError(f"{name}: truncated ELF headers")
    (e_type, e_machine, _, e_entry, e_phoff, _, _, _, e_phentsize, e_phnum) = ehfmt.unpack_from(
        data, 16
    )
    if e_phnum and e_phentsize < phfmt.size:
        raise ConfigError(
            f"{name}: ELF program headers of {e_phentsize} bytes (need at least {phfmt.size})"
        )
    if e_phnum and e_phoff + e_phnum * e_phentsize > len(data):
        raise ConfigError(f"{name}: truncated ELF headers (program headers past the end)")
    segments = []
    for i in range(e_phnum):
        fields = phfmt.unpack_from(data, e_phoff + i * e_phentsize)
        if ei_class == 1:
            p_type, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, _, _ = fields
        else:
            p_type, _, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, _ = fields
        if p_type != PT_LOAD or p_memsz == 0:
            continue
        if p_offset + p_filesz > len(data) or p_filesz > p_memsz:
            raise ConfigError(f"{name}: ELF segment {i} lies outside the file")
        segments.append(Segment(p_paddr, p_vaddr, data[p_offset : p_offset + p_filesz], p_memsz))
    if e_type != 2:
        raise ConfigError(f"{name}: ELF is not an executable (e_type {e_type})")
    if not segments:
        raise ConfigError(f"{name}: ELF has no loadable segment")
    return ElfImage(32 if ei_class == 1 else 64, e_machine, e_entry, tuple(segments))
