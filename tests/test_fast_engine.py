"""The Unicorn library acrn-sim runs on: the fast engine (third_party/unicorn) or PyPI's.

The guest-code tests run on whichever library this process loaded (`make test`: the fast one
when built; ACRN_SIM_ENGINE=pypi: PyPI's) and once more on the other in a subprocess. They are
the cases the store-path patch must keep right: code written and then run, code rewritten
through a second virtual mapping, a store into the running block, a page that mixes code and
data, a read-only region, and a region made executable after its first stores (upstream issue
#2367). The simulator's outputs (consoles, traces, statistics) must be byte-identical on both.
"""

from __future__ import annotations

import ctypes
import json
import mmap
import shutil
import struct
import subprocess
import sys

import pytest
from unicorn import (
    UC_ARCH_X86,
    UC_ERR_WRITE_PROT,
    UC_HOOK_MEM_READ_UNMAPPED,
    UC_MODE_64,
    UC_PROT_ALL,
    UC_PROT_READ,
    UC_PROT_WRITE,
    Uc,
    UcError,
)
from unicorn import x86_const as X

from acrn_sim.scenarios.bench import QUICK, find_qemu, run_bench
from acrn_sim.sim import unicorn_engine
from acrn_sim.sim.engine import Engine, StopReason
from conftest import CLI, ROOT, boot

ENGINES = ("fast", "pypi")
needs_both = pytest.mark.skipif(
    not unicorn_engine.built(), reason="the fast engine is not built (make engine)"
)

# ---------------------------------------------------------------- guest code on bare Unicorn


class Machine:
    """A bare x86-64 Unicorn engine over host buffers, mapped as the simulator maps guest RAM
    (uc_mem_map_ptr): RWX RAM at [0, 1 MiB) unless told otherwise, stack below 0x9000."""

    def __init__(self, regions=((0, 0x100000, UC_PROT_ALL),)) -> None:
        self.uc = Uc(UC_ARCH_X86, UC_MODE_64)
        self.buffers: dict[int, mmap.mmap] = {}
        for gpa, size, prot in regions:
            buf = mmap.mmap(-1, size)
            self.buffers[gpa] = buf
            self.uc.mem_map_ptr(gpa, size, prot, ctypes.addressof(ctypes.c_char.from_buffer(buf)))
        self.uc.reg_write(X.UC_X86_REG_RSP, 0x9000)

    def run(self, code: str, at: int = 0x1000) -> tuple[int, int]:
        """Run hex `code` from `at` to its HLT; (EBX, EAX)."""
        self.uc.mem_write(at, bytes.fromhex(code))  # (fromhex skips spaces)
        self.uc.emu_start(at, 0xFFFF_FFFF_0000)
        return self.uc.reg_read(X.UC_X86_REG_EBX), self.uc.reg_read(X.UC_X86_REG_EAX)


# Write "mov eax, 7 ; ret" at RDI, call it, keep EAX in EBX, patch the immediate to 42 through
# RSI, call it again, HLT: (EBX, EAX) must be (7, 42).
WRITE_CALL_PATCH_CALL = (
    "c706b8070000"  # mov dword [rsi], 0x000007b8      mov eax, 7 ...
    "66c7460400c3"  # mov word [rsi+4], 0xc300          ... ; ret
    "ffd7"  # call rdi
    "89c3"  # mov ebx, eax
    "c646012a"  # mov byte [rsi+1], 42
    "ffd7"  # call rdi
    "f4"  # hlt
)


def test_code_written_then_run_then_rewritten():
    """A page first used as data (its stores on the fast path: it holds no code), then written
    with code that runs, then rewritten: the new code runs."""
    m = Machine()
    ebx, eax = m.run(
        "48c7c700800000"  # mov rdi, 0x8000
        "4889fe"  # mov rsi, rdi
        "c70611111111"  # mov dword [rsi], 0x11111111   (data)
        "c7460422222222" + WRITE_CALL_PATCH_CALL  # mov dword [rsi+4], 0x22222222
    )
    assert (ebx, eax) == (7, 42)


