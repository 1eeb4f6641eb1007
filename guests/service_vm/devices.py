"""The device model's platform devices for a User VM (ACRN devicemodel/hw/): the UART at COM1
(uart_core.c; IRQ 4 through HC_SET_IRQLINE), the isa-debug-exit port 0xF4, fw_cfg, the RTC/CMOS
(hw/platform/rtc.c) and the PCI host bridge at 00:00.0 (hw/pci/hostbridge.c)."""

from __future__ import annotations

import struct

from sim.devices.fw_cfg import FwCfg
from sim.devices.uart16550 import Uart16550

COM1_BASE, COM1_IRQ = 0x3F8, 4
RTC_BASE, RTC_IRQ = 0x70, 8
DEBUG_EXIT_PORT = 0xF4
# The simulated wall clock starts here (a fixed date: runs must be reproducible).
RTC_EPOCH = (2026, 1, 1, 0, 0, 0)


class UartDevice:
    def __init__(self, dm) -> None:
        self.dm = dm
        self.uart = Uart16550(on_tx=lambda b: dm.console(bytes([b])), on_irq=self._irq)

    def _irq(self, level: bool) -> None:
        # The line change becomes a HC_SET_IRQLINE after this emulation step (vm_loop).
        self.dm.pending_irqlines.append((COM1_IRQ, level))

    def pio(self, port: int, size: int, is_write: bool, value: int) -> int:
        if is_write:
            self.uart.write(port - COM1_BASE, value)
            return 0
        return self.uart.read(port - COM1_BASE)


class DebugExit:
    def __init__(self, dm) -> None:
        self.dm = dm

    def pio(self, port: int, size: int, is_write: bool, value: int) -> int:
        if is_write:
            self.dm.request_poweroff(value & 0xFF)
        return 0xFF


class FwCfgDevice:
    def __init__(self, dm, ram_size: int, cpus: int) -> None:
        self.fw = FwCfg(ram_size, cpus)

    def pio(self, port: int, size: int, is_write: bool, value: int) -> int:
        if is_write:
            self.fw.pio_write(port - 0x510, size, value)
            return 0
        return self.fw.pio_read(port - 0x510, size)


def _bcd(v: int) -> int:
    return ((v // 10) << 4) | (v % 10)


class Rtc:
    """MC146818 registers: index at 0x70, data at 0x71. Time comes from simulated time
    (RTC_EPOCH + elapsed), in BCD, 24-hour mode; CMOS RAM 0x0E-0x7F is plain storage."""

    def __init__(self, dm) -> None:
        self.dm = dm
        self.index = 0
        self.ram = bytearray(128)
        self.ram[0x0A], self.ram[0x0B], self.ram[0x0D] = 0x26, 0x02, 0x80  # 24h, BCD, valid

    def _now(self) -> tuple[int, int, int, int, int, int]:
        secs = self.dm.kernel.now() // self.dm.kernel.profile.tsc_hz
        y, mo, d, h, mi, s = RTC_EPOCH
        s += secs
        mi, s = mi + s // 60, s % 60
        h, mi = h + mi // 60, mi % 60
        d, h = d + h // 24, h % 24  # runs last minutes, not months: days simply add up
        return y, mo, d, h, mi, s

    def pio(self, port: int, size: int, is_write: bool, value: int) -> int:
        if port == RTC_BASE:
            if is_write:
                self.index = value & 0x7F
            return 0xFF
        if is_write:
            if self.index >= 0x0A:
                self.ram[self.index] = value & 0xFF
            return 0
        y, mo, d, h, mi, s = self._now()
        clock = {0x00: s, 0x02: mi, 0x04: h, 0x07: d, 0x08: mo, 0x09: y % 100, 0x32: y // 100}
        if self.index in clock:
            return _bcd(clock[self.index])
        return self.ram[self.index]


class HostBridge:
    """PCI host bridge 00:00.0 (ACRN hw/pci/hostbridge.c presents an Intel host bridge)."""

    def __init__(self) -> None:
        self.config = bytearray(256)
        struct.pack_into("<HHHH", self.config, 0, 0x8086, 0x1237, 0x0006, 0x0000)
        self.config[0x08] = 0x02  # revision
        self.config[0x0A], self.config[0x0B] = 0x00, 0x06  # class: bridge, host bridge
        self.config[0x0E] = 0x00  # header type 0

    def cfg(self, reg: int, size: int, is_write: bool, value: int) -> int:
        if reg + size > len(self.config):
            return 0xFFFF_FFFF >> (32 - 8 * size)
        if is_write:
            if reg >= 0x10:  # identity registers are read-only
                self.config[reg : reg + size] = value.to_bytes(size, "little")
            return 0
        return int.from_bytes(self.config[reg : reg + size], "little")
