"""Case generators: each makes one run of the CLI from a seeded random.Random alone.

A Case carries the command line (after `run`), the files it needs (written into the case's
own directory: "{dir}" in an argument stands for it), and, for minimizing, the list of parts it
was built from with a function that builds the case again from fewer parts.

Categories (GENERATORS): malformed images, random code in three modes, hostile guests, bad
options, bad scenario scripts. "virtqueue" and "dma" are hooks for generators of malformed
virtqueues and device DMA, once the device model has virtio devices: add a function
(rng) -> Case under that name and weight it in WEIGHTS.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import images, x86
from .images import MODES, PAGE_DIR, PD64, RAM_BUF, mode_bits

ROOT = Path(__file__).resolve().parents[2]
GUEST_IMAGES = sorted((ROOT / "guests" / "images").glob("*.elf"))
TSC_HZ = 2_400_000_000
DEFAULT_UNTIL_MS = 2
MAX_UNTIL_MS = 20


@dataclass
class Case:
    category: str
    kind: str  # the generator's sub-kind: names a hang or memory signature
    args: list  # str or bytes (a command-line argument that is not UTF-8)
    files: dict[str, bytes] = field(default_factory=dict)
    sim_cycles: int | None = DEFAULT_UNTIL_MS * TSC_HZ // 1000  # --until, for the hang bound
    vcpus: int = 1  # guest vCPUs that may be busy, for the hang bound
    parts: list = field(default_factory=list)
    rebuild: Callable[[list], Case] | None = None
    detail: str = ""  # what the parts are, for the reproducer (e.g. a hostile guest's ops)


def _until(ms: int = DEFAULT_UNTIL_MS) -> list[str]:
    return ["--until", f"{ms}ms"]


def _load_order(rng: random.Random) -> list[str]:
    return ["--load-order", rng.choice(["pre", "post", "post"])]


EXTREMES32 = (0, 1, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF, 0xFFFF_FFF0, 0x1000, 0x100000)
EXTREMES64 = EXTREMES32 + ((1 << 63), (1 << 64) - 1, (1 << 63) - 1, 1 << 32)


def _extreme(rng: random.Random, bits: int) -> int:
    if rng.random() < 0.7:
        return rng.choice(EXTREMES64 if bits == 64 else EXTREMES32)
    return rng.getrandbits(bits)


# ---------------------------------------------------------------- malformed images
def _mutate_elf(rng: random.Random, data: bytearray) -> str:
    """Push one ELF or Multiboot header field to an extreme; returns what it did."""
    if len(data) < 5 or len(data) < (40 if data[4] == 2 else 32):
        return "none"  # (truncated by an earlier mutation: no program-header offset to read)
    elf64 = data[4] == 2
    if elf64:
        ehdr = {
            "e_entry": (24, "Q"),
            "e_phoff": (32, "Q"),
            "e_phentsize": (54, "H"),
            "e_phnum": (56, "H"),
            "e_type": (16, "H"),
            "e_machine": (18, "H"),
        }
        phoff = struct.unpack_from("<Q", data, 32)[0]
        phdr = {
            "p_type": (0, "I"),
            "p_offset": (8, "Q"),
            "p_paddr": (24, "Q"),
            "p_filesz": (32, "Q"),
            "p_memsz": (40, "Q"),
        }
    else:
        ehdr = {
            "e_entry": (24, "I"),
            "e_phoff": (28, "I"),
            "e_phentsize": (42, "H"),
            "e_phnum": (44, "H"),
            "e_type": (16, "H"),
            "e_machine": (18, "H"),
        }
        phoff = struct.unpack_from("<I", data, 28)[0]
        phdr = {
            "p_type": (0, "I"),
            "p_offset": (4, "I"),
            "p_paddr": (12, "I"),
            "p_filesz": (16, "I"),
            "p_memsz": (20, "I"),
        }
    if rng.random() < 0.5:
        name = rng.choice(sorted(ehdr))
        off, fmt = ehdr[name]
    else:
        name = rng.choice(sorted(phdr))
        off, fmt = phdr[name]
        off += phoff
    if off + struct.calcsize(fmt) > len(data):
        return "none"
    bits = struct.calcsize(fmt) * 8
    value = _extreme(rng, bits) if bits >= 32 else rng.choice((0, 1, 0xFFFF, rng.getrandbits(16)))
    struct.pack_into("<" + fmt, data, off, value & ((1 << bits) - 1))
    return name


def _multiboot_extreme(rng: random.Random, data: bytearray) -> str:
    """A Multiboot header with the address fields (flag 16) and extreme values, somewhere in
    the first 8 KiB, sometimes in the file's last 32 bytes."""
    flags = 1 << 16 | rng.choice((0, 1, 2, 3))
    words = [images.MB_MAGIC, flags, (-(images.MB_MAGIC + flags)) & 0xFFFF_FFFF]
    words += [_extreme(rng, 32) for _ in range(5)]
    hdr = struct.pack("<8I", *words)
    if rng.random() < 0.3 and len(data) < 8192:
        cut = rng.choice((12, 16, 20, 24, 28))
        off = (len(data) - cut + 3) & ~3
        data[off:] = hdr[: len(data) - off] if off < len(data) else b""
        data += hdr[len(data) - off : cut] if off < len(data) else hdr[:cut]
        return "multiboot-tail"
    off = rng.randrange(0, min(len(data), 8192) - 32, 4) if len(data) > 36 else 0
    data[off : off + 32] = hdr
    return "multiboot-fields"


