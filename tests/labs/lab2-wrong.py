"""A wrong answer to lab 2: the second VM is pre-launched, so it has no device model and its
I/O never reaches the Service VM."""

from acrn_sim.guests import image_path
from acrn_sim.scenarios import pre_launched, user_vm, with_service_vm


def scenario(opts):
    probe = user_vm(image_path("timing.elf"), memory=16 << 20, pcpu=1, name="PROBE")
    flood = pre_launched(image_path("bench.elf"), memory=16 << 20, cmdline="pio 3000", pcpu=2,
                         name="FLOOD")  # fmt: skip
    flood.watched = False
    return [flood, *with_service_vm([probe])]
