"""MSR emulation (ACRN hypervisor/arch/x86/guest/vmsr.c).

The MSR bitmap intercepts every MSR (simplification: ACRN passes a few through); the handlers
emulate the ones issue #2 lists. Any other MSR gets #GP(0), as ACRN's -EACCES path does.
"""

from __future__ import annotations

from hv.guest.vmcs import VMX_TSC_OFFSET_FULL

MSR_IA32_TIME_STAMP_COUNTER = 0x10
MSR_IA32_APIC_BASE = 0x1B
MSR_IA32_TSC_ADJUST = 0x3B
MSR_IA32_MISC_ENABLE = 0x1A0
MSR_IA32_PAT = 0x277
MSR_IA32_TSC_DEADLINE = 0x6E0
MSR_IA32_EFER = 0xC000_0080
MSR_IA32_FS_BASE = 0xC000_0100
MSR_IA32_GS_BASE = 0xC000_0101
MSR_IA32_KERNEL_GS_BASE = 0xC000_0102
MSR_IA32_TSC_AUX = 0xC000_0103
X2APIC_MSR_FIRST, X2APIC_MSR_LAST = 0x800, 0x8FF

APIC_BASE_DEFAULT = 0xFEE0_0000
APIC_BASE_BSP, APIC_BASE_X2APIC, APIC_BASE_ENABLE = 1 << 8, 1 << 10, 1 << 11
MISC_ENABLE_DEFAULT = 0x1 | (1 << 11) | (1 << 12)  # fast strings; BTS, PEBS unavailable
PAT_POWER_ON_VALUE = 0x0007_0406_0007_0406
EFER_WRITABLE = (1 << 0) | (1 << 8) | (1 << 11)  # SCE, LME, NXE
EFER_LMA = 1 << 10
_PAT_VALID_TYPES = {0, 1, 4, 5, 6, 7}
MASK64 = (1 << 64) - 1


class MsrState:
    """Per-vCPU values of the emulated MSRs that Unicorn does not hold itself."""

    def __init__(self, bsp: bool) -> None:
        self.apic_base = APIC_BASE_DEFAULT | APIC_BASE_ENABLE | (APIC_BASE_BSP if bsp else 0)
        self.tsc_adjust = 0
        self.tsc_deadline = 0
        self.pat = PAT_POWER_ON_VALUE
        self.misc_enable = MISC_ENABLE_DEFAULT


def _split(vcpu) -> int:
    rax, rdx = vcpu.engine.regs(["rax", "rdx"])
    return ((rdx & 0xFFFF_FFFF) << 32) | (rax & 0xFFFF_FFFF)


def rdmsr_vmexit_handler(vcpu) -> int:
    msr = vcpu.engine.reg("rcx") & 0xFFFF_FFFF
    st = vcpu.msrs
    if X2APIC_MSR_FIRST <= msr <= X2APIC_MSR_LAST:
        v = vcpu.vlapic.msr_read(msr)  # None outside x2APIC mode: #GP
        if v is None:
            return -1
    elif msr == MSR_IA32_TIME_STAMP_COUNTER:
        v = vcpu.guest_tsc()
    elif msr == MSR_IA32_TSC_ADJUST:
        v = st.tsc_adjust
    elif msr == MSR_IA32_TSC_DEADLINE:
        v = st.tsc_deadline if vcpu.vlapic.timer_due is not None else 0
    elif msr == MSR_IA32_APIC_BASE:
        v = st.apic_base
    elif msr == MSR_IA32_MISC_ENABLE:
        v = st.misc_enable
    elif msr == MSR_IA32_PAT:
        v = st.pat
    elif msr == MSR_IA32_TSC_AUX:
        v = vcpu.engine.tsc_aux
    elif msr in (MSR_IA32_EFER, MSR_IA32_FS_BASE, MSR_IA32_GS_BASE, MSR_IA32_KERNEL_GS_BASE):
        v = vcpu.engine.msr_read(msr)  # guest-state fields, held by the engine
    else:
        return -1  # -EACCES: #GP(0)
    vcpu.engine.set_regs({"rax": v & 0xFFFF_FFFF, "rdx": (v >> 32) & 0xFFFF_FFFF})
    return 0


def wrmsr_vmexit_handler(vcpu) -> int:
    msr = vcpu.engine.reg("rcx") & 0xFFFF_FFFF
    v = _split(vcpu)
    st = vcpu.msrs
    vmcs = vcpu.vmcs
    if X2APIC_MSR_FIRST <= msr <= X2APIC_MSR_LAST:
        return 0 if vcpu.vlapic.msr_write(msr, v) else -1
    if msr == MSR_IA32_TIME_STAMP_COUNTER:
        # ACRN set_guest_tsc: the offset moves so the guest reads v now; TSC_ADJUST follows.
        old_offset = vmcs.read(VMX_TSC_OFFSET_FULL)
        new_offset = (v - vcpu.host_tsc()) & MASK64
        st.tsc_adjust = (st.tsc_adjust + new_offset - old_offset) & MASK64
        vmcs.write(VMX_TSC_OFFSET_FULL, new_offset)
    elif msr == MSR_IA32_TSC_ADJUST:
        # ACRN set_guest_tsc_adjust: the delta moves the TSC offset too (SDM §17.17.3).
        delta = (v - st.tsc_adjust) & MASK64
        vmcs.write(VMX_TSC_OFFSET_FULL, (vmcs.read(VMX_TSC_OFFSET_FULL) + delta) & MASK64)
        st.tsc_adjust = v
    elif msr == MSR_IA32_TSC_DEADLINE:
        st.tsc_deadline = v
        vcpu.vlapic.write_tsc_deadline(v)
    elif msr == MSR_IA32_APIC_BASE:
        if v & ~(0xFFFF_F000 | APIC_BASE_BSP | APIC_BASE_X2APIC | APIC_BASE_ENABLE):
            return -1
        st.apic_base = (st.apic_base & APIC_BASE_BSP) | (v & ~APIC_BASE_BSP)
        vcpu.vlapic.x2apic = bool(v & APIC_BASE_X2APIC)  # xAPIC -> x2APIC switch
    elif msr == MSR_IA32_MISC_ENABLE:
        pass  # ACRN ignores writes except to a few bits it does not model here
    elif msr == MSR_IA32_PAT:
        if any(((v >> (8 * i)) & 0xFF) not in _PAT_VALID_TYPES for i in range(8)):
            return -1
        st.pat = v
    elif msr == MSR_IA32_EFER:
        if v & ~(EFER_WRITABLE | EFER_LMA):
            return -1
        cur = vcpu.engine.msr_read(MSR_IA32_EFER)
        vcpu.engine.msr_write(MSR_IA32_EFER, (v & EFER_WRITABLE) | (cur & EFER_LMA))
        vcpu.engine.flush_blocks()
    elif msr in (MSR_IA32_FS_BASE, MSR_IA32_GS_BASE, MSR_IA32_KERNEL_GS_BASE):
        vcpu.engine.msr_write(msr, v)
    elif msr == MSR_IA32_TSC_AUX:
        vcpu.engine.tsc_aux = v & 0xFFFF_FFFF
    else:
        return -1
    return 0