def gen_image(rng: random.Random) -> Case:
    r = rng.random()
    if r < 0.15:  # random bytes, sometimes with an ELF or Multiboot start
        data = bytearray(rng.randbytes(rng.choice((0, 1, 16, 52, 64, 100, 512, 4096))))
        if rng.random() < 0.5:
            data[:4] = b"\x7fELF"
            if len(data) > 6:
                data[4], data[5] = rng.choice((1, 2)), 1
        kind = "random-bytes"
        if rng.random() < 0.4:
            kind = _multiboot_extreme(rng, data)
    else:
        src = rng.choice(GUEST_IMAGES)
        data = bytearray(src.read_bytes())
        kind = "mutated"
        for _ in range(rng.randint(1, 3)):
            m = rng.random()
            if m < 0.45:
                kind = "elf-" + _mutate_elf(rng, data)
            elif m < 0.6:
                kind = _multiboot_extreme(rng, data)
                if rng.random() < 0.5:
                    data[:4] = b"JUNK"  # not an ELF: the Multiboot address fields count
            elif m < 0.8:
                for _ in range(rng.randint(1, 20)):
                    data[rng.randrange(len(data))] = rng.getrandbits(8)
                kind = "byte-flips"
            else:
                data = data[: rng.randrange(len(data))]
                kind = "truncated"
    args = ["{dir}/image.elf", *_load_order(rng), *_until()]
    return Case("image", kind, args, {"image.elf": bytes(data)})


# ------------------------------------------------------------------- random code
def gen_code(rng: random.Random) -> Case:
    mode = rng.choice(MODES)
    idt = rng.random() < 0.5
    payload = rng.randbytes(rng.choice((8, 32, 128, 512, 2048)))
    load_order = _load_order(rng)

    def build(parts: list) -> Case:
        code = b"".join(parts)
        img = images.guest(mode, code, idt=idt)
        return Case(
            "code",
            f"code-{mode}",
            ["{dir}/image.elf", *load_order, *_until()],
            {"image.elf": img},
            parts=parts,
            rebuild=build,
        )

    return build([payload[i : i + 8] for i in range(0, len(payload), 8)])


