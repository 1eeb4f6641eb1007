"""The machine's PCI devices and the paths they use: configuration space (mechanism 1 and a
direct bus/device/function form), their BARs in the physical MMIO window, and their DMA and
MSI writes, which go to whatever stands between a device and memory: the remapping hardware
that the layer above installs (`iommu`, the `Iommu` protocol), or, on a bare machine, nothing.

The machine knows nothing of a hypervisor: a device asks the platform to read or write memory
for its requester id and is told whether the access happened and how long the address
translation took; an MSI is a write to 0xFEEx_xxxx that the platform hands to the same
remapping hardware (VT-d spec §5.1: interrupt requests are memory writes to that range).

Physical BARs are placed by the platform at boot, as firmware does, in a window below 4 GiB
above host RAM (the PC's "PCI hole"): `MMIO_WINDOW_MIN` or the first 256 MiB boundary above
RAM, up to `MMIO_WINDOW_END`. The one DMA-remapping unit's register page is at `DRHD_BASE`.
A DMA that reaches no RAM (another device's BAR: peer-to-peer is not modelled) is dropped, as
a master abort: a write goes nowhere, a read completes with an error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from acrn_sim.sim import ConfigError
from acrn_sim.sim.hostmem import HostMemory
from acrn_sim.sim.pci import NUM_BARS, PCIM_CMD_BUSMASTEREN, PCIM_CMD_MEMEN, bdf_str, parse_bdf
from acrn_sim.sim.timeline import Timeline

MMIO_WINDOW_MIN = 0xC000_0000
MMIO_WINDOW_END = 0xFEC0_0000  # the IOAPIC's page and the chipset's fixed ranges follow
DRHD_BASE = 0xFED9_1000  # the remapping unit's 4 KiB of registers (chipset MMIO, not RAM)
MSI_BASE, MSI_END = 0xFEE0_0000, 0xFEF0_0000  # interrupt-message address range (VT-d §5.1)


class Iommu(Protocol):
    """What stands between the devices and memory (the layer above installs it)."""

    def translate(
        self, sid: int, addr: int, length: int, write: bool
    ) -> tuple[list[tuple[int, int]] | None, int]:
        """The host ranges [(hpa, length)] that [addr, addr+length) of requester `sid` reach,
        or None if the request is blocked (it does not happen); and the cycles it took."""

    def interrupt(self, sid: int, addr: int, data: int) -> int:
        """An interrupt message (a write to MSI_BASE..MSI_END) from `sid`; its cycles."""


class PciDevice(Protocol):
    """What the platform needs of a device (sim/devices/dma_sensor.py is one)."""

    name: str
    config: object  # sim.pci.ConfigSpace

    def attach(self, platform: Platform, sid: int) -> None: ...

    def mmio_read(self, bar: int, offset: int, size: int, when: int) -> int: ...

    def mmio_write(self, bar: int, offset: int, size: int, value: int, when: int) -> None: ...

    def reset(self) -> None: ...


@dataclass
class PlatformConfig:
    """The board: its PCI devices ("BB:DD.F,KIND[,KEY=VALUE...]", e.g. "00:1f.0,sensor") and
    whether its remapping unit can post interrupts (VT-d CAP_REG.PI)."""

    devices: list[str] = field(default_factory=list)
    posted_interrupts: bool = False


def device_kinds() -> dict[str, Callable[[str, dict[str, str]], PciDevice]]:
    from acrn_sim.sim.devices.dma_sensor import DmaSensor

    return {"sensor": DmaSensor.from_options}


def parse_device(spec: str) -> tuple[int, str, dict[str, str]]:
    """ "BB:DD.F,KIND[,KEY=VALUE...]" -> (requester id, kind, options), checked."""
    where = f"device {spec!r}"
    parts = [p.strip() for p in spec.split(",")]
    if len(parts) < 2 or not parts[1]:
        raise ConfigError(f"{where}: expected BB:DD.F,KIND[,KEY=VALUE...]")
    sid = parse_bdf(parts[0], where)
    kinds = device_kinds()
    if parts[1] not in kinds:
        raise ConfigError(f"{where}: unknown kind {parts[1]!r} (the model has: {', '.join(kinds)})")
    opts: dict[str, str] = {}
    for item in parts[2:]:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ConfigError(f"{where}: {item!r} is not KEY=VALUE")
        opts[key] = value
    return sid, parts[1], opts


def check_devices(specs: list[str]) -> None:
    """Every spec parses, builds, and no two share an address (before anything runs)."""
    seen: set[int] = set()
    for spec in specs:
        sid, kind, opts = parse_device(spec)
        if sid in seen:
            raise ConfigError(f"device {spec!r}: {bdf_str(sid)} is given twice")
        seen.add(sid)
        device_kinds()[kind](f"{kind}@{bdf_str(sid)}", opts)


class Platform:
    """The PCI hierarchy of the machine: devices by requester id, their physical BARs, and
    the DMA and interrupt paths."""

    def __init__(self, mem: HostMemory, env: Timeline, tsc_hz: int, config: PlatformConfig):
        self.mem = mem
        self.env = env
        self.tsc_hz = tsc_hz
        self.config = config
        self.devices: dict[int, PciDevice] = {}
        self.iommu: Iommu | None = None
        self.mmio_base = max(MMIO_WINDOW_MIN, (mem.size + (256 << 20) - 1) & ~((256 << 20) - 1))
        self._next_bar = self.mmio_base
        self.cf8 = 0  # configuration mechanism 1's address latch
        self.unclaimed_dma = 0  # DMAs that reached no RAM (dropped; a read gets an error)
        for spec in config.devices:
            sid, kind, opts = parse_device(spec)
            if sid in self.devices:
                raise ConfigError(f"device {spec!r}: {bdf_str(sid)} is given twice")
            self.add(sid, device_kinds()[kind](f"{kind}@{bdf_str(sid)}", opts))

    def add(self, sid: int, dev: PciDevice) -> None:
        """Plug a device in and place its BARs (firmware's enumeration at power-on)."""
        self.devices[sid] = dev
        cfg = dev.config
        for i in range(NUM_BARS):
            size = cfg.bar_sizes[i]
            if not size:
                continue
            addr = (self._next_bar + size - 1) & ~(size - 1)
            if addr + size > MMIO_WINDOW_END:
                raise ConfigError(f"{dev.name}: no room for BAR{i} in the PCI MMIO window")
            cfg.set_bar_address(i, addr)
            self._next_bar = addr + size
        dev.attach(self, sid)

    def bars(self, sid: int) -> list[tuple[int, int, int]]:
        """(BAR index, physical address, size) of every implemented BAR of a device."""
        cfg = self.devices[sid].config
        return [(i, cfg.bar_address(i), cfg.bar_sizes[i]) for i in range(NUM_BARS)
                if cfg.bar_sizes[i]]  # fmt: skip

    # ------------------------------------------------------- configuration space
    def cfg_read(self, sid: int, reg: int, size: int) -> int:
        """A configuration read; no device answers with all ones (master abort)."""
        dev = self.devices.get(sid)
        return dev.config.read(reg, size) if dev else (1 << (8 * size)) - 1

    def cfg_write(self, sid: int, reg: int, size: int, value: int) -> None:
        dev = self.devices.get(sid)
        if dev:
            dev.config.write(reg, size, value)

    def pio_read(self, port: int, size: int) -> int:
        """Configuration mechanism 1 (PCI 3.0 §3.2.2.3.2) on the port bus: 0xCF8 is the
        address latch, 0xCFC-0xCFF reach the selected dword's bytes."""
        if port == 0xCF8 and size == 4:
            return self.cf8
        if 0xCFC <= port <= 0xCFF and self.cf8 & 0x8000_0000:
            reg = (self.cf8 & 0xFC) + (port - 0xCFC)
            return self.cfg_read((self.cf8 >> 8) & 0xFFFF, reg, size)
        return (1 << (8 * size)) - 1

    def pio_write(self, port: int, size: int, value: int) -> None:
        if port == 0xCF8 and size == 4:
            self.cf8 = value & 0x80FF_FFFC
        elif 0xCFC <= port <= 0xCFF and self.cf8 & 0x8000_0000:
            reg = (self.cf8 & 0xFC) + (port - 0xCFC)
            self.cfg_write((self.cf8 >> 8) & 0xFFFF, reg, size, value)

    # ------------------------------------------------------------------ MMIO
    def mmio_target(self, hpa: int) -> tuple[PciDevice, int, int] | None:
        """(device, BAR, offset) that decodes `hpa`: memory decoding on and inside a BAR."""
        for dev in self.devices.values():
            cfg = dev.config
            if not cfg.get(0x04, 2) & PCIM_CMD_MEMEN:
                continue
            for i in range(NUM_BARS):
                size = cfg.bar_sizes[i]
                base = cfg.bar_address(i) if size else 0
                if size and base <= hpa < base + size:
                    return dev, i, hpa - base
        return None

    def mmio_read(self, hpa: int, size: int, when: int) -> int:
        """A read at physical `hpa` at cycle `when`; nothing decoding it reads all ones."""
        t = self.mmio_target(hpa)
        return t[0].mmio_read(t[1], t[2], size, when) if t else (1 << (8 * size)) - 1

    def mmio_write(self, hpa: int, size: int, value: int, when: int) -> None:
        t = self.mmio_target(hpa)
        if t:
            t[0].mmio_write(t[1], t[2], size, value, when)

    # ----------------------------------------------------- what devices call
    def bus_master(self, sid: int) -> bool:
        dev = self.devices.get(sid)
        return bool(dev and dev.config.get(0x04, 2) & PCIM_CMD_BUSMASTEREN)

    def dma_read(self, sid: int, addr: int, length: int) -> tuple[bytes | None, int]:
        """(the bytes, or None if the read completed with an error; translation cycles)."""
        ranges, cycles = self._translate(sid, addr, length, False)
        if ranges is None:
            return None, cycles
        return b"".join(self.mem.read(hpa, n) for hpa, n in ranges), cycles

    def dma_write(self, sid: int, addr: int, data: bytes) -> tuple[bool, int]:
        """(whether the write reached memory, translation cycles). A blocked write simply does
        not happen: a posted write has no completion to tell the device."""
        ranges, cycles = self._translate(sid, addr, len(data), True)
        if ranges is None:
            return False, cycles
        done = 0
        for hpa, n in ranges:
            self.mem.write(hpa, data[done : done + n])
            done += n
        return True, cycles

    def msi(self, sid: int, addr: int, data: int) -> int:
        """An interrupt message from a device; the cycles its remapping took."""
        if self.iommu is None:
            return 0  # a bare machine with no CPU side modelled: the message goes nowhere
        return self.iommu.interrupt(sid, addr, data)

    def _translate(self, sid: int, addr: int, length: int, write: bool):
        if self.iommu is not None:
            ranges, cycles = self.iommu.translate(sid, addr, length, write)
        elif MSI_BASE <= addr < MSI_END:
            return None, 0  # a DMA into the interrupt range is not memory (VT-d §5.1)
        else:
            ranges, cycles = [(addr, length)], 0
        if ranges is not None and any(h < 0 or h + n > self.mem.size for h, n in ranges):
            # not RAM: another device's BAR (peer-to-peer, not modelled) or nothing at all
            self.unclaimed_dma += 1
            return None, cycles
        return ranges, cycles
