"""Lab 6, reference solution: the board's sensor passed through to the User VM (acrn-dm's
-s 7,passthru,00/1f/0): register accesses reach the device with no exit, its DMA goes through
the VM's IOMMU domain, its MSI is remapped and injected by the hypervisor."""

from acrn_sim.guests import image_path
from acrn_sim.scenarios import user_vm, with_service_vm
from acrn_sim.sim.platform import PlatformConfig

PLATFORM = PlatformConfig(devices=["00:1f.0,sensor"])


def scenario(opts):
    vm = user_vm(image_path("sensor.elf"), devices=["7,passthru,00/1f/0"])
    return with_service_vm([vm])