def test_code_rewritten_through_another_virtual_mapping():
    """Guest paging maps physical [0, 2 MiB) twice: at 0 (where the code runs) and at 2 MiB
    (where it is written). The page gets its first translated block through the first mapping;
    a store through the second must still invalidate it."""
    m = Machine()
    # PML4 0x70000 -> PDPT 0x71000 -> PD 0x72000: two 2 MiB pages, both onto physical 0
    for table, entry in ((0x70000, 0x71003), (0x71000, 0x72003)):
        m.uc.mem_write(table, struct.pack("<Q", entry))
    m.uc.mem_write(0x72000, struct.pack("<QQ", 0x83, 0x83))  # present, writable, 2 MiB
    m.uc.reg_write(X.UC_X86_REG_CR4, 0x20)  # PAE
    m.uc.reg_write(X.UC_X86_REG_CR3, 0x70000)
    m.uc.reg_write(X.UC_X86_REG_CR0, 0x8000_0011)  # PG: paging on (long mode already)
    ebx, eax = m.run(
        "48c7c600802000"  # mov rsi, 0x208000   (the same page as 0x8000)
        "48c7c700800000"  # mov rdi, 0x8000
        "c70611111111" + WRITE_CALL_PATCH_CALL  # mov dword [rsi], 0x11111111  (data)
    )
    assert (ebx, eax) == (7, 42)


def test_store_into_the_running_block():
    """A store to the next instruction of the same block: x86 runs the new bytes."""
    ebx, eax = Machine().run(
        "c605010000002a"  # mov byte [rip+1], 42   (the immediate of the next instruction)
        "b807000000"  # mov eax, 7
        "f4"  # hlt
    )
    assert eax == 42


def test_code_and_data_on_one_page():
    """Many data stores next to translated code (QEMU then tracks the page's code bytes in a
    bitmap), then a store into the code: the new code runs."""
    m = Machine()
    m.uc.mem_write(0x1400, bytes.fromhex("b807000000c3"))  # mov eax, 7 ; ret
    ebx, eax = m.run(
        "48c7c700140000"  # mov rdi, 0x1400
        "ffd7"  # call rdi
        "89c3"  # mov ebx, eax
        "b964000000"  # mov ecx, 100
        "890c2500180000"  # 1: mov [0x1800], ecx   (the code's page)
        "ffc9"  # dec ecx
        "75f5"  # jnz 1b
        "c647012a"  # mov byte [rdi+1], 42
        "ffd7"  # call rdi
        "f4"  # hlt
    )
    assert (ebx, eax) == (7, 42)


def test_store_to_a_read_only_region_after_a_load():
    """A region mapped without write permission (uc_mem_map_ptr): a store after a load from
    the same page (whose TLB entry the load made) is refused, and memory keeps its bytes."""
    m = Machine(((0, 0x100000, UC_PROT_ALL), (0x200000, 0x1000, UC_PROT_READ)))
    m.buffers[0x200000][0:4] = bytes.fromhex("44332211")
    with pytest.raises(UcError) as e:
        m.run(
            "8b0425 00002000"  # mov eax, [0x200000]
            "890425 00002000"  # mov [0x200000], eax
            "f4"
        )
    assert e.value.errno == UC_ERR_WRITE_PROT
    assert m.uc.reg_read(X.UC_X86_REG_EAX) == 0x11223344
    assert m.uc.reg_read(X.UC_X86_REG_RIP) == 0x1007  # on the store
    assert m.buffers[0x200000][0:4] == bytes.fromhex("44332211")


def test_region_made_executable_after_its_first_stores():
    """Upstream issue #2367: a read-write region is stored to, then made executable with
    uc_mem_protect, then written with code, run, rewritten and run again (with a memory hook
    installed, as in the report)."""
    m = Machine(
        (
            (0, 0x8000, UC_PROT_ALL),
            (0x8000, 0x1000, UC_PROT_READ | UC_PROT_WRITE),
            (0x9000, 0x7000, UC_PROT_ALL),
        )
    )
    m.uc.hook_add(UC_HOOK_MEM_READ_UNMAPPED, lambda *_: False)
    m.run("48c7c700800000 c70711111111 f4")  # mov rdi, 0x8000 ; mov dword [rdi], ... ; hlt
    m.uc.mem_protect(0x8000, 0x1000, UC_PROT_ALL)
    ebx, eax = m.run("48c7c700800000 4889fe" + WRITE_CALL_PATCH_CALL, at=0x2000)
    assert (ebx, eax) == (7, 42)


