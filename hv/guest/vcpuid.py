"""Per-VM virtual CPUID (ACRN hypervisor/arch/x86/guest/vcpuid.c).

The table is synthetic and fixed (a Tiger Lake-like part), so that a guest sees the same values
on every host: nothing here reads the host CPU. It advertises only what the emulated CPU
(Unicorn, QEMU 5 TCG) really executes: no AVX, no VMX (ACRN hides VMX without nested support).
Leaf 0x40000000 carries ACRN's signature and max leaf 0x40000010; 0x40000010 gives the TSC in kHz
(EBX, ECX, EDX reserved, 0). Leaves 0xB (topology), 0x15 (TSC/crystal) and 0x16 (frequencies)
follow ACRN's vcpuid.c; the leaves between that the table does not list read as zeros.
"""

from __future__ import annotations


def _bits(*positions: int) -> int:
    v = 0
    for p in positions:
        v |= 1 << p
    return v


def _sig(text: str) -> tuple[int, int, int]:
    b = text.encode()
    return tuple(int.from_bytes(b[i : i + 4], "little") for i in (0, 4, 8))  # type: ignore[return-value]


# ACRN raises the maximum basic leaf to 0x16 when the processor stops short of it, to offer
# its emulated leaf 0x16 (set_vcpuid_entries)
CPUID_MAX_BASIC = 0x16
CPUID_MAX_EXTENDED = 0x8000_0008
CPUID_HV_SIGNATURE = 0x4000_0000
CPUID_HV_FEATURES = 0x4000_0001
CPUID_HV_TIMING = 0x4000_0010
# leaf 1: family 6, model 0x8C (Tiger Lake), stepping 1
LEAF1_EAX = 0x0008_06C1
# ECX: SSE3 0, PCLMULQDQ 1, SSSE3 9, CX16 13, SSE4.1 19, SSE4.2 20, x2APIC 21, MOVBE 22,
# POPCNT 23, TSC-deadline 24, AES 25, XSAVE 26, hypervisor 31. OSXSAVE (27) mirrors CR4.
LEAF1_ECX = _bits(0, 1, 9, 13, 19, 20, 21, 22, 23, 24, 25, 26, 31)
# EDX: FPU, VME, DE, PSE, TSC, MSR, PAE, MCE, CX8, APIC, SEP, MTRR, PGE, MCA, CMOV, PAT, PSE36,
# CLFSH, MMX, FXSR, SSE, SSE2
LEAF1_EDX = _bits(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15, 16, 17, 19, 23, 24, 25, 26)
# FSGSBASE, BMI1, SMEP, BMI2, ERMS. SMEP is QEMU's own check on CR4.SMEP in its page walk
# (measured: a fetch from a user page at CPL 0 faults). SMAP and PKU, which ACRN passes on
# from the processor, are left out: Unicorn's CPU model does not enforce them (QEMU applies
# CR4.SMAP only when its own CPUID has the feature), and CPUID must not promise what the
# emulated CPU does not do.
LEAF7_EBX = _bits(0, 3, 7, 8, 9)
EXT1_ECX = _bits(0)  # LAHF/SAHF in 64-bit mode
EXT1_EDX = _bits(11, 20, 26, 27, 29)  # SYSCALL, NX, 1 GiB pages, RDTSCP, long mode
CR4_OSXSAVE = 1 << 18
# leaf 0's vendor string as EBX, EDX, ECX (encoded once, not at every exit)
VENDOR_EBX, VENDOR_EDX, VENDOR_ECX = _sig("GenuineIntel")
ACRN_SIGNATURE = _sig("ACRNACRNACRN")  # leaf 0x40000000's EBX, ECX, EDX


class VCpuid:
    def __init__(self, tsc_hz: int, num_vcpus: int = 1) -> None:
        self.tsc_hz = tsc_hz
        self.tsc_khz = tsc_hz // 1000
        self.num_vcpus = num_vcpus

    def guest_cpuid(self, leaf: int, subleaf: int, vcpu_id: int, cr4: int):
        """(eax, ebx, ecx, edx) for the leaf, as ACRN's guest_cpuid()."""
        if leaf == 0:
            return CPUID_MAX_BASIC, VENDOR_EBX, VENDOR_ECX, VENDOR_EDX
        if leaf == 1:
            ecx = LEAF1_ECX | (1 << 27 if cr4 & CR4_OSXSAVE else 0)
            ebx = (vcpu_id << 24) | (1 << 16) | (8 << 8)  # APIC ID, 1 logical CPU, CLFLUSH 64 B
            return LEAF1_EAX, ebx, ecx, LEAF1_EDX
        if leaf == 7:
            return (0, LEAF7_EBX, 0, 0) if subleaf == 0 else (0, 0, 0, 0)
        if leaf == 0xB:
            # guest_cpuid_0bh for a VM other than the Service VM: no SMT, one core per vCPU
            level = subleaf & 0xFF
            if subleaf == 0:
                eax, ebx, ecx = 0, 1, level | (1 << 8)
            elif subleaf == 1:
                n = self.num_vcpus
                eax, ebx, ecx = (0 if n == 1 else (n - 1).bit_length() + 1), n, level | (2 << 8)
            else:
                eax, ebx, ecx = 0, 0, level
            return eax, ebx, ecx, vcpu_id
        if leaf == 0x15 and self.tsc_hz <= 0xFFFF_FFFF:
            # TSC/crystal ratio 1/1 and the crystal's frequency: the processor's own leaf on
            # ACRN. The modelled vLAPIC timer counts at the TSC rate (as ACRN's, vlapic.c), so
            # the "crystal" that feeds it is the TSC's clock; Linux takes both the TSC and the
            # LAPIC timer frequency from here (arch/x86/kernel/tsc.c native_calibrate_tsc)
            return 1, 1, self.tsc_hz, 0
        if leaf == 0x16:
            # ACRN's emulated leaf: base and maximum MHz from the TSC, a 100 MHz bus
            mhz = self.tsc_hz // 1_000_000
            return mhz, mhz, 100, 0
        if leaf == 0xD:
            if subleaf == 0:  # x87 | SSE state; 512 B legacy area + 64 B header
                return 0x3, 576, 576, 0
            return 0, 0, 0, 0
        if leaf == CPUID_HV_SIGNATURE:
            return (CPUID_HV_TIMING, *ACRN_SIGNATURE)
        if leaf == CPUID_HV_FEATURES:
            return 0, 0, 0, 0
        if leaf == CPUID_HV_TIMING:
            return self.tsc_khz, 0, 0, 0
        if leaf == 0x8000_0000:
            return CPUID_MAX_EXTENDED, 0, 0, 0
        if leaf == 0x8000_0001:
            return 0, 0, EXT1_ECX, EXT1_EDX
        if leaf == 0x8000_0008:
            return 0x3027, 0, 0, 0  # 39 physical, 48 linear address bits
        return 0, 0, 0, 0


def cpuid_vmexit_handler(vcpu) -> int:
    """ACRN cpuid_vmexit_handler: leaf in EAX, subleaf in ECX, results in EAX..EDX."""
    rax, rcx, cr4 = vcpu.engine.regs(["rax", "rcx", "cr4"])
    eax, ebx, ecx, edx = vcpu.vm.vcpuid.guest_cpuid(
        rax & 0xFFFF_FFFF, rcx & 0xFFFF_FFFF, vcpu.vcpu_id, cr4
    )
    vcpu.engine.set_regs({"rax": eax, "rbx": ebx, "rcx": ecx, "rdx": edx})
    return 0
