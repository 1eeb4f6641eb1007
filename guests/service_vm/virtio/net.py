"""virtio-net on the Service VM's bridge (virtio 1.0 §5.1; ACRN
devicemodel/hw/pci/virtio/virtio_net.c).

    -s N,virtio-net,tapNAME[,vhost][,mac=XX:XX:XX:XX:XX:XX]     (or tap=NAME)

Queues: receiveq 0, transmitq 1 (no control queue, as ACRN). Every buffer starts with a
virtio_net_hdr: 12 bytes with VIRTIO_F_VERSION_1 or VIRTIO_NET_F_MRG_RXBUF, else 10
(§5.1.6); received frames get a zeroed header (num_buffers 1 with MRG_RXBUF). The MAC is the
option's, else 00:16:3E and 3 bytes of the MD5 of "slot-func-VM name" (ACRN's, with the VM
name as mac_seed); the link is up (the tap opened).

VBS-U, as ACRN: the transmit thread takes every frame out (VRING_USED_F_NO_NOTIFY while it
works), writes it into the tap, and decides once whether to interrupt; frames the bridge
forwards to the tap are read by the device model's event loop (virtio_net_tap_rx), which
fills receive buffers and decides once. A receive notification only marks the queue ready
(virtio_net_ping_rxq); frames that arrive before it, or when no buffer is free, are dropped
(ACRN reads them into a dummy buffer).

VBS-K (`vhost`, ACRN's vhost-net, or `vbsk`): at DRIVER_OK the rings go to vhost-net
(vbsk.py), which reads the tap itself; frames wait in the tap while no buffer is free.

Differences from ACRN: transmitted chains are returned with length 0 (nothing was written;
ACRN reports the chain's length); the model offers EVENT_IDX and VERSION_1. Queue size 1024
(VIRTIO_NET_RINGSZ).
"""

from __future__ import annotations

import hashlib
import re
import struct
from dataclasses import dataclass

from acrn_sim.guests.service_vm.kernel import Wait, WaitQueue
from acrn_sim.guests.service_vm.virtio import split_options, take_common
from acrn_sim.guests.service_vm.virtio.pci import VirtioPciDev
from acrn_sim.guests.service_vm.virtio.vring import (
    VIRTIO_F_VERSION_1,
    VRING_USED_F_NO_NOTIFY,
    GuestMemoryError,
    RingError,
)
from acrn_sim.sim import ConfigError

F_MAC, F_MRG_RXBUF, F_STATUS, F_NOTIFY_ON_EMPTY = 5, 15, 16, 24
RXQ, TXQ = 0, 1
MAC_RE = re.compile(r"([0-9A-Fa-f]{1,2}:){5}[0-9A-Fa-f]{1,2}")


@dataclass(frozen=True)
class NetOptions:
    transport: str
    vbsk: bool
    tap: str
    mac: bytes | None


def parse_mac(text: str, where: str) -> bytes:
    """virtio_net_parsemac: six hex bytes, unicast, not all zero."""
    if not MAC_RE.fullmatch(text):
        raise ConfigError(f"{where}: invalid MAC {text!r}")
    mac = bytes(int(b, 16) for b in text.split(":"))
    if mac[0] & 1 or not any(mac):
        raise ConfigError(f"{where}: invalid MAC {text} (multicast or zero)")
    return mac


