"""The VT-d remapping hardware model (hv/arch/dmar.py) against the specification's formats:
tables built here by hand, byte by byte, as the spec lays them out; the unit walks them."""

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from acrn_sim.hv.arch import dmar as D
from acrn_sim.hv.arch.dmar import DmarUnit, Posted, Remapped
from acrn_sim.hv.guest.ept import EPT_RD, EPT_WB, EPT_WR, Ept
from acrn_sim.sim.hostmem import HostMemory

CYCLES = {"vtd_iotlb_hit": 20, "vtd_iotlb_miss": 1000, "vtd_ir_remap": 100}
SID = 0x00F8  # 00:1f.0
MEM = 64 << 20


class Machine:
    """Host memory, a page allocator, an EPT, and one unit whose tables point the device at it."""

    def __init__(self, posted=False):
        self.mem = HostMemory(MEM)
        self.next = 48 << 20  # table pages from here; RAM below
        self.events = []
        self.ept = Ept(self.mem, self.page)
        self.unit = DmarUnit(self.mem, 0xFED91000, CYCLES, posted,
                             lambda a, d: self.events.append((a, d)))  # fmt: skip
        self.root, self.ctx, self.irt = self.page(), self.page(), self.page()
        # root entry for bus 0 (§9.1): P | context-table pointer
        self.mem.write(self.root, struct.pack("<QQ", self.ctx | 1, 0))
        self.unit.write64(D.RTADDR_REG, self.root)
        self.unit.write32(D.GCMD_REG, D.GCMD_SRTP)
        self.unit.write64(D.IRTA_REG, self.irt | 7)  # 256 entries
        self.unit.write32(D.GCMD_REG, D.GCMD_SRTP | D.GCMD_SIRTP)
        self.unit.write32(D.GCMD_REG, D.GCMD_TE | D.GCMD_IRE)
        self.unit.write32(D.FECTL_REG, 0)  # fault events unmasked

    def page(self):
        p, self.next = self.next, self.next + 0x1000
        self.mem.fill(p, 0x1000)
        return p

    def attach(self, sid=SID, did=3, table=None):
        """A context entry (§9.3): P, TT=0, SLPTPTR; AW=2 (48-bit), DID."""
        lo = (table if table is not None else self.ept.root) | 1
        self.mem.write(self.ctx + 16 * (sid & 0xFF), struct.pack("<QQ", lo, 2 | did << 8))

    def irte(self, index, lo, sid=SID, svt=1):
        self.mem.write(self.irt + 16 * index, struct.pack("<QQ", lo | 1, sid | svt << 18))


def frcd(unit, i):
    return unit.read64(D.FRCD_OFFSET + 16 * i), unit.read64(D.FRCD_OFFSET + 16 * i + 8)


def test_untranslated_until_translation_is_enabled():
    m = Machine()
    m.unit.write32(D.GCMD_REG, 0)
    assert m.unit.translate(SID, 0x1234, 8, True) == ([(0x1234, 8)], 0)


def test_a_mapped_page_translates_and_an_unmapped_one_faults_with_a_record():
    m = Machine()
    m.ept.add_mr(0x10000, 0x200000, 0x2000, EPT_RD | EPT_WR | EPT_WB << 3)
    m.attach()
    ranges, cycles = m.unit.translate(SID, 0x10FF0, 0x20, True)
    assert ranges == [(0x200FF0, 0x20)]  # across the page boundary, contiguous on the host
    assert cycles == 2 * CYCLES["vtd_iotlb_miss"]
    assert m.unit.translate(SID, 0x10000, 4, False)[1] == CYCLES["vtd_iotlb_hit"]
    blocked, _ = m.unit.translate(SID, 0x40000, 4, True)
    assert blocked is None
    lo, hi = frcd(m.unit, 0)
    assert hi >> 63 == 1  # F
    assert hi & 0xFFFF == SID and (hi >> 32) & 0xFF == D.FR_WRITE
    assert not hi >> 62 & 1  # T = 0: a write
    assert lo == 0x40000  # the faulting page
    fsts = m.unit.read32(D.FSTS_REG)
    assert fsts & D.FSTS_PPF and (fsts >> 8) & 0xFF == 0
    assert m.events == [(m.unit.feaddr, m.unit.fedata)]  # one fault event


def test_read_only_mapping_faults_a_write_not_a_read():
    m = Machine()
    m.ept.add_mr(0x10000, 0x200000, 0x1000, EPT_RD | EPT_WB << 3)
    m.attach()
    assert m.unit.translate(SID, 0x10000, 4, False)[0] == [(0x200000, 4)]
    assert m.unit.translate(SID, 0x10000, 4, True)[0] is None
    assert m.unit.fault_log[-1].reason == D.FR_WRITE


def test_no_context_entry_and_no_root_entry_fault():
    m = Machine()
    assert m.unit.translate(SID, 0, 4, False)[0] is None
    assert m.unit.fault_log[-1].reason == D.FR_CONTEXT_NOT_PRESENT
    assert m.unit.translate(0x0100, 0, 4, False)[0] is None  # bus 1: no root entry
    assert m.unit.fault_log[-1].reason == D.FR_ROOT_NOT_PRESENT


def test_fault_records_fill_up_then_overflow_and_clearing_frees_them():
    m = Machine()
    m.attach()
    for i in range(D.NFR + 2):
        m.unit.translate(SID, 0x100000 * (i + 1), 4, True)
    assert all(frcd(m.unit, i)[1] >> 63 for i in range(D.NFR))
    assert m.unit.read32(D.FSTS_REG) & D.FSTS_PFO
    assert m.unit.stats["faults_lost"] == 2
    assert len(m.events) == 1  # PPF went 0 -> 1 once
    for i in range(D.NFR):  # software clears each F (RW1C)
        m.unit.write64(D.FRCD_OFFSET + 16 * i + 8, 1 << 63)
    assert not m.unit.read32(D.FSTS_REG) & D.FSTS_PPF
    m.unit.translate(SID, 0x900000, 4, True)
    assert len(m.events) == 2


