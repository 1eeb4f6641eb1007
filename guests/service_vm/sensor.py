"""The DMA sensor offered to a User VM by the device model instead of passed through: the model's
own device classes (acrn-dm has none like them), for comparing the three ways a VM can get
the same data (scenarios/passthrough_compare.py, docs/passthrough.md).

    -s N,sensor[,latency_us=20][,jitter_us=0][,seed=0]         the sensor's registers, emulated
    -s N,virtio-sensor[,latency_us=20][,jitter_us=0][,seed=0]  a virtio entropy device (virtio
                                        1.0 §5.4) whose back end reads the sensor

Both front the same acquisition as the board's sensor (sim/devices/dma_sensor.py Acquisition):
a request waits its acquisition time for its sample (a wait, not CPU time, as virtio-blk waits
for its disk), with the same options and the same sequence of times, and the same bytes.

`sensor` emulates sim/devices/dma_sensor.py's registers, descriptor ring and MSI in the device
model (request mode; STREAM is not emulated): every register access of the guest is an MMIO
VM exit and an I/O request to the device model; a doorbell (TAIL) wakes the device's thread,
which takes the sample, copies it into guest memory through the device model's mapping of
it (the "DMA"), writes the descriptor back and raises the MSI with HC_INJECT_MSI. Addresses
outside the guest's RAM complete the descriptor with ERR and write nothing.
"""

from __future__ import annotations

import struct

from acrn_sim.guests.service_vm.kernel import Wait, WaitQueue
from acrn_sim.guests.service_vm.pci_core import PCIBAR_MEM32, PciVdev
from acrn_sim.guests.service_vm.virtio.rnd import VirtioRnd
from acrn_sim.guests.service_vm.virtio.vring import GuestMemory, GuestMemoryError
from acrn_sim.sim import ConfigError
from acrn_sim.sim.devices import dma_sensor as S


def _options(config: str | None, where: str) -> S.Acquisition:
    """latency_us, jitter_us and seed, as the board's sensor takes them."""
    opts: dict[str, str] = {}
    for item in [p.strip() for p in (config or "").split(",") if p.strip()]:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ConfigError(f"{where}: {item!r} is not KEY=VALUE")
        opts[key] = value
    acq = S.acquisition_options(opts, where)
    if opts:
        raise ConfigError(f"{where}: unknown option {sorted(opts)[0]!r} "
                          "(latency_us, jitter_us, seed)")  # fmt: skip
    return acq


def sleep(kernel, cycles: int):
    """Generator: a device-model thread waits `cycles` without using the CPU."""
    wq = WaitQueue(kernel, "sensor wait")
    done: list[bool] = []

    def expire() -> None:
        done.append(True)
        wq.wake_up()

    kernel.add_timer(kernel.now() + cycles, expire)
    while not done:
        yield Wait(wq)


