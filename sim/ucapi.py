"""The few Unicorn C API calls made on every VM exit, without the binding's per-call cost.

The 2.1.4 binding declares `argtypes` on its C functions, so each call converts and checks
every argument in Python: about 0.3 us of a 0.5 us register read (measured). An I/O round trip
through the Service VM makes a dozen such calls. Here the same C functions of the same loaded
library are called with arguments that are already C values (prepared arrays, c_uint64), which
ctypes passes as they are. The signatures are Unicorn's public C API (unicorn/unicorn.h):

    uc_err uc_reg_read_batch(uc_engine *uc, int *regs, void **vals, int count);
    uc_err uc_reg_write_batch(uc_engine *uc, int *regs, void *const *vals, int count);
    uc_err uc_emu_start(uc_engine *uc, uint64_t begin, uint64_t until, uint64_t timeout,
                        size_t count);

Where the native extension is built (sim/_hotpath.c), the same three C functions are called
from it instead: a RegBatch's arrays are prepared there once (a capsule), and its `read` and
`write` are then the C functions themselves, with no ctypes conversion and no Python frame.
Both ways call the same Unicorn functions with the same arguments (tests/test_ucapi.py).
A VM entry's whole run of guest code (`Runner`: reset the hook's slice state, run, read the
stop registers) is then one call.
"""

from __future__ import annotations

import ctypes
import functools

from unicorn import Uc, UcError
from unicorn.unicorn_py3.unicorn import uclib
from unicorn.x86_const import UC_X86_REG_MSR

MASK64 = (1 << 64) - 1

_c = ctypes.CDLL(uclib._name)  # the binding's own library: dlopen returns the same handle
_reg_read_batch = _c.uc_reg_read_batch
_reg_write_batch = _c.uc_reg_write_batch
_emu_start = _c.uc_emu_start
for _f in (_reg_read_batch, _reg_write_batch, _emu_start):
    _f.restype = ctypes.c_int  # uc_err; no argtypes on purpose (see the module docstring)

_UNTIL_NEVER = ctypes.c_uint64(0xFFFF_FFFF_FFFF_FFFF)
_ZERO_U64 = ctypes.c_uint64(0)
_ZERO_SIZE = ctypes.c_size_t(0)

try:
    from acrn_sim.sim import _hotpath as _native

    _native.bind(
        *(
            ctypes.cast(f, ctypes.c_void_p).value
            for f in (_reg_read_batch, _reg_write_batch, _emu_start)
        ),
        UcError,
    )
except (ImportError, AttributeError, TypeError):  # not built (no C compiler), or an older build
    _native = None
NATIVE = _native is not None  # tests switch it off to compare both ways


class RegBatch:
    """A prepared uc_reg_read_batch/uc_reg_write_batch for a fixed list of registers:
    `read()` -> their values, `write(values)`. Errors raise UcError.

    Registers narrower than 64 bits (the segment selectors) land in zeroed 8-byte slots."""

    def __init__(self, uc: Uc, reg_ids: list[int]) -> None:
        n = len(reg_ids)
        self.uch = uc._uch
        self.n = ctypes.c_int(n)
        self.ids = (ctypes.c_int32 * n)(*reg_ids)
        self.vals = (ctypes.c_uint64 * n)()
        base = ctypes.addressof(self.vals)
        self.ptrs = (ctypes.c_void_p * n)(*[base + 8 * i for i in range(n)])
        self.native = None
        if NATIVE:
            # The same arrays, prepared once in C: read and write are then the C functions
            # themselves, without a Python frame (they shadow the ctypes methods below).
            self.native = _native.batch(
                self.uch.value, ctypes.addressof(self.ids), ctypes.addressof(self.ptrs), base, n
            )
            self.read = functools.partial(_native.reg_read, self.native)
            self.write = functools.partial(_native.reg_write, self.native)

    def read(self) -> list[int]:
        err = _reg_read_batch(self.uch, self.ids, self.ptrs, self.n)
        if err:
            raise UcError(err)
        return self.vals[:]

    def write(self, values) -> None:
        if len(values) != self.n.value:
            raise ValueError(f"reg_write: {self.n.value} registers, {len(values)} values")
        self.vals[:] = [v & MASK64 for v in values]
        err = _reg_write_batch(self.uch, self.ids, self.ptrs, self.n)
        if err:
            raise UcError(err)


