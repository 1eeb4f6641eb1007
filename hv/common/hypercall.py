"""Hypercall handlers (ACRN hypervisor/common/hypercall.c); IDs and structures in hv/public.py.

Parameters that are structures are Service VM guest-physical addresses; the Service VM is
identity-mapped, so the hypervisor reads them through the Service VM's EPT (ACRN
copy_from_gpa). The target VM of a VM-management call is a VM id relative to the Service VM's
(ACRN rel_vmid_2_vmid); pre-launched VMs and the Service VM itself are refused.
"""

from __future__ import annotations

import struct

from acrn_sim.hv import public as P
from acrn_sim.hv.common.event import signal_event_ioreq
from acrn_sim.hv.dm.vpci.vpci import vpci_assign_pcidev, vpci_deassign_pcidev
from acrn_sim.hv.guest.ept import EPT_WB

HV_API_MAJOR_VERSION = 1
HV_API_MINOR_VERSION = 0
EINVAL, ENOTTY, EFAULT = 22, 25, 14


def _read(vcpu, gpa: int, length: int) -> bytes | None:
    return vcpu.vm.copy_from_gpa(gpa, length)


def _target(vcpu, rel_vmid: int):
    """The post-launched VM a Service VM hypercall names, or None (ACRN refuses the rest)."""
    hv = vcpu.hv
    vm = hv.vm_by_id(vcpu.vm.vm_id + (rel_vmid & 0xFFFF))
    if vm is None or not vm.is_post_launched:
        return None
    return vm


def hcall_get_api_version(vcpu, p1: int, p2: int) -> int:
    data = struct.pack("<II", HV_API_MAJOR_VERSION, HV_API_MINOR_VERSION)
    return 0 if vcpu.vm.copy_to_gpa(p1, data) else -EFAULT


def hcall_set_callback_vector(vcpu, p1: int, p2: int) -> int:
    if not 0x20 <= p1 <= 0xFF:
        return -EINVAL
    vcpu.hv.hsm_vector = p1
    return 0


def hcall_create_vm(vcpu, p1: int, p2: int) -> int:
    raw = _read(vcpu, p1, P.VM_CREATION.size)
    if raw is None:
        return -EFAULT
    cv = P.VmCreation.unpack(raw)
    vm = vcpu.hv.create_post_launched_vm(cv.name, cv.vm_flag, cv.cpu_affinity)
    if vm is None:
        return -EINVAL
    cv.vmid = vm.vm_id - vcpu.vm.vm_id
    cv.vcpu_num = len(vm.vcpus)
    return 0 if vcpu.vm.copy_to_gpa(p1, cv.pack()) else -EFAULT


def hcall_set_ioreq_buffer(vcpu, p1: int, p2: int) -> int:
    vm = _target(vcpu, p1)
    raw = _read(vcpu, p2, 8)
    if vm is None or raw is None:
        return -EINVAL
    page_gpa = struct.unpack("<Q", raw)[0]  # double indirection, as ACRN
    hpa = vcpu.vm.gpa2hpa(page_gpa)
    if hpa is None or page_gpa & 0xFFF:
        return -EINVAL
    vm.set_ioreq_page(hpa)
    return 0


def hcall_set_memory_regions(vcpu, p1: int, p2: int) -> int:
    raw = _read(vcpu, p1, P.SET_REGIONS.size)
    if raw is None:
        return -EFAULT
    rel_vmid, mr_num, _, regions_gpa = P.SET_REGIONS.unpack(raw)
    vm = _target(vcpu, rel_vmid)
    if vm is None or mr_num > 4096 // P.VM_MEMORY_REGION.size:
        return -EINVAL
    table = _read(vcpu, regions_gpa, mr_num * P.VM_MEMORY_REGION.size)
    if table is None:
        return -EFAULT
    for i in range(mr_num):
        mtype, prot, gpa, svc_gpa, size = P.VM_MEMORY_REGION.unpack_from(table, i * 32)
        if (gpa | svc_gpa | size) & 0xFFF:
            return -EINVAL
        if mtype == P.MR_ADD:
            # The Service VM page must be present in the Service VM's EPT (ACRN ept_is_valid_mr)
            hpa = vcpu.vm.gpa2hpa(svc_gpa)
            if hpa is None or vcpu.vm.gpa2hpa(svc_gpa + size - 1) is None:
                return -EINVAL
            vm.ept.add_mr(gpa, hpa, size, (prot & P.MEM_ACCESS_RWX) | (EPT_WB << 3))
        elif mtype == P.MR_DEL:
            vm.ept.del_mr(gpa, size)
        else:
            return -EINVAL
    vm.remap()
    return 0


def hcall_set_vcpu_regs(vcpu, p1: int, p2: int) -> int:
    vm = _target(vcpu, p1)
    raw = _read(vcpu, p2, P.VCPU_REGS_SIZE)
    if vm is None or raw is None or not vm.is_created:
        return -EINVAL
    vcpu_id, state = P.unpack_vcpu_regs(raw)
    if vcpu_id >= len(vm.vcpus):
        return -EINVAL
    vm.set_vcpu_regs(vcpu_id, state)
    return 0


