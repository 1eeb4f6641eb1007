"""The seam between the hypervisor and Service VM software that is modelled in Python instead
of running as x86 code (HSM and the device model: guests/service_vm/).

The hypervisor treats it as the Service VM's kernel: upcalls it claims (the HSM vector) are
given to it instead of being delivered through the guest's IDT, and its work runs on the
Service VM vCPU's time, so the VM's own guest code waits meanwhile (DESIGN.md "The I/O path").
It reaches the hypervisor only through hypercalls (Vcpu.paravirt_hypercall, the VMCALL exit
path) and memory, as ACRN's Service VM does.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Protocol


class ParavirtSoftware(Protocol):
    def claims_vector(self, vector: int) -> bool:
        """Whether this software handles interrupts on `vector` (e.g. 0xF3)."""

    def interrupt(self, vcpu, vector: int, preempted: bool) -> Generator:
        """The vCPU takes the interrupt: run its handler on the vCPU's time (a simpy
        generator), which queues work. `preempted` says whether the VM's own guest code was
        running (busy) rather than halted (idle)."""

    def has_work(self, vcpu) -> bool:
        """Whether runnable work is queued for this vCPU."""

    def run(self, vcpu) -> Generator:
        """Run queued work on the vCPU's time (a simpy generator)."""
