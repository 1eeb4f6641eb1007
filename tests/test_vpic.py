"""The virtual 8259A pair, and the interrupt-driven UART through it."""

import pytest

from acrn_sim.hv import public as P
from acrn_sim.hv.dm.vpic import VPic
from conftest import boot_as


def programmed(mask_master=0x00, mask_slave=0x00):
    woken = []
    pic = VPic(notify=lambda: woken.append(1))
    w = pic.pio_write
    for port, v in ((0x20, 0x11), (0xA0, 0x11), (0x21, 0x20), (0xA1, 0x28), (0x21, 0x04),
                    (0xA1, 0x02), (0x21, 0x01), (0xA1, 0x01), (0x21, mask_master),
                    (0xA1, mask_slave)):  # fmt: skip
        w(None, port, 1, v)
    return pic, woken


def test_masked_at_power_on_until_initialized():
    pic = VPic(notify=lambda: None)
    pic.set_irqline(4, True)
    assert pic.pending_vector() is None
    assert pic.pio_read(None, 0x21, 1) == 0xFF


def test_priority_isr_blocking_and_eoi():
    pic, woken = programmed()
    pic.set_irqline(4, True)
    pic.set_irqline(1, True)
    assert woken and pic.pending_vector() == 0x21  # IRQ1 before IRQ4
    pic.intr_accepted(0x21)
    assert pic.pending_vector() is None  # IRQ4 blocked by IRQ1 in service
    pic.pio_write(None, 0x20, 1, 0x0B)
    assert pic.pio_read(None, 0x20, 1) == 0x02  # OCW3: ISR shows IRQ1
    pic.pio_write(None, 0x20, 1, 0x20)  # non-specific EOI
    assert pic.pending_vector() == 0x24
    pic.intr_accepted(0x24)
    pic.pio_write(None, 0x20, 1, 0x64)  # specific EOI for IRQ4
    assert pic.pending_vector() is None


def test_edge_needs_a_new_edge_level_does_not():
    pic, _ = programmed()
    pic.set_irqline(4, True)
    pic.intr_accepted(pic.pending_vector())
    pic.pio_write(None, 0x20, 1, 0x20)
    assert pic.pending_vector() is None  # edge: still high, no new edge
    pic.pio_write(None, 0x4D0, 1, 0x10)  # ELCR: IRQ4 level-triggered
    pic.set_irqline(4, True)
    assert pic.pending_vector() == 0x24
    pic.set_irqline(4, False)
    assert pic.pending_vector() is None  # level: request follows the line


def test_cascade_through_ir2():
    pic, _ = programmed()
    pic.set_irqline(12, True)
    assert pic.pending_vector() == 0x2C
    pic.intr_accepted(0x2C)
    pic.pio_write(None, 0xA0, 1, 0x0B)
    assert pic.pio_read(None, 0xA0, 1) == 0x10  # slave ISR: IR4 (IRQ 12)


def test_poll_mode_acknowledges():
    pic, _ = programmed()
    pic.set_irqline(3, True)
    pic.pio_write(None, 0x20, 1, 0x0C)  # OCW3 poll
    assert pic.pio_read(None, 0x20, 1) == 0x83


@pytest.mark.parametrize("user", [False, True])
def test_interrupt_driven_uart(user):
    run = boot_as("uartirq.elf", user)
    assert run.exit_code == 0, run.console
    assert "interrupt-driven UART: hello" in run.console
    assert "30 interrupts for 29 bytes" in run.console
    injected = [e for e in run.hv.tracer.of_kind("inject") if e.vm == run.vm.vm_id]
    assert len(injected) == 30 and all(e.args["vector"] == 0x24 for e in injected)
    if user:  # the device model raised the line through the hypervisor
        calls = [e for e in run.hv.tracer.of_kind("hypercall")
                 if e.args["id"] == f"{P.HC_SET_IRQLINE:#x}"]  # fmt: skip
        assert len(calls) >= 2 * 30 - 1  # low and high per byte
