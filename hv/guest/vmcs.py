"""The VMCS: one per vCPU, addressed by the SDM field encodings (SDM Vol. 3 Appendix B), and
the basic exit reasons (Appendix C), with ACRN's names (hypervisor/include/arch/x86/asm/vmx.h).

Only the fields the model uses exist. The guest-state fields are filled from the engine at each
exit and written back at entry (hv/arch/vmx.py).
"""

from __future__ import annotations

from enum import IntEnum

# 16-bit
VMX_VPID = 0x0000
VMX_GUEST_CS_SEL = 0x0802
VMX_GUEST_SS_SEL = 0x0804
# 64-bit control
VMX_IO_BITMAP_A_FULL = 0x2000
VMX_IO_BITMAP_B_FULL = 0x2002
VMX_MSR_BITMAP_FULL = 0x2004
VMX_TSC_OFFSET_FULL = 0x2010
VMX_EPT_POINTER_FULL = 0x201A
# 64-bit read-only / guest state
VMX_GUEST_PHYSICAL_ADDR_FULL = 0x2400
VMX_GUEST_IA32_PAT_FULL = 0x2804
VMX_GUEST_IA32_EFER_FULL = 0x2806
# 32-bit control
VMX_PIN_VM_EXEC_CONTROLS = 0x4000
VMX_PROC_VM_EXEC_CONTROLS = 0x4002
VMX_EXCEPTION_BITMAP = 0x4004
VMX_ENTRY_INT_INFO_FIELD = 0x4016
VMX_ENTRY_EXCEPTION_ERROR_CODE = 0x4018
VMX_ENTRY_INSTR_LENGTH = 0x401A
VMX_PROC_VM_EXEC_CONTROLS2 = 0x401E
VMX_PLE_GAP = 0x4020
VMX_PLE_WINDOW = 0x4022
# 32-bit read-only
VMX_INSTR_ERROR = 0x4400
VMX_EXIT_REASON = 0x4402
VMX_EXIT_INT_INFO = 0x4404
VMX_EXIT_INT_ERROR_CODE = 0x4406
VMX_IDT_VEC_INFO_FIELD = 0x4408
VMX_IDT_VEC_ERROR_CODE = 0x440A
VMX_EXIT_INSTR_LEN = 0x440C
VMX_INSTR_INFO = 0x440E
# 32-bit guest state
VMX_GUEST_INTERRUPTIBILITY_INFO = 0x4824
VMX_GUEST_ACTIVITY_STATE = 0x4826
# natural width
VMX_CR0_GUEST_HOST_MASK = 0x6000
VMX_CR4_GUEST_HOST_MASK = 0x6002
VMX_CR0_READ_SHADOW = 0x6004
VMX_CR4_READ_SHADOW = 0x6006
VMX_EXIT_QUALIFICATION = 0x6400
VMX_GUEST_LINEAR_ADDR = 0x640A
VMX_GUEST_CR0 = 0x6800
VMX_GUEST_CR3 = 0x6802
VMX_GUEST_CR4 = 0x6804
VMX_GUEST_RSP = 0x681C
VMX_GUEST_RIP = 0x681E
VMX_GUEST_RFLAGS = 0x6820

# Every field above: a VMCS holds them all from its creation (zero), and a VMREAD of any
# other is a model bug (a KeyError).
FIELDS = (
    VMX_VPID,
    VMX_GUEST_CS_SEL,
    VMX_GUEST_SS_SEL,
    VMX_IO_BITMAP_A_FULL,
    VMX_IO_BITMAP_B_FULL,
    VMX_MSR_BITMAP_FULL,
    VMX_TSC_OFFSET_FULL,
    VMX_EPT_POINTER_FULL,
    VMX_GUEST_PHYSICAL_ADDR_FULL,
    VMX_GUEST_IA32_PAT_FULL,
    VMX_GUEST_IA32_EFER_FULL,
    VMX_PIN_VM_EXEC_CONTROLS,
    VMX_PROC_VM_EXEC_CONTROLS,
    VMX_EXCEPTION_BITMAP,
    VMX_ENTRY_INT_INFO_FIELD,
    VMX_ENTRY_EXCEPTION_ERROR_CODE,
    VMX_ENTRY_INSTR_LENGTH,
    VMX_PROC_VM_EXEC_CONTROLS2,
    VMX_PLE_GAP,
    VMX_PLE_WINDOW,
    VMX_INSTR_ERROR,
    VMX_EXIT_REASON,
    VMX_EXIT_INT_INFO,
    VMX_EXIT_INT_ERROR_CODE,
    VMX_IDT_VEC_INFO_FIELD,
    VMX_IDT_VEC_ERROR_CODE,
    VMX_EXIT_INSTR_LEN,
    VMX_INSTR_INFO,
    VMX_GUEST_INTERRUPTIBILITY_INFO,
    VMX_GUEST_ACTIVITY_STATE,
    VMX_CR0_GUEST_HOST_MASK,
    VMX_CR4_GUEST_HOST_MASK,
    VMX_CR0_READ_SHADOW,
    VMX_CR4_READ_SHADOW,
    VMX_EXIT_QUALIFICATION,
    VMX_GUEST_LINEAR_ADDR,
    VMX_GUEST_CR0,
    VMX_GUEST_CR3,
    VMX_GUEST_CR4,
    VMX_GUEST_RSP,
    VMX_GUEST_RIP,
    VMX_GUEST_RFLAGS,
)

