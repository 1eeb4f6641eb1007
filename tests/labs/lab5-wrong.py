"""A wrong answer to lab 5: the user-space back end, only polled more often."""

from acrn_sim.guests import image_path
from acrn_sim.scenarios import user_vm, with_service_vm


def scenario(opts):
    vm = user_vm(image_path("vbench.elf"), cmdline="dev=rng n=256 batch=8 depth=8",
                 devices=["6,virtio-rnd"])  # fmt: skip
    return with_service_vm([vm])
