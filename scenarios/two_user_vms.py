"""Two User VMs share the Service VM: one floods the device model with port I/O, the other
measures its own I/O round trip. Compare with the timing guest alone:

    acrn-sim run scenarios/two_user_vms.py --report
    acrn-sim run guests/images/timing.elf

The second VM's round trip grows because both VMs' requests are served, one after the other,
by HSM and the device models on Service VM vCPU 0.
"""

from acrn_sim.guests import image_path
from acrn_sim.scenarios import user_vm, with_service_vm


def scenario(opts):
    flood = user_vm(image_path("bench.elf"), memory=16 << 20, cmdline="pio 3000", pcpu=1,
                    name="POST_VM1")  # fmt: skip
    flood.watched = False  # the run ends when the measuring VM is done
    probe = user_vm(image_path("timing.elf"), memory=16 << 20, pcpu=2, name="POST_VM2")
    return with_service_vm([flood, probe], busy=opts.service_vm_busy)
