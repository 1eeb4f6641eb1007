"""The hypervisor's public ABI: what ACRN puts in hypervisor/include/public/acrn_common.h and
acrn_hv_defs.h, shared with the Service VM's software (HSM, the device model) as those headers
are. Layouts, IDs and state values are ACRN's (those two headers, hypervisor/include/public/).

Everything here works on bytes in memory, so the hypervisor and the Service VM's software
read and write the very same bytes.
"""

from __future__ import annotations

import struct
import sys
from dataclasses import dataclass

from acrn_sim.sim.bootproto import BootState
from acrn_sim.sim.engine import GPR_ORDER

# ---- hypercall IDs (acrn_hv_defs.h): (0x80 << 24) | offset
HC_ID_BASE = 0x8000_0000
HC_GET_API_VERSION = HC_ID_BASE | 0x00
HC_SERVICE_VM_OFFLINE_CPU = HC_ID_BASE | 0x01
HC_SET_CALLBACK_VECTOR = HC_ID_BASE | 0x02
HC_CREATE_VM = HC_ID_BASE | 0x10
HC_DESTROY_VM = HC_ID_BASE | 0x11
HC_START_VM = HC_ID_BASE | 0x12
HC_PAUSE_VM = HC_ID_BASE | 0x13
HC_CREATE_VCPU = HC_ID_BASE | 0x14
HC_RESET_VM = HC_ID_BASE | 0x15
HC_SET_VCPU_REGS = HC_ID_BASE | 0x16
HC_INJECT_MSI = HC_ID_BASE | 0x23
HC_SET_IRQLINE = HC_ID_BASE | 0x25
HC_SET_IOREQ_BUFFER = HC_ID_BASE | 0x30
HC_NOTIFY_REQUEST_FINISH = HC_ID_BASE | 0x31
HC_VM_SET_MEMORY_REGIONS = HC_ID_BASE | 0x42
# PCI device passthrough (acrn_hv_defs.h: HC_ID_PCI_BASE 0x50; ASSIGN/DEASSIGN_PCIDEV)
HC_ASSIGN_PCIDEV = HC_ID_BASE | 0x55
HC_DEASSIGN_PCIDEV = HC_ID_BASE | 0x56
# Not ACRN's: the simulator's VM manager pauses and resumes one vCPU (ACRN has pause_vcpu and
# resume_vcpu inside the hypervisor, but no hypercall for them). p1 = vmid, p2 = vcpu id.
HC_SIM_PAUSE_VCPU = HC_ID_BASE | 0xF0
HC_SIM_RESUME_VCPU = HC_ID_BASE | 0xF1
HC_NAMES = {v: k for k, v in globals().items() if k.startswith("HC_") and isinstance(v, int)}
HC_NAMES.pop(HC_ID_BASE, None)
HC_NAMES[HC_GET_API_VERSION] = "HC_GET_API_VERSION"

# ---- the IOREQ page (acrn_common.h)
ACRN_IO_REQUEST_MAX = 16
IOREQ_SLOT_SIZE = 256
ACRN_IOREQ_TYPE_PORTIO, ACRN_IOREQ_TYPE_MMIO, ACRN_IOREQ_TYPE_PCICFG, ACRN_IOREQ_TYPE_WP = (
    0,
    1,
    2,
    3,
)
ACRN_IOREQ_STATE_PENDING, ACRN_IOREQ_STATE_COMPLETE = 0, 1
ACRN_IOREQ_STATE_PROCESSING, ACRN_IOREQ_STATE_FREE = 2, 3
ACRN_IOREQ_DIR_READ, ACRN_IOREQ_DIR_WRITE = 0, 1
IOREQ_TYPE_NAMES = {0: "PORTIO", 1: "MMIO", 2: "PCICFG", 3: "WP"}
STATE_NAMES = {0: "PENDING", 1: "COMPLETE", 2: "PROCESSING", 3: "FREE"}
# offsets in struct acrn_io_request
OFF_TYPE, OFF_COMPLETION_POLLING, OFF_REQS, OFF_KERNEL_HANDLED, OFF_PROCESSED = 0, 4, 64, 132, 136
OFF_MODEL_REQ_ID = 8  # reserved0[0]: the model's request id (see IoRequest)
# offsets in the reqs union (pio, mmio and pci share direction@0, size@16, value@24)
REQ_DIRECTION, REQ_ADDRESS, REQ_SIZE, REQ_VALUE = 0, 8, 16, 24
PCI_BUS, PCI_DEV, PCI_FUNC, PCI_REG = 28, 32, 36, 40

