"""A 16550A UART at register level (National Semiconductor PC16550D data sheet).

Enough for a polling driver and an interrupt-driven one: RBR/THR, IER, IIR/FCR, LCR, MCR, LSR,
MSR, SCR and the divisor latch; receive FIFO, THR-empty and receive-data interrupts with their
IIR priority, OUT2 gating of the IRQ line (as on PC boards), and loopback.
Transmission is instantaneous: a written byte is on the console at once and THRE stays set.
The same model backs ACRN's hypervisor vUART (hypervisor/dm/vuart.c) and the device model's
UART (devicemodel/hw/uart_core.c).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

RBR_THR, IER, IIR_FCR, LCR, MCR, LSR, MSR, SCR = range(8)
IER_ERBFI, IER_ETBEI, IER_ELSI, IER_EDSSI = 1, 2, 4, 8
IIR_NOPEND, IIR_RLS, IIR_RXRDY, IIR_TXRDY, IIR_MLSC = 0x1, 0x6, 0x4, 0x2, 0x0
IIR_FIFO_MASK = 0xC0
LCR_DLAB = 0x80
MCR_OUT2, MCR_LOOPBACK = 0x08, 0x10
LSR_DR, LSR_OE, LSR_THRE, LSR_TEMT = 0x01, 0x02, 0x20, 0x40
MSR_CTS, MSR_DSR, MSR_RI, MSR_DCD = 0x10, 0x20, 0x40, 0x80
FIFO_SIZE = 16


class Uart16550:
    def __init__(self, on_tx: Callable[[int], None], on_irq: Callable[[bool], None] | None = None):
        self.on_tx = on_tx
        self.on_irq = on_irq or (lambda level: None)
        self.rx: deque[int] = deque()
        self.ier = self.lcr = self.mcr = self.scr = self.fcr = 0
        self.dll, self.dlh = 12, 0  # 9600 baud at 1.8432 MHz, the usual reset value
        self.lsr_errors = 0
        self.thre_pending = False
        self.irq_level = False

    # What the host side does
    def feed(self, data: bytes) -> None:
        for b in data:
            if len(self.rx) >= FIFO_SIZE:
                self.lsr_errors |= LSR_OE
            else:
                self.rx.append(b)
        self._update_irq()

    def _intr_reason(self) -> int:
        if self.ier & IER_ELSI and self.lsr_errors:
            return IIR_RLS
        if self.ier & IER_ERBFI and self.rx:
            return IIR_RXRDY
        if self.ier & IER_ETBEI and self.thre_pending:
            return IIR_TXRDY
        return IIR_NOPEND

    def _update_irq(self) -> None:
        # On a PC the UART's interrupt output reaches the PIC only through OUT2 (ACRN's vuart.c
        # gates it the same way).
        level = self._intr_reason() != IIR_NOPEND and bool(self.mcr & MCR_OUT2)
        if level != self.irq_level:
            self.irq_level = level
            self.on_irq(level)

    def read(self, offset: int) -> int:
        if self.lcr & LCR_DLAB and offset in (RBR_THR, IER):
            return self.dll if offset == RBR_THR else self.dlh
        if offset == RBR_THR:
            value = self.rx.popleft() if self.rx else 0
            self._update_irq()
            return value
        if offset == IER:
            return self.ier
        if offset == IIR_FCR:
            reason = self._intr_reason()
            if reason == IIR_TXRDY:  # reading IIR clears a THRE interrupt (data sheet Table 4)
                self.thre_pending = False
                self._update_irq()
            return reason | (IIR_FIFO_MASK if self.fcr & 1 else 0)
        if offset == LCR:
            return self.lcr
        if offset == MCR:
            return self.mcr
        if offset == LSR:
            value = LSR_THRE | LSR_TEMT | (LSR_DR if self.rx else 0) | self.lsr_errors
            self.lsr_errors = 0
            self._update_irq()
            return value
        if offset == MSR:
            if self.mcr & MCR_LOOPBACK:  # outputs looped back onto the modem inputs
                m = self.mcr
                return ((m & 1) << 5) | ((m & 2) << 3) | ((m & 4) << 4) | ((m & 8) << 4)
            return MSR_DCD | MSR_DSR | MSR_CTS
        return self.scr

    def write(self, offset: int, value: int) -> None:
        value &= 0xFF
        if self.lcr & LCR_DLAB and offset in (RBR_THR, IER):
            if offset == RBR_THR:
                self.dll = value
            else:
                self.dlh = value
            return
        if offset == RBR_THR:
            if self.mcr & MCR_LOOPBACK:
                self.feed(bytes([value]))
            else:
                self.on_tx(value)
            self.thre_pending = True  # sent at once: the holding register is empty again
        elif offset == IER:
            if value & IER_ETBEI and not self.ier & IER_ETBEI:
                self.thre_pending = True  # enabling ETBEI with THR empty raises the interrupt
            self.ier = value & 0x0F
        elif offset == IIR_FCR:
            if value & 0x02:
                self.rx.clear()
            self.fcr = value & 0xC9
        elif offset == LCR:
            self.lcr = value
        elif offset == MCR:
            self.mcr = value & 0x1F
        elif offset == SCR:
            self.scr = value
        self._update_irq()
