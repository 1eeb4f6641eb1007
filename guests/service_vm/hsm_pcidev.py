"""HSM's passthrough ioctls (Linux drivers/virt/acrn/hsm.c: ACRN_IOCTL_ASSIGN_PCIDEV 0x55 and
ACRN_IOCTL_DEASSIGN_PCIDEV 0x56, both taking struct acrn_pcidev): the device model's request
goes to the hypervisor as HC_ASSIGN_PCIDEV / HC_DEASSIGN_PCIDEV with the structure in Service
VM memory."""

from __future__ import annotations

from acrn_sim.guests.service_vm.kernel import Call
from acrn_sim.hv import public as P


def assign_pcidev(hsm, vmid: int, dev: P.AcrnPcidev):
    """Generator: ACRN_IOCTL_ASSIGN_PCIDEV; the hypercall's result (0 or -errno)."""
    yield hsm.k.cycles["dm_ioctl"]
    hsm.k.port.write(hsm.scratch, dev.pack())
    return (yield Call(P.HC_ASSIGN_PCIDEV, vmid, hsm.scratch))


def deassign_pcidev(hsm, vmid: int, dev: P.AcrnPcidev):
    """Generator: ACRN_IOCTL_DEASSIGN_PCIDEV."""
    yield hsm.k.cycles["dm_ioctl"]
    hsm.k.port.write(hsm.scratch, dev.pack())
    return (yield Call(P.HC_DEASSIGN_PCIDEV, vmid, hsm.scratch))
