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

from unicorn import UC_HOOK_BLOCK, UC_HOOK_CODE, UC_HOOK_INSN, UC_HOOK_MEM_WRITE
from unicorn import x86_const as X
from unicorn.unicorn_py3.arch.intel import HOOK_INSN_CPUID_CFUNC
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
        ("tsc_aux", ctypes.c_uint64),
    ]


MASK64 = (1 << 64) - 1
HP_STOP_WINDOW = 2  # HotPathState.stop: the interrupt window is open (sim/_hotpath.c)


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


class Klass(ctypes.Structure):
    """Mirrors `struct klass` in sim/_decode.c: one mnemonic's cost and exit policy, as the
    native decoder asks Python for it the first time it meets the mnemonic."""

    _fields_ = [
        ("mnemonic", ctypes.c_char * 32),
        ("mem", ctypes.c_uint8),
        ("used", ctypes.c_uint8),
        ("flags", ctypes.c_int32),
        ("cost", ctypes.c_int64),
        ("operands", (ctypes.c_char * 16) * 4),
        ("nshadow", ctypes.c_int32),
        ("shadow", (ctypes.c_char * 8) * 2),
    ]


MISS_CB = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_uint64, ctypes.c_uint32)


def _fits(starts: tuple[str, ...], name: str) -> bool:
    """Whether operand starts fit Klass's array field `name` (strings, so one byte less than
    each entry's size)."""
    array = dict(Klass._fields_)[name]
    return len(starts) <= array._length_ and all(len(o) < array._type_._length_ for o in starts)


