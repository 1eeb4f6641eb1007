"""The DMA sensor: a data-acquisition PCI function with a descriptor ring, a DMA engine and MSI
(the machine's own device; no real part is modelled). It takes samples and writes them into
memory buffers the driver describes, then raises an interrupt, on its own timeline.

PCI identity: vendor 0x1234, device 0xD5A0 (the vendor ID QEMU's own test devices use, not a
real vendor's), class 0x118000 (data acquisition controller, "other"; PCI Code and ID
Assignment Specification). BAR0: 4 KiB of 32-bit memory-mapped registers. One MSI message
(64-bit address). No INTx (interrupt pin 0).

Registers (BAR0, 32-bit; an 8-byte access is two 4-byte ones):

    0x00 ID         RO   0x534E5344 ("DSNS")
    0x04 VERSION    RO   0x00010000
    0x08 CTRL       RW   bit 0 EN, bit 1 STREAM (sample every PERIOD_NS), bit 2 IRQ_EN,
                         bit 31 RESET (self-clearing: stop, forget the ring, clear counters)
    0x0C STATUS     RO   bit 0 RUNNING, bit 1 DMA_ERR (a DMA read failed, or bus mastering
                         was off; sticky until RESET)
    0x10 INTR       RW1C bit 0 DONE (a descriptor completed), bit 1 ERROR
    0x18 RING_LO    RW   descriptor ring's bus address (32-byte aligned), low and high halves
    0x1C RING_HI    RW
    0x20 RING_SIZE  RW   number of descriptors (1-1024)
    0x24 HEAD       RO   descriptors the device has consumed (free-running count)
    0x28 TAIL       RW   doorbell: descriptors the driver has posted (free-running count);
                         descriptors HEAD..TAIL-1 (mod RING_SIZE) belong to the device
    0x2C PERIOD_NS  RW   stream mode's sample period
    0x30 SAMPLE_LEN RW   bytes per sample (1-4096)
    0x34 SEQ        RO   samples taken
    0x38 DROPS      RO   stream samples lost for want of a descriptor
    0x3C DMA_ERRS   RO   DMA reads that completed with an error

Descriptor (32 bytes at RING + 32 * (index mod RING_SIZE)):

    +0  u64 buffer bus address        (driver)
    +8  u32 buffer length             (driver)
    +12 u32 flags: bit 0 DONE, bit 1 ERR (device; the driver writes 0)
    +16 u64 timestamp: the cycle the sample was taken (device)
    +24 u32 sequence number (device)
    +28 u32 bytes written (device)

Sample bytes: byte i of sample n is (n * 7 + i) & 0xFF, so a driver can check them.

Request mode (STREAM = 0): each posted descriptor is a request: the device acquires a sample
(`latency_ns`), reads the descriptor, writes the sample and then the descriptor back by DMA,
and raises its MSI (if IRQ_EN, MSI enabled and bus mastering on). Stream mode: a sample every
PERIOD_NS into the next posted descriptor; none posted: the sample is dropped.

Timing: a DMA read waits `DMA_READ_NS` for its completion; a transfer takes its bytes over
`mbps`; the remapping hardware's translation time (the platform returns it) adds to both.
Options (device spec "BB:DD.F,sensor,KEY=VALUE"): latency_us (default 20), jitter_us (0: each
acquisition takes latency_us plus a uniform share of jitter_us, drawn in order from a PRNG seeded
by `seed`, so that every model of the same sensor sees the same sequence), seed (0),
period_us (100), mbps (2000).
"""

from __future__ import annotations

import random
import struct

from acrn_sim.sim import ConfigError
from acrn_sim.sim.pci import ConfigSpace

