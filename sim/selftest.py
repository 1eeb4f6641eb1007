"""Start-up self-test of the Unicorn internals this simulator relies on.

The engine reads the pending exception's error code from, and resets QEMU's `old_exception` in,
the raw context blob (docs/unicorn.md). Those offsets belong to unicorn 2.1.4 x86_64 only, so
they are checked once per process against a fault whose error code is known: loading DS with a
selector beyond the GDT limit raises #GP(selector).

The same checks run on either library (sim/unicorn_engine.py): the fast engine is the same
2.1.4 source, whose store-path patch touches the softmmu TLB and nothing of the CPU state, so
the context blob's layout and the offsets are the same.
"""

from __future__ import annotations

import ctypes
import struct

import unicorn
from unicorn import x86_const as X

from acrn_sim.sim import ConfigError, unicorn_engine

PINNED_UNICORN = "2.1.4"
CTX_ERROR_CODE_OFFSET = 5424
CTX_OLD_EXCEPTION_OFFSET = 5536
# QEMU's CPUX86State starts 40 bytes into the blob: regs[16], eip, eflags, cc_dst, cc_src,
# cc_src2, cc_op, df, then hflags, hflags2 and segs[6] (SegmentCache: u32 selector, u64 base,
# u32 limit, u32 flags; 24 bytes). Used to start an AP in real mode (Engine.enter_real_mode).
CTX_ENV_OFFSET = 40
CTX_HFLAGS_OFFSET = CTX_ENV_OFFSET + 176
CTX_SEGS_OFFSET = CTX_ENV_OFFSET + 184
SEG_CACHE_SIZE = 24
# env->xcr0 (XSETBV writes it; XGETBV, XSAVE and XRSTOR read it): no register id reaches it.
CTX_XCR0_OFFSET = 4944
HF_CPL_MASK, HF_CS32, HF_SS32, HF_LMA, HF_CS64 = 3, 1 << 4, 1 << 5, 1 << 14, 1 << 15
HF_REAL_MODE_CLEAR = HF_CPL_MASK | HF_CS32 | HF_SS32 | HF_LMA | HF_CS64

_checked = False


def check_unicorn() -> None:
    global _checked
    if _checked:
        return
    version = unicorn.__version__
    if version != PINNED_UNICORN:
        raise ConfigError(
            f"unicorn {version} is installed but acrn-sim needs exactly {PINNED_UNICORN} "
            f"(it reads private engine state): pip install unicorn=={PINNED_UNICORN}"
        )
    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
    uc.mem_map(0, 0x10000)
    uc.mem_write(0x500, struct.pack("<QQQ", 0, 0x00CF9A000000FFFF, 0x00CF92000000FFFF))
    uc.reg_write(X.UC_X86_REG_GDTR, (0, 0x500, 23, 0))
    # mov ax, 0x1b ; mov ds, ax   -> #GP(0x18): selector 3 is past the 3-entry GDT
    uc.mem_write(0x1000, bytes.fromhex("66b81b008ed8f4"))
    seen: list[tuple[int, int, int]] = []

    def on_intr(u: unicorn.Uc, intno: int, _ud: object) -> None:
        ctx = u.context_save()
        ptr = ctx.context.value
        err = ctypes.c_uint32.from_address(ptr + CTX_ERROR_CODE_OFFSET).value
        old = ctypes.c_int32.from_address(ptr + CTX_OLD_EXCEPTION_OFFSET).value
        ctypes.c_int32.from_address(ptr + CTX_OLD_EXCEPTION_OFFSET).value = -1
        u.context_restore(ctx)
        seen.append((intno, err, old))
        u.emu_stop()

    uc.hook_add(unicorn.UC_HOOK_INTR, on_intr)
    for _ in range(2):
        uc.emu_start(0x1000, 0x2000)
    # Both runs must report #GP(0x18) with old_exception = 13: the second one would be a #DF if
    # the reset did not take.
    if seen != [(13, 0x18, 13), (13, 0x18, 13)]:
        raise ConfigError(
            "unicorn self-test failed: private context offsets do not match unicorn "
            f"{PINNED_UNICORN} (saw {seen}; engine: {unicorn_engine.describe()}); "
            f"reinstall unicorn=={PINNED_UNICORN}"
        )
    _check_segment_offsets()
    _check_xcr0_offset()
    _checked = True


def _check_segment_offsets() -> None:
    """RAX, the CS/SS selectors and the 64-bit code flags must sit where Engine.enter_real_mode
    writes: a fresh x86-64 engine has HF_LMA and HF_CS64 set."""
    u = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
    u.reg_write(X.UC_X86_REG_RAX, 0x1122_3344_5566_7788)
    u.reg_write(X.UC_X86_REG_CS, 0x1234)
    u.reg_write(X.UC_X86_REG_SS, 0x4321)
    ctx = u.context_save()
    ptr = ctx.context.value
    found = (
        ctypes.c_uint64.from_address(ptr + CTX_ENV_OFFSET).value,
        ctypes.c_uint32.from_address(ptr + CTX_SEGS_OFFSET + SEG_CACHE_SIZE).value,
        ctypes.c_uint32.from_address(ptr + CTX_SEGS_OFFSET + 2 * SEG_CACHE_SIZE).value,
        ctypes.c_uint32.from_address(ptr + CTX_HFLAGS_OFFSET).value & (HF_LMA | HF_CS64),
    )
    if found != (0x1122_3344_5566_7788, 0x1234, 0x4321, HF_LMA | HF_CS64):
        raise ConfigError(
            "unicorn self-test failed: the CPU state layout in the context blob is not unicorn "
            f"{PINNED_UNICORN}'s (engine: {unicorn_engine.describe()}); "
            f"reinstall unicorn=={PINNED_UNICORN}"
        )


def _check_xcr0_offset() -> None:
    """XCR0 must sit where Engine.set_xcr0 writes it: a fresh engine's XCR0 is 3 (x87 | SSE),
    and after writing 1 there, XGETBV must read 1."""
    u = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
    u.mem_map(0, 0x2000)
    u.reg_write(X.UC_X86_REG_CR4, u.reg_read(X.UC_X86_REG_CR4) | (1 << 18))  # OSXSAVE
    ctx = u.context_save()
    field = ctypes.c_uint64.from_address(ctx.context.value + CTX_XCR0_OFFSET)
    before = field.value
    field.value = 1
    u.context_restore(ctx)
    u.mem_write(0x1000, bytes.fromhex("31c90f01d0f4"))  # xor ecx, ecx ; xgetbv ; hlt
    u.emu_start(0x1000, 0x2000)
    if (before, u.reg_read(X.UC_X86_REG_RAX)) != (3, 1):
        raise ConfigError(
            "unicorn self-test failed: XCR0 is not where unicorn "
            f"{PINNED_UNICORN} keeps it; reinstall unicorn=={PINNED_UNICORN}"
        )