TSC_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)
CLASSIFY_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(Klass))
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
            lib.hp_new.argtypes = [ctypes.c_void_p] * 2
            lib.hp_free.argtypes = [ctypes.c_void_p]
            lib.hp_insert.argtypes = [
                ctypes.c_void_p,
                ctypes.c_uint64,
                ctypes.c_uint32,
                ctypes.c_uint64,
                ctypes.c_uint64,
                ctypes.c_int,
            ]
            lib.hp_clear.argtypes = [ctypes.c_void_p]
            lib.hp_insert_tsc.argtypes = [
                ctypes.c_void_p,
                ctypes.c_uint64,
                ctypes.c_uint32,
                ctypes.c_uint64,
                ctypes.c_uint64,
            ]
            lib.hp_enable_tsc.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int] * 4
            lib.hp_enable_smc.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
            lib.hp_enable_ple.argtypes = [ctypes.c_void_p] * 2 + [ctypes.c_int] * 3
            lib.hp_decoder_new.restype = ctypes.c_void_p
            lib.hp_decoder_new.argtypes = [ctypes.c_void_p] * 7 + [
                ctypes.POINTER(ctypes.c_uint64),
                ctypes.c_void_p,
                ctypes.POINTER(ctypes.c_int),
            ]
            lib.hp_decoder_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
            lib.hp_decoder_watch.argtypes = [
                ctypes.c_void_p,
                ctypes.POINTER(ctypes.c_uint64),
                ctypes.c_uint64,
            ]
            lib.hp_decoder_stats.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint64)]
            lib.hp_decoder_probe.argtypes = [
                ctypes.c_void_p,
                ctypes.c_int,
                ctypes.c_char_p,
                ctypes.c_uint64,
                ctypes.c_uint64,
                ctypes.POINTER(ctypes.c_uint64),
                ctypes.c_char_p,
                ctypes.c_int,
            ]
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

    def __init__(self, uc, miss, slow=None, smc=None, pause=None) -> None:
        # (`slow`, the Python hook's per-block step, is not needed: the interrupt window's
        # check is in C, hp_block_hook)
        lib = native_library()
        self._lib = lib
        self._miss = MISS_CB(miss)  # keep the thunk alive as long as the hook
        emu_stop = ctypes.cast(uclib.uc_emu_stop, ctypes.c_void_p).value
        self._hp = lib.hp_new(emu_stop, ctypes.cast(self._miss, ctypes.c_void_p).value)
        if not self._hp:
            raise MemoryError("hp_new")
        self.state = HotPathState.from_address(self._hp)
        self.decoding = False  # new blocks decoded in C (enable_decode)
        reg_read = ctypes.cast(uclib.uc_reg_read, ctypes.c_void_p).value
        lib.hp_enable_ple(self._hp, reg_read, UC_X86_REG_CS, UC_X86_REG_CR0, X.UC_X86_REG_EFLAGS)
        self._add(uc, UC_HOOK_BLOCK, lib.hp_block_hook)
        if smc is not None:
            self._smc = SMC_CB(smc)
            if lib.hp_enable_smc(self._hp, ctypes.cast(self._smc, ctypes.c_void_p).value):
                raise MemoryError("hp_enable_smc")
            self._add(uc, UC_HOOK_MEM_WRITE, lib.hp_mem_write_hook)

    def enable_decode(self, uc, decoder) -> None:
        """Decode and cost new blocks in C (sim/_decode.c), with capstone's C API on the
        handles `decoder` (a BlockDecoder) opened, and its costs and exit policy: Python is
        asked once per mnemonic, not once per block. Also reads guest-linear memory in C
        (read_linear). Checks at once that the capstone loaded is the one the C side's
        instruction layout was written for."""
        import capstone  # (sim/blockcost.py's; pinned in pyproject.toml)

        from acrn_sim.sim import _hotpath

        cs_lib = capstone._cs
        fn = {
            name: ctypes.cast(getattr(cs_lib, name), ctypes.c_void_p).value
            for name in ("cs_disasm_iter", "cs_malloc", "cs_free")
        }
        handles = (ctypes.c_uint64 * 3)(*(decoder.cs_handle(bits) for bits in (16, 32, 64)))

        def classify(mnemonic: bytes, mem: int, out) -> int:
            try:
                cost, flags, operands, shadow = decoder.klass(mnemonic.decode("ascii"), bool(mem))
                if not (_fits(operands, "operands") and _fits(shadow, "shadow")):
                    return -1  # (more than struct klass holds: Python decodes those blocks)
                k = out.contents
                k.cost, k.flags, k.nshadow = cost, flags, len(shadow)
                for i, start in enumerate(operands):
                    k.operands[i].value = start.encode("ascii")
                for i, start in enumerate(shadow):
                    k.shadow[i].value = start.encode("ascii")
                return 0
            except Exception:  # (the block goes to Python, which raises it where it is seen)
                return -1

        self._classify = CLASSIFY_CB(classify)  # kept alive as long as the hook
        regs = (ctypes.c_int * 6)(
            X.UC_X86_REG_CR0,
            X.UC_X86_REG_CR3,
            X.UC_X86_REG_CR4,
            X.UC_X86_REG_CS,
            X.UC_X86_REG_GDTR,
            X.UC_X86_REG_MSR,
        )
        dec = self._lib.hp_decoder_new(
            self._hp,
            ctypes.cast(uclib.uc_reg_read, ctypes.c_void_p).value,
            ctypes.cast(uclib.uc_mem_read, ctypes.c_void_p).value,
            ctypes.cast(uclib.uc_mem_write, ctypes.c_void_p).value,
            fn["cs_disasm_iter"],
            fn["cs_malloc"],
            fn["cs_free"],
            handles,
            ctypes.cast(self._classify, ctypes.c_void_p).value,
            regs,
        )
        if not dec:
            raise MemoryError("hp_decoder_new")
        self._probe(decoder)
        self._read_linear = _hotpath.read_linear
        self._write_linear = _hotpath.write_linear
        self._uch = uc._uch.value
        self.decoding = True

    def _probe(self, decoder) -> None:
        """The C side reads capstone's cs_insn through its own copy of the layout (capstone
        5.0.9's): decode a few instructions both ways and stop with a clear error if the
        two disagree (a capstone other than the pinned one)."""
        code = bytes.fromhex("0f1f440000488b0425100000000fa2f390c3")
        n = 8
        pairs = (ctypes.c_uint64 * (2 * n))()
        names = ctypes.create_string_buffer(32 * n)
        got = self._lib.hp_decoder_probe(self._hp, 64, code, len(code), 0x1000, pairs, names, n)
        mine = [
            (pairs[2 * i], pairs[2 * i + 1], names.raw[32 * i : 32 * i + 32].split(b"\0")[0])
            for i in range(got)
        ]
        theirs = [
            (i.address, i.size, i.mnemonic.encode()) for i in decoder.decode_insns(code, 0x1000, 64)
        ]
        if mine != theirs:
            raise ConfigError(
                f"capstone {capstone_version()} does not match the native decoder's instruction "
                "layout (written for capstone 5.0.9, pinned in pyproject.toml): reinstall with "
                "pip install -e ."
            )

    def set_decode(self, iret_exits: bool, off: bool) -> None:
        """IRET stops while an NMI is blocked; `off`: Python decodes every block."""
        if self.decoding:
            self._lib.hp_decoder_set(self._hp, int(iret_exits), int(off))

    def watch(self, addresses: list[int]) -> None:
        """Leave the blocks that hold these addresses to Python (Engine.watch_blocks)."""
        if self.decoding:
            arr = (ctypes.c_uint64 * len(addresses))(*addresses)
            if self._lib.hp_decoder_watch(self._hp, arr, len(addresses)):
                raise MemoryError("hp_decoder_watch")

    def decode_stats(self) -> tuple[int, int]:
        """(blocks decoded in C, blocks left to Python) so far; (0, 0) without a decoder."""
        if not self.decoding:
            return 0, 0
        out = (ctypes.c_uint64 * 2)()
        self._lib.hp_decoder_stats(self._hp, out)
        return out[0], out[1]

    def read_linear(self, linear: int, size: int, fetch: bool) -> bytes | tuple[int, int]:
        """Guest-linear read through the page walk in C: the bytes, or the page fault's
        (linear address, error code)."""
        return self._read_linear(self._hp, self._uch, linear, size, fetch)

    def enable_tsc(self, uc, on_rdtsc) -> None:
        """RDTSC/RDTSCP answered in C (hp_rdtsc_hook) from the cycles charged and the
        instruction's tail in its block (insert_tsc); on_rdtsc(rdtscp) for the rest."""
        self._tsc = TSC_CB(lambda rdtscp: on_rdtsc(bool(rdtscp)))  # kept alive with the hook
        if self._lib.hp_enable_tsc(
            self._hp,
            ctypes.cast(uclib.uc_reg_write, ctypes.c_void_p).value,
            ctypes.cast(self._tsc, ctypes.c_void_p).value,
            X.UC_X86_REG_RIP,
            X.UC_X86_REG_RAX,
            X.UC_X86_REG_RDX,
            X.UC_X86_REG_RCX,
        ):
            raise MemoryError("hp_enable_tsc")
        # (the 2.1.4 binding refuses these instructions in hook_add; the C core takes them)
        self._add(uc, UC_HOOK_INSN, self._lib.hp_rdtsc_hook, 1, 0, X.UC_X86_INS_RDTSC)
        self._add(uc, UC_HOOK_INSN, self._lib.hp_rdtscp_hook, 1, 0, X.UC_X86_INS_RDTSCP)

    def insert_tsc(self, block: int, size: int, rip: int, tail: int) -> None:
        """An RDTSC/RDTSCP at `rip` in the block (block, size), `tail` cycles from it to the
        block's end."""
        if self._lib.hp_insert_tsc(self._hp, block, size, rip, tail):
            raise MemoryError("hp_insert_tsc")

    def write_linear(self, linear: int, data: bytes) -> bool | tuple[int, int]:
        """Guest-linear write through the page walk in C: False if a page was not RAM, or
        the page fault's (linear address, error code)."""
        return self._write_linear(self._hp, self._uch, linear, data)

    def _add(self, uc, kind: int, c_function, begin: int = 1, end: int = 0, *insn: int):
        """Register one of _hotpath.c's callbacks with Unicorn's C API, over [begin, end]
        (begin > end: all addresses); for UC_HOOK_INSN, the instruction's id."""
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
            *(ctypes.c_int(i) for i in insn),
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

    def insert(self, address: int, size: int, cost: int, ninsns: int, shadow: bool) -> None:
        """A decoded block: its cost and instructions, and whether it ends in an instruction
        that blocks interrupts for the next one (the interrupt window's check)."""
        if self._lib.hp_insert(self._hp, address, size, cost, ninsns, int(shadow)):
            raise MemoryError("hp_insert")

    def clear(self) -> None:
        self._lib.hp_clear(self._hp)

    def __del__(self) -> None:
        if getattr(self, "_hp", None):
            self._lib.hp_free(self._hp)
            self._hp = None


