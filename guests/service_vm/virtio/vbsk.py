"""Kernel back ends: VBS-K, the virtio back end in the Service VM's kernel (ACRN's
devicemodel/hw/pci/virtio/vhost.c and virtio_kernel.c; Linux drivers/vhost/vhost.c, net.c;
drivers/virt/acrn/ioeventfd.c and irqfd.c).

The device model keeps the control plane (PCI configuration, features, status). When the
driver sets DRIVER_OK it hands the data plane over (vhost_dev_start): for each queue it gives
the kernel the ring's size, addresses and next index (VHOST_SET_VRING_NUM/BASE/ADDR), binds a
kick eventfd to the queue's notify address with HSM (ACRN_IOCTL_IOEVENTFD: the legacy
QUEUE_NOTIFY port with the queue index to match, or the modern notify address) and a call
eventfd to the queue's MSI-X message (ACRN_IOCTL_IRQFD), then gives both to the kernel
(VHOST_SET_VRING_KICK/CALL). From then on a notification is an IOREQ that HSM's ioeventfd
client completes in the kernel, waking the back end's worker without waking the device model;
the worker takes the chains and signals the call eventfd, whose irqfd injects the MSI
(HC_INJECT_MSI) in the worker's context. A reset takes the rings back (vhost_dev_stop).
vhost_dev_start accepts MSI-X only: with INTx the device model keeps serving the queues.

A driver error the kernel finds (a broken ring) stops that queue and is reported to the
device model (vhost's error eventfd), which sets DEVICE_NEEDS_RESET.

Back ends here:
- VhostNet: vhost-net (`-s N,virtio-net,tapX,vhost`): transmit frames go straight from the
  ring into the tap and the bridge; frames for the tap are read by the worker into receive
  buffers, and wait in the tap while none is free (vhost_net handle_tx, handle_rx).
- VbsRng: virtio-rnd's VBS-K back end (`kernel=on`, ACRN's /dev/vbs_rng), through the same
  ioeventfd/irqfd path (ACRN's vbs_rng claimed the notify port as its own ioreq client).
"""

from __future__ import annotations

import copy
import struct

from acrn_sim.guests.service_vm.eventfd import EventFd
from acrn_sim.guests.service_vm.hsm_ioeventfd import Ioeventfd
from acrn_sim.guests.service_vm.hsm_irqfd import HsmIrqfd
from acrn_sim.guests.service_vm.kernel import Wait, WaitQueue
from acrn_sim.guests.service_vm.virtio.vring import (
    VIRTIO_MSI_NO_VECTOR,
    Chain,
    GuestMemoryError,
    RingError,
)

# ioctls per queue at start: VHOST_SET_VRING_NUM, _BASE, _ADDR, _CALL, _KICK
VHOST_VQ_IOCTLS = 5
VHOST_DEV_IOCTLS = 3  # VHOST_SET_OWNER, VHOST_SET_FEATURES, VHOST_SET_MEM_TABLE