# ---------------------------------------------------------------- hostile guests
PORTS = (
    0x20,
    0x21,
    0xA0,
    0xA1,
    0x40,
    0x43,
    0x60,
    0x64,
    0x70,
    0x71,
    0x80,
    0x92,
    0x3F8,
    0x3F9,
    0x3FA,
    0x3FB,
    0x3FD,
    0x2F8,
    0x4D0,
    0x4D1,
    0x510,
    0x511,
    0xCF8,
    0xCFC,
    0xCFE,
    0xCF9,
    0x1F0,
    0x1F7,
    0x3E8,
    0xFFFF,
)
MMIO = (
    0xFEE00000,
    0xFEE00020,
    0xFEE00080,
    0xFEE000B0,
    0xFEE000F0,
    0xFEE00300,
    0xFEE00310,
    0xFEE00320,
    0xFEE00380,
    0xFEE003E0,
    0xFEE00FFC,
    0xFEC00000,
    0xFEC00010,
    0xFEC00040,
    0xC0000000,
    0xC0001000,
    0xE0000000,
    0xFED00000,
    0x1FFFFFC,
    0x2000000,
    0xFFFFFFFC,
)
MSRS = (
    0x10,
    0x1B,
    0x3A,
    0x3B,
    0x48,
    0x8B,
    0xFE,
    0x174,
    0x175,
    0x176,
    0x1A0,
    0x277,
    0x6E0,
    0x800,
    0x802,
    0x803,
    0x808,
    0x80B,
    0x80F,
    0x830,
    0x832,
    0x838,
    0x83E,
    0x8FF,
    0xC0000080,
    0xC0000081,
    0xC0000100,
    0xC0000101,
    0xC0000102,
    0xC0000103,
    0x40000000,
    0xFFFFFFFF,
)
HCALLS = (
    0x80000000,
    0x80000001,
    0x80000002,
    0x80000010,
    0x80000011,
    0x80000012,
    0x80000013,
    0x80000014,
    0x80000015,
    0x80000016,
    0x80000023,
    0x80000025,
    0x80000030,
    0x80000031,
    0x80000042,
    0x800000F0,
    0x800000F1,
    0,
    0xFFFFFFFF,
)


def _pick(rng: random.Random, choices, bits: int = 32) -> int:
    return rng.choice(choices) if rng.random() < 0.8 else rng.getrandbits(bits)