def hcall_start_vm(vcpu, p1: int, p2: int) -> int:
    """Starts a CREATED VM (ACRN). On a PAUSED VM it resumes it: the model's continue, as
    ACRN 1.x's HC_RESUME_VM did (today's ACRN only resets or destroys a paused VM)."""
    vm = _target(vcpu, p1)
    if vm is not None and vm.is_paused and vm.shutdown is None:
        vm.resume()
        return 0
    if vm is None or not vm.is_created or vm.ioreq_page is None:
        return -EINVAL
    vm.start()
    return 0


def hcall_sim_pause_resume_vcpu(vcpu, p1: int, p2: int, pause: bool) -> int:
    vm = _target(vcpu, p1)
    if vm is None or p2 >= len(vm.vcpus) or vm.state.name != "RUNNING":
        return -EINVAL
    target = vm.vcpus[p2]
    if pause:
        target.pause()
    else:
        target.resume()
    return 0


def hcall_pause_vm(vcpu, p1: int, p2: int) -> int:
    vm = _target(vcpu, p1)
    if vm is None:
        return -EINVAL
    vm.pause()
    return 0


def hcall_destroy_vm(vcpu, p1: int, p2: int) -> int:
    vm = _target(vcpu, p1)
    if vm is None or not vm.is_paused:
        return -EINVAL
    vm.destroy()
    return 0


def hcall_reset_vm(vcpu, p1: int, p2: int) -> int:
    vm = _target(vcpu, p1)
    if vm is None or not vm.is_paused:
        return -EINVAL
    vm.reset()
    return 0


def hcall_set_irqline(vcpu, p1: int, p2: int) -> int:
    """p2 is struct acrn_irqline_ops by value: gsi in the low 32 bits, op in the high 32."""
    vm = _target(vcpu, p1)
    gsi, op = p2 & 0xFFFF_FFFF, p2 >> 32
    if vm is None or op > P.GSI_FALLING_PULSE:
        return -EINVAL
    vm.set_irqline(gsi, op)
    return 0


def hcall_inject_msi(vcpu, p1: int, p2: int) -> int:
    vm = _target(vcpu, p1)
    raw = _read(vcpu, p2, 16)
    if vm is None or raw is None:
        return -EINVAL
    addr, data = struct.unpack("<QQ", raw)
    vm.inject_msi(addr, data)
    return 0


def hcall_assign_pcidev(vcpu, p1: int, p2: int) -> int:
    """p1 = vmid, p2 = GPA of struct acrn_pcidev. Only while the target is CREATED (ACRN: a
    device is given to a post-launched VM at its creation, never while it runs)."""
    vm = _target(vcpu, p1)
    raw = _read(vcpu, p2, P.ACRN_PCIDEV.size)
    if vm is None or raw is None or not vm.is_created or vm.vpci is None:
        return -EINVAL
    dev = P.AcrnPcidev.unpack(raw)
    return vpci_assign_pcidev(vm, dev.virt_bdf, dev.phys_bdf, list(dev.bars))


def hcall_deassign_pcidev(vcpu, p1: int, p2: int) -> int:
    """p1 = vmid, p2 = GPA of struct acrn_pcidev; the target must be PAUSED or CREATED."""
    vm = _target(vcpu, p1)
    raw = _read(vcpu, p2, P.ACRN_PCIDEV.size)
    if vm is None or raw is None or not (vm.is_paused or vm.is_created) or vm.vpci is None:
        return -EINVAL
    dev = P.AcrnPcidev.unpack(raw)
    return vpci_deassign_pcidev(vm, dev.virt_bdf, dev.phys_bdf)


def hcall_notify_request_finish(vcpu, p1: int, p2: int) -> int:
    vm = _target(vcpu, p1)
    if vm is None or p2 >= len(vm.vcpus):
        return -EINVAL
    signal_event_ioreq(vm.vcpus[p2])
    return 0


# The dispatch table: hypercall ID -> handler(vcpu, param1, param2) -> int (vmcall.c).
HYPERCALLS = {
    P.HC_GET_API_VERSION: hcall_get_api_version,
    P.HC_SET_CALLBACK_VECTOR: hcall_set_callback_vector,
    P.HC_CREATE_VM: hcall_create_vm,
    P.HC_DESTROY_VM: hcall_destroy_vm,
    P.HC_START_VM: hcall_start_vm,
    P.HC_PAUSE_VM: hcall_pause_vm,
    P.HC_CREATE_VCPU: lambda vcpu, p1, p2: 0,  # a no-op in ACRN: vCPUs come with the VM
    P.HC_RESET_VM: hcall_reset_vm,
    P.HC_SET_VCPU_REGS: hcall_set_vcpu_regs,
    P.HC_INJECT_MSI: hcall_inject_msi,
    P.HC_SET_IRQLINE: hcall_set_irqline,
    P.HC_SET_IOREQ_BUFFER: hcall_set_ioreq_buffer,
    P.HC_NOTIFY_REQUEST_FINISH: hcall_notify_request_finish,
    P.HC_VM_SET_MEMORY_REGIONS: hcall_set_memory_regions,
    P.HC_ASSIGN_PCIDEV: hcall_assign_pcidev,
    P.HC_DEASSIGN_PCIDEV: hcall_deassign_pcidev,
    P.HC_SIM_PAUSE_VCPU: lambda vcpu, p1, p2: hcall_sim_pause_resume_vcpu(vcpu, p1, p2, True),
    P.HC_SIM_RESUME_VCPU: lambda vcpu, p1, p2: hcall_sim_pause_resume_vcpu(vcpu, p1, p2, False),
}
