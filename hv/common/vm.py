"""VMs and their lifecycle (ACRN hypervisor/arch/x86/guest/vm.c).

States follow ACRN's enum vm_state: POWERED_OFF, CREATED, RUNNING, PAUSED. A VM that powers
off, triple-faults or crashes is shut down alone: its vCPU threads end, the others run on.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import Enum

from acrn_sim.hv.arch import vmx
from acrn_sim.hv.common.hv_main import launch_vcpu
from acrn_sim.hv.common.schedule import PRIO_HIGH, PRIORITIES
from acrn_sim.hv.dm.io_req import IoEmul
from acrn_sim.hv.dm.vioapic import SERVICE_VM_PINS, VIOAPIC_BASE, VIOAPIC_SIZE, VM_PINS, VIoapic
from acrn_sim.hv.dm.vpci.pci_pt import BarWindow
from acrn_sim.hv.dm.vpci.vpci import deinit_vpci, init_vpci
from acrn_sim.hv.dm.vpic import VPic
from acrn_sim.hv.dm.vuart import init_platform_ports
from acrn_sim.hv.guest.ept import EPT_RWX, EPT_WB, Ept
from acrn_sim.hv.guest.vcpu import Vcpu
from acrn_sim.hv.guest.vcpuid import VCpuid
from acrn_sim.hv.guest.vmcs import VMX_GUEST_RIP
from acrn_sim.hv.public import ACRN_IO_REQUEST_MAX, ACRN_IOREQ_STATE_FREE, IoRequest
from acrn_sim.sim import ConfigError
from acrn_sim.sim.bootproto import apply_state
from acrn_sim.sim.hostmem import MemWindow

SERVICE_VM, PRE_LAUNCHED_VM, POST_LAUNCHED_VM = "SERVICE_VM", "PRE_LAUNCHED_VM", "POST_LAUNCHED_VM"
LOAD_ORDERS = (SERVICE_VM, PRE_LAUNCHED_VM, POST_LAUNCHED_VM)


class VmState(Enum):
    POWERED_OFF = 0
    CREATED = 1
    RUNNING = 2
    PAUSED = 4


@dataclass
class VmConfig:
    """What ACRN's scenario XML says about one VM (the subset this model uses)."""

    name: str
    load_order: str
    image: str
    memory: int = 32 << 20  # bytes
    cpu_affinity: list[int] = field(default_factory=lambda: [0])
    cmdline: str = ""
    # <os_config><ramdisk_mod>: the initrd that goes with a Linux bzImage (acrn-dm's -r)
    initrd: str | None = None
    vm_type: str = "STANDARD_VM"
    # Whether the run ends once this VM is off (scenarios set it for the VMs under study).
    watched: bool = True
    # For a Service VM whose software is modelled in Python (HSM, the device models): a
    # factory, ServiceVmPort -> that software (hv/service_vm_port.py). The hypervisor gives
    # it the port and then only calls it.
    software: object = None
    # GUEST_FLAG_IO_COMPLETION_POLLING for a post-launched VM (scenario <io_completion_polling>)
    io_completion_polling: bool = False
    # scheduling (scenario <priority>, <bvt_weight>); the Service VM always runs at PRIO_HIGH
    priority: str = "PRIO_LOW"
    bvt_weight: int = 1
    # <lapic_passthrough>: only for an RTVM (ACRN hcall_create_vm refuses it otherwise)
    lapic_passthrough: bool = False
    # For the Service VM: commands its VM manager issues at given times, as
    # (cycle, "pause"|"resume", vm name, vcpu id or None). See guests/service_vm/dm.py.
    vm_manager: list = field(default_factory=list)
    # For the Service VM: device-model threads run at their User VM's priority
    dm_priority_inheritance: bool = True
    # For a post-launched VM, its device model's options: PCI devices as acrn-dm's -s
    # ("SLOT,CLASS[,OPTIONS]", e.g. "3,virtio-blk,disk.img"), --virtio_poll (ns, 0: off),
    # and bytes a virtio-console's host side sends to the guest
    devices: list[str] = field(default_factory=list)
    virtio_poll: int = 0
    console_input: bytes = b""
    # For a pre-launched VM, the board's PCI devices it is given (scenario <pci_devs>: the
    # physical "BB:DD.F"), passed through (hv/dm/vpci/)
    pci_devs: list[str] = field(default_factory=list)


