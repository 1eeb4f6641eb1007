"""A physical PCI function's configuration space, as the hardware implements it (PCI Local Bus
Specification 3.0, §6: the type-0 header, BAR sizing §6.2.5.1, the capability list §6.7 and
MSI §6.8.1). The machine's devices (sim/devices/) build on it; the hypervisor's vPCI
(hv/dm/vpci/) and the Service VM read and write it through the platform (sim/platform.py).

Bus/device/function numbers are written as ACRN and Linux do: "00:1f.0" (lspci) or "00/1f/0"
(acrn-dm's passthru option), all hexadecimal; a requester's source id is bus << 8 | dev << 3 |
fn (PCI Express Base Specification §2.2.6.2, the Requester ID that VT-d indexes its tables by).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable

from acrn_sim.sim import ConfigError

# Type-0 header registers (PCI 3.0 §6.1)
PCIR_VENDOR, PCIR_DEVICE, PCIR_COMMAND, PCIR_STATUS = 0x00, 0x02, 0x04, 0x06
PCIR_REVID, PCIR_CLASS_CODE, PCIR_HDRTYPE = 0x08, 0x09, 0x0E
PCIR_BAR0, PCIR_SUBVEND, PCIR_SUBDEV = 0x10, 0x2C, 0x2E
PCIR_CAP_PTR, PCIR_INTLINE, PCIR_INTPIN = 0x34, 0x3C, 0x3D
PCIM_CMD_MEMEN, PCIM_CMD_BUSMASTEREN, PCIM_CMD_INTXDIS = 0x2, 0x4, 0x400
PCIM_STATUS_CAPPRESENT = 0x10
PCIM_BAR_MEM_64 = 0x4
PCIY_MSI = 0x05
# MSI message control (PCI 3.0 §6.8.1.3): enable bit 0, multiple message enable 6:4, 64-bit 7
PCIM_MSICTRL_MSI_ENABLE, PCIM_MSICTRL_64BIT = 0x1, 0x80
CAP_START = 0x40
NUM_BARS = 6


def bdf(bus: int, dev: int, fn: int) -> int:
    """The 16-bit requester id: bus 15:8, device 7:3, function 2:0."""
    return (bus & 0xFF) << 8 | (dev & 0x1F) << 3 | (fn & 0x7)


def bdf_str(value: int) -> str:
    return f"{value >> 8:02x}:{(value >> 3) & 0x1F:02x}.{value & 7}"


_LSPCI = re.compile(r"([0-9A-Fa-f]{1,2}):([0-9A-Fa-f]{1,2})\.([0-7])")
_DM = re.compile(r"([0-9A-Fa-f]{1,2})/([0-9A-Fa-f]{1,2})/([0-7])")


def parse_bdf(text: str, where: str) -> int:
    """ "BB:DD.F" or acrn-dm's "BB/DD/F" (hexadecimal bus and device) -> requester id."""
    m = _LSPCI.fullmatch(text.strip()) or _DM.fullmatch(text.strip())
    if m is None:
        raise ConfigError(f"{where}: {text!r} is not a PCI address (BB:DD.F or BB/DD/F)")
    bus, dev, fn = int(m.group(1), 16), int(m.group(2), 16), int(m.group(3))
    if dev > 0x1F:
        raise ConfigError(f"{where}: device {dev:#x} is out of range (00-1f)")
    return bdf(bus, dev, fn)


