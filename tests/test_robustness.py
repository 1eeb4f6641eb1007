"""The model's own input readers and outputs are total: any bytes give an image or one line;
statistics take any integer; a crash never leaves half a file; a guest that pulls its page
tables from under its own code gets a fault, not the simulator."""

from __future__ import annotations

import json
import random
import signal
import struct
import subprocess
import time
from pathlib import Path

import pytest
from fuzz import images, x86

from acrn_sim.scenarios import cli as cli_module
from acrn_sim.sim import ConfigError, bootproto, paging
from acrn_sim.sim.elf import parse_elf
from acrn_sim.sim.stats import Stats, StepLatency
from conftest import CLI, ROOT, boot, cli, messages

IMAGES = sorted((ROOT / "guests" / "images").glob("*.elf"))


def _prepare(data: bytes, tmp: Path):
    f = tmp / "img.elf"
    f.write_bytes(data)
    return bootproto.prepare(str(f), 32 << 20, "x")


def _total(data: bytes, tmp: Path) -> str:
    """'image' or 'error' (a one-line ConfigError); anything else fails the test."""
    try:
        _prepare(data, tmp)
        return "image"
    except ConfigError as e:
        assert "\n" not in str(e)
        return "error"


def test_multiboot_header_in_the_last_32_bytes(tmp):
    flags = 1 << 16
    hdr = struct.pack("<III", images.MB_MAGIC, flags, (-(images.MB_MAGIC + flags)) & 0xFFFFFFFF)
    data = b"JUNK" + bytes(96) + hdr + bytes(8)  # the address fields would run past the end
    with pytest.raises(ConfigError, match="file ends inside them"):
        _prepare(data, tmp)


def test_elf64_program_header_offset_beyond_2_63(tmp):
    data = bytearray(images.guest("long64", b""))
    struct.pack_into("<Q", data, 32, 1 << 63)  # e_phoff
    with pytest.raises(ConfigError, match="truncated ELF headers"):
        _prepare(bytes(data), tmp)
    with pytest.raises(ConfigError):
        parse_elf(bytes(data), "x")


@pytest.mark.parametrize("field", ["e_phoff", "e_phnum", "e_phentsize", "p_offset", "p_filesz"])
@pytest.mark.parametrize("value", [0, 1, 0xFFFF, 0xFFFF_FFFF, (1 << 63), (1 << 64) - 1])
def test_elf_header_extremes(tmp, field, value):
    for mode in ("flat32", "long64"):
        data = bytearray(images.guest(mode, b""))
        wide = mode == "long64"
        phoff = 64 if wide else 52
        where = {
            "e_phoff": (32, "Q") if wide else (28, "I"),
            "e_phnum": (56, "H") if wide else (44, "H"),
            "e_phentsize": (54, "H") if wide else (42, "H"),
            "p_offset": (phoff + 8, "Q") if wide else (phoff + 4, "I"),
            "p_filesz": (phoff + 32, "Q") if wide else (phoff + 16, "I"),
        }[field]
        off, fmt = where
        struct.pack_into("<" + fmt, data, off, value & ((1 << (8 * struct.calcsize(fmt))) - 1))
        _total(bytes(data), tmp)


def test_image_readers_are_total(tmp):
    """Seeded mutations of every committed image and random byte strings: each gives a boot
    image or a one-line error."""
    rng = random.Random(5)
    seen = {"image": 0, "error": 0}
    for i in range(400):
        if i % 5 == 0:
            data = rng.randbytes(rng.randint(0, 300))
            if rng.random() < 0.5:
                data = b"\x7fELF" + bytes([rng.choice((1, 2)), 1]) + data
        else:
            data = bytearray(rng.choice(IMAGES).read_bytes())
            for _ in range(rng.randint(1, 8)):
                pos = rng.randrange(min(len(data), 256) if rng.random() < 0.7 else len(data))
                width = rng.choice((1, 2, 4, 8))
                data[pos : pos + width] = rng.choice(
                    (b"\xff" * width, bytes(width), rng.randbytes(width))
                )
            if rng.random() < 0.1:
                data = data[: rng.randrange(len(data))]
            data = bytes(data)
        seen[_total(data, tmp)] += 1
    assert seen["image"] > 0 and seen["error"] > 0


def test_oversized_image_footprint(tmp):
    data = bytearray(images.guest("flat32", b""))
    struct.pack_into("<I", data, 52 + 20, 0x7FFF_FFFF)  # p_memsz: 2 GiB of bss
    with pytest.raises(ConfigError, match="at most 1 GiB"):
        _prepare(bytes(data), tmp)


def test_page_fault_survives_simpy_reraise():
    """simpy re-raises a process's exception as type(e)(*e.args)."""
    e = paging.PageFault(0x1234, 0x10)
    again = type(e)(*e.args)
    assert (again.linear, again.error_code, str(again)) == (0x1234, 0x10, str(e))


