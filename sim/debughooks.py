"""Unicorn hooks for a debugger (hv/debug.py, GDB): one code hook over all addresses, and
memory hooks over watched bytes, on an Engine. Used only while GDB is connected.

The code hook is registered through Unicorn's C API with a plain ctypes callback rather than
through the binding's hook_add, whose wrapper (argument conversion, exception capture) doubles
the cost of a call made for every guest instruction (measured: 0.43 against 0.20 us).

    uc_err uc_hook_add(uc_engine *uc, uc_hook *hh, int type, void *callback,
                       void *user_data, uint64_t begin, uint64_t end, ...);
    typedef void (*uc_cb_hookcode_t)(uc_engine *uc, uint64_t address, uint32_t size,
                                     void *user_data);
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

from unicorn import UC_HOOK_CODE, UC_HOOK_MEM_READ, UC_HOOK_MEM_WRITE
from unicorn.unicorn_py3.unicorn import uc_hook_h, uclib

CODE_CB = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint32,
                           ctypes.c_void_p)  # fmt: skip
MEM_WRITE, MEM_READ = UC_HOOK_MEM_WRITE, UC_HOOK_MEM_READ


class CodeHook:
    """`callback(uc_handle, address, size, user_data)` (uc_cb_hookcode_t) before every
    instruction the engine runs, from its next run on (Unicorn 2.1 takes a hook added while
    guest code runs into account only from its next uc_emu_start). The callback must not
    raise: it runs inside Unicorn. (Called as it is, with no adapter frame in between.)"""

    def __init__(self, engine, callback: Callable[[int, int, int, int], None]) -> None:
        self.uc = engine.uc
        self._thunk = CODE_CB(callback)  # (kept alive as long as the hook)
        self.handle = uc_hook_h()
        err = uclib.uc_hook_add(
            self.uc._uch,
            ctypes.byref(self.handle),
            UC_HOOK_CODE,
            ctypes.cast(self._thunk, ctypes.c_void_p),
            None,
            ctypes.c_uint64(1),
            ctypes.c_uint64(0),  # begin > end: all addresses
        )
        if err:
            raise RuntimeError(f"uc_hook_add failed ({err})")

    def remove(self) -> None:
        if self.uc is not None:
            try:
                uclib.uc_hook_del(self.uc._uch, self.handle)
            except Exception:  # (the engine was closed meanwhile: a VM reset)
                pass
            self.uc = None


class MemoryHook:
    """`callback(address, size)` for each access of `kinds` (MEM_WRITE | MEM_READ) whose first
    byte is in [begin, end] (Unicorn tests a memory hook's range against that byte)."""

    def __init__(self, engine, kinds: int, begin: int, end: int, callback) -> None:
        self.uc = engine.uc
        self.handle = self.uc.hook_add(
            kinds, lambda _uc, _access, address, size, _value, _ud: callback(address, size),
            None, begin, end,
        )  # fmt: skip

    def remove(self) -> None:
        if self.uc is not None:
            try:
                self.uc.hook_del(self.handle)
            except Exception:  # (the engine was closed meanwhile: a VM reset)
                pass
            self.uc = None