@dataclass
class ShutdownInfo:
    kind: str  # "poweroff", "triple_fault" or "crash"
    cycle: int
    exit_code: int | None = None
    reason: str = ""
    rip: int | None = None


class Vm:
    def __init__(self, hv, vm_id: int, config: VmConfig) -> None:
        self.hv = hv
        self.vm_id = vm_id
        self.config = config
        self.name = config.name
        self.state = VmState.POWERED_OFF
        self.is_service_vm = config.load_order == SERVICE_VM
        self.ept = Ept(hv.mem, hv.alloc_page)
        self._tlb: dict[int, int] = {}
        self._tlb_generation = -1
        self.io = IoEmul()
        self.console = bytearray()
        self.shutdown: ShutdownInfo | None = None
        self.vuart = None
        self.is_post_launched = config.load_order == POST_LAUNCHED_VM
        self.vm_flag = 0
        self.ioreq_page: int | None = None  # HPA of the IOREQ page (HC_SET_IOREQ_BUFFER)
        self.ioreq_slots: list[IoRequest] = []  # its slots, one per vCPU (io_shared_page)
        # The Service VM's software when it is modelled in Python (HSM, the device model):
        # it takes its upcalls and runs on this VM's vCPU time (hv/service_vm_port.py).
        self.software = None
        self._rng = random.Random(f"{hv.seed}:{vm_id}")
        self.vcpuid = VCpuid(hv.profile.tsc_hz, len(config.cpu_affinity))
        if config.priority not in PRIORITIES:
            raise ConfigError(f"VM {config.name}: priority must be one of {', '.join(PRIORITIES)}")
        self.sched_priority = PRIO_HIGH if self.is_service_vm else PRIORITIES[config.priority]
        if config.lapic_passthrough and config.vm_type != "RTVM":
            raise ConfigError(f"VM {config.name}: LAPIC passthrough needs vm_type RTVM")
        self.lapic_pt = config.lapic_passthrough
        self.vcpus = [Vcpu(self, i, p) for i, p in enumerate(config.cpu_affinity)]
        self.boot_marks: dict[str, int] = {}  # label -> first cycle (hv.exec_markers)
        markers = hv.exec_markers.get(config.name)
        if markers:
            self._watch_markers(self.vcpus[0], markers)
        self.vpic = VPic(notify=self.vcpus[0].signal_event_virtual_interrupt)
        self.vioapic = VIoapic(self, SERVICE_VM_PINS if self.is_service_vm else VM_PINS)
        self.vpci = None  # its virtual PCI bus and IOMMU domain (hv/dm/vpci/vpci.py)
        self.iommu = None

    def _watch_markers(self, vcpu, markers: dict[int, str]) -> None:
        """Keep the cycle at which `vcpu` first runs a block that holds a marker address."""
        pending = dict(markers)

        def on_new_block(address: int, size: int) -> None:
            for a in [a for a in pending if address <= a < address + size]:
                label = pending.pop(a)
                self.boot_marks.setdefault(label, vcpu.slice_start + vcpu.engine.cycles)
            vcpu.engine.watch_blocks(pending, on_new_block)

        vcpu.engine.watch_blocks(pending, on_new_block)

    # ------------------------------------------------------------- creation
    def create(self, ram_hpa: int | None) -> None:
        """Build the EPT and the I/O bitmap, register the emulated ports (ACRN create_vm)."""
        if self.is_service_vm:
            # ACRN prepare_service_vm_memmap: identity map everything, then remove what is
            # not the Service VM's (the hypervisor, pre-launched VMs' RAM).
            self.ept.add_mr(0, 0, self.hv.mem.size, EPT_RWX | (EPT_WB << 3))
            for start, size in self.hv.reserved_ranges():
                self.ept.del_mr(start, size)
        elif self.config.load_order == PRE_LAUNCHED_VM:
            self.ept.add_mr(0, ram_hpa, self.config.memory, EPT_RWX | (EPT_WB << 3))
        # Post-launched VMs get their RAM from the Service VM (HC_VM_SET_MEMORY_REGIONS) and
        # their platform devices from the device model; I/O nobody here claims goes to IOREQ.
        if not self.is_post_launched:
            init_platform_ports(self)
        # The vPIC and vIOAPIC are the hypervisor's for every VM (emul_pio: vPIC primary,
        # secondary, ELCR; emul_mmio: the vIOAPIC).
        for base, length in ((0x20, 2), (0xA0, 2), (0x4D0, 2)):
            self.io.register_pio("vpic", base, length, self.vpic.pio_read, self.vpic.pio_write)
        self.io.register_mmio("vioapic", VIOAPIC_BASE, VIOAPIC_SIZE, self.vioapic.mmio_read,
                              self.vioapic.mmio_write)  # fmt: skip
        # I/O bitmap (ACRN setup_io_bitmap): the Service VM passes every port through but the
        # ones the hypervisor emulates; any other VM traps every port.
        self.io_bitmap = self.hv.alloc_pages(2)
        fill = 0x00 if self.is_service_vm else 0xFF
        self.hv.mem.fill(self.io_bitmap, vmx.IO_BITMAP_SIZE, fill)
        if self.is_service_vm:
            for r in self.io.pio:
                for port in range(r.base, r.base + r.length):
                    a = self.io_bitmap + port // 8
                    self.hv.mem.write(a, bytes([self.hv.mem.read(a, 1)[0] | (1 << (port % 8))]))
        for vcpu in self.vcpus:
            vmx.init_vmcs(vcpu, self.ept.eptp, self.io_bitmap)
        self.remap()
        init_vpci(self)  # its IOMMU domain and PCI devices (ACRN vpci_init)
        self.state = VmState.CREATED

    def remap(self) -> None:
        """Derive every engine's memory map from the EPT (never from a second table). A range
        the EPT maps outside host RAM is a device's BAR (passthrough): the engine maps it onto
        the device's registers (hv/dm/vpci/pci_pt.py BarWindow), so accesses do not exit."""
        mem = self.hv.mem
        runs = [
            (gpa, hpa, size, "".join(c for c, b in (("r", 1), ("w", 2), ("x", 4)) if perm & b))
            for gpa, hpa, size, perm in self.ept.regions()
        ]
        for vcpu in self.vcpus:
            vcpu.engine.map_memory(
                [
                    (gpa, size, perms,
                     mem.host_ptr(hpa) if hpa + size <= mem.size else BarWindow(vcpu, hpa))
                    for gpa, hpa, size, perms in runs
                ]
            )  # fmt: skip

    def gpa2hpa(self, gpa: int) -> int | None:
        """The EPT walk, through a per-page cache flushed whenever the EPT changes (host time
        only: the same answer as walking the tables every time)."""
        if self._tlb_generation != self.ept.generation:
            self._tlb.clear()
            self._tlb_generation = self.ept.generation
        page = gpa >> 12
        hpa = self._tlb.get(page)
        if hpa is None:
            walked = self.ept.walk(gpa & ~0xFFF)
            if walked is None:
                return None
            hpa = self._tlb[page] = walked[0]
        return hpa | (gpa & 0xFFF)

    def copy_to_gpa(self, gpa: int, data: bytes) -> bool:
        """Write guest memory through the EPT, page by page (ACRN copy_to_gpa); runs of
        contiguous host pages go in one write."""
        view = memoryview(data)
        done, total = 0, len(view)
        while done < total:
            hpa = self.gpa2hpa(gpa + done)
            if hpa is None or hpa >= self.hv.mem.size:  # unmapped, or a device's BAR
                return False
            chunk = min(total - done, 0x1000 - ((gpa + done) & 0xFFF))
            while done + chunk < total and self.gpa2hpa(gpa + done + chunk) == hpa + chunk:
                chunk += min(total - done - chunk, 0x1000)
            self.hv.mem.write(hpa, view[done : done + chunk])
            done += chunk
        return True

    def copy_from_gpa(self, gpa: int, length: int) -> bytes | None:
        """Read guest memory through the EPT (ACRN copy_from_gpa); None if not all mapped."""
        parts = []
        done = 0
        while done < length:
            hpa = self.gpa2hpa(gpa + done)
            if hpa is None or hpa >= self.hv.mem.size:  # unmapped, or a device's BAR
                return None
            chunk = min(length - done, 0x1000 - ((gpa + done) & 0xFFF))
            parts.append(self.hv.mem.read(hpa, chunk))
            done += chunk
        return b"".join(parts)

    @property
    def is_created(self) -> bool:
        return self.state is VmState.CREATED

    @property
    def is_paused(self) -> bool:
        return self.state is VmState.PAUSED

    @property
    def io_completion_polling(self) -> bool:
        # GUEST_FLAG_IO_COMPLETION_POLLING is honoured only for post-launched VMs (ACRN vm.c)
        return self.is_post_launched and bool(self.vm_flag & 4)

    def set_ioreq_page(self, hpa: int) -> None:
        self.ioreq_page = hpa
        page = MemWindow(self.hv.mem, hpa, 0x1000)
        self.ioreq_slots = [IoRequest(page, i) for i in range(ACRN_IO_REQUEST_MAX)]
        for slot in self.ioreq_slots:
            slot.processed = ACRN_IOREQ_STATE_FREE

    def set_vcpu_regs(self, vcpu_id: int, state) -> None:
        apply_state(self.vcpus[vcpu_id].engine, state)

    def pause(self) -> None:
        """HC_PAUSE_VM: every vCPU stops at its next VM entry and sleeps (ACRN pause_vcpu);
        the VM is PAUSED, ready for HC_RESET_VM, HC_DESTROY_VM or a resume."""
        if self.state is VmState.RUNNING:
            self.state = VmState.PAUSED
            self.hv.trace_vm(self, "pause")
            for vcpu in self.vcpus:
                vcpu.pause()

    def resume(self) -> None:
        """A paused VM runs on from where it stopped (ACRN resume_vcpu on every vCPU)."""
        if self.state is VmState.PAUSED:
            self.state = VmState.RUNNING
            self.hv.trace_vm(self, "resume")
            for vcpu in self.vcpus:
                vcpu.resume()

    def reset(self) -> None:
        """HC_RESET_VM of a paused VM (ACRN reset_vm): every vCPU back to its power-on state,
        the vPIC too, all IOREQ slots FREE; memory stays; the VM is CREATED again, for its
        device model to load and start it."""
        for vcpu in self.vcpus:
            vcpu.stop()  # the paused threads end; start() launches new ones
            vcpu.reset()
            vmx.init_vmcs(vcpu, self.ept.eptp, self.io_bitmap)
        self.remap()
        self.vpic.reset()
        self.vioapic.reset()
        if self.ioreq_page is not None:
            self.set_ioreq_page(self.ioreq_page)
        self.state = VmState.CREATED
        self.hv.trace_vm(self, "reset")

    def destroy(self) -> None:
        """HC_DESTROY_VM of a paused VM: it is powered off (its device model recorded why)."""
        self.state = VmState.PAUSED
        self._shut_down(ShutdownInfo("poweroff", self.hv.now(), reason="destroyed by the DM"))

    def broadcast_eoi(self, vector: int) -> None:
        """A level-triggered vector's EOI goes to the vIOAPIC (ACRN vioapic_broadcast_eoi)."""
        self.vioapic.eoi(vector)

    def set_irqline(self, gsi: int, op: int) -> None:
        """HC_SET_IRQLINE: drives the vIOAPIC pin and, for the 16 legacy GSIs, the vPIC too
        (GSI 2 is PIC pin 0), as ACRN's vioapic/vpic_set_irqline do."""
        levels = {0: (1,), 1: (0,), 2: (1, 0), 3: (0, 1)}[op]  # SET_HIGH/LOW, pulses
        for level in levels:
            self.vioapic.set_irqline(gsi, bool(level))
            if gsi < 16:
                self.vpic.set_irqline(0 if gsi == 2 else gsi, bool(level))
        self.hv.trace_vm(self, f"irqline {gsi} {'high' if levels[-1] else 'low'}", op=op)

    def inject_msi(self, addr: int, data: int) -> None:
        """HC_INJECT_MSI (ACRN vlapic_inject_msi -> vlapic_receive_intr). The message (SDM
        Vol. 3 §11.11): address 0xFEExxxxx with the destination in bits 19:12 and logical
        mode in bit 2; data with the delivery mode in bits 10:8 and the vector in 7:0. Fixed
        and lowest-priority messages go to the destination vCPUs' vLAPICs as edge-triggered
        interrupts (vlapic_set_intr: IRR, then the vCPU is woken or kicked); lowest priority
        picks the first vCPU of the destination set; NMI queues an NMI. A message that is
        not addressed to the local APICs is dropped, as ACRN does."""
        if (addr >> 20) & 0xFFF != 0xFEE:
            return
        dest, logical = (addr >> 12) & 0xFF, bool(addr & 0x4)
        mode, vector = (data >> 8) & 0x7, data & 0xFF
        targets = [v for v in self.vcpus if v.vlapic._matches(dest, logical)]
        if mode == 1:  # lowest priority
            targets = targets[:1]
        for v in targets:
            if mode in (0, 1):
                v.vlapic.set_intr(vector, level=False)
            elif mode == 4:
                v.queue_nmi()

    def rng_next(self, bits: int) -> int:
        return self._rng.getrandbits(bits)

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self.state = VmState.RUNNING
        self.hv.trace_vm(self, "start")
        for vcpu in self.vcpus:
            launch_vcpu(vcpu)

    def _shut_down(self, info: ShutdownInfo) -> None:
        if self.state is VmState.POWERED_OFF or self.shutdown is not None:
            return
        self.shutdown = info
        self.state = VmState.POWERED_OFF
        for vcpu in self.vcpus:
            vcpu.stop()
        deinit_vpci(self)  # its passthrough devices are reset (a User VM's go back)
        self.hv.trace_vm(self, info.kind, reason=info.reason, exit_code=info.exit_code)
        self.hv.vm_stopped(self)

    def poweroff(self, code: int, vcpu=None) -> None:
        self._shut_down(ShutdownInfo("poweroff", self.hv.now(), exit_code=code & 0xFF))

    def triple_fault(self, vcpu, reason: str) -> None:
        """ACRN triple_fault_shutdown_vm: this VM goes down, reported; nothing else does."""
        rip = vcpu.vmcs.read(VMX_GUEST_RIP) if vcpu else None
        self._shut_down(ShutdownInfo("triple_fault", self.hv.now(), reason=reason, rip=rip))

    def crash(self, vcpu, reason: str) -> None:
        """A guest did something the model cannot carry on from: only its VM stops."""
        rip = vcpu.engine.reg("rip") if vcpu else None
        self._shut_down(ShutdownInfo("crash", self.hv.now(), reason=reason, rip=rip))

    # ------------------------------------------------------------- devices
    def console_write(self, data: bytes) -> None:
        self.console += data
        self.hv.console_sink(self.name, data)

    def set_uart_irq(self, level: bool) -> None:
        """The hypervisor's vUART drives its IRQ (COM1: 4) into the vPIC (ACRN vuart.c)."""
        self.vpic.set_irqline(4, level)
        self.vioapic.set_irqline(4, level)
