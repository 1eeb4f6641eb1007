"""A VM's virtual PCI bus (ACRN hypervisor/dm/vpci/vpci.c): its configuration mechanism 1 at
0xCF8/0xCFC-0xCFF, handled by the hypervisor, and the devices on it.

- The Service VM sees the board's devices that are not given away, with their configuration
  space read through (vpci.c, sharing mode); a device assigned to another VM disappears from
  it, and so do its BARs from the Service VM's EPT.
- A pre-launched VM sees the virtual host bridge at 00:00.0 and its scenario's <pci_devs>,
  each at its physical address (the configurator's choice here), passed through.
- A post-launched VM's configuration accesses reach the hypervisor only once its device
  model has assigned it a device (HC_ASSIGN_PCIDEV); then the hypervisor claims 0xCF8 and
  answers accesses to its passthrough devices, and forwards every other one to the device
  model as a PCICFG I/O request, as ACRN's vpci does for post-launched VMs.

Each VM has its IOMMU domain from its creation (domain id = VM id + 1, hv/arch/vtd.py); a
device's DMA is translated by the domain of the VM it is assigned to.
"""

from __future__ import annotations

from acrn_sim.hv import public as P
from acrn_sim.hv.dm.vpci.pci_pt import PtVdev
from acrn_sim.hv.dm.vpci.vhostbridge import VHostBridge
from acrn_sim.sim.pci import PCIR_COMMAND, bdf, bdf_str

PCI_CFG_ADDR, PCI_CFG_DATA = 0xCF8, 0xCFC
ENODEV, EBUSY, EINVAL = 19, 16, 22


class ServiceVmVdev:
    """A board device as the Service VM sees it: configuration reads go to the device; of
    the writes only the command register's reach it (the model's Service VM drives no device
    itself, so BAR and MSI programming by it are not virtualized)."""

    def __init__(self, platform, sid: int) -> None:
        self.platform, self.sid = platform, sid

    def cfg_read(self, reg: int, size: int) -> int:
        return self.platform.cfg_read(self.sid, reg, size)

    def cfg_write(self, reg: int, size: int, value: int) -> None:
        if reg < PCIR_COMMAND + 2 and reg + size > PCIR_COMMAND and size <= 2:
            self.platform.cfg_write(self.sid, reg, size, value)

    def deinit(self) -> None:
        pass


class Vpci:
    def __init__(self, vm) -> None:
        self.vm = vm
        self.vdevs: dict[int, object] = {}
        self.cf8 = 0
        self.registered = False

    # ------------------------------------------------------------ the ports
    def register(self) -> None:
        """Claim 0xCF8-0xCFF for this VM (register_pio_emulation_handler): in the Service
        VM's I/O bitmap too, which otherwise passes the ports through."""
        if self.registered:
            return
        self.registered = True
        vm = self.vm
        forward = self.forward if vm.is_post_launched else None
        vm.io.register_pio("vpci", PCI_CFG_ADDR, 8, self.pio_read, self.pio_write, forward)
        if vm.is_service_vm:
            mem = vm.hv.mem
            for port in range(PCI_CFG_ADDR, PCI_CFG_ADDR + 8):
                a = vm.io_bitmap + port // 8
                mem.write(a, bytes([mem.read(a, 1)[0] | 1 << (port % 8)]))

    def _target(self, port: int) -> tuple[object | None, int, int] | None:
        """(vdev or None, vbdf, register) of a data-port access; None if disabled."""
        if not self.cf8 & 0x8000_0000:
            return None
        vbdf = (self.cf8 >> 8) & 0xFFFF
        return self.vdevs.get(vbdf), vbdf, (self.cf8 & 0xFC) + (port - PCI_CFG_DATA)

    def forward(self, vcpu, req) -> bool:
        """Post-launched VMs: a data-port access to a device the hypervisor does not hold
        goes to the device model, as a PCICFG request with the latched address."""
        if req.address < PCI_CFG_DATA:
            # only a dword at 0xCF8 is the address latch; 0xCF9 (the reset control) and the
            # other bytes are the device model's, as before the vPCI claimed the ports
            return not (req.address == PCI_CFG_ADDR and req.size == 4)
        t = self._target(req.address)
        if t is None or t[0] is not None:
            return False
        _dev, vbdf, reg = t
        req.io_type = P.ACRN_IOREQ_TYPE_PCICFG
        req.pci = (vbdf >> 8, (vbdf >> 3) & 0x1F, vbdf & 7, reg)
        return True

    def pio_read(self, vcpu, port: int, size: int) -> int:
        ones = (1 << (8 * size)) - 1
        if port == PCI_CFG_ADDR:
            return self.cf8 if size == 4 else ones
        if port < PCI_CFG_DATA:
            return ones
        t = self._target(port)
        if t is None or t[0] is None:
            return ones
        return t[0].cfg_read(t[2], size)

    def pio_write(self, vcpu, port: int, size: int, value: int) -> None:
        if port == PCI_CFG_ADDR:
            if size == 4:
                self.cf8 = value & 0x80FF_FFFC
            return
        t = self._target(port) if port >= PCI_CFG_DATA else None
        if t is not None and t[0] is not None:
            t[0].cfg_write(t[2], size, value)


