"""A wrong answer to lab 4: an RTVM, but sharing pCPU 1 with the busy VM (the simulator
refuses that) -- so here a standard VM with the latency guest on its own pCPU, without
LAPIC passthrough: its timer interrupts still go through the hypervisor."""

from acrn_sim.guests import image_path
from acrn_sim.scenarios import user_vm, with_service_vm


def scenario(opts):
    rt = user_vm(image_path("workload.elf"), cmdline="cyclic 200 500", name="LATENCY_VM", pcpu=2)
    busy = user_vm(image_path("workload.elf"), cmdline="io 1000000 20", name="BUSY_VM", pcpu=1)
    busy.watched = False
    return with_service_vm([rt, busy], busy=True)