HYPERVISOR_CALLBACK_HSM_VECTOR = 0xF3

# ---- guest flags (acrn_common.h)
GUEST_FLAG_SECURE_WORLD_ENABLED = 1 << 0
GUEST_FLAG_LAPIC_PASSTHROUGH = 1 << 1
GUEST_FLAG_IO_COMPLETION_POLLING = 1 << 2
GUEST_FLAG_RT = 1 << 4

# ---- memory regions (HC_VM_SET_MEMORY_REGIONS)
MR_ADD, MR_DEL, MR_MODIFY = 0, 2, 3
MEM_ACCESS_READ, MEM_ACCESS_WRITE, MEM_ACCESS_EXEC = 0x1, 0x2, 0x4
MEM_ACCESS_RWX = 0x7
MEM_TYPE_WB, MEM_TYPE_WT, MEM_TYPE_UC, MEM_TYPE_WC, MEM_TYPE_WP = 0x40, 0x80, 0x100, 0x200, 0x400

# ---- HC_SET_IRQLINE ops
GSI_SET_HIGH, GSI_SET_LOW, GSI_RAISING_PULSE, GSI_FALLING_PULSE = 0, 1, 2, 3


def _u32_field(off: int, doc: str) -> property:
    """A 32-bit field of the slot at byte `off`, read and written as one word of the slot's
    memory (IoRequest._u32). A write is announced to whoever polls that memory."""
    index = off >> 2

    def get(self: IoRequest) -> int:
        return self._u32[index]

    def set(self: IoRequest, v: int) -> None:
        self._u32[index] = v & 0xFFFF_FFFF
        if self.page.watches:  # someone polls this memory (polling mode)
            self.page.wrote(self.base + off, 4)

    return property(get, set, doc=doc)


