"""Real guests: the QEMU-style test kernels (guests/src/ktest_*.c) as pre-launched VMs and as
User VMs, and the committed Linux bzImage booted as acrn-dm's -k/-r/-B boot it.

The test kernels check the processor themselves (TAP lines) and exit with outl(code, 0xF4);
under QEMU's TCG the same images pass too (tests/test_qemu_reference.py)."""

import re
from pathlib import Path

import pytest

from acrn_sim.guests import image_path
from acrn_sim.scenarios import user_vm, with_service_vm
from acrn_sim.sim.elf import parse_elf
from conftest import ROOT, boot, boot_configs, boot_user, cli, messages

LINUX = ROOT / "guests" / "images" / "linux"
BZIMAGE, INITRD = LINUX / "bzImage", LINUX / "initramfs.cpio.gz"


def _run(image: str, user: bool, cmdline: str):
    if user:
        return boot_user(image, cmdlines=[cmdline])
    return boot(image, cmdline=cmdline)


@pytest.mark.parametrize("user", [False, True], ids=["pre-launched", "user-vm"])
def test_ktest_exit_code_is_the_outl_value(user):
    run = _run("ktest_exit.elf", user, "42")
    assert run.exit_code == 42, run.console
    # argv[0] is the image's own path, as GRUB and QEMU's -kernel put it; a shipped image's
    # path in the package, wherever the package lies (sim/paths.py shown)
    assert "argv[0] = 'guests/images/ktest_exit.elf'" in run.console
    assert "argv[1] = '42'" in run.console


@pytest.mark.parametrize("user", [False, True], ids=["pre-launched", "user-vm"])
def test_ktest_user_ring3_checks_pass_strictly(user):
    run = _run("ktest_user.elf", user, "strict quiet")
    assert run.exit_code == 0, run.console
    assert "# ktest_user: 41 checks, 0 failed" in run.console
    assert "not ok" not in run.console


@pytest.mark.parametrize("user", [False, True], ids=["pre-launched", "user-vm"])
def test_ktest_cpu_msr_xcr0_exception_cpuid_checks_pass_strictly(user):
    run = _run("ktest_cpu.elf", user, "strict")
    assert run.exit_code == 0, run.console
    assert re.search(r"# ktest_cpu: \d+ checks, 0 failed", run.console)
    # every group ran on ACRN (no SKIP): the model offers XSAVE, the ACRN leaves and SMEP
    assert "SKIP" not in run.console
    assert "ok 12 - XSETBV(XCR0 = x87): XGETBV reads 1" in run.console


@pytest.mark.parametrize("user", [False, True], ids=["pre-launched", "user-vm"])
def test_ktest_nmi_blocked_until_iret(user):
    """SDM vol. 3 §6.7.1: a self-NMI sent inside the NMI handler is held until its IRET, and
    the IRET of a #BP handler inside the NMI handler unblocks NMIs too (as under QEMU)."""
    run = _run("ktest_nmi.elf", user, "")
    assert run.exit_code == 0, run.console
    assert "# ktest_nmi: 8 checks, 0 failed" in run.console


def test_int_n_through_a_dpl0_gate_faults_at_the_int():
    """The #GP of `int 0x81` from ring 3 (gate DPL 0) is a fault of the INT: its frame holds
    the INT's own address (SDM vol. 3 §6.12.1.1), as QEMU gives it; ktest32_user prints it."""
    run = boot("ktest32_user.elf")
    m = re.search(r"# vector 13 error 40a at ([0-9a-f]+) cs 1b", run.console)
    assert m, run.console
    addr = int(m.group(1), 16)
    image = parse_elf(Path(image_path("ktest32_user.elf")).read_bytes(), "ktest32_user.elf")
    seg = next(s for s in image.segments if s.paddr <= addr < s.paddr + len(s.data))
    assert seg.data[addr - seg.paddr : addr - seg.paddr + 2] == b"\xcd\x81"  # int 0x81


def test_port_f4_takes_1_2_and_4_byte_writes():
    # hello exits with outb (guests/lib/rt.c), ktest_exit with outl: both power off
    assert boot("hello.elf").exit_code == 0
    assert _run("ktest_exit.elf", False, "7").exit_code == 7


@pytest.mark.parametrize(
    "args, message",
    [
        (["-r", "x.cpio"], "-r and -B go with -k (a User VM's kernel)"),
        (["hello.elf", "-k", "bz"], "-k names the image: give either -k or 'hello.elf', not both"),
        (
            ["-k", "bz", "--load-order", "pre"],
            "-k loads a User VM's kernel as acrn-dm does: use --load-order post",
        ),
        (["-k", str(image_path("hello.elf")), "-r", str(INITRD)], None),
    ],
)
def test_kernel_options_are_checked(args, message):
    r = cli("run", *args)
    assert r.returncode == 2
    if message is None:  # an initrd with a Multiboot image
        assert "an initrd (-r) goes with a Linux bzImage" in r.stderr
    else:
        assert messages(r.stderr) == [f"acrn-sim: error: {message}"]


