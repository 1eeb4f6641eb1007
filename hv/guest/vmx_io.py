"""I/O emulation (ACRN hypervisor/dm/io_req.c, arch/x86/guest/vmx_io.c).

Each VM has a table of hypervisor-emulated port ranges (vm->emul_pio) and MMIO ranges
(vm->emul_mmio). An access fully inside a range goes to its handler; one that straddles a range
boundary is dropped (-EIO). With no handler, the Service VM and pre-launched VMs get the default:
reads return all ones, writes are ignored. Post-launched VMs send the request to the Service VM
instead (the IOREQ path; see `IoEmul.fallback`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from hv import public as P
from hv.dm import io_req
from hv.guest import instr_emul
from hv.guest.vmcs import VMX_GUEST_PHYSICAL_ADDR_FULL
from sim import paging
from sim.engine import MASK64

PioRead = Callable[[object, int, int], int]  # (vcpu, port, size) -> value
PioWrite = Callable[[object, int, int, int], None]  # (vcpu, port, size, value)


@dataclass(frozen=True)
class IoRange:
    name: str
    base: int
    length: int
    read: PioRead
    write: PioWrite


def all_ones(size: int) -> int:
    return MASK64 >> (64 - 8 * size)


class IoEmul:
    def __init__(self) -> None:
        self.pio: list[IoRange] = []
        self.mmio: list[IoRange] = []
        # Set for post-launched VMs: where unclaimed requests go (the Service VM, via IOREQ).
        self.fallback = None

    def register_pio(self, name: str, base: int, length: int, read: PioRead, write: PioWrite):
        self.pio.append(IoRange(name, base, length, read, write))

    def register_mmio(self, name: str, base: int, length: int, read: PioRead, write: PioWrite):
        self.mmio.append(IoRange(name, base, length, read, write))

    def find(self, table: list[IoRange], addr: int, size: int) -> IoRange | None | bool:
        """The range that covers the access; False if it straddles a boundary; None if none."""
        end = addr + size
        for r in table:
            base = r.base
            if base < end and addr < base + r.length:  # they overlap
                return r if base <= addr and end <= base + r.length else False
        return None

    def claims_pio(self, port: int) -> bool:
        return bool(self.find(self.pio, port, 1))


def emulate_access(vcpu, table: list[IoRange], addr: int, size: int, is_read: bool, value: int):
    """hv_emulate_pio/hv_emulate_mmio: returns the value read (or None for a write)."""
    r = vcpu.vm.io.find(table, addr, size)
    if not r:  # no handler (the default), or one crossed at its boundary (-EIO): both give
        return all_ones(size) if is_read else None  # all ones to a read, drop a write
    if is_read:
        return r.read(vcpu, addr, size) & all_ones(size)
    r.write(vcpu, addr, size, value & all_ones(size))
    return None


def pio_instr_vmexit_handler(vcpu):
    """Exit reason 30 (ACRN pio_instr_vmexit_handler). Qualification (SDM Table 27-5):
    size-1 in bits 2:0, direction bit 3 (1 = IN), string bit 4, port in bits 31:16.
    A generator: a post-launched VM's unclaimed port waits for the Service VM (IOREQ)."""
    q = vcpu.exit_qualification
    size, is_in, string, port = (q & 7) + 1, bool(q & 8), bool(q & 0x10), (q >> 16) & 0xFFFF
    if string:
        return -1  # INS/OUTS: not modelled
    rax = vcpu.engine.reg("rax")
    vm = vcpu.vm
    if vm.is_post_launched and vm.io.find(vm.io.pio, port, size) is None:
        value = yield from io_req.emulate_via_service_vm(
            vcpu,
            P.ACRN_IOREQ_TYPE_PORTIO,
            port,
            size,
            P.ACRN_IOREQ_DIR_READ if is_in else P.ACRN_IOREQ_DIR_WRITE,
            0 if is_in else rax & all_ones(size),
            vcpu.exit_start,
        )
    else:
        value = emulate_access(vcpu, vm.io.pio, port, size, is_in, rax)
    if is_in:
        # ACRN emulate_pio_complete merges under the access size and keeps the rest of RAX.
        mask = all_ones(size)
        vcpu.engine.set_reg("rax", (rax & ~mask & MASK64) | (value & mask))
    return 0


def ept_violation_vmexit_handler(vcpu):
    """Exit reason 48 (ACRN ept_violation_vmexit_handler, vmx_io.c): an access to a GPA the EPT
    does not map is MMIO. Qualification (SDM Table 27-7): bit 0 read, bit 1 write, bit 2
    fetch, bits 5:3 the EPT entry's R/W/X. The instruction is decoded (instr_emul.py); a write
    is emulated first to find the value, then sent; a read is sent first, then emulated with
    the device's answer (ACRN_FACTS §2.3). A generator: a post-launched VM's MMIO that no
    hypervisor handler claims waits for the Service VM (IOREQ, type MMIO)."""
    q = vcpu.exit_qualification
    gpa = vcpu.vmcs.read(VMX_GUEST_PHYSICAL_ADDR_FULL)
    if q & 4:
        vcpu.vm.crash(vcpu, f"instruction fetch from unmapped GPA {gpa:#x}")
        return 0
    try:
        d = instr_emul.decode(vcpu)
    except instr_emul.DecodeError:
        vcpu.queue_exception(6)  # decode failure: #UD, as ACRN
        return 0
    except paging.PageFault as pf:
        instr_emul.fault_to_guest(vcpu, pf)
        return 0
    vm = vcpu.vm
    size = d.size
    vcpu.inst_len = d.length  # the decoder sets the length to skip (ACRN)
    if d.op == "movs":  # which side is the device: the access that faulted (qualification)
        d.kind = instr_emul.WRITE if q & 2 else instr_emul.READ
    if not (vm.is_post_launched and vm.io.find(vm.io.mmio, gpa, size) is None):
        instr_emul.emulate(
            vcpu,
            d,
            lambda: emulate_access(vcpu, vm.io.mmio, gpa, size, True, 0),
            lambda value: emulate_access(vcpu, vm.io.mmio, gpa, size, False, value),
        )
        return 0
    # Through the Service VM: a read is sent first and the instruction emulated with the
    # answer; a write is emulated first to find the value, then sent; a read-modify-write
    # sends both.
    value = 0
    if d.kind in (instr_emul.READ, instr_emul.RMW):
        value = yield from io_req.emulate_via_service_vm(
            vcpu, P.ACRN_IOREQ_TYPE_MMIO, gpa, size, P.ACRN_IOREQ_DIR_READ, 0, vcpu.exit_start
        )
    written = []
    instr_emul.emulate(vcpu, d, lambda: value, written.append)
    if written:
        yield from io_req.emulate_via_service_vm(
            vcpu,
            P.ACRN_IOREQ_TYPE_MMIO,
            gpa,
            size,
            P.ACRN_IOREQ_DIR_WRITE,
            written[0],
            vcpu.now_cycles() if d.kind == instr_emul.RMW else vcpu.exit_start,
        )
    return 0