VENDOR, DEVICE, CLASS = 0x1234, 0xD5A0, 0x118000
REG_ID, REG_VERSION, REG_CTRL, REG_STATUS, REG_INTR = 0x00, 0x04, 0x08, 0x0C, 0x10
REG_RING_LO, REG_RING_HI, REG_RING_SIZE, REG_HEAD, REG_TAIL = 0x18, 0x1C, 0x20, 0x24, 0x28
REG_PERIOD, REG_SAMPLE_LEN, REG_SEQ, REG_DROPS, REG_DMA_ERRS = 0x2C, 0x30, 0x34, 0x38, 0x3C
ID_VALUE, VERSION_VALUE = 0x534E5344, 0x00010000
CTRL_EN, CTRL_STREAM, CTRL_IRQ_EN, CTRL_RESET = 0x1, 0x2, 0x4, 0x8000_0000
STATUS_RUNNING, STATUS_DMA_ERR = 0x1, 0x2
INTR_DONE, INTR_ERROR = 0x1, 0x2
DESC_SIZE, DESC_DONE, DESC_ERR = 32, 0x1, 0x2
MAX_RING, MAX_SAMPLE = 1024, 4096
BAR_SIZE = 0x1000
DMA_READ_NS = 500  # a DMA read's completion latency across the link (estimate)
DESC = struct.Struct("<QIIQII")  # addr, len, flags, timestamp, seq, written


def sample_bytes(seq: int, n: int) -> bytes:
    base = seq * 7
    return bytes((base + i) & 0xFF for i in range(n))


def _number(opts: dict[str, str], key: str, default: float, lo: float, hi: float,
            where: str) -> float:  # fmt: skip
    raw = opts.pop(key, None)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{where}: {key}={raw}: expected a number") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{where}: {key}={raw} is out of range ({lo:g} to {hi:g})")
    return value


class Acquisition:
    """The time each sample takes: the latency plus a uniform share of the jitter, drawn in
    order from a PRNG seeded by `seed` (the same sequence for every model of the sensor)."""

    def __init__(self, latency_ns: int, jitter_ns: int = 0, seed: int = 0) -> None:
        self.latency_ns, self.jitter_ns, self.seed = latency_ns, jitter_ns, seed
        self.rng = random.Random(f"dma-sensor:{seed}")

    def next_ns(self) -> int:
        return self.latency_ns + (self.rng.randrange(self.jitter_ns + 1) if self.jitter_ns else 0)


def acquisition_options(opts: dict[str, str], where: str) -> Acquisition:
    """latency_us, jitter_us and seed, taken out of `opts` and checked."""
    latency = _number(opts, "latency_us", 20, 0, 1_000_000, where)
    jitter = _number(opts, "jitter_us", 0, 0, 1_000_000, where)
    seed = _number(opts, "seed", 0, 0, 2**31, where)
    return Acquisition(int(latency * 1000), int(jitter * 1000), int(seed))


