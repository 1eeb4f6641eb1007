"""A User VM's PCI devices from acrn-dm's `-s` options (ACRN devicemodel/hw/pci/core.c
pci_parse_slot, init_pci, pci_lintr_route): the devices are created in slot order when the
device model sets the VM up, place their BARs then, and get their INTx routing once all exist.

    -s SLOT[:FUNC],CLASS[,CONFIG]        e.g. -s 3,virtio-blk,disk.img,ro

This is also the bus the devices talk to (pci_core.PciVdev.bus): it registers their BAR
ranges with the device model's tables and makes the interrupt ioctls (ACRN vm_set_gsi_irq,
vm_lapic_msi: HSM's ACRN_IOCTL_SET_IRQLINE and ACRN_IOCTL_INJECT_MSI).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from acrn_sim.guests.service_vm.kernel import Call
from acrn_sim.guests.service_vm.pci_core import PciResources, PirqRouter
from acrn_sim.hv import public as P
from acrn_sim.sim import ConfigError

MAXSLOTS = 32
COM1_IRQ = 4  # the LPC UART's IRQ is reserved from PCI routing (pci_irq_reserve)


@dataclass(frozen=True)
class SlotOption:
    """One `-s` option: where the device goes, its class and its configuration string."""

    slot: int
    func: int
    cls: str
    config: str | None
    spec: str  # as given
    parsed: object = None  # the class's parsed configuration


def device_classes() -> dict:
    """The class names the model knows (ACRN: the pci_vdev_ops linker set): the virtio
    devices, passthru, and the sensor's emulated and virtio forms."""
    from acrn_sim.guests.service_vm.passthru import Passthru
    from acrn_sim.guests.service_vm.sensor import EmulatedSensor, VirtioSensor
    from acrn_sim.guests.service_vm.virtio import DEVICE_CLASSES

    classes = {name: DEVICE_CLASSES[name] for name in DEVICE_CLASSES}
    for cls in (Passthru, EmulatedSensor, VirtioSensor):
        classes[cls.CLASS_NAME] = cls
    return classes


def parse_slot(spec: str) -> SlotOption:
    """pci_parse_slot: '<slot>[:<func>],<emul>[,<config>]' or '<bus>:<slot>:<func>,...'. The
    configuration is checked here, so a bad option stops the run before anything starts."""
    where = f"-s {spec}"
    head, sep, rest = spec.partition(",")
    if not sep or not rest:
        raise ConfigError(f"{where}: expected SLOT,CLASS[,OPTIONS]")
    cls, _, config = rest.partition(",")
    cls = cls.strip()
    parts = head.strip().split(":")
    try:
        nums = [int(p, 10) for p in parts]
    except ValueError:
        raise ConfigError(f"{where}: the slot must be a number (0-31)") from None
    if len(nums) == 3:
        bus, slot, func = nums
    elif len(nums) == 2:
        bus, (slot, func) = 0, nums
    elif len(nums) == 1:
        bus, slot, func = 0, nums[0], 0
    else:
        raise ConfigError(f"{where}: expected SLOT[:FUNC] or BUS:SLOT:FUNC")
    if bus != 0 or func != 0:
        raise ConfigError(f"{where}: the model has bus 0 and function 0 only")
    if not 1 <= slot < MAXSLOTS:
        raise ConfigError(f"{where}: slot {slot}: slots are 1-31 (0 is the host bridge)")
    classes = device_classes()
    if cls not in classes:
        known = ", ".join(sorted(classes))
        raise ConfigError(f'{where}: unknown device "{cls}" (the model has: {known})')
    if config and config.startswith("b,") and cls == "virtio-blk":
        config = config[2:]  # 'b': the boot device for vSBL; there is no firmware here
    parsed = classes[cls].parse_options(config or None, where)
    return SlotOption(slot, func, cls, config or None, spec, parsed)


def parse_slots(specs) -> list[SlotOption]:
    out, used = [], {}
    for spec in specs:
        opt = spec if isinstance(spec, SlotOption) else parse_slot(spec)
        if opt.slot in used:
            raise ConfigError(
                f"-s {opt.spec}: pci slot {opt.slot} already occupied by {used[opt.slot]}"
            )
        used[opt.slot] = opt.cls
        out.append(opt)
    return sorted(out, key=lambda o: o.slot)