def _linux(vcpus: int):
    vm = user_vm(str(BZIMAGE), memory=128 << 20, cmdline="console=ttyS0", initrd=str(INITRD))
    vm.cpu_affinity = list(range(1, vcpus + 1))
    return boot_configs(with_service_vm([vm]), main="POST_VM1", trace=False)


@pytest.mark.skipif(not BZIMAGE.is_file(), reason="no committed Linux image")
@pytest.mark.parametrize("vcpus", [1, 2])
def test_linux_boots_to_init_and_powers_off(vcpus):
    """The committed 6.1 kernel and busybox initramfs: /init runs in user mode, prints, and
    writes 0 to port 0xF4. About 9 s (1 vCPU) and 12 s (2 vCPUs) of host time."""
    run = _linux(vcpus)
    console = run.console_of("POST_VM1")
    assert run.result.status == "done", console[-2000:]
    assert run.exit_code == 0, console[-2000:]
    assert "Run /init as init process" in console
    assert f"acrn-sim-init: cpus {vcpus} online" in console
    assert "acrn-sim-init: exit 0" in console
    # what acrn-dm gave it: the tables, the TSC frequency from CPUID, its CPUs, the 16550A
    assert "ACPI: RSDP 0x00000000000F2400" in console
    assert "tsc: Detected 2400.000 MHz processor" in console
    assert "ttyS0 at I/O 0x3f8 (irq = 4, base_baud = 115200) is a 16550A" in console
    assert f"smp: Brought up 1 node, {vcpus} CPU" in console
    assert "Call Trace" not in console  # no kernel warning (an unchecked MSR access, a BUG)


DEBIAN = ROOT / "guests" / "linux" / "cache" / "debian"


@pytest.mark.skipif(
    not (DEBIAN / "vmlinuz").is_file(),
    reason="Debian's kernel not built (make -C guests/linux debian)",
)
@pytest.mark.parametrize("vcpus", [1, 2])
def test_debian_kernel_boots_to_init_and_powers_off(vcpus):
    """Issue #17: Debian's stock amd64 kernel (KASLR, xz, its virtio drivers as modules) boots
    to the same /init with 1 and with 2 vCPUs, and powers off with exit code 0. About 35 s
    (1 vCPU) and 50 s (2 vCPUs) of host time; 4.9-5.0 s simulated, 2.6 s of it decompression."""
    vm = user_vm(
        str(DEBIAN / "vmlinuz"),
        memory=256 << 20,
        cmdline="console=ttyS0",
        initrd=str(DEBIAN / "initramfs.cpio.gz"),
    )
    vm.cpu_affinity = list(range(1, vcpus + 1))
    run = boot_configs(with_service_vm([vm]), main="POST_VM1", trace=False)
    console = run.console_of("POST_VM1")
    assert run.result.status == "done", console[-2000:]
    assert run.exit_code == 0, console[-2000:]
    assert "Run /init as init process" in console
    assert f"smp: Brought up 1 node, {vcpus} CPU" in console
    assert f"acrn-sim-init: cpus {vcpus} online" in console
    assert re.search(r"acrn-sim-init: loaded \d+ modules", console)
    assert "failed" not in console.split("Run /init as init process")[1]  # every insmod
    assert "acrn-sim-init: exit 0" in console
    assert "Call Trace" not in console


def test_linux_image_and_initrd_are_committed():
    assert Path(BZIMAGE).stat().st_size > 1 << 20
    assert Path(INITRD).stat().st_size > 100 << 10


def test_a_run_does_not_depend_on_where_the_repository_lies(tmp_path):
    """The same shipped image reached through a longer path gives the same console, exit and
    cycles: the guest sees it as guests/images/... (a longer command line would take the guest
    longer to read)."""
    import os

    from acrn_sim.sim.paths import PACKAGE_ROOT

    far = tmp_path / ("x" * 40) / "repo"
    far.parent.mkdir()
    os.symlink(PACKAGE_ROOT, far)
    results = []
    for root in (PACKAGE_ROOT, far):
        r = boot(str(root / "guests" / "images" / "ktest_exit.elf"), cmdline="5")
        results.append((r.console, r.exit_code, r.hv.now()))
    assert results[0] == results[1]
    assert "argv[0] = 'guests/images/ktest_exit.elf'" in results[0][0]