class KernelBackend:
    NAME = "vhost"

    def __init__(self, dev) -> None:
        self.dev = dev
        k = self.k = dev.kernel
        n = len(dev.vqs)
        self.kick = [EventFd(k, f"{dev.name} kick{q}") for q in range(n)]
        self.call = [EventFd(k, f"{dev.name} call{q}") for q in range(n)]
        for q, fd in enumerate(self.kick):
            fd.callbacks.append(self._poll_wakeup(q))
        self.vqs = []
        self.ioeventfds: list[Ioeventfd] = []
        self.irqfds: list[HsmIrqfd] = []
        self.active = False
        self.epoch = 0
        self.stopped = False
        self.broken: set[int] = set()
        self.pending: dict[int, int | None] = {}  # queue -> origin of the kick that queued it
        self.wq = WaitQueue(k, f"vhost-{dev.name}")
        self.idle = True
        self.worker = None
        self._buf: int | None = None

    # ------------------------------------------------- device model side
    def start(self, dev):
        """Generator, in the device model's I/O thread: vhost_dev_start and the ioeventfd and
        irqfd bindings. True when the kernel owns the rings."""
        k, c = self.k, self.k.cycles
        bus = dev.bus
        yield c["vhost_ioctl"] * VHOST_DEV_IOCTLS
        if self._buf is None:
            self._buf = k.alloc(0x1000)
            if self._buf is None:
                dev.note("no Service VM memory for the irqfds: VBS-K not started")
                return False
        hsm_ioeventfd = bus.ioeventfd()
        self.mem = dev.mem  # VHOST_SET_MEM_TABLE: the device model's mapping of guest RAM
        self.vqs = [copy.copy(vq) for vq in dev.vqs]
        self.broken.clear()
        for q, vq in enumerate(self.vqs):
            if not vq.enabled:
                continue
            yield c["vhost_ioctl"] * VHOST_VQ_IOCTLS
            kind, addr, data = dev.notify_address(q)
            fd = Ioeventfd(self.kick[q], addr, 2, data, kind == "pio", owner=self)
            ret = yield from hsm_ioeventfd.assign(fd)
            if ret == 0:
                self.ioeventfds.append(fd)
            msg = dev.msix_message(vq.msix_idx) if vq.msix_idx != VIRTIO_MSI_NO_VECTOR else None
            if msg is not None:
                yield c["dm_ioctl"]  # ACRN_IOCTL_IRQFD
                self.irqfds.append(
                    HsmIrqfd(
                        k,
                        bus.vmid,
                        self.call[q],
                        msg[0],
                        msg[1],
                        self._buf,
                        delivered=lambda q=q: dev.irq_delivered(q),
                    )  # fmt: skip
                )
        self.active = True
        self.epoch += 1
        if self.worker is None:
            self.worker = k.spawn(f"vhost-{bus.vm_name}-{dev.CLASS_NAME}", self._worker(),
                                  bus.priority)  # fmt: skip
        for q, vq in enumerate(self.vqs):  # vhost_poll_start: look at each ring once
            if vq.enabled:
                self._queue(q, None)
        return True

    def quiesce(self) -> None:
        """At the device's reset, before the teardown: the worker stops touching the rings."""
        self.active = False
        self.epoch += 1

    def stop(self, dev):
        """Generator: vhost_dev_stop and the unbinding of the eventfds."""
        self.quiesce()
        hsm_ioeventfd = dev.bus.ioeventfd()
        for fd in self.ioeventfds:
            yield from hsm_ioeventfd.deassign(fd)
        for irqfd in self.irqfds:
            yield self.k.cycles["dm_ioctl"]
            irqfd.release()
        self.ioeventfds.clear()
        self.irqfds.clear()
        yield self.k.cycles["vhost_ioctl"] * (2 * len(self.vqs) + 1)  # KICK/CALL -1, RESET
        for fd in self.kick + self.call:
            fd.consume()
        self.pending.clear()

    def stop_worker(self) -> None:
        self.stopped = True
        self.quiesce()
        self.wq.wake_up()

    def kernel_kick(self, matched: bool, value: int) -> None:
        """HSM's ioeventfd client took a notification for this device (instrument)."""
        s = self.dev.stats
        if s.counting:
            s.exits += 1
            s.ioreqs_kernel += 1
            if matched:
                s.kicks += 1
        if not matched:
            self.dev.note(f"notify for queue {value}, which does not exist (dropped by HSM's "
                          "ioeventfd)")  # fmt: skip

    @property
    def name(self) -> str:
        return self.dev.CLASS_NAME

    # ----------------------------------------------------------- worker
    def _poll_wakeup(self, q: int):
        def wakeup():  # vhost_poll_wakeup: the kick eventfd was signalled
            self._queue(q, self.kick[q].origin)
            return
            yield

        return wakeup

    def _queue(self, q: int, origin: int | None) -> None:
        """vhost_poll_queue: work for queue q; wake the worker."""
        if q not in self.pending or self.pending[q] is None:
            self.pending[q] = origin
        if self.idle:
            self.idle = False
            self.wq.wake_up()

    def _worker(self):
        """vhost_worker: the kernel thread that serves the device's queues."""
        k = self.k
        stats = self.dev.stats
        while not self.stopped:
            if not self.pending:
                self.idle = True
                while self.idle and not self.stopped:
                    yield Wait(self.wq)
                if self.stopped:
                    return
                if stats.counting:
                    stats.kernel_wakeups += 1
                yield k.cycles["vhost_worker_wakeup"]
                continue
            q = next(iter(self.pending))
            origin = self.pending.pop(q)
            self.kick[q].consume()
            if not self.active or q in self.broken or q >= len(self.vqs):
                continue
            epoch = self.epoch
            try:
                yield from self.handle(q, origin, epoch)
            except (RingError, GuestMemoryError) as e:
                if epoch == self.epoch:
                    self.vq_err(q, str(e))

    def vq_err(self, q: int, what: str) -> None:
        """vq_err: the queue stops; the device model hears of it (vhost's error eventfd)."""
        self.broken.add(q)
        dev = self.dev

        def report():
            yield self.k.cycles["dm_worker_wakeup"]
            dev.device_error(f"{what} (found by the kernel back end)")
            yield from dev.flush_interrupts()

        self.k.spawn(f"acrn-dm {dev.bus.vm_name} vhost error", report(), dev.bus.priority)

    # --------------------------------------------------- ring helpers
    def take(self, q: int, origin: int | None, limit: int) -> Chain | None:
        vq = self.vqs[q]
        idx = vq.last_avail
        chain = vq.getchain(self.mem)
        if chain is None:
            return None
        chain.started = self.k.now()
        chain.notified = origin if ((limit - idx - 1) & 0xFFFF) < 0x8000 else None
        return chain

    def complete(self, q: int, chain: Chain, length: int) -> None:
        self.vqs[q].relchain(self.mem, chain.head, length)
        self.dev.record_completion(q, chain)

    def keep_taking(self, q: int) -> bool:
        vq = self.vqs[q]
        if vq.enable_notify(self.mem):
            vq.disable_notify(self.mem)
            return True
        return False

    def signal(self, q: int):
        """Generator: vhost_signal: the call eventfd, if the driver wants an interrupt."""
        vq = self.vqs[q]
        before = vq.save_used
        stats = self.dev.stats
        if vq.endchains(self.mem, True):
            if stats.counting:
                stats.interrupts += 1
            if any(fd.eventfd is self.call[q] for fd in self.irqfds):
                yield from self.call[q].signal()
        else:
            self.dev.awaiting_irq[q].clear()
            if stats.counting and vq.used_idx != before:
                stats.suppressed_interrupts += 1

    def copy_cost(self, nbytes: int) -> int:
        return self.k.cycles["virtio_copy_per_kib"] * nbytes // 1024

    def handle(self, q: int, origin: int | None, epoch: int):
        raise NotImplementedError
        yield


