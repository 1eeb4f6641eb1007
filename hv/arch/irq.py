"""The hypervisor's physical interrupts (ACRN hypervisor/arch/x86/irq.c, include/arch/x86/asm/
irq.h): host vectors for device interrupts, their handlers, and what an interrupt does to the
pCPU it arrives on.

Vectors: 0x20-0xDF are allocated dynamically (the passthrough IRQs, the DMAR fault event);
0xE4 + the VM's slot is the posted-interrupt notification vector of that VM (one per VM:
two vCPUs of one VM never share a pCPU).

An interrupt arrives at a pCPU: if a vCPU runs guest code there, the processor takes an
external-interrupt VM exit first (external-interrupt exiting is on for every VM but a
LAPIC-passthrough one); with LAPIC passthrough the physical LAPIC is the guest's, so the
vector goes to the guest directly, with no exit (ACRN programs such interrupts with the
guest's vector, hv/guest/assign.py). The handler then runs on that pCPU in root mode.

Simplified: the pCPU's local APIC is not modelled (no priority, no in-service state); the
handler's time is a delay on the timeline, not time the pCPU is busy.
"""

from __future__ import annotations

from collections.abc import Callable

HOST_VECTOR_FIRST, HOST_VECTOR_LAST = 0x20, 0xDF
POSTED_INTR_VECTOR = 0xE4


class HostIrq:
    def __init__(self, hv) -> None:
        self.hv = hv
        self.handlers: dict[int, tuple[str, Callable[[int], None]]] = {}
        self._free = list(range(HOST_VECTOR_LAST, HOST_VECTOR_FIRST - 1, -1))
        self.delivered = 0

    def alloc_vector(self, name: str, handler: Callable[[int], None]) -> int:
        """request_irq with a dynamic vector: `handler(pcpu)` runs when it comes in."""
        if not self._free:
            raise RuntimeError("no free host vector")
        vector = self._free.pop()
        self.handlers[vector] = (name, handler)
        return vector

    def free_vector(self, vector: int) -> None:
        if self.handlers.pop(vector, None) is not None:
            self._free.append(vector)
            self._free.sort(reverse=True)

    def set_handler(self, vector: int, name: str, handler: Callable[[int], None]) -> None:
        """A fixed vector's handler (the posted-interrupt notification vectors)."""
        self.handlers[vector] = (name, handler)

    def running_vcpu(self, pcpu: int):
        """The vCPU whose guest code the pCPU runs now, or None (root mode or idle)."""
        ctl = self.hv._sched.get(pcpu)
        vcpu = ctl.curr if ctl is not None else None
        if vcpu is None or not vcpu.is_running():
            return None
        return vcpu

    def deliver(self, pcpu: int, vector: int) -> None:
        """A physical interrupt with `vector` arrives at `pcpu` now."""
        self.delivered += 1
        hv = self.hv
        vcpu = self.running_vcpu(pcpu)
        if vcpu is not None and vcpu.vm.lapic_pt:
            # LAPIC passthrough: the pCPU's LAPIC is the guest's; the interrupt is the guest's
            vcpu.vlapic.set_intr(vector)
            return
        if vcpu is not None:
            vcpu.kick("external interrupt")  # the exit: external-interrupt exiting is on
        entry = self.handlers.get(vector)
        if entry is None:
            return  # a spurious vector: nothing is registered for it
        name, handler = entry
        if hv.tracer.enabled:
            vm_id = vcpu.vm.vm_id if vcpu is not None else None
            vcpu_id = vcpu.vcpu_id if vcpu is not None else None
            hv.tracer.instant("irq", f"host IRQ {vector:#x} ({name})", hv.now(), pcpu, vm_id,
                              vcpu_id, vector=vector)  # fmt: skip
        handler(pcpu)
