"""The engine's per-block hook, native or pure Python, over one shared state layout.

Both do, for each block Unicorn is about to run: find its cost (asking the engine to decode
it the first time), stop if the slice's cycle budget is spent, else charge the cost and note
the block as current. The native hook (sim/_hotpath.c, built at install) does this in C and
calls Python only for unknown blocks; the Python hook is the fallback where no compiler was
available, and gives the same numbers (a test runs every guest both ways).
"""

from __future__ import annotations

import ctypes
import os
import sys

from unicorn import UC_HOOK_BLOCK, UC_HOOK_CODE, UC_HOOK_MEM_WRITE
from unicorn.unicorn_py3.unicorn import uc_hook_h, uclib
from unicorn.x86_const import UC_X86_REG_CR0, UC_X86_REG_CS

from acrn_sim.sim import ConfigError


class HotPathState(ctypes.Structure):
    """Mirrors `struct hotpath` in sim/_hotpath.c (first fields only are read from Python)."""

    _fields_ = [
        ("cycles", ctypes.c_uint64),
        ("budget", ctypes.c_uint64),
        ("cur_address", ctypes.c_uint64),
        ("cur_size", ctypes.c_uint64),
        ("stop", ctypes.c_uint64),
        ("stop_address", ctypes.c_uint64),
        ("slow", ctypes.c_uint64),
        ("blocks", ctypes.c_uint64),
        ("insns", ctypes.c_uint64),
        # PAUSE-loop exiting's state and parameters (hp_pause_hook, ple_step)
        ("tsc_base", ctypes.c_uint64),
        ("ple_gap", ctypes.c_uint64),
        ("ple_window", ctypes.c_uint64),
        ("ple_valid", ctypes.c_uint64),
        ("ple_first", ctypes.c_uint64),
        ("ple_last", ctypes.c_uint64),
        ("pause_cost", ctypes.c_uint64),
        ("pauses", ctypes.c_uint64),
    ]


MASK64 = (1 << 64) - 1


def ple_first(st: HotPathState, now: int) -> int:
    """When the PAUSE loop that a PAUSE at `now` belongs to started (SDM Vol. 3 §25.1.3: a
    PAUSE more than PLE_Gap after the previous one ended, or the first one, starts a loop;
    why from its end: `struct hotpath` in sim/_hotpath.c).
    hp_pause_hook in sim/_hotpath.c does the same in C."""
    if not st.ple_valid or (now - st.ple_last) & MASK64 > st.ple_gap:
        return now
    return st.ple_first


def cpl0(cs: int, cr0: int) -> bool:
    """PAUSE-loop exiting applies at CPL 0 only (SDM Vol. 3 §25.1.3): CS's RPL in protected
    mode, as hv/arch/vmx.py takes it for privileged instructions."""
    return not (cs & 3 and cr0 & 1)


def ple_step(st: HotPathState, cycles: int) -> bool:
    """A PAUSE at CPL 0 `cycles` into the slice, decided at a stop in front of it
    (hv/arch/vmx.py): True if it VM-exits (the loop has lasted more than PLE_Window; the next
    PAUSE starts a new loop), else the loop's state now includes it."""
    now = (st.tsc_base + cycles) & MASK64
    first = ple_first(st, now)
    if (now - first) & MASK64 > st.ple_window:
        st.ple_valid = 0
        return True
    st.ple_valid, st.ple_first, st.ple_last = 1, first, (now + st.pause_cost) & MASK64
    return False


MISS_CB = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_uint64, ctypes.c_uint32)
SLOW_CB = ctypes.CFUNCTYPE(None, ctypes.c_uint64, ctypes.c_uint32)
SMC_CB = ctypes.CFUNCTYPE(None, ctypes.c_uint64, ctypes.c_uint32)

_lib: ctypes.CDLL | None = None
_lib_error = ""


def native_library() -> ctypes.CDLL | None:
    global _lib, _lib_error
    if _lib is None and not _lib_error:
        try:
            from acrn_sim.sim import _hotpath  # built by setup.py when a C compiler exists

            lib = ctypes.CDLL(_hotpath.__file__)
            lib.hp_new.restype = ctypes.c_void_p
            lib.hp_new.argtypes = [ctypes.c_void_p] * 3
            lib.hp_free.argtypes = [ctypes.c_void_p]
            lib.hp_insert.argtypes = [
                ctypes.c_void_p,
                ctypes.c_uint64,
                ctypes.c_uint32,
                ctypes.c_uint64,
                ctypes.c_uint64,
            ]
            lib.hp_clear.argtypes = [ctypes.c_void_p]
            lib.hp_enable_smc.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
            lib.hp_enable_ple.argtypes = [ctypes.c_void_p] * 2 + [ctypes.c_int] * 2
            _lib = lib
        except (ImportError, OSError, AttributeError) as e:
            # (AttributeError: a build older than these sources, whose state layout differs)
            _lib_error = str(e)
    return _lib


def choose(mode: str) -> str:
    """'native' or 'python' for a requested mode ('auto', 'native', 'python')."""
    mode = os.environ.get("ACRN_SIM_HOTPATH", mode) if mode == "auto" else mode
    if mode == "python":
        return "python"
    if native_library() is not None:
        return "native"
    if mode == "native":
        raise ConfigError(
            f"the native hot path is not built ({_lib_error}); reinstall with a C compiler"
        )
    return "python"


