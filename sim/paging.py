"""The CPU's own page walk: guest-linear to guest-physical (SDM Vol. 3 §4.3-4.5).

Unicorn walks guest page tables internally but does not expose the walk to Python (the 2.1.4
binding lacks uc_vmem_translate: docs/unicorn.md). The model needs it wherever the hardware
touches linear addresses outside an instruction: IDT and stack accesses during event delivery,
the GDT descriptor of CS, and instruction fetch for decoding (ACRN's gva2gpa in guest_memory.c).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

CR0_PE = 1 << 0
CR0_WP = 1 << 16
CR0_PG = 1 << 31
CR4_PSE = 1 << 4
CR4_PAE = 1 << 5
EFER_LME = 1 << 8
EFER_LMA = 1 << 10

PF_P, PF_W, PF_U, PF_I = 1, 2, 4, 16
_PHYS_MASK = 0x000F_FFFF_FFFF_F000


class PageFault(Exception):
    def __init__(self, linear: int, error_code: int) -> None:
        # args are the constructor's own: simpy re-raises a process's exception as
        # type(e)(*e.args), which must rebuild it rather than fail with a TypeError
        super().__init__(linear, error_code)
        self.linear = linear
        self.error_code = error_code

    def __str__(self) -> str:
        return f"#PF at {self.linear:#x} err {self.error_code:#x}"


@dataclass(frozen=True)
class PagingState:
    cr0: int
    cr3: int
    cr4: int
    efer: int


def translate(
    linear: int,
    st: PagingState,
    read_phys: Callable[[int, int], bytes],
    write: bool = False,
    fetch: bool = False,
) -> int:
    """Return the guest-physical address of `linear`, or raise PageFault (supervisor access)."""
    if not st.cr0 & CR0_PG:
        return linear & (0xFFFF_FFFF_FFFF_FFFF if st.efer & EFER_LMA else 0xFFFF_FFFF)
    err = (PF_W if write else 0) | (PF_I if fetch else 0)
    wp = bool(st.cr0 & CR0_WP)

    def check(entry: int) -> None:
        if not entry & 1:
            raise PageFault(linear, err)
        if write and wp and not entry & 2:
            raise PageFault(linear, err | PF_P)

    if not st.cr4 & CR4_PAE:  # 32-bit paging, 4 KiB or (PSE) 4 MiB pages
        linear &= 0xFFFF_FFFF
        pde = struct.unpack("<I", read_phys((st.cr3 & 0xFFFFF000) + (linear >> 22) * 4, 4))[0]
        check(pde)
        if pde & 0x80 and st.cr4 & CR4_PSE:
            return (pde & 0xFFC00000) | (linear & 0x3FFFFF)
        pte = struct.unpack("<I", read_phys((pde & 0xFFFFF000) + ((linear >> 12) & 0x3FF) * 4, 4))[
            0
        ]
        check(pte)
        return (pte & 0xFFFFF000) | (linear & 0xFFF)

    def entry_at(table: int, index: int) -> int:
        return struct.unpack("<Q", read_phys(table + index * 8, 8))[0]

    if st.efer & EFER_LMA:  # 4-level paging
        pml4e = entry_at(st.cr3 & _PHYS_MASK, (linear >> 39) & 0x1FF)
        check(pml4e)
        pdpte = entry_at(pml4e & _PHYS_MASK, (linear >> 30) & 0x1FF)
        check(pdpte)
        if pdpte & 0x80:
            return (pdpte & 0x000F_FFFF_C000_0000) | (linear & 0x3FFF_FFFF)
    else:  # PAE paging: 4 PDPTEs at CR3[31:5]
        linear &= 0xFFFF_FFFF
        pdpte = entry_at(st.cr3 & 0xFFFF_FFE0, linear >> 30)
        if not pdpte & 1:
            raise PageFault(linear, err)
    pde = entry_at(pdpte & _PHYS_MASK, (linear >> 21) & 0x1FF)
    check(pde)
    if pde & 0x80:
        return (pde & 0x000F_FFFF_FFE0_0000) | (linear & 0x1FFFFF)
    pte = entry_at(pde & _PHYS_MASK, (linear >> 12) & 0x1FF)
    check(pte)
    return (pte & _PHYS_MASK) | (linear & 0xFFF)
