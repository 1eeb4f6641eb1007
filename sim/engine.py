"""The vCPU engine: one Unicorn x86-64 engine that runs one vCPU's guest code.

A run is one slice of guest execution: it ends at the first of
- the cycle budget (checked at each basic-block start, so interrupts land within one block);
- an instruction that must exit before it executes (found by decoding blocks, sim.blockcost);
- an exception raised by guest code (Unicorn reports it; delivery is the model's job);
- an invalid opcode (VMCALL and the other VMX instructions arrive this way);
- an access to guest-physical memory that is not mapped (the EPT violation analogue);
- an open interrupt window, when the hypervisor asked for one.

Time: each new basic block is decoded once (capstone) and its cost kept; running a block adds
its cost. RDTSC/RDTSCP are hooked so the guest reads the virtual TSC (slice start + cycles spent,
down to the instruction) and never host time (docs/unicorn.md).

The per-block step runs in C (sim/_hotpath.c) and calls Python only for blocks it has not seen;
where that was not built, the same step runs in Python (sim/hotpath.py), with the same results.
"""

from __future__ import annotations

import ctypes
import operator
import struct
from enum import Enum

from unicorn import (
    UC_ARCH_X86,
    UC_ERR_FETCH_PROT,
    UC_ERR_FETCH_UNMAPPED,
    UC_ERR_INSN_INVALID,
    UC_ERR_READ_PROT,
    UC_ERR_READ_UNMAPPED,
    UC_ERR_WRITE_PROT,
    UC_ERR_WRITE_UNMAPPED,
    UC_HOOK_INSN,
    UC_HOOK_INSN_INVALID,
    UC_HOOK_INTR,
    UC_HOOK_MEM_FETCH_PROT,
    UC_HOOK_MEM_FETCH_UNMAPPED,
    UC_HOOK_MEM_READ_PROT,
    UC_HOOK_MEM_READ_UNMAPPED,
    UC_HOOK_MEM_WRITE_PROT,
    UC_HOOK_MEM_WRITE_UNMAPPED,
    UC_MEM_FETCH_PROT,
    UC_MEM_FETCH_UNMAPPED,
    UC_MEM_WRITE_PROT,
    UC_MEM_WRITE_UNMAPPED,
    UC_MODE_64,
    UC_PROT_EXEC,
    UC_PROT_READ,
    UC_PROT_WRITE,
    Uc,
    UcError,
)
from unicorn import x86_const as X
from unicorn.unicorn_py3.arch.intel import HOOK_INSN_CPUID_CFUNC

from acrn_sim.sim import paging
from acrn_sim.sim import syscall as sys_insn
from acrn_sim.sim.blockcost import (
    IRET_MNEMONICS,
    TSC_MNEMONICS,
    BlockDecoder,
    BlockInfo,
    Insn,
    strip_prefixes,
)
from acrn_sim.sim.hotpath import HP_STOP_WINDOW, NativeHook, PythonHook, cpl0, ple_first
from acrn_sim.sim.selftest import (
    CTX_ERROR_CODE_OFFSET,
    CTX_HFLAGS_OFFSET,
    CTX_OLD_EXCEPTION_OFFSET,
    CTX_SEGS_OFFSET,
    CTX_XCR0_OFFSET,
    HF_REAL_MODE_CLEAR,
    SEG_CACHE_SIZE,
)
from acrn_sim.sim.ucapi import RegBatch, Runner, SystemRegBatch

MSR_EFER = 0xC000_0080
TCG_BUFFER_SIZE = 32 << 20  # each engine's translated-code buffer (see Engine.__init__)
RFLAGS_IF = 1 << 9
EXC_WITH_ERROR_CODE = frozenset({8, 10, 11, 12, 13, 14, 17, 21})
MASK64 = (1 << 64) - 1
_MEM_INVALID = (
    UC_HOOK_MEM_READ_UNMAPPED
    | UC_HOOK_MEM_WRITE_UNMAPPED
    | UC_HOOK_MEM_FETCH_UNMAPPED
    | UC_HOOK_MEM_READ_PROT
    | UC_HOOK_MEM_WRITE_PROT
    | UC_HOOK_MEM_FETCH_PROT
)

# Register names the models use, mapped to Unicorn ids.
REG = {
    "rax": X.UC_X86_REG_RAX,
    "rbx": X.UC_X86_REG_RBX,
    "rcx": X.UC_X86_REG_RCX,
    "rdx": X.UC_X86_REG_RDX,
    "rsi": X.UC_X86_REG_RSI,
    "rdi": X.UC_X86_REG_RDI,
    "rbp": X.UC_X86_REG_RBP,
    "rsp": X.UC_X86_REG_RSP,
    "r8": X.UC_X86_REG_R8,
    "r9": X.UC_X86_REG_R9,
    "r10": X.UC_X86_REG_R10,
    "r11": X.UC_X86_REG_R11,
    "r12": X.UC_X86_REG_R12,
    "r13": X.UC_X86_REG_R13,
    "r14": X.UC_X86_REG_R14,
    "r15": X.UC_X86_REG_R15,
    "rip": X.UC_X86_REG_RIP,
    "rflags": X.UC_X86_REG_RFLAGS,
    "cr0": X.UC_X86_REG_CR0,
    "cr2": X.UC_X86_REG_CR2,
    "cr3": X.UC_X86_REG_CR3,
    "cr4": X.UC_X86_REG_CR4,
    "cs": X.UC_X86_REG_CS,
    "ss": X.UC_X86_REG_SS,
    "ds": X.UC_X86_REG_DS,
    "es": X.UC_X86_REG_ES,
    "fs": X.UC_X86_REG_FS,
    "gs": X.UC_X86_REG_GS,
    "fs_base": X.UC_X86_REG_FS_BASE,
    "gs_base": X.UC_X86_REG_GS_BASE,
}
# Read in one batch whenever the engine stops: what the VM-exit path reads (RIP, RAX for
# IN/OUT and hypercalls, and the guest state saved in the VMCS).
STOP_REGS = ("rip", "rax", "rsp", "rflags", "cr0", "cr3", "cr4")
_STOP_INDEX = {name: i for i, name in enumerate(STOP_REGS)}
_SNAP_VERBATIM = frozenset({"rip", "rax", "rsp"})  # held as written (see Engine.reg)
# The guest state a VM exit saves in the VMCS (hv/arch/vmx.py), picked out of a stop's registers
GUEST_STATE = ("rsp", "rflags", "cr0", "cr3", "cr4")
_guest_state_of_stop = operator.itemgetter(*[_STOP_INDEX[n] for n in GUEST_STATE])
# The 16 GPRs in ModRM/REX order (for instruction emulation).
GPR_ORDER = (
    "rax",
    "rcx",
    "rdx",
    "rbx",
    "rsp",
    "rbp",
    "rsi",
    "rdi",
    "r8",
    "r9",
    "r10",
    "r11",
    "r12",
    "r13",
    "r14",
    "r15",
)


