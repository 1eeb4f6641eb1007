"""APIC-access exits (ACRN vlapic.c apic_access_vmexit_handler): an access to the xAPIC page is
decoded and emulated against the vLAPIC register at the qualification's offset. Only linear
data reads and writes are supported, as in ACRN."""

from __future__ import annotations

from acrn_sim.hv.guest import instr_emul
from acrn_sim.sim import paging


def apic_access_vmexit_handler(vcpu) -> int:
    q = vcpu.exit_qualification
    offset, access = q & 0xFF0, (q >> 12) & 0xF
    if access not in (0, 1):
        return -1
    try:
        d = instr_emul.decode(vcpu)
    except instr_emul.DecodeError:
        vcpu.queue_exception(6)
        return 0
    except paging.PageFault as pf:
        instr_emul.fault_to_guest(vcpu, pf)
        return 0
    vcpu.inst_len = d.length
    lapic = vcpu.vlapic
    instr_emul.emulate(vcpu, d, lambda: lapic.read(offset), lambda v: lapic.write(offset, v))
    return 0