class ConfigSpace:
    """256 bytes of configuration space with the hardware's write rules: read-only identity,
    BARs that decode only their size's address bits (so writing all ones reads the size mask
    back), a command register, a capability list and an MSI capability. A device is told of
    writes that matter to it through `on_command`, `on_bar` and `on_msi`."""

    def __init__(self) -> None:
        self.data = bytearray(256)
        self.bar_sizes = [0] * NUM_BARS  # 0: not implemented
        self.bar_64 = [False] * NUM_BARS
        self.msi_cap = 0
        self._last_cap = 0
        self._cap_end = CAP_START
        self.on_command: Callable[[int, int], None] | None = None  # (old, new)
        self.on_bar: Callable[[int], None] | None = None  # (BAR index)
        self.on_msi: Callable[[], None] | None = None

    # -------------------------------------------------------------- raw bytes
    def get(self, off: int, size: int) -> int:
        return int.from_bytes(self.data[off : off + size], "little")

    def put(self, off: int, size: int, value: int) -> None:
        self.data[off : off + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")

    def set_ids(self, vendor: int, device: int, class_code: int, revision: int = 0,
                subvendor: int = 0, subdevice: int = 0) -> None:  # fmt: skip
        self.put(PCIR_VENDOR, 2, vendor)
        self.put(PCIR_DEVICE, 2, device)
        self.put(PCIR_REVID, 1, revision)
        self.put(PCIR_CLASS_CODE, 3, class_code)
        self.put(PCIR_SUBVEND, 2, subvendor)
        self.put(PCIR_SUBDEV, 2, subdevice)

    # ------------------------------------------------------------------ BARs
    def add_mem_bar(self, idx: int, size: int, is_64: bool = False) -> None:
        """A memory BAR of `size` bytes (a power of two, at least 16: PCI 3.0 §6.2.5.1)."""
        if size < 16 or size & (size - 1):
            raise ValueError("a memory BAR's size is a power of two of at least 16 bytes")
        self.bar_sizes[idx] = size
        self.bar_64[idx] = is_64
        self.put(PCIR_BAR0 + 4 * idx, 4, PCIM_BAR_MEM_64 if is_64 else 0)

    def bar_address(self, idx: int) -> int:
        lo = self.get(PCIR_BAR0 + 4 * idx, 4) & ~0xF
        hi = self.get(PCIR_BAR0 + 4 * idx + 4, 4) if self.bar_64[idx] else 0
        return hi << 32 | lo

    def set_bar_address(self, idx: int, address: int) -> None:
        """What firmware does when it places a BAR (the same as the guest's dword writes)."""
        self.write(PCIR_BAR0 + 4 * idx, 4, address & 0xFFFF_FFFF)
        if self.bar_64[idx]:
            self.write(PCIR_BAR0 + 4 * idx + 4, 4, address >> 32)

    def _bar_of(self, reg: int) -> tuple[int, bool] | None:
        """(BAR index, high half) of a BAR register offset, or None if unimplemented."""
        idx = (reg - PCIR_BAR0) // 4
        if self.bar_sizes[idx]:
            return idx, False
        if idx > 0 and self.bar_64[idx - 1] and self.bar_sizes[idx - 1]:
            return idx - 1, True
        return None

    # ----------------------------------------------------------- capabilities
    def add_capability(self, body: bytes) -> int:
        """Append a capability (its ID first; the next pointer is filled in here)."""
        off = self._cap_end
        size = (len(body) + 3) & ~3
        if off + size > 256:
            raise ValueError("configuration space full")
        self.data[off : off + len(body)] = body
        self.data[off + 1] = 0
        if self._last_cap:
            self.data[self._last_cap + 1] = off
        else:
            self.put(PCIR_CAP_PTR, 1, off)
            self.put(PCIR_STATUS, 2, self.get(PCIR_STATUS, 2) | PCIM_STATUS_CAPPRESENT)
        self._last_cap, self._cap_end = off, off + size
        return off

    def add_msi(self) -> None:
        """One message, 64-bit address (PCI 3.0 §6.8.1): control, address lo/hi, data."""
        self.msi_cap = self.add_capability(struct.pack("<BBHIIH", PCIY_MSI, 0,
                                                       PCIM_MSICTRL_64BIT, 0, 0, 0))  # fmt: skip

    def msi_message(self) -> tuple[int, int] | None:
        """The (address, data) the function sends, or None while MSI is disabled."""
        c = self.msi_cap
        if not c or not self.get(c + 2, 2) & PCIM_MSICTRL_MSI_ENABLE:
            return None
        return self.get(c + 4, 8), self.get(c + 12, 2)

    # ---------------------------------------------------------- config cycles
    def read(self, reg: int, size: int) -> int:
        if size not in (1, 2, 4) or reg % size or reg + size > 256:
            return (1 << (8 * size)) - 1
        return self.get(reg, size)

    def write(self, reg: int, size: int, value: int) -> None:
        if size not in (1, 2, 4) or reg % size or reg + size > 256:
            return
        value &= (1 << (8 * size)) - 1
        if PCIR_BAR0 <= reg < PCIR_BAR0 + 4 * NUM_BARS:
            if size == 4:
                self._write_bar(reg, value)
            return
        if reg < PCIR_STATUS + 2 and reg + size > PCIR_COMMAND:
            old = self.get(PCIR_COMMAND, 2)
            for i in range(size):  # the command register's bytes only; status is read-only
                if PCIR_COMMAND <= reg + i < PCIR_COMMAND + 2:
                    self.data[reg + i] = (value >> (8 * i)) & 0xFF
            new = self.get(PCIR_COMMAND, 2)
            if new != old and self.on_command:
                self.on_command(old, new)
            return
        if reg == PCIR_INTLINE and size == 1:
            self.data[reg] = value  # scratch for software (PCI 3.0 §6.2.4)
            return
        c = self.msi_cap
        if c and c + 2 <= reg < c + 14:
            self._write_msi(reg, size, value)
        # identity, header type, capability IDs and pointers: read-only

    def _write_bar(self, reg: int, value: int) -> None:
        found = self._bar_of(reg)
        if found is None:
            return
        idx, high = found
        size = self.bar_sizes[idx]
        if high:
            mask = (~(size - 1) >> 32) & 0xFFFF_FFFF
            self.put(reg, 4, value & mask)
        else:
            low = PCIM_BAR_MEM_64 if self.bar_64[idx] else 0
            self.put(reg, 4, (value & ~(size - 1) & 0xFFFF_FFF0) | low)
        if self.on_bar:
            self.on_bar(idx)

    def _write_msi(self, reg: int, size: int, value: int) -> None:
        c = self.msi_cap
        for i in range(size):
            off = reg + i - c
            byte = (value >> (8 * i)) & 0xFF
            if off == 2:  # control low byte: enable and MME (one message: MME stays 0)
                byte = (self.data[c + 2] & ~0x01) | (byte & 0x01)
            elif off == 3:
                continue  # control high byte: reserved
            elif off == 4:
                byte &= 0xFC  # the address is dword aligned
            self.data[reg + i] = byte
        if self.on_msi:
            self.on_msi()