class IoRequest:
    """One 256-byte slot of the IOREQ page, read and written as bytes in host memory.

    Both sides resolve the page once, as ACRN and Linux do: the hypervisor keeps the page's
    host address from HC_SET_IOREQ_BUFFER (vm->sw.io_shared_page), HSM keeps its kernel
    mapping of the buffer it pinned (vm->ioreq_buf). So a slot is a view of the page (a
    sim.hostmem.MemWindow) at its offset; every access reads or writes those bytes.

    The model's only addition to ACRN's layout: the hypervisor writes the request's id (its
    IOREQ number in the run) into the first word of reserved0, which ACRN leaves zero, so that
    the Service VM's side can stamp the request's step record (a measuring instrument)."""

    def __init__(self, page, vcpu_id: int) -> None:
        self.page = page
        self.base = vcpu_id * IOREQ_SLOT_SIZE  # offset in the page
        self.vcpu_id = vcpu_id
        self._view = page.view(self.base, IOREQ_SLOT_SIZE)
        # The same bytes as native words: little-endian, as acrn_common.h's (checked below)
        self._u32 = self._view.cast("I")
        self._u64 = self._view.cast("Q")

    # Each field is one read or write of the slot's bytes, as a 32- or 64-bit word of the
    # views `_u32` and `_u64`. Word indexes are byte offsets >> 2 and >> 3.
    processed = _u32_field(OFF_PROCESSED, "the slot's state (ACRN_IOREQ_STATE_*)")
    kernel_handled = _u32_field(OFF_KERNEL_HANDLED, "1: HSM's kernel client handles it")
    _type = _u32_field(OFF_TYPE, "ACRN_IOREQ_TYPE_*")
    _value32 = _u32_field(OFF_REQS + REQ_VALUE, "the PIO or PCI value")

    @property
    def req_id(self) -> int:
        """The request's id (the model's tag in reserved0, see the class docstring)."""
        return self._u32[OFF_MODEL_REQ_ID >> 2]

    @property
    def state_address(self) -> int:
        """The host address of the state word, for a watch (the hypervisor's polling)."""
        return self.page.address(self.base + OFF_PROCESSED)

    @property
    def completion_polling(self) -> bool:
        return bool(self._u32[OFF_COMPLETION_POLLING >> 2])

    def request(self) -> tuple[int, int, int, int]:
        """(type, direction, address, size): what a handler looks at first, in one read (the
        only reader of those four fields)."""
        return _ACCESS.unpack_from(self._view, OFF_TYPE)  # type: ignore[return-value]

    @property
    def value(self) -> int:
        # pio/pci values are 32-bit, mmio 64-bit (acrn_common.h)
        if self._u32[OFF_TYPE >> 2] == ACRN_IOREQ_TYPE_MMIO:
            return self._u64[(OFF_REQS + REQ_VALUE) >> 3]
        return self._u32[(OFF_REQS + REQ_VALUE) >> 2]

    @value.setter
    def value(self, v: int) -> None:
        if self._u32[OFF_TYPE >> 2] == ACRN_IOREQ_TYPE_MMIO:
            self._u64[(OFF_REQS + REQ_VALUE) >> 3] = v & (2**64 - 1)
            if self.page.watches:
                self.page.wrote(self.base + OFF_REQS + REQ_VALUE, 8)
        else:
            self._value32 = v

    def pci_bdf_reg(self) -> tuple[int, int, int, int]:
        return _PCI.unpack_from(self._view, OFF_REQS + PCI_BUS)  # type: ignore[return-value]

    def fill(
        self,
        rtype: int,
        direction: int,
        address: int,
        size: int,
        value: int,
        polling: bool,
        req_id: int,
    ) -> None:
        """What acrn_insert_request copies in (type, reqs), before the state goes PENDING."""
        self._view[OFF_REQS : OFF_REQS + 64] = bytes(64)
        _REQ.pack_into(self._view, OFF_REQS, direction, 0, address, size, value & (2**64 - 1))
        _HEAD.pack_into(self._view, OFF_TYPE, rtype, 1 if polling else 0)
        self._u32[OFF_MODEL_REQ_ID >> 2] = req_id & 0xFFFF_FFFF
        self._u32[OFF_KERNEL_HANDLED >> 2] = 0
        if self.page.watches:
            self.page.wrote(self.base, OFF_KERNEL_HANDLED + 4)  # not the state: still FREE

    def set_pci(self, bus: int, dev: int, func: int, reg: int) -> None:
        """HSM turns a 0xCFC access into PCICFG: the first 28 bytes keep the PIO layout."""
        _PCI.pack_into(self._view, OFF_REQS + PCI_BUS, bus, dev, func, reg)
        self.page.wrote(self.base + OFF_REQS + PCI_BUS, _PCI.size)
        self._type = ACRN_IOREQ_TYPE_PCICFG


if sys.byteorder != "little":  # IoRequest reads the slot's words in the host's byte order
    raise ImportError("acrn-sim needs a little-endian host (the IOREQ page is little-endian)")
_REQ = struct.Struct("<IIQQQ")  # direction, reserved, address, size, value
_HEAD = struct.Struct("<II")  # type, completion_polling
_PCI = struct.Struct("<IIII")  # bus, dev, func, reg
# type @0, then (skipping to reqs @64) direction @64, address @72, size @80
_ACCESS = struct.Struct(f"<I{OFF_REQS + REQ_DIRECTION - 4}xI4xQQ")
assert _ACCESS.size == OFF_REQS + REQ_SIZE + 8


# ---- struct acrn_vm_creation {u16 vmid, rsvd, u16 vcpu_num, rsvd, name[16], u64 vm_flag,
#      u64 ioreq_buf, u64 cpu_affinity}
VM_CREATION = struct.Struct("<HHHH16sQQQ")


@dataclass
class VmCreation:
    name: str
    vm_flag: int
    ioreq_buf: int
    cpu_affinity: int
    vmid: int = 0xFFFF
    vcpu_num: int = 0

    def pack(self) -> bytes:
        return VM_CREATION.pack(
            self.vmid,
            0,
            self.vcpu_num,
            0,
            self.name.encode()[:15],
            self.vm_flag,
            self.ioreq_buf,
            self.cpu_affinity,
        )

    @classmethod
    def unpack(cls, data: bytes) -> VmCreation:
        vmid, _, vcpu_num, _, name, flag, buf, aff = VM_CREATION.unpack(data[: VM_CREATION.size])
        return cls(name.rstrip(b"\0").decode(errors="replace"), flag, buf, aff, vmid, vcpu_num)


