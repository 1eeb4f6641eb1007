"""The I/O exit handlers (ACRN hypervisor/arch/x86/guest/vmx_io.c): they decode the access
into an I/O request (hv/dm/io_req.py IoReq), have it emulated (emulate_io decides where), and
put the result into the vCPU.
"""

from __future__ import annotations

from acrn_sim.hv import public as P
from acrn_sim.hv.dm.io_req import ALL_ONES, IoReq, emulate_io
from acrn_sim.hv.guest import instr_emul
from acrn_sim.hv.guest.vmcs import VMX_GUEST_PHYSICAL_ADDR_FULL
from acrn_sim.sim import paging
from acrn_sim.sim.engine import MASK64


def pio_instr_vmexit_handler(vcpu):
    """Exit reason 30. Qualification (SDM Table 27-5): size-1 in bits 2:0, direction bit 3
    (1 = IN), string bit 4, port in bits 31:16. A generator: the request may wait for the
    Service VM."""
    q = vcpu.exit_qualification
    size, is_in, string, port = (q & 7) + 1, bool(q & 8), bool(q & 0x10), (q >> 16) & 0xFFFF
    if string:
        return -1  # INS/OUTS: not modelled
    rax = vcpu.engine.reg("rax")
    req = IoReq(
        vcpu,
        P.ACRN_IOREQ_TYPE_PORTIO,
        P.ACRN_IOREQ_DIR_READ if is_in else P.ACRN_IOREQ_DIR_WRITE,
        port,
        size,
        0 if is_in else rax & ALL_ONES[size],
        vcpu.exit_start,
        "pio_instr_vmexit_handler",
    )
    wait = emulate_io(vcpu, req)
    if wait is not None:  # the request goes to the Service VM
        yield from wait
    if is_in:
        # emulate_pio_complete: merged under the access size, the rest of RAX kept
        mask = ALL_ONES[size]
        vcpu.engine.set_reg("rax", (rax & ~mask & MASK64) | (req.value & mask))
    return 0


def ept_violation_vmexit_handler(vcpu):
    """Exit reason 48: an access to a GPA the EPT does not map is MMIO. Qualification (SDM
    Table 27-7): bit 0 read, bit 1 write, bit 2 fetch, bits 5:3 the EPT entry's R/W/X. The
    instruction is decoded (instr_emul.py); a read is sent first and the instruction emulated
    with the answer (emulate_mmio_complete); a write is emulated first to find the value, then
    sent; a read-modify-write sends both, as ACRN's instruction emulation does."""
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
    size = d.size
    vcpu.inst_len = d.length  # the decoder sets the length to skip (ACRN)
    if d.op == "movs":  # which side is the device: the access that faulted (qualification)
        d.kind = instr_emul.WRITE if q & 2 else instr_emul.READ
    value = 0
    if d.kind in (instr_emul.READ, instr_emul.RMW):
        read = IoReq(
            vcpu,
            P.ACRN_IOREQ_TYPE_MMIO,
            P.ACRN_IOREQ_DIR_READ,
            gpa,
            size,
            0,
            vcpu.exit_start,
            "ept_violation_vmexit_handler",
        )
        wait = emulate_io(vcpu, read)
        if wait is not None:
            yield from wait
        value = read.value
    written: list[int] = []
    instr_emul.emulate(vcpu, d, lambda: value, written.append)
    if written:
        write = IoReq(
            vcpu,
            P.ACRN_IOREQ_TYPE_MMIO,
            P.ACRN_IOREQ_DIR_WRITE,
            gpa,
            size,
            written[0],
            vcpu.env.now if d.kind == instr_emul.RMW else vcpu.exit_start,
            "ept_violation_vmexit_handler",
        )
        wait = emulate_io(vcpu, write)
        if wait is not None:
            yield from wait
    return 0