GUEST_CODE_TESTS = [
    "test_code_written_then_run_then_rewritten",
    "test_code_rewritten_through_another_virtual_mapping",
    "test_store_into_the_running_block",
    "test_code_and_data_on_one_page",
    "test_store_to_a_read_only_region_after_a_load",
    "test_region_made_executable_after_its_first_stores",
]


def test_guest_code_tests_pass_on_the_other_engine():
    """The tests above, in a subprocess on the library this process did not load."""
    other = "pypi" if unicorn_engine.is_fast() else "fast"
    if other == "fast" and not unicorn_engine.built():
        pytest.skip("the fast engine is not built (make engine)")
    p = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k",
         " or ".join(GUEST_CODE_TESTS)],
        cwd=ROOT, env=unicorn_engine.child_env(other), capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"{len(GUEST_CODE_TESTS)} passed" in p.stdout


# ------------------------------------------------------------ the simulator's engine


def test_memory_violations_outside_rwx_ram_are_still_caught():
    """The engine's unmapped/protection hook covers only what is not RWX RAM (so that stores
    to RAM stay on Unicorn's fast path): a store to a read-only region and a load from
    unmapped memory still stop the engine as EPT violations."""
    run = boot("hello.elf")  # a decoder and profile as the simulator has them
    eng = Engine(run.vm.vcpus[0].engine.decoder, lambda bits: 0)
    ram, ro = mmap.mmap(-1, 0x10000), mmap.mmap(-1, 0x1000)
    eng.map_memory(
        [
            (0, 0x10000, "rwx", ctypes.addressof(ctypes.c_char.from_buffer(ram))),
            (0x10000, 0x1000, "r", ctypes.addressof(ctypes.c_char.from_buffer(ro))),
        ]
    )
    code = bytes.fromhex(
        "8b0425 00000100"  # mov eax, [0x10000]
        "890425 00000100"  # mov [0x10000], eax   -> write to a read-only page
        "8b0425 00002000"  # mov eax, [0x200000]  -> unmapped
        "f4"
    )
    eng.write_phys(0x1000, code)
    eng.set_regs({"rip": 0x1000, "rsp": 0x9000})
    stop = eng.run(10_000_000, 0)
    assert stop.reason is StopReason.MEM_VIOLATION and (stop.access, stop.rip) == ("w", 0x1007)
    eng.set_rip(0x100E)
    stop = eng.run(10_000_000, 0)
    assert stop.reason is StopReason.MEM_VIOLATION and (stop.access, stop.gpa) == ("r", 0x200000)


def test_engine_selection():
    code = "from acrn_sim.sim import unicorn_engine as e; print(e.describe())"

    def engine_of(name: str) -> str:
        p = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=unicorn_engine.child_env(name),
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert p.returncode == 0, p.stderr
        return p.stdout.strip()

    assert engine_of("pypi") == unicorn_engine.PYPI
    built = unicorn_engine.built()
    assert engine_of("fast") == (unicorn_engine.FAST if built else unicorn_engine.PYPI)


