"""Loading the Service VM's and pre-launched VMs' images (ACRN hypervisor/boot/guest/vboot*.c):
the boot protocol (sim/bootproto.py) says what goes where; the hypervisor writes it through the
VM's EPT and puts the BSP into the protocol's entry state."""

from __future__ import annotations

from acrn_sim.sim import ConfigError, bootproto


def load_guest(vm, path: str, cmdline: str = "") -> None:
    boot = bootproto.prepare(path, vm.config.memory, cmdline)
    for gpa, data in boot.writes:
        if not vm.copy_to_gpa(gpa, data):
            raise ConfigError(f"VM {vm.name}: boot data at {gpa:#x} is outside its memory")
    bootproto.apply_state(vm.vcpus[0].engine, boot.state)
