"""The 8254 PIT's channel 2 and port 0x61, the pair Linux times the TSC against.

Linux (arch/x86/kernel/tsc.c: pit_calibrate_tsc, quick_pit_calibrate) sets port 0x61's gate bit
and clears the speaker bit, programs channel 2 for mode 0 with a count (control word 0xB0, then
LSB and MSB to port 0x42), and either polls port 0x61 bit 5 (OUT2) until the count runs out or
reads the counter's MSB as it falls.

Channel 2 here follows the Intel 8254 data sheet, on the simulated timeline at 1.193182 MHz:
a count written is loaded on the next clock edge, then each edge with GATE high decrements it;
in mode 0 OUT goes high when it reaches zero and stays high while the counter wraps on. Modes 1
and 5 start on a GATE rising edge; modes 2 and 3 stop while GATE is low (OUT high) and restart
on its rising edge; mode 4 pulses OUT low for one clock. Counter-latch and read-back commands
and LSB/MSB read sequences are modelled; BCD counting is not (the count is binary).

Port 0x61 (the NMI status and control register, Intel PCH data sheets; the PC/AT "port B"):
bit 0 GATE2 and bit 1 speaker data are read/write, as are the two NMI enables in bits 2-3;
bit 4 toggles with each DRAM refresh request (every 18 PIT clocks, about 15 us, the period PC
firmware gives channel 1); bit 5 is OUT2; bits 6-7 (NMI sources) read 0.

acrn-dm's pit.c serves port 0x61 reads with OUT2 alone, ignores writes ("GATE2 control is not
emulated") and counts channel 2 from the moment its count is written; this model adds the gate
and the refresh bit. Channels 0 and 1 stay with the device model's existing PIT: give it as
`others` and every access that is not channel 2's is passed to it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

PIT_HZ = 1_193_182
TIMER_CNTR0, TIMER_CNTR1, TIMER_CNTR2, TIMER_MODE = 0x40, 0x41, 0x42, 0x43
NMISC_PORT = 0x61
REFRESH_TICKS = 18

# Port 0x61 bits
NMISC_GATE2, NMISC_SPKR, NMISC_WRITABLE = 0x01, 0x02, 0x0F
NMISC_REFRESH, NMISC_OUT2 = 0x10, 0x20
# Read-back command and status bits (the 8254 data sheet; devicemodel/include/i8253reg.h)
TIMER_RB_LCTR, TIMER_RB_LSTATUS, TIMER_RB_CTR_2 = 0x20, 0x10, 0x08
TIMER_STS_OUT, TIMER_STS_NULLCNT = 0x80, 0x40


class PortDevice(Protocol):
    def pio(self, port: int, size: int, is_write: bool, value: int) -> int: ...


class PitChannel2:
    """Channel 2 of the 8254 and port 0x61. Register it for ports 0x40-0x43 (in place of the
    existing PIT, which it wraps as `others`) and for port 0x61."""

    def __init__(
        self, now: Callable[[], int], tsc_hz: int, others: PortDevice | None = None
    ) -> None:
        self.now = now
        self.tsc_hz = tsc_hz
        self.others = others  # the PIT that serves channels 0 and 1
        self.nmisc = 0  # port 0x61's writable bits
        self.mode = 0
        self.rw = 3
        self.count = 0x10000  # the count register, 0 meaning 0x10000
        self.written = False  # a count has been written since the control word
        self.loaded = False  # the count is in the counting element
        self.triggered = False  # modes 1 and 5: a gate edge started the count
        self.start = 0  # the clock edge that loaded the count
        self.acc = 0  # counting edges in (start, acc_tick]
        self.acc_tick = 0
        self.lsb_pending: int | None = None  # the LSB of a two-byte count, MSB to come
        self.latch: list[int] = []  # latched count bytes still to read
        self.status: int | None = None  # a latched status byte
        self.read_msb = False  # the LSB/MSB flip-flop for reads

    # ------------------------------------------------------------ time
    def tick(self) -> int:
        """The PIT clock edges since simulated time 0 (exact integer arithmetic)."""
        return self.now() * PIT_HZ // self.tsc_hz

    @property
    def gate(self) -> bool:
        return bool(self.nmisc & NMISC_GATE2)

    def _gated(self) -> bool:
        """Whether GATE high is what lets this mode count (1 and 5 are only triggered by it)."""
        return self.mode in (0, 2, 3, 4)

    def counted(self, t: int | None = None) -> int:
        """Decrementing clock edges since the count was loaded."""
        t = self.tick() if t is None else t
        if not self.loaded or t <= self.start:
            return 0
        running = self.gate or not self._gated()
        return self.acc + (max(0, t - self.acc_tick) if running else 0)

    def _load_at(self, edge: int) -> None:
        self.loaded, self.start, self.acc, self.acc_tick = True, edge, 0, edge

    # ------------------------------------------------------------ the counter
    def _n(self) -> int:
        return self.count or 0x10000

    def value(self, t: int | None = None) -> int:
        """The counting element, as a read or a latch sees it."""
        if not self.loaded:
            return self.count & 0xFFFF
        n, c = self._n(), self.counted(t)
        if self.mode == 2:
            return (n - c % n) & 0xFFFF
        if self.mode == 3:
            half = (n + 1) // 2
            phase = c % n
            if phase >= half:
                phase -= half
            return ((n & ~1) - 2 * phase) & 0xFFFF
        return (n - c) & 0xFFFF

    def out(self, t: int | None = None) -> bool:
        """OUT2."""
        mode = self.mode
        if not self.loaded:
            return mode != 0  # after a control word: low in mode 0, high in the others
        n, c = self._n(), self.counted(t)
        if mode == 0:
            return c >= n
        if mode == 1:
            return c >= n
        if mode == 2:
            return not self.gate or c % n != n - 1
        if mode == 3:
            return not self.gate or c % n < (n + 1) // 2
        return c != n  # modes 4 and 5: low for the one clock at terminal count

    def _set_gate(self, high: bool) -> None:
        if high == self.gate:
            return
        t = self.tick()
        if self.loaded and self._gated() and t > self.acc_tick:
            # edges up to now counted under the old gate level
            self.acc += (t - self.acc_tick) if self.gate else 0
            self.acc_tick = t
        if high and self.written and self.mode in (1, 2, 3, 5):
            # a rising edge (re)starts these modes: loaded on the next clock edge
            self.triggered = True
            self._load_at(t + 1)

    def _status_byte(self) -> int:
        null = self.written and (not self.loaded or self.tick() < self.start)
        return (
            (TIMER_STS_OUT if self.out() else 0)
            | (TIMER_STS_NULLCNT if (null or not self.written) else 0)
            | (self.rw << 4)
            | (self.mode << 1)
        )

    def _latch_count(self) -> None:
        if self.latch:
            return  # a latched count stays until it has been read
        v = self.value()
        self.latch = {1: [v & 0xFF], 2: [v >> 8]}.get(self.rw, [v & 0xFF, v >> 8])

    def _control(self, value: int) -> None:
        rw = (value >> 4) & 3
        if rw == 0:
            self._latch_count()
            return
        mode = (value >> 1) & 7
        self.mode = mode & 3 if mode >= 6 else mode  # 6 and 7 are 2 and 3
        self.rw = rw
        self.written = self.loaded = self.triggered = False
        self.lsb_pending = None
        self.latch = []
        self.status = None
        self.read_msb = False

    def _write_count(self, byte: int) -> None:
        if self.rw == 3 and self.lsb_pending is None:
            self.lsb_pending = byte
            if self.mode == 0:
                self.loaded = False  # the first byte stops the count and drops OUT
            return
        if self.rw == 3:
            self.count = self.lsb_pending | (byte << 8)
            self.lsb_pending = None
        elif self.rw == 1:
            self.count = byte
        else:
            self.count = byte << 8
        self.written = True
        self.read_msb = False
        if self.mode in (1, 5) and not self.triggered:
            return  # waits for a gate rising edge
        if self.mode in (1, 5) or self.mode in (2, 3) and not self.gate:
            self.loaded = False  # loaded by the next gate rising edge
            return
        self._load_at(self.tick() + 1)

    def _read_count(self) -> int:
        if self.status is not None:
            value, self.status = self.status, None
            return value
        if self.latch:
            return self.latch.pop(0)
        v = self.value()
        if self.rw == 1:
            return v & 0xFF
        if self.rw == 2:
            return v >> 8
        byte = (v >> 8) if self.read_msb else v & 0xFF
        self.read_msb = not self.read_msb
        return byte

    # ------------------------------------------------------------ ports
    def pio(self, port: int, size: int, is_write: bool, value: int) -> int:
        if port == NMISC_PORT:
            if is_write:
                self._set_gate(bool(value & NMISC_GATE2))
                self.nmisc = value & NMISC_WRITABLE
                return 0
            refresh = NMISC_REFRESH if (self.tick() // REFRESH_TICKS) & 1 else 0
            return self.nmisc | refresh | (NMISC_OUT2 if self.out() else 0)
        if port == TIMER_CNTR2:
            if is_write:
                self._write_count(value & 0xFF)
                return 0
            return self._read_count()
        if port == TIMER_MODE and is_write:
            select = (value >> 6) & 3
            if select == 2:
                self._control(value & 0xFF)
                return 0
            if select == 3 and value & TIMER_RB_CTR_2:  # read-back: the bits are active low
                if not value & TIMER_RB_LSTATUS and self.status is None:
                    self.status = self._status_byte()
                if not value & TIMER_RB_LCTR:
                    self._latch_count()
        if self.others is not None:
            return self.others.pio(port, size, is_write, value)
        return 0 if is_write else 0xFF
