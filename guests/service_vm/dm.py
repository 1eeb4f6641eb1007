"""The device model, acrn-dm (ACRN devicemodel/core/main.c, vmmapi.c, inout.c, mem.c,
hw/pci/core.c), one per User VM. Steps 5 and 6 of the I/O path happen here.

Start-up (main.c): allocate guest RAM from the Service VM's memory (hugetlb in ACRN) and the
IOREQ page, create the VM (HSM CREATE_VM: HC_CREATE_VM + HC_SET_IOREQ_BUFFER), map its RAM
(SET_MEMSEG: HC_VM_SET_MEMORY_REGIONS), load the kernel and set the BSP's registers
(HC_SET_VCPU_REGS), start it (HC_START_VM), then run vm_loop, the one I/O thread that serves
every vCPU of the VM:
  ATTACH_IOREQ_CLIENT (sleep until a request is PROCESSING) -> for each vCPU with one and
  kernel_handled == 0: handle_vmexit (PORTIO -> emulate_inout, MMIO -> emulate_mem,
  PCICFG -> emulate_pci_cfgrw) -> NOTIFY_REQUEST_FINISH.
Unclaimed requests complete with all ones (IOREQ_PIO_INVAL / IOREQ_MMIO_INVAL).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from acrn_sim.guests.service_vm import sw_load
from acrn_sim.guests.service_vm.acpi_pm import AcpiPm
from acrn_sim.guests.service_vm.devices import (
    COM1_BASE,
    DEBUG_EXIT_PORT,
    PIT_BASE,
    RTC_BASE,
    STORAGE_BASE,
    DebugExit,
    FwCfgDevice,
    HostBridge,
    MmioTestDevice,
    Pit,
    ResetControl,
    Rtc,
    Storage,
    UartDevice,
)
from acrn_sim.guests.service_vm.hsm import Hsm
from acrn_sim.guests.service_vm.kernel import USER_PRIORITIES, ServiceVmKernel
from acrn_sim.guests.service_vm.net_bridge import NetBridge
from acrn_sim.guests.service_vm.pci_emul import PciEmul
from acrn_sim.guests.service_vm.pit61 import NMISC_PORT, PitChannel2
from acrn_sim.hv import public as P
from acrn_sim.sim import ConfigError
from acrn_sim.sim.acpi import PM1A_EVT_ADDR, SCI_INT, SMI_CMD, VIRTUAL_PM1A_CNT_ADDR

IOREQ_PIO_INVAL = 0xFFFF_FFFF
IOREQ_MMIO_INVAL = 0xFFFF_FFFF_FFFF_FFFF
HUGEPAGE = 2 << 20


@dataclass
class UserVmConfig:
    name: str
    image: str
    memory: int
    cmdline: str
    cpu_affinity: list[int]
    polling: bool = False
    priority: str = "PRIO_LOW"  # the User VM's scheduling priority (scenario <priority>)
    initrd: str | None = None  # acrn-dm's -r, with a bzImage as -k
    devices: list[str] = field(default_factory=list)  # acrn-dm -s options (pci_emul.py)
    virtio_poll: int = 0  # acrn-dm --virtio_poll: the poll period in ns (0: off)
    console_input: bytes = b""  # what a virtio-console's host side has to say to the guest


class DeviceModel:
    def __init__(
        self, kernel: ServiceVmKernel, hsm: Hsm, cfg: UserVmConfig, console, priority: int
    ) -> None:
        self.kernel = kernel
        self.priority = priority  # of the DM's threads in the Service VM
        self.hsm = hsm
        self.cfg = cfg
        self.console = console
        self.vmid: int | None = None
        self.exit_code: int | None = None
        self.software_kind: str | None = None  # "bzimage" or "multiboot", once loaded
        # (label, Service VM cycle) of the set-up's steps, for a boot report
        self.stage_marks: list[tuple[str, int]] = []
        self.pending_irqlines: list[tuple[int, bool]] = []
        self._poweroff: int | None = None
        # inout.c: a table of port ranges; mem.c: MMIO ranges (sorted, with a one-entry hint)
        self.inout: list[tuple[int, int, str, object]] = []
        self.mmio: list[tuple[int, int, str, object]] = []
        self._mmio_hint = None
        self._step5_text: dict[str, str] = {}  # device name -> the step 5 text
        # (port, size) -> the inout lookup's (range or None, device name, cost name)
        self._inout_hits: dict[tuple[int, int], tuple] = {}
        self.pci_devices = {}
        self.current_req = 0  # the request handle_vmexit is emulating (for the devices' steps)
        self.io_thread_woken = False
        self.post_work: list = []  # generators the I/O thread runs after the emulation
        self.pci = PciEmul(self, cfg.devices, cfg.virtio_poll)  # the -s devices (checked now)
        self.add_pci_device(0, "hostbridge", HostBridge())
        if not self.pci.uses_slot(3):  # the model's MMIO test device, unless -s takes slot 3
            self.add_pci_device(3, "mmio-test", MmioTestDevice())
        self._register_inout("uart", COM1_BASE, 8, UartDevice(self))
        # isa-debug-exit with iosize=4: a 1-, 2- or 4-byte write at 0xF4 powers off
        self._register_inout("debug-exit", DEBUG_EXIT_PORT, 4, DebugExit(self))
        self._register_inout(
            "fw_cfg", 0x510, 2, FwCfgDevice(self, cfg.memory, len(cfg.cpu_affinity))
        )
        self._register_inout("rtc", RTC_BASE, 2, Rtc(self))
        # pit.c: channels 0-2 at 0x40-0x43 and port 0x61 (channel 2's gate and OUT2)
        pit = PitChannel2(kernel.now, kernel.profile.tsc_hz, others=Pit(self))
        self._register_inout("pit", PIT_BASE, 4, pit)
        self._register_inout("nmisc", NMISC_PORT, 1, pit)
        # pm.c: the PM1a event and control registers and SMI_CMD behind the FADT; S5 powers
        # the VM off (exit code 0), the SCI is level-triggered on IRQ 9
        self.acpi_pm = AcpiPm(
            on_poweroff=lambda: self.request_poweroff(0),
            set_sci=lambda level: self.pending_irqlines.append((SCI_INT, level)),
        )
        self._register_inout("pm1a-evt", PM1A_EVT_ADDR, 4, self.acpi_pm)
        self._register_inout("pm1a-cnt", VIRTUAL_PM1A_CNT_ADDR, 2, self.acpi_pm)
        self._register_inout("smi-cmd", SMI_CMD, 1, self.acpi_pm)
        self._register_inout("storage", STORAGE_BASE, 8, Storage())
        self._register_inout("reset", ResetControl.PORT, 1, ResetControl(self))
        self._reset = False
        self.resets = 0

    def add_pci_device(self, slot: int, name: str, dev) -> None:
        """Like `-s <slot>,<class>` on acrn-dm's command line."""
        self.pci_devices[(0, slot, 0)] = (name, dev)

        def bar_moved(i: int, old: int | None, new: int | None) -> None:
            if old is not None:
                self.unregister_mem(old)
            if new is not None:
                self.register_mem(f"{name} BAR{i}", new, dev.bar_sizes[i], dev)

        dev.on_bar_change = bar_moved

    def _register_inout(self, name: str, base: int, length: int, dev) -> None:
        self.inout.append((base, length, name, dev))
        self._inout_hits.clear()

    def register_inout(self, name: str, base: int, length: int, dev) -> None:
        """register_inout (inout.c): a PCI device's I/O BAR, while it decodes."""
        self._register_inout(name, base, length, dev)

    def unregister_inout(self, base: int) -> None:
        self.inout = [r for r in self.inout if r[0] != base]
        self._inout_hits.clear()

    def _find_inout(self, addr: int, size: int) -> tuple:
        """inout.c: the first registered range that covers the access, as (range or None,
        device name, cost name). Remembered per (port, size): a guest uses few ports, and an
        unclaimed one would scan the whole table at each access."""
        hit = self._inout_hits.get((addr, size))
        if hit is None:
            found = next(
                (r for r in self.inout if r[0] <= addr and addr + size <= r[0] + r[1]), None
            )
            if found is None:
                hit = (None, "unclaimed-pio", "dm_emulate_pio")
            else:
                hit = (found, found[2], getattr(found[3], "cost", "dm_emulate_pio"))
            self._inout_hits[(addr, size)] = hit
        return hit

    def register_mem(self, name: str, base: int, length: int, dev) -> None:
        self.mmio.append((base, length, name, dev))
        self.mmio.sort(key=lambda r: r[0])

    def unregister_mem(self, base: int) -> None:
        self.mmio = [r for r in self.mmio if r[0] != base]
        self._mmio_hint = None

    def timer_irq(self, gsi: int) -> None:
        """The DM's timer thread raises an edge on `gsi` (vm_set_gsi_irq, RAISING_PULSE)."""
        if self.vmid is None:
            return
        op = (P.GSI_RAISING_PULSE << 32) | gsi
        self.kernel.spawn(
            f"acrn-dm {self.cfg.name} timer",
            self.hsm.simple(P.HC_SET_IRQLINE, self.vmid, op),
            self.priority,
        )

    def request_poweroff(self, code: int) -> None:
        self._poweroff = code

    def request_reset(self) -> None:
        self._reset = True

    # ------------------------------------------------------------ start-up
    def main(self):
        """The acrn-dm process: set up and start the VM, then serve its I/O (vm_loop)."""
        k, cfg = self.kernel, self.cfg
        self.stage_marks.append(("dm_start", k.now()))
        # A set-up that fails means the scenario cannot run as configured: a clear error.
        ram = k.alloc(cfg.memory, HUGEPAGE)
        ioreq_page = k.alloc(0x1000)
        if ram is None or ioreq_page is None:
            raise ConfigError(
                f"the Service VM has no memory left for {cfg.name}'s {cfg.memory} bytes"
            )
        flags = P.GUEST_FLAG_IO_COMPLETION_POLLING if cfg.polling else 0
        affinity = sum(1 << p for p in cfg.cpu_affinity)
        self.vmid = yield from self.hsm.create_vm(cfg.name, flags, ioreq_page, affinity)
        if self.vmid is None:
            raise ConfigError(f"HC_CREATE_VM refused {cfg.name}")
        ret = yield from self.hsm.set_memseg(self.vmid, 0, ram, cfg.memory)
        if ret != 0:
            raise ConfigError(f"HC_VM_SET_MEMORY_REGIONS failed ({ret})")
        self.ram = ram
        self.pci.init_pci()  # init_pci: the -s devices, their BARs and INTx routing
        yield from self.pci.assign()  # passthrough devices, while the VM is CREATED
        yield from self.load_and_start()
        yield from self.vm_loop()

    def load_and_start(self):
        """sw_load: the kernel goes into guest RAM through the DM's own mapping of it, the
        BSP's registers through HC_SET_VCPU_REGS; then HC_START_VM."""
        cfg = self.cfg
        boot = sw_load.load(
            cfg.image, cfg.memory, cfg.cmdline, len(cfg.cpu_affinity), initrd=cfg.initrd
        )
        self.software_kind = boot.kind
        for gpa, data in boot.writes:
            self.kernel.port.write(self.ram + gpa, data)
        self.stage_marks.append(("loaded", self.kernel.now()))
        yield from self.hsm.set_vcpu_regs(self.vmid, 0, boot.state)
        yield from self.hsm.simple(P.HC_START_VM, self.vmid)
        self.stage_marks.append(("vm_started", self.kernel.now()))

    # ---------------------------------------------------------- the I/O thread
    def vm_loop(self):
        hsm, vmid = self.hsm, self.vmid
        hvm = hsm.vms[vmid]
        while True:
            woken = hvm.default_client.wakeups
            vcpus = yield from hsm.attach_ioreq_client(vmid)
            # whether this thread had to be woken for these requests (devices count it)
            self.io_thread_woken = hvm.default_client.wakeups != woken
            for vcpu in vcpus:
                slot = hvm.slots[vcpu]
                if slot.processed != P.ACRN_IOREQ_STATE_PROCESSING or slot.kernel_handled:
                    continue
                yield from self.handle_vmexit(hvm, vcpu, slot)
                # A device that changed its interrupt line raises it now (vm_set_gsi_irq),
                # before the request completes, as ACRN's device emulation does.
                for gsi, level in self.pending_irqlines:
                    op = P.GSI_SET_HIGH if level else P.GSI_SET_LOW
                    yield from hsm.simple(P.HC_SET_IRQLINE, vmid, (op << 32) | gsi)
                self.pending_irqlines.clear()
                while self.post_work:  # what the emulation left to do (devices' ioctls)
                    yield from self.post_work.pop(0)
                yield from hsm.notify_request_finish(vmid, vcpu)
                if self._reset:  # vm_reset: pause, reset, load again, start
                    self._reset = False
                    self.resets += 1
                    self.pci.reset()
                    yield from hsm.simple(P.HC_PAUSE_VM, vmid)
                    yield from hsm.simple(P.HC_RESET_VM, vmid)
                    yield from self.load_and_start()
                    break
                if self._poweroff is not None:
                    self.exit_code, self._poweroff = self._poweroff, None
                    self.pci.deinit()
                    yield from hsm.simple(P.HC_PAUSE_VM, vmid)
                    yield from self.pci.release()  # passthrough devices go back
                    yield from hsm.destroy_vm(vmid)
                    return

    def handle_vmexit(self, hvm, vcpu: int, slot: P.IoRequest):
        """Step 5 (acrn-dm handle_vmexit): find the device by port, address or BDF and call
        its emulation, which is step 6."""
        k = self.kernel
        rtype, direction, addr, size = slot.request()
        is_write = direction == P.ACRN_IOREQ_DIR_WRITE
        if rtype == P.ACRN_IOREQ_TYPE_PCICFG:
            bus, dev, func, reg = slot.pci_bdf_reg()
            found = self.pci_devices.get((bus, dev, func))
            name = f"pci {bus:02x}:{dev:02x}.{func}" + (f" {found[0]}" if found else "")
            cost, emulate = "dm_emulate_pci", self.emulate_pci_cfgrw
        elif rtype == P.ACRN_IOREQ_TYPE_MMIO:
            found = self._find_mmio(addr, size)
            name = found[2] if found else "unclaimed-mmio"
            cost, emulate = "dm_emulate_mmio", self.emulate_mem
        else:
            found, name, cost = self._find_inout(addr, size)
            emulate = self.emulate_inout
        text = self._step5_text.get(name)
        if text is None:
            text = self._step5_text[name] = f"device model's I/O thread finds '{name}' and emulates"
        k.steps.stamp(slot.req_id, 5, "DeviceModel.handle_vmexit", text, device=name)
        self.current_req = slot.req_id
        yield k.cycles[cost]
        emulate(slot, found, addr, size, is_write)

    def _result(self, slot: P.IoRequest, is_write: bool, value: int, by: str) -> None:
        """Step 6: the emulation writes a read's result into the slot."""
        if not is_write:
            slot.value = value
        self.kernel.steps.stamp(
            slot.req_id, 6, by, "the device writes the result into the slot",
            completed_by="device model",
        )  # fmt: skip

    def emulate_inout(self, slot, found, addr: int, size: int, is_write: bool) -> None:
        """inout.c emulate_inout: the port's handler; unclaimed ports read IOREQ_PIO_INVAL."""
        value = slot.value if is_write else 0
        result = found[3].pio(addr, size, is_write, value) if found else IOREQ_PIO_INVAL
        self._result(slot, is_write, result, "DeviceModel.emulate_inout")

    def emulate_mem(self, slot, found, addr: int, size: int, is_write: bool) -> None:
        """mem.c emulate_mem: the range's handler; unclaimed MMIO reads IOREQ_MMIO_INVAL."""
        value = slot.value if is_write else 0
        result = (
            found[3].mmio(addr - found[0], size, is_write, value) if found else (IOREQ_MMIO_INVAL)
        )
        self._result(slot, is_write, result, "DeviceModel.emulate_mem")

    def emulate_pci_cfgrw(self, slot, found, addr: int, size: int, is_write: bool) -> None:
        """pci/core.c pci_cfgrw: the device's configuration space."""
        _bus, _dev, _func, reg = slot.pci_bdf_reg()
        value = slot.value if is_write else 0
        result = found[1].cfg(reg, size, is_write, value) if found else IOREQ_PIO_INVAL
        self._result(slot, is_write, result, "DeviceModel.emulate_pci_cfgrw")

    def _find_mmio(self, addr: int, size: int):
        hint = self._mmio_hint
        if hint and hint[0] <= addr and addr + size <= hint[0] + hint[1]:
            return hint
        for r in self.mmio:
            if r[0] <= addr and addr + size <= r[0] + r[1]:
                self._mmio_hint = r
                return r
        return None