def capstone_version() -> str:
    import capstone

    return getattr(capstone, "__version__", "?")


class PythonHook:
    """The same state; the whole step runs in Python (the engine's block step)."""

    decoding = False  # (no native decoder: Python decodes every block)

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

    def insert(self, address: int, size: int, cost: int, ninsns: int, shadow: bool) -> None:
        # the engine's block dict is the table; only the code pages are kept here
        if self.pages is not None:
            self.pages.update(code_pages(address, size))

    def clear(self) -> None:
        if self.pages is not None:
            self.pages.clear()

    def set_decode(self, iret_exits: bool, off: bool) -> None:
        pass

    def enable_tsc(self, uc, on_rdtsc) -> None:
        # The 2.1.4 binding refuses RDTSC/RDTSCP in hook_add; the C core accepts them
        # (docs/unicorn.md). Same callback type as CPUID; returning 1 skips the native one.
        # One callback per instruction, so RDTSCP needs no look at the code to be told apart.
        self._tsc_cbs = {
            X.UC_X86_INS_RDTSC: HOOK_INSN_CPUID_CFUNC(lambda h, ud: on_rdtsc(False)),
            X.UC_X86_INS_RDTSCP: HOOK_INSN_CPUID_CFUNC(lambda h, ud: on_rdtsc(True)),
        }
        for insn, cb in self._tsc_cbs.items():
            uc._Uc__do_hook_add(UC_HOOK_INSN, cb, 1, 0, ctypes.c_int(insn))

    def insert_tsc(self, block: int, size: int, rip: int, tail: int) -> None:
        pass  # (_on_rdtsc finds the tail in the engine's block table)

    def watch(self, addresses: list[int]) -> None:
        pass

    def decode_stats(self) -> tuple[int, int]:
        return 0, 0
