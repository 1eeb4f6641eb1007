"""The hypervisor's vUART and the other platform ports it emulates for the Service VM and
pre-launched VMs (ACRN hypervisor/dm/vuart.c, plus the platform of docs/guest-platform.md).

- COM1 at 0x3F8-0x3FF (IRQ 4): a 16550A (sim.devices.uart16550); its output is the VM's console.
  Its interrupt line is recorded; no interrupt controller is wired to it in this core.
- 0xF4: QEMU's isa-debug-exit with iosize=4 (ports 0xF4-0xF7): a write of 1, 2 or 4 bytes
  powers the VM off with the value's low byte as its exit code.
- 0x510/0x511: QEMU's fw_cfg with the signature, the CPU count and the RAM size.
"""

from __future__ import annotations

from acrn_sim.sim.devices.fw_cfg import FW_CFG_PORT_SEL, FwCfg
from acrn_sim.sim.devices.uart16550 import Uart16550

COM1_BASE, COM1_IRQ = 0x3F8, 4
DEBUG_EXIT_PORT = 0xF4


def init_platform_ports(vm) -> None:
    uart = Uart16550(on_tx=lambda b: vm.console_write(bytes([b])), on_irq=vm.set_uart_irq)
    vm.vuart = uart
    vm.io.register_pio(
        "vuart-com1",
        COM1_BASE,
        8,
        lambda vcpu, port, size: uart.read(port - COM1_BASE),
        lambda vcpu, port, size, value: uart.write(port - COM1_BASE, value),
    )
    vm.io.register_pio(
        "debug-exit",
        DEBUG_EXIT_PORT,
        4,
        lambda vcpu, port, size: 0xFF,
        lambda vcpu, port, size, value: vm.poweroff(value, vcpu),
    )
    fw = FwCfg(vm.config.memory, len(vm.config.cpu_affinity))
    vm.io.register_pio(
        "fw_cfg",
        FW_CFG_PORT_SEL,
        2,
        lambda vcpu, port, size: fw.pio_read(port - FW_CFG_PORT_SEL, size),
        lambda vcpu, port, size, value: fw.pio_write(port - FW_CFG_PORT_SEL, size, value),
    )
