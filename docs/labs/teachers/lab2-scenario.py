"""Lab 2, reference solution: a second User VM that floods its device model with port I/O
shares Service VM vCPU 0 (HSM and both device models) with the timing guest's I/O."""

from acrn_sim.guests import image_path
from acrn_sim.scenarios import user_vm, with_service_vm


def scenario(opts):
    probe = user_vm(image_path("timing.elf"), memory=16 << 20, pcpu=1, name="PROBE")
    flood = user_vm(image_path("bench.elf"), memory=16 << 20, cmdline="pio 3000", pcpu=2,
                    name="FLOOD")  # fmt: skip
    flood.watched = False
    return with_service_vm([probe, flood])
