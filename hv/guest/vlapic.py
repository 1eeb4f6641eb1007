"""The virtual local APIC (ACRN hypervisor/arch/x86/guest/vlapic.c; SDM Vol. 3 Ch. 11).

Registers: ID, version (16, 6 LVT entries, as ACRN), TPR/APR/PPR, EOI, LDR/DFR, SVR,
ISR/TMR/IRR, ESR, ICR, the LVT entries, and the timer (initial/current count, divide
configuration) in one-shot, periodic and TSC-deadline modes. Reached as xAPIC MMIO at
0xFEE00000 (APIC_ACCESS exits) and as x2APIC MSRs 0x800-0x8FF (RDMSR/WRMSR exits).

Timing: the timer counts at the TSC frequency (ACRN's vLAPIC timer runs on the TSC); a timer
is an event on the simulated timeline, and the vCPU's slice never runs past the next one due,
so it fires at its programmed time to within one basic block.
Interrupt acceptance: the highest IRR vector whose priority class is above PPR's is injected
(ACRN's EVENT request, after EXTINT); injection moves it to ISR; EOI clears the highest ISR bit.
IPIs: fixed and NMI delivery, physical and logical destinations and the shorthands, to this
VM's vCPUs, and INIT and Startup IPIs that start an AP (SDM §8.4.4). Not modelled yet:
APIC-register virtualization and posted interrupts (every access exits), the LVT
thermal/PMC/CMCI/error sources.
"""

from __future__ import annotations

APIC_BASE_GPA = 0xFEE0_0000
VLAPIC_VERSION = 16 | (6 << 16)  # version 16, max LVT entry index 6 (ACRN vlapic.c)
# register offsets
APIC_ID, APIC_VER, APIC_TPR, APIC_APR, APIC_PPR, APIC_EOI = 0x20, 0x30, 0x80, 0x90, 0xA0, 0xB0
APIC_LDR, APIC_DFR, APIC_SVR, APIC_ESR = 0xD0, 0xE0, 0xF0, 0x280
APIC_ISR0, APIC_TMR0, APIC_IRR0 = 0x100, 0x180, 0x200
APIC_LVT_CMCI, APIC_ICR_LO, APIC_ICR_HI = 0x2F0, 0x300, 0x310
APIC_LVT_TIMER, APIC_LVT_THERMAL, APIC_LVT_PMC = 0x320, 0x330, 0x340
APIC_LVT_LINT0, APIC_LVT_LINT1, APIC_LVT_ERROR = 0x350, 0x360, 0x370
APIC_TIMER_ICR, APIC_TIMER_CCR, APIC_TIMER_DCR, APIC_SELF_IPI = 0x380, 0x390, 0x3E0, 0x3F0
LVT_OFFSETS = (APIC_LVT_CMCI, APIC_LVT_TIMER, APIC_LVT_THERMAL, APIC_LVT_PMC, APIC_LVT_LINT0,
               APIC_LVT_LINT1, APIC_LVT_ERROR)  # fmt: skip
LVT_MASKED = 1 << 16
SVR_ENABLE = 1 << 8
TIMER_ONESHOT, TIMER_PERIODIC, TIMER_TSCDEADLINE = 0, 1, 2
# ACRN's timers limit a periodic timer's period to at least 500 us (hypervisor/arch/x86/timer.c
# add_timer, MIN_TIMER_PERIOD_US): the periodic LAPIC timer fires after the programmed count
# first (set_expiration in vlapic.c), then at most every 500 us
MIN_TIMER_PERIOD_US = 500
X2APIC_MSR_BASE = 0x800
DM_FIXED, DM_NMI, DM_INIT, DM_SIPI, DM_EXTINT = 0, 4, 5, 6, 7