class EmulatedSensor(PciVdev):
    CLASS_NAME = "sensor"

    @classmethod
    def parse_options(cls, config: str | None, where: str) -> tuple[int, int, int]:
        acq = _options(config, where)
        return acq.latency_ns, acq.jitter_ns, acq.seed

    def __init__(self, bus, opt) -> None:
        super().__init__(bus, f"sensor-pci-{opt.slot}", opt.slot, opt.func)
        self.set_ids(S.VENDOR, S.DEVICE, S.CLASS, S.VENDOR, 1, revision=1)
        self.alloc_bar(0, PCIBAR_MEM32, S.BAR_SIZE)
        self.add_msicap()
        k = bus.kernel
        self.kernel = k
        self.mem = GuestMemory(k.port, bus.dm.ram, bus.dm.cfg.memory)
        self.acquisition = S.Acquisition(*opt.parsed)
        self.counts = {"requests": 0, "msis": 0, "dma_errors": 0}
        self._reset_regs()
        self._wq = WaitQueue(k, self.name)
        self._stopped = False
        k.spawn(f"acrn-dm {bus.vm_name} sensor", self._serve(), bus.priority)

    def _reset_regs(self) -> None:
        self.ctrl = self.intr = self.ring = self.ring_size = self.head = self.tail = 0
        self.sample_len, self.seq, self.status = 64, 0, 0

    # ------------------------------------------------------------ registers
    def bar_read(self, idx: int, offset: int, size: int) -> int:
        if size != 4 or offset & 3:
            return 0
        return {
            S.REG_ID: S.ID_VALUE, S.REG_VERSION: S.VERSION_VALUE, S.REG_CTRL: self.ctrl,
            S.REG_STATUS: self.status | (S.STATUS_RUNNING if self.ctrl & S.CTRL_EN else 0),
            S.REG_INTR: self.intr, S.REG_RING_LO: self.ring & 0xFFFF_FFFF,
            S.REG_RING_HI: self.ring >> 32, S.REG_RING_SIZE: self.ring_size,
            S.REG_HEAD: self.head, S.REG_TAIL: self.tail, S.REG_SAMPLE_LEN: self.sample_len,
            S.REG_SEQ: self.seq,
        }.get(offset, 0)  # fmt: skip

    def bar_write(self, idx: int, offset: int, size: int, value: int) -> None:
        if size != 4 or offset & 3:
            return
        if offset == S.REG_CTRL:
            if value & S.CTRL_RESET:
                self._reset_regs()
            else:
                self.ctrl = value & (S.CTRL_EN | S.CTRL_IRQ_EN)
        elif offset == S.REG_INTR:
            self.intr &= ~value
        elif offset == S.REG_RING_LO:
            self.ring = (self.ring & ~0xFFFF_FFFF) | (value & ~(S.DESC_SIZE - 1))
        elif offset == S.REG_RING_HI:
            self.ring = (self.ring & 0xFFFF_FFFF) | value << 32
        elif offset == S.REG_RING_SIZE:
            self.ring_size = min(max(value, 1), S.MAX_RING)
        elif offset == S.REG_TAIL:
            self.tail = value & 0xFFFF_FFFF
            self._wq.wake_up()
        elif offset == S.REG_SAMPLE_LEN:
            self.sample_len = min(max(value, 1), S.MAX_SAMPLE)

    # ------------------------------------------------------------ the thread
    def _serve(self):
        k = self.kernel
        while not self._stopped:
            if not (self.ctrl & S.CTRL_EN and self.ring_size and self.tail != self.head):
                yield Wait(self._wq)
                continue
            self.counts["requests"] += 1
            yield from sleep(k, self._cycles(self.acquisition.next_ns()))  # the acquisition
            seq = self.seq
            self.seq += 1
            desc = self.ring + S.DESC_SIZE * (self.head % self.ring_size)
            yield k.cycles["dm_syscall"]  # reading the sample from the sensor's driver
            try:
                addr, length, *_ = S.DESC.unpack(self.mem.read(desc, S.DESC_SIZE))
                n = min(length, self.sample_len)
                yield self.kernel.cycles["virtio_copy_per_kib"] * n // 1024
                self.mem.write(addr, S.sample_bytes(seq, n))
                flags = S.DESC_DONE if n == self.sample_len else S.DESC_DONE | S.DESC_ERR
            except GuestMemoryError:
                self.counts["dma_errors"] += 1
                n, flags = 0, S.DESC_DONE | S.DESC_ERR
            try:
                self.mem.write(desc + 12, struct.pack("<IQII", flags, k.now(), seq, n))
            except GuestMemoryError:
                self.counts["dma_errors"] += 1
            self.head = (self.head + 1) & 0xFFFF_FFFF
            self.intr |= S.INTR_DONE
            if self.ctrl & S.CTRL_IRQ_EN and self.msi_enabled:
                self.counts["msis"] += 1
                self.irq_work.append(("msi", self.msi_addr, self.msi_data, None))
                yield from self.flush_interrupts()

    def _cycles(self, ns: int) -> int:
        return ns * self.kernel.profile.tsc_hz // 1_000_000_000

    def vm_reset(self) -> None:
        self._reset_regs()

    def deinit(self) -> None:
        self._stopped = True
        self._wq.wake_up()


class VirtioSensor(VirtioRnd):
    """virtio-rnd's device with the sensor behind it: each buffer the driver offers is one
    request, served one after the other (the sensor takes one sample at a time)."""

    CLASS_NAME = "virtio-sensor"

    @classmethod
    def parse_options(cls, config: str | None, where: str):
        acq = _options(config, where)
        return super().parse_options(None, where), (acq.latency_ns, acq.jitter_ns, acq.seed)

    def __init__(self, bus, opt) -> None:
        rnd_opts, acquisition = opt.parsed
        opt = type(opt)(opt.slot, opt.func, opt.cls, opt.config, opt.spec, rnd_opts)
        super().__init__(bus, opt)
        self.acquisition = S.Acquisition(*acquisition)
        self.seq = 0

    def worker_name(self, i: int) -> str:
        return "sensor rx thread"

    def process(self, vq, epoch: int):
        k = self.kernel
        vq.disable_notify(self.mem)
        while True:
            chain = self.take(vq)
            if chain is None:
                if self.keep_taking(vq):
                    continue
                break
            segs = chain.writable()
            n = sum(length for _, length in segs)
            ns = self.acquisition.next_ns()  # the sensor's acquisition
            yield from sleep(k, ns * k.profile.tsc_hz // 1_000_000_000)
            yield k.cycles["dm_syscall"] + self.copy_cost(n)
            if epoch != self.epoch:
                return False
            written = self.write_segments(segs, S.sample_bytes(self.seq, n))
            self.seq += 1
            self.complete(vq, chain, written)
            self.end(vq, True)
        return False
