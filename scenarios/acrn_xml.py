"""ACRN's scenario XML (the v3 format the ACRN 3.x Configurator writes), in and out.

`load(path)` reads a scenario file into what a scenario script returns: the list of VmConfig
(the Service VM being the model's own, scenarios.service_vm(), with its User VMs' device
models), plus the scheduler. What the model does not run yet (PCI passthrough, virtio devices,
inter-VM vUART links, shared memory, host memory placement) is kept beside them in a typed form.
`to_xml(configs, scheduler)` writes a list of VmConfig back as a scenario file.

Element names, enumerations and defaults are ACRN's: misc/config_tools/schema/config.xsd (<hv>,
<vm>), VMtypes.xsd (cpu_affinity, memory, os_config, vUART and virtio types) and types.xsd
(Boolean y/n, SchedulerType, PriorityType, HexFormat, VBDFType, VMNameType). docs/scenario-xml.md
has the element-by-element table: what is read, what is reported and ignored, what is refused.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

# Through `scenarios`, which every scenario script imports: this keeps working wherever hv/
# keeps VmConfig.
from acrn_sim.scenarios import (
    POST_LAUNCHED_VM,
    PRE_LAUNCHED_VM,
    SERVICE_VM,
    VmConfig,
    image_path,
    service_vm,
)
from acrn_sim.scenarios.virtio_xml import virtio_slot_options
from acrn_sim.sim import ConfigError
from acrn_sim.sim.paths import locate

MB = 1 << 20

# The model's limits. pCPU ids: ACRN keeps a VM's affinity as a 64-bit mask (uint64_t
# cpu_affinity in hypervisor/include/arch/x86/asm/vm_config.h). Memory: the whole machine's
# DRAM is one host mapping (sim/hostmem.py) that must fit in what the host will reserve.
MAX_PCPU_ID = 63
MAX_MACHINE_MEMORY = 16 << 30
HV_MEMORY = 4 << 20  # the hypervisor's own RAM in the model's layout (hv/hypervisor.py)

SCHEDULERS = {"SCHED_NOOP": "noop", "SCHED_BVT": "bvt", "SCHED_PRIO": "prio"}
VM_TYPES = ("STANDARD_VM", "RTVM")
PRIORITIES = ("PRIO_LOW", "PRIO_HIGH")
# ACRN v2.x's <vm_type> values, which v3 split into <load_order> and <vm_type>
# (misc/config_tools/scenario_config/upgrader.py, move_vm_type and the load-order inference)
V2_VM_TYPES = {
    "SERVICE_VM", "SOS_VM", "SAFETY_VM", "PRE_STD_VM", "PRE_RT_VM", "POST_STD_VM",
    "POST_RT_VM", "KATA_VM",
}  # fmt: skip
# Elements only v2.x files have (v3 replaced them with <load_order>, <vuart_connections> and
# Boolean elements)
V2_ELEMENTS = ("guest_flags", "legacy_vuart", "communication_vuart", "board_private")
VM_NAME = re.compile(r"[a-zA-Z0-9_\-]{1,15}")  # types.xsd VMNameType
HEX = re.compile(r"0[Xx][0-9A-Fa-f]+|0")  # types.xsd HexFormat
VBDF = re.compile(r"([0-9A-Fa-f]{1,2}):([0-1][0-9A-Fa-f])\.([0-7])")  # types.xsd VBDFType
SIM_PI = "acrn-sim"  # <?acrn-sim key="value"?>: the model's own settings (see _pi)


# ------------------------------------------------------------------ what the model keeps aside
@dataclass(frozen=True)
class PciDevice:
    """A <pci_dev> to pass through: "BB:DD.F description", the board's lspci line."""

    bus: int
    device: int
    function: int
    description: str = ""

    @property
    def bdf(self) -> str:
        return f"{self.bus:02x}:{self.device:02x}.{self.function}"


@dataclass(frozen=True)
class VirtioConsole:
    # VMtypes.xsd VirtioConsoleConfiguration (defaults: use_type, backend_type)
    use_type: str = "Virtio console"
    backend_type: str = "stdio"
    output_file_path: str = ""
    sock_file_path: str = ""
    tty_device_path: str = ""


@dataclass(frozen=True)
class VirtioNetwork:
    interface_name: str = ""
    virtio_framework: str = "User space based (VBSU)"


@dataclass(frozen=True)
class VirtioInput:
    backend_device_file: str = ""
    id: str = ""


@dataclass(frozen=True)
class VirtioGpuDisplay:
    monitor_id: int | None = None
    window_resolutions: str = ""
    horizontal_offset: int | None = None
    vertical_offset: int | None = None


@dataclass(frozen=True)
class VirtioGpu:
    display_type: str = ""
    displays: tuple[VirtioGpuDisplay, ...] = ()


@dataclass(frozen=True)
class VirtualCamera:
    physical_camera_id: int
    resolution: str
    virtual_camera_id: int


@dataclass
class VirtioDevices:
    """<virtio_devices> of a post-launched VM (config.xsd), one list per kind."""

    gpu: VirtioGpu | None = None
    console: list[VirtioConsole] = field(default_factory=list)
    network: list[VirtioNetwork] = field(default_factory=list)
    input: list[VirtioInput] = field(default_factory=list)
    block: list[str] = field(default_factory=list)
    vsock: list[int] = field(default_factory=list)
    camera: list[VirtualCamera] = field(default_factory=list)

    def kinds(self) -> list[str]:
        kinds = ["gpu"] if self.gpu else []
        for kind in ("console", "network", "input", "block", "vsock", "camera"):
            if getattr(self, kind):
                kinds.append(kind)
        return kinds


@dataclass
class VmDevices:
    """A VM's devices that other parts of the model will run: passthrough and virtio."""

    pci: list[PciDevice] = field(default_factory=list)
    virtio: VirtioDevices = field(default_factory=VirtioDevices)
    mmio_resources: dict[str, bool] = field(default_factory=dict)  # TPM2, p2sb passthrough
    pt_intx: str = ""


@dataclass(frozen=True)
class HpaRegion:
    """A pre-launched VM's RAM at a fixed host address (VMtypes.xsd HPARegionType)."""

    start_hpa: int
    size: int  # bytes (the XML gives MB)


@dataclass(frozen=True)
class VuartEndpoint:
    vm_name: str
    io_port: int | None = None
    vbdf: str | None = None


@dataclass(frozen=True)
class VuartConnection:
    """An inter-VM vUART link (VMtypes.xsd VuartConnectionType): legacy (I/O port) or pci."""

    name: str
    type: str
    endpoints: tuple[VuartEndpoint, VuartEndpoint]


@dataclass(frozen=True)
class IvshmemRegion:
    """A shared memory region (types.xsd IVSHMEMRegionType)."""

    name: str
    provided_by: str
    size: int  # bytes
    vms: tuple[tuple[str, str], ...]  # (VM name, vBDF)