def test_interrupt_remapping_remapped_posted_and_its_faults():
    m = Machine(posted=True)
    m.attach()
    m.irte(5, 0x41 << 16 | 2 << 32)  # vector 0x41 to APIC 2, fixed, physical
    addr = 0xFEE00000 | 5 << 5 | 1 << 4  # remappable format, handle 5, SHV 0
    r, cycles = m.unit.remap_interrupt(SID, addr, 0)
    assert r == Remapped(0x41, 2, False, 0, 5) and cycles == CYCLES["vtd_ir_remap"]
    # another requester may not use this IRTE (SVT = 1: full source-id verification)
    assert m.unit.remap_interrupt(0x0008, addr, 0)[0] is None
    assert m.unit.fault_log[-1].reason == D.FR_IR_SID
    assert m.unit.remap_interrupt(SID, 0xFEE00000 | 6 << 5 | 1 << 4, 0)[0] is None
    assert m.unit.fault_log[-1].reason == D.FR_IR_NOT_PRESENT
    lo, hi = frcd(m.unit, 1)
    assert lo >> 48 == 6 and (hi >> 32) & 0xFF == D.FR_IR_NOT_PRESENT  # FI[63:48] = index
    assert m.unit.remap_interrupt(SID, 0xFEE00000, 0x41)[0] is None  # compatibility: blocked
    assert m.unit.fault_log[-1].reason == D.FR_IR_COMPAT_BLOCKED
    # posted (§9.11): PIR bit, ON, the notification vector and destination
    pid = m.page()
    m.mem.write_u64(pid + 32, 0xE5 << 16 | 3 << 32)
    m.irte(7, 1 << 15 | 0x52 << 16 | ((pid >> 6) & 0x3FFFFFF) << 38)
    p, _ = m.unit.remap_interrupt(SID, 0xFEE00000 | 7 << 5 | 1 << 4, 0)
    assert p == Posted(0x52, pid, 0xE5, 3, True, 7)
    assert m.mem.read_u64(pid + 8) == 1 << (0x52 - 64) and m.mem.read_u64(pid + 32) & 1
    p2, _ = m.unit.remap_interrupt(SID, 0xFEE00000 | 7 << 5 | 1 << 4, 0)
    assert not p2.notify  # ON already set: no second notification


def test_queued_invalidation_wait_descriptor_writes_its_status():
    m = Machine()
    q, status = m.page(), m.page()
    m.unit.write64(D.IQA_REG, q)
    m.unit.write32(D.GCMD_REG, m.unit.gsts | D.GCMD_QIE)
    m.mem.write(q, struct.pack("<QQ", 5 | 1 << 5 | 0xABCD << 32, status))
    m.unit.write64(D.IQT_REG, 16)
    assert m.mem.read_u32(status) == 0xABCD and m.unit.read64(D.IQH_REG) == 16


# ---------------------------------------------------- the IOMMU's translation is the EPT's
PAGES = st.integers(min_value=0, max_value=0x3FF)  # GPA pages in the first 4 MiB (of 2^36)


@settings(max_examples=60, deadline=None)
@given(
    maps=st.lists(
        st.tuples(PAGES, st.integers(0, 2047), st.integers(1, 8), st.booleans()),
        max_size=12,
    ),
    probes=st.lists(
        st.tuples(st.integers(0, (0x400 << 12) + 0x2000), st.booleans()), min_size=1, max_size=40
    ),  # fmt: skip
    big=st.booleans(),
)
def test_iommu_translation_equals_the_ept_and_faults_exactly_where_it_has_no_mapping(
    maps, probes, big
):
    """For any mappings of a VM's EPT (4 KiB runs, some read-only, optionally a 2 MiB page)
    and any addresses, the DMA translation through root -> context -> the EPT gives the EPT's
    own walk, and a request faults exactly when the EPT does not map the page with the access
    right it needs."""
    m = Machine()
    for gpa_page, hpa_page, n, writable in maps:
        prot = EPT_RD | (EPT_WR if writable else 0) | EPT_WB << 3
        m.ept.add_mr(gpa_page << 12, hpa_page << 12, n << 12, prot)
    if big:
        m.ept.add_mr(0x600000, 0x800000, 0x200000, EPT_RD | EPT_WR | EPT_WB << 3)
    m.attach()
    faults = 0
    for addr, write in probes:
        walked = m.ept.walk(addr & ~0xFFF)
        ranges, _ = m.unit.translate(SID, addr, 1, write)
        ok = walked is not None and walked[1] & (2 if write else 1)
        if ok:
            assert ranges == [(walked[0] | (addr & 0xFFF), 1)]
        else:
            faults += 1
            assert ranges is None
            assert m.unit.fault_log[-1].address == addr & ~0xFFF
            assert m.unit.fault_log[-1].reason == (D.FR_WRITE if write else D.FR_READ)
    assert m.unit.stats["faults"] == faults


@pytest.mark.parametrize("addr", [0xFEE00000, 0xFEEFF000])
def test_dma_into_the_interrupt_range_faults(addr):
    m = Machine()
    m.attach()
    assert m.unit.translate(SID, addr, 4, True)[0] is None
    assert m.unit.fault_log[-1].reason == D.FR_INTERRUPT_ADDR
