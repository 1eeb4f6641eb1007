"""The machine's documented limits: how many pCPUs and vCPUs, how much guest memory.

Every user-given number is checked against these before any work starts, so that a value out
of range gets a one-line error instead of failing deep inside the model (docs/limits.md).
"""

from __future__ import annotations

from acrn_sim.sim import ConfigError

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30

# pCPU ids are 0 .. MAX_PCPUS - 1: the device model passes a VM's pCPUs to HC_CREATE_VM as a
# 64-bit affinity bitmap (struct acrn_vm_creation), so there cannot be more than 64.
MAX_PCPUS = 64
# A VM has one vCPU per pCPU of its affinity.
MAX_VCPUS_PER_VM = MAX_PCPUS
# A VM's RAM: the boot protocols' fixed low-memory layout and the image need 2 MiB; above
# 64 GiB the Multiboot memory map's and the EPT model's assumptions are untested.
MIN_VM_MEMORY = 2 * MIB
MAX_VM_MEMORY = 64 * GIB
# A guest image is read whole into host memory.
MAX_IMAGE_SIZE = 1 * GIB
# The Multiboot command line's area in guest memory (sim/bootproto.py) holds 1 KiB with its NUL.
MAX_CMDLINE = 1023
# A VM name travels in HC_CREATE_VM's 16-byte name field, NUL-terminated.
MAX_VM_NAME = 15


def fmt_size(n: int) -> str:
    """Bytes in the largest unit that fits: 64 GiB, 2 MiB, 23.4 GiB, 123 bytes."""
    for unit, name in ((GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")):
        if n >= unit:
            return f"{n // unit} {name}" if n % unit == 0 else f"{n / unit:.1f} {name}"
    return f"{n} bytes"


def check_vm_memory(size: int, what: str) -> None:
    """A VM's RAM size: within [MIN_VM_MEMORY, MAX_VM_MEMORY], a multiple of 4 KiB."""
    if not MIN_VM_MEMORY <= size <= MAX_VM_MEMORY:
        raise ConfigError(
            f"{what} {fmt_size(size)} is out of range: "
            f"{fmt_size(MIN_VM_MEMORY)} to {fmt_size(MAX_VM_MEMORY)}"
        )
    if size % (4 * KIB):
        raise ConfigError(f"{what} {size} bytes is not a multiple of 4 KiB")


def check_pcpus(pcpus: list[int], what: str) -> None:
    """A VM's pCPUs: 1 to MAX_VCPUS_PER_VM distinct ids, each in [0, MAX_PCPUS)."""
    if not pcpus:
        raise ConfigError(f"{what}: needs at least one pCPU")
    for p in pcpus:
        if not 0 <= p < MAX_PCPUS:
            raise ConfigError(f"{what}: pCPU {p} is out of range: 0 to {MAX_PCPUS - 1}")
    if len(set(pcpus)) != len(pcpus):
        raise ConfigError(f"{what}: a pCPU is listed twice (one vCPU per pCPU)")
    if len(pcpus) > MAX_VCPUS_PER_VM:
        raise ConfigError(f"{what}: {len(pcpus)} vCPUs, at most {MAX_VCPUS_PER_VM}")
