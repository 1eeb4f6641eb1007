"""Runnable scenario scripts, and the helpers they share.

A scenario script is a Python file with a function `scenario(opts) -> list[VmConfig]`; `opts`
holds the command-line options (mem, cmdline, service_vm_busy, ...). `acrn-sim run FILE.py` runs it.
"""

from guests import image_path
from hv.vm import PRE_LAUNCHED_VM, SERVICE_VM, VmConfig

SERVICE_VM_MEM = 32 << 20


def service_vm(busy: bool = False, pcpu: int = 0) -> VmConfig:
    """The Service VM running the built-in guest: idle (halts), or busy (computes forever)."""
    return VmConfig(
        name="Service_VM",
        load_order=SERVICE_VM,
        image=image_path("service_vm.elf"),
        memory=SERVICE_VM_MEM,
        cpu_affinity=[pcpu],
        cmdline="busy" if busy else "idle",
        watched=False,
    )


def pre_launched(image: str, memory: int = 32 << 20, cmdline: str = "", pcpu: int = 1,
                 name: str = "PRE_VM0") -> VmConfig:  # fmt: skip
    return VmConfig(name=name, load_order=PRE_LAUNCHED_VM, image=image, memory=memory,
                    cpu_affinity=[pcpu], cmdline=cmdline)  # fmt: skip
