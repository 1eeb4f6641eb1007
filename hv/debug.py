"""GDB debugging of a VM's guest code: the `Target` of sim/gdbstub.py over the simulator's
vCPUs, and its place in a run (`acrn-sim run IMAGE --gdb PORT [--gdb-wait]`, in the form of
QEMU's `-gdb tcp::PORT` and `-S`). docs/gdb.md is the user's guide.

How it stops the guest without changing the run: GDB is served synchronously, from inside the
Unicorn hook that found the stop (a breakpoint, a step, a watchpoint, a VM exit GDB asked for)
or between two slices of guest code (the first instruction, Ctrl-C). Nothing on the simulated
timeline moves meanwhile and no slice is cut short, so a debugged run that only stops, reads
and steps gives the same trace and statistics as the run without GDB.

Why one code hook over all addresses (a Python call per instruction, only while GDB is
connected): Unicorn 2.1 takes a code hook added while guest code runs into account only from
its next uc_emu_start (measured), so a breakpoint GDB inserts, or a single step it asks for,
while stopped inside a hook would be missed for the rest of the slice. Stopping the engine
instead (a one-address stop hook, an instruction count of 1) would end the slice inside a
block that was already charged whole, and start a new block there: other block costs, other
budget checks, another trace. The hook tests a set and a flag and returns.

Without --gdb none of this exists: no hook, no wrapper, not one test on the hot path.
"""

from __future__ import annotations

import dataclasses
import functools
import socket
import sys
import time
from collections.abc import Callable

from acrn_sim.hv.guest import vmcs as V
from acrn_sim.hv.guest import vmexit
from acrn_sim.sim import ConfigError, paging
from acrn_sim.sim.debughooks import MEM_READ, MEM_WRITE, CodeHook, MemoryHook
from acrn_sim.sim.engine import MSR_EFER, STOP_INSN
from acrn_sim.sim.gdbstub import SIGINT, SIGTRAP, GdbStub

POLL_SECONDS = 0.05  # how often, in host time, a running guest looks for GDB's Ctrl-C
MASK32 = 0xFFFF_FFFF
# GDB's register names -> the engine's (sim/engine.py REG); the i386 ones are the low halves
_ENGINE_NAME = {"eflags": "rflags"}
_I386_OF = {"eax": "rax", "ecx": "rcx", "edx": "rdx", "ebx": "rbx", "esp": "rsp", "ebp": "rbp",
            "esi": "rsi", "edi": "rdi", "eip": "rip"}  # fmt: skip
_GPRS64 = ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp"] + [f"r{n}" for n in range(8, 16)]
_SEGMENTS = ["cs", "ss", "ds", "es", "fs", "gs"]
_READ64 = _GPRS64 + ["rip", "rflags"] + _SEGMENTS + ["fs_base", "gs_base"]
# Z packet types (RSP "insert breakpoint or watchpoint packet"): 0 software, 1 hardware
# breakpoint; 2 write, 3 read, 4 access watchpoint. The stop reply names the watchpoint.
_WATCH_HOOKS = {2: MEM_WRITE, 3: MEM_READ, 4: MEM_WRITE | MEM_READ}
_WATCH_STOP = {2: "watch", 3: "rwatch", 4: "awatch"}
_MAX_ACCESS = 16  # widest guest store or load: a watch hook starts this far below its range

HELP = """acrn-sim monitor commands:
  exit REASON   stop at the next VM exit of REASON (a name or number, e.g. IO_INSTRUCTION,
                CPUID, HLT, 30) on this VM's vCPUs and report its exit qualification
  exit off      forget it
  exit          the last VM exit stopped at
  exits         the exit reasons' names
"""


class GdbKill(KeyboardInterrupt):
    """GDB killed the target ('k' packet): the run ends as an interrupted one."""


