"""The board's PCI devices and VT-d at boot (ACRN hypervisor/hw/pci.c init_pci_pdev_list,
arch/x86/vtd.c init_iommu/enable_iommu, arch/x86/guest/vm.c prepare_service_vm_memmap).

- The platform (sim/platform.py) is built on host memory with the scenario's devices; the
  hypervisor owns its one remapping unit (hv/arch/vtd.py) and becomes the platform's IOMMU.
- Each pre-launched VM's <pci_devs> are checked: on the board, and given to one VM only.
- Who sees a DMAR ACPI table: the Service VM. ACRN gives it the native ACPI tables whole,
  DMAR included (it needs them: acrn-hypervisor issue #6677), but removes the remapping
  unit's register pages from its EPT (PR #6678), and its kernel runs with the IOMMU off
  (meta-acrn PR #189: the Service VM kernel must not drive the hypervisor's IOMMU). Here the
  board's RSDP, XSDT and DMAR (sim/acpi_dmar.py) are written into the Service VM's memory
  at the firmware's place; the register page is never in its EPT (it is not RAM and not a
  BAR). A pre-launched VM's tables (the configurator's) and a User VM's (acrn-dm's acpi.c)
  have no DMAR: they have no virtual IOMMU.
- Translation is enabled once every VM the hypervisor starts has its domain.

A board with no PCI devices gets no remapping unit here (nothing could DMA).
"""

from __future__ import annotations

from acrn_sim.hv.arch.vtd import Vtd
from acrn_sim.hv.guest.assign import post
from acrn_sim.sim import ConfigError
from acrn_sim.sim.acpi_dmar import build_tables
from acrn_sim.sim.pci import bdf_str, parse_bdf
from acrn_sim.sim.platform import DRHD_BASE, Platform


def init_board(hv, configs) -> None:
    """With host memory in place, before any VM is created."""
    hv.platform = Platform(hv.mem, hv.env, hv.profile.tsc_hz, hv.platform_config)
    owner: dict[int, str] = {}
    for c in configs:
        sids = []
        for text in getattr(c, "pci_devs", ()) or ():
            where = f"VM {c.name}: pci_devs"
            words = text.split()
            sid = parse_bdf(words[0] if words else text, where)
            if c.load_order != "PRE_LAUNCHED_VM":
                raise ConfigError(f"{where}: only a pre-launched VM gets devices from its "
                                  "scenario (a User VM's device model passes them through: "
                                  "-s N,passthru,BB/DD/F)")  # fmt: skip
            if sid not in hv.platform.devices:
                if len(words) > 1:  # a scenario XML's board line ("00:17.0 SATA ..."):
                    hv.board_notes.append(f"VM {c.name}: <pci_dev>{text}: not on the model's "
                                          "board, left out")  # fmt: skip
                    continue
                raise ConfigError(f"{where}: no device at {bdf_str(sid)} on the board "
                                  "(add one: --pdev BB:DD.F,sensor)")  # fmt: skip
            if sid in owner:
                raise ConfigError(f"{where}: {bdf_str(sid)} is already {owner[sid]}'s")
            owner[sid] = c.name
            sids.append(sid)
        if sids:
            hv.pre_launched_pdevs[c.name] = sids
    if not hv.platform.devices:
        return
    hv.vtd = Vtd(hv, posted=hv.platform_config.posted_interrupts)
    hv.vtd.post_handler = lambda result: post(hv, result)
    hv.vtd.init_iommu()
    hv.platform.iommu = hv.vtd
    hv.stats.sections["vtd"] = hv.vtd.report
    hv.stats.sections["ptirq"] = hv.ptdev.report
    hv.stats.sections["pci_devices"] = lambda: {
        bdf_str(sid): {"name": d.name, **d.stats()} for sid, d in hv.platform.devices.items()
    }
    if any(c.load_order == "SERVICE_VM" for c in configs):
        for hpa, data in build_tables(DRHD_BASE):
            hv.mem.write(hpa, data)


def enable_board(hv) -> None:
    """enable_iommu, after the VMs the hypervisor starts have their domains."""
    if hv.vtd is not None:
        hv.vtd.enable_iommu()