class VLapic:
    def __init__(self, vcpu) -> None:
        self.vcpu = vcpu
        self.apic_id = vcpu.vcpu_id
        self.tpr = 0
        self.ldr = 0
        self.dfr = 0xFFFF_FFFF
        self.svr = 0xFF
        self.esr = 0
        self.icr_lo = self.icr_hi = 0
        self.irr = 0  # 256-bit sets as Python ints
        self.isr = 0
        self.tmr = 0
        self.lvt = {off: LVT_MASKED for off in LVT_OFFSETS}
        self.timer_icr = 0
        self.timer_dcr = 0
        self.timer_due: int | None = None  # host cycle of the next expiry
        self._timer_period = 0
        self._timer_gen = 0
        self.x2apic = False

    # ------------------------------------------------------------ state
    @property
    def enabled(self) -> bool:
        return bool(self.svr & SVR_ENABLE) and bool(self.vcpu.msrs.apic_base & (1 << 11))

    def _isrv(self) -> int:
        return self.isr.bit_length() - 1 if self.isr else 0

    @property
    def ppr(self) -> int:
        isrv = self._isrv()
        return self.tpr & 0xFF if (self.tpr >> 4) >= (isrv >> 4) else isrv & 0xF0

    def accepts_extint(self) -> bool:
        """The vPIC's output reaches the CPU when the LAPIC is software-disabled, or LINT0 is
        unmasked in ExtINT mode (ACRN vlapic_accept_extint)."""
        lint0 = self.lvt[APIC_LVT_LINT0]
        return not self.enabled or (not lint0 & LVT_MASKED and (lint0 >> 8) & 7 == DM_EXTINT)

    # ------------------------------------------------------ interrupts
    def set_intr(self, vector: int, level: bool = False) -> None:
        """vlapic_set_intr: latch the vector in IRR (TMR for level) and wake the vCPU."""
        if vector < 16:
            self.esr |= 1 << 6  # received illegal vector
            return
        self.irr |= 1 << vector
        if level:
            self.tmr |= 1 << vector
        else:
            self.tmr &= ~(1 << vector)
        self.vcpu.signal_event_virtual_interrupt()

    def pending_intr(self) -> int | None:
        if not self.enabled or not self.irr:
            return None
        vector = self.irr.bit_length() - 1
        return vector if (vector >> 4) > (self.ppr >> 4) else None

    def intr_accepted(self, vector: int) -> None:
        self.irr &= ~(1 << vector)
        self.isr |= 1 << vector

    def eoi(self) -> None:
        if self.isr:
            vector = self._isrv()
            self.isr &= ~(1 << vector)
            if self.tmr >> vector & 1:  # level-triggered: the vIOAPIC gets the EOI
                self.vcpu.vm.broadcast_eoi(vector)

    # ----------------------------------------------------------- timer
    def _timer_mode(self) -> int:
        return (self.lvt[APIC_LVT_TIMER] >> 17) & 3

    def _divisor(self) -> int:
        v = (self.timer_dcr & 3) | ((self.timer_dcr & 8) >> 1)
        return 1 if v == 7 else 2 << v

    def _arm(self, due: int | None, period: int = 0) -> None:
        self._timer_gen += 1
        self.timer_due = due
        self._timer_period = period
        if due is None:
            return
        gen = self._timer_gen
        hv = self.vcpu.hv
        hv.env.call_later(max(0, due - hv.now()), lambda _ev: self._expire(gen))

    def _expire(self, gen: int) -> None:
        if gen != self._timer_gen:
            return  # re-programmed or stopped since
        lvt = self.lvt[APIC_LVT_TIMER]
        if not lvt & LVT_MASKED:
            self.vcpu.hv_timer_interrupt()
            self.set_intr(lvt & 0xFF)
        if self._timer_period and self._timer_mode() == TIMER_PERIODIC:
            self._arm(self.timer_due + self._timer_period, self._timer_period)
        else:
            self.timer_due = None

    def _current_count(self) -> int:
        if self.timer_due is None or self._timer_mode() == TIMER_TSCDEADLINE:
            return 0
        return max(0, (self.timer_due - self.vcpu.hv.now()) // self._divisor())

    def write_tsc_deadline(self, guest_tsc: int) -> None:
        """IA32_TSC_DEADLINE: 0 disarms; a value in the past fires at once."""
        if self._timer_mode() != TIMER_TSCDEADLINE:
            return
        if guest_tsc == 0:
            self._arm(None)
            return
        offset = self.vcpu.guest_tsc() - self.vcpu.host_tsc()
        self._arm(max(self.vcpu.hv.now(), guest_tsc - offset))

    # ------------------------------------------------------- registers
    def read(self, offset: int) -> int:
        if offset == APIC_ID:
            return self.apic_id if self.x2apic else self.apic_id << 24
        if offset == APIC_VER:
            return VLAPIC_VERSION
        if offset == APIC_TPR:
            return self.tpr
        if offset == APIC_APR:
            return 0
        if offset == APIC_PPR:
            return self.ppr
        if offset == APIC_LDR:
            return self.ldr
        if offset == APIC_DFR:
            return self.dfr
        if offset == APIC_SVR:
            return self.svr
        if offset == APIC_ESR:
            return self.esr
        for base, bits in ((APIC_ISR0, self.isr), (APIC_TMR0, self.tmr), (APIC_IRR0, self.irr)):
            if base <= offset < base + 0x80:
                return (bits >> (32 * ((offset - base) >> 4))) & 0xFFFF_FFFF
        if offset in self.lvt:
            return self.lvt[offset]
        if offset == APIC_ICR_LO:
            return self.icr_lo
        if offset == APIC_ICR_HI:
            return self.icr_hi
        if offset == APIC_TIMER_ICR:
            return self.timer_icr
        if offset == APIC_TIMER_CCR:
            return self._current_count()
        if offset == APIC_TIMER_DCR:
            return self.timer_dcr
        return 0

    def write(self, offset: int, value: int) -> None:
        value &= 0xFFFF_FFFF
        if offset == APIC_ID and not self.x2apic:
            self.apic_id = value >> 24
        elif offset == APIC_TPR:
            self.tpr = value & 0xFF
        elif offset == APIC_EOI:
            self.eoi()
        elif offset == APIC_LDR and not self.x2apic:
            self.ldr = value & 0xFF00_0000
        elif offset == APIC_DFR and not self.x2apic:
            self.dfr = value | 0x0FFF_FFFF
        elif offset == APIC_SVR:
            self.svr = value & 0x13FF
            if not self.svr & SVR_ENABLE:  # software disable masks every LVT entry
                for off in self.lvt:
                    self.lvt[off] |= LVT_MASKED
        elif offset == APIC_ESR:
            self.esr = 0
        elif offset in self.lvt:
            if not self.svr & SVR_ENABLE:
                value |= LVT_MASKED
            old_mode = self._timer_mode()
            self.lvt[offset] = value
            if offset == APIC_LVT_TIMER and self._timer_mode() != old_mode:
                self._arm(None)  # a mode change stops the timer
        elif offset == APIC_ICR_HI and not self.x2apic:
            self.icr_hi = value & 0xFF00_0000
        elif offset == APIC_ICR_LO:
            self.icr_lo = value & ~(1 << 12)  # delivery status: always idle
            self._send_ipi(value, self.icr_hi >> 24 if not self.x2apic else self.icr_hi)
        elif offset == APIC_TIMER_ICR:
            self.timer_icr = value
            if self._timer_mode() == TIMER_TSCDEADLINE:
                return
            if value == 0:
                self._arm(None)
            else:
                period = value * self._divisor()
                periodic = self._timer_mode() == TIMER_PERIODIC
                hv = self.vcpu.hv
                least = hv.profile.tsc_hz * MIN_TIMER_PERIOD_US // 1_000_000
                self._arm(hv.now() + period, max(period, least) if periodic else 0)
        elif offset == APIC_TIMER_DCR:
            self.timer_dcr = value & 0xB
        elif offset == APIC_SELF_IPI and self.x2apic:
            self.set_intr(value & 0xFF)

    # ---------------------------------------------------------- IPIs
    def _matches(self, dest: int, logical: bool) -> bool:
        if not logical:
            return dest == (0xFFFF_FFFF if self.x2apic else 0xFF) or dest == self.apic_id
        if self.x2apic:
            return bool((self.ldr & 0xFFFF) & dest) and (self.ldr >> 16) == (dest >> 16)
        return bool((self.ldr >> 24) & dest)

    def _send_ipi(self, icr_lo: int, dest: int) -> None:
        vector, mode = icr_lo & 0xFF, (icr_lo >> 8) & 7
        logical, shorthand = bool(icr_lo & (1 << 11)), (icr_lo >> 18) & 3
        targets = []
        for v in self.vcpu.vm.vcpus:
            lapic = v.vlapic
            if shorthand == 1:
                hit = lapic is self
            elif shorthand == 2:
                hit = True
            elif shorthand == 3:
                hit = lapic is not self
            else:
                hit = lapic._matches(dest, logical)
            if hit:
                targets.append(v)
        for v in targets:
            if mode == DM_FIXED:
                v.vlapic.set_intr(vector)
            elif mode == DM_NMI:
                v.queue_nmi()
            elif mode == DM_INIT and v is not self.vcpu:
                # ACRN vlapic_process_init_sipi: INIT (level assert) resets the target, which
                # then waits for a Startup IPI; the deassert form (level 0) does nothing.
                if icr_lo & (1 << 14):
                    v.init_received()
            elif mode == DM_SIPI and v is not self.vcpu:
                v.sipi_received(vector)

    # ------------------------------------------------------- x2APIC MSRs
    def msr_read(self, msr: int) -> int | None:
        if not self.x2apic:
            return None
        offset = (msr - X2APIC_MSR_BASE) << 4
        if offset == APIC_ICR_LO:
            return (self.icr_hi << 32) | self.icr_lo
        if offset == APIC_LDR:
            return (self.apic_id >> 4) << 16 | (1 << (self.apic_id & 0xF))
        return self.read(offset)

    def msr_write(self, msr: int, value: int) -> bool:
        if not self.x2apic:
            return False
        offset = (msr - X2APIC_MSR_BASE) << 4
        if offset in (APIC_ID, APIC_VER, APIC_LDR, APIC_PPR, APIC_TIMER_CCR, APIC_DFR):
            return False  # read-only in x2APIC mode: #GP
        if offset == APIC_ICR_LO:
            self.icr_hi = value >> 32
            self.write(APIC_ICR_LO, value & 0xFFFF_FFFF)
            return True
        self.write(offset, value)
        return True
