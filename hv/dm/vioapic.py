"""The virtual I/O APIC (ACRN hypervisor/dm/vioapic.c; 82093AA data sheet).

MMIO at 0xFEC00000 (4 KiB): IOREGSEL at 0x00, IOWIN at 0x10, the EOI register at 0x40. Indirect
registers: ID 0x00, version 0x01 (0x11, max entry = pins - 1), arbitration 0x02, and the
redirection table from 0x10 (two 32-bit halves per pin). 120 pins for the Service VM ("aligned
with the native IOAPIC", REDIR_ENTRIES_HW), 48 for other VMs, as in ACRN.
An RTE has the vector, delivery mode, destination mode, polarity, trigger mode, mask and the
destination; delivery status and remote IRR are read-only. Edge pins deliver on a rising edge;
level pins deliver while asserted and remote IRR is clear, which the vLAPIC's EOI of that vector
clears (EOI broadcast), re-delivering if the line is still asserted.
"""

from __future__ import annotations

VIOAPIC_BASE, VIOAPIC_SIZE = 0xFEC0_0000, 0x1000
IOREGSEL, IOWIN, IOEOI = 0x00, 0x10, 0x40
IOAPIC_ID, IOAPIC_VER, IOAPIC_ARB, IOAPIC_REDTBL = 0x00, 0x01, 0x02, 0x10
RTE_MASK, RTE_TRIGGER_LEVEL, RTE_REM_IRR, RTE_DELIVS = 1 << 16, 1 << 15, 1 << 14, 1 << 12
RTE_DESTMODE_LOGICAL, RTE_POLARITY_LOW = 1 << 11, 1 << 13
RTBL_RO_BITS = RTE_REM_IRR | RTE_DELIVS
SERVICE_VM_PINS, VM_PINS = 120, 48


class VIoapic:
    def __init__(self, vm, pins: int) -> None:
        self.vm = vm
        self.pins = pins
        self.reset()

    def reset(self) -> None:
        """Power-on state (ACRN reset_one_vioapic): every pin masked and low."""
        self.id = 0
        self.ioregsel = 0
        self.rte = [RTE_MASK] * self.pins  # masked at reset
        self.level = [False] * self.pins

    # ----------------------------------------------------------------- MMIO
    def mmio_read(self, vcpu, addr: int, size: int) -> int:
        off = addr - VIOAPIC_BASE
        if off == IOREGSEL:
            return self.ioregsel
        if off == IOWIN:
            return self._read_indirect(self.ioregsel)
        return 0xFFFF_FFFF

    def mmio_write(self, vcpu, addr: int, size: int, value: int) -> None:
        off = addr - VIOAPIC_BASE
        if off == IOREGSEL:
            self.ioregsel = value & 0xFF
        elif off == IOWIN:
            self._write_indirect(self.ioregsel, value & 0xFFFF_FFFF)
        elif off == IOEOI:
            self.eoi(value & 0xFF)

    def _read_indirect(self, reg: int) -> int:
        if reg == IOAPIC_ID:
            return self.id << 24
        if reg == IOAPIC_VER:
            return 0x11 | ((self.pins - 1) << 16)
        if reg == IOAPIC_ARB:
            return self.id << 24
        pin, high = divmod(reg - IOAPIC_REDTBL, 2)
        if reg >= IOAPIC_REDTBL and pin < self.pins:
            return (self.rte[pin] >> 32) if high else self.rte[pin] & 0xFFFF_FFFF
        return 0

    def _write_indirect(self, reg: int, value: int) -> None:
        if reg == IOAPIC_ID:
            self.id = (value >> 24) & 0xF
            return
        pin, high = divmod(reg - IOAPIC_REDTBL, 2)
        if reg < IOAPIC_REDTBL or pin >= self.pins:
            return
        old = self.rte[pin]
        if high:
            new = (old & 0xFFFF_FFFF) | (value << 32)
        else:
            new = (old & ~0xFFFF_FFFF) | (value & ~RTBL_RO_BITS) | (old & RTBL_RO_BITS)
        self.rte[pin] = new
        if (old & RTE_MASK) and not (new & RTE_MASK) and self.level[pin]:
            self._deliver(pin)  # unmasking an asserted line (level) delivers it now

    # ----------------------------------------------------------- interrupts
    def set_irqline(self, pin: int, level: bool) -> None:
        if not 0 <= pin < self.pins:
            return
        old, self.level[pin] = self.level[pin], level
        rte = self.rte[pin]
        if rte & RTE_POLARITY_LOW:
            old, level = not old, not level  # active low: assertion is the low level
        if rte & RTE_TRIGGER_LEVEL:
            if level:
                self._deliver(pin)
        elif level and not old:
            self._deliver(pin)

    def _deliver(self, pin: int) -> None:
        rte = self.rte[pin]
        if rte & RTE_MASK:
            return
        level = bool(rte & RTE_TRIGGER_LEVEL)
        if level:
            if rte & RTE_REM_IRR:
                return  # the previous one is not EOIed yet
            self.rte[pin] |= RTE_REM_IRR
        vector, mode = rte & 0xFF, (rte >> 8) & 7
        logical, dest = bool(rte & RTE_DESTMODE_LOGICAL), rte >> 56
        for vcpu in self.vm.vcpus:
            lapic = vcpu.vlapic
            if lapic._matches(dest, logical):
                if mode == 4:  # NMI
                    vcpu.queue_nmi()
                else:  # fixed / lowest priority: the first match takes it
                    lapic.set_intr(vector, level)
                    if mode == 1:
                        break

    def eoi(self, vector: int) -> None:
        """EOI broadcast from a vLAPIC (or a write to the EOI register)."""
        for pin, rte in enumerate(self.rte):
            if rte & 0xFF == vector and rte & RTE_REM_IRR:
                self.rte[pin] &= ~RTE_REM_IRR
                if rte & RTE_TRIGGER_LEVEL and self._asserted(pin):
                    self._deliver(pin)

    def _asserted(self, pin: int) -> bool:
        return self.level[pin] != bool(self.rte[pin] & RTE_POLARITY_LOW)