def _op(rng: random.Random, mode: str) -> tuple[str, bytes]:
    """One hostile operation: (its kind, its code). Every form leaves the code runnable
    (no stray bytes), so the sequence goes on to the next operation."""
    bits = mode_bits(mode)
    mv = lambda reg, v: x86.mov_imm(reg, v, bits)  # noqa: E731
    kind = rng.choice(
        (
            "pio",
            "pio",
            "mmio",
            "mmio",
            "msr",
            "msr",
            "cr",
            "int",
            "vmcall",
            "pt",
            "reset",
            "pause",
            "poweroff",
            "ipi",
            "timer",
            "movs",
            "misc",
        )
    )
    if kind == "pio":
        port, size = _pick(rng, PORTS, 16), rng.choice((1, 2, 4))
        if rng.random() < 0.2:  # string form, a few iterations over the scratch buffer
            insn = rng.choice((x86.OUTSB, x86.INSB, x86.OUTSD, x86.INSD))
            return kind, (
                mv(x86.ESI, RAM_BUF)
                + mv(x86.EDI, RAM_BUF)
                + x86.mov_dx(port)
                + mv(x86.ECX, rng.randint(0, 64))
                + x86.rep(insn)
            )
        if rng.random() < 0.5:
            return kind, mv(x86.EAX, rng.getrandbits(32)) + x86.mov_dx(port) + x86.out_dx(size)
        return kind, x86.mov_dx(port) + x86.in_dx(size)
    if kind == "mmio":
        addr, size = _pick(rng, MMIO), rng.choice((1, 2, 4))
        code = mv(x86.EBX, addr)
        if rng.random() < 0.5:
            return kind, code + mv(x86.EAX, rng.getrandbits(32)) + x86.store_ebx(size)
        return kind, code + x86.load_ebx(size)
    if kind == "msr":
        code = mv(x86.ECX, _pick(rng, MSRS))
        if rng.random() < 0.5:
            return kind, code + x86.RDMSR
        return kind, (
            code + mv(x86.EAX, rng.getrandbits(32)) + mv(x86.EDX, rng.getrandbits(32)) + x86.WRMSR
        )
    if kind == "cr":
        cr = rng.choice((0, 3, 4))
        if rng.random() < 0.6:  # flip a few bits of the current value
            mask = 0
            for _ in range(rng.randint(1, 3)):
                mask |= 1 << rng.randrange(32)
            return kind, (
                x86.mov_from_cr(cr)
                + b"\x35"
                + x86.u32(mask)  # xor eax, imm32
                + x86.mov_to_cr(cr)
            )
        return kind, mv(x86.EAX, rng.getrandbits(32)) + x86.mov_to_cr(cr)
    if kind == "int":
        return kind, x86.int_n(rng.choice((3, 6, 8, 13, 14, 0x20, 0x80, 0xFF, rng.getrandbits(8))))
    if kind == "vmcall":
        hc = _pick(rng, HCALLS)
        code = mv(x86.EAX, hc) + mv(x86.EDI, rng.getrandbits(32)) + mv(x86.ESI, RAM_BUF)
        if bits == 64:
            code += x86.mov_r8_imm(hc)
        return kind, code + x86.VMCALL
    if kind == "pt":
        if mode == "flat32":
            return kind, x86.NOP
        if mode == "paged32":
            index = rng.choice((0, 1, 7, 0x3FB, rng.randrange(1024)))
            value = rng.choice((0, 0x83, 0x400083, rng.getrandbits(32)))
            code = x86.store_abs(PAGE_DIR + 4 * index, value)
        else:
            index = rng.choice((0, 1, 15, 2047, rng.randrange(2048)))
            value = rng.choice((0, 0x83, 0x200083, rng.getrandbits(32)))
            code = mv(x86.EBX, PD64 + 8 * index) + mv(x86.EAX, value) + x86.store_ebx(4)
        flush = rng.choice(
            (
                b"",
                mv(x86.EBX, rng.getrandbits(22) << 10) + x86.INVLPG_EBX,
                x86.mov_from_cr(3) + x86.mov_to_cr(3),
            )
        )
        return kind, code + flush
    if kind == "reset":
        return kind, mv(x86.EAX, rng.choice((6, 4, 0xE, 2, rng.getrandbits(8)))) + (
            x86.mov_dx(0xCF9) + x86.out_dx(1)
        )
    if kind == "pause":
        body = x86.PAUSE + x86.DEC_ECX
        return kind, mv(x86.ECX, rng.choice((1, 100, 10_000, 200_000))) + body + x86.jnz_rel8(
            -len(body)
        )
    if kind == "poweroff":
        return kind, mv(x86.EAX, rng.getrandbits(8)) + x86.out_imm(0xF4)
    if kind == "ipi":  # an ICR write loop: fixed, NMI, INIT or SIPI to self, all, all-but-self
        icr = (
            rng.choice((0x20, 0x30, 0xEF, 0xFF, 2))
            | rng.choice((0, 4, 5, 6)) << 8
            | rng.choice((1, 2, 3)) << 18
        )
        body = mv(x86.EBX, 0xFEE00300) + mv(x86.EAX, icr) + x86.store_ebx(4) + x86.DEC_ECX
        return kind, mv(x86.ECX, rng.choice((1, 50, 1000))) + body + x86.jnz_rel8(-len(body))
    if kind == "timer":  # a periodic LAPIC timer with a tiny count, then interrupts on
        vec = rng.choice((0x20, 0x30, 0xFF, 0x10))
        return kind, (
            mv(x86.EBX, 0xFEE003E0)
            + mv(x86.EAX, 0xB)
            + x86.store_ebx(4)
            + mv(x86.EBX, 0xFEE00320)
            + mv(x86.EAX, 0x20000 | vec)
            + x86.store_ebx(4)
            + mv(x86.EBX, 0xFEE00380)
            + mv(x86.EAX, rng.choice((1, 10, 1000)))
            + x86.store_ebx(4)
            + x86.STI
        )
    if kind == "movs":  # string moves between MMIO and RAM
        mmio = _pick(rng, MMIO)
        src, dst = (mmio, RAM_BUF) if rng.random() < 0.5 else (RAM_BUF, mmio)
        insn = rng.choice((x86.MOVSB, x86.MOVSD, x86.STOSD))
        return kind, (
            mv(x86.ESI, src)
            + mv(x86.EDI, dst)
            + mv(x86.ECX, rng.randint(0, 16))
            + (x86.rep(insn) if rng.random() < 0.7 else insn)
        )
    misc = rng.choice(("cpuid", "xsetbv", "rdrand", "hlt", "sti-hlt", "lidt", "rdtsc", "bytes"))
    if misc == "cpuid":
        return kind, mv(x86.EAX, _pick(rng, (0, 1, 7, 0xB, 0xD, 0x40000000, 0x40000010))) + (
            mv(x86.ECX, rng.getrandbits(4)) + x86.CPUID
        )
    if misc == "xsetbv":
        return kind, (
            mv(x86.ECX, rng.choice((0, 1, 5)))
            + mv(x86.EAX, rng.getrandbits(8))
            + mv(x86.EDX, 0)
            + x86.XSETBV
        )
    if misc == "rdrand":
        return kind, x86.RDRAND_EAX
    if misc == "hlt":
        return kind, x86.HLT
    if misc == "sti-hlt":
        return kind, x86.STI + x86.HLT
    if misc == "lidt":
        return kind, mv(x86.EBX, RAM_BUF) + x86.LIDT_EBX
    if misc == "rdtsc":
        return kind, x86.RDTSC
    return kind, rng.randbytes(rng.randint(1, 6))


