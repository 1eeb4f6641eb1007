"""The Service VM port: all that the Service VM's software modelled in Python (its kernel, HSM
and the device models: guests/service_vm/) has of the hypervisor, which is what real Service
VM software has:
- its hypercalls: a VMCALL exit of the vCPU it runs on, with that exit's costs, handler,
  trace and statistics (`hypercall`);
- its own guest-physical memory (`read`, `write`, and `map` for a buffer it pins and keeps a
  kernel mapping of, as HSM does with the IOREQ page);
- its interrupts: the upcall vector (HC_SET_CALLBACK_VECTOR), the vectors pending on the vCPU,
  and its local APIC timer (`timer_at`);
- its clock (`clock`, the run's Timeline): work it does spends cycles of that vCPU;
- the host's side of its I/O (the console the device models write to) and the simulator's
  instruments (the tracer and the I/O path's step recorder).

The other way, the hypervisor treats the software as the Service VM's kernel (`Software`):
upcalls it claims are handed to it instead of being delivered through the guest's IDT, and its
work runs on the Service VM vCPU's time, so the VM's own guest code waits meanwhile
(hv/common/hv_main.py service_vm_software).

Simplified: the modelled kernel's VMCALL is not an instruction of the guest's code. It leaves
the guest's registers and RIP alone, and its parameters go to the hypercall dispatch directly
(the kernel runs at CPL 0, so the Service-VM-only and CPL checks pass by construction).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Protocol

from acrn_sim.hv.common.hv_main import vmexit_round_trip
from acrn_sim.hv.guest import vmcall
from acrn_sim.hv.guest import vmcs as V
from acrn_sim.sim.hostmem import MemWindow


class Software(Protocol):
    """What the hypervisor calls on the Service VM's modelled software."""

    def claims_vector(self, vector: int) -> bool:
        """Whether the software handles interrupts on `vector` (the upcall, its timer)."""

    def interrupt(self, vector: int, preempted: bool) -> Generator:
        """The vCPU takes the interrupt: run its handler on the vCPU's time (a simpy
        generator). `preempted`: the VM's own guest code was running (busy), not halted."""

    def has_work(self) -> bool:
        """Whether runnable work is queued."""

    def run(self) -> Generator:
        """Run queued work on the vCPU's time (a simpy generator)."""


class ServiceVmPort:
    def __init__(self, vm, console: Callable[[str, bytes], None]) -> None:
        hv = vm.hv
        self._vm = vm
        self._vcpu = vm.vcpus[0]  # the software runs on Service VM vCPU 0
        self._hv = hv
        self.clock = hv.env
        self.profile = hv.profile
        self.tracer = hv.tracer
        self.steps = hv.ioreq_steps
        self.console = console  # (User VM name, bytes): the host end of a device model's UART
        self.vm_id = vm.vm_id
        self.memory_size = vm.config.memory
        # The interrupts pending on the vCPU: the kernel checks them for a hard IRQ that
        # should preempt its running task
        self.pending_vectors = self._vcpu.pending_extint

    # ---------------------------------------------------------------- time
    @property
    def now(self) -> int:
        return self.clock.now

    def timer_at(self, cycle: int, vector: int) -> None:
        """The local APIC timer, one-shot: an interrupt on `vector` at `cycle`."""
        vcpu = self._vcpu
        self.clock.call_later(
            max(0, cycle - self.clock.now), lambda _e: vcpu.queue_external_interrupt(vector)
        )

    @property
    def upcall_vector(self) -> int:
        """The vector of the hypervisor's upcall (HSM's, HC_SET_CALLBACK_VECTOR)."""
        return self._hv.hsm_vector

    # -------------------------------------------------------------- memory
    def read(self, gpa: int, length: int) -> bytes:
        """The Service VM's guest-physical memory; what its EPT does not map reads as ones."""
        data = self._vm.copy_from_gpa(gpa, length)
        return data if data is not None else b"\xff" * length

    def write(self, gpa: int, data: bytes) -> None:
        self._vm.copy_to_gpa(gpa, data)

    def map(self, gpa: int, length: int) -> MemWindow | None:
        """A kernel mapping of a pinned buffer (as Linux keeps for the IOREQ page): the same
        bytes, resolved once. None unless the range is mapped and contiguous."""
        hpa = self._vm.gpa2hpa(gpa)
        if hpa is None or self._vm.gpa2hpa(gpa + length - 1) != hpa + length - 1:
            return None
        return MemWindow(self._hv.mem, hpa, length)

    # ------------------------------------------------------------ PCI devices
    def pci_device(self, bdf: int) -> tuple[bytes, list[tuple[int, int]]] | None:
        """What the Service VM kernel's PCI core knows of a board device it owns (Linux
        sysfs: `config` and `resource`, which acrn-dm's passthru reads through
        libpciaccess): its configuration space and its memory BARs as (index, size). None
        if the Service VM has no such device (absent, or assigned to another VM)."""
        vpci = self._vm.vpci
        dev = vpci.vdevs.get(bdf) if vpci is not None else None
        if dev is None:
            return None
        config = b"".join(dev.cfg_read(r, 4).to_bytes(4, "little") for r in range(0, 256, 4))
        platform = self._hv.platform
        return config, [(i, size) for i, _hpa, size in platform.bars(bdf)]

    # ---------------------------------------------------------- hypercalls
    def hypercall(self, hcall_id: int, param1: int = 0, param2: int = 0):
        """Generator: a hypercall of the software, as a VMCALL exit (reason 18) of the vCPU it
        runs on; returns the result (0 or -errno)."""
        vcpu = self._vcpu
        fields = vcpu.vmcs.fields
        fields[V.VMX_EXIT_REASON] = V.ExitReason.VMCALL
        fields[V.VMX_EXIT_QUALIFICATION] = 0
        fields[V.VMX_EXIT_INSTR_LEN] = 0  # not the guest's instruction: RIP stays
        fields[V.VMX_GUEST_RIP] = vcpu.engine.reg("rip")
        result: list[int] = []

        def handler(v) -> int:
            result.append(vmcall.hypercall(v, hcall_id, param1, param2))
            return 0

        yield from vmexit_round_trip(vcpu, V.ExitReason.VMCALL, vcpu.epoch, handler)
        return result[0] if result else 0

    # --------------------------------------------------------- instruments
    def trace_span(self, name: str, start: int) -> None:
        """A span of the software's work on the vCPU's track, from `start` to now."""
        now = self.clock.now
        if now > start:
            v = self._vcpu
            self.tracer.span("service_vm", name, start, now - start, v.pcpu_id, self.vm_id, 0)
