"""Runnable scenario scripts, and the helpers they share.

A scenario script is a Python file with a function `scenario(opts) -> list[VmConfig]`; `opts`
holds the command-line options (mem, cmdline, service_vm_busy, ...). `acrn-sim run FILE.py` runs it.
"""

from guests import image_path
from guests.service_vm.dm import ServiceVmSoftware, UserVmConfig
from hv.vm import POST_LAUNCHED_VM, PRE_LAUNCHED_VM, SERVICE_VM, VmConfig

SERVICE_VM_MEM = 32 << 20
SERVICE_VM_OWN = 16 << 20  # what the Service VM's own guest image may use; the rest is a pool


def service_vm(busy: bool = False, pcpu: int = 0, user_vms: list[VmConfig] = ()) -> VmConfig:
    """The Service VM running the built-in guest (idle: halts; busy: computes) and, when there
    are User VMs, its modelled software: HSM and one device model per User VM."""
    user_vms = list(user_vms)
    memory = SERVICE_VM_MEM
    if user_vms:
        memory = SERVICE_VM_OWN + sum(c.memory for c in user_vms) + (8 << 20)
    config = VmConfig(
        name="Service_VM",
        load_order=SERVICE_VM,
        image=image_path("service_vm.elf"),
        memory=(memory + (2 << 20) - 1) & ~((2 << 20) - 1),
        cpu_affinity=[pcpu],
        cmdline="busy" if busy else "idle",
        watched=False,
    )
    if user_vms:
        dms = [
            UserVmConfig(
                c.name, c.image, c.memory, c.cmdline, c.cpu_affinity, c.io_completion_polling
            )
            for c in user_vms
        ]

        def software(vm):
            hv = vm.hv
            return ServiceVmSoftware(
                vm,
                hv.profile,
                hv.tracer,
                hv.ioreq_steps,
                dms,
                hv.console_sink,
                (SERVICE_VM_OWN, vm.config.memory),
            )

        config.paravirt = software
    return config


def pre_launched(
    image: str, memory: int = 32 << 20, cmdline: str = "", pcpu: int = 1, name: str = "PRE_VM0"
) -> VmConfig:
    return VmConfig(
        name=name,
        load_order=PRE_LAUNCHED_VM,
        image=image,
        memory=memory,
        cpu_affinity=[pcpu],
        cmdline=cmdline,
    )


def user_vm(
    image: str,
    memory: int = 32 << 20,
    cmdline: str = "",
    pcpu: int = 1,
    name: str = "POST_VM1",
    polling: bool = False,
) -> VmConfig:
    """A post-launched User VM: created at run time by its device model in the Service VM."""
    return VmConfig(
        name=name,
        load_order=POST_LAUNCHED_VM,
        image=image,
        memory=memory,
        cpu_affinity=[pcpu],
        cmdline=cmdline,
        io_completion_polling=polling,
    )


def with_service_vm(user_vms: list[VmConfig], busy: bool = False) -> list[VmConfig]:
    """The usual shared scenario: the Service VM (VM0, pCPU 0) and User VMs created by it."""
    return [service_vm(busy, user_vms=user_vms), *user_vms]
