"""The device model's virtio devices (ACRN devicemodel/hw/pci/virtio/): the PCI transport and
virtqueues (pci.py, vring.py), the back ends (blk.py, net.py, console.py, rnd.py) and the
kernel back ends they can hand their rings to (vbsk.py).

`-s` classes, as acrn-dm names them (virtio-rng is accepted for virtio-rnd):

    -s N,virtio-blk,FILE[,ro][,writeback|writethru]
    -s N,virtio-net,tapNAME[,vhost][,mac=XX:XX:XX:XX:XX:XX]
    -s N,virtio-console,[@]stdio:PORTNAME | [@]file:PORTNAME=PATH
    -s N,virtio-rnd[,kernel=on][,seed=N]

and, on every one, the model's transport choice `legacy` or `modern` (default: both, a
transitional device) and `vbsk` (the kernel back end: what `vhost` and `kernel=on` mean).
"""

from __future__ import annotations

from acrn_sim.sim import ConfigError

TRANSPORTS = ("legacy", "modern")


def split_options(config: str | None) -> list[str]:
    return [p.strip() for p in config.split(",")] if config else []


def take_common(items: list[str], where: str) -> tuple[str, bool, list[str]]:
    """The model's own sub-options: transport and `vbsk`. Returns (transport, vbsk, rest)."""
    transport, vbsk, rest = "transitional", False, []
    for item in items:
        if item in TRANSPORTS:
            if transport != "transitional" and transport != item:
                raise ConfigError(f"{where}: both legacy and modern given")
            transport = item
        elif item == "vbsk":
            vbsk = True
        elif item:
            rest.append(item)
    return transport, vbsk, rest


def _classes() -> dict:
    from acrn_sim.guests.service_vm.virtio.blk import VirtioBlk
    from acrn_sim.guests.service_vm.virtio.console import VirtioConsole
    from acrn_sim.guests.service_vm.virtio.net import VirtioNet
    from acrn_sim.guests.service_vm.virtio.rnd import VirtioRnd

    return {
        "virtio-blk": VirtioBlk,
        "virtio-net": VirtioNet,
        "virtio-console": VirtioConsole,
        "virtio-rnd": VirtioRnd,
        "virtio-rng": VirtioRnd,
    }


class _Classes(dict):
    """The class table, filled at first use (the device modules import this package)."""

    def _fill(self) -> None:
        if not super().__len__():
            self.update(_classes())

    def __getitem__(self, key):
        self._fill()
        return super().__getitem__(key)

    def __contains__(self, key) -> bool:
        self._fill()
        return super().__contains__(key)

    def __iter__(self):
        self._fill()
        return super().__iter__()

    def __len__(self) -> int:
        self._fill()
        return super().__len__()

    def keys(self):
        self._fill()
        return super().keys()


DEVICE_CLASSES = _Classes()