# ---- struct set_regions {u16 vmid, u16 rsvd[3], u32 mr_num, u32 rsvd, u64 regions_gpa}
SET_REGIONS = struct.Struct("<H6xIIQ")
# ---- struct vm_memory_region {u32 type, u32 prot, u64 gpa, u64 service_vm_gpa, u64 size}
VM_MEMORY_REGION = struct.Struct("<IIQQQ")

# ---- struct acrn_pcidev {u32 type, u16 virt_bdf, u16 phys_bdf, u8 intr_line, u8 intr_pin,
#      u32 bar[6]} (acrn_common.h; ACRN_PCI_NUM_BARS 6): the BDFs are bus << 8 | dev << 3 |
#      func; bar[] holds the BARs' guest addresses the device model placed
ACRN_PCI_NUM_BARS = 6
ACRN_PTDEV_QUIRK_ASSIGN = 1 << 0
ACRN_PCIDEV = struct.Struct("<IHHBB2x6I")


@dataclass
class AcrnPcidev:
    virt_bdf: int
    phys_bdf: int
    bars: tuple[int, ...] = (0,) * ACRN_PCI_NUM_BARS
    intr_line: int = 0
    intr_pin: int = 0
    type: int = 0

    def pack(self) -> bytes:
        return ACRN_PCIDEV.pack(self.type, self.virt_bdf, self.phys_bdf, self.intr_line,
                                self.intr_pin, *self.bars)  # fmt: skip

    @classmethod
    def unpack(cls, data: bytes) -> AcrnPcidev:
        t, vbdf, pbdf, line, pin, *bars = ACRN_PCIDEV.unpack(data[: ACRN_PCIDEV.size])
        return cls(vbdf, pbdf, tuple(bars), line, pin, t)


# ---- struct acrn_vcpu_regs {u16 vcpu_id, u16 rsvd[3], struct acrn_regs} (300 bytes + pad)
GPR_NAMES = GPR_ORDER  # struct acrn_gp_regs keeps the GPRs in ModRM order
SEL_NAMES = ("cs", "ss", "ds", "es", "fs", "gs", "ldt", "tr")
VCPU_REGS = struct.Struct("<H6x16QHQ6xHQ6x7Q32xII12x8H8x")
VCPU_REGS_SIZE = VCPU_REGS.size  # 304 with the 8-byte alignment


def pack_vcpu_regs(vcpu_id: int, state) -> bytes:
    """struct acrn_vcpu_regs from a sim.bootproto.BootState."""
    gprs = [state.gprs.get(n, 0) for n in GPR_NAMES]
    sels = [state.selectors.get(n, 0) for n in SEL_NAMES]
    return VCPU_REGS.pack(
        vcpu_id,
        *gprs,
        state.gdt[1],
        state.gdt[0],
        state.idt[1],
        state.idt[0],
        state.rip,
        0,
        state.cr0,
        state.cr4,
        state.cr3,
        state.ia32_efer,
        state.rflags,
        0,
        0,
        *sels,
    )


def unpack_vcpu_regs(data: bytes):
    """(vcpu_id, BootState) from struct acrn_vcpu_regs."""
    v = VCPU_REGS.unpack(data[:VCPU_REGS_SIZE])
    vcpu_id, gprs = v[0], dict(zip(GPR_NAMES, v[1:17], strict=True))
    gdt_limit, gdt_base, idt_limit, idt_base = v[17:21]
    rip, _cs_base, cr0, cr4, cr3, efer, rflags = v[21:28]
    sels = dict(zip(SEL_NAMES, v[30:38], strict=True))
    state = BootState(
        gprs=gprs,
        gdt=(gdt_base, gdt_limit),
        idt=(idt_base, idt_limit),
        rip=rip,
        cr0=cr0,
        cr3=cr3,
        cr4=cr4,
        ia32_efer=efer,
        rflags=rflags,
        selectors={k: sels[k] for k in ("cs", "ss", "ds", "es")},
    )
    return vcpu_id, state
