"""The virtio PCI transport and the device-model side of every virtio device (virtio 1.0 §4.1,
§2.1-§2.4, §3.1; ACRN devicemodel/hw/pci/virtio/virtio.c).

Transports, per device (`,legacy`, `,modern`, default: transitional, both):
- legacy (virtio 0.9.5, §4.1.4.8): registers in I/O BAR0; the device configuration follows
  at 20, or at 24 while MSI-X is enabled (looked up at each access, as ACRN's
  pci_msix_enabled); a queue is given by a page number (QUEUE_PFN) in the legacy layout;
- modern (§4.1.4): vendor capabilities COMMON, ISR, DEVICE, NOTIFY and PCI_CFG pointing
  into a 16 KiB 64-bit memory BAR4, 4 KiB each: common configuration at 0x0000, ISR at
  0x1000, device configuration at 0x2000, notifications at 0x3000 with a
  notify_off_multiplier of 4 and queue_notify_off = the queue index (virtio_set_modern_bar);
- MSI-X in BAR1, one entry per queue plus one for configuration changes (virtio_intr_init),
  an MSI capability with one message, and INTx.
A transitional device has a legacy device ID (0x1000 + ...), a modern-only one 0x1040 + its
virtio type and revision 1 (§4.1.2.1).

The device: feature negotiation over 64 bits (§2.2; FEATURES_OK refused on the modern
interface without VIRTIO_F_VERSION_1, and no feature changes after FEATURES_OK), the status
state machine (§2.1, §3.1.1: reset by writing 0; DEVICE_NEEDS_RESET set by the device when the
driver broke something, with a configuration-change interrupt if DRIVER_OK, as ACRN's
virtio_dev_error), MSI-X vectors (a vector the table does not have is refused: it reads back
VIRTIO_MSI_NO_VECTOR), the ISR status (read to clear; clearing de-asserts INTx), and queue
notifications.

Back ends (`process`) run in the device model's own threads (VBS-U), woken by a notification
or the poll timer; a device with a kernel back end (VBS-K, vbsk.py) hands its rings to it at
DRIVER_OK and takes them back at reset. Poll mode (acrn-dm --virtio_poll INTERVAL, ACRN
PR #1960): every INTERVAL the device sets VRING_USED_F_NO_NOTIFY and looks at every queue, so
the driver need not notify; differences from ACRN: polling starts one interval after
DRIVER_OK (ACRN waits 5 s so that the firmware is done), and works on the modern transport
too (ACRN's is a TODO there).
"""

from __future__ import annotations

import struct
from collections import deque

from acrn_sim.guests.service_vm.kernel import Wait, WaitQueue
from acrn_sim.guests.service_vm.pci_core import (
    PCIBAR_IO,
    PCIBAR_MEM64,
    PCIY_VENDOR,
    PciVdev,
)
from acrn_sim.guests.service_vm.virtio.stats import VirtioStats
from acrn_sim.guests.service_vm.virtio.vring import (
    VIRTIO_F_VERSION_1,
    VIRTIO_MSI_NO_VECTOR,
    VIRTIO_RING_F_EVENT_IDX,
    VIRTIO_RING_F_INDIRECT_DESC,
    VRING_USED_F_NO_NOTIFY,
    Chain,
    GuestMemory,
    GuestMemoryError,
    RingError,
    VirtQueue,
)

VIRTIO_VENDOR = 0x1AF4
# device status (§2.1)
S_ACKNOWLEDGE, S_DRIVER, S_DRIVER_OK, S_FEATURES_OK = 1, 2, 4, 8
S_NEEDS_RESET, S_FAILED = 0x40, 0x80
ISR_QUEUE, ISR_CONFIG = 1, 2
# legacy registers in BAR0 (linux include/uapi/linux/virtio_pci.h): offset -> (size, read-only)
L_HOST_FEATURES, L_GUEST_FEATURES, L_QUEUE_PFN, L_QUEUE_NUM = 0, 4, 8, 12
L_QUEUE_SEL, L_QUEUE_NOTIFY, L_STATUS, L_ISR, L_MSIX_CONFIG, L_MSIX_QUEUE = 14, 16, 18, 19, 20, 22
LEGACY_REGS = {0: (4, True), 4: (4, False), 8: (4, False), 12: (2, True), 14: (2, False),
               16: (2, False), 18: (1, False), 19: (1, False), 20: (2, False),
               22: (2, False)}  # fmt: skip
# struct virtio_pci_common_cfg (§4.1.4.3): offset -> (size, read-only)
C_DFSELECT, C_DF, C_GFSELECT, C_GF, C_MSIX, C_NUMQ, C_STATUS, C_CFGGEN = 0, 4, 8, 12, 16, 18, 20, 21
C_Q_SELECT, C_Q_SIZE, C_Q_MSIX, C_Q_ENABLE, C_Q_NOFF = 22, 24, 26, 28, 30
C_Q_DESC, C_Q_AVAIL, C_Q_USED = 32, 40, 48
COMMON_REGS = {0: (4, False), 4: (4, True), 8: (4, False), 12: (4, False), 16: (2, False),
               18: (2, True), 20: (1, False), 21: (1, True), 22: (2, False), 24: (2, False),
               26: (2, False), 28: (2, False), 30: (2, True), 32: (4, False), 36: (4, False),
               40: (4, False), 44: (4, False), 48: (4, False), 52: (4, False)}  # fmt: skip
