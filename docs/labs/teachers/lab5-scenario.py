"""Lab 5, reference solution: virtio-rnd's in-kernel back end (VBS-K): the kick goes from
HSM's ioeventfd to the kernel's worker, and the interrupt back through an irqfd, without
waking the device model."""

from acrn_sim.guests import image_path
from acrn_sim.scenarios import user_vm, with_service_vm


def scenario(opts):
    vm = user_vm(image_path("vbench.elf"), cmdline="dev=rng n=256 batch=8 depth=8",
                 devices=["6,virtio-rnd,kernel=on"])  # fmt: skip
    return with_service_vm([vm])