# Primary processor-based controls (SDM Table 24-6)
VMX_PROCBASED_CTLS_IRQ_WIN = 1 << 2
VMX_PROCBASED_CTLS_TSC_OFF = 1 << 3
VMX_PROCBASED_CTLS_HLT = 1 << 7
VMX_PROCBASED_CTLS_RDPMC = 1 << 11
VMX_PROCBASED_CTLS_NMI_WINEXIT = 1 << 22
VMX_PROCBASED_CTLS_IO_BITMAP = 1 << 25
VMX_PROCBASED_CTLS_MSR_BITMAP = 1 << 28
VMX_PROCBASED_CTLS_MWAIT = 1 << 10
VMX_PROCBASED_CTLS_MONITOR = 1 << 29
VMX_PROCBASED_CTLS_SECONDARY = 1 << 31
# Secondary controls (SDM Table 24-7)
VMX_PROCBASED_CTLS2_EPT = 1 << 1
VMX_PROCBASED_CTLS2_WBINVD = 1 << 6
VMX_PROCBASED_CTLS2_UNRESTRICT = 1 << 7
VMX_PROCBASED_CTLS2_PAUSE_LOOP = 1 << 10
# Pin-based
VMX_PINBASED_CTLS_IRQ_EXIT = 1 << 0

# Interruption-information fields (SDM §24.8.3, §24.9.2)
VMX_INT_INFO_VALID = 1 << 31
VMX_INT_INFO_ERR_CODE_VALID = 1 << 11
# Interruptibility state bits (SDM Table 24-3)
VMX_INT_STATE_STI_BLOCKING = 1 << 0
VMX_INT_STATE_MOVSS_BLOCKING = 1 << 1
VMX_INT_STATE_NMI_BLOCKING = 1 << 3  # (virtual-)NMI blocking, until the next IRET


class ExitReason(IntEnum):
    EXCEPTION_OR_NMI = 0
    EXTERNAL_INTERRUPT = 1
    TRIPLE_FAULT = 2
    INIT_SIGNAL = 3
    STARTUP_IPI = 4
    IO_SMI = 5
    OTHER_SMI = 6
    INTERRUPT_WINDOW = 7
    NMI_WINDOW = 8
    TASK_SWITCH = 9
    CPUID = 10
    GETSEC = 11
    HLT = 12
    INVD = 13
    INVLPG = 14
    RDPMC = 15
    RDTSC = 16
    RSM = 17
    VMCALL = 18
    VMCLEAR = 19
    VMLAUNCH = 20
    VMPTRLD = 21
    VMPTRST = 22
    VMREAD = 23
    VMRESUME = 24
    VMWRITE = 25
    VMXOFF = 26
    VMXON = 27
    CR_ACCESS = 28
    DR_ACCESS = 29
    IO_INSTRUCTION = 30
    RDMSR = 31
    WRMSR = 32
    ENTRY_FAILURE_INVALID_GUEST_STATE = 33
    ENTRY_FAILURE_MSR_LOADING = 34
    MWAIT = 36
    MONITOR_TRAP = 37
    MONITOR = 39
    PAUSE = 40
    ENTRY_FAILURE_MACHINE_CHECK = 41
    TPR_BELOW_THRESHOLD = 43
    APIC_ACCESS = 44
    VIRTUALIZED_EOI = 45
    GDTR_IDTR_ACCESS = 46
    LDTR_TR_ACCESS = 47
    EPT_VIOLATION = 48
    EPT_MISCONFIGURATION = 49
    INVEPT = 50
    RDTSCP = 51
    VMX_PREEMPTION_TIMER = 52
    INVVPID = 53
    WBINVD = 54
    XSETBV = 55
    APIC_WRITE = 56
    RDRAND = 57
    INVPCID = 58
    VMFUNC = 59
    ENCLS = 60
    RDSEED = 61
    PML_FULL = 62
    XSAVES = 63
    XRSTORS = 64
    LOADIWKEY = 69


NR_VMX_EXIT_REASONS = 70  # ACRN vmexit.c


class Vmcs:
    """Field storage by encoding (FIELDS). VMREAD/VMWRITE of an unknown field is a model bug."""

    def __init__(self) -> None:
        # Hot paths read `fields[encoding]` directly: a VMREAD without the call.
        self.fields: dict[int, int] = dict.fromkeys(FIELDS, 0)

    def read(self, field: int) -> int:
        return self.fields[field]

    def write(self, field: int, value: int) -> None:
        self.fields[field] = value

    def set_bits(self, field: int, bits: int) -> None:
        self.fields[field] |= bits

    def clear_bits(self, field: int, bits: int) -> None:
        self.fields[field] &= ~bits


# Every basic exit reason number to its name (SDM Appendix C); numbers the SDM leaves unused
# are named by number.
REASON_NAMES = {n: f"REASON_{n}" for n in range(NR_VMX_EXIT_REASONS)}
REASON_NAMES.update({int(r): r.name for r in ExitReason})
