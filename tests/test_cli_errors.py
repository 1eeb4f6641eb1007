"""Bad input gets one line naming the problem and a non-zero status, never a traceback."""

import struct
import subprocess

import pytest

from conftest import CLI, ROOT, cli, messages


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


# ---- every input the fuzz campaign turned into a traceback, now one line each
@pytest.mark.parametrize(
    "args,words",
    [
        (["--mem", "99999999999999999999G"], ["--mem", "out of range", "2 MiB to 64 GiB"]),
        (["--mem", "1K"], ["--mem", "out of range"]),
        (["--mem", "65G"], ["--mem", "out of range"]),
        (["--mem", "3000000"], ["not a multiple of 4 KiB"]),
        (["--mem", "²M"], ["bad size"]),
        (["--cost", "tsc_hz=1"], ["tsc_hz=1", "out of range", "1000000 to 100000000000"]),
        (["--cost", "vmexit_hw=²"], ["NAME=CYCLES"]),
        (["--cost", "vmexit_hw=٣"], ["NAME=CYCLES"]),
        (["--cost", "sched_quantum=0"], ["sched_quantum=0", "out of range", "1000 to"]),
        (["--cost", "vmexit_hw=0"], ["vmexit_hw=0", "out of range", "1 to"]),
        (["--cost", "base=0"], ["base=0", "out of range"]),
        (["--cost", "vmexit_hw=" + "9" * 40], ["NAME=CYCLES"]),
        (["--cost", "vmexit_hw=99999999999999999999"], ["out of range", "1000000000"]),
        (["--cpu-affinity", "-1"], ["--cpu-affinity", "0 to 63"]),
        (["--cpu-affinity", "99999999"], ["pCPU 99999999 is out of range: 0 to 63"]),
        (["--cpu-affinity", "64"], ["pCPU 64 is out of range"]),
        (["--cpu-affinity", "1,1"], ["listed twice"]),
        (["--profile", "/tmp"], ["cannot read timing profile /tmp", "directory"]),
        (["--until", "99999999999999999999s"], ["out of range", "2^63"]),
        (["--until", "9" * 5000 + "ms"], ["bad simulated time"]),
        (["--cmdline", "x" * 1024], ["--cmdline is 1024 bytes, at most 1023"]),
        (["--stats", "/no/such/dir/s.json"], ["cannot write", "no directory"]),
        (["--trace", "/tmp"], ["cannot write /tmp", "directory"]),
    ],
)
def test_out_of_range_options(args, words):
    assert_one_line_error(
        cli("run", "guests/images/hello.elf", "--load-order", "pre", *args), *words
    )