def open_listener(port: int) -> socket.socket:
    """The listening socket on 127.0.0.1:PORT (loopback only, as QEMU's tcp::PORT is not),
    or ConfigError with the reason."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        server.bind(("127.0.0.1", port))
        server.listen(1)
    except OSError as e:
        server.close()
        why = e.strerror or str(e)
        raise ConfigError(f"--gdb {port}: cannot listen on 127.0.0.1:{port}: {why}") from None
    return server


def exit_reason(text: str) -> int:
    """An exit reason by name (any case) or number; ValueError if none."""
    text = text.strip()
    if text.isdigit() and int(text) in V.REASON_NAMES:
        return int(text)
    try:
        return int(V.ExitReason[text.upper()])
    except KeyError:
        raise ValueError(text) from None


def io_qualification(q: int) -> str:
    """An I/O exit's qualification in words (SDM Table 27-5: size-1 in bits 2:0, IN in bit 3,
    string in bit 4, REP in bit 5, port in bits 31:16)."""
    kind = ("INS" if q & 0x10 else "IN") if q & 8 else ("OUTS" if q & 0x10 else "OUT")
    rep = "REP " if q & 0x20 else ""
    return f"{rep}{kind}, {(q & 7) + 1} byte(s), port {q >> 16:#x}"


class Debugger:
    """The vCPUs of one VM as GDB threads 1..n (thread n is vCPU n-1), and the connection.

    `server`: the listening socket (open_listener), None for a Debugger used without GDB
    (tests of the target side). `wait`: stop before the first guest instruction until GDB
    connects and continues (QEMU's -S); otherwise the guest runs, and stops where it is when
    GDB connects."""

    def __init__(
        self,
        vcpus: list,
        server: socket.socket | None = None,
        wait: bool = False,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.vcpus = list(vcpus)
        self.server = server
        self.wait = wait
        self.log = log or (lambda text: print(text, file=sys.stderr, flush=True))
        self.stub: GdbStub | None = None
        self._bits = 64 if self._long_mode(self.vcpus[0]) else 32
        self.breakpoints: set[int] = set()
        self._watches: dict[tuple[int, int, int], list[MemoryHook]] = {}
        self._watch_hits: dict[int, str] = {}  # thread -> its stop reason, at the next insn
        self._step_thread = 0  # the thread GDB single-steps (0: none)
        self._skip: dict[int, int] = {}  # thread -> an address its next hook call is before
        self._last_hit: tuple[int, int, int, int] | None = None
        self._code_hooks: list[CodeHook] = []
        self._next_poll = 0.0
        self._exit_armed: int | None = None
        self._patched: tuple[int, vmexit.ExitEntry] | None = None
        self.last_exit = ""
        self._wrapped: list = []
        if server is not None:
            server.setblocking(wait)

    # ------------------------------------------------------------------ attaching
    def attach(self) -> None:
        """Put the debugger between the hypervisor and each vCPU's engine: its run goes
        through _run (an instance attribute: other engines are untouched)."""
        for thread, vcpu in enumerate(self.vcpus, 1):
            engine = vcpu.engine
            run = engine.run

            def debugged_run(budget: int, tsc_base: int, _t=thread, _e=engine, _run=run):
                self._before_run(_t)
                stop = _run(budget, tsc_base)
                if self.stub is not None and stop.reason is STOP_INSN:
                    self._at_exiting_insn(_t, _e, stop.rip)
                return stop

            engine.run = debugged_run
            self._wrapped.append(engine)

    def _connect(self, conn: socket.socket) -> None:
        conn.setblocking(True)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.close()
        self.server = None
        self._bits = 64 if self._long_mode(self.vcpus[0]) else 32
        self.stub = GdbStub(self, conn, self.log)
        for thread, vcpu in enumerate(self.vcpus, 1):
            # (between two runs: we are in one's wrapper, and the hook applies from the next)
            on_code = functools.partial(self._on_code, thread, vcpu.engine)
            self._code_hooks.append(CodeHook(vcpu.engine, on_code))

    def _before_run(self, thread: int) -> None:
        """Before a slice of guest code: GDB's connection (the first stop), or its Ctrl-C."""
        if self.stub is None:
            if self.server is None:
                return
            if not self.wait:
                now = time.monotonic()
                if now < self._next_poll:
                    return
                self._next_poll = now + POLL_SECONDS
            try:
                conn, _ = self.server.accept()
            except (BlockingIOError, InterruptedError):
                return
            self._connect(conn)
            self._stop(thread, SIGTRAP, outside=True)
            return
        now = time.monotonic()
        if now >= self._next_poll:
            self._next_poll = now + POLL_SECONDS
            if self.stub.interrupt_pending():
                self._stop(thread, SIGINT, outside=True)

    def detach(self) -> None:
        """GDB detached (or the run ended): hooks off, the exit table as it was; the guest
        runs on undebugged (the run wrappers stay, with nothing to do)."""
        for hook in self._code_hooks:
            hook.remove()
        self._code_hooks = []
        for key in list(self._watches):
            self._remove_watch(key)
        self._disarm_exit()
        self.breakpoints.clear()
        self._step_thread = 0
        self._watch_hits.clear()
        self.stub = None
        if self.server is not None:
            self.server.close()
            self.server = None

    def finish(self, status: int) -> None:
        """The run ended with exit status `status`: GDB hears it ('W'), then all is let go."""
        if self.stub is not None:
            self.stub.exited(status)
        self.detach()

    # ------------------------------------------------------------------ stopping
    def _stop(
        self, thread: int, signal: int, reason: str = "", outside: bool = False, key=None
    ) -> None:
        """Serve GDB until it resumes the guest. `outside`: stopped between slices, in front
        of an instruction that has not run (its next hook call is not a new instruction)."""
        stub = self.stub
        if stub is None:
            return
        self._last_hit = key
        self._step_thread = 0
        try:
            action, who = stub.stopped(thread, signal, reason)
        except OSError:  # GDB went away without a word: the guest runs on, undebugged
            action, who = "detach", 0
        if action == "step":
            who = who if who > 0 else thread
            self._step_thread = who
            if outside or who != thread:  # its next hook call is at its current RIP
                self._skip[who] = self._rip(who)
        elif action == "detach":
            self.detach()
        elif action == "kill":
            self.detach()
            raise GdbKill("killed by GDB")

    def _on_code(self, thread: int, engine, _uc, address: int, _size, _ud) -> None:
        """Every instruction while GDB is connected (see the module docstring)."""
        try:
            if self._skip:
                if self._skip.pop(thread, None) == address:
                    return
            if self._watch_hits:
                reason = self._watch_hits.pop(thread, None)
                if reason is not None:  # after the access, as GDB expects on x86
                    self._stop(thread, SIGTRAP, reason, key=self._key(thread, engine, address))
                    return
            if self._step_thread == thread or address in self.breakpoints:
                key = self._key(thread, engine, address)
                if key != self._last_hit:
                    self._stop(thread, SIGTRAP, key=key)
        except BaseException as e:  # never let an exception vanish inside Unicorn
            engine._hook_error = e  # (Engine.run raises it once Unicorn has returned)
            engine.uc.emu_stop()

    def _at_exiting_insn(self, thread: int, engine, rip: int) -> None:
        """The engine stopped in front of an instruction that exits (not run): a stop hook
        that came before this debugger's hook (hooks run in the order added) may have kept
        _on_code from seeing it."""
        if self._skip.get(thread) == rip:
            del self._skip[thread]
            return
        reason = self._watch_hits.pop(thread, None) if self._watch_hits else None
        if reason is None and self._step_thread != thread and rip not in self.breakpoints:
            return
        key = self._key(thread, engine, rip)
        if key != self._last_hit:
            self._stop(thread, SIGTRAP, reason or "", key=key)

    @staticmethod
    def _key(thread: int, engine, address: int) -> tuple[int, int, int, int]:
        """One execution of one instruction: the block counters move at each block start."""
        st = engine.st
        return (thread, address, st.insns, st.cycles)

    # ------------------------------------------------------------------ VM exits
    def _arm_exit(self, reason: int) -> None:
        """Stop at the next exit of `reason`: its dispatch-table entry (hv/guest/vmexit.py)
        is wrapped until then, so no other exit pays for it."""
        self._disarm_exit()
        entry = vmexit.dispatch_table[reason]
        original = entry.handler
        mine = {id(v) for v in self.vcpus}

        def handler(vcpu):
            if self._exit_armed == reason and id(vcpu) in mine and self.stub is not None:
                self._disarm_exit()
                self._exit_stop(vcpu, reason, entry)
            return original(vcpu)

        vmexit.dispatch_table[reason] = dataclasses.replace(entry, handler=handler)
        self._patched = (reason, entry)
        self._exit_armed = reason

    def _disarm_exit(self) -> None:
        if self._patched is not None:
            reason, entry = self._patched
            vmexit.dispatch_table[reason] = entry
            self._patched = None
        self._exit_armed = None

    def _exit_stop(self, vcpu, reason: int, entry: vmexit.ExitEntry) -> None:
        fields = vcpu.vmcs.fields
        # The qualification is defined for some reasons only (SDM §27.2.1); the model writes it
        # for those its handlers read, and a CPUID exit, handled in place, leaves it as it was.
        q = fields[V.VMX_EXIT_QUALIFICATION] if entry.need_exit_qualification else 0
        words = f" ({io_qualification(q)})" if reason == V.ExitReason.IO_INSTRUCTION else ""
        thread = self.vcpus.index(vcpu) + 1
        self.last_exit = (
            f"VM exit {V.REASON_NAMES.get(reason, reason)} ({reason}) on vCPU {thread - 1} at "
            f"rip {fields[V.VMX_GUEST_RIP]:#x}: exit qualification {q:#x}{words}\n"
        )
        self.stub.output(self.last_exit)
        # Not `outside`: the exit is handled when GDB resumes, so the instruction completes
        self._stop(thread, SIGTRAP)

    # ------------------------------------------------------------------ Target
    def threads(self) -> list[int]:
        return list(range(1, len(self.vcpus) + 1))

    def bits(self) -> int:
        """64 when vCPU 0 was in long mode as GDB connected, else 32: GDB reads the target
        description once, so a later switch of mode is not followed (docs/gdb.md)."""
        return self._bits

    @staticmethod
    def _long_mode(vcpu) -> bool:
        return bool(vcpu.engine.msr_read(MSR_EFER) & paging.EFER_LMA)

    def _engine(self, thread: int):
        return self.vcpus[thread - 1].engine

    def _rip(self, thread: int) -> int:
        return self._engine(thread).regs(["rip"])[0]

    def read_registers(self, thread: int) -> dict[str, int]:
        values = dict(zip(_READ64, self._engine(thread).regs(_READ64), strict=True))
        values["eflags"] = values.pop("rflags")
        if self._bits == 32:
            for name32, name64 in _I386_OF.items():
                values[name32] = values[name64] & MASK32
        return values

    def write_register(self, thread: int, name: str, value: int) -> None:
        """A general register, RIP or RFLAGS; GDB's writes of the segment and x87 registers
        are ignored (a selector alone does not load a descriptor)."""
        name = _I386_OF.get(name, _ENGINE_NAME.get(name, name))
        if name not in _GPRS64 and name not in ("rip", "rflags", "fs_base", "gs_base"):
            return
        engine = self._engine(thread)
        if engine.regs([name])[0] != value:  # (a 'G' packet writes all of them back)
            engine.set_reg(name, value)

    def read_memory(self, thread: int, address: int, length: int) -> bytes | None:
        """By guest virtual address, through the vCPU's page tables (physical while paging is
        off); None where they map nothing."""
        try:
            return self._engine(thread).read_linear(address, length)
        except paging.PageFault:
            return None

    def write_memory(self, thread: int, address: int, data: bytes) -> bool:
        try:
            return self._engine(thread).write_linear(address, data)
        except paging.PageFault:
            return False

    def set_breakpoint(self, kind: int, address: int, length: int, on: bool) -> bool:
        if kind in (0, 1):  # a hardware breakpoint is the same code-hook test
            (self.breakpoints.add if on else self.breakpoints.discard)(address)
            return True
        if kind not in _WATCH_HOOKS:
            return False
        key = (kind, address, max(1, length))
        if not on:
            self._remove_watch(key)
            return True
        if key not in self._watches:
            self._watches[key] = [
                self._add_watch(vcpu.engine, thread, key)
                for thread, vcpu in enumerate(self.vcpus, 1)
            ]
        return True

    def _add_watch(self, engine, thread: int, key: tuple[int, int, int]) -> MemoryHook:
        kind, address, length = key
        end = address + length

        def on_access(at: int, size: int) -> None:
            if at < end and address < at + size:  # it touches the watched bytes
                self._watch_hits[thread] = f"{_WATCH_STOP[kind]}:{address:x}"

        # A memory hook's range is tested against the access's first byte: start lower, so
        # that a wider access that begins below the watched bytes is seen too.
        begin = max(0, address - _MAX_ACCESS + 1)
        return MemoryHook(engine, _WATCH_HOOKS[kind], begin, end - 1, on_access)

    def _remove_watch(self, key: tuple[int, int, int]) -> None:
        for hook in self._watches.pop(key, []):
            hook.remove()

    def monitor(self, thread: int, command: str) -> str:
        words = command.split()
        if not words or words[0] == "help":
            return HELP
        if words[0] == "exits":
            return " ".join(r.name for r in V.ExitReason) + "\n"
        if words[0] == "exit":
            if len(words) == 1:
                return self.last_exit or "no VM exit stopped at yet\n"
            if words[1] == "off":
                self._disarm_exit()
                return "no longer stopping at a VM exit\n"
            try:
                reason = exit_reason(words[1])
            except ValueError:
                return f"unknown exit reason {words[1]!r} (monitor exits lists them)\n"
            self._arm_exit(reason)
            return f"will stop at the next {V.REASON_NAMES[reason]} exit ({reason})\n"
        return f"unknown monitor command {words[0]!r}\n{HELP}"


class GdbSession:
    """--gdb for one run: the Debugger of the VM under study from the moment that VM exists
    (at boot for a pre-launched VM; a User VM is created later, by the Service VM's device
    model, HC_CREATE_VM)."""

    def __init__(self, hv, vm_name: str, server: socket.socket, wait: bool) -> None:
        self.server = server
        self.wait = wait
        self.vm_name = vm_name
        self.debugger: Debugger | None = None
        vm = next((v for v in hv.vms if v.name == vm_name), None)
        if vm is not None:
            self._start(vm)
            return
        changed = hv.vms_changed

        def vms_changed() -> None:  # (an instance attribute: only this hypervisor's)
            changed()
            if self.debugger is None:
                created = next((v for v in hv.vms if v.name == vm_name), None)
                if created is not None:
                    self._start(created)

        hv.vms_changed = vms_changed

    def _start(self, vm) -> None:
        self.debugger = Debugger(vm.vcpus, self.server, self.wait)
        self.debugger.attach()

    def finish(self, status: int) -> None:
        if self.debugger is not None:
            self.debugger.finish(status)
        else:
            self.server.close()