class VbsRng(KernelBackend):
    """virtio-rnd's kernel back end: fill every available buffer, then one decision."""

    NAME = "vbs_rng"

    def handle(self, q: int, origin: int | None, epoch: int):
        vq = self.vqs[q]
        limit = vq.avail_idx(self.mem)
        vq.disable_notify(self.mem)
        while True:
            chain = self.take(q, origin, limit)
            if chain is None:
                if self.keep_taking(q):
                    continue
                break
            segs = chain.writable()
            n = sum(length for _, length in segs)
            yield self.k.cycles["virtio_vq_getchain"] + self.copy_cost(n)  # get_random_bytes
            if epoch != self.epoch:
                return
            written = self.dev.write_segments(segs, self.dev.entropy(n))
            self.complete(q, chain, written)
        yield from self.signal(q)


class VhostNet(KernelBackend):
    """vhost-net: handle_tx from the kick, handle_rx from the tap (or an rx kick)."""

    NAME = "vhost-net"

    def tap_readable(self) -> None:
        self._queue(0, None)

    def handle(self, q: int, origin: int | None, epoch: int):
        if q == 1:
            yield from self._tx(origin, epoch)
        else:
            yield from self._rx(epoch)

    def _tx(self, origin: int | None, epoch: int):
        k, dev = self.k, self.dev
        vq = self.vqs[1]
        limit = vq.avail_idx(self.mem)
        vq.disable_notify(self.mem)
        hdr = dev.hdr_len()
        while True:
            chain = self.take(1, origin, limit)
            if chain is None:
                if self.keep_taking(1):
                    continue
                break
            data = dev.read_segments(chain.readable())
            yield (
                k.cycles["virtio_vq_getchain"]
                + self.copy_cost(len(data))
                + k.cycles["bridge_forward"]
            )
            if epoch != self.epoch:
                return
            if data[hdr:]:
                dev.tap.transmit(data[hdr:], k.now())
            self.complete(1, chain, 0)
        yield from self.signal(1)

    def _rx(self, epoch: int):
        k, dev = self.k, self.dev
        vq = self.vqs[0]
        tap = dev.tap
        hdr = bytearray(dev.hdr_len())
        if dev.negotiated >> 15 & 1:  # VIRTIO_NET_F_MRG_RXBUF: num_buffers = 1
            hdr[10:12] = struct.pack("<H", 1)
        vq.disable_notify(self.mem)
        got = False
        while tap.queue:
            chain = vq.getchain(self.mem)
            if chain is None:
                # no buffer: the frames wait in the tap; the driver's next refill notifies
                if self.keep_taking(0):
                    continue
                break
            frame, arrived = tap.queue.popleft()
            chain.started, chain.notified = k.now(), arrived
            yield k.cycles["virtio_vq_getchain"] + self.copy_cost(len(frame))
            if epoch != self.epoch:
                return
            n = dev.write_segments(chain.writable(), bytes(hdr) + frame)
            self.complete(0, chain, n)
            got = True
        if got:
            yield from self.signal(0)
