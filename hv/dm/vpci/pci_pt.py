"""A passthrough PCI device as its VM sees it (ACRN hypervisor/dm/vpci/pci_pt.c, vdev.c).

Configuration space stays the hypervisor's: every access traps (a port-I/O exit to 0xCFC)
and is answered here:
- BARs are virtual: the guest sizes them (all ones reads back the size mask of the physical
  BAR) and places them at guest-physical addresses of its choice (a post-launched VM's are
  placed by its device model, HC_ASSIGN_PCIDEV's `bar[]`). While the guest's memory decoding
  is on, each vBAR is mapped in the VM's EPT onto the physical BAR (vdev_pt_map_mem_vbar),
  uncached: from then on the guest's register accesses reach the device with no VM exit.
- the command register is the guest's copy; memory space and bus mastering are mirrored to
  the device (bus mastering is what lets it DMA);
- the MSI capability is virtualized (vmsi.py); the interrupt line is the guest's scratch;
- everything else reads from the device and ignores writes.

The engine maps a vBAR's guest-physical range onto `BarWindow`: each access is the device's
register access, at the cycle the guest's instruction runs, costing `pt_mmio_read` or
`pt_mmio_write` cycles of the vCPU (an uncached read waits for the device's completion; a
write is posted).
"""

from __future__ import annotations

from dataclasses import dataclass

from acrn_sim.hv.dm.vpci.vmsi import VMsi
from acrn_sim.hv.guest.ept import EPT_RD, EPT_UNCACHED, EPT_WR
from acrn_sim.sim.pci import (
    NUM_BARS,
    PCIM_BAR_MEM_64,
    PCIM_CMD_BUSMASTEREN,
    PCIM_CMD_INTXDIS,
    PCIM_CMD_MEMEN,
    PCIR_BAR0,
    PCIR_COMMAND,
    PCIR_INTLINE,
)

BAR_PROT = EPT_RD | EPT_WR | (EPT_UNCACHED << 3)
GUEST_CMD_BITS = PCIM_CMD_MEMEN | PCIM_CMD_BUSMASTEREN | PCIM_CMD_INTXDIS


@dataclass
class VBar:
    size: int
    is_64: bool
    hpa: int  # the physical BAR
    base: int = 0  # the guest's address (0: not placed)
    mapped: int | None = None  # where it is mapped in the EPT now
    reg_lo: int = 0  # what the BAR registers read (sizing included)
    reg_hi: int = 0


