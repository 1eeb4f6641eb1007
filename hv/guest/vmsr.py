"""MSR emulation (ACRN hypervisor/arch/x86/guest/vmsr.c).

ACRN's MSR bitmap (init_msr_emulation) intercepts the MSRs it emulates (emulated_guest_msrs,
the fixed-range MTRRs, the x2APIC range, the performance counters) and the ones it refuses
(unsupported_msrs); every other MSR reaches the processor. The processor modelled here is a
synthetic one (hv/guest/vcpuid.py), whose own MSRs are the ones its CPUID promises:
- PASSTHROUGH_MSRS: not intercepted, no VM exit. SYSCALL's STAR, LSTAR, CSTAR and FMASK,
  SYSENTER's CS, ESP and EIP, FS_BASE, GS_BASE, KERNEL_GS_BASE and TSC_AUX, which VMX switches
  with the guest state (ACRN keeps them in the vCPU's context), and a read of the TSC. Unicorn
  holds them; a WRMSR of a non-canonical address to one that takes an address is #GP(0), as on
  the processor (SDM Vol. 2B WRMSR; Vol. 4 Table 2-2).
- emulated here, on a VM exit, as vmsr.c does: TSC, TSC_ADJUST, TSC_DEADLINE, APIC_BASE, PAT,
  EFER, MISC_ENABLE, FEATURE_CONTROL (locked, VMX off), BIOS_SIGN_ID (a fixed microcode
  version; writes ignored), BIOS_UPDT_TRIG (writes ignored for a VM other than the Service VM),
  PERF_STATUS and PERF_CTL, MCG_CAP and MCG_STATUS (0; no machine-check banks),
  PLATFORM_INFO (0 for a VM other than the Service VM), the MTRR capability, default type and
  fixed ranges (vmtrr.c: fixed ranges only, all write-back, default type UC), and the x2APIC
  range through the vLAPIC.
Any other MSR gets #GP(0): ACRN's -EACCES path for the intercepted ones, the processor's own
#GP for MSRs it does not have.
"""

from __future__ import annotations

from acrn_sim.hv.guest.vmcs import VMX_TSC_OFFSET_FULL

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
MSR_IA32_FEATURE_CONTROL = 0x3A
MSR_IA32_BIOS_UPDT_TRIG = 0x79
MSR_IA32_BIOS_SIGN_ID = 0x8B
MSR_PLATFORM_INFO = 0xCE
MSR_IA32_MTRR_CAP = 0xFE
MSR_IA32_SYSENTER_CS, MSR_IA32_SYSENTER_ESP, MSR_IA32_SYSENTER_EIP = 0x174, 0x175, 0x176
MSR_IA32_MCG_CAP, MSR_IA32_MCG_STATUS = 0x179, 0x17A
MSR_IA32_PERF_STATUS, MSR_IA32_PERF_CTL = 0x198, 0x199
MSR_IA32_MTRR_DEF_TYPE = 0x2FF
MSR_IA32_MTRR_FIXED = (0x250, 0x258, 0x259, *range(0x268, 0x270))
MSR_IA32_STAR, MSR_IA32_LSTAR, MSR_IA32_CSTAR, MSR_IA32_FMASK = (
    0xC000_0081,
    0xC000_0082,
    0xC000_0083,
    0xC000_0084,
)
# Not intercepted (see the module's docstring), and those of them that hold an address
PASSTHROUGH_MSRS = frozenset(
    {
        MSR_IA32_STAR,
        MSR_IA32_LSTAR,
        MSR_IA32_CSTAR,
        MSR_IA32_FMASK,
        MSR_IA32_SYSENTER_CS,
        MSR_IA32_SYSENTER_ESP,
        MSR_IA32_SYSENTER_EIP,
        MSR_IA32_FS_BASE,
        MSR_IA32_GS_BASE,
        MSR_IA32_KERNEL_GS_BASE,
        MSR_IA32_TSC_AUX,
    }
)
_ADDRESS_MSRS = frozenset(
    {
        MSR_IA32_LSTAR,
        MSR_IA32_CSTAR,
        MSR_IA32_SYSENTER_ESP,
        MSR_IA32_SYSENTER_EIP,
        MSR_IA32_FS_BASE,
        MSR_IA32_GS_BASE,
        MSR_IA32_KERNEL_GS_BASE,
    }
)
# A fixed microcode revision (bits 63:32 of BIOS_SIGN_ID): ACRN reports the processor's own
MICROCODE_VERSION = 0x42 << 32
FEATURE_CONTROL_LOCK = 1
MISC_ENABLE_MONITOR = 1 << 18
# vmtrr.c init_vmtrr: fixed-range MTRRs only (FIX, no variable ranges), enabled, default UC,
# every fixed range write-back
MTRR_CAP_FIX = 1 << 8
MTRR_DEF_TYPE_INIT = (1 << 11) | (1 << 10)
MTRR_FIXED_ALL_WB = 0x0606_0606_0606_0606

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
        self.perf_ctl = 0
        self.mtrr_def_type = MTRR_DEF_TYPE_INIT
        self.mtrr_fixed = dict.fromkeys(MSR_IA32_MTRR_FIXED, MTRR_FIXED_ALL_WB)


