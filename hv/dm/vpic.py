"""The virtual 8259A pair (ACRN hypervisor/dm/vpic.c; Intel 8259A data sheet).

Master at 0x20/0x21, slave at 0xA0/0xA1 cascaded on master IR2, ELCR at 0x4D0/0x4D1.
Modelled: the ICW1-ICW4 initialization sequence (single/cascade, IC4, AEOI, SFNM), OCW1 (IMR),
OCW2 (non-specific, specific and rotating EOI), OCW3 (read IRR/ISR, poll, special mask mode),
edge- and level-triggered inputs (ELCR), fixed priority with rotation, and the in-service
blocking of lower priorities. The output goes to the BSP as an ExtINT request (ACRN
ACRN_REQUEST_EXTINT), injected at VM entry; the vector is ICW2's base + the pin, and
injecting it moves the pin from IRR to ISR (vpic_intr_accepted). The vLAPIC's LINT0 routing
is not modelled yet: the PIC is always connected.
"""

from __future__ import annotations

from collections.abc import Callable

MASTER, SLAVE = 0, 1
PIC_PORTS = {0x20: (MASTER, 0), 0x21: (MASTER, 1), 0xA0: (SLAVE, 0), 0xA1: (SLAVE, 1)}
ELCR_PORTS = (0x4D0, 0x4D1)


class I8259:
    def __init__(self, master: bool) -> None:
        self.master = master
        self.reset()
        self.imr = 0xFF  # masked at power-on, until the guest's ICW1 clears the mask
        self.elc = 0  # edge/level control (ELCR): 1 = level
        self.pin = 0  # current input levels

    def reset(self) -> None:
        """What ICW1 does: the initialization sequence starts over, the mask is cleared."""
        self.icw_num = 0  # 0: ready; 2, 3, 4: the next ICW expected
        self.single = False
        self.ic4 = False
        self.irq_base = 0
        self.irr = self.isr = self.imr = 0
        self.aeoi = self.sfnm = self.smm = self.poll = False
        self.rotate = False
        self.lowprio = 7  # the lowest-priority pin; priority starts after it
        self.read_isr = False

    def _priority_order(self) -> list[int]:
        return [(self.lowprio + 1 + i) & 7 for i in range(8)]

    def pending(self) -> int | None:
        """The pin to raise INTR for, or None (fixed priority, ISR blocking, SMM)."""
        request = self.irr & ~self.imr
        if not request:
            return None
        for pin in self._priority_order():
            if self.isr & (1 << pin) and not self.smm:
                return None  # a higher-or-equal priority is in service
            if request & (1 << pin):
                return pin
        return None

    def eoi(self, pin: int | None = None) -> None:
        if pin is None:  # non-specific: the highest-priority in-service pin
            pin = next((p for p in self._priority_order() if self.isr & (1 << p)), None)
        if pin is not None:
            self.isr &= ~(1 << pin)
            if self.rotate:
                self.lowprio = pin

    def set_pin(self, pin: int, level: bool) -> None:
        bit = 1 << pin
        old = self.pin & bit
        if level:
            self.pin |= bit
            if self.elc & bit or not old:  # level-triggered, or a rising edge
                self.irr |= bit
        else:
            self.pin &= ~bit
            if self.elc & bit:
                self.irr &= ~bit