def test_version_names_the_engine():
    p = subprocess.run(
        [*CLI, "--version"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("acrn-sim ")
    assert p.stdout.strip().endswith(f"engine: {unicorn_engine.describe()}")


# --------------------------------------------------- byte-identical outputs on both engines

CASES = [
    ["guests/images/hello.elf", "--explain", "--report"],
    ["guests/images/timing.elf", "--load-order", "pre", "--report"],
    ["guests/images/longmode.elf", "--load-order", "pre"],  # the guest's own paging
    ["guests/images/exceptions.elf", "--load-order", "pre"],
    ["guests/images/mmiotest.elf"],
    ["guests/images/smp.elf", "--cpu-affinity", "1,2", "--consoles"],
    ["guests/images/bench.elf", "--load-order", "pre", "--cmdline", "memory 100000"],
    ["scenarios/two_user_vms.py", "--consoles"],
]


def run_on(engine: str, args: list[str], tmp_path) -> dict[str, bytes | int]:
    """Run `acrn-sim run ARGS` on `engine`: its exit status, stdout, stderr, statistics and
    trace, as bytes."""
    stats, trace = tmp_path / f"{engine}-stats.json", tmp_path / f"{engine}-trace.json"
    p = subprocess.run(
        [*CLI, "run", *args, "--stats", str(stats), "--trace",
         str(trace)],
        cwd=ROOT, env=unicorn_engine.child_env(engine), capture_output=True, timeout=300,
    )  # fmt: skip
    return {
        "status": p.returncode,
        "stdout": p.stdout,
        "stderr": p.stderr,
        "stats": stats.read_bytes() if stats.exists() else b"",
        "trace": trace.read_bytes() if trace.exists() else b"",
    }


def assert_same_on_both_engines(args: list[str], tmp_path) -> dict[str, bytes | int]:
    fast, pypi = (run_on(engine, args, tmp_path) for engine in ENGINES)
    for key in fast:
        assert fast[key] == pypi[key], f"{key} differs between the engines for {args}"
    return fast


@needs_both
@pytest.mark.parametrize("args", CASES, ids=lambda a: " ".join(a).replace("guests/images/", ""))
def test_outputs_identical_on_both_engines(args, tmp_path):
    out = assert_same_on_both_engines(args, tmp_path)
    assert out["status"] == 0, out["stderr"]
    assert out["trace"] and out["stats"]


# ------------------------------------------------------------------------------- bench


def test_bench_reports_and_writes_its_figures(tmp_path):
    """A smoke test of `acrn-sim bench` (tiny sizes, one run): what it prints and writes,
    not its timings. QEMU is compared with when installed."""
    qemu = find_qemu()
    lines: list[str] = []
    path = tmp_path / "bench.json"
    medians = run_bench(out=lines.append, runs=1, sizes=QUICK, qemu=qemu, json_path=str(path))
    text = "\n".join(lines)
    assert f"engine {unicorn_engine.describe()}" in lines[0]
    assert "compute-loop instructions" in text or "instructions of the compute loop" in text
    assert "IOREQ" in text and "8 VMs / 1 VM" in text
    data = json.loads(path.read_text())
    assert data["engine"] == unicorn_engine.describe() and data["runs"] == 1
    for name in ("memory_bare_mips", "memory_sim_mips", "compute_sim_over_bare", "cpuid_insns",
                 "ioreq_insns", "ioreq_per_s", "scaling_8_over_1"):  # fmt: skip
        fig = data["figures"][name]
        assert fig["min"] <= fig["median"] <= fig["max"] and len(fig["values"]) == 1
        assert medians[name] == fig["median"]
    assert (data["qemu"] is not None) == (qemu is not None)
    if qemu is not None:
        assert "QEMU TCG" in text and data["qemu"].startswith("QEMU")


def test_bench_json_option(tmp_path):
    path = tmp_path / "b.json"
    p = subprocess.run(
        [*CLI, "bench", "--quick", "--runs", "2", "--no-qemu",
         "--json", str(path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(f"acrn-sim bench: engine {unicorn_engine.describe()}")
    data = json.loads(path.read_text())
    assert data["runs"] == 2 and data["qemu"] is None
    assert len(data["figures"]["cpuid_per_s"]["values"]) == 2


def test_bench_boots_linux_beside_qemu(tmp_path):
    """`bench --linux`: the committed Linux's whole boot under acrn-sim and under QEMU TCG in
    the same run, and their ratio (the real-guests issue's yardstick)."""
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        pytest.skip("qemu-system-x86_64 is not installed (Debian's qemu-system-x86)")
    path = tmp_path / "b.json"
    p = subprocess.run(
        [*CLI, "bench", "--quick", "--runs", "1", "--linux", "--json", str(path)],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert "boot Linux (guests/images/linux, 1 vCPU, 128 MiB" in p.stdout
    fig = {k: v["median"] for k, v in json.loads(path.read_text())["figures"].items()}
    assert fig["linux_sim_s"] > 0 and fig["linux_qemu_s"] > 0
    assert fig["linux_sim_over_qemu"] == pytest.approx(fig["linux_sim_s"] / fig["linux_qemu_s"])