# Sub-register names (as capstone prints them) -> the 64-bit register that holds them.
REG_ALIASES: dict[str, str] = {}
for _r in ("ax", "bx", "cx", "dx"):
    REG_ALIASES.update({"e" + _r: "r" + _r, _r: "r" + _r, _r[0] + "l": "r" + _r,
                        _r[0] + "h": "r" + _r})  # fmt: skip
for _r in ("si", "di", "sp", "bp"):
    REG_ALIASES.update({"e" + _r: "r" + _r, _r: "r" + _r, _r + "l": "r" + _r})
for _n in range(8, 16):
    REG_ALIASES.update({f"r{_n}d": f"r{_n}", f"r{_n}w": f"r{_n}", f"r{_n}b": f"r{_n}"})


def full_register(name: str) -> str:
    return REG_ALIASES.get(name, name)


class StopReason(Enum):
    BUDGET = "budget"
    INSN = "insn"  # an instruction that exits, at rip, not yet executed
    EXCEPTION = "exception"  # raised by guest code; not yet delivered
    INVALID_OPCODE = "invalid_opcode"  # #UD class, incl. VMCALL and VMX instructions
    MEM_VIOLATION = "mem_violation"  # guest-physical access outside the mapped memory
    WINDOW = "window"  # interrupt window open (RFLAGS.IF=1, no shadow)
    ERROR = "error"  # the engine stopped for no reason the model knows


# The two stops of nearly every exit, as module constants: in Python 3.11 each access to an
# Enum member through its class costs a metaclass call (~50 ns), and there are several per exit.
STOP_BUDGET, STOP_INSN = StopReason.BUDGET, StopReason.INSN


class Stop:
    """Why and where a run of guest code stopped. A field not given keeps its default here.
    (A plain class rather than a dataclass: there is a stop per exit, and a dataclass's
    __init__ would set all fifteen fields each time.)"""

    reason: StopReason
    cycles: int  # guest cycles executed in this slice
    rip: int
    insn: Insn | None = None
    vector: int = 0
    error_code: int | None = None
    software: bool = False  # INT n / INT3 / INTO: RIP already points past the instruction
    cr2: int = 0
    access: str = ""  # "r", "w" or "x" for MEM_VIOLATION
    address: int = 0  # linear address of a MEM_VIOLATION
    gpa: int = 0
    size: int = 0
    value: int = 0
    shadow: bool = False  # stopped right after STI / MOV SS: blocking by STI/MOV SS
    detail: str = ""

    def __init__(
        self, reason: StopReason, cycles: int, rip: int, insn: Insn | None = None, **fields
    ) -> None:
        # (The exit path passes `insn` by position: a keyword call costs ~65 ns more in 3.11.)
        self.reason = reason
        self.cycles = cycles
        self.rip = rip
        self.insn = insn
        for name, value in fields.items() if fields else ():
            if name not in Stop.__annotations__:
                raise TypeError(f"Stop has no field {name!r}")
            setattr(self, name, value)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"Stop({fields})"


# Ctrl-C while guest code runs: a KeyboardInterrupt raised inside a Unicorn callback would be
# swallowed where ctypes calls Python (it prints "Exception ignored" and returns 0), so the
# SIGINT handler calls interrupt() instead: it stops the engine that runs, and Engine.run
# raises KeyboardInterrupt once Unicorn has returned.
_running: list[Engine | None] = [None]
_interrupt_requested = [False]


def interrupt() -> bool:
    """From a SIGINT handler: True if guest code was running (it stops and Engine.run raises
    KeyboardInterrupt); False if not, and the handler may raise KeyboardInterrupt itself."""
    engine = _running[0]
    if engine is None:
        return False
    _interrupt_requested[0] = True
    engine.uc.emu_stop()
    return True