def gen_hostile(rng: random.Random) -> Case:
    mode = rng.choice(MODES)
    idt = rng.random() < 0.7
    ops = [_op(rng, mode) for _ in range(rng.randint(1, 12))]
    pre = rng.random() < 0.3

    def build(parts: list) -> Case:
        body = b"".join(code for _, code in parts)
        code = body + x86.jmp_rel32(-len(body))  # again, until --until
        args = ["{dir}/image.elf", "--load-order", "pre" if pre else "post", *_until()]
        return Case(
            "hostile",
            f"hostile-{mode}",
            args,
            {"image.elf": images.guest(mode, code, idt=idt)},
            parts=parts,
            rebuild=build,
            detail=" ".join(k for k, _ in parts),
        )

    return build(ops)


# ------------------------------------------------------------------- bad options
def _weird_number(rng: random.Random) -> str:
    return rng.choice(
        (
            "0",
            "1",
            "-1",
            "²",
            "٣",
            "1e9",
            "0x10",
            "",
            " ",
            "99999999999999999999",
            "9" * 5000,
            "18446744073709551616",
            "4294967296",
            "3.5",
            "NaN",
            "inf",
            str(rng.getrandbits(64)),
            str(rng.randint(0, 4096)),
        )
    )


def _option(rng: random.Random) -> list:
    opt = rng.choice(
        (
            "mem",
            "cost",
            "until",
            "affinity",
            "cmdline",
            "profile",
            "seed",
            "pause",
            "set",
            "scheduler",
            "stats",
            "trace",
            "hotpath",
            "flags",
            "load-order",
        )
    )
    if opt == "mem":
        return [
            "--mem",
            rng.choice(
                (
                    _weird_number(rng),
                    "16G",
                    "64G",
                    "65G",
                    "1K",
                    "2M",
                    "3M",
                    "4097",
                    "99999999999999999999G",
                    "32MiB",
                    "1T",
                )
            ),
        ]
    if opt == "cost":
        name = rng.choice(
            (
                "tsc_hz",
                "vmexit_hw",
                "vmentry_hw",
                "sched_quantum",
                "ple_window",
                "ple_gap",
                "dm_wakeup",
                "handler_cpuid",
                "base",
                "div",
                "nope",
                "upcall_ipi",
                "vcpu_wakeup",
                "sched_switch",
                "",
                "=",
            )
        )
        return ["--cost", f"{name}={_weird_number(rng)}"]
    if opt == "until":
        return [
            "--until",
            rng.choice(
                (
                    _weird_number(rng) + rng.choice(("ms", "s", "cycles", "")),
                    "0ms",
                    "1cycles",
                    "1.5ms",
                    "0.000001ns",
                )
            ),
        ]
    if opt == "affinity":
        return [
            "--cpu-affinity",
            rng.choice(
                (
                    "-1",
                    "99999999",
                    "64",
                    "63",
                    "0",
                    "1,1",
                    "1,,2",
                    ",".join(map(str, range(rng.randint(1, 70)))),
                    "a",
                    "",
                    "1,2",
                    "٣",
                )
            ),
        ]
    if opt == "cmdline":
        return [
            "--cmdline",
            rng.choice(
                (
                    rng.randbytes(rng.randint(0, 64)).replace(b"\0", b"x"),
                    b"\xff\xfe\x80",
                    "x" * rng.choice((10, 1023, 1024, 5000)),
                    "pio 100",
                    "compute",
                )
            ),
        ]
    if opt == "profile":
        return [
            "--profile",
            rng.choice(
                ("/tmp", "/dev/null", "/nonexistent.toml", "{dir}/profile.toml", "/proc/self/mem")
            ),
        ]
    if opt == "seed":
        return ["--seed", _weird_number(rng)]
    if opt == "pause":
        return [
            "--pause",
            rng.choice(
                (
                    "POST_VM1@1ms:2ms",
                    "POST_VM1/5@1ms:2ms",
                    "X@1ms:2ms",
                    "POST_VM1@2ms:1ms",
                    "@",
                    "POST_VM1/-1@0ms:1ms",
                    "POST_VM1@1ms",
                    "POST_VM1/99999999999@0ms:1ms",
                )
            ),
        ]
    if opt == "set":
        return ["--set", rng.choice(("a=b", "=", "x", "frames=0"))]
    if opt == "scheduler":
        return ["--scheduler", rng.choice(("noop", "bvt", "prio", "fifo"))]
    if opt in ("stats", "trace"):
        return [
            f"--{opt}",
            rng.choice(
                ("{dir}/out.json", "/dev/null", "/nonexistent/x.json", "{dir}", "/proc/version")
            ),
        ]
    if opt == "hotpath":
        return ["--hotpath", rng.choice(("auto", "native", "python", "gpu"))]
    if opt == "load-order":
        return ["--load-order", rng.choice(("pre", "post", "sideways"))]
    return [
        rng.choice(
            (
                "--report",
                "--explain",
                "--consoles",
                "--detect-smc",
                "--polling",
                "--service-vm-busy",
                "--bogus",
            )
        )
    ]


