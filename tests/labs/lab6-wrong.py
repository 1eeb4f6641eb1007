"""A wrong answer to lab 6: the sensor behind virtio. Faster than emulation, but not twice,
and its DMA is the device model's copy, not the device's through VT-d."""

from acrn_sim.guests import image_path
from acrn_sim.scenarios import user_vm, with_service_vm
from acrn_sim.sim.platform import PlatformConfig

PLATFORM = PlatformConfig(devices=["00:1f.0,sensor"])


def scenario(opts):
    vm = user_vm(image_path("sensor.elf"), cmdline="dev=virtio", devices=["7,virtio-sensor"])
    return with_service_vm([vm])