class Engine:
    """One vCPU's Unicorn engine plus its block cache and virtual TSC."""

    def __init__(
        self,
        decoder: BlockDecoder,
        rng_next: callable,
        hotpath: str = "native",
        detect_smc: bool = False,
    ) -> None:
        self.decoder = decoder
        self._rng_next = rng_next  # deterministic entropy for RDRAND/RDSEED
        uc = Uc(UC_ARCH_X86, UC_MODE_64)
        # Unicorn reserves 1 GiB of translation buffer per engine by default, and a failed
        # reservation ends the process from C: 64 vCPUs would ask for 64 GiB. Guest code here
        # is small; when the buffer fills, Unicorn flushes it and translates again.
        uc.ctl_set_tcg_buffer_size(TCG_BUFFER_SIZE)
        # Exits on, with none set: emu_start then ignores `until`, and Unicorn has no exit
        # translations to invalidate after each run (exiting instructions use stop hooks).
        uc.ctl_exits_enabled(True)
        self.uc = uc
        # The blocks Python decoded (all of them on the Python hook; on the native one, those
        # sim/_decode.c left to Python, and those looked up later: block())
        self.blocks: dict[tuple[int, int], BlockInfo] = {}
        self.exits: dict[int, Insn] = {}
        self._exit_hooks: dict[int, object] = {}  # address -> the stop hook's handle
        # While an NMI is blocked the engine also stops in front of IRET (set_iret_exits)
        self.iret_exits = False
        # While an AP runs its start-up code, CS may hold a real-mode selector whose base is
        # selector << 4 (RIP is an offset, block addresses are linear): see enter_real_mode.
        self._rm_cs_sel: int | None = None
        self.mapped: list[tuple[int, int]] = []
        self.tsc_base = 0
        self.window_exiting = False
        # CPUID exits unconditionally on VMX. Unicorn hooks it in place (UC_HOOK_INSN), so the
        # VMX model handles it without stopping the engine: cpuid_exit(rip, cycles into the
        # slice) emulates it and returns the cycles of the exit round trip, charged here.
        self.cpuid_exit = None
        # Called as on_new_block(address, size) when a block that holds a watched address runs
        # for the first time (a boot report's markers: watch_blocks).
        self.on_new_block = None
        self._watched: tuple[int, ...] = ()
        self._stop: Stop | None = None
        self._retranslate = False
        self._hook_error: BaseException | None = None
        self._batches: dict[tuple[str, ...], RegBatch] = {}
        hook_class = NativeHook if hotpath == "native" else PythonHook
        self.hotpath = hotpath
        self.hook = hook_class(
            uc, self._miss, self._py_step, self._on_smc if detect_smc else None, self._py_pause
        )
        self.smc_blocks_dropped = 0  # blocks decoded again after their bytes were written
        if hotpath == "native" and not detect_smc:
            # New blocks decoded in C (sim/_decode.c). Not with SMC detection, which drops
            # the blocks a store overlaps from Python's table (_on_smc).
            self.hook.enable_decode(uc, decoder)
        self.st = self.hook.state  # cycles, budget, current block: shared with the C hook
        # PAUSE-loop exiting's parameters; the hypervisor sets PLE_Gap/PLE_Window (set_ple)
        self.st.pause_cost = decoder.coster.cost("pause", "")
        self._rip = self._batch(("rip",))
        self._stop_regs = self._batch(STOP_REGS)
        self._snap: list[int] | None = None  # STOP_REGS' values at the last stop, until a write
        self._runner = Runner(uc, self.st, self._stop_regs)

        uc.hook_add(UC_HOOK_INTR, self._on_intr)
        uc.hook_add(UC_HOOK_INSN_INVALID, self._on_invalid)
        self._mem_hooks: list[int] = []
        self._hook_outside_ram([])  # nothing mapped yet: the whole address space
        # RDTSC/RDTSCP read the virtual TSC (now): in C on the native hook, which calls
        # _on_rdtsc only where it lacks the instruction's place in its block
        self.hook.enable_tsc(uc, self._on_rdtsc)
        # CPUID through the raw callback type (as the Python hook registers RDTSC): one exit per
        # CPUID, without the binding's wrapper layer
        self._cpuid_cb = HOOK_INSN_CPUID_CFUNC(lambda _h, _ud: self._on_cpuid())
        uc._Uc__do_hook_add(UC_HOOK_INSN, self._cpuid_cb, 1, 0, ctypes.c_int(X.UC_X86_INS_CPUID))
        # Unicorn's SYSCALL only calls its hooks: the CPU model does the rest (sim/syscall.py)
        uc.hook_add(UC_HOOK_INSN, self._on_syscall, None, 1, 0, X.UC_X86_INS_SYSCALL)

    def close(self) -> None:
        """Free this engine now: its Unicorn instance (with its translation buffer) and its
        native hook state. Its hooks are ctypes callbacks bound to its own methods, a
        reference cycle through objects the cycle collector cannot see, so dropping the
        engine is not enough: a VM that resets itself in a loop would keep every engine it
        ever had. The engine is not usable afterwards."""
        uc, self.uc = self.uc, None
        if uc is None:
            return
        # The binding keeps its callbacks in these (2.1.4 internals, pinned), and closes the
        # handle through its finalizer, which also stops a second close at collection.
        uc._callbacks.clear()
        uc._mmio_callbacks.clear()
        uc._Uc__finalizer()
        self.hook = None
        self._runner = None
        self._cpuid_cb = None
        self._batches.clear()
        self._event_regs = self._intr_ctx = None
        self.cpuid_exit = None

    # ----------------------------------------------------------------- memory
    def map_memory(self, regions: list[tuple[int, int, str, int]]) -> None:
        """(gpa, size, perms 'rwx', host pointer) runs, derived from the EPT by the caller; in
        place of the pointer, an object with read/write for a device's registers (_map_mmio)."""
        for gpa, size in self.mapped:
            self.uc.mem_unmap(gpa, size)
        self.mapped = []
        for gpa, size, perms, ptr in regions:
            if not isinstance(ptr, int):  # a device's registers (MmioRegion): no RAM behind
                self._map_mmio(gpa, size, ptr)
                self.mapped.append((gpa, size))
                continue
            prot = (
                (UC_PROT_READ if "r" in perms else 0)
                | (UC_PROT_WRITE if "w" in perms else 0)
                | (UC_PROT_EXEC if "x" in perms else 0)
            )
            self.uc.mem_map_ptr(gpa, size, prot, ptr)
            self.mapped.append((gpa, size))
        self._hook_outside_ram([(gpa, size) for gpa, size, perms, _ in regions if perms == "rwx"])
        self.flush_blocks()

    def _map_mmio(self, gpa: int, size: int, region) -> None:
        """A range whose accesses call region.read(offset, size, cycles) and
        region.write(offset, size, value, cycles) as the guest's instruction runs, with no
        stop; `cycles`: how far into the run the access is (the region may `charge` more)."""

        def read(uc: Uc, offset: int, n: int, _ud: object) -> int:
            try:
                return region.read(offset, n, self._into_run())
            except BaseException as e:  # never let an exception vanish inside Unicorn
                self._hook_error = e
                uc.emu_stop()
                return 0

        def write(uc: Uc, offset: int, n: int, value: int, _ud: object) -> None:
            try:
                region.write(offset, n, value, self._into_run())
            except BaseException as e:
                self._hook_error = e
                uc.emu_stop()

        self.uc.mmio_map(gpa, size, read, None, write, None)

    def _into_run(self) -> int:
        """Cycles from the run's start to the access executing now. Inside an MMIO callback
        Unicorn reports the block's start as RIP: the time is the block's start plus what the
        block's earlier accesses charged, at most the block's own cost early."""
        return (self.now(self.reg("rip")) - self.tsc_base) & MASK64

    def charge(self, cycles: int) -> None:
        """Add `cycles` to the running slice (work done inside an instruction, no stop)."""
        self.st.cycles += cycles

    def _hook_outside_ram(self, rwx: list[tuple[int, int]]) -> None:
        """Put the unmapped/protection hook on every guest-physical range but the RWX RAM.
        Unicorn keeps a page's stores on its slow path while any such hook covers the page
        (uc_mem_hook_installed in notdirty_write, qemu/accel/tcg/cputlb.c), so a hook over
        the whole address space would slow every guest store. The hook never fires in RWX RAM,
        so leaving it out there changes nothing else."""
        for handle in self._mem_hooks:
            self.uc.hook_del(handle)
        self._mem_hooks = []
        begin = 0
        for gpa, size in sorted(rwx) + [(MASK64 + 1, 0)]:
            if gpa > begin:  # [begin, gpa - 1] is not RWX RAM (hook bounds are inclusive)
                self._mem_hooks.append(
                    self.uc.hook_add(_MEM_INVALID, self._on_mem_invalid, None, begin, gpa - 1)
                )
            begin = max(begin, gpa + size)

    def flush_blocks(self) -> None:
        self.uc.ctl_flush_tb()
        self.blocks.clear()
        self.hook.clear()

    def set_iret_exits(self, on: bool) -> None:
        """Stop in front of every IRET (on), or no longer (off): NMI blocking lasts until the
        next IRET (SDM Vol. 3 §6.7.1) and Unicorn runs IRET natively, so the CPU model must
        see it. Rare (once per NMI each way): every block is decoded and translated again,
        and the IRET stop hooks go when it is turned off."""
        if on == self.iret_exits:
            return
        self.iret_exits = on
        self.hook.set_decode(on, self._rm_cs is not None)
        if not on:
            for address in [a for a, i in self.exits.items() if i.mnemonic in IRET_MNEMONICS]:
                del self.exits[address]
                self.hook.remove_exit(self.uc, self._exit_hooks.pop(address))
        self.flush_blocks()

    @property
    def cycles(self) -> int:
        return self.st.cycles

    @property
    def cur(self) -> BlockInfo | None:
        """The block executing now (the last one charged), if any in this slice."""
        st = self.st
        return self.block(st.cur_address, st.cur_size) if st.cur_size else None

    def block(self, address: int, size: int) -> BlockInfo | None:
        """The decoded block (address, size) that ran. One that sim/_decode.c decoded is
        decoded here again from its bytes, once, when Python first needs its instructions
        (a fault in it, the interrupt shadow); the C decoder took only blocks without
        stops, and both decode the same bytes alike."""
        info = self.blocks.get((address, size))
        if info is None and self.hook.decoding:
            try:
                code = self.read_linear(address, size, fetch=True)
            except paging.PageFault:
                return None
            info = self.decoder.decode_block(code, address, self.code_bits(), self.iret_exits)
            self.blocks[(address, size)] = info
        return info

    @property
    def tsc_aux(self) -> int:
        """IA32_TSC_AUX (hv/guest/vmsr.py), which RDTSCP loads: kept in the hook's state."""
        return self.st.tsc_aux

    @tsc_aux.setter
    def tsc_aux(self, value: int) -> None:
        self.st.tsc_aux = value

    @property
    def _rm_cs(self) -> int | None:
        return self._rm_cs_sel

    @_rm_cs.setter
    def _rm_cs(self, selector: int | None) -> None:
        # The C decoder takes CS's base as 0; while a real-mode start-up selector is loaded,
        # Python decodes every block (code_bits, _real_mode_cs_base).
        self._rm_cs_sel = selector
        self.hook.set_decode(self.iret_exits, selector is not None)

    def watch_blocks(self, addresses, on_new_block) -> None:
        """Call on_new_block(address, size) when a block that holds one of `addresses` runs
        for the first time; with no addresses, stop watching."""
        self._watched = tuple(sorted(addresses))
        self.on_new_block = on_new_block if self._watched else None
        self.hook.watch(list(self._watched))

    def decode_stats(self) -> tuple[int, int]:
        """(new blocks decoded in C, new blocks decoded in Python) so far, on the native hot
        path; (0, 0) on the Python one."""
        return self.hook.decode_stats()

    def read_phys(self, gpa: int, size: int) -> bytes:
        """Guest-physical read through the mapping; unmapped bytes read as all ones."""
        try:
            return bytes(self.uc.mem_read(gpa, size))
        except UcError:
            out = bytearray()
            for a in range(gpa, gpa + size):
                try:
                    out += self.uc.mem_read(a, 1)
                except UcError:
                    out.append(0xFF)
            return bytes(out)

    def write_phys(self, gpa: int, data: bytes) -> bool:
        try:
            self.uc.mem_write(gpa, data)
            return True
        except UcError:
            return False

    def paging_state(self) -> paging.PagingState:
        held = self._held_paging_state
        if held is not None:  # (an event delivery's: hold_paging_state)
            return held
        cr0, cr3, cr4 = self.regs(["cr0", "cr3", "cr4"])
        return paging.PagingState(cr0, cr3, cr4, self.uc.msr_read(MSR_EFER))

    def translate(self, linear: int, write: bool = False, fetch: bool = False) -> int:
        return paging.translate(linear, self.paging_state(), self.read_phys, write, fetch)

    def read_linear(self, linear: int, size: int, fetch: bool = False) -> bytes:
        """Read through the guest's page tables. Raises paging.PageFault."""
        if self.hook.decoding:  # the same walk in C (sim/_decode.c)
            return _or_fault(self.hook.read_linear(linear, size, fetch))
        st = self.paging_state()
        out = b""
        while size:
            chunk = min(size, 0x1000 - (linear & 0xFFF))
            gpa = paging.translate(linear, st, self.read_phys, fetch=fetch)
            out += self.read_phys(gpa, chunk)
            linear += chunk
            size -= chunk
        return out

    def write_linear(self, linear: int, data: bytes) -> bool:
        """Write through the guest's page tables. Raises PageFault; False if not RAM."""
        if self.hook.decoding:  # the same walk in C (sim/_decode.c)
            return _or_fault(self.hook.write_linear(linear, data))
        st = self.paging_state()
        ok = True
        while data:
            chunk = min(len(data), 0x1000 - (linear & 0xFFF))
            gpa = paging.translate(linear, st, self.read_phys, write=True)
            ok &= self.write_phys(gpa, data[:chunk])
            linear += chunk
            data = data[chunk:]
        return ok

    # -------------------------------------------------------------- registers
    # The registers read at every stop (`_stop_regs`) are kept until the next run: the
    # hypervisor's view of the guest's registers at the VM exit (ACRN saves the guest's context
    # at each exit and its handlers read and write that copy, vcpu_get_gpreg/vcpu_set_gpreg).
    # A write goes to Unicorn at once; the copy follows it for RIP and the GPRs in it, which
    # Unicorn holds exactly as written, and is dropped for any other register (a CR or RFLAGS
    # write may be adjusted by the CPU model, or change what other registers read).
    def reg(self, name: str) -> int:
        snap = self._snap
        if snap is not None and name in _STOP_INDEX:
            return snap[_STOP_INDEX[name]]
        return self._batch((name,)).read()[0]

    def set_reg(self, name: str, value: int) -> None:
        self._batch((name,)).write((value,))
        self._follow(name, value)

    def set_rip(self, value: int) -> None:
        self._rip.write((value,))
        snap = self._snap
        if snap is not None:  # _follow("rip", value), without the call: once per exit
            snap[0] = value & MASK64

    def _follow(self, name: str, value: int) -> None:
        """Keep the register copy equal to Unicorn's after a write of `name`."""
        snap = self._snap
        if snap is not None:
            if name in _SNAP_VERBATIM:
                snap[_STOP_INDEX[name]] = value & MASK64
            else:
                self._snap = None

    def _batch(self, names: tuple[str, ...]) -> RegBatch:
        batch = self._batches.get(names)
        if batch is None:
            batch = self._batches[names] = RegBatch(self.uc, [REG[x] for x in names])
        return batch

    def regs(self, names: list[str] | tuple[str, ...]) -> list[int]:
        snap = self._snap
        if snap is not None:
            try:
                return [snap[_STOP_INDEX[n]] for n in names]
            except KeyError:
                pass
        return self._batch(tuple(names)).read()

    def guest_state(self) -> tuple[int, ...]:
        """GUEST_STATE's registers: from the stop's copy in one C call, when there is one."""
        snap = self._snap
        if snap is not None:
            return _guest_state_of_stop(snap)
        return tuple(self._batch(GUEST_STATE).read())

    def set_regs(self, values: dict[str, int]) -> None:
        self._snap = None
        self._batch(tuple(values)).write(values.values())

    def msr_read(self, index: int) -> int:
        return self.uc.msr_read(index)

    def msr_write(self, index: int, value: int) -> None:
        self.uc.msr_write(index, value)

    def table_reg(self, name: str) -> tuple[int, int]:
        """(base, limit) of gdtr/idtr."""
        reg = X.UC_X86_REG_GDTR if name == "gdtr" else X.UC_X86_REG_IDTR
        _, base, limit, _ = self.uc.reg_read(reg)
        return base, limit

    def uc_tr_base(self) -> int:
        return self.uc.reg_read(X.UC_X86_REG_TR)[1]

    def task_register(self) -> tuple[int, int, int, int]:
        """TR as (selector, base, limit, attributes)."""
        return self.uc.reg_read(X.UC_X86_REG_TR)

    def set_table_reg(self, name: str, base: int, limit: int) -> None:
        reg = X.UC_X86_REG_GDTR if name == "gdtr" else X.UC_X86_REG_IDTR
        self.uc.reg_write(reg, (0, base, limit, 0))

    def edit_cpu_state(self, edit) -> None:
        """edit(address) changes the engine's CPU state in place, between a context save and
        restore: for what no register id reaches (segment caches, hflags, XCR0; the offsets
        are checked at start-up, sim/selftest.py)."""
        self._snap = None
        ctx = self.uc.context_save()
        edit(ctx.context.value)
        self.uc.context_restore(ctx)

    def xcr0(self) -> int:
        ctx = self.uc.context_save()
        return ctypes.c_uint64.from_address(ctx.context.value + CTX_XCR0_OFFSET).value

    def set_xcr0(self, value: int) -> None:
        """XCR0 as XSETBV sets it: Unicorn keeps it in its CPU state, where XGETBV, XSAVE and
        XRSTOR read it, and has no register id for it."""

        def edit(ptr: int) -> None:
            ctypes.c_uint64.from_address(ptr + CTX_XCR0_OFFSET).value = value

        self.edit_cpu_state(edit)

    def enter_real_mode(self, cs_selector: int) -> None:
        """Put a fresh engine into the state an AP gets from a Startup IPI (SDM §8.4.4.1,
        §9.1.1): real mode, CS = cs_selector with base cs_selector << 4, IP = 0, the other
        segments 0. Unicorn's x86-64 engine writes only selectors through reg_write
        (docs/unicorn.md), so the hidden segment caches and the mode flags are set in the
        context blob at offsets the start-up self-test checks (sim/selftest.py)."""
        uc = self.uc
        self._snap = None
        uc.reg_write(X.UC_X86_REG_CR4, 0x20)
        uc.reg_write(X.UC_X86_REG_CR0, 0x8000_0011)
        uc.reg_write(X.UC_X86_REG_CR0, 0x11)  # leaves long mode (LMA off)
        uc.msr_write(MSR_EFER, 0)
        uc.reg_write(X.UC_X86_REG_CR4, 0)
        uc.reg_write(X.UC_X86_REG_CR0, 0x6000_0010)  # INIT's CR0: CD, NW, ET; PE off
        ctx = uc.context_save()
        ptr = ctx.context.value
        hflags = ctypes.c_uint32.from_address(ptr + CTX_HFLAGS_OFFSET)
        hflags.value &= ~HF_REAL_MODE_CLEAR
        for i in range(6):  # ES, CS, SS, DS, FS, GS: selector, base, limit, flags
            seg = ptr + CTX_SEGS_OFFSET + i * SEG_CACHE_SIZE
            sel = cs_selector if i == 1 else 0
            ctypes.c_uint32.from_address(seg).value = sel
            ctypes.c_uint64.from_address(seg + 8).value = sel << 4
            ctypes.c_uint32.from_address(seg + 16).value = 0xFFFF
            ctypes.c_uint32.from_address(seg + 20).value = 0x9B00 if i == 1 else 0x9300
        uc.context_restore(ctx)
        self.set_regs({"rip": 0, "rflags": 2, "rsp": 0})
        self._rm_cs = cs_selector
        self.flush_blocks()

    def _real_mode_cs_base(self) -> int:
        """CS's base while the AP's start-up selector is loaded, else 0 (flat segments)."""
        if self._rm_cs is None:
            return 0
        cr0, cs = self.regs(["cr0", "cs"])
        if cs == self._rm_cs or not cr0 & paging.CR0_PE:
            return cs << 4
        self._rm_cs = None  # a far jump loaded a protected-mode CS: flat from here on
        return 0

    def code_bits(self) -> int:
        """16, 32 or 64: the current code size, from CR0.PE, EFER.LMA and the CS descriptor."""
        cr0, cs = self.regs(["cr0", "cs"])
        if not cr0 & paging.CR0_PE or (self._rm_cs is not None and cs == self._rm_cs):
            return 16
        base, limit = self.table_reg("gdtr")
        if (cs | 7) > limit:
            return 32
        try:
            hi = struct.unpack("<I", self.read_linear(base + (cs & ~7) + 4, 4))[0]
        except paging.PageFault:
            return 32
        if self.uc.msr_read(MSR_EFER) & paging.EFER_LMA and hi & (1 << 21):
            return 64
        return 32 if hi & (1 << 22) else 16

    def decode_at(self, linear: int) -> Insn | None:
        try:
            code = self.read_linear(linear, 15, fetch=True)
        except paging.PageFault:
            return None
        return self._first_insn(code, linear)

    def _first_insn(self, code: bytes, linear: int) -> Insn | None:
        """The instruction `code` (read at `linear`) starts with, if it decodes."""
        insns = self.decoder.decode_insns(code, linear, self.code_bits())
        return insns[0] if insns else None

    def set_ple(self, gap: int, window: int) -> None:
        """The VMCS's PLE_Gap and PLE_Window (SDM Vol. 3 §25.1.3), which the hook uses to
        decide PAUSE-loop exiting (hp_pause_hook, _py_pause; the state: sim/hotpath.py)."""
        st = self.st
        st.ple_gap, st.ple_window = gap, window

    # ------------------------------------------------------------------ run
    def run(self, budget: int, tsc_base: int) -> Stop:
        """Run guest code for at most ~`budget` cycles starting at the current RIP."""
        st = self.st
        self.tsc_base = tsc_base
        st.tsc_base = tsc_base & MASK64  # (the PAUSE hook's clock)
        slow = self.window_exiting  # (the Python hook checks it itself)
        snap, self._snap = self._snap, None  # the guest is about to change its registers
        new_slice: int | None = budget  # None in a further round of the same slice
        while True:
            self._stop = None
            self._retranslate = False
            rip = snap[0] if snap is not None else self._rip.read()[0]
            pc = rip if self._rm_cs is None else rip + self._real_mode_cs_base()
            insn = self.exits.get(pc)
            if insn is not None:  # stopped in front of an exiting instruction already
                if new_slice is not None:
                    self._runner.reset(budget, slow)
                return Stop(STOP_INSN, st.cycles, rip, insn)
            _running[0] = self
            try:
                err, budget_stop, cycles, values = self._runner.run(rip, new_slice, slow)
            finally:
                _running[0] = None
            if _interrupt_requested[0]:
                _interrupt_requested[0] = False
                raise KeyboardInterrupt
            new_slice = None
            if self._hook_error is not None:
                e, self._hook_error = self._hook_error, None
                raise e
            snap = values  # (a retranslation round starts where this one stopped)
            if self._retranslate:
                continue
            stop = self._stop
            if stop is None and budget_stop == HP_STOP_WINDOW:  # (the native hook's check)
                stop = Stop(StopReason.WINDOW, 0, st.stop_address)
            elif stop is None and budget_stop:
                cur = self.cur
                shadow = cur is not None and cur.shadow_after and cur.end == st.stop_address
                stop = Stop(STOP_BUDGET, 0, st.stop_address, shadow=shadow)
            self._snap = values
            rip = values[0]
            if stop is None:
                pc = rip if self._rm_cs is None else rip + self._real_mode_cs_base()
                insn = self.exits.get(pc)
                if not err and insn is not None:
                    # A stop hook ended the run in front of it: its block was charged only the
                    # part in front of it (BlockInfo.cost)
                    return Stop(STOP_INSN, cycles, rip, insn)
                detail = str(UcError(err)) if err else "engine stopped"
                return Stop(StopReason.ERROR, cycles, rip, detail=detail)
            if err and err not in _EXPECTED_ERRORS:
                return Stop(StopReason.ERROR, cycles, rip, detail=str(UcError(err)))
            stop.cycles = cycles
            return stop

    def _uncharge_from(self, rip: int) -> None:
        """The run stopped at `rip` inside the current block (a fault): the block's
        instructions from there on did not run."""
        cur = self.cur
        not_run = cur.tail.get(rip) if cur is not None else None
        if not_run is not None:
            st = self.st
            st.cycles -= not_run[0]
            st.insns -= not_run[1]
            if rip == cur.address:
                st.blocks -= 1  # none of it ran

    # ---------------------------------------------------------------- hooks
    def _on_smc(self, address: int, size: int) -> None:
        """A guest store hit a page holding decoded code (only with SMC detection). The blocks
        it overlaps are dropped: Unicorn translates them again (QEMU's self-modifying-code
        handling) and the block hook meets them as new, so they are decoded and costed again.
        Simplified: detection is by linear address (a store through another virtual alias of
        the code, or a device's DMA into it, is not seen)."""
        try:
            end = address + size
            stale = [k for k, b in self.blocks.items() if b.address < end and address < b.end]
            if not stale:
                return
            for k in stale:
                del self.blocks[k]
            self.smc_blocks_dropped += len(stale)
            self.hook.clear()
            for b in self.blocks.values():
                self._insert(b)
        except BaseException as e:  # never let an exception vanish inside Unicorn
            self._hook_error = e
            self.uc.emu_stop()

    def _miss(self, address: int, size: int) -> int:
        """A block not seen before: decode and cost it. -1 if the engine had to stop."""
        try:
            info = self._new_block(address, size)
        except paging.PageFault as pf:
            # The guest's page tables no longer map the code that Unicorn fetched (it changed
            # them under its own running code and Unicorn's TLB still held the old entry): a
            # guest event, not the model's. The run stops in front of the block with the
            # instruction-fetch #PF, which the model delivers (or turns into a VM exit).
            self.uc.reg_write(X.UC_X86_REG_CR2, pf.linear)
            self._stop = Stop(
                StopReason.EXCEPTION, 0, address, vector=14, error_code=pf.error_code,
                cr2=pf.linear,
            )  # fmt: skip
            self.uc.emu_stop()
            return -1
        except BaseException as e:  # never let an exception vanish inside Unicorn
            self._hook_error = e
            self.uc.emu_stop()
            return -1
        if info is None:
            return -1
        self._insert(info)
        return info.cost

    def _insert(self, info: BlockInfo) -> None:
        """Give the hook a block Python decoded: its cost, and the tail of each RDTSC in it
        (what the native hook's RDTSC takes off the cycles charged: hp_rdtsc_hook)."""
        self.hook.insert(info.address, info.size, info.cost, info.ninsns, info.shadow_after)
        for insn in info.insns[: info.ninsns]:
            if strip_prefixes(insn.mnemonic) in TSC_MNEMONICS:
                tail = info.tail[insn.address][0]
                self.hook.insert_tsc(info.address, info.size, insn.address, tail)

    def _py_step(self, address: int, size: int) -> None:
        """The Python hook's per-block step: the same steps as hp_block_hook in _hotpath.c,
        the interrupt-window check included (SDM §25.2: exit before an instruction with
        RFLAGS.IF = 1 and no STI/MOV SS blocking)."""
        info = self.blocks.get((address, size))
        if info is None:
            if self._miss(address, size) < 0:
                return
            info = self.blocks[(address, size)]
        st = self.st
        if st.cycles >= st.budget:
            st.stop = 1
            st.stop_address = address
            self.uc.emu_stop()
            return
        if self.window_exiting:
            cur = self.cur
            shadow = cur is not None and cur.shadow_after and cur.end == address
            if not shadow and self.uc.reg_read(X.UC_X86_REG_EFLAGS) & RFLAGS_IF:
                self._stop = Stop(StopReason.WINDOW, 0, address)
                self.uc.emu_stop()
                return
        st.cycles += info.cost
        st.cur_address = address
        st.cur_size = size
        if info.ninsns:  # (a block that starts with an exiting instruction runs none of it)
            st.blocks += 1
        st.insns += info.ninsns

    def _py_pause(self, address: int, size: int) -> None:
        """hp_pause_hook in Python (a PAUSE's code hook): a PAUSE that does not VM-exit is
        done here, with the rest of its block charged as a block of its own; anything else
        stops the engine in front of it (see _hotpath.c for the why of each step)."""
        try:
            st = self.st
            now = (st.tsc_base + st.cycles) & MASK64
            at_cpl0 = cpl0(*self.regs(("cs", "cr0")))
            first = ple_first(st, now) if at_cpl0 else st.ple_first
            nxt, end = address + size, st.cur_address + st.cur_size
            if (
                st.slow
                or (at_cpl0 and (now - first) & MASK64 > st.ple_window)
                or st.cycles + st.pause_cost >= st.budget
                or not 0 < size <= 15
                or not st.cur_size
                or address < st.cur_address
                or nxt > end
            ):
                self.uc.emu_stop()
                return
            cost = ninsns = 0
            if nxt < end:
                rest = self.blocks.get((nxt, end - nxt))
                if rest is None:
                    self.uc.emu_stop()
                    return
                cost, ninsns = rest.cost, rest.ninsns
                st.cur_address, st.cur_size = nxt, end - nxt
                if ninsns:
                    st.blocks += 1
            if at_cpl0:
                st.ple_valid, st.ple_first = 1, first
                st.ple_last = (now + st.pause_cost) & MASK64
            st.cycles += st.pause_cost + cost
            st.insns += 1 + ninsns
            st.pauses += 1
        except BaseException as e:  # never let an exception vanish inside Unicorn
            self._hook_error = e
            self.uc.emu_stop()

    def _new_block(self, address: int, size: int) -> BlockInfo | None:
        code = self.read_linear(address, size, fetch=True)
        bits = self.code_bits()
        info = self.decoder.decode_block(code, address, bits, self.iret_exits)
        new_stops = [
            i for i in info.insns if i.address in info.stops and i.address not in self.exits
        ]
        if new_stops:
            # Translated before we knew its exiting instructions: put a stop hook on each
            # (a one-address UC_HOOK_CODE, which ends the run in front of it) and have
            # Unicorn translate the block again, with the hooks in it (hooks added after a
            # translation apply only to new translations).
            for insn in new_stops:
                self.exits[insn.address] = insn
                # A PAUSE's hook decides PAUSE-loop exiting and stops only when it must
                add = self.hook.add_pause if insn.mnemonic == "pause" else self.hook.add_exit
                self._exit_hooks[insn.address] = add(self.uc, insn.address)
            self.uc.ctl_remove_cache(address, address + size)
            self._retranslate = True
            self.uc.emu_stop()
            return None
        self.blocks[(address, size)] = info
        # What follows each PAUSE, to the block's end: the PAUSE hook charges it as a block
        # of its own when the PAUSE does not exit, from this table (it decodes nothing).
        # Decoded from the same bytes, so it is the block a run that starts there would get.
        for insn in info.insns:
            rest = insn.address + insn.size
            key = (rest, info.end - rest)
            if insn.mnemonic == "pause" and rest < info.end and key not in self.blocks:
                r = self.decoder.decode_block(code[rest - address :], rest, bits, self.iret_exits)
                self.blocks[key] = r
                self._insert(r)
        if self.on_new_block is not None and any(address <= a < info.end for a in self._watched):
            self.on_new_block(address, size)
        return info

    def _on_intr(self, uc: Uc, intno: int, _ud: object) -> None:
        try:
            # Unicorn keeps QEMU's old_exception across our own delivery, so a second fault
            # would turn into a bogus #DF; reset it (Unicorn issue #1883) and read the error code.
            ctx = self._intr_ctx
            if ctx is None:
                ctx = self._intr_ctx = uc.context_save()
            else:  # (the same save, into the context kept for it: no allocation)
                uc.context_update(ctx)
            ptr = ctx.context.value
            error_code = ctypes.c_uint32.from_address(ptr + CTX_ERROR_CODE_OFFSET).value
            ctypes.c_int32.from_address(ptr + CTX_OLD_EXCEPTION_OFFSET).value = -1
            uc.context_restore(ctx)
            rip = self._rip.read()[0]
            cur = self.cur
            last = cur.last() if cur is not None else None
            software = (
                last is not None
                and rip == cur.end
                and last.mnemonic in ("int", "int3", "into", "int1")
            )
            if not software:
                self._uncharge_from(rip)
            # (the fields set one by one: Stop's keyword form checks each name, once per fault)
            stop = Stop(StopReason.EXCEPTION, 0, rip)
            stop.vector = intno
            stop.error_code = error_code if intno in EXC_WITH_ERROR_CODE and not software else None
            stop.software = software
            stop.cr2 = self._batch(("cr2",)).read()[0] if intno == 14 else 0
            self._stop = stop
        except BaseException as e:
            self._hook_error = e
        uc.emu_stop()

    def _on_invalid(self, uc: Uc, _ud: object) -> bool:
        try:
            rip = self._rip.read()[0]
            self._uncharge_from(rip)
            self._stop = Stop(StopReason.INVALID_OPCODE, 0, rip, self._invalid_insn(rip))
        except BaseException as e:
            self._hook_error = e
        # Returning False would leave QEMU's #UD pending, re-raised by the next emu_start
        # (measured); "handled" plus a stop request ends the run with RIP on the instruction.
        uc.emu_stop()
        return True

    def _on_mem_invalid(
        self, uc: Uc, access: int, address: int, size: int, value: int, _ud: object
    ) -> bool:
        try:
            rip = uc.reg_read(X.UC_X86_REG_RIP)
            self._uncharge_from(rip)
            kind = (
                "w"
                if access in (UC_MEM_WRITE_UNMAPPED, UC_MEM_WRITE_PROT)
                else "x"
                if access in (UC_MEM_FETCH_UNMAPPED, UC_MEM_FETCH_PROT)
                else "r"
            )
            try:
                gpa = self.translate(address)
            except paging.PageFault:
                gpa = address
            self._stop = Stop(
                StopReason.MEM_VIOLATION,
                0,
                rip,
                access=kind,
                address=address,
                gpa=gpa,
                size=size,
                value=value & MASK64,
            )
        except BaseException as e:
            self._hook_error = e
        return False

    def now(self, rip: int) -> int:
        """Virtual TSC at the instruction `rip` of the block being executed."""
        cur = self.cur
        t = self.tsc_base + self.st.cycles
        if cur is not None:
            t -= cur.tail.get(rip, (0, 0))[0]  # the instructions from `rip` on have not run
        return t & MASK64

    def _on_rdtsc(self, rdtscp: bool) -> int:
        try:
            tsc = self.now(self.reg("rip"))
            self.set_regs({"rax": tsc & 0xFFFF_FFFF, "rdx": tsc >> 32})
            if rdtscp:  # RDTSCP also loads IA32_TSC_AUX
                self.set_reg("rcx", self.tsc_aux)
        except BaseException as e:
            self._hook_error = e
            self.uc.emu_stop()
        return 1

    def _on_cpuid(self) -> int:
        try:
            rip = self._rip.read()[0]
            self.st.cycles += self.cpuid_exit(rip, (self.now(rip) - self.tsc_base) & MASK64)
        except BaseException as e:
            self._hook_error = e
            self.uc.emu_stop()
        return 1  # the model did the CPUID: skip Unicorn's own

    def _on_syscall(self, uc: Uc, _ud: object) -> None:
        try:
            rip = uc.reg_read(X.UC_X86_REG_RIP)
            vector = sys_insn.syscall(self, rip)
            if vector is not None:
                self._uncharge_from(rip)
                self._stop = Stop(StopReason.EXCEPTION, 0, rip, vector=vector)
                uc.emu_stop()
        except BaseException as e:
            self._hook_error = e
            uc.emu_stop()

    def rdrand_value(self, bits: int) -> int:
        return self._rng_next(bits)

    # ------------------------------------------------------- exception delivery
    _event_regs: SystemRegBatch | None = None  # (made at the first event_state)
    _intr_ctx = None  # _on_intr's saved CPU state (a UcContext), allocated once
    _held_paging_state: paging.PagingState | None = None

    def hold_paging_state(self, state: paging.PagingState | None) -> None:
        """paging_state() answers `state` until this is called with None: for an event
        delivery, which reads the IDT, the GDT, maybe the TSS, and writes the stack through
        the page tables, and changes none of CR0, CR3, CR4 and EFER meanwhile."""
        self._held_paging_state = state

    def event_state(self) -> list[int]:
        """What delivering an event through the IDT reads (sim/events.py), in one C call:
        EVENT_REGS' values, then IDTR's base and limit, GDTR's base and limit, and EFER."""
        batch = self._event_regs
        if batch is None:
            batch = self._event_regs = SystemRegBatch(
                self.uc,
                [REG[n] for n in EVENT_REGS],
                [X.UC_X86_REG_IDTR, X.UC_X86_REG_GDTR],
                [MSR_EFER],
            )
        return batch.read()

    def _invalid_insn(self, rip: int) -> Insn | None:
        """The instruction of an invalid-opcode stop, as far as the VM-exit decision needs
        it: decoded when its bytes can be a VMX instruction (which arrive as #UD, CPUID.1:
        ECX.VMX = 0 in Unicorn), else None, as for bytes that do not decode. Decoding costs a
        read of the GDT and capstone; a #UD storm of random code would pay it per fault."""
        try:
            code = self.read_linear(rip, 15, fetch=True)
        except paging.PageFault:
            return None
        return self._first_insn(code, rip) if may_be_vmx(code) else None