def fallback_notice(requested: str, chosen: str) -> None:
    """Say once, when a run starts, that the slower path is in use because nothing faster
    was built (not when the user asked for it)."""
    if requested == "auto" and chosen == "python" and native_library() is None:
        _warn_once()


_warned = False


def _warn_once() -> None:
    global _warned
    if not _warned:
        _warned = True
        print(
            "acrn-sim: note: native hot path not built (no C compiler at install time); "
            "using the pure-Python block hook (about 20x slower on typical code)",
            file=sys.stderr,
        )


def code_pages(address: int, size: int) -> range:
    """The 4 KiB pages a block or a store spans."""
    return range(address >> 12, ((address + size - 1) >> 12) + 1)


class NativeHook:
    """`smc`: with self-modifying-code detection, called for a guest store to a page that
    holds a decoded block (a UC_HOOK_MEM_WRITE hook, so every store is slower)."""

    def __init__(self, uc, miss, slow, smc=None, pause=None) -> None:
        lib = native_library()
        self._lib = lib
        self._miss = MISS_CB(miss)  # keep the thunks alive as long as the hook
        self._slow = SLOW_CB(slow)
        emu_stop = ctypes.cast(uclib.uc_emu_stop, ctypes.c_void_p).value
        self._hp = lib.hp_new(
            emu_stop,
            ctypes.cast(self._miss, ctypes.c_void_p).value,
            ctypes.cast(self._slow, ctypes.c_void_p).value,
        )
        if not self._hp:
            raise MemoryError("hp_new")
        self.state = HotPathState.from_address(self._hp)
        reg_read = ctypes.cast(uclib.uc_reg_read, ctypes.c_void_p).value
        lib.hp_enable_ple(self._hp, reg_read, UC_X86_REG_CS, UC_X86_REG_CR0)
        self._add(uc, UC_HOOK_BLOCK, lib.hp_block_hook)
        if smc is not None:
            self._smc = SMC_CB(smc)
            if lib.hp_enable_smc(self._hp, ctypes.cast(self._smc, ctypes.c_void_p).value):
                raise MemoryError("hp_enable_smc")
            self._add(uc, UC_HOOK_MEM_WRITE, lib.hp_mem_write_hook)

    def _add(self, uc, kind: int, c_function, begin: int = 1, end: int = 0):
        """Register one of _hotpath.c's callbacks with Unicorn's C API, over [begin, end]
        (begin > end: all addresses)."""
        handle = uc_hook_h()
        fn = ctypes.cast(c_function, ctypes.c_void_p)
        err = uclib.uc_hook_add(
            uc._uch,
            ctypes.byref(handle),
            kind,
            fn,
            ctypes.c_void_p(self._hp),
            ctypes.c_uint64(begin),
            ctypes.c_uint64(end),
        )
        if err:
            raise RuntimeError(f"uc_hook_add failed ({err})")
        return handle

    def add_exit(self, uc, address: int):
        """Stop the engine in front of the instruction at `address` (hp_exit_hook); returns
        the hook's handle for remove_exit."""
        return self._add(uc, UC_HOOK_CODE, self._lib.hp_exit_hook, address, address)

    def add_pause(self, uc, address: int):
        """PAUSE-loop exiting at the PAUSE at `address` (hp_pause_hook): it stops the engine
        only when the PAUSE must be decided in Python."""
        return self._add(uc, UC_HOOK_CODE, self._lib.hp_pause_hook, address, address)

    def remove_exit(self, uc, handle) -> None:
        err = uclib.uc_hook_del(uc._uch, handle)
        if err:
            raise RuntimeError(f"uc_hook_del failed ({err})")

    def insert(self, address: int, size: int, cost: int, ninsns: int) -> None:
        if self._lib.hp_insert(self._hp, address, size, cost, ninsns):
            raise MemoryError("hp_insert")

    def clear(self) -> None:
        self._lib.hp_clear(self._hp)

    def __del__(self) -> None:
        if getattr(self, "_hp", None):
            self._lib.hp_free(self._hp)
            self._hp = None


class PythonHook:
    """The same state; the whole step runs in Python (the engine's block step)."""

    def __init__(self, uc, miss, slow, smc=None, pause=None) -> None:
        self.state = HotPathState()
        self._pause = pause  # the engine's PAUSE step (Engine._py_pause)
        uc.hook_add(UC_HOOK_BLOCK, lambda _uc, address, size, _ud: slow(address, size))
        self.pages: set[int] | None = None
        if smc is not None:
            self.pages = pages = set()

            def on_write(_uc, _type, address: int, size: int, _value, _ud) -> None:
                if address >> 12 in pages or (address + size - 1) >> 12 in pages:
                    smc(address, size)

            uc.hook_add(UC_HOOK_MEM_WRITE, on_write)

    def add_exit(self, uc, address: int):
        return uc.hook_add(
            UC_HOOK_CODE, lambda u, _a, _s, _ud: u.emu_stop(), None, address, address
        )

    def add_pause(self, uc, address: int):
        pause = self._pause
        return uc.hook_add(UC_HOOK_CODE, lambda _u, a, s, _ud: pause(a, s), None, address, address)

    def remove_exit(self, uc, handle) -> None:
        uc.hook_del(handle)

    def insert(self, address: int, size: int, cost: int, ninsns: int) -> None:
        # the engine's block dict is the table; only the code pages are kept here
        if self.pages is not None:
            self.pages.update(code_pages(address, size))

    def clear(self) -> None:
        if self.pages is not None:
            self.pages.clear()
