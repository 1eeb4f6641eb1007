"""acrn-dm's passthrough device (ACRN devicemodel/hw/pci/passthrough.c):

    -s SLOT,passthru,BB/DD/F

The device model does not emulate it: it reads what the Service VM's kernel knows of the
physical device (its configuration space and BARs, from sysfs through libpciaccess), places
its BARs in the User VM's PCI window (pci_emul_alloc_pbar), and asks the hypervisor to give it
to the VM (ACRN_IOCTL_ASSIGN_PCIDEV -> HC_ASSIGN_PCIDEV) while the VM is CREATED, with the
virtual and physical BDFs and the BARs' guest addresses. From then on the hypervisor's vPCI
answers the VM's configuration accesses and the EPT maps its BARs (hv/dm/vpci/): nothing of
the device reaches the device model again. At the VM's shutdown the device model gives it
back (ACRN_IOCTL_DEASSIGN_PCIDEV -> HC_DEASSIGN_PCIDEV), before destroying the VM.

The modelled devices have MSI and no INTx (interrupt pin 0): no INTx routing is set up.
acrn-dm's own options (keep_gsi, no_reset, d3hot_reset, gpu, ...) are not modelled.
"""

from __future__ import annotations

from acrn_sim.guests.service_vm.hsm_pcidev import assign_pcidev, deassign_pcidev
from acrn_sim.guests.service_vm.pci_core import PCIBAR_MEM32
from acrn_sim.hv import public as P
from acrn_sim.sim import ConfigError
from acrn_sim.sim.pci import bdf, bdf_str, parse_bdf


class Passthru:
    CLASS_NAME = "passthru"

    @classmethod
    def parse_options(cls, config: str | None, where: str) -> int:
        """The physical device: acrn-dm's BB/DD/F (hexadecimal)."""
        items = [p.strip() for p in (config or "").split(",") if p.strip()]
        if len(items) != 1:
            raise ConfigError(f"{where}: expected SLOT,passthru,BB/DD/F")
        if ":" in items[0] or "/" not in items[0]:
            raise ConfigError(f"{where}: the physical device is written BB/DD/F (e.g. 00/1f/0)")
        return parse_bdf(items[0], where)

    def __init__(self, bus, opt) -> None:
        self.bus = bus
        self.slot, self.func = opt.slot, opt.func
        self.spec = opt.spec
        self.phys = opt.parsed
        self.vbdf = bdf(0, opt.slot, opt.func)
        self.name = f"passthru {bdf_str(self.phys)}"
        info = bus.kernel.port.pci_device(self.phys)
        if info is None:
            raise ConfigError(
                f"-s {opt.spec}: the Service VM has no PCI device {bdf_str(self.phys)} "
                "(not on the board, or another VM's)"
            )
        _config, bars = info
        self.vbars = [0] * P.ACRN_PCI_NUM_BARS
        for idx, size in bars:  # pci_emul_alloc_pbar: in the VM's 32-bit MMIO window
            addr = bus.resources.alloc(PCIBAR_MEM32, max(size, 0x1000))
            if addr is None:
                raise ConfigError(f"-s {opt.spec}: no room for BAR{idx} in the PCI window")
            self.vbars[idx] = addr
        self.assigned = False

    def _pcidev(self) -> P.AcrnPcidev:
        return P.AcrnPcidev(self.vbdf, self.phys, tuple(self.vbars))

    # ---------------------------------------------- what the device model calls
    def vm_assign(self):
        """Generator, before the VM starts: HC_ASSIGN_PCIDEV."""
        ret = yield from assign_pcidev(self.bus.dm.hsm, self.bus.vmid, self._pcidev())
        if ret != 0:
            raise ConfigError(f"-s {self.spec}: HC_ASSIGN_PCIDEV refused {bdf_str(self.phys)} "
                              f"({ret})")  # fmt: skip
        self.assigned = True

    def vm_release(self):
        """Generator, at the VM's shutdown (paused): HC_DEASSIGN_PCIDEV."""
        if self.assigned:
            self.assigned = False
            yield from deassign_pcidev(self.bus.dm.hsm, self.bus.vmid, self._pcidev())

    def lintr_route(self, router) -> None:
        pass  # MSI only

    def cfg(self, reg: int, size: int, is_write: bool, value: int) -> int:
        """Never reached once assigned (the hypervisor answers); all ones otherwise."""
        return 0 if is_write else (1 << (8 * size)) - 1

    def vm_reset(self) -> None:
        pass

    def deinit(self) -> None:
        pass