def test_guest_memory_beyond_what_the_host_gives():
    """An address-space limit below the guest's RAM: the mapping fails, reported before any
    VM runs (on this 24 GiB machine the host-RAM check alone would let 16 GiB through)."""
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))

    p = subprocess.run(
        [*CLI, "run", "guests/images/hello.elf", "--mem", "16G"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, preexec_fn=limit,
    )  # fmt: skip
    assert_one_line_error(p, "cannot allocate", "host memory", "--mem")


def test_guest_memory_beyond_the_hosts_ram(monkeypatch):
    from acrn_sim.sim import ConfigError, hostmem

    monkeypatch.setattr(hostmem, "host_ram", lambda: 1 << 30)
    with pytest.raises(ConfigError, match="more than this host's 1 GiB"):
        hostmem.HostMemory(2 << 30)


def test_profile_without_instruction_classes(tmp):
    text = (ROOT / "sim" / "profiles" / "default.toml").read_text()
    kept = [ln for ln in text.split("\n[") if not ln.startswith("instruction_classes.")]
    f = tmp / "p.toml"
    f.write_text("\n[".join(kept))
    p = cli("run", "guests/images/hello.elf", "--profile", str(f))
    assert_one_line_error(p, "instruction_classes.", "is missing")


@pytest.mark.parametrize(
    "content,words",
    [
        (b"\xff\xfe not utf-8", ["not valid TOML"]),
        (b"[machine]\ntsc_hz = 0\n", ["tsc_hz must be an integer from 1000000"]),
        (b"[machine]\ntsc_hz = true\n", ["tsc_hz must be an integer"]),
        (b"costs = 5\n[machine]\ntsc_hz = 2400000000\n", ["costs must be a table"]),
    ],
)
def test_bad_profiles(tmp, content, words):
    f = tmp / "p.toml"
    f.write_bytes(content)
    assert_one_line_error(cli("run", "guests/images/hello.elf", "--profile", str(f)), *words)


def test_profile_value_out_of_range(tmp):
    text = (ROOT / "sim" / "profiles" / "default.toml").read_text()
    f = tmp / "p.toml"
    f.write_text(
        text.replace(
            "[costs.sched_quantum]\ncycles = 2_400_000", "[costs.sched_quantum]\ncycles = 0"
        )
    )
    assert_one_line_error(
        cli("run", "guests/images/hello.elf", "--profile", str(f)),
        "costs.sched_quantum cycles must be an integer from 1000",
    )


def test_unreadable_image():
    assert_one_line_error(cli("run", "/proc/self/mem"), "cannot read guest image /proc/self/mem")
    # also where --report reads the image first for its boot-stage markers (fuzz seed 7, #743)
    assert_one_line_error(
        cli("run", "/proc/self/mem", "--until", "2ms", "--report"),
        "cannot read guest image /proc/self/mem",
    )


def test_an_output_in_a_directory_that_takes_no_file_fails_before_the_run():
    """/proc/version is a regular file, but /proc takes no temporary file beside it, which the
    atomic write needs: one line before the run, not after it (fuzz seed 7, #2387)."""
    assert_one_line_error(
        cli("run", "scenarios/two_user_vms.py", "--until", "2ms", "--report",
            "--stats", "/proc/version"),
        "cannot write /proc/version",
    )  # fmt: skip


def test_non_utf8_command_line_reaches_the_guest_as_bytes():
    p = subprocess.run(
        [*CLI, "run", "guests/images/hello.elf",
         "--load-order", "pre", "--cmdline", b"caf\xe9 \xff"],
        cwd=ROOT, capture_output=True, timeout=120,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert b"caf\xe9 \xff" in p.stdout
    assert b"Traceback" not in p.stderr


SCENARIO_HEAD = (
    "from acrn_sim.guests import image_path\n"
    "from acrn_sim.scenarios import pre_launched, service_vm\n"
)
SCENARIO_BODY = (
    "def scenario(opts):\n    vm = pre_launched(image_path('hello.elf'))\n"
    "    svc = service_vm()\n{edit}\n    return [vm, svc]\n"
)


@pytest.mark.parametrize(
    "module,edit,words",
    [
        ("PARAMS = 5", "", ["PARAMS must be a list of names, not 5"]),
        ("PARAMS = 'abc'", "", ["PARAMS must be a list of names"]),
        ("SCHEDULER = 'fifo'", "", ["SCHEDULER must be one of"]),
        ("def report(hv, r):\n    raise RuntimeError('boom')", "", ["report() failed", "boom"]),
        ("def main(opts):\n    return 'x'", "", ["main() must return an exit status 0-255"]),
        ("def main(opts):\n    raise SystemExit(9)", "", ["main() failed: SystemExit"]),
        ("raise SystemExit(3)", "", ["failed to load: SystemExit"]),
        ("", "    vm.memory = '32M'", ["VM PRE_VM0: memory must be a number of bytes"]),
        ("", "    vm.memory = 1 << 40", ["VM PRE_VM0: memory 1024 GiB is out of range"]),
        ("", "    vm.memory = 4097 * 1024", ["VM PRE_VM0: memory", "multiple of 4 KiB"]),
        ("", "    svc.software = 42", ["VM Service_VM: software must be None or a factory"]),
        ("", "    vm.cpu_affinity = [99]", ["VM PRE_VM0: cpu_affinity: pCPU 99 is out of range"]),
        ("", "    vm.cpu_affinity = ['1']", ["VM PRE_VM0: cpu_affinity must be a list"]),
        ("", "    vm.cpu_affinity = []", ["VM PRE_VM0: cpu_affinity: needs at least one"]),
        ("", "    vm.cmdline = 42", ["VM PRE_VM0: cmdline must be a string"]),
        ("", "    vm.name = 'X' * 40", ["at most 15 bytes"]),
        ("", "    vm.name = 42", ["name must be a non-empty string"]),
        ("", "    vm.priority = 'PRIO_MAX'", ["VM PRE_VM0: priority must be one of"]),
        ("", "    vm.bvt_weight = 0", ["VM PRE_VM0: bvt_weight must be an integer from 1 to 128"]),
        ("", "    vm.watched = 'yes'", ["VM PRE_VM0: watched must be True or False"]),
        ("", "    vm.vm_type = 'BOGUS'", ["VM PRE_VM0: vm_type must be one of"]),
        ("", "    vm.load_order = 'SIDEWAYS'", ["VM PRE_VM0: load_order must be one of"]),
        ("", "    svc.vm_manager = [(1, 'explode', 'X', None)]", ["vm_manager entry"]),
        ("", "    vm.image = 42", ["VM PRE_VM0: image must be a path"]),
        ("", "    svc.software = lambda port: 1 / 0", ["failed: ZeroDivisionError"]),
    ],
)
def test_bad_scenario_fields(tmp, module, edit, words):
    f = tmp / "s.py"
    f.write_text(SCENARIO_HEAD + module + "\n" + SCENARIO_BODY.format(edit=edit))
    assert_one_line_error(cli("run", str(f), "--until", "1ms"), *words)


def test_64_vcpus_in_one_vm_fit():
    """Each engine's translation buffer is 32 MiB, not Unicorn's 1 GiB: 64 vCPUs fit in an
    address space of 16 GiB, where 64 default engines could not even be created."""
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (16 << 30, 16 << 30))

    # (pre-launched: a User VM's vCPUs must fit acrn-dm's ACPI tables, checked below)
    p = subprocess.run(
        [*CLI, "run", "guests/images/smp.elf",
         "--load-order", "pre", "--cpu-affinity", ",".join(map(str, range(64))),
         "--until", "1ms"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, preexec_fn=limit,
    )  # fmt: skip
    assert p.returncode in (0, 124), p.stderr  # the guest passed, or ran to the time limit
    assert "Traceback" not in p.stderr and "Could not allocate" not in p.stderr


def test_a_user_vm_with_more_vcpus_than_acrn_dms_acpi_tables_hold():
    p = cli("run", "guests/images/smp.elf", "--cpu-affinity", ",".join(map(str, range(1, 23))))
    assert p.returncode == 2
    assert messages(p.stderr) == ["acrn-sim: error: ACPI: 22 vCPUs (the MADT has room for 1 to 21)"]