_EXPECTED_ERRORS = frozenset(
    {
        UC_ERR_INSN_INVALID,
        UC_ERR_READ_UNMAPPED,
        UC_ERR_WRITE_UNMAPPED,
        UC_ERR_FETCH_UNMAPPED,
        UC_ERR_READ_PROT,
        UC_ERR_WRITE_PROT,
        UC_ERR_FETCH_PROT,
    }
)


def _or_fault(out):
    """The C page walk's answer (sim/_decode.c): the result, or raise its (linear address,
    error code) as the page fault it is."""
    if type(out) is tuple:
        raise paging.PageFault(*out)
    return out


# What Engine.event_state reads besides the table registers and EFER
EVENT_REGS = ("rip", "rsp", "rflags", "cs", "ss", "cr0", "cr3", "cr4")
# The legacy prefixes and REX (SDM Vol. 2A §2.1.1, §2.2.1), and the second opcode byte after
# 0F of every VMX instruction (SDM Vol. 3, "VMX Instruction Reference"): 0F 01 (VMCALL, VMLAUNCH,
# VMRESUME, VMXOFF, VMFUNC), 0F 78 and 0F 79 (VMREAD, VMWRITE), 0F C7 (VMPTRLD, VMPTRST,
# VMCLEAR, VMXON), 0F 38 (INVEPT, INVVPID). None has a VEX form.
_PREFIX_BYTES = frozenset(b"\x26\x2e\x36\x3e\x64\x65\x66\x67\xf0\xf2\xf3") | frozenset(
    range(0x40, 0x50)
)
_VMX_OPCODE2 = frozenset({0x01, 0x38, 0x78, 0x79, 0xC7})


def may_be_vmx(code: bytes) -> bool:
    """Whether an instruction that starts with `code` can be a VMX instruction: after any
    prefixes (REX counted in every mode: only more code passes), 0F and one of their second
    bytes. A superset: whatever the decoder would call a VMX instruction passes."""
    i, n = 0, len(code)
    while i < n and code[i] in _PREFIX_BYTES:
        i += 1
    return i + 1 < n and code[i] == 0x0F and code[i + 1] in _VMX_OPCODE2
