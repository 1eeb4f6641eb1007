"""VT-d remapping hardware as the chipset implements it (Intel Virtualization Technology for
Directed I/O Architecture Specification: §3 DMA remapping, §5 interrupt remapping and
posting, §6.5 queued invalidation, §7 fault recording, §9 the table formats, §10 registers).
ACRN's driver for it is hv/arch/vtd.py; this is the other side of its register accesses, as
hv/arch/vmx.py is the processor's side of VMX.

Modelled:
- registers (§10.4): VER, CAP, ECAP, GCMD/GSTS (TE, SRTP, QIE, IRE, SIRTP, CFI), RTADDR,
  FSTS, FECTL, FEDATA, FEADDR, the fault recording registers (FRCD, at CAP.FRO) and the
  invalidation queue (IQA, IQH, IQT) and IRTA;
- DMA remapping of requests without PASID, legacy mode: root table (§9.1, 256 entries of
  16 bytes, one per bus) -> context table (§9.3, 256 entries, one per device/function) ->
  the second-level page table (§9.8, the EPT format: R bit 0, W bit 1, PS bit 7 at the 2 MiB
  and 1 GiB levels), 4-level walks for AW = 48 bits;
- interrupt remapping (§5.1): remappable-format MSIs index the interrupt remapping table
  (§9.10, 16-byte IRTEs) with source-id verification (SVT/SQ/SID); remapped IRTEs (IM = 0)
  give the vector and destination, posted IRTEs (IM = 1, §9.11, §5.2) set the vector in the
  posted-interrupt descriptor's PIR and send its notification vector;
- primary fault logging (§7.1.3): a fault is written to the next free FRCD register (fault
  info, source id, reason, type), FSTS.PPF and FRI say where, an overflow sets PFO, and the
  fault event (FEADDR/FEDATA, unless FECTL.IM) is raised once per PPF transition;
- queued invalidation (§6.5.2): context-cache, IOTLB, interrupt-entry-cache and wait
  descriptors.

Simplified: the IOTLB and the context and interrupt-entry caches exist for their timing only
(a hit or a miss costs what the profile says): a translation always reads the tables as they
are now, as if every change were followed by its invalidation. Reserved-bit checks, scalable
mode, first-level and nested translation, PASIDs, device TLBs, page requests and snoop control
are not modelled (ACRN uses none of them).
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from acrn_sim.sim.hostmem import HostMemory

# ---- register offsets (§10.4)
VER_REG, CAP_REG, ECAP_REG, GCMD_REG, GSTS_REG = 0x00, 0x08, 0x10, 0x18, 0x1C
RTADDR_REG, CCMD_REG, FSTS_REG, FECTL_REG = 0x20, 0x28, 0x34, 0x38
FEDATA_REG, FEADDR_REG, FEUADDR_REG = 0x3C, 0x40, 0x44
IQH_REG, IQT_REG, IQA_REG, ICS_REG, IRTA_REG = 0x80, 0x88, 0x90, 0x9C, 0xB8
FRCD_OFFSET, IOTLB_OFFSET = 0x200, 0x100  # CAP.FRO and ECAP.IRO, in bytes
NFR = 8  # fault recording registers
# ---- GCMD/GSTS bits (§10.4.4, §10.4.5)
GCMD_TE, GCMD_SRTP, GCMD_QIE, GCMD_IRE, GCMD_SIRTP, GCMD_CFI = (
    1 << 31, 1 << 30, 1 << 26, 1 << 25, 1 << 24, 1 << 23,
)  # fmt: skip
# ---- FSTS (§10.4.9) and FECTL (§10.4.10)
FSTS_PFO, FSTS_PPF, FSTS_FRI_SHIFT = 0x1, 0x2, 8
FECTL_IM, FECTL_IP = 1 << 31, 1 << 30
FRCD_F, FRCD_T = 1 << 63, 1 << 62  # in the upper qword: Fault (bit 127), Type (bit 126)
# ---- CAP/ECAP values of the modelled unit
CAP_ND_256 = 2  # 256 domains
CAP_SAGAW_48 = 1 << (8 + 2)  # 4-level, 48-bit AGAW
CAP_MGAW_48 = 47 << 16
CAP_SLLPS = 0x3 << 34  # 2 MiB and 1 GiB second-level pages
CAP_PSI = 1 << 39
CAP_PI = 1 << 59
ECAP_C, ECAP_QI, ECAP_IR, ECAP_EIM, ECAP_PT = 0x1, 0x2, 0x8, 0x10, 0x40
# ---- table entries
P_BIT = 0x1
CTX_TT_MASK, CTX_TT_SHIFT = 0xC, 2
CTX_AW_48 = 2  # AW field: 48-bit AGAW, 4-level table (§9.3)
SL_R, SL_W, SL_PS = 0x1, 0x2, 0x80
ADDR_MASK = 0x000F_FFFF_FFFF_F000
IRTE_IM = 1 << 15  # posted format
INTR_RANGE = (0xFEE0_0000, 0xFF00_0000)  # interrupt address range (§3.14)

# ---- fault reasons (§7.1.3 and the fault reason encodings appendix)
FR_ROOT_NOT_PRESENT = 0x01
FR_CONTEXT_NOT_PRESENT = 0x02
FR_CONTEXT_INVALID = 0x03
FR_ADDR_BEYOND_AW = 0x04
FR_WRITE = 0x05
FR_READ = 0x06
FR_INTERRUPT_ADDR = 0x0E
FR_IR_INDEX_OVER = 0x21
FR_IR_NOT_PRESENT = 0x22
FR_IR_COMPAT_BLOCKED = 0x25
FR_IR_SID = 0x26
FAULT_REASONS = {
    FR_ROOT_NOT_PRESENT: "root entry not present",
    FR_CONTEXT_NOT_PRESENT: "context entry not present",
    FR_CONTEXT_INVALID: "context entry invalid",
    FR_ADDR_BEYOND_AW: "address beyond the domain's address width",
    FR_WRITE: "write with no write permission (not mapped)",
    FR_READ: "read with no read permission (not mapped)",
    FR_INTERRUPT_ADDR: "DMA into the interrupt address range",
    FR_IR_INDEX_OVER: "interrupt index beyond the remapping table",
    FR_IR_NOT_PRESENT: "interrupt remapping entry not present",
    FR_IR_COMPAT_BLOCKED: "compatibility-format interrupt blocked",
    FR_IR_SID: "interrupt source-id verification failed",
}

_Q2 = struct.Struct("<QQ")


@dataclass(frozen=True)
class Fault:
    """One recorded fault, as the FRCD register holds it."""

    sid: int
    address: int  # the page (DMA) or the interrupt index (interrupt requests)
    reason: int
    is_write: bool
    interrupt: bool = False

    @property
    def text(self) -> str:
        return FAULT_REASONS.get(self.reason, f"reason {self.reason:#x}")


@dataclass(frozen=True)
class Remapped:
    """An interrupt after remapping (IM = 0): what the CPU side delivers."""

    vector: int
    dest: int  # APIC id (physical) or logical destination
    logical: bool
    delivery_mode: int
    index: int


@dataclass(frozen=True)
class Posted:
    """A posted interrupt (IM = 1): the PIR bit is set; `notify` says whether the
    notification vector was sent (ON was clear and SN clear, or the IRTE is urgent)."""

    vector: int  # the virtual vector now set in the PIR
    pda: int  # the posted-interrupt descriptor's address
    notification_vector: int
    ndst: int
    notify: bool
    index: int


class DmarUnit:
    """One DMA-remapping hardware unit (DRHD) with its registers at `base`."""

    def __init__(
        self,
        mem: HostMemory,
        base: int,
        cycles: dict[str, int],
        posted: bool = False,
        fault_event: Callable[[int, int], None] | None = None,
    ) -> None:
        self.mem = mem
        self.base = base
        self.cycles = cycles
        self.cap = (
            CAP_ND_256 | CAP_SAGAW_48 | CAP_MGAW_48 | (FRCD_OFFSET // 16) << 24
            | CAP_SLLPS | CAP_PSI | (NFR - 1) << 40 | (CAP_PI if posted else 0)
        )  # fmt: skip
        self.ecap = ECAP_C | ECAP_QI | ECAP_IR | ECAP_EIM | ECAP_PT | (IOTLB_OFFSET // 16) << 8
        self.gcmd = self.gsts = 0
        self.rtaddr = self.irta = 0
        self.rta = self.ira = 0  # the pointers latched by SRTP and SIRTP
        self.fsts = 0
        self.fectl = FECTL_IM
        self.fedata = self.feaddr = self.feuaddr = 0
        self.iqa = self.iqh = self.iqt = 0
        self.ics = 0
        self.frcd = [(0, 0)] * NFR
        self.fault_event = fault_event  # (address, data): the fault event's message
        self.iotlb: OrderedDict[tuple[int, int], None] = OrderedDict()
        self.iotlb_size = 64
        self.ctx_cache: set[int] = set()
        self.iec: set[int] = set()
        self.stats = {"translations": 0, "iotlb_hits": 0, "iotlb_misses": 0, "faults": 0,
                      "faults_lost": 0, "interrupts": 0, "posted": 0}  # fmt: skip
        self.fault_log: list[Fault] = []  # every fault recorded (or lost), for the report

    # ------------------------------------------------------------ registers
    def read32(self, off: int) -> int:
        regs = {
            VER_REG: 0x10, GSTS_REG: self.gsts, FSTS_REG: self.fsts, FECTL_REG: self.fectl,
            FEDATA_REG: self.fedata, FEADDR_REG: self.feaddr, FEUADDR_REG: self.feuaddr,
            ICS_REG: self.ics,
        }  # fmt: skip
        if off in regs:
            return regs[off]
        return self.read64(off & ~7) >> (32 * ((off >> 2) & 1)) & 0xFFFF_FFFF

    def read64(self, off: int) -> int:
        if FRCD_OFFSET <= off < FRCD_OFFSET + 16 * NFR:
            lo, hi = self.frcd[(off - FRCD_OFFSET) // 16]
            return hi if off & 8 else lo
        return {CAP_REG: self.cap, ECAP_REG: self.ecap, RTADDR_REG: self.rtaddr,
                IQH_REG: self.iqh, IQT_REG: self.iqt, IQA_REG: self.iqa,
                IRTA_REG: self.irta}.get(off, 0)  # fmt: skip

    def write32(self, off: int, value: int) -> None:
        if off == GCMD_REG:
            self._gcmd(value)
        elif off == FSTS_REG:  # PFO and PPF... PFO is RW1C; PPF follows the FRCD F bits
            if value & FSTS_PFO:
                self.fsts &= ~FSTS_PFO
        elif off == FECTL_REG:
            self.fectl = (self.fectl & FECTL_IP) | (value & FECTL_IM)
            if not self.fectl & FECTL_IM and self.fectl & FECTL_IP:
                self.fectl &= ~FECTL_IP
                self._send_fault_event()
        elif off == FEDATA_REG:
            self.fedata = value & 0xFFFF
        elif off == FEADDR_REG:
            self.feaddr = value & ~3
        elif off == FEUADDR_REG:
            self.feuaddr = value
        elif off == ICS_REG:
            self.ics &= ~(value & 1)  # IWC is RW1C
        else:
            old = self.read64(off & ~7)
            shift = 32 * ((off >> 2) & 1)
            self.write64(off & ~7, (old & ~(0xFFFF_FFFF << shift)) | (value << shift))

    def write64(self, off: int, value: int) -> None:
        if FRCD_OFFSET <= off < FRCD_OFFSET + 16 * NFR:
            i = (off - FRCD_OFFSET) // 16
            lo, hi = self.frcd[i]
            if off & 8 and value & FRCD_F:  # F is RW1C: the record is free again
                self.frcd[i] = (lo, hi & ~FRCD_F)
                self._update_ppf()
        elif off == RTADDR_REG:
            self.rtaddr = value
        elif off == IRTA_REG:
            self.irta = value
        elif off == IQA_REG:
            self.iqa = value
            self.iqh = 0
        elif off == IQT_REG:
            self.iqt = value & 0x7FFF0
            self._process_queue()

    def _gcmd(self, value: int) -> None:
        """GCMD is write-only; each command shows in GSTS at once (the model completes it
        before software polls)."""
        self.gcmd = value
        if value & GCMD_SRTP:
            self.rta = self.rtaddr & ~0xFFF
            self.gsts |= GCMD_SRTP
            self.ctx_cache.clear()
            self.iotlb.clear()
        if value & GCMD_SIRTP:
            self.ira = self.irta
            self.gsts |= GCMD_SIRTP
            self.iec.clear()
        for bit in (GCMD_TE, GCMD_QIE, GCMD_IRE, GCMD_CFI):
            self.gsts = self.gsts | bit if value & bit else self.gsts & ~bit

    # ------------------------------------------------- queued invalidation (§6.5.2)
    def _process_queue(self) -> None:
        if not self.gsts & GCMD_QIE:
            return
        base, size = self.iqa & ADDR_MASK, 256 << (self.iqa & 7)  # QS: 2^X 4 KiB pages
        while self.iqh != self.iqt:
            lo, hi = _Q2.unpack(self.mem.read(base + self.iqh, 16))
            kind = lo & 0xF
            if kind == 1:  # context-cache invalidate
                self.ctx_cache.clear()
            elif kind == 2:  # IOTLB invalidate
                self.iotlb.clear()
            elif kind == 4:  # interrupt entry cache invalidate
                self.iec.clear()
            elif kind == 5:  # invalidation wait: status write (SW) and/or completion (IF)
                if lo & (1 << 5):
                    self.mem.write_u32(hi & ~3, lo >> 32)
                if lo & (1 << 4):
                    self.ics |= 1
            self.iqh = (self.iqh + 16) % (size * 16)

    # --------------------------------------------------------- DMA remapping
    def translate(
        self, sid: int, addr: int, length: int, write: bool
    ) -> tuple[list[tuple[int, int]] | None, int]:
        """The host ranges [addr, addr+length) of requester `sid` reaches, or None (the
        request is blocked and its fault recorded); and the cycles the translation took."""
        if not self.gsts & GCMD_TE:
            return [(addr, length)], 0  # translation off: requests are untranslated (§3.4)
        self.stats["translations"] += 1
        cycles, ranges, page = 0, [], addr & ~0xFFF
        end = addr + length
        while page < end:
            result, did = self._walk(sid, page, write)
            if isinstance(result, Fault):
                self._record(result)
                return None, cycles
            key = (did, page >> 12)
            if key in self.iotlb:
                self.iotlb.move_to_end(key)
                self.stats["iotlb_hits"] += 1
                cycles += self.cycles["vtd_iotlb_hit"]
            else:
                self.iotlb[key] = None
                if len(self.iotlb) > self.iotlb_size:
                    self.iotlb.popitem(last=False)
                self.stats["iotlb_misses"] += 1
                cycles += self.cycles["vtd_iotlb_miss"]
            lo, hi = max(addr, page), min(end, page + 0x1000)
            hpa = result + (lo - page)
            if ranges and ranges[-1][0] + ranges[-1][1] == hpa:
                ranges[-1] = (ranges[-1][0], ranges[-1][1] + hi - lo)
            else:
                ranges.append((hpa, hi - lo))
            page += 0x1000
        return ranges, cycles

    def context(self, sid: int) -> tuple[int, int, int, int] | Fault:
        """(lower, upper, domain id, second-level table) of the device's context entry."""
        bus, devfn = sid >> 8, sid & 0xFF
        root_lo, _ = _Q2.unpack(self.mem.read(self.rta + 16 * bus, 16))
        if not root_lo & P_BIT:
            return Fault(sid, 0, FR_ROOT_NOT_PRESENT, False)
        lo, hi = _Q2.unpack(self.mem.read((root_lo & ADDR_MASK) + 16 * devfn, 16))
        if not lo & P_BIT:
            return Fault(sid, 0, FR_CONTEXT_NOT_PRESENT, False)
        if (lo & CTX_TT_MASK) >> CTX_TT_SHIFT != 0 or hi & 7 != CTX_AW_48:
            return Fault(sid, 0, FR_CONTEXT_INVALID, False)
        return lo, hi, (hi >> 8) & 0xFFFF, lo & ADDR_MASK

    def _walk(self, sid: int, page: int, write: bool) -> tuple[int | Fault, int]:
        """(the host page, or the Fault; the domain id) of one 4 KiB page."""
        if INTR_RANGE[0] <= page < INTR_RANGE[1]:
            return Fault(sid, page, FR_INTERRUPT_ADDR, write), 0
        ctx = self.context(sid)
        if isinstance(ctx, Fault):
            return Fault(sid, page, ctx.reason, write), 0
        _lo, _hi, did, table = ctx
        if sid not in self.ctx_cache:
            self.ctx_cache.add(sid)
        if page >> 48:
            return Fault(sid, page, FR_ADDR_BEYOND_AW, write), did
        need = SL_W if write else SL_R
        reason = FR_WRITE if write else FR_READ
        for level, shift in enumerate((39, 30, 21, 12)):
            e = self.mem.read_u64(table + ((page >> shift) & 0x1FF) * 8)
            if not e & need:  # not present, or present without this access right
                return Fault(sid, page, reason, write), did
            if shift == 12 or (level in (1, 2) and e & SL_PS):
                size = 1 << shift
                return (e & ADDR_MASK & ~(size - 1)) | (page & (size - 1)), did
            table = e & ADDR_MASK
        return Fault(sid, page, reason, write), did

    # ---------------------------------------------------- interrupt remapping
    def remap_interrupt(
        self, sid: int, addr: int, data: int
    ) -> tuple[Remapped | Posted | tuple[int, int] | None, int]:
        """What an interrupt message from `sid` becomes (§5.1.4): a Remapped or Posted
        interrupt, or the message itself (compatibility format, passed on), or None (blocked,
        its fault recorded); and the cycles of the remapping."""
        self.stats["interrupts"] += 1
        if not self.gsts & GCMD_IRE:
            return (addr, data), 0
        cycles = self.cycles["vtd_ir_remap"]
        if not addr & 0x10:  # compatibility format
            if self.gsts & GCMD_CFI:
                return (addr, data), cycles
            self._record(Fault(sid, 0, FR_IR_COMPAT_BLOCKED, True, True))
            return None, cycles
        handle = ((addr >> 5) & 0x7FFF) | ((addr >> 2) & 1) << 15
        index = handle + (data & 0xFFFF if addr & 0x8 else 0)  # SHV: plus the subhandle
        entries = 2 << (self.ira & 0xF)
        if index >= entries:
            self._record(Fault(sid, index, FR_IR_INDEX_OVER, True, True))
            return None, cycles
        lo, hi = _Q2.unpack(self.mem.read((self.ira & ADDR_MASK) + 16 * index, 16))
        if not lo & P_BIT:
            self._record(Fault(sid, index, FR_IR_NOT_PRESENT, True, True))
            return None, cycles
        svt, sq, want = (hi >> 18) & 3, (hi >> 16) & 3, hi & 0xFFFF
        if svt == 1:  # verify with SID, ignoring the function bits SQ names (§9.10)
            mask = (0xFFFF, 0xFFFB, 0xFFF9, 0xFFF8)[sq]
            ok = sid & mask == want & mask
        elif svt == 2:  # bus range: SID[15:8] start bus, SID[7:0] end bus
            ok = want >> 8 <= sid >> 8 <= want & 0xFF
        else:
            ok = True
        if not ok:
            self._record(Fault(sid, index, FR_IR_SID, True, True))
            return None, cycles
        if lo & IRTE_IM:
            return self._post(lo, hi, index), cycles
        return Remapped(vector=(lo >> 16) & 0xFF, dest=lo >> 32, logical=bool(lo & 0x4),
                        delivery_mode=(lo >> 5) & 7, index=index), cycles  # fmt: skip

    def _post(self, lo: int, hi: int, index: int) -> Posted:
        """Posted format (§9.11): set the virtual vector in the descriptor's PIR; if the
        outstanding-notification bit was clear and notifications are not suppressed (or the
        IRTE is urgent), set ON and send the notification event (§5.2.3)."""
        self.stats["posted"] += 1
        vv = (lo >> 16) & 0xFF
        urgent = bool(lo & (1 << 14))
        pda = ((lo >> 38) & 0x3FF_FFFF) << 6 | (hi >> 32) << 32
        word = pda + 8 * (vv >> 6)
        self.mem.write_u64(word, self.mem.read_u64(word) | 1 << (vv & 63))
        ctl = self.mem.read_u64(pda + 32)  # ON bit 0, SN bit 1, NV 23:16, NDST 63:32
        notify = not ctl & 1 and (urgent or not ctl & 2)
        if notify:
            self.mem.write_u64(pda + 32, ctl | 1)
        return Posted(vv, pda, (ctl >> 16) & 0xFF, ctl >> 32, notify, index)

    # --------------------------------------------------------- fault logging
    def _record(self, fault: Fault) -> None:
        """Primary fault logging: into the next free FRCD register, from FRI on."""
        self.stats["faults"] += 1
        self.fault_log.append(fault)
        start = (self.fsts >> FSTS_FRI_SHIFT) & 0xFF if self.fsts & FSTS_PPF else 0
        for n in range(NFR):
            i = (start + n) % NFR
            if not self.frcd[i][1] & FRCD_F:
                break
        else:
            self.fsts |= FSTS_PFO  # every register holds a fault: this one is lost
            self.stats["faults_lost"] += 1
            return
        info = (fault.address << 48) if fault.interrupt else fault.address & ~0xFFF
        hi = fault.sid | fault.reason << 32 | FRCD_F | (0 if fault.is_write else FRCD_T)
        self.frcd[i] = (info & 0xFFFF_FFFF_FFFF_FFFF, hi)
        had_pending = bool(self.fsts & FSTS_PPF)
        self._update_ppf()
        if not had_pending:
            if self.fectl & FECTL_IM:
                self.fectl |= FECTL_IP
            else:
                self._send_fault_event()

    def _update_ppf(self) -> None:
        """PPF is set while any FRCD holds a fault; FRI names the first one."""
        pending = [i for i in range(NFR) if self.frcd[i][1] & FRCD_F]
        self.fsts &= ~(FSTS_PPF | 0xFF << FSTS_FRI_SHIFT)
        if pending:
            self.fsts |= FSTS_PPF | pending[0] << FSTS_FRI_SHIFT

    def _send_fault_event(self) -> None:
        if self.fault_event is not None:
            self.fault_event(self.feaddr, self.fedata)