@dataclass
class ScenarioXml:
    """A scenario file, read: what the model runs and what it keeps aside."""

    configs: list[VmConfig]
    scheduler: str  # noop, bvt or prio
    devices: dict[str, VmDevices]  # by VM name, every VM
    vuart_connections: list[VuartConnection]
    ivshmem: list[IvshmemRegion]
    hpa_regions: dict[str, list[HpaRegion]]  # by VM name, pre-launched VMs that have any
    real_time_vcpus: dict[str, list[bool]]  # by VM name: <real_time_vcpu> per vCPU
    board: str | None = None
    scenario: str | None = None
    # What was read but is not modelled, one line each ("<X> ignored (not modelled)")
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------ helpers
def _children(el: ET.Element) -> list[ET.Element]:
    return [c for c in el if isinstance(c.tag, str)]  # not comments or PIs


def _text(el: ET.Element | None) -> str:
    return (el.text or "").strip() if el is not None else ""


def _is_empty(el: ET.Element) -> bool:
    return not _text(el) and all(_is_empty(c) for c in _children(el))


@dataclass
class _Vm:
    """One <vm> as read, before it becomes a VmConfig."""

    id: int | None
    load_order: str = ""
    name: str = ""
    vm_type: str = "STANDARD_VM"
    memory_mb: int | None = None
    hpa: list[HpaRegion] = field(default_factory=list)
    pcpus: list[int] = field(default_factory=list)
    rt_vcpus: list[bool] = field(default_factory=list)
    kern_mod: str = ""
    bootargs: str | None = None
    lapic_pt: bool = False
    polling: bool = False
    priority: str = "PRIO_LOW"
    bvt_weight: int = 1
    own_pcpu: bool = False
    console_vuart: str | None = None  # None: not given
    vuart0: bool | None = None
    vbootloader: bool | None = None
    watched: bool | None = None
    dm_priority_inheritance: bool = True
    devices: VmDevices = field(default_factory=VmDevices)
    seen: set[str] = field(default_factory=set)


