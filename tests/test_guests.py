"""Every guest program, end to end: booted on the model, checked by what it prints and the
exit code it writes to port 0xF4 (the guests check themselves and exit non-zero on failure)."""

import pytest

from conftest import boot, cli, messages

EXPECT = {
    "hello.elf": "Hello from an ACRN guest!",
    "hello64.elf": "Hello from a 64-bit ACRN guest!\nEFER.LMA=1 CR0.PG=1",
    "cpuid.elf": "cpuid: all checks passed",
    "msr.elf": "msr: all checks passed",
    "exceptions.elf": "exceptions: all checks passed",
    "longmode.elf": "Hello from 64-bit long mode",
    "unclaimed.elf": "mmio: ffffffff ffffffff, byte ff",
}


@pytest.mark.parametrize("image", sorted(EXPECT))
def test_guest_passes(image):
    run = boot(image)
    assert run.result.status == "done"
    assert run.vm.shutdown.kind == "poweroff", run.vm.shutdown
    assert run.vm.shutdown.exit_code == 0, run.console
    assert EXPECT[image] in run.console
    assert "FAIL" not in run.console


def test_hello_from_the_command_line():
    p = cli("run", "guests/images/hello.elf", "--load-order", "pre")
    assert p.returncode == 0, p.stderr
    assert "Hello from an ACRN guest!" in p.stdout
    assert messages(p.stderr) == []


def test_exit_status_is_the_guests_exit_code():
    # irqwin checks that an injected interrupt arrives; run alone, nothing injects one, so the
    # guest reports one failed check and writes 1 to port 0xF4.
    p = cli("run", "guests/images/irqwin.elf", "--load-order", "pre")
    assert p.returncode == 1, p.stderr
    assert "FAIL: interrupt not delivered after STI" in p.stdout


def test_multiboot_info_reaches_the_guest():
    run = boot("hello.elf", cmdline="console=ttyS0", mem=16 << 20)
    assert "memory: 640 KiB low, 15360 KiB high" in run.console
    assert "cmdline: 'console=ttyS0'" in run.console


def test_scenario_script():
    p = cli("run", "scenarios/hello.py", "--report")
    assert p.returncode == 0, p.stderr
    assert "Hello from an ACRN guest!" in p.stdout
    assert "IO_INSTRUCTION" in p.stderr  # the report
