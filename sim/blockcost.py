"""Decode each new basic block once with capstone: its cost in cycles by instruction class, and
the instructions in it at which the engine must stop before executing them.

Unicorn cannot hook RDMSR, WRMSR, HLT, MOV to CR and the like (docs/unicorn.md), so the
engine learns their addresses here, when a block is first seen, and stops in front of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import capstone

from acrn_sim.sim.timing import TimingProfile

# Instructions whose native effect in Unicorn would read host state: RDRAND/RDSEED return
# host entropy, which would break determinism. The engine stops in front of them and the CPU
# model (hv/arch/vmx.py) draws from the seeded generator instead.
HOST_STATE_MNEMONICS = frozenset({"rdrand", "rdseed"})
# Instructions after which interrupts are blocked for one instruction (SDM Vol. 3 §26.3.1.5,
# "blocking by STI" and "blocking by MOV SS"): by mnemonic, the starts of the operands that do
# it ("" for any). As data so that the native decoder (sim/_decode.c) applies the same rule.
SHADOW_OPERANDS: dict[str, tuple[str, ...]] = {"sti": ("",), "mov": ("ss,",), "pop": ("ss",)}


def shadow_after(mnemonic: str, op_str: str) -> bool:
    """Whether the instruction blocks interrupts for the next one (STI, MOV SS, POP SS)."""
    starts = SHADOW_OPERANDS.get(mnemonic)
    return starts is not None and op_str.startswith(starts)


# Stops the engine makes only while an NMI is blocked (SDM Vol. 3 §6.7.1: NMIs are held until
# the next IRET, which Unicorn runs natively; Engine.set_iret_exits).
IRET_MNEMONICS = frozenset({"iret", "iretd", "iretq"})

# Instructions that read the TSC: the native hook answers them (sim/_hotpath.c hp_rdtsc_hook)
TSC_MNEMONICS = frozenset({"rdtsc", "rdtscp"})
# The native decoder's flags per mnemonic (sim/_decode.c struct klass)
KLASS_STOP, KLASS_IRET, KLASS_TSC = 1, 2, 4

_DIV = frozenset({"div", "idiv"})
_MUL = frozenset({"mul", "imul"})
_CALL_RET = frozenset({"call", "ret", "retf", "iret", "iretd", "iretq", "leave", "enter"})
_STRING = ("movs", "stos", "lods", "scas", "cmps")
_SERIALIZING = frozenset(
    {
        "lgdt",
        "lidt",
        "lldt",
        "ltr",
        "invlpg",
        "iret",
        "iretd",
        "iretq",
        "ljmp",
        "lcall",
        "sgdt",
        "sidt",
        "cli",
        "sti",
        "popf",
        "popfd",
        "popfq",
        "lfence",
        "mfence",
        "sfence",
    }
)


def strip_prefixes(mnemonic: str) -> str:
    for p in ("rep ", "repe ", "repne ", "repz ", "repnz ", "lock ", "bnd ", "notrack "):
        if mnemonic.startswith(p):
            return mnemonic[len(p) :]
    return mnemonic


class InstructionCoster:
    """Cost of one instruction by class; the table comes from the timing profile."""

    def __init__(self, profile: TimingProfile) -> None:
        k = profile.klass
        self.base, self.memory = k("base"), k("memory")
        self.mul, self.div, self.branch = k("mul"), k("div"), k("branch")
        self.call_ret, self.string, self.fp = k("call_ret"), k("string"), k("fp")
        self.serializing, self.rdtsc = k("serializing"), k("rdtsc")
        self.pause = k("pause")
        self._memo: dict[tuple[str, str], int] = {}  # the class depends on the text only

    def cost(self, mnemonic: str, op_str: str) -> int:
        key = (mnemonic, op_str)
        c = self._memo.get(key)
        if c is None:
            c = self._memo[key] = self._cost(mnemonic, op_str)
        return c

    def _cost(self, mnemonic: str, op_str: str) -> int:
        m = strip_prefixes(mnemonic)
        mem = self.memory if "[" in op_str else 0
        if m in _DIV:
            return self.div + mem
        if m in _MUL:
            return self.mul + mem
        if m in _CALL_RET:
            return self.call_ret + mem
        if m in _SERIALIZING:
            return self.serializing
        if m.startswith("j") or m.startswith("loop"):
            return self.branch
        if m.startswith(_STRING):
            return self.string
        if m in ("rdtsc", "rdtscp"):
            return self.rdtsc
        if m == "pause":
            return self.pause
        if m.startswith("f") or m.startswith("v") or m.endswith(("ps", "pd", "ss", "sd")):
            return self.fp + mem
        return self.base + mem


@dataclass(frozen=True)
class Insn:
    address: int
    size: int
    mnemonic: str
    op_str: str


@dataclass
class BlockInfo:
    """A decoded block. The engine always stops in front of an exiting instruction (a stop
    hook), so what can run of a block is the part in front of its first one: `cost` and
    `ninsns` are that part's, charged when the block starts, and nothing is taken back at
    the stop. (Without an exiting instruction, the part is the whole block.)"""

    address: int
    size: int
    cost: int
    insns: list[Insn]
    # instruction address -> (cycles, instructions) from it to the end of the part that can
    # run: what did not run when the engine stopped in front of it (a fault)
    tail: dict[int, tuple[int, int]]
    stops: list[int]
    shadow_after: bool  # the block ends with STI/MOV SS: its successor starts in a shadow
    ninsns: int  # instructions in front of the first exiting one

    @property
    def end(self) -> int:
        return self.address + self.size

    def last(self) -> Insn | None:
        return self.insns[-1] if self.insns else None


_CS_MODES = {16: capstone.CS_MODE_16, 32: capstone.CS_MODE_32, 64: capstone.CS_MODE_64}


@dataclass(frozen=True)
class ExitPolicy:
    """The instructions that VM-exit under the hypervisor's controls (hv/arch/vmx.py gives
    them), as data so that the native decoder (sim/_decode.c) applies the same policy: by
    mnemonic without prefixes, or by mnemonic and the start of its operands (MOV to CR0/CR4
    is "mov" with "cr0,")."""

    mnemonics: frozenset[str]
    operands: Mapping[str, tuple[str, ...]]

    def __call__(self, mnemonic: str, op_str: str) -> bool:
        return mnemonic in self.mnemonics or op_str.startswith(self.operands.get(mnemonic, ()))


class BlockDecoder:
    """Decodes and costs blocks, and finds the instructions the engine must stop in front of:
    those that VM-exit under the hypervisor's controls (`exits_before`, the exit policy the
    hypervisor gives: hv/arch/vmx.py) and those that would read host state."""

    def __init__(self, profile: TimingProfile, exits_before: ExitPolicy) -> None:
        self.coster = InstructionCoster(profile)
        self.exits_before = exits_before
        self._cs = {}
        for bits, mode in _CS_MODES.items():
            cs = capstone.Cs(capstone.CS_ARCH_X86, mode)
            cs.syntax = capstone.CS_OPT_SYNTAX_INTEL
            self._cs[bits] = cs

    def cs_handle(self, bits: int) -> int:
        """Capstone's handle for `bits`-bit code: the native decoder decodes with the same one."""
        return self._cs[bits].csh.value

    def klass(self, mnemonic: str, mem: bool) -> tuple[int, int, tuple[str, ...], tuple[str, ...]]:
        """What the native decoder (sim/_decode.c) keeps per (mnemonic, memory operand): the
        cost, its flags (KLASS_STOP: a stop whatever the operands; KLASS_IRET: a stop while
        an NMI is blocked; KLASS_TSC: reads the TSC), the operand starts that make it a
        stop, and those that make it block interrupts for the next instruction. The same
        rules as decode_block, asked once per mnemonic."""
        m = strip_prefixes(mnemonic)
        cost = self.coster.cost(mnemonic, "[" if mem else "")
        operands = self.exits_before.operands.get(m, ())
        stop = m in HOST_STATE_MNEMONICS or m in self.exits_before.mnemonics
        flags = (
            (KLASS_STOP if stop else 0)
            | (KLASS_IRET if mnemonic in IRET_MNEMONICS else 0)
            | (KLASS_TSC if m in TSC_MNEMONICS else 0)
        )
        return cost, flags, () if stop else operands, SHADOW_OPERANDS.get(mnemonic, ())

    def stops_before(self, mnemonic: str, op_str: str) -> bool:
        m = strip_prefixes(mnemonic)
        return m in HOST_STATE_MNEMONICS or self.exits_before(m, op_str)

    def decode_insns(self, code: bytes, address: int, bits: int) -> list[Insn]:
        return [Insn(a, s, m, o) for a, s, m, o in self._cs[bits].disasm_lite(code, address)]

    def decode_block(self, code: bytes, address: int, bits: int, iret: bool = False) -> BlockInfo:
        """`iret`: stop in front of IRET too (an NMI is blocked)."""
        insns = self.decode_insns(code, address, bits)
        stops = [
            i.address
            for i in insns
            if self.stops_before(i.mnemonic, i.op_str) or (iret and i.mnemonic in IRET_MNEMONICS)
        ]
        runs = [i for i in insns if not stops or i.address < stops[0]]  # what can run
        tail: dict[int, tuple[int, int]] = {}
        total = 0
        for i, insn in enumerate(reversed(runs)):  # from the end: what follows each one
            total += self.coster.cost(insn.mnemonic, insn.op_str)
            tail[insn.address] = (total, i + 1)
        last = insns[-1] if insns else None
        shadow = last is not None and shadow_after(last.mnemonic, last.op_str)
        return BlockInfo(address, len(code), total, insns, tail, stops, shadow, len(runs))