class _Reader:
    def __init__(self, file: str) -> None:
        self.file = file
        self.notes: list[str] = []
        self._noted: set[str] = set()
        self.virtio_taps: set[str] = set()  # taps of the VMs' virtio-net devices so far

    # --------------------------------------------------------------- reporting
    def error(self, msg: str) -> ConfigError:
        return ConfigError(f"{self.file}: {msg}")

    def note(self, key: str, msg: str) -> None:
        """Report once per element: the first VM that has it gives the line."""
        if key not in self._noted:
            self._noted.add(key)
            self.notes.append(msg)

    def ignored(self, tag: str, why: str = "") -> None:
        self.note(tag, f"<{tag}> ignored (not modelled{': ' + why if why else ''})")

    # ------------------------------------------------------------------ values
    def flag(self, el: ET.Element, where: str) -> bool:
        v = _text(el)
        if v not in ("y", "n"):
            raise self.error(f"{where}<{el.tag}>{v}</{el.tag}>: expected y or n")
        return v == "y"

    def integer(self, el: ET.Element, where: str, lo: int | None = None, hi: int | None = None):
        v = _text(el)
        try:
            n = int(v, 10)
        except ValueError:
            raise self.error(f"{where}<{el.tag}>{v}</{el.tag}>: expected an integer") from None
        if lo is not None and n < lo:
            raise self.error(f"{where}<{el.tag}>{n}</{el.tag}>: must be at least {lo}")
        if hi is not None and n > hi:
            raise self.error(f"{where}<{el.tag}>{n}</{el.tag}>: must be at most {hi}")
        return n

    def hexnum(self, el: ET.Element, where: str) -> int:
        v = _text(el)
        if not HEX.fullmatch(v):
            raise self.error(f"{where}<{el.tag}>{v}</{el.tag}>: expected a hex number like 0x1000")
        return int(v, 16)

    def enum(self, el: ET.Element, where: str, choices) -> str:
        v = _text(el)
        if v not in choices:
            raise self.error(
                f"{where}<{el.tag}>{v}</{el.tag}>: expected one of {', '.join(choices)}"
            )
        return v

    def unknown(self, el: ET.Element, where: str) -> ConfigError:
        # A misspelt element would be dropped silently otherwise (e.g. <lapic_passtrough>)
        return self.error(f"{where}unknown element <{el.tag}> (not in ACRN's v3 scenario schema)")

    def known_children(self, el: ET.Element, names: tuple[str, ...], where: str) -> None:
        for c in _children(el):
            if c.tag not in names:
                raise self.unknown(c, where)

    # -------------------------------------------------------------------- file
    def read(self, text: str) -> tuple[ET.Element, list[_Vm], str, int]:
        if re.search(r"<!(DOCTYPE|ENTITY)", text):
            raise self.error("a scenario file has no DOCTYPE or entity declarations")
        try:
            root = ET.fromstring(text, ET.XMLParser(target=ET.TreeBuilder(insert_pis=True)))
        except ET.ParseError as e:
            raise self.error(f"not well-formed XML: {e}") from None
        if root.tag != "acrn-config":
            raise self.error(f"root element <{root.tag}>: an ACRN scenario's is <acrn-config>")
        vms = root.findall("vm")
        if not vms:
            raise self.error("no <vm> element: not a scenario XML (a board XML?)")
        self.check_v2(vms)
        if root.get("board"):
            self.note("@board", f'board="{root.get("board")}" ignored (not modelled: the '
                      "model's machine is its own)")  # fmt: skip
        hv = root.find("hv")
        scheduler, max_vms = "bvt", 16  # config.xsd defaults: SCHED_BVT, MAX_VM_NUM 16
        for c in _children(root):
            if c.tag not in ("hv", "vm"):
                raise self.unknown(c, "")
        if hv is not None:
            scheduler, max_vms = self.read_hv(hv)
        read = [self.read_vm(vm, i) for i, vm in enumerate(vms)]
        return root, read, scheduler, max_vms

    def check_v2(self, vms: list[ET.Element]) -> None:
        fix = (
            "convert it with ACRN 3.x's misc/config_tools/scenario_config/upgrader.py "
            "OLD.xml NEW.xml (or open it in the ACRN 3.x Configurator) and run the result"
        )
        for vm in vms:
            where = f'<vm id="{vm.get("id")}">' if vm.get("id") is not None else "<vm>"
            vm_type = _text(vm.find("vm_type"))
            if vm.find("load_order") is None and vm_type in V2_VM_TYPES:
                raise self.error(
                    f"an ACRN v2.x scenario ({where} has <vm_type>{vm_type}</vm_type> and no "
                    f"<load_order>): {fix}"
                )
            for tag in V2_ELEMENTS:
                if vm.find(tag) is not None:
                    raise self.error(f"an ACRN v2.x scenario ({where} has <{tag}>): {fix}")
            cv = vm.find("console_vuart")
            if cv is not None and cv.find("base") is not None:
                raise self.error(
                    f"an ACRN v2.x scenario ({where} has <console_vuart><base>): {fix}"
                )

    # ---------------------------------------------------------------------- hv
    def read_hv(self, hv: ET.Element) -> tuple[str, int]:
        scheduler, max_vms = "bvt", 16
        for c in _children(hv):
            if c.tag == "FEATURES":
                scheduler = self.read_features(c)
            elif c.tag == "CAPACITIES":
                for cap in _children(c):
                    if cap.tag == "MAX_VM_NUM" and _text(cap):
                        max_vms = self.integer(cap, "<hv><CAPACITIES>", 1)
                    elif _text(cap):
                        self.note("CAPACITIES", "<CAPACITIES> ignored (not modelled), but for "
                                  "<MAX_VM_NUM>, which is checked")  # fmt: skip
            elif c.tag == "vuart_connections":
                continue  # read with the VMs (read_vuarts): its endpoints name them
            elif c.tag in ("BUILD_TYPE", "DEBUG_OPTIONS", "MEMORY", "MISC_CFG", "phy_camera"):
                if not _is_empty(c):
                    self.ignored(c.tag)
            elif c.tag == "HIDDEN_PDEV_REGION":
                if not _is_empty(c):
                    self.ignored(c.tag, "the model's machine has no physical PCI devices")
            elif c.tag == "CACHE_REGION":
                # Cache allocation (CAT) the user relies on: running without it would give
                # results that do not mean what the scenario says
                if not _is_empty(c):
                    raise self.error("<hv><CACHE_REGION>: cache allocation (RDT/CAT) is not "
                                     "modelled; remove it to run without")  # fmt: skip
            else:
                raise self.unknown(c, "<hv>")
        return scheduler, max_vms

    def read_features(self, features: ET.Element) -> str:
        scheduler = "bvt"
        for c in _children(features):
            where = "<hv><FEATURES>"
            if c.tag == "SCHEDULER":
                v = _text(c)
                if v == "SCHED_IORR":
                    raise self.error(f"{where}<SCHEDULER>SCHED_IORR: not modelled (the model "
                                     "has SCHED_NOOP, SCHED_BVT and SCHED_PRIO)")  # fmt: skip
                scheduler = SCHEDULERS[self.enum(c, where, tuple(SCHEDULERS))]
            elif c.tag == "RDT":
                self.known_children(c, ("RDT_ENABLED", "CDP_ENABLED", "VCAT_ENABLED",
                                        "CLOS_MASK", "MBA_DELAY"), where + "<RDT>")  # fmt: skip
                enabled = c.find("RDT_ENABLED")
                if enabled is not None and self.flag(enabled, where + "<RDT>"):
                    raise self.error(f"{where}<RDT><RDT_ENABLED>y: cache and memory bandwidth "
                                     "allocation (RDT) is not modelled; set it to n to run "
                                     "without")  # fmt: skip
            elif c.tag == "SSRAM":
                enabled = c.find("SSRAM_ENABLED")
                if enabled is not None and self.flag(enabled, where + "<SSRAM>"):
                    raise self.error(f"{where}<SSRAM><SSRAM_ENABLED>y: Software SRAM "
                                     "(always-cached buffers) is not modelled; set it to n to "
                                     "run without")  # fmt: skip
            elif c.tag == "L1D_VMENTRY_ENABLED":
                # A cache flush at every VM entry: its cost is not in the timing profile, so
                # every measured exit would be too short
                if self.flag(c, where):
                    raise self.error(f"{where}<L1D_VMENTRY_ENABLED>y: the L1D flush on VM "
                                     "entry is not in the timing profile; set it to n")  # fmt: skip
            elif c.tag == "IVSHMEM":
                continue  # read with the VMs (read_ivshmem): its regions name them
            elif c.tag in (
                "RELOC", "RELOC_ENABLED", "MULTIBOOT2", "MULTIBOOT2_ENABLED",
                "SERVICE_VM_SUPERVISOR_ENABLED", "SPLIT_LOCK_DETECTION_ENABLED",
                "UC_LOCK_DETECTION_ENABLED", "ENFORCE_TURNOFF_AC", "ENFORCE_TURNOFF_GP",
                "SECURITY_VM_FIXUP", "KEEP_IRQ_DISABLED", "HYPERV_ENABLED", "IOMMU_ENFORCE_SNP",
                "ACPI_PARSE_ENABLED", "MCE_ON_PSC_ENABLED", "MCE_ON_PSC_DISABLED",
                "ACRNTRACE_ENABLED", "NVMX_ENABLED", "VUART_RX_BUF_SIZE", "VUART_TX_BUF_SIZE",
                "VUART_TIMER_PCPU", "CPU_PERFORMANCE_POLICY",
            ):  # fmt: skip
                # Build options and platform settings the guests here do not see; a feature
                # that is off is what the model does anyway
                if _text(c) not in ("", "n"):
                    self.ignored(c.tag)
            else:
                raise self.unknown(c, where)
        return scheduler

    def read_vuarts(self, hv: ET.Element | None, names: set[str]) -> list[VuartConnection]:
        conns = []
        el = hv.find("vuart_connections") if hv is not None else None
        if el is None:
            return conns
        where = "<hv><vuart_connections>"
        self.known_children(el, ("vuart_connection",), where)
        for conn in el.findall("vuart_connection"):
            self.known_children(conn, ("name", "type", "endpoint"), where)
            name = _text(conn.find("name"))
            kind = "legacy"  # VMtypes.xsd VuartConnectionType default
            if conn.find("type") is not None:
                kind = self.enum(conn.find("type"), where, ("legacy", "pci"))
            eps = []
            for ep in conn.findall("endpoint"):
                self.known_children(ep, ("vm_name", "io_port", "vbdf"), where)
                vm = _text(ep.find("vm_name"))
                if vm not in names:
                    raise self.error(f"vUART connection {name!r}: endpoint VM {vm!r} is not "
                                     "a <vm> of this scenario")  # fmt: skip
                port = ep.find("io_port")
                vbdf = _text(ep.find("vbdf")) or None
                if vbdf is not None and not VBDF.fullmatch(vbdf):
                    raise self.error(f"vUART connection {name!r}: vbdf {vbdf!r}: expected BB:DD.F")
                eps.append(VuartEndpoint(vm, self.hexnum(port, where) if _text(port) else None,
                                         vbdf))  # fmt: skip
            if len(eps) != 2:
                raise self.error(f"vUART connection {name!r}: needs exactly two <endpoint>")
            conns.append(VuartConnection(name, kind, (eps[0], eps[1])))
        if conns:
            self.note("vuart_connections", "<vuart_connections> parsed, not modelled yet (the "
                      "guests see no UART at those ports)")  # fmt: skip
        return conns

    def read_ivshmem(self, hv: ET.Element | None, names: set[str]) -> list[IvshmemRegion]:
        el = hv.find("FEATURES/IVSHMEM") if hv is not None else None
        regions = []
        if el is None:
            return regions
        where = "<hv><FEATURES><IVSHMEM>"
        for r in _children(el):
            if r.tag == "IVSHMEM_ENABLED":  # v2's switch: in v3 a region turns it on
                continue
            if r.tag != "IVSHMEM_REGION":
                raise self.unknown(r, where)
            if _is_empty(r):
                continue
            name = _text(r.find("NAME"))
            size = r.find("IVSHMEM_SIZE")
            vms = []
            for v in r.findall("IVSHMEM_VMS/IVSHMEM_VM"):
                vm = _text(v.find("VM_NAME"))
                if vm not in names:
                    raise self.error(f"shared memory region {name!r}: VM {vm!r} is not a <vm> "
                                     "of this scenario")  # fmt: skip
                vms.append((vm, _text(v.find("VBDF"))))
            regions.append(IvshmemRegion(
                name, _text(r.find("PROVIDED_BY")) or "Hypervisor",
                self.integer(size, where, 1) * MB if size is not None else 2 * MB, tuple(vms),
            ))  # fmt: skip
        if regions:
            self.note("IVSHMEM", "<IVSHMEM> parsed, not modelled yet (no shared memory device "
                      "in the VMs)")  # fmt: skip
        return regions

    # ---------------------------------------------------------------------- vm
    def read_vm(self, el: ET.Element, index: int) -> _Vm:
        vid = el.get("id")
        try:
            vm = _Vm(int(vid) if vid is not None else None)
        except ValueError:
            raise self.error(f'<vm id="{vid}">: expected an integer id') from None
        name_el = el.find("name")
        vm.name = _text(name_el)
        label = f'<vm id="{vid}">' if vid is not None else f"<vm> #{index + 1}"
        if not vm.name:
            raise self.error(f"{label}: no <name>")
        if not VM_NAME.fullmatch(vm.name):
            raise self.error(f"{label}: <name>{vm.name}</name>: up to 15 letters, digits, _ or -")
        where = f"VM {vm.name}: "
        lo = el.find("load_order")
        if lo is None:
            raise self.error(f"{where}no <load_order> (SERVICE_VM, PRE_LAUNCHED_VM or "
                             "POST_LAUNCHED_VM)")  # fmt: skip
        vm.load_order = self.enum(lo, where, (SERVICE_VM, PRE_LAUNCHED_VM, POST_LAUNCHED_VM))
        service = vm.load_order == SERVICE_VM
        post = vm.load_order == POST_LAUNCHED_VM
        for c in el:
            if c.tag is ET.ProcessingInstruction:
                self.read_pi(c, vm, where)
                continue
            if not isinstance(c.tag, str):
                continue
            if c.tag in vm.seen:
                raise self.error(f"{where}<{c.tag}> given twice")
            vm.seen.add(c.tag)
            self.read_vm_element(c, vm, where, service, post)
        return vm

    def read_pi(self, pi: ET.Element, vm: _Vm, where: str) -> None:
        """<?acrn-sim watched="n"?>: the model's own per-VM settings, which ACRN's schema has
        no element for. A processing instruction: ACRN's tools do not validate it."""
        target, _, body = (pi.text or "").partition(" ")
        if target != SIM_PI:
            return
        pairs = re.findall(r'(\w+)\s*=\s*"([^"]*)"', body)
        if not pairs or re.sub(r'(\w+)\s*=\s*"([^"]*)"', "", body).strip():
            raise self.error(f'{where}<?acrn-sim {body.strip()}?>: expected key="value" pairs')
        for key, value in pairs:
            if value not in ("y", "n"):
                raise self.error(f'{where}<?acrn-sim {key}="{value}"?>: expected y or n')
            if key == "watched":
                vm.watched = value == "y"
            elif key == "dm_priority_inheritance" and vm.load_order == SERVICE_VM:
                vm.dm_priority_inheritance = value == "y"
            else:
                raise self.error(f"{where}<?acrn-sim {key}?>: unknown setting (watched; "
                                 "dm_priority_inheritance for the Service VM)")  # fmt: skip

    def read_vm_element(self, c: ET.Element, vm: _Vm, where: str, service: bool, post: bool):
        tag = c.tag
        if tag in ("load_order", "name"):
            return
        if tag == "vm_type":
            v = _text(c)
            if v in ("TEE_VM", "REE_VM"):
                raise self.error(f"{where}<vm_type>{v}: TEE/REE companion VMs are not modelled")
            vm.vm_type = self.enum(c, where, VM_TYPES) if v else "STANDARD_VM"
            if service and vm.vm_type == "RTVM":
                raise self.error(f"{where}the Service VM cannot be an RTVM (VMtypes.xsd)")
        elif tag == "memory":
            self.read_memory(c, vm, where, service)
        elif tag == "cpu_affinity":
            self.read_affinity(c, vm, where, service)
        elif tag == "os_config":
            self.read_os_config(c, vm, where, service)
        elif tag == "lapic_passthrough":
            vm.lapic_pt = self.flag(c, where)
        elif tag == "io_completion_polling":
            vm.polling = self.flag(c, where)
            if service and vm.polling:
                self.ignored("io_completion_polling", "the Service VM has no I/O requests")
        elif tag == "priority":
            vm.priority = self.enum(c, where, PRIORITIES)
            if service and vm.priority != "PRIO_HIGH":
                self.ignored("priority", "the model's Service VM always runs at PRIO_HIGH")
        elif tag == "bvt_weight":
            # config.xsd: 1 to 128 (BVT_WEIGHT_MIN/MAX of hypervisor/common/sched_bvt.c)
            vm.bvt_weight = self.integer(c, where, 1, 128)
        elif tag in ("bvt_warp_value", "bvt_warp_limit", "bvt_unwarp_period"):
            if _text(c) not in ("", "0"):
                raise self.error(f"{where}<{tag}>{_text(c)}: BVT warp is not modelled (the "
                                 "model's BVT runs without warp); set it to 0")  # fmt: skip
        elif tag == "own_pcpu":
            vm.own_pcpu = self.flag(c, where)
        elif tag == "console_vuart":
            vm.console_vuart = self.enum(
                c, where, ("None", "COM Port 1", "COM Port 2", "COM Port 3", "COM Port 4", "PCI")
            )
        elif tag == "vuart0":
            vm.vuart0 = self.flag(c, where)
        elif tag == "vbootloader":
            vm.vbootloader = self.flag(c, where)
        elif tag == "pci_devs":
            self.read_pci_devs(c, vm, where, service)
        elif tag == "virtio_devices":
            self.read_virtio(c, vm, where, post)
        elif tag == "mmio_resources":
            self.known_children(c, ("TPM2", "p2sb"), where + "<mmio_resources>")
            for r in _children(c):
                if _text(r) and self.flag(r, where + "<mmio_resources>"):
                    vm.devices.mmio_resources[r.tag] = True
                    self.note("mmio_resources", "<mmio_resources> parsed, not modelled yet")
        elif tag == "pt_intx":
            vm.devices.pt_intx = _text(c)
            if vm.devices.pt_intx:
                self.note("pt_intx", "<pt_intx> parsed, not modelled yet")
        elif tag == "epc_section":
            # SGX enclave memory the guest would use: refused rather than dropped
            for part in _children(c):
                if part.tag not in ("base", "size"):
                    raise self.unknown(part, where + "<epc_section>")
                if _text(part) and self.hexnum(part, where + "<epc_section>"):
                    raise self.error(f"{where}<epc_section>: SGX enclave page cache is not "
                                     "modelled; set base and size to 0")  # fmt: skip
        elif tag == "secure_world_support":
            if self.flag(c, where):
                raise self.error(f"{where}<secure_world_support>y: Trusty's secure world is "
                                 "not modelled")  # fmt: skip
        elif tag == "virtual_cat_support":
            if self.flag(c, where):
                raise self.error(f"{where}<virtual_cat_support>y: cache allocation (vCAT) is "
                                 "not modelled; set it to n to run without")  # fmt: skip
        elif tag in ("virtual_cat_number", "companion_vmid", "mcbanks_bitmask"):
            quiet = {"virtual_cat_number": ("", "0"), "companion_vmid": ("", "65535"),
                     "mcbanks_bitmask": ("", "0", "0x0")}[tag]  # fmt: skip
            if _text(c) not in quiet:
                self.ignored(tag)
        elif tag in ("nested_virtualization_support", "virtual_thermal_monitor",
                     "hide_mtrr_support", "security_vm", "stateless", "PTM"):  # fmt: skip
            if self.flag(c, where):
                self.ignored(tag)
        elif tag == "os_type":
            if self.enum(c, where, ("Non-Windows OS", "Windows OS")) != "Non-Windows OS":
                self.ignored(tag, "the device model's Windows options")
        elif tag == "clos":  # ACRN 3.0's per-vCPU cache class: only meaningful with RDT
            if any(_text(v) not in ("", "0") for v in _children(c)):
                self.ignored(tag)
        elif tag in ("usb_xhci", "customized_parameters"):
            if not _is_empty(c):
                self.ignored(tag)
        else:
            raise self.unknown(c, where)

    def read_memory(self, el: ET.Element, vm: _Vm, where: str, service: bool) -> None:
        if service:
            if not _is_empty(el):
                self.ignored("memory", "the model sizes the Service VM for its User VMs")
            return
        for c in _children(el):
            if c.tag == "size":
                # VMtypes.xsd MemoryInfo: megabytes
                vm.memory_mb = self.integer(c, where + "<memory>", 0)
            elif c.tag == "hpa_region":
                self.known_children(c, ("start_hpa", "size_hpa"), where + "<hpa_region>")
                start, size = c.find("start_hpa"), c.find("size_hpa")
                if start is None or size is None:
                    raise self.error(f"{where}<hpa_region> needs <start_hpa> and <size_hpa>")
                vm.hpa.append(
                    HpaRegion(
                        self.hexnum(start, where + "<hpa_region>"),
                        self.integer(size, where + "<hpa_region>", 1) * MB,
                    )
                )
            elif c.tag in ("start_hpa", "start_hpa2", "size_hpa2"):
                raise self.error(f"{where}<memory><{c.tag}>: that is the layout before ACRN "
                                 "3.0; v3 gives <size> (MB) and <hpa_region>")  # fmt: skip
            else:
                raise self.unknown(c, where + "<memory>")
        if vm.hpa and vm.load_order != PRE_LAUNCHED_VM:
            raise self.error(f"{where}<hpa_region> is for pre-launched VMs only (VMtypes.xsd)")

    def read_affinity(self, el: ET.Element, vm: _Vm, where: str, service: bool) -> None:
        if service:
            # ACRN gives the Service VM every pCPU no pre-launched VM owns; the model's has one
            # vCPU (see load)
            if not _is_empty(el):
                self.ignored("cpu_affinity", "the Service VM runs on the lowest pCPU that no "
                             "pre-launched VM owns")  # fmt: skip
            return
        for p in _children(el):
            if p.tag == "pcpu_id":
                raise self.error(f"{where}<cpu_affinity><pcpu_id> directly: that is the layout "
                                 "before ACRN 3.0; v3 wraps each in <pcpu>")  # fmt: skip
            if p.tag != "pcpu":
                raise self.unknown(p, where + "<cpu_affinity>")
            self.known_children(p, ("pcpu_id", "real_time_vcpu"), where + "<pcpu>")
            pid = p.find("pcpu_id")
            if pid is None or not _text(pid):
                continue  # the configurator writes an empty <pcpu> for an unset row
            vm.pcpus.append(self.integer(pid, where + "<pcpu>", 0))
            rt = p.find("real_time_vcpu")
            vm.rt_vcpus.append(self.flag(rt, where + "<pcpu>") if _text(rt) else False)

    def read_os_config(self, el: ET.Element, vm: _Vm, where: str, service: bool) -> None:
        for c in _children(el):
            w = where + "<os_config>"
            if c.tag == "bootargs":
                # Collapse the whitespace: the configurator's files wrap long command lines
                vm.bootargs = " ".join((c.text or "").split())
            elif c.tag == "kern_mod":
                vm.kern_mod = _text(c)
                if service and vm.kern_mod:
                    self.ignored("os_config", "the model runs its built-in Service VM; its "
                                 "<bootargs> may say busy")  # fmt: skip
            elif service:
                if c.tag not in ("kern_type", "kern_mod", "ramdisk_mod", "name",
                                 "kern_load_addr", "kern_entry_addr"):  # fmt: skip
                    raise self.unknown(c, w)
                if _text(c):
                    self.ignored("os_config", "the model runs its built-in Service VM; its "
                                 "<bootargs> may say busy")  # fmt: skip
            elif c.tag == "kern_type":
                kind = self.enum(c, w, ("KERNEL_BZIMAGE", "KERNEL_RAWIMAGE", "KERNEL_ELF"))
                if kind != "KERNEL_ELF":
                    self.ignored("kern_type", "the model loads each image by its own format, "
                                 "Multiboot or ELF")  # fmt: skip
            elif c.tag == "ramdisk_mod":
                if _text(c):
                    raise self.error(f"{w}<ramdisk_mod>{_text(c)}: the model loads no "
                                     "Multiboot module besides the kernel")  # fmt: skip
            elif c.tag in ("kern_load_addr", "kern_entry_addr"):
                if _text(c):
                    raise self.error(f"{w}<{c.tag}>: the model loads an image at its own "
                                     "(ELF or Multiboot) addresses")  # fmt: skip
            elif c.tag == "name":
                if _text(c):
                    self.ignored("os_config/name")
            else:
                raise self.unknown(c, w)

    def read_pci_devs(self, el: ET.Element, vm: _Vm, where: str, service: bool) -> None:
        for d in _children(el):
            if d.tag != "pci_dev":
                raise self.unknown(d, where + "<pci_devs>")
            text = " ".join((d.text or "").split())
            if not text:
                continue
            m = re.fullmatch(r"([0-9A-Fa-f]{1,2}):([0-9A-Fa-f]{1,2})\.([0-7])\s*(.*)", text)
            if not m:
                raise self.error(f"{where}<pci_dev>{text}: expected 'BB:DD.F description'")
            if service:
                self.ignored("pci_devs", "the Service VM owns every device not given away")
                return
            vm.devices.pci.append(
                PciDevice(int(m.group(1), 16), int(m.group(2), 16), int(m.group(3)), m.group(4))
            )
        if vm.devices.pci and vm.load_order != PRE_LAUNCHED_VM:
            self.note("pci_devs", "<pci_devs> of a post-launched VM parsed, not passed through "
                      "(its device model's -s N,passthru,BB/DD/F does that)")  # fmt: skip
        elif vm.devices.pci:
            self.note("pci_devs_pre", "<pci_devs> of a pre-launched VM: passed through where "
                      "the model's board has the device (--pdev BB:DD.F,KIND)")  # fmt: skip

    def read_virtio(self, el: ET.Element, vm: _Vm, where: str, post: bool) -> None:
        if _is_empty(el):
            return
        if not post:
            raise self.error(f"{where}<virtio_devices>: only a post-launched VM has them (its "
                             "device model runs them)")  # fmt: skip
        v = vm.devices.virtio
        w = where + "<virtio_devices>"
        for d in _children(el):
            if d.tag == "console":
                fields = ("use_type", "backend_type", "output_file_path", "sock_file_path",
                          "tty_device_path")  # fmt: skip
                v.console.append(VirtioConsole(**self.strings(d, fields, w)))
            elif d.tag == "network":
                v.network.append(
                    VirtioNetwork(**self.strings(d, ("interface_name", "virtio_framework"), w))
                )
            elif d.tag == "input":
                v.input.append(VirtioInput(**self.strings(d, ("backend_device_file", "id"), w)))
            elif d.tag == "block":
                if _text(d):
                    v.block.append(_text(d))
            elif d.tag == "vsock":
                # VMtypes.xsd vsockCIDType: 3 to 4294967294 (2 is the host's)
                v.vsock.append(self.integer(d, w, 3, 4294967294))
            elif d.tag == "gpu":
                self.known_children(d, ("display_type", "displays"), w + "<gpu>")
                displays = []
                for disp in d.findall("displays/display"):
                    s = self.strings(disp, ("monitor_id", "window_resolutions",
                                            "horizontal_offset", "vertical_offset"), w)  # fmt: skip
                    ints = {
                        k: int(s[k]) if s.get(k) else None
                        for k in ("monitor_id", "horizontal_offset", "vertical_offset")
                    }
                    displays.append(
                        VirtioGpuDisplay(window_resolutions=s.get("window_resolutions", ""), **ints)
                    )
                v.gpu = VirtioGpu(_text(d.find("display_type")), tuple(displays))
            elif d.tag == "camera":
                for cam in d.findall("virtual_camera"):
                    s = self.strings(cam, ("physical_camera_id", "resolution",
                                           "virtual_camera_id"), w)  # fmt: skip
                    v.camera.append(
                        VirtualCamera(
                            int(s.get("physical_camera_id", 0)),
                            s.get("resolution", ""),
                            int(s.get("virtual_camera_id", 0)),
                        )
                    )
            else:
                raise self.unknown(d, w)
        other = [k for k in v.kinds() if k not in ("console", "network", "block")]
        if other:  # console, network and block run (scenarios/virtio_xml.py)
            self.note("virtio_devices", f"<virtio_devices> parsed, not modelled yet: "
                      f"{', '.join(other)} (console, network and block are)")  # fmt: skip

    def strings(self, el: ET.Element, names: tuple[str, ...], where: str) -> dict[str, str]:
        """The text children of a virtio device; a device given as one string (ACRN 3.0's
        form) keeps that string in its first field."""
        if not _children(el) and _text(el):
            return {names[0]: _text(el)}
        self.known_children(el, names, where + f"<{el.tag}>")
        return {c.tag: _text(c) for c in _children(el) if _text(c)}