# the modern BAR (ACRN virtio.h VIRTIO_CAP_*_OFFSET, VIRTIO_MODERN_*)
CAP_COMMON, CAP_NOTIFY, CAP_ISR, CAP_DEVICE, CAP_PCI_CFG = 1, 2, 3, 4, 5
MODERN_REGIONS = {CAP_COMMON: 0x0000, CAP_ISR: 0x1000, CAP_DEVICE: 0x2000, CAP_NOTIFY: 0x3000}
REGION_SIZE, MODERN_BAR_SIZE, NOTIFY_OFF_MULT = 0x1000, 0x4000, 4
LEGACY_BAR, MSIX_BAR, MODERN_BAR = 0, 1, 4


def _fits(regs: dict, off: int, size: int):
    return regs.get(off) if off in regs and regs[off][0] == size else None


class VirtioPciDev(PciVdev):
    """The device model's virtio device (struct virtio_base) behind the PCI transport. A
    subclass gives its type, IDs, queues, features and configuration space, and `process`,
    the back end for a queue."""

    CLASS_NAME = "virtio"
    VIRTIO_TYPE = 0
    LEGACY_ID = 0x1000
    PCI_CLASS = 0xFF0000
    QUEUE_SIZES: tuple[int, ...] = (64,)
    CFGSIZE = 0
    WORKERS = 1  # device-model threads that serve the queues

    def __init__(self, bus, opt) -> None:
        super().__init__(bus, f"{opt.cls}-pci-{opt.slot}", opt.slot, opt.func)
        o = opt.parsed
        self.options = o
        self.transport = o.transport  # "transitional", "legacy" or "modern"
        k = bus.kernel
        self.kernel = k
        self.mem = GuestMemory(k.port, bus.dm.ram, bus.dm.cfg.memory)
        self.vqs = [VirtQueue(i, s) for i, s in enumerate(self.QUEUE_SIZES)]
        self.device_caps = self.features() | (1 << VIRTIO_RING_F_INDIRECT_DESC)
        self.device_caps |= 1 << VIRTIO_RING_F_EVENT_IDX
        if self.transport != "legacy":
            self.device_caps |= 1 << VIRTIO_F_VERSION_1
        self.stats = VirtioStats(opt.cls, bus.vm_name, self.transport, "VBS-U")
        self.status = 0
        self.isr = 0
        self.negotiated = 0
        self.device_feature_select = self.driver_feature_select = 0
        self.curq = 0
        self.msix_cfg_idx = VIRTIO_MSI_NO_VECTOR
        self.config_generation = 0
        self.modern_in_use = False
        self.broken: str | None = None
        self.epoch = 0  # bumped at every reset: work of an earlier incarnation is dropped
        self.stopped = False
        self.kernel_backend = None  # a VBS-K back end (vbsk.py), if configured
        self.kernel_active = False
        self.poll_cycles = (
            bus.virtio_poll_ns * k.profile.tsc_hz // 1_000_000_000 if bus.virtio_poll_ns else 0
        )
        self._poll_gen = 0
        # queues with work for the threads: queue -> notifications counted so far
        self.pending: dict[int, int] = {}
        self.marks: list[deque] = [deque() for _ in self.vqs]  # (avail idx, notify cycle)
        self.awaiting_irq: list[list[int]] = [[] for _ in self.vqs]  # used at cycle, per queue
        self._workers: list[tuple[WaitQueue, list[bool]]] = []
        # ---- PCI identity (virtio_*_init), interrupts (virtio_intr_init), BARs
        modern_only = self.transport == "modern"
        device_id = 0x1040 + self.VIRTIO_TYPE if modern_only else self.LEGACY_ID
        self.set_ids(VIRTIO_VENDOR, device_id, self.PCI_CLASS, VIRTIO_VENDOR, self.VIRTIO_TYPE,
                     revision=1 if modern_only else 0)  # fmt: skip
        self.add_msixcap(len(self.vqs) + 1, MSIX_BAR)
        self.add_msicap()
        self.lintr_request()
        if self.transport != "modern":  # virtio_set_io_bar: 24 + the device configuration
            self.alloc_bar(LEGACY_BAR, PCIBAR_IO, 24 + self.CFGSIZE)
        if self.transport != "legacy":
            self._add_modern_caps()
            self.alloc_bar(MODERN_BAR, PCIBAR_MEM64, MODERN_BAR_SIZE)
        for i in range(self.WORKERS):
            wq = WaitQueue(k, f"{self.name}-{i}")
            idle = [False]
            self._workers.append((wq, idle))
            k.spawn(f"acrn-dm {bus.vm_name} {self.worker_name(i)}", self._worker(wq, idle),
                    bus.priority)  # fmt: skip

    # -------------------------------------------------------- subclass API
    @classmethod
    def parse_options(cls, config: str | None, where: str):
        raise NotImplementedError

    def features(self) -> int:
        """The device's own feature bits (besides the ring features and VERSION_1)."""
        return 0

    def devcfg_read(self, offset: int, size: int) -> int | None:
        """The device configuration (§4.1.4.6); None: not readable there."""
        return None

    def devcfg_write(self, offset: int, size: int, value: int) -> None:
        """A driver write into the device configuration (read-only unless a device says)."""

    def worker_name(self, i: int) -> str:
        return f"{self.CLASS_NAME} worker"

    def process(self, vq: VirtQueue, epoch: int):
        """Generator, in a device-model thread: serve queue `vq`. Returns True if it stopped
        with work left (a thread takes one request at a time), False when the ring is empty."""
        return False
        yield

    def device_reset(self) -> None:
        """Device-specific state back to its power-on values (the device's reset op)."""

    def notified(self, vq: VirtQueue) -> None:
        """A notification for `vq` arrived (before it is queued for the threads)."""

    # ---------------------------------------------------- capabilities/BARs
    def _add_modern_caps(self) -> None:
        """virtio_set_modern_mmio_bar: struct virtio_pci_cap per region (§4.1.4), the notify
        capability with its multiplier, then VIRTIO_PCI_CAP_PCI_CFG."""

        def cap(cfg_type: int, offset: int, length: int, extra: bytes = b"") -> bytes:
            return struct.pack("<BBBBB3xII", PCIY_VENDOR, 0, 16 + len(extra), cfg_type,
                               MODERN_BAR, offset, length) + extra  # fmt: skip

        self.add_capability(cap(CAP_COMMON, MODERN_REGIONS[CAP_COMMON], REGION_SIZE))
        self.add_capability(cap(CAP_ISR, MODERN_REGIONS[CAP_ISR], REGION_SIZE))
        self.add_capability(cap(CAP_DEVICE, MODERN_REGIONS[CAP_DEVICE], REGION_SIZE))
        self.add_capability(cap(CAP_NOTIFY, MODERN_REGIONS[CAP_NOTIFY], REGION_SIZE,
                                struct.pack("<I", NOTIFY_OFF_MULT)))  # fmt: skip
        self.pci_cfg_cap = self.add_capability(
            struct.pack("<BBBBB3xII", PCIY_VENDOR, 0, 20, CAP_PCI_CFG, 0, 0, 0) + bytes(4)
        )

    def notify_address(self, q: int) -> tuple[str, int, int | None]:
        """Where the driver notifies queue q: ("pio", port, data) on the legacy interface,
        ("mmio", address, None) on the modern one (vhost_vq_register_eventfd)."""
        if self.modern_in_use and self.bars[MODERN_BAR].addr:
            addr = self.bars[MODERN_BAR].addr + MODERN_REGIONS[CAP_NOTIFY] + q * NOTIFY_OFF_MULT
            return ("mmio", addr, None)
        return ("pio", self.bars[LEGACY_BAR].addr + L_QUEUE_NOTIFY, q)

    # --------------------------------------------------------- BAR access
    def _count_access(self) -> None:
        if self.stats.counting:
            self.stats.exits += 1
            self.stats.ioreqs_dm += 1
            dm = self.bus.dm
            if dm.io_thread_woken:  # the I/O thread was woken for this access
                dm.io_thread_woken = False
                self.stats.dm_wakeups += 1

    def bar_read(self, idx: int, offset: int, size: int) -> int:
        self._count_access()
        if idx == LEGACY_BAR and self.transport != "modern":
            return self._legacy_read(offset, size)
        if idx == MODERN_BAR and self.transport != "legacy":
            return self._modern_read(offset, size)
        return super().bar_read(idx, offset, size)

    def bar_write(self, idx: int, offset: int, size: int, value: int) -> None:
        self._count_access()
        if idx == LEGACY_BAR and self.transport != "modern":
            self._legacy_write(offset, size, value)
        elif idx == MODERN_BAR and self.transport != "legacy":
            self._modern_write(offset, size, value)
        else:
            super().bar_write(idx, offset, size, value)

    def _bad_access(self, what: str) -> None:
        self.note(f"{what} (ignored)")

    # legacy (virtio_pci_legacy_read / _write)
    def _config_off(self) -> int:
        return 24 if self.msix_is_enabled() else 20

    def _legacy_read(self, off: int, size: int) -> int:
        ones = (1 << (8 * size)) - 1
        self.modern_in_use = False
        cfg_off = self._config_off()
        if off >= cfg_off:
            value = self._dev_cfgread(off - cfg_off, size)
            return ones if value is None else value
        if not _fits(LEGACY_REGS, off, size):
            self._bad_access(f"legacy read of {size} bytes at {off}")
            return ones
        q = self.vqs[self.curq] if self.curq < len(self.vqs) else None
        if off == L_HOST_FEATURES:
            return self.device_caps & 0xFFFF_FFFF
        if off == L_GUEST_FEATURES:
            return self.negotiated & 0xFFFF_FFFF
        if off == L_QUEUE_PFN:
            return q.pfn if q else 0
        if off == L_QUEUE_NUM:
            return q.qsize if q else 0
        if off == L_QUEUE_SEL:
            return self.curq
        if off == L_QUEUE_NOTIFY:
            return 0
        if off == L_STATUS:
            return self.status
        if off == L_ISR:
            return self._isr_read()
        if off == L_MSIX_CONFIG:
            return self.msix_cfg_idx
        return q.msix_idx if q else VIRTIO_MSI_NO_VECTOR  # L_MSIX_QUEUE

    def _legacy_write(self, off: int, size: int, value: int) -> None:
        self.modern_in_use = False
        cfg_off = self._config_off()
        if off >= cfg_off:
            self._dev_cfgwrite(off - cfg_off, size, value)
            return
        reg = _fits(LEGACY_REGS, off, size)
        if not reg or reg[1]:
            self._bad_access(f"legacy write of {size} bytes at {off}")
            return
        if off == L_GUEST_FEATURES:
            self._set_features(value, 0)
        elif off == L_QUEUE_PFN:
            if self._queue_index_ok("QUEUE_PFN"):
                self._legacy_pfn(value)
        elif off == L_QUEUE_SEL:
            self.curq = value  # a bad queue may be selected: QUEUE_NUM then reads 0
        elif off == L_QUEUE_NOTIFY:
            self.notify(value)
        elif off == L_STATUS:
            self.set_status(value)
        elif off == L_MSIX_CONFIG:
            self.msix_cfg_idx = self._vector(value)
        elif off == L_MSIX_QUEUE and self._queue_index_ok("QUEUE_VECTOR"):
            self.vqs[self.curq].msix_idx = self._vector(value)

    def _legacy_pfn(self, pfn: int) -> None:
        vq = self.vqs[self.curq]
        if pfn == 0:  # the driver takes the queue away
            vq.reset()
            return
        vq.init_legacy(pfn)
        vq.features = self.negotiated
        self._queue_started(vq)

    # modern (virtio_pci_modern_mmio_read / _write)
    def _region(self, off: int, size: int) -> tuple[int, int] | None:
        for cap, base in MODERN_REGIONS.items():
            if base <= off and off + size <= base + REGION_SIZE:
                return cap, off - base
        return None

    def _modern_read(self, off: int, size: int) -> int:
        ones = (1 << (8 * size)) - 1
        r = self._region(off, size) if size in (1, 2, 4) else None
        if r is None:
            self._bad_access(f"modern read of {size} bytes at {off:#x}")
            return ones
        cap, off = r
        if cap == CAP_COMMON:
            return self._common_read(off, size)
        if cap == CAP_ISR:
            return self._isr_read()
        if cap == CAP_DEVICE:
            value = self._dev_cfgread(off, size)
            return ones if value is None else value
        return 0  # the notify region reads nothing

    def _modern_write(self, off: int, size: int, value: int) -> None:
        r = self._region(off, size) if size in (1, 2, 4) else None
        if r is None:
            self._bad_access(f"modern write of {size} bytes at {off:#x}")
            return
        cap, off = r
        if cap == CAP_COMMON:
            self._common_write(off, size, value)
        elif cap == CAP_DEVICE:
            self._dev_cfgwrite(off, size, value)
        elif cap == CAP_NOTIFY:
            self.modern_in_use = True
            self.notify(off // NOTIFY_OFF_MULT)
        # the ISR region takes no writes

    def _common_read(self, off: int, size: int) -> int:
        self.modern_in_use = True
        if not _fits(COMMON_REGS, off, size):
            self._bad_access(f"common configuration read of {size} bytes at {off:#x}")
            return (1 << (8 * size)) - 1
        q = self.vqs[self.curq] if self.curq < len(self.vqs) else None
        if off == C_DFSELECT:
            return self.device_feature_select
        if off == C_DF:
            sel = self.device_feature_select
            return self.device_caps >> (32 * sel) & 0xFFFF_FFFF if sel < 2 else 0
        if off == C_GFSELECT:
            return self.driver_feature_select
        if off == C_GF:
            sel = self.driver_feature_select
            return self.negotiated >> (32 * sel) & 0xFFFF_FFFF if sel < 2 else 0
        if off == C_MSIX:
            return self.msix_cfg_idx
        if off == C_NUMQ:
            return len(self.vqs)
        if off == C_STATUS:
            return self.status
        if off == C_CFGGEN:
            return self.config_generation
        if off == C_Q_SELECT:
            return self.curq
        if q is None:
            return VIRTIO_MSI_NO_VECTOR if off == C_Q_MSIX else 0
        if off == C_Q_SIZE:
            return q.qsize
        if off == C_Q_MSIX:
            return q.msix_idx
        if off == C_Q_ENABLE:
            return int(q.enabled)
        if off == C_Q_NOFF:
            return self.curq
        addr = {C_Q_DESC: q.gpa_desc, C_Q_AVAIL: q.gpa_avail, C_Q_USED: q.gpa_used}
        return addr[off & ~7] >> (32 * (off & 4 and 1)) & 0xFFFF_FFFF

    def _common_write(self, off: int, size: int, value: int) -> None:
        self.modern_in_use = True
        reg = _fits(COMMON_REGS, off, size)
        if not reg or reg[1]:
            self._bad_access(f"common configuration write of {size} bytes at {off:#x}")
            return
        if off == C_DFSELECT:
            self.device_feature_select = value
        elif off == C_GFSELECT:
            self.driver_feature_select = value
        elif off == C_GF:
            if self.driver_feature_select < 2:
                self._set_features(value, self.driver_feature_select)
        elif off == C_MSIX:
            self.msix_cfg_idx = self._vector(value)
        elif off == C_STATUS:
            self.set_status(value)
        elif off == C_Q_SELECT:
            self.curq = value
        elif self._queue_index_ok("queue register"):
            q = self.vqs[self.curq]
            if q.enabled and off != C_Q_MSIX:
                self.note(f"queue {q.index} configuration written while enabled (ignored)")
                return
            if off == C_Q_SIZE:
                self._set_queue_size(q, value)
            elif off == C_Q_MSIX:
                q.msix_idx = self._vector(value)
            elif off == C_Q_ENABLE:
                if value == 1:
                    q.enable_modern()
                    q.features = self.negotiated
                    self._queue_started(q)
            else:
                base = off & ~7
                shift = 32 if off & 4 else 0
                name = {C_Q_DESC: "gpa_desc", C_Q_AVAIL: "gpa_avail", C_Q_USED: "gpa_used"}[base]
                old = getattr(q, name)
                setattr(q, name, (old & ~(0xFFFF_FFFF << shift)) | (value << shift))

    def _set_queue_size(self, q: VirtQueue, value: int) -> None:
        """§4.1.4.3.2: the driver may make a queue smaller; a split ring's size is a power of
        2 (§2.4). A size the device cannot use is refused, and the device needs a reset."""
        if value == 0 or value > q.max_size or value & (value - 1):
            self.device_error(
                f"queue {q.index}: size {value} is not a power of 2 up to {q.max_size}"
            )
            return
        q.qsize = value

    def _queue_index_ok(self, what: str) -> bool:
        if self.curq < len(self.vqs):
            return True
        self.note(f"{what} for queue {self.curq}, which does not exist (ignored)")
        return False

    def _vector(self, value: int) -> int:
        """A vector the MSI-X table does not have is refused: NO_VECTOR reads back."""
        if value == VIRTIO_MSI_NO_VECTOR or value < len(self.msix_table):
            return value
        return VIRTIO_MSI_NO_VECTOR

    def _set_features(self, value: int, select: int) -> None:
        if self.status & S_FEATURES_OK or self.status & S_DRIVER_OK:
            self.note("feature bits written after FEATURES_OK (ignored)")
            return
        mask = 0xFFFF_FFFF << (32 * select)
        value = (value & 0xFFFF_FFFF) << (32 * select)
        self.negotiated = ((self.negotiated & ~mask) | value) & self.device_caps
        for q in self.vqs:
            q.features = self.negotiated

    def _isr_read(self) -> int:
        """ISR status: read to clear; clearing de-asserts INTx (§4.1.4.5)."""
        value, self.isr = self.isr, 0
        if value:
            self.lintr_deassert()
        return value

    def _dev_cfgread(self, off: int, size: int) -> int | None:
        if size not in (1, 2, 4) or off + size > self.CFGSIZE:
            return None
        return self.devcfg_read(off, size)

    def _dev_cfgwrite(self, off: int, size: int, value: int) -> None:
        if size not in (1, 2, 4) or off + size > self.CFGSIZE:
            self._bad_access(f"device configuration write of {size} bytes at {off}")
            return
        self.devcfg_write(off, size, value)

    def cfgread(self, reg: int, size: int) -> int:
        """PCI configuration reads; pci_cfg_data of VIRTIO_PCI_CAP_PCI_CFG (§4.1.4.7) reads the
        BAR window the capability names (virtio_pci_modern_cfgread)."""
        cap = getattr(self, "pci_cfg_cap", 0)
        if cap and cap + 16 <= reg and reg + size <= cap + 20:
            bar = self.config[cap + 4]
            off, length = struct.unpack_from("<II", self.config, cap + 8)
            if bar == MODERN_BAR and length in (1, 2, 4):
                self._count_access()
                self.set_cfgdata(cap + 16, length, self._modern_read(off, length))
        return super().cfgread(reg, size)

    def capwrite_other(self, capoff: int, capid: int, reg: int, size: int) -> None:
        """VIRTIO_PCI_CAP_PCI_CFG (§4.1.4.7): a write to pci_cfg_data accesses the BAR window
        the capability names (virtio_pci_modern_cfgwrite)."""
        if capoff != getattr(self, "pci_cfg_cap", None) or reg < capoff + 16:
            return
        bar = self.config[capoff + 4]
        off, length = struct.unpack_from("<II", self.config, capoff + 8)
        if bar == MODERN_BAR and length in (1, 2, 4):
            self._count_access()
            self._modern_write(off, length, self.get_cfgdata(capoff + 16, length))

    # --------------------------------------------------------------- status
    def set_status(self, value: int) -> None:
        value &= 0xFF
        if value == 0:
            self.reset_device()
            return
        old = self.status
        new = (value & ~S_NEEDS_RESET) | (old & S_NEEDS_RESET)
        if new & S_FEATURES_OK and not old & S_FEATURES_OK and self.modern_in_use:
            if not self.negotiated >> VIRTIO_F_VERSION_1 & 1:
                new &= ~S_FEATURES_OK  # §4.1.4.3: the modern interface needs VERSION_1
                self.note("FEATURES_OK without VIRTIO_F_VERSION_1 on the modern interface: refused")
        self.status = new
        if new & S_FAILED and not old & S_FAILED:
            self.note("the driver set FAILED")
        if new & S_DRIVER_OK and not old & S_DRIVER_OK:
            self.driver_ok()

    def driver_ok(self) -> None:
        """DRIVER_OK: the device is live. Counting starts; a kernel back end takes the rings
        (VBS-K), or the poll timer starts."""
        self.stats.counting = True
        self.trace(f"DRIVER_OK (features {self.negotiated:#x})")
        if self.kernel_backend is not None:
            self.bus.post_work(self.kernel_start())
        elif self.poll_cycles:
            self._poll_gen += 1
            self._arm_poll(self._poll_gen)

    def reset_device(self) -> None:
        """virtio_reset_dev and the device's reset: queues, features, vectors, ISR (INTx
        de-asserted), status 0; a kernel back end gives the rings back first."""
        if self.kernel_active:
            self.kernel_backend.quiesce()
            self.bus.post_work(self.kernel_stop())
        self.epoch += 1
        self._poll_gen += 1
        for q in self.vqs:
            q.reset()
        for m in self.marks:
            m.clear()
        for a in self.awaiting_irq:
            a.clear()
        self.pending.clear()
        self.negotiated = 0
        self.curq = 0
        if self.isr:
            self.lintr_deassert()
        self.isr = 0
        self.msix_cfg_idx = VIRTIO_MSI_NO_VECTOR
        self.device_feature_select = self.driver_feature_select = 0
        self.config_generation = 0
        self.status = 0
        self.broken = None
        self.device_reset()

    def vm_reset(self) -> None:
        """The VM was reset: the device starts over (and its MSI-X table with it)."""
        self.reset_device()
        for e in self.msix_table:
            e[0], e[1], e[2] = 0, 0, 1
        self.msix_enabled = self.msix_function_mask = False
        if self.msix_cap:
            self.set_cfgdata16(self.msix_cap + 2, len(self.msix_table) - 1)
        self.stats.counting = False

    def deinit(self) -> None:
        self.stopped = True
        self._poll_gen += 1
        self.epoch += 1
        for wq, _idle in self._workers:
            wq.wake_up()
        if self.kernel_backend is not None:
            self.kernel_backend.stop_worker()

    def device_error(self, what: str) -> None:
        """virtio_dev_error: the driver broke something the device cannot go on from. The
        device stops serving its queues, sets DEVICE_NEEDS_RESET and, if the driver is
        running, sends a configuration-change interrupt (§2.1.2, §4.1.5.3)."""
        if self.broken is None:
            self.broken = what
        self.stats.error(self.kernel.now(), f"{what}: DEVICE_NEEDS_RESET")
        self.trace(f"driver error: {what}; DEVICE_NEEDS_RESET", error=what)
        self.status |= S_NEEDS_RESET
        if self.status & S_DRIVER_OK:
            self.config_changed()

    def note(self, what: str) -> None:
        """Something the driver did wrong that the device just ignores (reported)."""
        self.stats.error(self.kernel.now(), what)
        self.trace(what, error=what)

    def trace(self, what: str, **args) -> None:
        k = self.kernel
        if k.tracer.enabled:
            vm_id = k.port.vm_id
            pcpu = k.tracer.vcpu_pcpu.get((vm_id, 0), 0)
            k.tracer.instant("virtio", f"{self.name} ({self.bus.vm_name}): {what}", k.now(),
                             pcpu, vm_id, 0, **args)  # fmt: skip

    @property
    def live(self) -> bool:
        """The device serves its queues: DRIVER_OK, not broken, not failed."""
        return bool(self.status & S_DRIVER_OK) and not self.status & (S_NEEDS_RESET | S_FAILED)

    def _queue_started(self, vq: VirtQueue) -> None:
        try:
            vq.check_rings(self.mem)
        except RingError as e:
            vq.enabled = False
            self.device_error(str(e))

    # --------------------------------------------------------- interrupts
    def vq_interrupt(self, vq: VirtQueue) -> None:
        """vq_interrupt: the queue's MSI-X message, or ISR bit 0 and INTx (queued; the
        calling thread sends it with flush_interrupts)."""
        q = vq.index
        if self.msix_is_enabled():
            if vq.msix_idx == VIRTIO_MSI_NO_VECTOR:
                return
            msg = self.msix_message(vq.msix_idx)
            if msg is None:
                return
            self.irq_work.append(("msi", msg[0], msg[1], lambda: self.irq_delivered(q)))
        else:
            self.isr |= ISR_QUEUE
            queued = len(self.irq_work)
            self.lintr_assert()
            if len(self.irq_work) == queued:  # no new edge: the line is up already (or held)
                self.irq_delivered(q)
                return
            kind, a, b, _ = self.irq_work[-1]
            self.irq_work[-1] = (kind, a, b, lambda: self.irq_delivered(q))
        if self.stats.counting:
            self.stats.interrupts += 1

    def config_changed(self) -> None:
        """virtio_config_changed: the configuration vector, or ISR bit 1 and INTx."""
        if self.msix_is_enabled():
            if self.msix_cfg_idx != VIRTIO_MSI_NO_VECTOR and self.send_msix(self.msix_cfg_idx):
                self.stats.config_interrupts += 1
        else:
            self.isr |= ISR_CONFIG
            self.lintr_assert()
            self.stats.config_interrupts += 1

    def irq_delivered(self, q: int) -> None:
        now = self.kernel.now()
        steps = self.stats.steps["irq_to_guest"]
        for t in self.awaiting_irq[q]:
            steps.append(now - t)
        self.awaiting_irq[q].clear()

    def msix_control_changed(self) -> None:
        """MSI-X on or off moves the legacy device configuration (20 <-> 24)."""

    # ----------------------------------------------------- notifications
    def notify(self, q: int) -> None:
        """A notification from the driver (the legacy QUEUE_NOTIFY register or the modern
        notify region), in the device model's I/O thread: the queue goes to the device's
        threads. A queue that does not exist is reported and ignored (ACRN)."""
        if q >= len(self.vqs):
            self.note(f"notify for queue {q}, which does not exist (ignored)")
            return
        vq = self.vqs[q]
        if self.stats.counting:
            self.stats.kicks += 1
        if not vq.enabled or not self.live or self.kernel_active:
            return
        origin = self.bus.kick_origin()
        try:
            avail = vq.avail_idx(self.mem)
        except GuestMemoryError:
            avail = vq.last_avail
        self.marks[q].append((avail, origin))
        self.notified(vq)
        self.queue_work(q)

    def queue_work(self, q: int) -> None:
        """Queue q has work: count it and wake a thread that waits (as many as chains wait,
        for a device with several)."""
        self.pending[q] = self.pending.get(q, 0) + 1
        want = 1
        if self.WORKERS > 1:
            try:
                want = max(1, self.vqs[q].pending(self.mem))
            except (RingError, GuestMemoryError):
                want = 1
        for wq, idle in self._workers:
            if want and idle[0]:
                idle[0] = False
                wq.wake_up()
                want -= 1

    def wake_idle_worker(self) -> None:
        """Another chain waits: a thread that sleeps takes it (blockif_enqueue signals one
        worker per request)."""
        for wq, idle in self._workers:
            if idle[0]:
                idle[0] = False
                wq.wake_up()
                return

    def _arm_poll(self, gen: int) -> None:
        k = self.kernel

        def tick() -> None:
            if gen != self._poll_gen or self.stopped:
                return
            now = k.now()
            for vq in self.vqs:
                if not vq.enabled or not self.live:
                    continue
                try:
                    # virtio_poll_timer: the driver is told not to notify, and never told
                    # otherwise while polling (vq_clear_used_ring_flags)
                    vq.used_flags |= VRING_USED_F_NO_NOTIFY
                    self.mem.set_u16(vq.gpa_used, vq.used_flags)
                    self.marks[vq.index].append((vq.avail_idx(self.mem), now))
                except GuestMemoryError:
                    continue
                if self.stats.counting:
                    self.stats.polls += 1
                self.queue_work(vq.index)
            self._arm_poll(gen)

        k.add_timer(k.now() + self.poll_cycles, tick)

    @property
    def polling(self) -> bool:
        return bool(self.poll_cycles) and not self.kernel_active

    # ---------------------------------------------------------- threads
    def _worker(self, wq: WaitQueue, idle: list[bool]):
        """A device-model thread of this device (the rx/tx thread, a blockif worker): sleeps
        until a queue has work, then serves it."""
        k = self.kernel
        while not self.stopped:
            if not self.pending:
                idle[0] = True
                while idle[0] and not self.stopped:
                    yield Wait(wq)
                if self.stopped:
                    return
                if self.stats.counting:
                    self.stats.dm_wakeups += 1
                yield k.cycles["dm_worker_wakeup"]
                continue
            q = next(iter(self.pending))
            seen = self.pending[q]
            epoch = self.epoch
            more = False
            try:
                if self.live and not self.kernel_active:
                    more = yield from self.process(self.vqs[q], epoch)
            except (RingError, GuestMemoryError) as e:
                if epoch == self.epoch:
                    self.device_error(str(e))
            if not more and self.pending.get(q) == seen:
                del self.pending[q]
            yield from self.flush_interrupts()

    # helpers for `process`
    def take(self, vq: VirtQueue) -> Chain | None:
        """The next chain, stamped with when it was taken and which notification made the
        device look (the first one that came after the driver made it available)."""
        idx = vq.last_avail
        chain = vq.getchain(self.mem)
        if chain is None:
            return None
        chain.started = self.kernel.now()
        marks = self.marks[vq.index]
        while marks and ((marks[0][0] - idx - 1) & 0xFFFF) >= 0x8000:
            marks.popleft()  # a mark for entries taken already
        chain.notified = marks[0][1] if marks else None
        return chain

    def complete(self, vq: VirtQueue, chain: Chain, length: int) -> None:
        """vq_relchain, and the request's steps."""
        vq.relchain(self.mem, chain.head, length)
        self.record_completion(vq.index, chain)

    def record_completion(self, q: int, chain: Chain) -> None:
        """A request is done (either back end): its first two steps (kick to back end,
        back-end work); the third waits for the queue's next interrupt."""
        if not self.stats.counting:
            return
        now = self.kernel.now()
        s = self.stats
        s.requests += 1
        if chain.notified is not None and chain.notified <= chain.started:
            s.steps["kick_to_backend"].append(chain.started - chain.notified)
        s.steps["backend_work"].append(now - chain.started)
        waiting = self.awaiting_irq[q]
        waiting.append(now)
        if len(waiting) > 4 * self.vqs[q].qsize:  # the driver takes them without interrupts
            del waiting[: len(waiting) - self.vqs[q].qsize]

    def end(self, vq: VirtQueue, used_all_avail: bool = True) -> None:
        """vq_endchains: interrupt if the driver wants one (queued for flush_interrupts)."""
        before = vq.save_used
        if vq.endchains(self.mem, used_all_avail):
            self.vq_interrupt(vq)
            return
        # no interrupt: the driver will find these in the used ring by itself; they have no
        # interrupt step
        self.awaiting_irq[vq.index].clear()
        if self.stats.counting and vq.used_idx != before:
            self.stats.suppressed_interrupts += 1

    def keep_taking(self, vq: VirtQueue) -> bool:
        """The ring is empty: ask for notifications again and look once more (True: more came
        meanwhile, notifications are off again). In poll mode they stay off."""
        if self.polling:
            return False
        if vq.enable_notify(self.mem):
            vq.disable_notify(self.mem)
            return True
        return False

    def copy_cost(self, nbytes: int) -> int:
        return self.kernel.cycles["virtio_copy_per_kib"] * nbytes // 1024

    def write_segments(self, segments: list[tuple[int, int]], data: bytes) -> int:
        """Copy `data` into device-writable buffers in order; the bytes written."""
        done = 0
        for addr, length in segments:
            if done >= len(data):
                break
            part = data[done : done + length]
            self.mem.write(addr, part)
            done += len(part)
        if self.stats.counting:
            self.stats.bytes_in += done
        return done

    def read_segments(self, segments: list[tuple[int, int]]) -> bytes:
        data = b"".join(self.mem.read(a, n) for a, n in segments)
        if self.stats.counting:
            self.stats.bytes_out += len(data)
        return data

    # ----------------------------------------------------------- VBS-K
    def kernel_start(self):
        """Generator (the I/O thread, at DRIVER_OK): hand the rings to the kernel back end."""
        be = self.kernel_backend
        if not self.msix_is_enabled():
            # vhost_dev_start: "only msix is supported"; the device model keeps the rings
            self.note("VBS-K needs MSI-X (vhost_dev_start); the device model serves the queues")
            return
        ok = yield from be.start(self)
        if ok:
            self.kernel_active = True
            self.stats.backend = "VBS-K"
            self.trace("rings handed to the kernel back end (VBS-K)")

    def kernel_stop(self):
        """Generator (the I/O thread, at reset): take the rings back (vhost_dev_stop)."""
        self.kernel_active = False
        yield from self.kernel_backend.stop(self)
        self.trace("rings taken back from the kernel back end")
