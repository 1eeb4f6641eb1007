"""HSM's irqfd (Linux drivers/virt/acrn/irqfd.c): ACRN_IOCTL_IRQFD binds an eventfd to an MSI
of a User VM. When a kernel back end signals the eventfd, the wake-up callback
(hsm_irqfd_wakeup -> acrn_irqfd_inject) injects that MSI with HC_INJECT_MSI, in the
signaller's context: no device-model thread is involved.
"""

from __future__ import annotations

import struct

from acrn_sim.guests.service_vm.eventfd import EventFd
from acrn_sim.guests.service_vm.kernel import Call
from acrn_sim.hv import public as P


class HsmIrqfd:
    """One binding: eventfd -> (MSI address, data) of VM `vmid`. `buf` is kernel memory for the
    hypercall's parameters; `delivered` (instrument) is called once the MSI is in."""

    def __init__(self, kernel, vmid: int, eventfd: EventFd, addr: int, data: int, buf: int,
                 delivered=None) -> None:  # fmt: skip
        self.k = kernel
        self.vmid, self.eventfd = vmid, eventfd
        self.addr, self.data, self.buf = addr, data, buf
        self.delivered = delivered
        self.injected = 0
        eventfd.callbacks.append(self.wakeup)

    def wakeup(self):
        """Generator: hsm_irqfd_wakeup -> acrn_msi_inject."""
        yield self.k.cycles["irqfd_inject"]
        self.k.port.write(self.buf, struct.pack("<QQ", self.addr, self.data))
        yield Call(P.HC_INJECT_MSI, self.vmid, self.buf)
        self.injected += 1
        if self.delivered is not None:
            self.delivered()

    def release(self) -> None:
        """ACRN_IRQFD_FLAG_DEASSIGN."""
        if self.wakeup in self.eventfd.callbacks:
            self.eventfd.callbacks.remove(self.wakeup)
