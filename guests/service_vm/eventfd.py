"""eventfd, as the Service VM's kernel uses it between HSM's ioeventfd and irqfd and a kernel
back end (Linux fs/eventfd.c; ACRN's vhost path, devicemodel/hw/pci/virtio/vhost.c): a
counter that eventfd_signal() raises, which wakes the tasks waiting on it (a vhost worker's
poll) and runs the wake-up callbacks registered on its wait queue in the signaller's
context (irqfd's hsm_irqfd_wakeup injects the interrupt right there).

The model's addition, a measuring instrument: `origin`, the cycle of the event behind the
first signal not consumed yet (the VM exit of the kick), for the report's steps.
"""

from __future__ import annotations

from collections.abc import Callable, Generator

from acrn_sim.guests.service_vm.kernel import WaitQueue


class EventFd:
    def __init__(self, kernel, name: str) -> None:
        self.name = name
        self.count = 0
        self.wq = WaitQueue(kernel, name)
        self.callbacks: list[Callable[[], Generator]] = []
        self.origin: int | None = None

    def signal(self, origin: int | None = None):
        """Generator: eventfd_signal. The callbacks may make hypercalls (irqfd)."""
        self.count += 1
        if origin is not None and self.origin is None:
            self.origin = origin
        self.wq.wake_up()
        for cb in list(self.callbacks):
            yield from cb()

    def consume(self) -> tuple[int, int | None]:
        """A read: the count and the origin of the first signal, both reset."""
        count, origin = self.count, self.origin
        self.count, self.origin = 0, None
        return count, origin
