"""HSM, the Service VM's hypervisor service module (Linux drivers/virt/acrn/ioreq.c, vm.c,
hsm.c). Steps 3, 4 and 7 of the I/O path:

  3. ioreq_intr_handler (vector 0xF3) queues the dispatch work on the serialized workqueue
     "ioreq_wq" (max_active 1: queuing pending work again does nothing).
  4. The dispatcher walks every VM's slots; for each PENDING one: HSM emulates the 0xCF8
     address latch itself and turns 0xCFC..0xCFF into PCICFG; it picks the client (an
     in-kernel client claiming the range, else the device model), sets kernel_handled, stores
     PROCESSING and wakes the client.
  7. Completion (ioreq_complete_request): COMPLETE, then HC_NOTIFY_REQUEST_FINISH unless the
     VM polls.
The ioctls the device model uses (ACRN_IOCTL_*) are generators that make the hypercalls.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from acrn_sim.guests.service_vm.kernel import KERNEL_PRIO, Call, ServiceVmKernel, Wait, WaitQueue
from acrn_sim.hv import public as P

PCI_CFG_ADDR, PCI_CFG_DATA = 0xCF8, 0xCFC


@dataclass
class IoreqClient:
    """An ioreq client: the default one is the device model's I/O thread (vm_loop)."""

    name: str
    wq: WaitQueue
    ioreqs_map: set[int] = field(default_factory=set)
    ranges: list[tuple[int, int, int]] = field(default_factory=list)  # (type, start, end)
    is_default: bool = True
    handler: object = None  # an in-kernel client's handler (vm, vcpu, slot) -> generator
    wakeups: int = 0  # times its thread was woken (the device model's, for the default one)

    def __post_init__(self) -> None:
        self.wake_text = f"HSM marks it PROCESSING, wakes {self.name}"  # the step 4 text


@dataclass
class HsmVm:
    vmid: int
    name: str
    vcpu_num: int
    slots: list[P.IoRequest]  # the IOREQ page, through the kernel's mapping of it
    default_client: IoreqClient
    clients: list[IoreqClient] = field(default_factory=list)
    pci_conf_addr: int = 0


