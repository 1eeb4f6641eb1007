"""A passthrough device's MSI capability, virtualized (ACRN hypervisor/dm/vpci/vmsi.c): the
guest reads and writes its own copy of the capability (message control, address, data, at
the physical capability's offset); the device is programmed with what the hypervisor
decides (hv/guest/assign.py): when the guest enables MSI, or changes the message while
enabled, ptirq_prepare_msix_remap gives the remappable-format message, which goes into the
physical capability, and the physical enable bit follows the guest's. The guest never sees
the physical message and the device never sends the guest's.

One message (multiple-message capable and enable read 0, as ACRN's DM forces them:
FORCE_MSI_SINGLE_VECTOR), 64-bit address.
"""

from __future__ import annotations

from acrn_sim.hv.guest.assign import ptirq_prepare_msix_remap, ptirq_remove_msix_remapping
from acrn_sim.sim.pci import PCIM_MSICTRL_64BIT, PCIM_MSICTRL_MSI_ENABLE

MSI_CAPLEN = 14  # control (2), address (8), data (2), from the capability's start + 2


class VMsi:
    def __init__(self, vdev, capoff: int) -> None:
        self.vdev = vdev
        self.capoff = capoff
        self.ctrl = PCIM_MSICTRL_64BIT
        self.addr = 0
        self.data = 0
        self.remapped = False

    def covers(self, reg: int) -> bool:
        return self.capoff + 2 <= reg < self.capoff + MSI_CAPLEN

    def _bytes(self) -> bytes:
        return (self.ctrl.to_bytes(2, "little") + self.addr.to_bytes(8, "little")
                + self.data.to_bytes(2, "little"))  # fmt: skip

    def read(self, reg: int, size: int) -> int:
        off = reg - self.capoff - 2
        raw = self._bytes() + bytes(4)
        return int.from_bytes(raw[off : off + size], "little")

    def write(self, reg: int, size: int, value: int) -> None:
        off = reg - self.capoff - 2
        raw = bytearray(self._bytes() + bytes(4))
        raw[off : off + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
        was_enabled = bool(self.ctrl & PCIM_MSICTRL_MSI_ENABLE)
        old = (self.addr, self.data)
        self.ctrl = PCIM_MSICTRL_64BIT | (raw[0] & PCIM_MSICTRL_MSI_ENABLE)
        self.addr = int.from_bytes(raw[2:10], "little") & ~3
        self.data = int.from_bytes(raw[10:12], "little")
        enabled = bool(self.ctrl & PCIM_MSICTRL_MSI_ENABLE)
        if enabled and (not was_enabled or old != (self.addr, self.data)):
            self._remap()
        elif was_enabled and not enabled:
            self._physical_enable(False)

    def _remap(self) -> None:
        """remap_vmsi: the physical message for the guest's, then the physical enable."""
        v = self.vdev
        pmsi = ptirq_prepare_msix_remap(v.vm, v.vbdf, v.phys_sid, 0, self.addr, self.data)
        cap = self.capoff
        p = v.platform
        if pmsi is None:  # not set up: the device keeps MSI off
            self._physical_enable(False)
            return
        p.cfg_write(v.phys_sid, cap + 4, 4, pmsi[0] & 0xFFFF_FFFF)
        p.cfg_write(v.phys_sid, cap + 8, 4, pmsi[0] >> 32)
        p.cfg_write(v.phys_sid, cap + 12, 2, pmsi[1])
        self._physical_enable(True)
        self.remapped = True

    def _physical_enable(self, on: bool) -> None:
        v = self.vdev
        cap = self.capoff
        ctrl = v.platform.cfg_read(v.phys_sid, cap + 2, 2)
        ctrl = ctrl | PCIM_MSICTRL_MSI_ENABLE if on else ctrl & ~PCIM_MSICTRL_MSI_ENABLE
        v.platform.cfg_write(v.phys_sid, cap + 2, 2, ctrl)

    def deinit(self) -> None:
        """The device leaves the VM: MSI off, its remapping and IRTE freed."""
        self._physical_enable(False)
        if self.remapped:
            ptirq_remove_msix_remapping(self.vdev.vm, self.vdev.vbdf, 1)
            self.remapped = False
