"""The device side of a split virtqueue in guest memory (virtio 1.0 §2.4; ACRN
devicemodel/hw/pci/virtio/virtio.c vq_getchain, vq_relchain, vq_endchains; Linux
drivers/vhost/vhost.c for the notification discipline).

Layout (§2.4.2, legacy §4.1.4.8 with 4 KiB alignment): the descriptor table (16 bytes each:
addr, len, flags, next), the available ring (flags, idx, ring[qsize], used_event) and the used
ring (flags, idx, ring[qsize] of (id, len), avail_event).

Every guest address is checked against the guest's RAM before it is used (`GuestMemory`), and
every index the driver supplies is checked against the queue: a driver that breaks the ring
gets a `RingError`, which the device turns into DEVICE_NEEDS_RESET (§2.1.2); nothing outside
the guest's RAM is ever read or written. Checked (each a driver "MUST" of §2.4):
- the available index moving by more than the queue size, a head or next index out of range;
- a descriptor (or an indirect table) outside the guest's RAM;
- a loop in a chain (a descriptor visited twice);
- an indirect table longer than the queue, not a multiple of 16 bytes, empty, combined with
  NEXT, used without VIRTIO_RING_F_INDIRECT_DESC, or holding an indirect descriptor;
- a device-readable descriptor after a device-writable one (§2.4.4.2);
- the used ring's index not where the device left it (the driver wrote the used ring).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

VRING_DESC_F_NEXT, VRING_DESC_F_WRITE, VRING_DESC_F_INDIRECT = 1, 2, 4
VRING_USED_F_NO_NOTIFY, VRING_AVAIL_F_NO_INTERRUPT = 1, 1
VIRTIO_F_NOTIFY_ON_EMPTY, VIRTIO_RING_F_INDIRECT_DESC, VIRTIO_RING_F_EVENT_IDX = 24, 28, 29
VIRTIO_F_VERSION_1 = 32
VIRTIO_MSI_NO_VECTOR = 0xFFFF
VRING_ALIGN = 4096  # legacy layout (VIRTIO_PCI_VRING_ALIGN)
_DESC = struct.Struct("<QIHH")


class GuestMemoryError(Exception):
    """An access to guest-physical memory outside the guest's RAM."""


class RingError(Exception):
    """The driver broke the ring (a "MUST" of virtio 1.0 §2.4): the device needs a reset."""


class GuestMemory:
    """The device model's mapping of a User VM's RAM (acrn-dm's hugetlb mapping,
    paddr_guest2host): guest-physical 0 is Service VM address `base`. Every access is checked
    against the RAM's size first."""

    def __init__(self, port, base: int, size: int) -> None:
        self.size = size
        self._port, self._base = port, base
        window = port.map(base, size)
        # One view of the whole RAM when it is contiguous (it is, as 2 MiB pages of the
        # Service VM's identity map); else each access goes through the port.
        self._view = window.view(0, size) if window is not None else None

    def check(self, gpa: int, length: int) -> None:
        if gpa < 0 or length < 0 or gpa + length > self.size:
            raise GuestMemoryError(
                f"{gpa:#x}+{length:#x} is outside the guest's RAM (0-{self.size:#x})"
            )

    def read(self, gpa: int, length: int) -> bytes:
        self.check(gpa, length)
        if self._view is not None:
            return bytes(self._view[gpa : gpa + length])
        return self._port.read(self._base + gpa, length)

    def write(self, gpa: int, data: bytes) -> None:
        self.check(gpa, len(data))
        if self._view is not None:
            self._view[gpa : gpa + len(data)] = data
        else:
            self._port.write(self._base + gpa, bytes(data))

    def u16(self, gpa: int) -> int:
        return int.from_bytes(self.read(gpa, 2), "little")

    def set_u16(self, gpa: int, value: int) -> None:
        self.write(gpa, (value & 0xFFFF).to_bytes(2, "little"))

    def desc(self, gpa: int) -> tuple[int, int, int, int]:
        return _DESC.unpack(self.read(gpa, 16))


def need_event(event: int, new: int, old: int) -> bool:
    """vring_need_event (§2.4.7.2, §2.4.8.2): whether `event` lies in [old, new)."""
    return (new - event - 1) & 0xFFFF < (new - old) & 0xFFFF


@dataclass
class Chain:
    """One descriptor chain taken from the available ring: its head and its buffers as
    (guest address, length, device-writable), indirect tables unfolded."""

    head: int
    segments: list[tuple[int, int, bool]] = field(default_factory=list)
    started: int = 0  # when the back end took it (for the report's steps)
    notified: int | None = None  # the kick (VM exit) or poll that made the device look

    def readable(self) -> list[tuple[int, int]]:
        return [(a, n) for a, n, w in self.segments if not w]

    def writable(self) -> list[tuple[int, int]]:
        return [(a, n) for a, n, w in self.segments if w]