class VirtioNet(VirtioPciDev):
    CLASS_NAME = "virtio-net"
    VIRTIO_TYPE = 1
    LEGACY_ID = 0x1000  # VIRTIO_DEV_NET
    PCI_CLASS = 0x020000  # PCIC_NETWORK
    QUEUE_SIZES = (1024, 1024)
    CFGSIZE = 8  # struct virtio_net_config: mac[6], status

    @classmethod
    def parse_options(cls, config: str | None, where: str) -> NetOptions:
        transport, vbsk, items = take_common(split_options(config), where)
        if items and items[0].startswith("tap=") and len(items[0]) > 4:
            items[0] = items[0][4:]  # ACRN 3.x writes tap=NAME
        elif not items or not items[0].startswith(("tap", "vmnet")):
            raise ConfigError(f"{where}: virtio-net needs a tap name (tapNAME, vmnetNAME or "
                              "tap=NAME)")  # fmt: skip
        tap, mac = items[0], None
        for item in items[1:]:
            if item == "vhost":
                vbsk = True
            elif item.startswith("mac="):
                mac = parse_mac(item[4:], where)
            else:
                raise ConfigError(f"{where}: unknown virtio-net option {item!r} "
                                  "(vhost, mac=..., legacy, modern, vbsk)")  # fmt: skip
        return NetOptions(transport, vbsk, tap, mac)

    def __init__(self, bus, opt) -> None:
        o: NetOptions = opt.parsed
        self.tap = bus.dm.kernel.net_bridge.add_tap(f"acrn_{o.tap}")
        if o.mac is None:
            digest = hashlib.md5(f"{opt.slot}-{opt.func}-{bus.vm_name}".encode()).digest()
            self.mac = bytes([0x00, 0x16, 0x3E]) + digest[:3]
        else:
            self.mac = o.mac
        self.rx_ready = False
        super().__init__(bus, opt)
        self.rx_wq = WaitQueue(bus.kernel, f"{self.name} tap")
        self.rx_idle = [True]
        self.tap.reader = self._tap_readable
        if o.vbsk:
            from acrn_sim.guests.service_vm.virtio.vbsk import VhostNet

            self.kernel_backend = VhostNet(self)
        bus.kernel.spawn(f"acrn-dm {bus.vm_name} mevent {self.tap.name}", self._rx_loop(),
                         bus.priority)  # fmt: skip

    def features(self) -> int:
        return 1 << F_MAC | 1 << F_MRG_RXBUF | 1 << F_STATUS | 1 << F_NOTIFY_ON_EMPTY

    def worker_name(self, i: int) -> str:
        return "vtnet tx thread"

    def hdr_len(self) -> int:
        n = self.negotiated
        return 12 if n >> VIRTIO_F_VERSION_1 & 1 or n >> F_MRG_RXBUF & 1 else 10

    def devcfg_read(self, offset: int, size: int) -> int | None:
        return int.from_bytes((self.mac + struct.pack("<H", 1))[offset : offset + size], "little")

    def devcfg_write(self, offset: int, size: int, value: int) -> None:
        if offset + size <= 6:  # the driver may change the MAC (virtio_net_cfgwrite)
            mac = bytearray(self.mac)
            mac[offset : offset + size] = value.to_bytes(size, "little")
            self.mac = bytes(mac)

    def device_reset(self) -> None:
        self.rx_ready = False

    def deinit(self) -> None:
        super().deinit()
        self.tap.close()
        self.rx_wq.wake_up()

    # ------------------------------------------------------------------ tx
    def notified(self, vq) -> None:
        pass

    def queue_work(self, q: int) -> None:
        if q == RXQ:  # virtio_net_ping_rxq: the receive queue is ready; no thread wakes
            if not self.rx_ready:
                self.rx_ready = True
                vq = self.vqs[RXQ]
                vq.used_flags |= VRING_USED_F_NO_NOTIFY
                try:
                    self.mem.set_u16(vq.gpa_used, vq.used_flags)
                except GuestMemoryError:  # a ring outside RAM broke the device already
                    pass
            if self.polling and self.tap.queue:
                self._tap_readable()
            return
        super().queue_work(q)

    def process(self, vq, epoch: int):
        """virtio_net_tx_thread / virtio_net_proctx: every available frame goes out."""
        k = self.kernel
        if vq.index != TXQ:
            return False
        vq.disable_notify(self.mem)
        hdr = self.hdr_len()
        while True:
            chain = self.take(vq)
            if chain is None:
                if self.keep_taking(vq):
                    continue
                break
            data = self.read_segments(chain.readable())
            frame = data[hdr:]
            yield k.cycles["dm_syscall"] + self.copy_cost(len(data)) + k.cycles["bridge_forward"]
            if epoch != self.epoch:
                return False
            if frame:
                self.tap.transmit(frame, k.now())
            self.complete(vq, chain, 0)
        self.end(vq, True)
        return False

    # ------------------------------------------------------------------ rx
    def _tap_readable(self) -> None:
        if self.kernel_active:
            self.kernel_backend.tap_readable()
        elif self.rx_idle[0]:
            self.rx_idle[0] = False
            self.rx_wq.wake_up()

    def _rx_loop(self):
        """The device model's event loop for the tap (mevent -> virtio_net_rx_callback)."""
        k = self.kernel
        while not self.stopped:
            if not self.tap.queue or self.kernel_active:
                self.rx_idle[0] = True
                while self.rx_idle[0] and not self.stopped:
                    yield Wait(self.rx_wq)
                if self.stopped:
                    return
                if self.stats.counting:
                    self.stats.dm_wakeups += 1
                yield k.cycles["dm_worker_wakeup"]
                continue
            if self.kernel_active:
                continue
            epoch = self.epoch
            try:
                yield from self._tap_rx(epoch)
            except (RingError, GuestMemoryError) as e:
                if epoch == self.epoch:
                    self.device_error(str(e))
            yield from self.flush_interrupts()

    def _tap_rx(self, epoch: int):
        """virtio_net_tap_rx: fill receive buffers with the tap's frames, one decision at the
        end; frames with nowhere to go are dropped."""
        k = self.kernel
        vq = self.vqs[RXQ]
        if not self.rx_ready or not self.live or not vq.enabled:
            self.tap.dropped += len(self.tap.queue)
            self.tap.queue.clear()
            return
        hdr = bytearray(self.hdr_len())
        if self.negotiated >> F_MRG_RXBUF & 1:
            hdr[10:12] = struct.pack("<H", 1)
        while self.tap.queue:
            chain = vq.getchain(self.mem)
            if chain is None:
                self.tap.dropped += len(self.tap.queue)
                self.tap.queue.clear()
                break
            frame, arrived = self.tap.queue.popleft()
            chain.started, chain.notified = k.now(), arrived
            yield k.cycles["dm_syscall"] + self.copy_cost(len(frame))
            if epoch != self.epoch:
                return
            n = self.write_segments(chain.writable(), bytes(hdr) + frame)
            self.complete(vq, chain, n)
        self.end(vq, True)
