"""A wrong answer to lab 3: a faster device model is not polling."""

from acrn_sim.guests import image_path
from acrn_sim.scenarios import user_vm, with_service_vm


def scenario(opts):
    opts.profile_obj.override("dm_wakeup=12000")
    return with_service_vm([user_vm(image_path("timing.elf"))])
