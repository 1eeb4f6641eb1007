"""Bad input gets one line naming the problem and a non-zero status, never a traceback."""

import struct

import pytest

from conftest import cli, messages


def assert_one_line_error(p, *words):
    assert p.returncode == 2, (p.returncode, p.stderr)
    lines = messages(p.stderr)
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("acrn-sim: error:")
    for w in words:
        assert w in lines[0]
    assert "Traceback" not in p.stderr


def elf32_at(paddr: int) -> bytes:
    """A minimal valid ELF32 executable with one segment at `paddr` and a Multiboot header."""
    mb = struct.pack("<III", 0x1BADB002, 0, (-0x1BADB002) & 0xFFFFFFFF)
    code = mb + b"\xf4" * 4
    ehdr = b"\x7fELF" + bytes([1, 1, 1]) + bytes(9)
    ehdr += struct.pack("<HHIIIIIHHHHHH", 2, 3, 1, paddr + 12, 52, 0, 0, 52, 32, 1, 40, 0, 0)
    phdr = struct.pack("<IIIIIIII", 1, 0x100, paddr, paddr, len(code), len(code), 5, 0x1000)
    return ehdr + phdr + bytes(0x100 - 52 - 32) + code


def test_missing_image():
    assert_one_line_error(cli("run", "no/such/image.elf", "--load-order", "pre"), "not found")


def test_not_an_elf(tmp):
    f = tmp / "junk.bin"
    f.write_bytes(b"this is not a kernel" * 10)
    assert_one_line_error(cli("run", str(f), "--load-order", "pre"), "not an ELF")


def test_image_too_big_for_vm_memory(tmp):
    f = tmp / "high.elf"
    f.write_bytes(elf32_at(0x4000000))  # 64 MiB
    assert_one_line_error(cli("run", str(f), "--load-order", "pre", "--mem", "32M"), "--mem")


def test_synthetic_elf_is_accepted_when_it_fits(tmp):
    f = tmp / "high.elf"
    f.write_bytes(elf32_at(0x200000))
    p = cli("run", str(f), "--load-order", "pre")
    # it only halts, with no interrupt source: the run ends when nothing can wake any vCPU
    assert p.returncode == 126, p.stderr
    assert "halted" in p.stderr


@pytest.mark.parametrize(
    "args,word",
    [
        (["--mem", "lots"], "bad size"),
        (["--until", "soon"], "bad simulated time"),
        (["--cost", "nope=5"], "unknown cost"),
        (["--cost", "vmexit_hw"], "NAME=CYCLES"),
        (["--profile", "/no/profile.toml"], "profile not found"),
        (["--bogus"], "unrecognized"),
    ],
)
def test_bad_options(args, word):
    assert_one_line_error(cli("run", "guests/images/hello.elf", "--load-order", "pre", *args), word)


def test_bad_scenario(tmp):
    f = tmp / "s.py"
    f.write_text("def scenario(opts):\n    return 42\n")
    assert_one_line_error(cli("run", str(f)), "list of VmConfig")
    f.write_text("raise RuntimeError('boom')\n")
    assert_one_line_error(cli("run", str(f)), "boom")


def test_time_limit_status():
    p = cli("run", "guests/images/hello.elf", "--load-order", "pre", "--until", "20us")
    assert p.returncode == 124
    assert "simulated-time limit" in p.stderr
