"""EPT: real 4-level tables in host memory (ACRN hypervisor/arch/x86/guest/ept.c, asm/pgtable.h).

Entries use the SDM format: R bit 0, W bit 1, X bit 2, memory type bits 5:3, IPAT bit 6, page
size bit 7, the PFN in bits 51:12. 2 MiB pages are used where a range is aligned (as ACRN does);
1 GiB pages are not (ACRN uses them only when the CPU reports the capability).

What a VM's Unicorn engine maps is derived from these tables (`regions()`), never kept beside
them: change the EPT, then remap.
"""

from __future__ import annotations

from collections.abc import Callable

from acrn_sim.sim.hostmem import HostMemory

EPT_RD, EPT_WR, EPT_EXE = 0x1, 0x2, 0x4
EPT_RWX = EPT_RD | EPT_WR | EPT_EXE
EPT_MT_SHIFT = 3
EPT_UNCACHED, EPT_WC, EPT_WT, EPT_WP, EPT_WB = 0, 1, 4, 5, 6
EPT_IPAT = 1 << 6
PAGE_PSE = 1 << 7
PFN_MASK = 0x000F_FFFF_FFFF_F000
PAGE_SIZE = 0x1000
PDE_SIZE = 0x20_0000
_LEVEL_SHIFT = (39, 30, 21, 12)  # PML4, PDPT, PD, PT


class EptError(Exception):
    pass


class Ept:
    def __init__(self, mem: HostMemory, alloc_page: Callable[[], int]) -> None:
        self.mem = mem
        self.alloc_page = alloc_page
        self.root = alloc_page()
        self.generation = 0  # bumped on every change; engines remap when it moves

    @property
    def eptp(self) -> int:
        """EPTP as ACRN writes it: root HPA | 4-level walk (3 << 3) | WB (6)."""
        return self.root | (3 << 3) | EPT_WB

    def _entry_addr(self, table: int, gpa: int, level: int) -> int:
        return table + ((gpa >> _LEVEL_SHIFT[level]) & 0x1FF) * 8

    def _next_table(self, table: int, gpa: int, level: int) -> int:
        """Table below `level` for gpa, allocating (or splitting a 2 MiB leaf) when needed."""
        ea = self._entry_addr(table, gpa, level)
        e = self.mem.read_u64(ea)
        if e & EPT_RWX and not e & PAGE_PSE:
            return e & PFN_MASK
        new = self.alloc_page()
        if e & PAGE_PSE:  # split a 2 MiB page into 512 x 4 KiB with the same attributes
            attrs = e & ~(PFN_MASK | PAGE_PSE)
            base = e & PFN_MASK
            for i in range(512):
                self.mem.write_u64(new + i * 8, (base + i * PAGE_SIZE) | attrs)
        # Non-leaf entries grant RWX; the leaf decides (ACRN does the same).
        self.mem.write_u64(ea, new | EPT_RWX)
        return new

    def add_mr(self, gpa: int, hpa: int, size: int, prot: int, mmio: bool = False) -> None:
        """Map [gpa, gpa+size) to hpa. prot = R/W/X bits | memory type << 3 (ACRN ept_add_mr).
        `mmio`: hpa is a device's memory (a passthrough BAR), not host RAM."""
        if (gpa | hpa | size) & (PAGE_SIZE - 1):
            raise EptError("EPT ranges must be 4 KiB aligned")
        if hpa + size > self.mem.size and not mmio:
            raise EptError(f"HPA {hpa:#x}+{size:#x} is outside host memory")
        end = gpa + size
        while gpa < end:
            pml4 = self.root
            pdpt = self._next_table(pml4, gpa, 0)
            pd = self._next_table(pdpt, gpa, 1)
            if not (gpa | hpa) & (PDE_SIZE - 1) and end - gpa >= PDE_SIZE:
                ea = self._entry_addr(pd, gpa, 2)
                self.mem.write_u64(ea, hpa | prot | PAGE_PSE)
                step = PDE_SIZE
            else:
                pt = self._next_table(pd, gpa, 2)
                self.mem.write_u64(self._entry_addr(pt, gpa, 3), hpa | prot)
                step = PAGE_SIZE
            gpa += step
            hpa += step
        self.generation += 1

    def del_mr(self, gpa: int, size: int) -> None:
        """Unmap [gpa, gpa+size) (ACRN ept_del_mr); splits 2 MiB pages as needed."""
        end = gpa + size
        while gpa < end:
            pdpt = self._present_table(self.root, gpa, 0)
            pd = self._present_table(pdpt, gpa, 1) if pdpt else None
            if pd is None:
                gpa = (gpa | ((1 << 30) - 1)) + 1 if pdpt else (gpa | ((1 << 39) - 1)) + 1
                continue
            ea = self._entry_addr(pd, gpa, 2)
            e = self.mem.read_u64(ea)
            if not e & EPT_RWX:
                gpa = (gpa | (PDE_SIZE - 1)) + 1
                continue
            if e & PAGE_PSE and not gpa & (PDE_SIZE - 1) and end - gpa >= PDE_SIZE:
                self.mem.write_u64(ea, 0)
                gpa += PDE_SIZE
                continue
            pt = self._next_table(pd, gpa, 2)
            self.mem.write_u64(self._entry_addr(pt, gpa, 3), 0)
            gpa += PAGE_SIZE
        self.generation += 1

    def _present_table(self, table: int, gpa: int, level: int) -> int | None:
        e = self.mem.read_u64(self._entry_addr(table, gpa, level))
        return e & PFN_MASK if e & EPT_RWX else None

    def walk(self, gpa: int) -> tuple[int, int] | None:
        """(hpa, leaf entry attributes) for gpa, or None if not mapped."""
        table = self.root
        for level in range(4):
            e = self.mem.read_u64(self._entry_addr(table, gpa, level))
            if not e & EPT_RWX:
                return None
            if level == 3 or (level == 2 and e & PAGE_PSE):
                size = PAGE_SIZE if level == 3 else PDE_SIZE
                return (e & PFN_MASK & ~(size - 1)) | (gpa & (size - 1)), e & 0xFFF
            table = e & PFN_MASK
        return None

    def regions(self) -> list[tuple[int, int, int, int]]:
        """Every mapping as coalesced (gpa, hpa, size, R/W/X bits) runs, in GPA order."""
        runs: list[list[int]] = []

        def leaf(gpa: int, hpa: int, size: int, perm: int) -> None:
            if runs:
                last = runs[-1]
                if last[0] + last[2] == gpa and last[1] + last[2] == hpa and last[3] == perm:
                    last[2] += size
                    return
            runs.append([gpa, hpa, size, perm])

        def visit(table: int, level: int, base: int) -> None:
            for i in range(512):
                e = self.mem.read_u64(table + i * 8)
                if not e & EPT_RWX:
                    continue
                gpa = base | (i << _LEVEL_SHIFT[level])
                if level == 3 or (level == 2 and e & PAGE_PSE):
                    size = 1 << _LEVEL_SHIFT[level]
                    leaf(gpa, e & PFN_MASK & ~(size - 1), size, e & EPT_RWX)
                else:
                    visit(e & PFN_MASK, level + 1, gpa)

        visit(self.root, 0, 0)
        return [tuple(r) for r in runs]
