"""HSM's ioeventfd (Linux drivers/virt/acrn/ioeventfd.c): ACRN_IOCTL_IOEVENTFD binds an
eventfd to a port or MMIO address (with the written value to match, or any value) of a User
VM. The bound addresses belong to one in-kernel ioreq client of the VM, "ioeventfd": HSM's
dispatcher gives it the requests in those ranges (kernel_handled = 1), its kthread signals
the matching eventfd and completes the request at once. The device model is not woken.
A read returns 0; a write that matches no eventfd (a notify for a queue nobody bound) is
dropped, and reported to whoever bound the range.
"""

from __future__ import annotations

from dataclasses import dataclass

from acrn_sim.guests.service_vm.eventfd import EventFd
from acrn_sim.hv import public as P

EEXIST, ENOENT = 17, 2


@dataclass
class Ioeventfd:
    """struct hsm_ioeventfd: addr, length, data (unless wildcard), and the eventfd."""

    eventfd: EventFd
    addr: int
    length: int
    data: int | None  # None: any value (no ACRN_IOEVENTFD_FLAG_DATAMATCH)
    pio: bool
    owner: object = None  # told about writes that match nothing (instrument)


class HsmIoeventfd:
    """The VM's ioeventfd client and its bindings (acrn_ioeventfd_init / _config)."""

    def __init__(self, hsm, vmid: int) -> None:
        self.hsm = hsm
        self.vmid = vmid
        self.fds: list[Ioeventfd] = []
        self.client = hsm.create_kernel_client(vmid, "ioeventfd", self.handler)

    def assign(self, fd: Ioeventfd):
        """Generator: ACRN_IOCTL_IOEVENTFD (assign). -EEXIST if that address (and value) is
        bound already."""
        yield self.hsm.k.cycles["dm_ioctl"]
        for p in self.fds:
            if (
                p.addr == fd.addr
                and p.pio == fd.pio
                and (p.data is None or fd.data is None or p.data == fd.data)
            ):
                return -EEXIST
        self.fds.append(fd)
        rtype = P.ACRN_IOREQ_TYPE_PORTIO if fd.pio else P.ACRN_IOREQ_TYPE_MMIO
        rng = (rtype, fd.addr, fd.addr + fd.length - 1)
        if rng not in self.client.ranges:
            self.client.ranges.append(rng)
        return 0

    def deassign(self, fd: Ioeventfd):
        """Generator: ACRN_IOCTL_IOEVENTFD with ACRN_IOEVENTFD_FLAG_DEASSIGN."""
        yield self.hsm.k.cycles["dm_ioctl"]
        if fd not in self.fds:
            return -ENOENT
        self.fds.remove(fd)
        if not any(p.addr == fd.addr and p.pio == fd.pio for p in self.fds):
            rtype = P.ACRN_IOREQ_TYPE_PORTIO if fd.pio else P.ACRN_IOREQ_TYPE_MMIO
            rng = (rtype, fd.addr, fd.addr + fd.length - 1)
            if rng in self.client.ranges:
                self.client.ranges.remove(rng)
        return 0

    def handler(self, vm, vcpu: int, slot: P.IoRequest):
        """Generator, in the client's kthread (acrn_ioeventfd_handler): steps 5 and 6."""
        k = self.hsm.k
        rtype, direction, addr, size = slot.request()
        pio = rtype == P.ACRN_IOREQ_TYPE_PORTIO
        match = None
        candidates = [p for p in self.fds if p.pio == pio and p.addr == addr and size <= p.length]
        name = f"{candidates[0].owner.name} notify (ioeventfd)" if candidates else "ioeventfd"
        k.steps.stamp(slot.req_id, 5, "acrn_ioeventfd_handler",
                      "HSM's ioeventfd client matches the address and signals the back end",
                      device=name)  # fmt: skip
        yield k.cycles["ioeventfd_signal"]
        if direction == P.ACRN_IOREQ_DIR_READ:
            slot.value = 0
        else:
            value = slot.value & ((1 << (8 * size)) - 1)
            match = next((p for p in candidates if p.data is None or p.data == value), None)
            owner = candidates[0].owner if candidates else None
            if owner is not None:
                owner.kernel_kick(match is not None, value)
        k.steps.stamp(slot.req_id, 6, "acrn_ioeventfd_handler", "no reply: a write",
                      completed_by="hsm ioeventfd")  # fmt: skip
        if match is not None:
            rec = k.steps.active.get(slot.req_id)
            origin = rec.steps.get(1) if rec is not None else k.now()
            yield from match.eventfd.signal(origin)