# --------------------------------------------------------------------------- images
def parse_image_specs(specs, origin: str, base: Path | None = None) -> dict[str, str]:
    """NAME=PATH entries (a <kern_mod> tag, a VM <name>, or * for the rest) -> {NAME: PATH}.
    A relative PATH is taken from `base` (the sidecar's directory), else as given."""
    out: dict[str, str] = {}
    for where, spec in specs:
        name, eq, path = spec.partition("=")
        name, path = name.strip(), path.strip()
        if not eq or not name or not path:
            raise ConfigError(f"{origin}{where}: {spec.strip()!r}: expected NAME=PATH")
        if base is not None and not os.path.isabs(path):
            path = os.path.normpath(os.path.join(base, path))
        out[name] = path
    return out


def sidecar_path(xml_path: str | Path) -> Path:
    """The images file next to a scenario: hello.xml -> hello.images."""
    return Path(xml_path).with_suffix(".images")


def read_sidecar(xml_path: str | Path) -> dict[str, str]:
    side = sidecar_path(xml_path)
    if not side.is_file():
        return {}
    lines = side.read_text().splitlines()
    specs = [(f":{n}", ln) for n, ln in enumerate(lines, 1)
             if ln.strip() and not ln.lstrip().startswith("#")]  # fmt: skip
    return parse_image_specs(specs, side.name, side.parent)


