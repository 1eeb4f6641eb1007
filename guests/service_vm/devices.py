"""The device model's platform devices for a User VM (ACRN devicemodel/hw/): the UART at COM1
(uart_core.c; IRQ 4 through HC_SET_IRQLINE), the isa-debug-exit port 0xF4, fw_cfg, the RTC/CMOS
with its periodic interrupt (hw/platform/rtc.c, IRQ 8), the 8254 PIT (hw/platform/pit.c, IRQ 0
on GSI 2), a storage stand-in at 0x1F0 whose every access costs a block request's work, and the
PCI host bridge at 00:00.0 (hw/pci/hostbridge.c).

Timer interrupts come from the DM's timer thread: a kernel timer fires, the thread makes the
HC_SET_IRQLINE hypercall (ACRN's acrn_timer and vm_set_gsi_irq)."""

from __future__ import annotations

import struct

from acrn_sim.sim.devices.fw_cfg import FwCfg
from acrn_sim.sim.devices.uart16550 import Uart16550

COM1_BASE, COM1_IRQ = 0x3F8, 4
RTC_BASE, RTC_IRQ = 0x70, 8
PIT_BASE, PIT_IOAPIC_IRQ, PIT_HZ = 0x40, 2, 1_193_182  # the PIT's IRQ 0 is GSI 2 (ACRN pit.c)
STORAGE_BASE = 0x1F0
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