class VPic:
    def __init__(self, notify: Callable[[], None]) -> None:
        self.notify = notify  # the output may have changed: wake the BSP if it halts
        self.reset()

    def reset(self) -> None:
        """Power-on state (ACRN vpic_init): both chips uninitialized and fully masked."""
        self.chips = (I8259(True), I8259(False))

    # ------------------------------------------------------------- ports
    def pio_read(self, vcpu, port: int, size: int) -> int:
        if port in ELCR_PORTS:
            return self.chips[port - 0x4D0].elc
        chip = self.chips[PIC_PORTS[port][0]]
        if PIC_PORTS[port][1] == 1:
            return chip.imr
        if chip.poll:  # OCW3 poll: acknowledge the highest request, as an INTA would
            chip.poll = False
            pin = chip.pending()
            if pin is None:
                return 0
            self._accept_pin(chip, pin)
            return 0x80 | pin
        return chip.isr if chip.read_isr else chip.irr

    def pio_write(self, vcpu, port: int, size: int, value: int) -> None:
        value &= 0xFF
        if port in ELCR_PORTS:
            # IRQ 0, 1, 2 (master) and 8, 13 (slave) are always edge (ACRN vpic.c masks)
            self.chips[port - 0x4D0].elc = value & (0xF8 if port == 0x4D0 else 0xDE)
            return
        chip = self.chips[PIC_PORTS[port][0]]
        if PIC_PORTS[port][1] == 0:
            if value & 0x10:  # ICW1
                chip.reset()
                chip.icw_num = 2
                chip.single = bool(value & 0x02)
                chip.ic4 = bool(value & 0x01)
            elif value & 0x08:  # OCW3
                if value & 0x02:
                    chip.read_isr = bool(value & 0x01)
                if value & 0x04:
                    chip.poll = True
                if value & 0x40:
                    chip.smm = bool(value & 0x20)
            else:  # OCW2
                cmd = value >> 5
                if cmd in (1, 5):  # non-specific EOI (5: and rotate)
                    chip.rotate = cmd == 5
                    chip.eoi()
                elif cmd in (3, 7):  # specific EOI (7: and rotate)
                    chip.rotate = cmd == 7
                    chip.eoi(value & 7)
                elif cmd in (4, 0):  # rotate in automatic EOI mode set/clear
                    chip.rotate = cmd == 4
                elif cmd == 6:  # set priority
                    chip.lowprio = value & 7
        elif chip.icw_num == 2:
            chip.irq_base = value & 0xF8
            chip.icw_num = 4 if chip.single else 3
            if chip.single and not chip.ic4:
                chip.icw_num = 0
        elif chip.icw_num == 3:
            chip.icw_num = 4 if chip.ic4 else 0
        elif chip.icw_num == 4:
            chip.aeoi = bool(value & 0x02)
            chip.sfnm = bool(value & 0x10)
            chip.icw_num = 0
        else:  # OCW1
            chip.imr = value
        self._update()

    # --------------------------------------------------------- interrupts
    def set_irqline(self, irq: int, level: bool) -> None:
        """A device's line (HC_SET_IRQLINE, or the hypervisor's own vUART)."""
        if 0 <= irq < 16:
            self.chips[irq >> 3].set_pin(irq & 7, level)
            self._update()

    def _update(self) -> None:
        master, slave = self.chips
        # The cascade: the slave's INT output drives master IR2 directly.
        if slave.pending() is not None:
            master.irr |= 1 << 2
        else:
            master.irr &= ~(1 << 2)
        if master.pending() is not None:
            self.notify()

    def pending_vector(self) -> int | None:
        """vpic_pending_intr: the vector the PIC would deliver now."""
        master, slave = self.chips
        pin = master.pending()
        if pin is None:
            return None
        if pin == 2:
            spin = slave.pending()
            if spin is not None:
                return slave.irq_base | spin
        return master.irq_base | pin

    def intr_accepted(self, vector: int) -> None:
        """vpic_intr_accepted: the CPU took the vector (INTA)."""
        master, slave = self.chips
        pin = master.pending()
        if pin is None:
            return
        if pin == 2 and slave.pending() is not None:
            self._accept_pin(slave, slave.pending())
        self._accept_pin(master, pin)
        self._update()

    @staticmethod
    def _accept_pin(chip: I8259, pin: int) -> None:
        bit = 1 << pin
        if not chip.elc & bit:
            chip.irr &= ~bit  # edge: the request is consumed
        if not chip.aeoi:
            chip.isr |= bit
        elif chip.rotate:
            chip.lowprio = pin
