"""The virtual host bridge at 00:00.0 of a pre-launched VM (ACRN hypervisor/dm/vpci/
vhostbridge.c): the identity ACRN gives it, vendor 0x8086 device 0x5af0 revision 0x0b, a
host bridge (class 06/00), multi-function header. Its chipset-specific registers, which ACRN
copies from an Apollo Lake part, are left zero. Writes reach its configuration space except
the BARs (it has none)."""

from __future__ import annotations

from acrn_sim.sim.pci import (
    PCIR_BAR0,
    PCIR_CLASS_CODE,
    PCIR_DEVICE,
    PCIR_HDRTYPE,
    PCIR_REVID,
    PCIR_VENDOR,
)


class VHostBridge:
    def __init__(self) -> None:
        self.config = bytearray(256)
        self._put(PCIR_VENDOR, 2, 0x8086)
        self._put(PCIR_DEVICE, 2, 0x5AF0)
        self._put(PCIR_REVID, 1, 0x0B)
        self._put(PCIR_HDRTYPE, 1, 0x80)  # PCIM_HDRTYPE_NORMAL | PCIM_MFDEV
        self._put(PCIR_CLASS_CODE, 3, 0x060000)  # PCIC_BRIDGE, PCIS_BRIDGE_HOST

    def _put(self, off: int, size: int, value: int) -> None:
        self.config[off : off + size] = value.to_bytes(size, "little")

    def cfg_read(self, reg: int, size: int) -> int:
        return int.from_bytes(self.config[reg : reg + size], "little")

    def cfg_write(self, reg: int, size: int, value: int) -> None:
        if not PCIR_BAR0 <= reg < PCIR_BAR0 + 24 and reg >= 0x04:
            self._put(reg, size, value & ((1 << (8 * size)) - 1))

    def deinit(self) -> None:
        pass
