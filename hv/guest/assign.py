"""Passthrough MSIs (ACRN hypervisor/arch/x86/guest/assign.c): the guest's MSI message, which
the vPCI traps (hv/dm/vpci/vmsi.py), becomes an interrupt remapping table entry and a
remappable-format message programmed into the physical device; the device's interrupt then
reaches the guest's vLAPIC.

Three ways, as ACRN chooses them (ptirq_prepare_msix_remap, ptirq_build_physical_msi):
- remapped (the usual): the IRTE carries a host vector of the pCPU that runs the guest's
  destination vCPU; the interrupt exits to the hypervisor (ptdev.py), whose softirq injects
  the guest's vector into the vLAPIC (vlapic_intr_msi, ptirq_softirq);
- LAPIC passthrough in x2APIC mode: the IRTE carries the guest's own vector, so the
  interrupt goes straight to the guest's (physical) LAPIC, with no exit at all;
- posted (the VT-d unit can post, CAP.PI, and the message has a single destination and
  fixed or lowest-priority delivery): the IRTE points at the destination vCPU's posted-
  interrupt descriptor; the unit sets the vector in its PIR and sends the VM's notification
  vector, which a vCPU running guest code takes without a VM exit.

The device's message is in remappable format (VT-d §5.1.2.2): address 0xFEE with the IRTE
index (handle) in bits 19:5 and bit 15 of it in bit 2, bit 4 set (remappable), SHV 0; data 0.

Simplified: ACRN programs a logical destination mask of the destination pCPUs; the model
puts the first destination vCPU's pCPU in physical mode. A posted interrupt taken in guest
mode reaches the guest when its current slice of guest code ends (docs/simplifications.md).
"""

from __future__ import annotations

from acrn_sim.hv.arch.dmar import Posted
from acrn_sim.hv.arch.irq import POSTED_INTR_VECTOR

POSTED_KICK = "posted interrupt"  # a kick that is not a VM exit (hv/common/hv_main.py)
MSI_DELMODE_FIXED, MSI_DELMODE_LOPRI = 0, 1


def _msi_targets(vm, addr: int) -> list:
    dest, logical = (addr >> 12) & 0xFF, bool(addr & 0x4)
    return [v for v in vm.vcpus if v.vlapic._matches(dest, logical)]


def remappable_msi(index: int) -> tuple[int, int]:
    """The device's (address, data) for IRTE `index` (SHV = 0: data is not used)."""
    addr = 0xFEE0_0000 | (index & 0x7FFF) << 5 | 1 << 4 | ((index >> 15) & 1) << 2
    return addr, 0


def ptirq_prepare_msix_remap(vm, virt_sid: int, phys_sid: int, entry_nr: int,
                             vaddr: int, vdata: int) -> tuple[int, int] | None:  # fmt: skip
    """The physical message to program for the guest's (vaddr, vdata), or None when the
    interrupt cannot be set up (its entry belongs to another VM, or a LAPIC-passthrough
    VM's vCPUs are not all in x2APIC mode)."""
    hv = vm.hv
    ptdev = hv.ptdev
    entry = ptdev.lookup_virt(vm, virt_sid, entry_nr)
    if entry is None:
        entry = ptdev.lookup_phys(phys_sid, entry_nr)
        if entry is not None and entry.vm is not vm:
            if not entry.vm.is_service_vm:
                return None  # "msi entry exist in others"
            entry.vm, entry.virt_sid = vm, virt_sid  # the Service VM's entry moves over
        if entry is None:
            entry = ptdev.alloc_entry(vm, phys_sid, virt_sid, entry_nr)
            ptdev.activate_entry(entry)
    entry.vmsi = (vaddr, vdata)
    targets = _msi_targets(vm, vaddr)
    if not targets:
        return None
    vcpu = targets[0]
    delmode = (vdata >> 8) & 7
    if delmode not in (MSI_DELMODE_FIXED, MSI_DELMODE_LOPRI):
        delmode = MSI_DELMODE_LOPRI
    vtd = hv.vtd
    if vm.lapic_pt:
        if not all(v.vlapic.x2apic for v in vm.vcpus):
            return None  # VM_VLAPIC_XAPIC / TRANSITION: not programmed (assign.c)
        entry.mode = "lapic_pt"
        lo = (vdata & 0xFF) << 16 | delmode << 5 | vcpu.pcpu_id << 32
    elif vtd.posted and len(targets) == 1:
        entry.mode = "posted"
        pda = pi_desc(vcpu)
        lo = 1 << 15 | (vdata & 0xFF) << 16 | ((pda >> 6) & 0x3FF_FFFF) << 38
        vtd.dmar_assign_irte(phys_sid, entry.allocated_pirq, lo)
        hi_addr = pda >> 32
        _patch_pda_high(vtd, entry.allocated_pirq, hi_addr)
        entry.pmsi = remappable_msi(entry.allocated_pirq)
        return entry.pmsi
    else:
        entry.mode = "remapped"
        lo = entry.vector << 16 | delmode << 5 | vcpu.pcpu_id << 32
    vtd.dmar_assign_irte(phys_sid, entry.allocated_pirq, lo)
    entry.pmsi = remappable_msi(entry.allocated_pirq)
    return entry.pmsi


