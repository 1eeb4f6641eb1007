"""Lab 3, reference solution: the timing guest's requests complete by polling
(GUEST_FLAG_IO_COMPLETION_POLLING): no HC_NOTIFY_REQUEST_FINISH, no wake-up."""

from acrn_sim.guests import image_path
from acrn_sim.scenarios import user_vm, with_service_vm


def scenario(opts):
    return with_service_vm([user_vm(image_path("timing.elf"), polling=True)])
