"""CR access exits (ACRN hypervisor/arch/x86/guest/virtual_cr.c).

Only MOV to CR0 and MOV to CR4 exit, as ACRN configures the VMCS (CR3 and CR8 exiting off).
The checks are the SDM's #GP conditions (Vol. 3 §2.5, §4.1.1). Reads of CR0/CR4 do not exit and
return the real value: the read shadows are not modelled.
"""

from __future__ import annotations

from acrn_sim.sim.engine import GPR_ORDER

CR0_PE, CR0_NW, CR0_CD, CR0_PG = 1 << 0, 1 << 29, 1 << 30, 1 << 31
CR0_RESERVED = 0xFFFF_FFFF_0000_0000 | 0x1FFA_FFC0
CR4_PAE, CR4_VMXE, CR4_PCIDE = 1 << 5, 1 << 13, 1 << 17
CR4_RESERVED = 0xFFFF_FFFF_FF88_F000 | (1 << 12) | (1 << 19)
EFER_LME = 1 << 8
MSR_IA32_EFER = 0xC000_0080


def vcpu_set_cr0(vcpu, value: int) -> int:
    if value & CR0_RESERVED or (value & CR0_PG and not value & CR0_PE):
        return -1
    if value & CR0_NW and not value & CR0_CD:
        return -1
    efer = vcpu.engine.msr_read(MSR_IA32_EFER)
    if value & CR0_PG and efer & EFER_LME and not vcpu.engine.reg("cr4") & CR4_PAE:
        return -1
    vcpu.engine.set_reg("cr0", value)
    vcpu.engine.flush_blocks()  # the code size of cached blocks may have changed
    return 0


def vcpu_set_cr4(vcpu, value: int) -> int:
    # ACRN refuses CR4.VMXE without nested virtualization, and PCIDE is not exposed here.
    if value & (CR4_RESERVED | CR4_VMXE | CR4_PCIDE):
        return -1
    efer = vcpu.engine.msr_read(MSR_IA32_EFER)
    if efer & (1 << 10) and not value & CR4_PAE:  # cannot leave PAE in long mode
        return -1
    vcpu.engine.set_reg("cr4", value)
    vcpu.engine.flush_blocks()
    return 0


def cr_access_vmexit_handler(vcpu) -> int:
    qual = vcpu.exit_qualification
    cr, access, gpr = qual & 0xF, (qual >> 4) & 3, (qual >> 8) & 0xF
    if access != 0:
        return -1  # ACRN handles only MOV to CR (its handler asserts on the rest)
    value = vcpu.engine.reg(GPR_ORDER[gpr])
    if cr == 0:
        return vcpu_set_cr0(vcpu, value)
    if cr == 4:
        return vcpu_set_cr4(vcpu, value)
    return -1