class PtVdev:
    def __init__(self, vm, vbdf: int, phys_sid: int, vbar_bases: list[int] | None = None):
        self.vm = vm
        self.vbdf = vbdf
        self.phys_sid = phys_sid
        self.platform = vm.hv.platform
        cfg = self.platform.devices[phys_sid].config
        self.bars: list[VBar | None] = [None] * NUM_BARS
        for i in range(NUM_BARS):
            if cfg.bar_sizes[i]:
                base = (vbar_bases[i] if vbar_bases else 0) & ~(cfg.bar_sizes[i] - 1)
                self.bars[i] = VBar(cfg.bar_sizes[i], cfg.bar_64[i], cfg.bar_address(i), base)
                self._set_regs(i)
        self.cmd = 0
        self.intline = 0xFF
        self.msi = VMsi(self, cfg.msi_cap) if cfg.msi_cap else None

    # --------------------------------------------------------------- reads
    def cfg_read(self, reg: int, size: int) -> int:
        if size not in (1, 2, 4) or reg % size or reg + size > 256:
            return (1 << (8 * size)) - 1
        out = 0
        for i in range(size):  # byte by byte: every overlay applies at any width
            out |= self._byte(reg + i) << (8 * i)
        return out

    def _byte(self, off: int) -> int:
        if PCIR_BAR0 <= off < PCIR_BAR0 + 4 * NUM_BARS:
            return (self._bar_dword((off - PCIR_BAR0) // 4) >> (8 * (off & 3))) & 0xFF
        if off in (PCIR_COMMAND, PCIR_COMMAND + 1):
            return (self.cmd >> (8 * (off - PCIR_COMMAND))) & 0xFF
        if off == PCIR_INTLINE:
            return self.intline
        if self.msi is not None and self.msi.covers(off):
            return self.msi.read(off, 1)
        return self.platform.cfg_read(self.phys_sid, off, 1)

    def _bar_dword(self, idx: int) -> int:
        bar = self.bars[idx]
        if bar is not None:
            return bar.reg_lo
        prev = self.bars[idx - 1] if idx else None
        if prev is not None and prev.is_64:
            return prev.reg_hi
        return 0

    def _set_regs(self, idx: int) -> None:
        bar = self.bars[idx]
        bar.reg_lo = (bar.base & 0xFFFF_FFF0) | (PCIM_BAR_MEM_64 if bar.is_64 else 0)
        bar.reg_hi = bar.base >> 32 if bar.is_64 else 0

    # -------------------------------------------------------------- writes
    def cfg_write(self, reg: int, size: int, value: int) -> None:
        if size not in (1, 2, 4) or reg % size or reg + size > 256:
            return
        value &= (1 << (8 * size)) - 1
        if PCIR_BAR0 <= reg < PCIR_BAR0 + 4 * NUM_BARS:
            if size == 4:
                self._write_bar((reg - PCIR_BAR0) // 4, value)
        elif reg < PCIR_COMMAND + 2 and reg + size > PCIR_COMMAND:
            cmd = self.cmd
            for i in range(size):  # the command register's bytes; status is read-only
                k = reg + i - PCIR_COMMAND
                if 0 <= k < 2:
                    cmd = (cmd & ~(0xFF << 8 * k)) | ((value >> 8 * i) & 0xFF) << 8 * k
            self._write_command(cmd)
        elif reg == PCIR_INTLINE and size == 1:
            self.intline = value
        elif self.msi is not None and self.msi.covers(reg):
            self.msi.write(reg, size, value)
        # identity and the rest: read-only to the guest

    def _write_bar(self, idx: int, value: int) -> None:
        bar = self.bars[idx]
        if bar is None:
            prev = self.bars[idx - 1] if idx else None
            if prev is not None and prev.is_64:  # the high half of a 64-bit BAR
                base = (prev.base & 0xFFFF_FFFF) | value << 32
                self._move(idx - 1, base & ~(prev.size - 1), sizing=value == 0xFFFF_FFFF)
            return
        base = (bar.base & ~0xFFFF_FFFF) | (value & 0xFFFF_FFF0)
        self._move(idx, base & ~(bar.size - 1), sizing=value == 0xFFFF_FFFF)

    def _move(self, idx: int, base: int, sizing: bool) -> None:
        bar = self.bars[idx]
        if sizing:  # the size mask reads back; the BAR does not move (PCI 3.0 §6.2.5.1)
            mask = ~(bar.size - 1)
            bar.reg_lo = (mask & 0xFFFF_FFF0) | (PCIM_BAR_MEM_64 if bar.is_64 else 0)
            bar.reg_hi = (mask >> 32) & 0xFFFF_FFFF if bar.is_64 else 0
            return
        bar.base = base
        self._set_regs(idx)
        self._update_mapping(idx)

    def _write_command(self, cmd: int) -> None:
        old = self.cmd
        self.cmd = cmd & GUEST_CMD_BITS
        phys = self.platform.cfg_read(self.phys_sid, PCIR_COMMAND, 2)
        mirror = PCIM_CMD_MEMEN | PCIM_CMD_BUSMASTEREN
        phys = (phys & ~mirror) | (self.cmd & mirror)
        self.platform.cfg_write(self.phys_sid, PCIR_COMMAND, 2, phys | PCIM_CMD_INTXDIS)
        if (old ^ self.cmd) & PCIM_CMD_MEMEN:
            for i, bar in enumerate(self.bars):
                if bar is not None:
                    self._update_mapping(i)

    # ------------------------------------------------------------ the EPT
    def _update_mapping(self, idx: int) -> None:
        """Map the vBAR where the guest placed it while memory decoding is on."""
        bar = self.bars[idx]
        want = bar.base if (self.cmd & PCIM_CMD_MEMEN and bar.base) else None
        if want == bar.mapped:
            return
        ept = self.vm.ept
        if bar.mapped is not None:
            ept.del_mr(bar.mapped, bar.size)
        if want is not None:
            ept.add_mr(want, bar.hpa, max(bar.size, 0x1000), BAR_PROT, mmio=True)
        bar.mapped = want
        self.vm.remap()

    def deinit(self) -> None:
        """vdev_pt_deinit: the device leaves the VM: MSI off, vBARs unmapped, decoding and
        bus mastering off."""
        if self.msi is not None:
            self.msi.deinit()
        self.cmd = 0
        for i, bar in enumerate(self.bars):
            if bar is not None:
                self._update_mapping(i)
        self.platform.cfg_write(self.phys_sid, PCIR_COMMAND, 2, PCIM_CMD_INTXDIS)


class BarWindow:
    """A vCPU's engine's view of a physical BAR mapped into its VM (an MMIO region of the
    engine): register accesses with no VM exit."""

    def __init__(self, vcpu, hpa: int) -> None:
        self.vcpu = vcpu
        self.hpa = hpa
        self.platform = vcpu.hv.platform
        cycles = vcpu.profile.cycles
        self.read_cost, self.write_cost = cycles["pt_mmio_read"], cycles["pt_mmio_write"]
        vcpu.hv.pt_mmio_accesses.setdefault(vcpu.vm.name, [0, 0])

    def read(self, offset: int, size: int, cycles_in: int) -> int:
        v = self.vcpu
        v.engine.charge(self.read_cost)
        v.hv.pt_mmio_accesses[v.vm.name][0] += 1
        return self.platform.mmio_read(self.hpa + offset, size, v.slice_start + cycles_in)

    def write(self, offset: int, size: int, value: int, cycles_in: int) -> None:
        v = self.vcpu
        v.engine.charge(self.write_cost)
        v.hv.pt_mmio_accesses[v.vm.name][1] += 1
        self.platform.mmio_write(self.hpa + offset, size, value, v.slice_start + cycles_in)
