"""virtio-rnd, the entropy device (virtio 1.0 §5.4; ACRN devicemodel/hw/pci/virtio/virtio_rnd.c):
one queue of device-writable buffers that the device fills.

VBS-U: ACRN's rx thread (virtio_rnd_get_entropy), woken by a notification, fills every
available buffer and then decides once whether to interrupt. VBS-K (`kernel=on`, ACRN's
VBS-K option for this device, or `vbsk`): at DRIVER_OK the device model hands the ring to a
kernel back end (vbsk.py) and the notifications go to it through HSM.

The entropy is a PRNG seeded from the VM's name, the slot and `seed=N` (default 0), so that
runs are reproducible; ACRN reads /dev/random. Queue size 64 (VIRTIO_RND_RINGSZ).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from acrn_sim.guests.service_vm.virtio import split_options, take_common
from acrn_sim.guests.service_vm.virtio.pci import VirtioPciDev
from acrn_sim.sim import ConfigError

PRODUCED_KEPT = 1 << 16


@dataclass(frozen=True)
class RndOptions:
    transport: str
    vbsk: bool
    seed: int


class VirtioRnd(VirtioPciDev):
    CLASS_NAME = "virtio-rnd"
    VIRTIO_TYPE = 4
    LEGACY_ID = 0x1005  # VIRTIO_DEV_RANDOM
    PCI_CLASS = 0x100000  # PCIC_CRYPTO
    QUEUE_SIZES = (64,)
    CFGSIZE = 0

    @classmethod
    def parse_options(cls, config: str | None, where: str) -> RndOptions:
        transport, vbsk, rest = take_common(split_options(config), where)
        seed = 0
        for item in rest:
            key, eq, value = item.partition("=")
            if key == "kernel" and eq and value in ("on", "off"):
                vbsk = vbsk or value == "on"
            elif key == "seed" and eq and value.isdigit():
                seed = int(value)
            else:
                raise ConfigError(f"{where}: unknown virtio-rnd option {item!r} "
                                  "(kernel=on, seed=N, legacy, modern, vbsk)")  # fmt: skip
        return RndOptions(transport, vbsk, seed)

    def __init__(self, bus, opt) -> None:
        super().__init__(bus, opt)
        self.rng = random.Random(f"virtio-rnd:{bus.vm_name}:{opt.slot}:{opt.parsed.seed}")
        self.produced = bytearray()  # the first PRODUCED_KEPT bytes handed out (instrument)
        if opt.parsed.vbsk:
            from acrn_sim.guests.service_vm.virtio.vbsk import VbsRng

            self.kernel_backend = VbsRng(self)

    def worker_name(self, i: int) -> str:
        return "vtrnd rx thread"

    def entropy(self, n: int) -> bytes:
        data = self.rng.randbytes(n)
        if len(self.produced) < PRODUCED_KEPT:
            self.produced += data[: PRODUCED_KEPT - len(self.produced)]
        return data

    def process(self, vq, epoch: int):
        """virtio_rnd_get_entropy: fill every available buffer, then one interrupt decision."""
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
            yield k.cycles["dm_syscall"] + self.copy_cost(n)  # read(/dev/random)
            if epoch != self.epoch:
                return False
            written = self.write_segments(segs, self.entropy(n))
            self.complete(vq, chain, written)
        self.end(vq, True)
        return False
