"""ACRN's VT-d driver (hypervisor/arch/x86/vtd.c; doc/developer-guides/hld/hv-vt-d.rst): the
DMA-remapping units, one IOMMU domain per VM, device-to-domain context entries, the interrupt
remapping table, and the fault handler. The hardware it drives is hv/arch/dmar.py; the
machine routes every DMA and MSI of its devices through this driver's units (it is the
platform's `iommu`, sim/platform.py).

- DRHD units: the board has one, covering every PCI device (INCLUDE_PCI_ALL), its registers
  at sim.platform.DRHD_BASE. ACRN finds them in the ACPI DMAR table or pre-parsed board data.
- Tables, in the hypervisor's memory: one 4 KiB root table per unit (256 root entries, one
  per bus), one context table per bus in use (256 context entries, one per device/function),
  an interrupt remapping table of 256 IRTEs (MAX_IR_ENTRIES: the next power of two above
  CONFIG_MAX_PT_IRQ_ENTRIES), a 4 KiB invalidation queue.
- Domains: one per VM, domain id = VM id + 1 (id 0 is reserved by VT-d when caching mode is
  on, and ACRN never uses it). A domain's second-level table is the VM's EPT, with a 48-bit
  address width (vpci.c: create_iommu_domain(vm_id, hva2hpa(vm->arch_vm.nworld_eptp), 48)):
  what a device may reach is exactly what the VM's EPT maps. The hypervisor has no domain of
  its own; its memory is in no EPT (doc/developer-guides/hld/hv-vt-d.rst).
- Context entries: TT = 0 (untranslated requests only), AW = 48-bit, DID, SLPTPTR = the EPT's
  root, P = 1 (add_iommu_device). Moving a device between domains is remove + add
  (move_pt_device), each followed by context-cache and IOTLB invalidation.
- Faults: the fault event is an MSI to pCPU 0 with a dynamic host vector; dmar_fault_handler
  reads FSTS and, while a primary fault is pending, the record at FRI, logs it and clears it
  (at most DMAR_FAULT_LOOP_MAX records per event). No action is taken against the VM whose
  device faulted: the faulting access simply did not happen.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from acrn_sim.hv.arch import dmar as D
from acrn_sim.hv.arch.dmar import DmarUnit, Posted, Remapped
from acrn_sim.sim.pci import bdf_str
from acrn_sim.sim.platform import DRHD_BASE

DMAR_FAULT_LOOP_MAX = 10
MAX_IR_ENTRIES = 256
ADDR_WIDTH = 48
FAULT_EVENT_PCPU = 0  # ACRN points the fault event at the BSP


def vmid_to_domainid(vm_id: int) -> int:
    return vm_id + 1


@dataclass
class IommuDomain:
    vm_id: int
    domain_id: int
    trans_table_ptr: int  # the EPT's root (HPA)
    addr_width: int = ADDR_WIDTH


@dataclass
class FaultRecord:
    """What dmar_fault_handler logged for one fault (the trace and statistics show these)."""

    cycle: int
    unit: int
    sid: int
    address: int
    reason: int
    is_write: bool
    interrupt: bool
    text: str
    vm: str | None  # the VM whose domain the requester was in

    def describe(self) -> str:
        what = (f"interrupt index {self.address}" if self.interrupt
                else f"{'write' if self.is_write else 'read'} at {self.address:#x}")  # fmt: skip
        owner = f" ({self.vm})" if self.vm else ""
        why = f"reason {self.reason:#x}, {self.text}"
        return f"DMAR fault: {bdf_str(self.sid)}{owner} {what}: {why}"


class Vtd:
    """The driver's state: ACRN keeps it in static arrays of vtd.c."""

    def __init__(self, hv, posted: bool = False) -> None:
        self.hv = hv
        self.mem = hv.mem
        cycles = hv.profile.cycles
        self.units = [DmarUnit(hv.mem, DRHD_BASE, cycles, posted, self._fault_event)]
        self.root_tables = [hv.alloc_page() for _ in self.units]
        self.ctx_tables: dict[tuple[int, int], int] = {}  # (unit, bus) -> context table
        self.ir_table = hv.alloc_page()
        self.qi_queue = hv.alloc_page()
        self.qi_status = hv.alloc_page()
        self._qi_tail = 0
        self.irte_used: set[int] = set()
        self.domains: dict[int, IommuDomain] = {}
        self.device_domain: dict[int, IommuDomain] = {}  # sid -> its domain now
        self.faults: list[FaultRecord] = []
        self.msi_times: dict[int, int] = {}  # sid -> cycle of its last interrupt message
        self.fault_vector = hv.irq.alloc_vector("dmar_fault", self.dmar_fault_handler)
        self.posted = posted
        self.post_handler = None  # hv/guest/assign.py: posted-interrupt notification

    # ------------------------------------------------------------ bring-up
    def init_iommu(self) -> None:
        """dmar_prepare + init: root table, invalidation queue, interrupt remapping table
        and fault event for every unit; translation is enabled later (enable_iommu), once
        the Service VM's domain holds every device."""
        for i, unit in enumerate(self.units):
            unit.write64(D.RTADDR_REG, self.root_tables[i])  # TTM = 00: legacy mode
            unit.write32(D.GCMD_REG, unit.gsts | D.GCMD_SRTP)
            unit.write64(D.IQA_REG, self.qi_queue)  # QS = 0: one 4 KiB page, 256 descriptors
            unit.write64(D.IQT_REG, 0)
            unit.write32(D.GCMD_REG, unit.gsts | D.GCMD_QIE)
            # IRTA: the table, EIME (x2APIC destinations), S = log2(entries) - 1
            unit.write64(D.IRTA_REG, self.ir_table | 1 << 11 | (MAX_IR_ENTRIES.bit_length() - 2))
            unit.write32(D.GCMD_REG, unit.gsts | D.GCMD_SIRTP)
            unit.write32(D.GCMD_REG, unit.gsts | D.GCMD_IRE)
            # the fault event: a compatibility-format MSI to the BSP, fixed delivery
            unit.write32(D.FEDATA_REG, self.fault_vector)
            unit.write32(D.FEADDR_REG, 0xFEE0_0000 | FAULT_EVENT_PCPU << 12)
            unit.write32(D.FECTL_REG, 0)  # unmask

    def enable_iommu(self) -> None:
        for unit in self.units:
            unit.write32(D.GCMD_REG, unit.gsts | D.GCMD_TE)

    def unit_of(self, sid: int) -> tuple[int, DmarUnit]:
        """device_to_dmaru: the one unit includes every PCI device."""
        return 0, self.units[0]

    # ------------------------------------------------------------- domains
    def create_iommu_domain(self, vm_id: int, trans_table: int,
                            addr_width: int = ADDR_WIDTH) -> IommuDomain:  # fmt: skip
        dom = IommuDomain(vm_id, vmid_to_domainid(vm_id), trans_table, addr_width)
        self.domains[dom.domain_id] = dom
        return dom

    def destroy_iommu_domain(self, dom: IommuDomain) -> None:
        self.domains.pop(dom.domain_id, None)

    def _context_entry(self, sid: int) -> int:
        """The address of the device's context entry (its bus's table made if needed)."""
        u, _unit = self.unit_of(sid)
        bus, devfn = sid >> 8, sid & 0xFF
        table = self.ctx_tables.get((u, bus))
        if table is None:
            table = self.ctx_tables[(u, bus)] = self.hv.alloc_page()
            self.mem.write(self.root_tables[u] + 16 * bus, struct.pack("<QQ", table | 1, 0))
        return table + 16 * devfn

    def add_iommu_device(self, dom: IommuDomain, sid: int) -> None:
        addr = self._context_entry(sid)
        lo = dom.trans_table_ptr | 0 << 2 | D.P_BIT  # TT = 0: untranslated requests
        hi = D.CTX_AW_48 | dom.domain_id << 8
        self.mem.write(addr, struct.pack("<QQ", lo, hi))
        self.device_domain[sid] = dom
        self._invalidate(sid, dom.domain_id)

    def remove_iommu_device(self, dom: IommuDomain, sid: int) -> None:
        self.mem.write(self._context_entry(sid), bytes(16))
        if self.device_domain.get(sid) is dom:
            del self.device_domain[sid]
        self._invalidate(sid, dom.domain_id)

    def move_pt_device(self, from_dom: IommuDomain | None, to_dom: IommuDomain, sid: int):
        """The device's DMA is translated by `to_dom` from now on."""
        if from_dom is not None:
            self.remove_iommu_device(from_dom, sid)
        self.add_iommu_device(to_dom, sid)

    # ------------------------------------------------------------- invalidation
    def _qi(self, *descriptors: tuple[int, int]) -> None:
        """Queue descriptors and a wait descriptor; the unit processes them at the tail
        write, and the wait's status write says so (ACRN waits for it)."""
        unit = self.units[0]
        for lo, hi in (*descriptors, (5 | 1 << 5 | 1 << 32, self.qi_status)):
            self.mem.write(self.qi_queue + self._qi_tail, struct.pack("<QQ", lo, hi))
            self._qi_tail = (self._qi_tail + 16) % 0x1000
        self.mem.write_u32(self.qi_status, 0)
        unit.write64(D.IQT_REG, self._qi_tail)

    def _invalidate(self, sid: int, did: int) -> None:
        # context-cache invalidate, device granularity (3); IOTLB invalidate, domain (2)
        self._qi((1 | 3 << 4 | did << 16 | sid << 32, 0), (2 | 2 << 4 | did << 16, 0))

    # -------------------------------------------------- interrupt remapping
    def dmar_assign_irte(self, sid: int, index: int, lo: int) -> None:
        """Write IRTE `index` for requester `sid`, verified by its full source id (SVT = 1,
        SQ = 0), present; then invalidate that interrupt entry cache line."""
        hi = sid | 1 << 18
        self.mem.write(self.ir_table + 16 * index, struct.pack("<QQ", lo | D.P_BIT, hi))
        self.irte_used.add(index)
        self._qi((4 | 1 << 4 | index << 32, 0))  # IEC invalidate, index granularity

    def dmar_free_irte(self, index: int) -> None:
        self.mem.write(self.ir_table + 16 * index, bytes(16))
        self.irte_used.discard(index)
        self._qi((4 | 1 << 4 | index << 32, 0))

    # -------------------------------------------- the platform's iommu interface
    def translate(self, sid: int, addr: int, length: int, write: bool):
        return self.unit_of(sid)[1].translate(sid, addr, length, write)

    def interrupt(self, sid: int, addr: int, data: int) -> int:
        """A device's interrupt message: remapped by its unit, then delivered to the CPU
        side when the remapping is done."""
        _u, unit = self.unit_of(sid)
        self.msi_times[sid] = self.hv.now()
        result, cycles = unit.remap_interrupt(sid, addr, data)
        if result is not None:
            self.hv.env.call_later(cycles, lambda _e: self._deliver(result))
        return cycles

    def _deliver(self, result: Remapped | Posted | tuple[int, int]) -> None:
        irq = self.hv.irq
        if isinstance(result, Remapped):
            irq.deliver(result.dest, result.vector)
            entry = self.hv.ptdev.lookup_pirq(result.index)
            if entry is not None and entry.mode == "lapic_pt":  # straight into the guest
                self.hv.ptdev.record(entry, self.hv.now())
        elif isinstance(result, Posted):
            if self.post_handler is not None:
                self.post_handler(result)
        else:  # compatibility format, let through: address 19:12 destination, data 7:0
            addr, data = result
            irq.deliver((addr >> 12) & 0xFF, data & 0xFF)

    # ------------------------------------------------------------------ faults
    def _fault_event(self, addr: int, data: int) -> None:
        """The unit's fault event message (compatibility format: never remapped)."""
        self.hv.env.call_later(0, lambda _e: self.hv.irq.deliver((addr >> 12) & 0xFF,
                                                                 data & 0xFF))  # fmt: skip

    def dmar_fault_handler(self, pcpu: int) -> None:
        """Read FSTS; while a primary fault is pending, read the FRCD at FRI, log it and
        clear its F bit (W1C); clear an overflow; at most DMAR_FAULT_LOOP_MAX records."""
        for u, unit in enumerate(self.units):
            for _ in range(DMAR_FAULT_LOOP_MAX):
                fsts = unit.read32(D.FSTS_REG)
                if not fsts & D.FSTS_PPF:
                    break
                fri = (fsts >> D.FSTS_FRI_SHIFT) & 0xFF
                off = D.FRCD_OFFSET + 16 * fri
                lo, hi = unit.read64(off), unit.read64(off + 8)
                self._log(u, lo, hi)
                unit.write64(off + 8, D.FRCD_F)
            if unit.read32(D.FSTS_REG) & D.FSTS_PFO:
                unit.write32(D.FSTS_REG, D.FSTS_PFO)

    def _log(self, u: int, lo: int, hi: int) -> None:
        sid, reason = hi & 0xFFFF, (hi >> 32) & 0xFF
        interrupt = reason >= 0x20
        address = lo >> 48 if interrupt else lo & ~0xFFF
        is_write = not hi & D.FRCD_T
        dom = self.device_domain.get(sid)
        owner = self.hv.vm_by_id(dom.vm_id) if dom else None
        text = D.FAULT_REASONS.get(reason, f"reason {reason:#x}")
        rec = FaultRecord(self.hv.now(), u, sid, address, reason, is_write, interrupt, text,
                          owner.name if owner else None)  # fmt: skip
        self.faults.append(rec)
        tracer = self.hv.tracer
        if tracer.enabled:
            vm_id = owner.vm_id if owner else None
            tracer.instant("vtd", rec.describe(), rec.cycle, FAULT_EVENT_PCPU, vm_id, 0,
                           sid=bdf_str(sid), address=f"{address:#x}", reason=reason,
                           write=is_write)  # fmt: skip

    # -------------------------------------------------------------- statistics
    def report(self) -> dict:
        """The units' counters and every fault the handler logged (stats JSON: "vtd")."""
        lost = sum(u.stats["faults_lost"] for u in self.units)
        return {
            "units": [dict(u.stats) for u in self.units],
            "fault_records": len(self.faults),
            "faults_lost": lost,
            "faults": [
                {"cycle": f.cycle, "sid": bdf_str(f.sid), "vm": f.vm, "address": f.address,
                 "reason": f.reason, "write": f.is_write, "interrupt": f.interrupt,
                 "text": f.text}
                for f in self.faults[:1000]
            ],
        }  # fmt: skip