class Hsm:
    def __init__(self, kernel: ServiceVmKernel) -> None:
        self.k = kernel
        self.vms: dict[int, HsmVm] = {}
        self.work_queued = False
        self.scratch = kernel.alloc(0x1000)  # hypercall parameter buffer
        kernel.request_irq(kernel.port.upcall_vector, "hsm_isr", self.ioreq_intr_handler)

    # ------------------------------------------------------------- step 3
    def ioreq_intr_handler(self):
        """In interrupt context (kernel.interrupt): yields only its cost."""
        yield self.k.cycles["hsm_isr"]
        for vm in self.vms.values():
            for slot in vm.slots:
                if slot.processed == P.ACRN_IOREQ_STATE_PENDING:
                    self.k.steps.stamp(
                        slot.req_id,
                        3,
                        "Hsm.ioreq_intr_handler",
                        "HSM interrupt handler queues the dispatch work",
                    )
        if not self.work_queued:  # queue_work on pending work is a no-op
            self.work_queued = True
            self.k.spawn("ioreq_work", self.ioreq_dispatch())

    # ------------------------------------------------------------- step 4
    def ioreq_dispatch(self):
        """The serialized work (ioreq_dispatcher): every VM's PENDING slots, in order."""
        yield self.k.cycles["hsm_work_wakeup"]
        self.work_queued = False
        for vm in list(self.vms.values()):
            for i in range(vm.vcpu_num):
                slot = vm.slots[i]
                if slot.processed != P.ACRN_IOREQ_STATE_PENDING:
                    continue
                yield self.k.cycles["hsm_dispatch"]
                req = slot.request()
                if self._handle_cf8cfc(vm, slot, *req):
                    self.k.steps.stamp(
                        slot.req_id,
                        4,
                        "Hsm.ioreq_dispatch",
                        "HSM emulates the 0xCF8 address latch itself",
                        device="hsm-cf8",
                        completed_by="hsm",
                    )
                    yield from self.complete_request(vm, i, slot)
                    continue
                client = self._find_client(vm, *slot.request())  # 0xCFC may be PCICFG now
                slot.kernel_handled = 0 if client.is_default else 1
                slot.processed = P.ACRN_IOREQ_STATE_PROCESSING
                self.k.steps.stamp(slot.req_id, 4, "Hsm.ioreq_dispatch", client.wake_text)
                client.ioreqs_map.add(i)
                client.wq.wake_up()

    def _handle_cf8cfc(
        self, vm: HsmVm, slot: P.IoRequest, rtype: int, direction: int, addr: int, size: int
    ) -> bool:
        """HSM's handle_cf8cfc: True when HSM completed the request itself."""
        if rtype != P.ACRN_IOREQ_TYPE_PORTIO or not PCI_CFG_ADDR <= addr <= PCI_CFG_DATA + 3:
            return False
        write = direction == P.ACRN_IOREQ_DIR_WRITE
        if addr == PCI_CFG_ADDR and size == 4:
            if write:
                vm.pci_conf_addr = slot.value
            else:
                slot.value = vm.pci_conf_addr
            return True
        if PCI_CFG_DATA <= addr <= PCI_CFG_DATA + 3:
            cf8 = vm.pci_conf_addr
            if not cf8 & 0x8000_0000:  # configuration space not enabled
                if not write:
                    slot.value = 0xFFFF_FFFF
                return True
            reg = (cf8 & 0xFC) + (addr - PCI_CFG_DATA) + ((cf8 >> 16) & 0xF00)
            slot.set_pci((cf8 >> 16) & 0xFF, (cf8 >> 11) & 0x1F, (cf8 >> 8) & 0x7, reg)
        return False

    def _find_client(
        self, vm: HsmVm, rtype: int, _direction: int, address: int, size: int
    ) -> IoreqClient:
        end = address + size - 1
        for c in vm.clients:
            if any(t == rtype and s <= address and end <= e for t, s, e in c.ranges):
                return c
        return vm.default_client

    # ------------------------------------------------------ in-kernel clients
    def create_kernel_client(self, vmid: int, name: str, handler) -> IoreqClient:
        """acrn_ioreq_client_create for an in-kernel client (e.g. ioeventfd): it claims the
        ranges it adds; its kthread "VM<id>-<name>" (ioreq_task) runs `handler` for each
        request HSM gives it, then completes the request."""
        vm = self.vms[vmid]
        cname = f"VM{vmid}-{name}"
        client = IoreqClient(cname, WaitQueue(self.k, cname), is_default=False, handler=handler)
        vm.clients.append(client)
        self.k.spawn(cname, self._ioreq_task(vm, client), KERNEL_PRIO)
        return client

    def _ioreq_task(self, vm: HsmVm, client: IoreqClient):
        while True:
            slept = False
            while not client.ioreqs_map:
                slept = True
                yield Wait(client.wq)
            if self.vms.get(vm.vmid) is not vm:
                return  # the VM was destroyed
            if slept:
                client.wakeups += 1
                yield self.k.cycles["hsm_client_wakeup"]
            for vcpu in sorted(client.ioreqs_map):
                slot = vm.slots[vcpu]
                if slot.processed != P.ACRN_IOREQ_STATE_PROCESSING:
                    client.ioreqs_map.discard(vcpu)
                    continue
                yield from client.handler(vm, vcpu, slot)
                yield from self.complete_request(vm, vcpu, slot, client)

    # ------------------------------------------------------------- step 7
    def complete_request(
        self, vm: HsmVm, vcpu: int, slot: P.IoRequest, client: IoreqClient | None = None
    ):
        """ioreq_complete_request: COMPLETE, and the notify hypercall unless polling."""
        yield self.k.cycles["hsm_complete"]
        (client or vm.default_client).ioreqs_map.discard(vcpu)
        polling = slot.completion_polling
        slot.processed = P.ACRN_IOREQ_STATE_COMPLETE
        self.k.steps.stamp(
            slot.req_id,
            7,
            "Hsm.complete_request",
            "COMPLETE; "
            + ("the hypervisor polls, no hypercall" if polling else "HC_NOTIFY_REQUEST_FINISH"),
        )
        if not polling:
            yield Call(P.HC_NOTIFY_REQUEST_FINISH, vm.vmid, vcpu)

    # ------------------------------------------------------ ioctls for the DM
    def create_vm(self, name: str, vm_flag: int, ioreq_page: int, affinity: int):
        """ACRN_IOCTL_CREATE_VM: HC_CREATE_VM, then HC_SET_IOREQ_BUFFER (linux vm.c)."""
        yield self.k.cycles["dm_ioctl"]
        port = self.k.port
        cv = P.VmCreation(name, vm_flag, ioreq_page, affinity)
        port.write(self.scratch, cv.pack())
        ret = yield Call(P.HC_CREATE_VM, self.scratch)
        if ret != 0:
            return None
        cv = P.VmCreation.unpack(port.read(self.scratch, P.VM_CREATION.size))
        port.write(self.scratch, struct.pack("<Q", ioreq_page))
        ret = yield Call(P.HC_SET_IOREQ_BUFFER, cv.vmid, self.scratch)
        if ret != 0:
            return None
        client = IoreqClient(f"acrn-dm of {name}", WaitQueue(self.k, f"ioreq-{name}"))
        # Linux pins the buffer and keeps its kernel mapping (acrn_ioreq_init): HSM reaches the
        # page through that mapping, resolved once here.
        page = port.map(ioreq_page, 0x1000)
        if page is None:
            return None
        slots = [P.IoRequest(page, i) for i in range(cv.vcpu_num)]
        self.vms[cv.vmid] = HsmVm(cv.vmid, name, cv.vcpu_num, slots, client)
        return cv.vmid

    def set_memseg(self, vmid: int, gpa: int, service_vm_gpa: int, size: int):
        """ACRN_IOCTL_SET_MEMSEG -> HC_VM_SET_MEMORY_REGIONS (one region, WB, RWX)."""
        yield self.k.cycles["dm_ioctl"]
        regions = self.scratch + 0x100
        self.k.port.write(
            regions,
            P.VM_MEMORY_REGION.pack(
                P.MR_ADD, P.MEM_ACCESS_RWX | P.MEM_TYPE_WB, gpa, service_vm_gpa, size
            ),
        )
        self.k.port.write(self.scratch, P.SET_REGIONS.pack(vmid, 1, 0, regions))
        return (yield Call(P.HC_VM_SET_MEMORY_REGIONS, self.scratch))

    def set_vcpu_regs(self, vmid: int, vcpu_id: int, state):
        yield self.k.cycles["dm_ioctl"]
        self.k.port.write(self.scratch, P.pack_vcpu_regs(vcpu_id, state))
        return (yield Call(P.HC_SET_VCPU_REGS, vmid, self.scratch))

    def simple(self, hcall_id: int, vmid: int, param2: int = 0):
        """START_VM, PAUSE_VM, DESTROY_VM, SET_IRQLINE: one hypercall, parameters by value."""
        yield self.k.cycles["dm_ioctl"]
        return (yield Call(hcall_id, vmid, param2))

    def destroy_vm(self, vmid: int):
        ret = yield from self.simple(P.HC_DESTROY_VM, vmid)
        self.vms.pop(vmid, None)
        return ret

    def attach_ioreq_client(self, vmid: int):
        """ACRN_IOCTL_ATTACH_IOREQ_CLIENT: block until a request is PROCESSING for the DM.
        Returns the vCPUs with requests."""
        client = self.vms[vmid].default_client
        slept = False
        while not client.ioreqs_map:
            slept = True
            yield Wait(client.wq)
        if slept:
            client.wakeups += 1
            yield self.k.cycles["dm_wakeup"] + self.k.wakeup_latency()
        return sorted(client.ioreqs_map)

    def notify_request_finish(self, vmid: int, vcpu: int):
        """ACRN_IOCTL_NOTIFY_REQUEST_FINISH."""
        yield self.k.cycles["dm_ioctl"]
        vm = self.vms[vmid]
        yield from self.complete_request(vm, vcpu, vm.slots[vcpu])