def test_step_statistics_take_values_beyond_64_bits():
    steps = StepLatency()
    for n, base in enumerate((0, 1 << 70)):
        r = steps.begin(n, "VM", 0, base, "exit_handler", "exit")
        r.device = "uart"
        steps.finish(r, base + 100, "back_in_guest", "back")
    out = steps.breakdown()["VM"]["uart"]["total"]
    assert out["count"] == 2 and out["max"] == 100
    stats = Stats(2_400_000_000, steps)
    stats.exits["VM"]["CPUID"].extend([1 << 80, 5])
    stats.end_cycle = 1 << 90
    json.dumps(stats.to_json())
    assert "CPUID" in stats.report()


def _paged_guest_dropping_its_code(tmp: Path) -> Path:
    # Clear the page-directory entry that maps the running code (no INVLPG: the stale TLB entry
    # still runs it), then jump into a block not decoded yet.
    code = x86.store_abs(images.PAGE_DIR, 0) + x86.jmp_rel8(2) + x86.mov_imm(x86.EAX, 7)
    code += x86.out_imm(0xF4)
    f = tmp / "ptswap.elf"
    f.write_bytes(images.guest("paged32", code, idt=True))
    return f


def test_page_tables_changed_under_running_code_is_a_guest_event(tmp):
    f = _paged_guest_dropping_its_code(tmp)
    run = boot(str(f), until=2_400_000)
    # The block that cannot be fetched any more raises #PF; the IDT is unmapped as well, so
    # delivery faults again: #DF, then a triple fault. The VM goes down, not the simulator.
    assert run.vm.shutdown is not None and run.vm.shutdown.kind == "triple_fault"
    assert "vector 14" in run.vm.shutdown.reason
    assert run.service_vm.shutdown is None
    p = cli("run", str(f), "--until", "2ms")
    assert p.returncode == 125 and "Traceback" not in p.stderr, p.stderr


def test_outputs_are_written_atomically(tmp):
    target = tmp / "stats.json"
    target.write_text('{"old": 1}\n')

    def dump(f):
        f.write('{"half": ')
        raise RuntimeError("crash while writing")

    with pytest.raises(RuntimeError):
        cli_module._write(str(target), dump)
    assert json.loads(target.read_text()) == {"old": 1}
    assert sorted(p.name for p in tmp.iterdir()) == ["stats.json"]  # no temporary left
    cli_module._write(str(target), lambda f: json.dump({"new": 2}, f))
    assert json.loads(target.read_text()) == {"new": 2}
    cli_module._write("/dev/null", lambda f: json.dump({}, f))  # written in place, not renamed
    assert Path("/dev/null").is_char_device()


INTERNAL_FAULT = """
from acrn_sim.guests import image_path
from acrn_sim.scenarios import pre_launched, service_vm
from acrn_sim.sim.engine import Engine
from acrn_sim.sim.units import fmt_us

_run = Engine.run


def run(self, budget, tsc_base):  # a failure inside the model's code, a while into the run
    if tsc_base > 1_000_000:
        fmt_us(1, 0)  # (a TSC of 0 Hz: ZeroDivisionError in sim/units.py)
    return _run(self, budget, tsc_base)


Engine.run = run


def scenario(opts):
    return [pre_launched(image_path("bench.elf"), cmdline="compute 100000000"), service_vm()]
"""


def test_internal_error_is_one_line_with_its_own_status_and_outputs(tmp):
    script = tmp / "fault.py"
    script.write_text(INTERNAL_FAULT)
    stats, trace = tmp / "s.json", tmp / "t.json"
    p = cli("run", str(script), "--until", "5ms", "--stats", str(stats), "--trace", str(trace))
    assert p.returncode == cli_module.EXIT_INTERNAL == 70, p.stderr
    assert "Traceback" not in p.stderr
    lines = messages(p.stderr)
    assert len(lines) == 1, p.stderr
    line = lines[0]
    assert line.startswith("acrn-sim: internal error in VM PRE_VM0 at cycle ")
    assert "ZeroDivisionError" in line and "please report it" in line
    assert "(sim/units.py:" in line  # the innermost frame of the project's code
    s = json.loads(stats.read_text())
    assert s["sim_cycles"] > 1_000_000
    assert json.loads(trace.read_text())


def test_ctrl_c_stops_within_a_second_and_writes_the_stats(tmp):
    stats = tmp / "s.json"
    proc = subprocess.Popen(
        [*CLI, "run", "guests/images/bench.elf",
         "--load-order", "pre", "--cmdline", "compute 2000000000", "--until", "100s",
         "--stats", str(stats)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(2.0)  # well into the run
    assert proc.poll() is None
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=30)  # a hang bound; not a timing assertion
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted at cycle" in err and "Traceback" not in err
    assert json.loads(stats.read_text())["sim_cycles"] > 0