def emu_start(uc: Uc, begin: int) -> None:
    """uc.emu_start(begin, until=never): the same call and checks as the binding's, through
    ctypes (with the extension, Runner's C `run` makes this call itself)."""
    uc._hook_exception = None  # where the binding's hook wrapper leaves an exception
    err = _emu_start(uc._uch, ctypes.c_uint64(begin), _UNTIL_NEVER, _ZERO_U64, _ZERO_SIZE)
    if err:
        raise UcError(err)
    if uc._hook_exception is not None:
        raise uc._hook_exception


class Runner:
    """One engine's run of guest code at a VM entry (Engine.run): reset the block hook's slice
    state, uc_emu_start from `begin`, read the stop registers. With the native extension it is
    one C call (_hotpath.c `run`); otherwise the same steps through ctypes, here."""

    def __init__(self, uc: Uc, state: ctypes.Structure, regs: RegBatch) -> None:
        self.uc = uc
        self.state = state  # sim/hotpath.py HotPathState, the native hook's or the Python one's
        self.regs = regs
        if regs.native is not None:  # (a batch prepared in C: the extension is in use)
            runner = _native.runner(uc, ctypes.addressof(state), regs.native)
            self.run = functools.partial(_native.run, runner)

    def reset(self, budget: int, slow: bool) -> None:
        """A new slice: no cycles charged yet, `budget` to spend, no current block."""
        st = self.state
        st.cycles = 0
        st.budget = budget
        st.cur_size = 0
        st.slow = 1 if slow else 0

    def run(self, begin: int, budget: int | None, slow: bool) -> tuple[int, int, int, list[int]]:
        """(uc_err, whether the budget stopped it, the slice's cycles, the stop registers).
        `budget` None: a further round of the same slice. A hook's exception is raised, as
        Uc.emu_start does."""
        if budget is not None:
            self.reset(budget, slow)
        self.state.stop = 0
        try:
            emu_start(self.uc, begin)
            err = 0
        except UcError as e:
            err = e.errno
        return err, self.state.stop, self.state.cycles, self.regs.read()


class _MMR(ctypes.Structure):
    """uc_x86_mmr (unicorn/x86.h): IDTR, GDTR, LDTR or TR."""

    _fields_ = (
        ("selector", ctypes.c_uint16),
        ("base", ctypes.c_uint64),
        ("limit", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
    )


class _MSR(ctypes.Structure):
    """uc_x86_msr (unicorn/x86.h): the MSR's index in, its value out."""

    _fields_ = (("rid", ctypes.c_uint32), ("value", ctypes.c_uint64))


class SystemRegBatch:
    """A prepared uc_reg_read_batch over registers of up to 64 bits, table registers (IDTR,
    GDTR: their base and limit) and MSRs, in one call: `read()` -> the registers' values,
    then each table register's base and limit, then each MSR's value. The binding reads a
    table register or an MSR through its generic reg_read, ~2-3 us each (measured); this
    reads all of them in ~1 us.

    Unicorn's reg_read takes a uc_x86_mmr for a table register and a uc_x86_msr, its index
    set, for UC_X86_REG_MSR (unicorn/x86.h): each of those has a slot of its own type. The
    registers narrower than 64 bits (segment selectors) land in zeroed 8-byte slots."""

    def __init__(self, uc: Uc, reg_ids: list[int], table_ids: list[int], msrs: list[int]) -> None:
        self.uch = uc._uch
        self.values = (ctypes.c_uint64 * len(reg_ids))()
        self.tables = [_MMR() for _ in table_ids]
        self.msrs = [_MSR(rid=index) for index in msrs]
        ids = [*reg_ids, *table_ids, *[UC_X86_REG_MSR] * len(msrs)]
        base = ctypes.addressof(self.values)
        ptrs = [base + 8 * i for i in range(len(reg_ids))]
        ptrs += [ctypes.addressof(s) for s in (*self.tables, *self.msrs)]
        self.n = ctypes.c_int(len(ids))
        self.ids = (ctypes.c_int32 * len(ids))(*ids)
        self.ptrs = (ctypes.c_void_p * len(ids))(*ptrs)

    def read(self) -> list[int]:
        err = _reg_read_batch(self.uch, self.ids, self.ptrs, self.n)
        if err:
            raise UcError(err)
        out = self.values[:]
        for t in self.tables:
            out += (t.base, t.limit)
        for m in self.msrs:
            out.append(m.value)
        return out