def _profile_toml(rng: random.Random) -> bytes:
    text = (ROOT / "sim" / "profiles" / "default.toml").read_text()
    r = rng.random()
    if r < 0.2:
        return rng.randbytes(rng.randint(0, 200))
    if r < 0.4:  # drop a section
        section = rng.choice(("[instruction_classes.", "[costs.", "[machine]"))
        return "\n".join(ln for ln in text.splitlines() if not ln.startswith(section)).encode()
    lines = text.splitlines()
    idx = [i for i, ln in enumerate(lines) if ln.startswith(("cycles", "tsc_hz"))]
    values = ("0", "-1", "true", "1.5", '"x"', "99999999999999999999", "1")
    for i in rng.sample(idx, k=min(len(idx), rng.randint(1, 3))):
        key = lines[i].split("=")[0].strip()
        lines[i] = f"{key} = {rng.choice(values)}"
    return "\n".join(lines).encode()


def gen_options(rng: random.Random) -> Case:
    target = rng.choice(
        (
            "guests/images/hello.elf",
            "guests/images/bench.elf",
            "guests/images/smp.elf",
            "/proc/self/mem",
            "/dev/null",
            "/tmp",
            "{dir}/empty.elf",
            "{dir}/missing.elf",
            "scenarios/hello.py",
            "scenarios/two_user_vms.py",
            "guests/images/timing.elf",
        )
    )
    opts = [_option(rng) for _ in range(rng.randint(1, 4))]
    files = {"empty.elf": b"", "profile.toml": _profile_toml(rng)}

    def build(parts: list) -> Case:
        # --until first: an option's own --until, valid or not, comes later and counts; a
        # valid one longer than MAX_UNTIL_MS is cut (a long run is not a finding)
        args = [target, *_until()] + [a for p in parts for a in p]
        cycles = effective_sim_cycles(args)
        if cycles is not None and cycles > MAX_UNTIL_MS * TSC_HZ // 1000:
            args += _until(MAX_UNTIL_MS)
        return Case("options", "options", args, files, parts=parts, rebuild=build)

    return build(opts)