# -------------------------------------------------------------------- lifetime
def init_vpci(vm) -> None:
    """vpci_init at VM creation: the VM's IOMMU domain on its EPT, then its devices."""
    hv = vm.hv
    if hv.vtd is None:
        return  # a board with no PCI devices has no remapping unit in the model
    vm.vpci = Vpci(vm)
    vm.iommu = hv.vtd.create_iommu_domain(vm.vm_id, vm.ept.root)
    platform = hv.platform
    if vm.is_service_vm:
        for sid in sorted(platform.devices):
            if hv.pdev_owner.get(sid) is None:
                _give_to_service_vm(vm, sid)
        vm.vpci.register()
    elif not vm.is_post_launched:
        vm.vpci.vdevs[bdf(0, 0, 0)] = VHostBridge()
        for sid in hv.pre_launched_pdevs.get(vm.name, ()):
            _take(vm, sid)
            vm.vpci.vdevs[sid] = PtVdev(vm, sid, sid)
        vm.vpci.register()


def _give_to_service_vm(svc, sid: int) -> None:
    """The device is the Service VM's: in its domain, on its vPCI, its BARs in its EPT."""
    hv = svc.hv
    hv.vtd.move_pt_device(hv.vtd.device_domain.get(sid), svc.iommu, sid)
    hv.pdev_owner[sid] = svc
    svc.vpci.vdevs[sid] = ServiceVmVdev(hv.platform, sid)
    from acrn_sim.hv.dm.vpci.pci_pt import BAR_PROT

    for _i, hpa, size in hv.platform.bars(sid):
        svc.ept.add_mr(hpa, hpa, max(size, 0x1000), BAR_PROT, mmio=True)
    svc.remap()


def _take(vm, sid: int) -> None:
    """The device leaves the Service VM (if it had it) and joins `vm`'s domain, reset."""
    hv = vm.hv
    svc = hv.service_vm()
    if svc is not None and hv.pdev_owner.get(sid) is svc:
        svc.vpci.vdevs.pop(sid, None)
        for _i, hpa, size in hv.platform.bars(sid):
            svc.ept.del_mr(hpa, max(size, 0x1000))
        svc.remap()
    hv.vtd.move_pt_device(hv.vtd.device_domain.get(sid), vm.iommu, sid)
    hv.pdev_owner[sid] = vm
    hv.platform.devices[sid].reset()
    hv.trace_vm(vm, f"PCI {bdf_str(sid)} assigned", domain=vm.iommu.domain_id)


def vpci_assign_pcidev(vm, virt_bdf: int, phys_bdf: int, bars: list[int]) -> int:
    """HC_ASSIGN_PCIDEV: the Service VM's device `phys_bdf` becomes `vm`'s at `virt_bdf`,
    with the vBARs its device model placed. 0 or -errno."""
    hv = vm.hv
    if hv.vtd is None or phys_bdf not in hv.platform.devices:
        return -ENODEV
    svc = hv.service_vm()
    if hv.pdev_owner.get(phys_bdf) is not svc or virt_bdf in vm.vpci.vdevs:
        return -EBUSY
    if virt_bdf == 0:
        return -EINVAL  # 00:00.0 is the device model's host bridge
    _take(vm, phys_bdf)
    vm.vpci.vdevs[virt_bdf] = PtVdev(vm, virt_bdf, phys_bdf, bars)
    vm.vpci.register()
    return 0


def vpci_deassign_pcidev(vm, virt_bdf: int, phys_bdf: int) -> int:
    """HC_DEASSIGN_PCIDEV: the device goes back to the Service VM, reset."""
    vdev = vm.vpci.vdevs.get(virt_bdf) if getattr(vm, "vpci", None) else None
    if not isinstance(vdev, PtVdev) or vdev.phys_sid != phys_bdf:
        return -ENODEV
    _release(vm, virt_bdf, vdev)
    return 0


def _release(vm, virt_bdf: int, vdev: PtVdev) -> None:
    hv = vm.hv
    vdev.deinit()
    del vm.vpci.vdevs[virt_bdf]
    hv.platform.devices[vdev.phys_sid].reset()
    svc = hv.service_vm()
    if svc is not None and svc.shutdown is None and getattr(svc, "vpci", None):
        _give_to_service_vm(svc, vdev.phys_sid)
    else:
        hv.pdev_owner[vdev.phys_sid] = None
    hv.trace_vm(vm, f"PCI {bdf_str(vdev.phys_sid)} released")


def deinit_vpci(vm) -> None:
    """The VM is gone (shutdown_vm -> deinit_vpci): its passthrough devices are reset; a
    post-launched VM's go back to the Service VM. Its domain goes."""
    if getattr(vm, "vpci", None) is None:
        return
    for vbdf, vdev in list(vm.vpci.vdevs.items()):
        if isinstance(vdev, PtVdev):
            if vm.is_post_launched:
                _release(vm, vbdf, vdev)
            else:
                vdev.deinit()
                vm.hv.platform.devices[vdev.phys_sid].reset()
    if vm.is_post_launched and vm.iommu is not None:  # destroy_iommu_domain (shutdown_vm)
        vm.hv.vtd.destroy_iommu_domain(vm.iommu)