# ----------------------------------------------------------------------------- load
def load(path: str | Path, images=(), service_vm_busy: bool = False) -> ScenarioXml:
    """Read a v3 scenario file. `images`: --image NAME=PATH strings, which take precedence over
    the sidecar file next to it (see read_sidecar)."""
    path = Path(locate(path))  # the XML files in scenarios/ also from another directory
    if not path.is_file():
        raise ConfigError(f"scenario XML not found: {path}")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read {path}: {e}") from None
    table = read_sidecar(path)
    table.update(parse_image_specs([("", s) for s in images], "--image"))
    return parse(text, path.name, table, service_vm_busy)


def parse(
    text: str,
    file: str = "scenario.xml",
    images: dict[str, str] | None = None,
    service_vm_busy: bool = False,
) -> ScenarioXml:
    """A scenario file's text -> ScenarioXml; `images` maps NAME (kern_mod, VM name or *) to
    an image path."""
    r = _Reader(file)
    root, vms, scheduler, max_vms = r.read(text)
    ids = [v.id for v in vms]
    if all(i is not None for i in ids):
        if len(set(ids)) != len(ids):
            raise r.error("two <vm> have the same id")
        vms.sort(key=lambda v: v.id)  # ACRN's VM ids: the order the hypervisor knows them
    elif any(i is not None for i in ids):
        raise r.error('either every <vm> has an id="N" or none has')
    names = [v.name for v in vms]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:  # config.xsd: <xs:unique name="vmNameUnique">
        raise r.error(f"VM name {dup!r} is used twice")
    if len(vms) > max_vms:
        raise r.error(f"{len(vms)} VMs but <CAPACITIES><MAX_VM_NUM> is {max_vms}")
    hv = root.find("hv")
    vuarts = r.read_vuarts(hv, set(names))
    ivshmem = r.read_ivshmem(hv, set(names))
    services = [v for v in vms if v.load_order == SERVICE_VM]
    if len(services) > 1:
        raise r.error("more than one SERVICE_VM")
    posts = [v for v in vms if v.load_order == POST_LAUNCHED_VM]
    if posts and not services:
        raise r.error(f"post-launched VM {posts[0].name} needs a SERVICE_VM to launch it")
    _check_vms(r, vms)
    table = dict(images or {})
    _check_image_names(r, table, vms)

    configs: dict[str, VmConfig] = {}
    for v in vms:
        if v.load_order != SERVICE_VM:
            configs[v.name] = _user_config(r, v, table)
    for v in services:
        configs[v.name] = _service_config(r, v, vms, configs, service_vm_busy)
    ordered = [configs[v.name] for v in vms]
    _check_limits(r, ordered)
    return ScenarioXml(
        configs=ordered,
        scheduler=scheduler,
        devices={v.name: v.devices for v in vms},
        vuart_connections=vuarts,
        ivshmem=ivshmem,
        hpa_regions={v.name: v.hpa for v in vms if v.hpa},
        real_time_vcpus={v.name: v.rt_vcpus for v in vms if v.load_order != SERVICE_VM},
        board=root.get("board"),
        scenario=root.get("scenario"),
        notes=r.notes,
    )