def canonical(address: int) -> bool:
    """48-bit linear addresses (SDM Vol. 1 §3.3.7.1): bits 63:47 all equal."""
    top = address >> 47
    return top == 0 or top == (1 << 17) - 1


def passthrough_rdmsr(vcpu, msr: int) -> int:
    """RDMSR of an MSR the bitmap does not intercept: the processor's own value."""
    if msr == MSR_IA32_TSC_AUX:
        v = vcpu.engine.tsc_aux
    else:
        v = vcpu.engine.msr_read(msr)
    vcpu.engine.set_regs({"rax": v & 0xFFFF_FFFF, "rdx": (v >> 32) & 0xFFFF_FFFF})
    return 0


def passthrough_wrmsr(vcpu, msr: int) -> int:
    """WRMSR of an MSR the bitmap does not intercept; -1 for the processor's #GP(0)."""
    v = _split(vcpu)
    if msr in _ADDRESS_MSRS and not canonical(v):
        return -1
    if msr == MSR_IA32_TSC_AUX:
        if v >> 32:
            return -1
        vcpu.engine.tsc_aux = v
    else:
        vcpu.engine.msr_write(msr, v)
    return 0


def _perf_status(vcpu) -> int:
    """vmsr.c get_perf_status: the base-frequency ratio (to a 100 MHz bus) in bits 15:8."""
    return ((vcpu.hv.profile.tsc_hz // 100_000_000) & 0xFF) << 8


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
    elif msr == MSR_IA32_EFER:
        v = vcpu.engine.msr_read(msr)  # a guest-state field, held by the engine
    elif msr in PASSTHROUGH_MSRS:
        return passthrough_rdmsr(vcpu, msr)
    elif msr == MSR_IA32_FEATURE_CONTROL:
        v = FEATURE_CONTROL_LOCK
    elif msr == MSR_IA32_BIOS_SIGN_ID:
        v = MICROCODE_VERSION
    elif msr == MSR_IA32_PERF_STATUS:
        v = _perf_status(vcpu)
    elif msr == MSR_IA32_PERF_CTL:
        v = st.perf_ctl
    elif msr in (MSR_IA32_MCG_CAP, MSR_IA32_MCG_STATUS):
        v = 0
    elif msr == MSR_PLATFORM_INFO:
        # the Service VM reads the ratios; any other VM reads 0 "for compatibility"
        v = _perf_status(vcpu) if vcpu.vm.is_service_vm else 0
    elif msr == MSR_IA32_MTRR_CAP:
        v = MTRR_CAP_FIX
    elif msr == MSR_IA32_MTRR_DEF_TYPE:
        v = st.mtrr_def_type
    elif msr in st.mtrr_fixed:
        v = st.mtrr_fixed[msr]
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
        # set_guest_ia32_misc_enalbe: MONITOR/MWAIT is hidden, so enabling it is #GP; the
        # rest is kept (XD_DISABLE's effect on EFER.NXE is not modelled)
        if v & MISC_ENABLE_MONITOR:
            return -1
        st.misc_enable = v
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
    elif msr in PASSTHROUGH_MSRS:
        return passthrough_wrmsr(vcpu, msr)
    elif msr in (MSR_IA32_BIOS_SIGN_ID, MSR_IA32_BIOS_UPDT_TRIG, MSR_IA32_PERF_STATUS):
        pass  # ignored (a microcode update only from the Service VM, not modelled)
    elif msr == MSR_IA32_PERF_CTL:
        st.perf_ctl = v
    elif msr == MSR_IA32_MCG_STATUS:
        if v:
            return -1
    elif msr == MSR_IA32_MTRR_DEF_TYPE:
        st.mtrr_def_type = v
    elif msr in st.mtrr_fixed:
        st.mtrr_fixed[msr] = v
    else:  # MTRR_CAP, MCG_CAP and FEATURE_CONTROL are read-only: #GP like any other
        return -1
    return 0