class ServiceVmSoftware(ServiceVmKernel):
    """The Service VM's modelled software: the kernel with HSM, one DM per User VM, and the
    VM manager (acrnctl and the DM's monitor): pause and resume of a User VM or one vCPU."""

    def __init__(
        self,
        port,
        user_vms: list[UserVmConfig],
        pool: tuple[int, int],
        vm_manager: list = (),
        dm_priority_inheritance: bool = True,
    ) -> None:
        """`vm_manager`: commands the VM manager issues at given times, as (cycle,
        "pause"|"resume", User VM name, vCPU id or None). `dm_priority_inheritance`: a device
        model's threads run at its User VM's priority."""
        super().__init__(port)
        self.set_pool(*pool)
        self.hsm = Hsm(self)
        self.net_bridge = NetBridge()  # acrn-br0: the User VMs' virtio-net taps
        self.dms: dict[str, DeviceModel] = {}
        console = port.console
        for cfg in user_vms:
            # With inheritance, a DM's threads run at its User VM's priority, so an RTVM's
            # I/O is not queued behind an infotainment VM's; without, they are all equal.
            prio = USER_PRIORITIES[cfg.priority if dm_priority_inheritance else "PRIO_LOW"]
            dm = DeviceModel(self, self.hsm, cfg, lambda data, n=cfg.name: console(n, data), prio)
            self.dms[cfg.name] = dm
            self.spawn(f"acrn-dm {cfg.name}", dm.main(), prio)
        for cycle, op, name, vcpu in vm_manager:
            if op not in ("pause", "resume"):
                raise ConfigError(f"VM manager: unknown command {op!r}")
            if name not in self.dms:
                raise ConfigError(f"VM manager: no User VM named {name!r} to {op}")
            if vcpu is not None and not 0 <= vcpu < len(self.dms[name].cfg.cpu_affinity):
                raise ConfigError(f"VM manager: {name} has no vCPU {vcpu}")
            self.add_timer(
                cycle,
                lambda op=op, name=name, vcpu=vcpu: self.spawn(
                    f"vm-manager {op} {name}", self._vm_command(op, name, vcpu)
                ),
            )

    def _vm_command(self, op: str, name: str, vcpu: int | None):
        """acrnctl pause/continue: through HSM to the hypervisor. A whole VM: HC_PAUSE_VM,
        then HC_START_VM to resume; one vCPU: the simulator's HC_SIM_PAUSE/RESUME_VCPU."""
        dm = self.dms[name]
        if dm.vmid is None:
            return
        if vcpu is None:
            hc = P.HC_PAUSE_VM if op == "pause" else P.HC_START_VM
            yield from self.hsm.simple(hc, dm.vmid)
        else:
            hc = P.HC_SIM_PAUSE_VCPU if op == "pause" else P.HC_SIM_RESUME_VCPU
            yield from self.hsm.simple(hc, dm.vmid, vcpu)