class PciEmul:
    """The VM's emulated PCI devices given by `-s` options, and the bus they use."""

    def __init__(self, dm, specs, virtio_poll_ns: int = 0) -> None:
        self.dm = dm
        self.kernel = dm.kernel
        self.options = parse_slots(specs)
        self.virtio_poll_ns = virtio_poll_ns
        self.resources = PciResources()
        self.pirq = PirqRouter(reserved=(COM1_IRQ,))
        self.devices: list = []
        self._msi_buf: int | None = None
        self._ioeventfd = None

    def uses_slot(self, slot: int) -> bool:
        return any(o.slot == slot for o in self.options)

    # ------------------------------------------------------------ lifetime
    def init_pci(self) -> None:
        """init_pci: create the devices in slot order, then route their INTx pins."""
        classes = device_classes()
        for opt in self.options:
            dev = classes[opt.cls](self, opt)
            self.devices.append(dev)
            self.dm.pci_devices[(0, opt.slot, opt.func)] = (opt.cls, dev)
        for dev in self.devices:
            dev.lintr_route(self.pirq)

    def assign(self):
        """Generator, before the VM starts: devices that the hypervisor must hand over
        (passthru: HC_ASSIGN_PCIDEV while the VM is CREATED)."""
        for dev in self.devices:
            if hasattr(dev, "vm_assign"):
                yield from dev.vm_assign()

    def release(self):
        """Generator, at shutdown with the VM paused: passthru's HC_DEASSIGN_PCIDEV."""
        for dev in self.devices:
            if hasattr(dev, "vm_release"):
                yield from dev.vm_release()

    def reset(self) -> None:
        """The VM is reset (its device model resets every device, as on a cold start)."""
        for dev in self.devices:
            dev.vm_reset()

    def deinit(self) -> None:
        """The VM is gone: the devices' threads and timers stop."""
        for dev in self.devices:
            dev.deinit()

    # ----------------------------------------------------- what devices use
    @property
    def vmid(self) -> int | None:
        return self.dm.vmid

    @property
    def vm_name(self) -> str:
        return self.dm.cfg.name

    @property
    def priority(self) -> int:
        return self.dm.priority

    def register_inout(self, name: str, base: int, length: int, handler) -> None:
        self.dm.register_inout(name, base, length, handler)

    def unregister_inout(self, base: int) -> None:
        self.dm.unregister_inout(base)

    def register_mem(self, name: str, base: int, length: int, handler) -> None:
        self.dm.register_mem(name, base, length, handler)

    def unregister_mem(self, base: int) -> None:
        self.dm.unregister_mem(base)

    def post_work(self, gen) -> None:
        """Run `gen` in the I/O thread right after the current emulation, before the request
        completes (what ACRN's emulation does inline: interrupts, vhost start and stop)."""
        self.dm.post_work.append(gen)

    def kick_origin(self) -> int:
        """The cycle of the VM exit of the request being emulated (its step 1)."""
        rec = self.kernel.steps.active.get(self.dm.current_req)
        return rec.steps.get(1, self.kernel.now()) if rec is not None else self.kernel.now()

    def ioeventfd(self):
        """HSM's ioeventfd client of this VM (created with the first binding)."""
        if self._ioeventfd is None:
            from acrn_sim.guests.service_vm.hsm_ioeventfd import HsmIoeventfd

            self._ioeventfd = HsmIoeventfd(self.dm.hsm, self.dm.vmid)
        return self._ioeventfd

    def set_irqline(self, gsi: int, level: bool):
        """vm_set_gsi_irq: ACRN_IOCTL_SET_IRQLINE -> HC_SET_IRQLINE."""
        if self.dm.vmid is None:
            return
        op = P.GSI_SET_HIGH if level else P.GSI_SET_LOW
        yield from self.dm.hsm.simple(P.HC_SET_IRQLINE, self.dm.vmid, (op << 32) | gsi)

    def inject_msi(self, addr: int, data: int):
        """vm_lapic_msi: ACRN_IOCTL_INJECT_MSI -> HC_INJECT_MSI with {addr, data} in memory."""
        if self.dm.vmid is None:
            return
        k = self.kernel
        if self._msi_buf is None:
            self._msi_buf = k.alloc(0x1000)
            if self._msi_buf is None:
                raise ConfigError(f"the Service VM has no memory left for {self.vm_name}'s ioctls")
        yield k.cycles["dm_ioctl"]
        k.port.write(self._msi_buf, struct.pack("<QQ", addr, data))
        yield Call(P.HC_INJECT_MSI, self.dm.vmid, self._msi_buf)