def _check_vms(r: _Reader, vms: list[_Vm]) -> None:
    """ACRN's own rules that the model would otherwise meet later, or not at all."""
    owners: dict[int, list[str]] = {}
    for v in vms:
        where = f"VM {v.name}: "
        if v.console_vuart in ("COM Port 2", "COM Port 3", "COM Port 4", "PCI"):
            raise r.error(f"{where}<console_vuart>{v.console_vuart}: the model's console is "
                          "COM Port 1 (0x3F8) only")  # fmt: skip
        if v.load_order == SERVICE_VM:
            if v.lapic_pt:
                raise r.error(f"{where}<lapic_passthrough>y: the model's Service VM keeps "
                              "its virtual LAPIC")  # fmt: skip
            if v.own_pcpu:
                r.ignored("own_pcpu", "the Service VM has the first pCPU it can get")
            continue
        # checks/cpu_assignment.xsd: every VM but the Service VM needs a pCPU, no duplicates
        if not v.pcpus:
            raise r.error(f"{where}no <cpu_affinity><pcpu><pcpu_id>: assign at least one pCPU")
        if len(set(v.pcpus)) != len(v.pcpus):
            raise r.error(f"{where}<cpu_affinity> repeats a pCPU")
        for p in v.pcpus:
            if p > MAX_PCPU_ID:
                raise r.error(f"{where}pCPU {p}: the model's pCPU ids are 0 to {MAX_PCPU_ID} "
                              "(a 64-bit affinity mask, as ACRN's)")  # fmt: skip
            owners.setdefault(p, []).append(v.name)
        if v.vm_type == "RTVM" and 0 in v.pcpus:
            raise r.error(f"{where}pCPU 0 cannot be given to an RTVM (checks/cpu_assignment.xsd)")
        # ACRN's hcall_create_vm refuses LAPIC passthrough without GUEST_FLAG_RT
        if v.lapic_pt and v.vm_type != "RTVM":
            raise r.error(f"{where}<lapic_passthrough>y needs <vm_type>RTVM</vm_type>")
    for v in vms:
        if v.load_order == POST_LAUNCHED_VM:
            # The model's User VM COM1 is the device model's UART (ACRN's <vuart0>y); ACRN's
            # <console_vuart> would be the hypervisor's vUART instead
            if v.console_vuart not in (None, "None") or v.vuart0 is False:
                r.note("post_console", "<console_vuart>/<vuart0> of a post-launched VM ignored "
                       "(not modelled: its COM1 is always the device model's UART, as "
                       "<vuart0>y)")  # fmt: skip
            if v.vbootloader:
                r.ignored("vbootloader", "the device model boots the kernel directly, no OVMF")
        elif v.console_vuart == "None":
            r.ignored("console_vuart", "the model's VMs always have COM1")
        if v.load_order == SERVICE_VM:
            continue
        shared = sorted({o for p in v.pcpus for o in owners[p]} - {v.name})
        if v.own_pcpu and shared:
            raise r.error(f"VM {v.name}: <own_pcpu>y but its pCPUs are shared with {shared[0]}")