def effective_sim_cycles(args: list) -> int | None:
    """The simulated-time limit the CLI will use: the last --until, in cycles at the last
    valid --cost tsc_hz (None when the CLI will refuse it)."""
    from acrn_sim.sim import ConfigError
    from acrn_sim.sim.units import parse_simtime

    until, tsc_hz = None, 2_400_000_000
    for flag, value in zip(args, args[1:], strict=False):
        if not isinstance(value, str):
            continue
        if flag == "--until":
            until = value
        elif flag == "--cost" and value.startswith("tsc_hz=") and value[7:].isascii():
            # (at most 12 digits: a generated value can be thousands of digits long, more than
            # int() converts, and the CLI refuses it anyway)
            digits = value[7:]
            if digits.isdigit() and len(digits) <= 12 and 1_000_000 <= int(digits) <= 10**11:
                tsc_hz = int(digits)
    try:
        return parse_simtime(until, tsc_hz) if until else None
    except ConfigError:
        return None


# ------------------------------------------------------------ bad scenario scripts
_FIELD_VALUES = {
    "memory": ("'32M'", "0", "-4096", "1 << 40", "4097", "2 << 20", "True", "None", "3.5"),
    "cpu_affinity": (
        "[]",
        "[1, 1]",
        "[-1]",
        "[64]",
        "[99999999]",
        "'1'",
        "[True]",
        "[1, 2]",
        "list(range(64))",
        "None",
    ),
    "cmdline": ("42", "'x' * 5000", "'a\\0b'", "b'bytes'", "'\\udcff'", "'ok'"),
    "name": ("''", "'X' * 40", "42", "'a\\nb'", "'POST_VM1'", "'Service_VM'"),
    "load_order": ("'SIDEWAYS'", "0", "'SERVICE_VM'", "'PRE_LAUNCHED_VM'"),
    "vm_type": ("'RTVM'", "'BOGUS'", "1"),
    "priority": ("'PRIO_HIGH'", "'PRIO_MAX'", "3"),
    "bvt_weight": ("0", "1", "128", "129", "-5", "'8'"),
    "watched": ("False", "1", "'yes'"),
    "software": ("42", "None", "lambda port: None", "lambda port: 1 / 0"),
    "io_completion_polling": ("True", "2"),
    "lapic_passthrough": ("True", "'x'"),
    "vm_manager": (
        "[(0, 'pause', 'POST_VM1', None)]",
        "[(1, 'explode', 'X', None)]",
        "5",
        "[(-1, 'pause', 'POST_VM1', 99)]",
    ),
    "image": ("'/tmp'", "42", "'/nonexistent.elf'", "''", "'/proc/self/mem'"),
}
_MODULE_ATTRS = (
    "PARAMS = 5",
    "PARAMS = 'abc'",
    "PARAMS = ('frames',)",
    "SCHEDULER = 'fifo'",
    "SCHEDULER = 3",
    "SCHEDULER = 'noop'",
    "def report(hv, result):\n    raise RuntimeError('report failed')",
    "def report(hv, result):\n    return 42",
    "report = 7",
    "def main(opts):\n    return 'x'",
    "def main(opts):\n    return 300",
    "def main(opts):\n    raise SystemExit(9)",
    "main = None",
    "raise SystemExit(3)",
    "import sys; sys.exit(4)",
)