def _patch_pda_high(vtd, index: int, high: int) -> None:
    """A posted IRTE keeps bits 63:32 of the descriptor's address in its upper qword."""
    addr = vtd.ir_table + 16 * index + 8
    vtd.mem.write_u64(addr, (vtd.mem.read_u64(addr) & 0xFFFF_FFFF) | high << 32)


def ptirq_remove_msix_remapping(vm, virt_sid: int, vector_count: int = 1) -> None:
    hv = vm.hv
    for nr in range(vector_count):
        entry = hv.ptdev.lookup_virt(vm, virt_sid, nr)
        if entry is not None:
            hv.vtd.dmar_free_irte(entry.allocated_pirq)
            hv.ptdev.release_entry(entry)


def ptirq_softirq(entry, host: int) -> None:
    """ptirq_softirq: the guest's MSI into its vLAPIC (vlapic_intr_msi)."""
    if not entry.active or entry.vm.shutdown is not None:
        return
    addr, data = entry.vmsi
    entry.vm.inject_msi(addr, data)
    entry.vm.hv.ptdev.record(entry, host)


# ------------------------------------------------------------------ posted interrupts
def pi_desc(vcpu) -> int:
    """The vCPU's posted-interrupt descriptor (64 bytes, VT-d §9.12): PIR, then ON/SN, the
    notification vector (POSTED_INTR_VECTOR + the VM's id) and NDST (its pCPU)."""
    hv = vcpu.hv
    table = hv.pi_descs
    pda = table.get(vcpu)
    if pda is None:
        pda = hv.alloc_page()
        nv = POSTED_INTR_VECTOR + vcpu.vm.vm_id
        hv.mem.write_u64(pda + 32, nv << 16 | vcpu.pcpu_id << 32)
        table[vcpu] = pda
        hv.irq.set_handler(nv, f"posted {vcpu.vm.name}",
                           lambda pcpu, vm=vcpu.vm: posted_intr_handler(vm, pcpu))  # fmt: skip
    return pda


def _pir_to_irr(vcpu) -> bool:
    """Move the PIR's vectors into the vLAPIC's IRR and clear ON (what the processor's
    posted-interrupt processing, or ACRN's handler, does). True if any moved."""
    mem = vcpu.hv.mem
    pda = vcpu.hv.pi_descs[vcpu]
    moved = False
    for i in range(4):
        bits = mem.read_u64(pda + 8 * i)
        if bits:
            mem.write_u64(pda + 8 * i, 0)
            vcpu.vlapic.irr |= bits << (64 * i)
            vcpu.vlapic.tmr &= ~(bits << (64 * i))
            moved = True
    mem.write_u64(pda + 32, mem.read_u64(pda + 32) & ~1)
    return moved


def _vcpu_of(hv, pda: int):
    for v, addr in hv.pi_descs.items():
        if addr == pda:
            return v
    return None


def post(hv, result: Posted) -> None:
    """The unit posted `result`: a vCPU running guest code on the notification's pCPU takes
    it without a VM exit; otherwise the notification vector is an ordinary interrupt of
    that pCPU (posted_intr_handler)."""
    vcpu = _vcpu_of(hv, result.pda)
    if vcpu is None or not result.notify:
        return
    if hv.irq.running_vcpu(result.ndst) is vcpu and vcpu.slice_end is not None:
        hv.env.call_later(hv.profile.cycles["pi_notification"],
                          lambda _e: _deliver_posted(vcpu, guest_mode=True))  # fmt: skip
        return
    hv.irq.deliver(result.ndst, result.notification_vector)


def posted_intr_handler(vm, pcpu: int) -> None:
    """The notification vector in root mode: its vCPU is not in guest mode; wake it."""
    for vcpu in vm.vcpus:
        if vcpu.pcpu_id == pcpu and vcpu in vm.hv.pi_descs:
            hv = vm.hv
            hv.env.call_later(hv.profile.cycles["pi_notification"],
                              lambda _e, v=vcpu: _deliver_posted(v, guest_mode=False))  # fmt: skip


def _deliver_posted(vcpu, guest_mode: bool) -> None:
    hv = vcpu.hv
    if vcpu.vm.shutdown is not None or not _pir_to_irr(vcpu):
        return
    for entry in hv.ptdev.entries:
        if entry.vm is vcpu.vm and entry.mode == "posted":
            hv.ptdev.record(entry, hv.now())
            break
    if guest_mode and vcpu.slice_end is not None:
        vcpu.kick(POSTED_KICK)
    else:
        vcpu.signal_event_virtual_interrupt()