class ResetControl:
    """The reset control register at 0xCF9: SYS_RST (bit 1) with RST_CPU (bit 2) asks for a
    reset, which the device model carries out with HC_PAUSE_VM and HC_RESET_VM."""

    PORT = 0xCF9

    def __init__(self, dm) -> None:
        self.dm = dm
        self.value = 0

    def pio(self, port: int, size: int, is_write: bool, value: int) -> int:
        if not is_write:
            return self.value
        self.value = value & 0x0E
        if value & 0x04:
            self.dm.request_reset()
        return 0


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
    (RTC_EPOCH + elapsed), in BCD, 24-hour mode; CMOS RAM 0x0E-0x7F is plain storage. The
    periodic interrupt (register A rate, register B PIE) raises IRQ 8; reading register C
    acknowledges it. Update-ended and alarm interrupts are not modelled."""

    def __init__(self, dm) -> None:
        self.dm = dm
        self.index = 0
        self.ram = bytearray(128)
        self.ram[0x0A], self.ram[0x0B], self.ram[0x0D] = 0x26, 0x02, 0x80  # 24h, BCD, valid
        self._gen = 0  # the periodic timer's generation (a rate change restarts it)

    def _wall_clock(self) -> tuple[int, int, int, int, int, int]:
        secs = self.dm.kernel.now() // self.dm.kernel.profile.tsc_hz
        y, mo, d, h, mi, s = RTC_EPOCH
        s += secs
        mi, s = mi + s // 60, s % 60
        h, mi = h + mi // 60, mi % 60
        d, h = d + h // 24, h % 24  # runs last minutes, not months: days simply add up
        return y, mo, d, h, mi, s

    def _periodic_cycles(self) -> int | None:
        """Register A's rate select: RS 1, 2 -> 256, 128 Hz; RS 3..15 -> 32768 >> (RS - 1)
        Hz; 0: off. Register B bit 6 (PIE) enables the interrupt."""
        rs = self.ram[0x0A] & 0xF
        if not rs or not self.ram[0x0B] & 0x40:
            return None
        hz = {1: 256, 2: 128}.get(rs, 32768 >> (rs - 1))
        return self.dm.kernel.profile.tsc_hz // hz

    def _rearm(self) -> None:
        self._gen += 1
        period = self._periodic_cycles()
        if period is None:
            return
        gen = self._gen

        def tick() -> None:
            if gen != self._gen:
                return
            self.ram[0x0C] |= 0xC0  # IRQF | PF
            self.dm.timer_irq(RTC_IRQ)
            self.dm.kernel.add_timer(self.dm.kernel.now() + period, tick)

        self.dm.kernel.add_timer(self.dm.kernel.now() + period, tick)

    def pio(self, port: int, size: int, is_write: bool, value: int) -> int:
        if port == RTC_BASE:
            if is_write:
                self.index = value & 0x7F
            return 0xFF
        if is_write:
            if self.index >= 0x0A:
                old = self._periodic_cycles()
                self.ram[self.index] = value & 0xFF
                if self.index in (0x0A, 0x0B) and self._periodic_cycles() != old:
                    self._rearm()
            return 0
        if self.index == 0x0C:  # reading register C acknowledges the interrupt
            value, self.ram[0x0C] = self.ram[0x0C], 0
            return value
        y, mo, d, h, mi, s = self._wall_clock()
        clock = {0x00: s, 0x02: mi, 0x04: h, 0x07: d, 0x08: mo, 0x09: y % 100, 0x32: y // 100}
        if self.index in clock:
            return _bcd(clock[self.index])
        return self.ram[self.index]


class Pit:
    """The 8254 PIT (ACRN devicemodel/hw/platform/pit.c), channel 0 driving IRQ 0: modes 0
    (interrupt on terminal count), 2 (rate generator) and 3 (square wave), LSB/MSB access,
    counter latch; counts at 1.193182 MHz on the simulated timeline. Channels 1 and 2 keep
    their registers but drive nothing (no speaker, no refresh)."""

    def __init__(self, dm) -> None:
        self.dm = dm
        self.mode = [0, 0, 0]
        self.rw = [3, 3, 3]
        self.count = [0x10000, 0x10000, 0x10000]
        self.start = [0, 0, 0]
        self.partial: list[int | None] = [None, None, None]  # LSB written, MSB to come
        self.latched: list[int | None] = [None, None, None]
        self.read_msb = [False, False, False]
        self._gen = 0

    def _cycles(self, ticks: int) -> int:
        return ticks * self.dm.kernel.profile.tsc_hz // PIT_HZ

    def _current(self, ch: int) -> int:
        elapsed = (
            (self.dm.kernel.now() - self.start[ch]) * PIT_HZ // (self.dm.kernel.profile.tsc_hz)
        )
        n = self.count[ch]
        if self.mode[ch] in (2, 3):
            return n - (elapsed % n)
        return (n - elapsed) & 0xFFFF

    def _load(self, ch: int, value: int) -> None:
        self.count[ch] = value or 0x10000
        self.start[ch] = self.dm.kernel.now()
        if ch != 0:
            return
        self._gen += 1
        gen, k = self._gen, self.dm.kernel
        period = self._cycles(self.count[0])

        def fire() -> None:
            if gen != self._gen:
                return
            self.dm.timer_irq(PIT_IOAPIC_IRQ)
            if self.mode[0] in (2, 3):
                k.add_timer(k.now() + period, fire)

        k.add_timer(k.now() + period, fire)

    def pio(self, port: int, size: int, is_write: bool, value: int) -> int:
        if port == PIT_BASE + 3:
            if is_write:
                ch = (value >> 6) & 3
                if ch == 3:
                    return 0  # read-back command: not modelled
                rw = (value >> 4) & 3
                if rw == 0:  # counter latch
                    self.latched[ch] = self._current(ch)
                else:
                    self.rw[ch], self.mode[ch] = rw, (value >> 1) & 7 & (3 if value & 4 else 7)
                    self.partial[ch] = None
                    self.read_msb[ch] = False
                    if ch == 0:
                        self._gen += 1  # programming the mode stops the counter
            return 0xFF
        ch = port - PIT_BASE
        if is_write:
            v = value & 0xFF
            if self.rw[ch] == 1:
                self._load(ch, v)
            elif self.rw[ch] == 2:
                self._load(ch, v << 8)
            elif self.partial[ch] is None:
                self.partial[ch] = v
            else:
                self._load(ch, self.partial[ch] | (v << 8))
                self.partial[ch] = None
            return 0
        cur = self.latched[ch] if self.latched[ch] is not None else self._current(ch)
        cur &= 0xFFFF
        if self.rw[ch] == 1:
            out, done = cur & 0xFF, True
        elif self.rw[ch] == 2:
            out, done = cur >> 8, True
        else:
            out = (cur >> 8) if self.read_msb[ch] else cur & 0xFF
            done = self.read_msb[ch]
            self.read_msb[ch] = not self.read_msb[ch]
        if done:
            self.latched[ch] = None
        return out


class Storage:
    """A stand-in for a block device's request path (virtio-blk's backend work in the DM):
    every access to ports 0x1F0-0x1F7 costs `dm_emulate_block` in the device model. Reads
    return a deterministic pattern; writes are accepted."""

    cost = "dm_emulate_block"

    def __init__(self) -> None:
        self.n = 0

    def pio(self, port: int, size: int, is_write: bool, value: int) -> int:
        self.n += 1
        return 0 if is_write else (self.n * 0x9E3779B1) & ((1 << (8 * size)) - 1)


PCIR_COMMAND, PCIR_BAR0 = 0x04, 0x10
PCIM_CMD_MEMEN = 0x2


class PciDevice:
    """Type-0 configuration space with memory BARs (ACRN devicemodel/hw/pci/core.c): BAR
    sizing (write all ones, read back the size mask), programming, and memory decoding through
    the command register. A BAR that is programmed with decoding on has its range registered
    with the device model (register_mem), and moved when it is reprogrammed."""

    def __init__(self, vendor: int, device: int, class_code: int, bar_sizes=()) -> None:
        self.config = bytearray(256)
        struct.pack_into("<HH", self.config, 0, vendor, device)
        self.config[0x09:0x0C] = class_code.to_bytes(3, "little")  # prog-if, subclass, class
        self.bar_sizes = list(bar_sizes)
        self.bar_base = [0] * len(self.bar_sizes)
        self.on_bar_change = None  # (index, old base or None, new base or None)

    def mmio(self, offset: int, size: int, is_write: bool, value: int) -> int:
        raise NotImplementedError

    def _decoding(self) -> bool:
        return bool(self.config[PCIR_COMMAND] & PCIM_CMD_MEMEN)

    def _bar_index(self, reg: int) -> int | None:
        i = (reg - PCIR_BAR0) // 4
        return i if 0 <= i < len(self.bar_sizes) and reg % 4 == 0 else None

    def cfg(self, reg: int, size: int, is_write: bool, value: int) -> int:
        if reg + size > len(self.config):
            return 0xFFFF_FFFF >> (32 - 8 * size)
        if not is_write:
            return int.from_bytes(self.config[reg : reg + size], "little")
        i = self._bar_index(reg) if size == 4 else None
        if i is not None:
            mapped_before = self._decoding() and self.bar_base[i]
            old = self.bar_base[i]
            # the BAR's low bits are hard-wired: writing all ones reads back the size mask
            base = value & ~(self.bar_sizes[i] - 1) & 0xFFFF_FFF0
            struct.pack_into("<I", self.config, reg, base)
            self.bar_base[i] = base if value != 0xFFFF_FFFF else 0
            self._remap(i, old if mapped_before else None)
            return 0
        if reg < PCIR_BAR0 and reg not in (PCIR_COMMAND, PCIR_COMMAND + 1):
            return 0  # identity and status registers are read-only here
        before = self._decoding()
        self.config[reg : reg + size] = value.to_bytes(size, "little")
        if before != self._decoding():
            for i in range(len(self.bar_sizes)):
                self._remap(i, self.bar_base[i] if before else None)
        return 0

    def _remap(self, i: int, old: int | None) -> None:
        new = self.bar_base[i] if self._decoding() and self.bar_base[i] else None
        if old != new and self.on_bar_change:
            self.on_bar_change(i, old, new)


class HostBridge(PciDevice):
    """PCI host bridge 00:00.0 (ACRN hw/pci/hostbridge.c presents an Intel host bridge; the
    i440FX ID here is a simplification)."""

    def __init__(self) -> None:
        super().__init__(0x8086, 0x1237, 0x060000)
        struct.pack_into("<H", self.config, 0x06, 0x0000)
        self.config[0x08] = 0x02  # revision


class MmioTestDevice(PciDevice):
    """An MMIO test device for guests (not an ACRN device): BAR0 is 4 KiB of registers.
    Offset 0 reads the signature "MMIO"; every other byte is plain read/write storage."""

    SIGNATURE = 0x4F494D4D  # b"MMIO" little-endian

    def __init__(self) -> None:
        super().__init__(0x8086, 0x8F00, 0xFF0000, bar_sizes=[0x1000])
        self.regs = bytearray(0x1000)
        struct.pack_into("<I", self.regs, 0, self.SIGNATURE)

    def mmio(self, offset: int, size: int, is_write: bool, value: int) -> int:
        if is_write:
            if offset >= 4:
                self.regs[offset : offset + size] = value.to_bytes(size, "little")
            return 0
        return int.from_bytes(self.regs[offset : offset + size], "little")