class DmaSensor:
    def __init__(self, name: str, latency_ns: int = 20_000, period_ns: int = 100_000,
                 mbps: int = 2000, acquisition: Acquisition | None = None) -> None:  # fmt: skip
        self.name = name
        self.acquisition = acquisition or Acquisition(latency_ns)
        self.default_period_ns = period_ns
        self.mbps = mbps
        self.config = ConfigSpace()
        self.config.set_ids(VENDOR, DEVICE, CLASS, revision=1, subvendor=VENDOR, subdevice=1)
        self.config.add_mem_bar(0, BAR_SIZE)
        self.config.add_msi()
        self.platform = None
        self.sid = 0
        self._wake = None
        self._epoch = 0
        # what the device did, for the statistics (`stats`)
        self.counts = {"requests": 0, "samples": 0, "drops": 0, "dma_errors": 0,
                       "msis": 0, "dma_bytes": 0, "resets": 0}  # fmt: skip
        self._clear()

    @classmethod
    def from_options(cls, name: str, opts: dict[str, str]) -> DmaSensor:
        opts = dict(opts)
        where = f"device {name}"
        acq = acquisition_options(opts, where)
        period = _number(opts, "period_us", 100, 1, 1_000_000, where)
        mbps = _number(opts, "mbps", 2000, 1, 100_000, where)
        if opts:
            raise ConfigError(f"{where}: unknown option {sorted(opts)[0]!r} "
                              "(latency_us, jitter_us, seed, period_us, mbps)")  # fmt: skip
        return cls(name, acq.latency_ns, int(period * 1000), int(mbps), acq)

    def _clear(self) -> None:
        self.ctrl = self.status = self.intr = 0
        self.ring = self.ring_size = self.head = self.tail = 0
        self.period_ns = self.default_period_ns
        self.sample_len = 64
        self.seq = self.drops = self.dma_errs = 0

    # -------------------------------------------------------------- lifetime
    def attach(self, platform, sid: int) -> None:
        self.platform = platform
        self.sid = sid
        self.env = platform.env
        self.hz = platform.tsc_hz

    def reset(self) -> None:
        """Function-level reset: registers to their power-on values; a request or stream in
        progress is abandoned (its DMA does not happen). Configuration space is the
        configuration's owner's business and stays."""
        self._epoch += 1
        self.counts["resets"] += 1
        self._clear()
        self._kick()

    def cycles(self, ns: int) -> int:
        return ns * self.hz // 1_000_000_000

    # ------------------------------------------------------------ registers
    def mmio_read(self, bar: int, offset: int, size: int, when: int) -> int:
        if size == 8:
            lo = self.mmio_read(bar, offset, 4, when)
            return lo | self.mmio_read(bar, offset + 4, 4, when) << 32
        if size != 4 or offset & 3:
            return 0
        return {
            REG_ID: ID_VALUE, REG_VERSION: VERSION_VALUE, REG_CTRL: self.ctrl,
            REG_STATUS: self.status | (STATUS_RUNNING if self.ctrl & CTRL_EN else 0),
            REG_INTR: self.intr, REG_RING_LO: self.ring & 0xFFFF_FFFF,
            REG_RING_HI: self.ring >> 32, REG_RING_SIZE: self.ring_size,
            REG_HEAD: self.head & 0xFFFF_FFFF, REG_TAIL: self.tail & 0xFFFF_FFFF,
            REG_PERIOD: self.period_ns, REG_SAMPLE_LEN: self.sample_len, REG_SEQ: self.seq,
            REG_DROPS: self.drops, REG_DMA_ERRS: self.dma_errs,
        }.get(offset, 0)  # fmt: skip

    def mmio_write(self, bar: int, offset: int, size: int, value: int, when: int) -> None:
        """A register write at cycle `when` (the guest's slice may run ahead of the clock:
        the device acts on it at that cycle)."""
        if size == 8:
            self.mmio_write(bar, offset, 4, value & 0xFFFF_FFFF, when)
            self.mmio_write(bar, offset + 4, 4, value >> 32, when)
            return
        if size != 4 or offset & 3:
            return
        value &= 0xFFFF_FFFF
        if offset == REG_CTRL:
            if value & CTRL_RESET:
                self.reset()
                return
            self._set_ctrl(value, when)
        elif offset == REG_INTR:
            self.intr &= ~value
        elif offset == REG_RING_LO:
            self.ring = (self.ring & ~0xFFFF_FFFF) | (value & ~(DESC_SIZE - 1))
        elif offset == REG_RING_HI:
            self.ring = (self.ring & 0xFFFF_FFFF) | value << 32
        elif offset == REG_RING_SIZE:
            self.ring_size = min(max(value, 1), MAX_RING)
        elif offset == REG_TAIL:
            self._at(when, lambda: self._set_tail(value))
        elif offset == REG_PERIOD:
            self.period_ns = max(value, 1000)
        elif offset == REG_SAMPLE_LEN:
            self.sample_len = min(max(value, 1), MAX_SAMPLE)

    def _at(self, when: int, fn) -> None:
        delay = when - self.env.now
        if delay <= 0:
            fn()
        else:
            self.env.call_later(delay, lambda _e: fn())

    def _set_ctrl(self, value: int, when: int) -> None:
        """The register takes the value now; a new mode starts its engine at `when` (the
        old loop ends at its next step)."""
        was = self.ctrl
        self.ctrl = value & (CTRL_EN | CTRL_STREAM | CTRL_IRQ_EN)
        if (was ^ self.ctrl) & (CTRL_EN | CTRL_STREAM):
            self._epoch += 1
            if self.ctrl & CTRL_EN:
                epoch = self._epoch
                self._at(when, lambda: self._start(epoch))

    def _start(self, epoch: int) -> None:
        if epoch == self._epoch:
            self.env.process(self._stream() if self.ctrl & CTRL_STREAM else self._serve())

    def _set_tail(self, value: int) -> None:
        self.tail = value
        self._kick()

    def _kick(self) -> None:
        ev, self._wake = self._wake, None
        if ev is not None:
            self.env.wake(ev)

    def _posted(self) -> bool:
        return self.ring_size > 0 and (self.tail - self.head) & 0xFFFF_FFFF != 0

    # -------------------------------------------------------- the engine
    def _serve(self):
        """Request mode: one posted descriptor after the other."""
        epoch = self._epoch
        while epoch == self._epoch:
            if not self._posted():
                self._wake = self.env.event()
                yield self._wake
                continue
            self.counts["requests"] += 1
            yield from self.env.hold(self.cycles(self.acquisition.next_ns()))  # acquisition
            if epoch != self._epoch:
                return
            yield from self._deliver(epoch, self.env.now)

    def _stream(self):
        """Stream mode: a sample every PERIOD_NS, into the next posted descriptor."""
        epoch = self._epoch
        due = self.env.now
        while epoch == self._epoch:
            due += self.cycles(self.period_ns)  # on a fixed grid: a sample's DMA does not drift it
            yield from self.env.hold(max(0, due - self.env.now))
            if epoch != self._epoch:
                return
            if not self._posted():
                self.drops += 1
                self.counts["drops"] += 1
                self.seq += 1
                continue
            yield from self._deliver(epoch, self.env.now)

    def _deliver(self, epoch: int, taken: int):
        """Read the descriptor, write the sample and the descriptor back, interrupt."""
        p = self.platform
        seq = self.seq
        self.seq += 1
        self.counts["samples"] += 1
        desc_addr = self.ring + DESC_SIZE * (self.head % self.ring_size)
        if not p.bus_master(self.sid):
            self._dma_error()
            return
        raw, cycles = p.dma_read(self.sid, desc_addr, DESC_SIZE)
        yield from self.env.hold(self.cycles(DMA_READ_NS) + cycles)
        if epoch != self._epoch:
            return
        if raw is None:
            self._dma_error()
            return
        addr, length, _flags, _ts, _seq, _n = DESC.unpack(raw)
        n = min(length, self.sample_len)
        flags = DESC_DONE if n == self.sample_len else DESC_DONE | DESC_ERR
        data = sample_bytes(seq, n)
        _ok, cycles = p.dma_write(self.sid, addr, data)
        self.counts["dma_bytes"] += n
        yield from self.env.hold(n * self.hz // (self.mbps * 1_000_000) + cycles)
        if epoch != self._epoch:
            return
        # the write-back: flags, timestamp, sequence and length (posted, in order)
        back = struct.pack("<IQII", flags, taken, seq, n)
        _ok, cycles = p.dma_write(self.sid, desc_addr + 12, back)
        self.head = (self.head + 1) & 0xFFFF_FFFF
        self.intr |= INTR_DONE
        yield from self.env.hold(cycles)
        self._interrupt()

    def _dma_error(self) -> None:
        self.status |= STATUS_DMA_ERR
        self.intr |= INTR_ERROR
        self.dma_errs += 1
        self.counts["dma_errors"] += 1
        self.head = (self.head + 1) & 0xFFFF_FFFF  # the descriptor is given up
        self._interrupt()

    def _interrupt(self) -> None:
        if not self.ctrl & CTRL_IRQ_EN or not self.platform.bus_master(self.sid):
            return
        msg = self.config.msi_message()
        if msg is None:
            return
        self.counts["msis"] += 1
        self.platform.msi(self.sid, msg[0], msg[1])

    def stats(self) -> dict:
        return dict(self.counts)