def _check_image_names(r: _Reader, table: dict[str, str], vms: list[_Vm]) -> None:
    users = [v for v in vms if v.load_order != SERVICE_VM]
    known = {v.name for v in users} | {v.kern_mod for v in users if v.kern_mod} | {"*"}
    service = {t for v in vms if v.load_order == SERVICE_VM for t in (v.name, v.kern_mod)}
    for name in table:
        if name in service - known:
            raise r.error(f"image {name}: the Service VM runs the model's built-in software")
        if name not in known:
            raise r.error(f"image {name}: no VM <name> or <kern_mod> is {name!r}")


def _user_config(r: _Reader, v: _Vm, table: dict[str, str]) -> VmConfig:
    where = f"VM {v.name}: "
    # Which image: the VM's own name, then its kernel's module tag, then the default
    source = next((k for k in (v.name, v.kern_mod, "*") if k and k in table), None)
    if source is None:
        tag = f" or --image {v.kern_mod}=PATH" if v.kern_mod else ""
        raise r.error(
            f"{where}no image: give --image {v.name}=PATH{tag} (or --image '*=PATH' "
            f"for every VM without one, or a {Path(r.file).stem}.images file)"
        )
    image = table[source]
    if not Path(image).is_file():
        raise r.error(f"{where}image not found: {image} (from {source}=)")
    # Named as a scenario script names it (guests.image_path: an absolute path): the guest
    # reads its own path at the head of its Multiboot command line
    image = str(Path(image).absolute())
    if v.memory_mb is None and not v.hpa:
        v.memory_mb = 1024  # VMtypes.xsd MemoryInfo <size> default
    # static_allocators/memory_allocator.py: the <size> is allocated anywhere, the hpa_regions
    # at their addresses; the VM has both
    memory = (v.memory_mb or 0) * MB + sum(h.size for h in v.hpa)
    if memory < 2 * MB:
        raise r.error(f"{where}{memory // MB} MB of memory: the model needs at least 2 MB")
    if v.hpa:
        r.ignored("hpa_region", "the model places VM memory in host memory itself")
    config = VmConfig(
        name=v.name,
        load_order=v.load_order,
        image=image,
        memory=memory,
        cpu_affinity=list(v.pcpus),
        cmdline=v.bootargs or "",
        vm_type=v.vm_type,
        io_completion_polling=v.polling,
        priority=v.priority,
        bvt_weight=v.bvt_weight,
        lapic_passthrough=v.lapic_pt,
    )
    if v.watched is not None:
        config.watched = v.watched
    # <virtio_devices>: the devices the VM's device model creates (acrn-dm -s options)
    config.devices = virtio_slot_options(v.name, v.devices.virtio, r.note, r.virtio_taps)
    # <pci_devs> of a pre-launched VM: passed through where the board has the device (the
    # hypervisor leaves out, with a note, a board line the model's board does not have)
    if v.load_order == PRE_LAUNCHED_VM:
        config.pci_devs = [f"{d.bdf} {d.description}".strip() for d in v.devices.pci]
    return config


def _service_config(r: _Reader, v: _Vm, vms: list[_Vm], configs, busy: bool) -> VmConfig:
    pre = {p for u in vms if u.load_order == PRE_LAUNCHED_VM for p in u.pcpus}
    # ACRN gives the Service VM every pCPU no pre-launched VM owns; the model's Service VM
    # has one vCPU, on the first of them
    pcpu = next(p for p in range(MAX_PCPU_ID + 2) if p not in pre)
    if pcpu > MAX_PCPU_ID:
        raise r.error(f"VM {v.name}: no pCPU left for the Service VM")
    words = (v.bootargs or "").split()
    if v.bootargs and words not in (["busy"], ["idle"]):
        r.ignored("bootargs", "the built-in Service VM reads only the word busy")
    users = [configs[u.name] for u in vms if u.load_order == POST_LAUNCHED_VM]
    config = service_vm(busy=busy or "busy" in words, pcpu=pcpu, user_vms=users)
    config.name = v.name
    config.bvt_weight = v.bvt_weight
    config.dm_priority_inheritance = v.dm_priority_inheritance
    if v.watched is not None:
        config.watched = v.watched
    return config