class VirtQueue:
    """struct virtio_vq_info: a queue's configuration (size, addresses, MSI-X vector) and the
    device's state (next available entry to take, its own used index)."""

    def __init__(self, index: int, max_size: int) -> None:
        self.index = index
        self.max_size = max_size
        self.reset()

    def reset(self) -> None:
        """virtio_reset_dev, per queue."""
        self.qsize = self.max_size
        self.msix_idx = VIRTIO_MSI_NO_VECTOR
        self.pfn = 0
        self.gpa_desc = self.gpa_avail = self.gpa_used = 0
        self.enabled = False
        self.last_avail = 0  # the next available-ring entry to take
        self.used_idx = 0  # the used index the device wrote last
        self.save_used = 0  # the used index at the last interrupt decision
        self.used_flags = 0  # what the device wrote into used->flags
        self.features = 0  # negotiated, set when the driver enables the queue

    # ------------------------------------------------------------- set-up
    def init_legacy(self, pfn: int) -> None:
        """virtio_vq_init: QUEUE_PFN names a page; the legacy layout follows (§4.1.4.8)."""
        self.pfn = pfn
        base = pfn << 12
        self.gpa_desc = base
        self.gpa_avail = base + 16 * self.qsize
        self.gpa_used = (self.gpa_avail + 2 * (3 + self.qsize) + VRING_ALIGN - 1) & ~(
            VRING_ALIGN - 1
        )
        self._start()

    def enable_modern(self) -> None:
        """virtio_vq_enable: the three addresses were written; queue_enable = 1."""
        self._start()

    def _start(self) -> None:
        self.enabled = True
        self.last_avail = self.used_idx = self.save_used = 0
        self.used_flags = 0

    def ring_bytes(self) -> list[tuple[int, int]]:
        """(address, length) of the three areas."""
        q = self.qsize
        return [(self.gpa_desc, 16 * q), (self.gpa_avail, 6 + 2 * q), (self.gpa_used, 6 + 8 * q)]

    def check_rings(self, mem: GuestMemory) -> None:
        """The rings must lie in the guest's RAM (checked before the first use)."""
        for addr, length in self.ring_bytes():
            try:
                mem.check(addr, length)
            except GuestMemoryError as e:
                raise RingError(f"queue {self.index}: ring outside the guest's RAM: {e}") from None

    # -------------------------------------------------------- ring fields
    def avail_idx(self, mem: GuestMemory) -> int:
        return mem.u16(self.gpa_avail + 2)

    def avail_flags(self, mem: GuestMemory) -> int:
        return mem.u16(self.gpa_avail)

    def used_event(self, mem: GuestMemory) -> int:
        return mem.u16(self.gpa_avail + 4 + 2 * self.qsize)

    def pending(self, mem: GuestMemory) -> int:
        """How many entries the driver made available that the device has not taken."""
        n = (self.avail_idx(mem) - self.last_avail) & 0xFFFF
        if n > self.qsize:
            raise RingError(
                f"queue {self.index}: the available index moved {n} entries past the device's "
                f"({self.last_avail}), more than the queue holds ({self.qsize})"
            )
        return n

    def has_descs(self, mem: GuestMemory) -> bool:
        return self.enabled and self.pending(mem) > 0

    # ----------------------------------------------------------- chains
    def getchain(self, mem: GuestMemory) -> Chain | None:
        """vq_getchain: the next available chain, checked; None if there is none."""
        if not self.has_descs(mem):
            return None
        q = self.qsize
        head = mem.u16(self.gpa_avail + 4 + 2 * (self.last_avail % q))
        self.last_avail = (self.last_avail + 1) & 0xFFFF
        if head >= q:
            raise RingError(f"queue {self.index}: head descriptor {head} out of range ({q})")
        chain = Chain(head)
        indirect_ok = bool(self.features >> VIRTIO_RING_F_INDIRECT_DESC & 1)
        visited: set[int] = set()
        idx = head
        while True:
            if idx >= q:
                raise RingError(f"queue {self.index}: next descriptor {idx} out of range ({q})")
            if idx in visited:
                raise RingError(f"queue {self.index}: descriptor loop at {idx} (chain {head})")
            visited.add(idx)
            addr, length, flags, nxt = mem.desc(self.gpa_desc + 16 * idx)
            if flags & VRING_DESC_F_INDIRECT:
                if not indirect_ok:
                    raise RingError(
                        f"queue {self.index}: indirect descriptor without "
                        "VIRTIO_RING_F_INDIRECT_DESC"
                    )
                if flags & VRING_DESC_F_NEXT:
                    raise RingError(f"queue {self.index}: descriptor {idx} is INDIRECT and NEXT")
                self._indirect(mem, chain, addr, length)
                break
            self._record(mem, chain, addr, length, flags)
            if not flags & VRING_DESC_F_NEXT:
                break
            idx = nxt
        return chain

    def _indirect(self, mem: GuestMemory, chain: Chain, addr: int, length: int) -> None:
        """An indirect table (§2.4.5.3): its descriptors replace the one that points to it."""
        n = length // 16
        if length % 16 or n == 0:
            raise RingError(f"queue {self.index}: indirect table of {length} bytes")
        if n > self.qsize:
            raise RingError(
                f"queue {self.index}: indirect chain of {n} descriptors is longer than the "
                f"queue ({self.qsize})"
            )
        try:
            table = mem.read(addr, length)
        except GuestMemoryError as e:
            raise RingError(f"queue {self.index}: indirect table: {e}") from None
        seen: set[int] = set()
        j = 0
        while True:
            if j in seen:
                raise RingError(f"queue {self.index}: descriptor loop in an indirect table")
            seen.add(j)
            a, n_bytes, flags, nxt = _DESC.unpack_from(table, 16 * j)
            if flags & VRING_DESC_F_INDIRECT:
                raise RingError(
                    f"queue {self.index}: an indirect descriptor inside an indirect table"
                )
            self._record(mem, chain, a, n_bytes, flags)
            if not flags & VRING_DESC_F_NEXT:
                return
            if nxt >= n:
                raise RingError(f"queue {self.index}: indirect next {nxt} out of range ({n})")
            j = nxt

    def _record(self, mem: GuestMemory, chain: Chain, addr: int, length: int, flags: int):
        try:
            mem.check(addr, length)
        except GuestMemoryError as e:
            raise RingError(f"queue {self.index}: descriptor buffer {e}") from None
        writable = bool(flags & VRING_DESC_F_WRITE)
        if not writable and chain.segments and chain.segments[-1][2]:
            raise RingError(
                f"queue {self.index}: a device-readable buffer after a device-writable one"
            )
        chain.segments.append((addr, length, writable))

    def retchain(self) -> None:
        """vq_retchain: give the last chain back (the device could not use it yet)."""
        self.last_avail = (self.last_avail - 1) & 0xFFFF

    def relchain(self, mem: GuestMemory, head: int, length: int) -> None:
        """vq_relchain: the chain is used, `length` bytes written to it. The used index in
        memory must be the device's own: anything else means the driver wrote it."""
        now = mem.u16(self.gpa_used + 2)
        if now != self.used_idx:
            raise RingError(
                f"queue {self.index}: the used index is {now}, the device left it at "
                f"{self.used_idx}: the driver wrote the used ring"
            )
        slot = self.gpa_used + 4 + 8 * (self.used_idx % self.qsize)
        mem.write(slot, struct.pack("<II", head, length))
        self.used_idx = (self.used_idx + 1) & 0xFFFF
        mem.set_u16(self.gpa_used + 2, self.used_idx)

    def endchains(self, mem: GuestMemory, used_all_avail: bool) -> bool:
        """vq_endchains: whether the driver wants an interrupt for what was used since the last
        decision: always with NOTIFY_ON_EMPTY when the ring was emptied; with EVENT_IDX when
        used_event lies in the new stretch (§2.4.7.2); else unless the driver set
        VRING_AVAIL_F_NO_INTERRUPT (§2.4.7.1)."""
        old, new = self.save_used, self.used_idx
        self.save_used = new
        if used_all_avail and self.features >> VIRTIO_F_NOTIFY_ON_EMPTY & 1:
            return True
        if self.features >> VIRTIO_RING_F_EVENT_IDX & 1:
            return need_event(self.used_event(mem), new, old)
        return new != old and not self.avail_flags(mem) & VRING_AVAIL_F_NO_INTERRUPT

    # ------------------------------------------------ driver notifications
    def disable_notify(self, mem: GuestMemory) -> None:
        """While the device works through the ring the driver need not notify it (Linux
        vhost_disable_notify, QEMU virtio_queue_set_notification): VRING_USED_F_NO_NOTIFY
        without EVENT_IDX; with it, avail_event simply stays behind (§2.4.8.2)."""
        if not self.features >> VIRTIO_RING_F_EVENT_IDX & 1:
            self._set_used_flags(mem, self.used_flags | VRING_USED_F_NO_NOTIFY)

    def enable_notify(self, mem: GuestMemory) -> bool:
        """vhost_enable_notify: ask for a notification at the next entry (avail_event =
        the next entry to take, or the flag cleared), then look again: True if entries came
        meanwhile (the caller takes them and disables again)."""
        if self.features >> VIRTIO_RING_F_EVENT_IDX & 1:
            mem.set_u16(self.gpa_used + 4 + 8 * self.qsize, self.last_avail)
        else:
            self._set_used_flags(mem, self.used_flags & ~VRING_USED_F_NO_NOTIFY)
        return self.pending(mem) > 0

    def _set_used_flags(self, mem: GuestMemory, flags: int) -> None:
        if flags != self.used_flags or mem.u16(self.gpa_used) != flags:
            self.used_flags = flags
            mem.set_u16(self.gpa_used, flags)
