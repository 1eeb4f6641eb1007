"""Cross-pCPU event latency: a fixed IPI from a vCPU on pCPU 1 to a vCPU on pCPU 2 that runs
a busy compute loop, measured by the guests themselves with RDTSC (guests/src/ipilat.c).

    acrn-sim run scenarios/ipi_latency.py [--set n=500] [--cost sync_lookahead=240]

It prints `IPI delivery: min A max B cycles`. The minimum is the modelled IPI path: the
sender's APIC-access exit up to its handler, the receiver's external-interrupt exit, and the
injection at its next VM entry. The spread above it is how far the receiver's slice of guest
code may run ahead of the sender (`sync_lookahead`, hv/common/lookahead.py), never a whole
scheduler quantum.
"""

from acrn_sim.guests import image_path
from acrn_sim.scenarios import param, pre_launched, service_vm

PARAMS = ("n",)


def scenario(opts):
    n = param(opts, "n", 200)
    vm = pre_launched(image_path("ipilat.elf"), memory=16 << 20, cmdline=f"n={n}", name="IPI_VM")
    vm.cpu_affinity = [1, 2]
    return [vm, service_vm(busy=opts.service_vm_busy)]