def _check_limits(r: _Reader, configs: list[VmConfig]) -> None:
    total = HV_MEMORY + sum(
        (c.memory + (2 << 20) - 1) & ~((2 << 20) - 1)
        for c in configs
        if c.load_order in (SERVICE_VM, PRE_LAUNCHED_VM)  # a User VM's RAM is the Service VM's
    )
    if total > MAX_MACHINE_MEMORY:
        raise r.error(
            f"the scenario needs {total / (1 << 30):.1f} GiB of machine memory (the Service VM "
            "with its User VMs' RAM, the pre-launched VMs, the hypervisor); the model's limit "
            f"is {MAX_MACHINE_MEMORY >> 30} GiB"
        )


# --------------------------------------------------------------------------- export
def _y(b: bool) -> str:
    return "y" if b else "n"


def _sub(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
    el = ET.SubElement(parent, tag)
    if text is not None:
        el.text = text
    return el


def _kern_mod_tags(configs: list[VmConfig]) -> dict[str, str]:
    """One <kern_mod> tag per image file (a GRUB module tag: no spaces), from its name."""
    tags: dict[str, str] = {}
    for c in configs:
        if c.load_order == SERVICE_VM or c.image in tags:
            continue
        base = re.sub(r"[^A-Za-z0-9_\-]", "_", Path(c.image).stem) or "image"
        tag, n = base, 1
        while tag in tags.values():
            n += 1
            tag = f"{base}_{n}"
        tags[c.image] = tag
    return tags


def to_xml(configs: list[VmConfig], scheduler: str = "bvt") -> tuple[str, dict[str, str]]:
    """A list of VmConfig (a scenario script's) -> (the v3 scenario XML, {kern_mod tag: image
    path}). Raises ConfigError for what the format cannot say."""
    if scheduler not in SCHEDULERS.values():
        raise ConfigError(f"export: unknown scheduler {scheduler!r}")
    tags = _kern_mod_tags(configs)
    pre_pcpus = {p for c in configs if c.load_order == PRE_LAUNCHED_VM for p in c.cpu_affinity}
    posts = [c for c in configs if c.load_order == POST_LAUNCHED_VM]
    root = ET.Element("acrn-config")
    hv = _sub(root, "hv")
    features = _sub(hv, "FEATURES")
    sched = {v: k for k, v in SCHEDULERS.items()}[scheduler]
    _sub(features, "SCHEDULER", sched)
    for i, c in enumerate(configs):
        where = f"export: VM {c.name}: "
        if not VM_NAME.fullmatch(c.name):
            raise ConfigError(f"{where}a <name> is up to 15 letters, digits, _ or -")
        if c.vm_manager:
            raise ConfigError(f"{where}VM manager commands are run-time options (--pause)")
        vm = _sub(root, "vm")
        vm.set("id", str(i))
        settings = []
        service = c.load_order == SERVICE_VM
        default_watched = not service
        if c.watched != default_watched:
            settings.append(f'watched="{_y(c.watched)}"')
        _sub(vm, "load_order", c.load_order)
        _sub(vm, "name", c.name)
        _sub(vm, "vm_type", c.vm_type)
        if service:
            _export_service(c, configs, posts, pre_pcpus, where)
            if not c.dm_priority_inheritance:
                settings.append('dm_priority_inheritance="n"')
            _sub(vm, "console_vuart", "COM Port 1")
            os_config = _sub(vm, "os_config")
            _sub(os_config, "bootargs", c.cmdline)
            if c.bvt_weight != 1:
                _sub(vm, "bvt_weight", str(c.bvt_weight))
        else:
            if c.software is not None:
                raise ConfigError(f"{where}its own software model has no XML form")
            if c.memory % MB:
                raise ConfigError(f"{where}memory {c.memory} bytes: the XML gives MB")
            if c.cmdline != " ".join(c.cmdline.split()):
                raise ConfigError(f"{where}command line {c.cmdline!r}: <bootargs> collapses "
                                  "whitespace")  # fmt: skip
            post = c.load_order == POST_LAUNCHED_VM
            _sub(vm, "console_vuart", "None" if post else "COM Port 1")
            if post:
                _sub(vm, "vuart0", "y")
                _sub(vm, "vbootloader", "n")
            memory = _sub(vm, "memory")
            _sub(memory, "size", str(c.memory // MB))
            affinity = _sub(vm, "cpu_affinity")
            for p in c.cpu_affinity:
                pcpu = _sub(affinity, "pcpu")
                _sub(pcpu, "pcpu_id", str(p))
                _sub(pcpu, "real_time_vcpu", _y(c.vm_type == "RTVM"))
            if c.lapic_passthrough:
                _sub(vm, "lapic_passthrough", "y")
            if c.io_completion_polling:
                _sub(vm, "io_completion_polling", "y")
            _sub(vm, "priority", c.priority)
            if c.bvt_weight != 1:
                _sub(vm, "bvt_weight", str(c.bvt_weight))
            os_config = _sub(vm, "os_config")
            _sub(os_config, "kern_type", "KERNEL_ELF")
            _sub(os_config, "kern_mod", tags[c.image])
            _sub(os_config, "bootargs", c.cmdline)
            if c.pci_devs:  # the board's devices passed through (the board itself: --pdev)
                devs = _sub(vm, "pci_devs")
                for d in c.pci_devs:
                    _sub(devs, "pci_dev", d)
        if settings:
            vm.insert(0, ET.ProcessingInstruction(SIM_PI, " ".join(settings)))
    ET.indent(root, "  ")
    images = {tags[img]: img for img in tags}
    head = "\n".join(
        f"<!-- image: {tag}={path} -->" for tag, path in sorted(images.items())
    )  # fmt: skip
    body = ET.tostring(root, encoding="unicode")
    return f'<?xml version="1.0" encoding="utf-8"?>\n{head}\n{body}\n', images


def _export_service(c: VmConfig, configs, posts, pre_pcpus: set[int], where: str) -> None:
    """The Service VM must be the one load() would build: the model's, for these User VMs."""
    if c.image != image_path("service_vm.elf"):
        raise ConfigError(f"{where}the XML's Service VM is the model's built-in one")
    if c.cmdline not in ("busy", "idle"):
        raise ConfigError(f"{where}the built-in Service VM's command line is busy or idle")
    pcpu = next(p for p in range(MAX_PCPU_ID + 2) if p not in pre_pcpus)
    expected = service_vm(c.cmdline == "busy", pcpu=pcpu, user_vms=posts)
    if c.cpu_affinity != expected.cpu_affinity or c.memory != expected.memory:
        raise ConfigError(
            f"{where}the XML's Service VM runs on pCPU {pcpu} with the memory its User VMs "
            f"need; this one has pCPUs {c.cpu_affinity} and {c.memory} bytes"
        )


def write_sidecar(xml_path: str | Path, images: dict[str, str]) -> Path:
    """Write the images file next to `xml_path`, paths relative to it."""
    side = sidecar_path(xml_path)
    lines = [
        f"# Guest images for {Path(xml_path).name}: NAME=PATH, NAME a <kern_mod> tag or a VM",
        "# <name> (or * for every VM without one); PATH relative to this file.",
    ]
    for tag, path in sorted(images.items()):
        rel = os.path.relpath(os.path.abspath(path), os.path.abspath(side.parent))
        lines.append(f"{tag}={rel}")
    try:
        side.write_text("\n".join(lines) + "\n")
    except OSError as e:
        raise ConfigError(f"cannot write {side}: {e.strerror}") from None
    return side
