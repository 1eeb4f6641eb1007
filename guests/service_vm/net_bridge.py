"""The Service VM's network switch: a Linux bridge (acrn-br0, as ACRN's setup guides create it)
with one tap device per User VM NIC (Linux drivers/net/tun.c, net/bridge/). acrn-dm names a
NIC's tap "acrn_" + the name given to -s (virtio_net_tap_setup).

The bridge learns each frame's source MAC on its ingress port and forwards a frame to the port
that learned its destination; broadcast, multicast and unknown destinations go to every other
port (a frame never goes back to its ingress port). A tap holds the frames forwarded to it
until its reader takes them: the device model's event loop (VBS-U) or vhost-net's worker
(VBS-K). Its queue holds at most 500 frames (tun's default queue length); more are dropped.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from acrn_sim.sim import ConfigError

TUN_READQ_SIZE = 500
ETH_ZLEN = 60  # frames shorter than this are padded (virtio_net_tap_tx)


class Tap:
    def __init__(self, bridge: NetBridge, name: str) -> None:
        self.bridge = bridge
        self.name = name
        self.queue: deque[tuple[bytes, int]] = deque()  # (frame, cycle it arrived)
        self.reader: Callable[[], None] | None = None  # wakes whoever reads this tap
        self.rx_frames = self.tx_frames = self.dropped = 0

    def transmit(self, frame: bytes, now: int) -> None:
        """The reader writes a frame into the tap: it enters the bridge."""
        if len(frame) < ETH_ZLEN:
            frame = frame + bytes(ETH_ZLEN - len(frame))
        self.tx_frames += 1
        self.bridge.forward(self, frame, now)

    def deliver(self, frame: bytes, now: int) -> None:
        if len(self.queue) >= TUN_READQ_SIZE:
            self.dropped += 1
            return
        self.queue.append((frame, now))
        self.rx_frames += 1
        if self.reader is not None:
            self.reader()

    def close(self) -> None:
        self.bridge.ports.pop(self.name, None)
        for mac in [m for m, p in self.bridge.fdb.items() if p is self]:
            del self.bridge.fdb[mac]
        self.reader = None


class NetBridge:
    def __init__(self, name: str = "acrn-br0") -> None:
        self.name = name
        self.ports: dict[str, Tap] = {}
        self.fdb: dict[bytes, Tap] = {}  # learned MAC -> port

    def add_tap(self, name: str) -> Tap:
        if name in self.ports:
            raise ConfigError(f"tap {name} is in use by another NIC (each NIC needs its own tap)")
        tap = self.ports[name] = Tap(self, name)
        return tap

    def forward(self, src: Tap, frame: bytes, now: int) -> None:
        dst_mac, src_mac = frame[0:6], frame[6:12]
        if not src_mac[0] & 1:
            self.fdb[src_mac] = src
        port = None if dst_mac[0] & 1 else self.fdb.get(dst_mac)
        if port is not None:
            if port is not src:
                port.deliver(frame, now)
            return
        for p in list(self.ports.values()):
            if p is not src:
                p.deliver(frame, now)
