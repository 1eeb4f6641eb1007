"""SYSCALL as the processor executes it (SDM Vol. 2B, SYSCALL; Vol. 3 §5.8.8).

Unicorn 2.1.4 replaced QEMU's helper_syscall with a call to the UC_HOOK_INSN hooks followed by
RIP += 2 (qemu/target/i386/seg_helper.c in the unicorn sources): the instruction itself does
nothing, so a guest kernel's system calls would fall through to the next instruction. The
engine hooks it and this module does what the CPU does. SYSRET, SYSENTER and SYSEXIT are QEMU's
own and run natively.

64-bit mode only: SYSCALL outside 64-bit mode, or with IA32_EFER.SCE clear, is #UD on Intel
processors.
"""

from __future__ import annotations

from acrn_sim.sim import segments
from acrn_sim.sim.segments import CS, DESC_B, DESC_G, DESC_L, DESC_P, DESC_S, SS, Descriptor

MSR_EFER, MSR_STAR, MSR_LSTAR, MSR_FMASK = 0xC000_0080, 0xC000_0081, 0xC000_0082, 0xC000_0084
EFER_SCE, EFER_LMA = 1, 1 << 10
RFLAGS_RF = 1 << 16
SYSCALL_LEN = 2  # 0F 05
# The fixed CS and SS SYSCALL loads (SDM SYSCALL's operation): flat, DPL 0, 64-bit code and
# read/write data
_CS_FLAGS = DESC_G | DESC_L | DESC_P | DESC_S | (0xB << 8)
_SS_FLAGS = DESC_G | DESC_B | DESC_P | DESC_S | (0x3 << 8)


def syscall(engine, rip: int) -> int | None:
    """Carry out the SYSCALL at `rip` on the engine's registers. Returns None, or the vector
    of the fault it raises (6, #UD) with every register as it was. RIP is left as the engine
    wants it for Unicorn's own RIP += 2 that follows the hook."""
    efer = engine.msr_read(MSR_EFER)
    if not (efer & EFER_SCE and efer & EFER_LMA and engine.code_bits() == 64):
        engine.set_reg("rip", rip - SYSCALL_LEN)  # Unicorn adds the length back
        return 6
    star = engine.msr_read(MSR_STAR)
    lstar = engine.msr_read(MSR_LSTAR)
    fmask = engine.msr_read(MSR_FMASK) & 0xFFFF_FFFF
    rflags = engine.reg("rflags")
    selector = (star >> 32) & 0xFFFC
    engine.set_regs(
        {
            "rcx": rip + SYSCALL_LEN,
            "r11": rflags & ~RFLAGS_RF,
            "rflags": rflags & ~fmask & ~RFLAGS_RF,
            "rip": lstar - SYSCALL_LEN,
        }
    )
    segments.load(
        engine,
        {
            CS: Descriptor(selector, 0, 0xFFFF_FFFF, _CS_FLAGS),
            SS: Descriptor(selector + 8, 0, 0xFFFF_FFFF, _SS_FLAGS),
        },
    )
    return None
