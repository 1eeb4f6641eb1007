"""Lab 4, reference solution: the latency guest as an RTVM with LAPIC passthrough on a pCPU
of its own; the busy User VM keeps pCPU 1 and the busy Service VM pCPU 0."""

from acrn_sim.guests import image_path
from acrn_sim.scenarios import user_vm, with_service_vm


def scenario(opts):
    rt = user_vm(image_path("workload.elf"), cmdline="cyclic 200 500", name="LATENCY_VM", pcpu=2)
    rt.vm_type, rt.lapic_passthrough, rt.priority = "RTVM", True, "PRIO_HIGH"
    rt.io_completion_polling = True
    busy = user_vm(image_path("workload.elf"), cmdline="io 1000000 20", name="BUSY_VM", pcpu=1)
    busy.watched = False
    return with_service_vm([rt, busy], busy=True)