def gen_scenario(rng: random.Random) -> Case:
    n_user = rng.randint(0, 3)
    lines = [
        "from acrn_sim.guests import image_path",
        "from acrn_sim.scenarios import pre_launched, service_vm, user_vm, with_service_vm",
    ]
    lines += rng.sample(_MODULE_ATTRS, k=rng.randint(0, 2)) if rng.random() < 0.5 else []
    body = ["def scenario(opts):"]
    names = []
    for i in range(n_user):
        img = rng.choice(("hello.elf", "bench.elf", "triple.elf", "reset.elf", "smp.elf"))
        kind = rng.choice(("user_vm", "pre_launched"))
        body.append(
            f"    v{i} = {kind}(image_path({img!r}), pcpu={rng.randint(1, 3)}, name='VM{i}')"
        )
        names.append(f"v{i}")
    if rng.random() < 0.8:
        body.append("    svc = service_vm()")
        svc = "svc"
    else:
        svc = None
    targets = names + ([svc] if svc else [])
    for _ in range(rng.randint(0, 3)):
        if not targets:
            break
        field_name = rng.choice(sorted(_FIELD_VALUES))
        body.append(
            f"    {rng.choice(targets)}.{field_name} = {rng.choice(_FIELD_VALUES[field_name])}"
        )
    ret = rng.random()
    if ret < 0.1:
        body.append("    return 42")
    elif ret < 0.2:
        body.append("    return []")
    elif ret < 0.3 and names:
        body.append(f"    return with_service_vm([{', '.join(names)}])")
    else:
        body.append(f"    return [{', '.join(targets)}]")
    source = "\n".join(lines + body) + "\n"
    return Case(
        "scenario",
        "scenario",
        ["{dir}/scenario.py", *_until()],
        {"scenario.py": source.encode()},
        vcpus=max(1, n_user),
    )


GENERATORS: dict[str, Callable[[random.Random], Case] | None] = {
    "image": gen_image,
    "code": gen_code,
    "hostile": gen_hostile,
    "options": gen_options,
    "scenario": gen_scenario,
    "virtqueue": None,  # hook: malformed virtqueues, once the device model has virtio
    "dma": None,  # hook: device DMA to hostile addresses
}
WEIGHTS = {"image": 2, "code": 2, "hostile": 3, "options": 2, "scenario": 1}


def make_case(seed: int, index: int, categories: list[str] | None = None) -> Case:
    """Case `index` of the campaign seeded `seed`: a function of these alone."""
    rng = random.Random(f"acrn-sim-fuzz:{seed}:{index}")
    cats = [c for c in (categories or WEIGHTS) if GENERATORS.get(c) is not None]
    category = rng.choices(cats, weights=[WEIGHTS.get(c, 1) for c in cats])[0]
    return GENERATORS[category](rng)
