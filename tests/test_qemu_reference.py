"""The reference for guest-visible behaviour: the committed test kernels and Linux guests boot
under qemu-system-x86_64 (TCG, no KVM) and exit through isa-debug-exit with the code they
wrote to port 0xF4. QEMU's exit status for a written value V is (V << 1) | 1.

Skipped when qemu-system-x86_64 is not installed. Debian's stock kernel is checked only when
`make -C guests/linux debian` has fetched it."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "guests" / "images"
LINUX = IMAGES / "linux"
DEBIAN = ROOT / "guests" / "linux" / "cache" / "debian"
QEMU = shutil.which("qemu-system-x86_64")

pytestmark = pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed")

MARK = "acrn-sim-init:"


def qemu(*args: str, timeout: float = 90) -> tuple[int, str]:
    """Run QEMU with COM1 on stdout and isa-debug-exit at 0xF4 (32-bit); return its exit
    status and the console."""
    cmd = [
        QEMU,
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
        "-serial",
        "stdio",
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=4",
        *args,
    ]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    return p.returncode, p.stdout.decode(errors="replace").replace("\r", "")


def exit_status(code: int) -> int:
    return ((code << 1) | 1) & 0xFF


# ---- kvm-unit-tests-style kernels ----


@pytest.mark.parametrize("append,code", [("42", 42), ("0x2a extra words", 42), ("", 0), ("7", 7)])
def test_ktest_exit(append, code):
    image = IMAGES / "ktest_exit.elf"
    args = ["-kernel", str(image)] + (["-append", append] if append else [])
    status, out = qemu(*args, timeout=30)
    assert status == exit_status(code), out
    # QEMU's Multiboot command line is "<kernel path> <append>": argv[0] is the path.
    assert f"ktest_exit: command line '{image} {append}'" in out
    assert f"ktest_exit: argv[0] = '{image}'" in out
    assert f"ktest_exit: exit {code}" in out


@pytest.mark.parametrize(
    "image,checks",
    [
        (
            "ktest_user.elf",
            (
                "SYSCALL: the handler ran at CPL 0",
                "int 0x80: the handler ran on the TSS RSP0",
                "#PF: user write to a not-present page",
                "HLT at CPL 3 gives #GP(0)",
                "LAPIC timer interrupt taken in ring 3",
                "NMI handler ran on the IST1 stack",
                "#DF handler ran on the IST1 stack",
            ),
        ),
        (
            "ktest32_user.elf",
            (
                "int 0x80: the handler ran on SS0:ESP0 of the TSS",
                "SYSENTER: CS/SS from IA32_SYSENTER_CS",
                "#PF: user write to a not-present page",
                "int 0x81 (DPL-0 gate) at CPL 3 gives #GP(0x40a)",
                "timer: the handler ran on SS0:ESP0 of the TSS",
            ),
        ),
    ],
)
def test_ktest_ring3(image, checks):
    status, out = qemu("-kernel", str(IMAGES / image), timeout=30)
    assert status == exit_status(0), out
    lines = out.splitlines()
    oks = [ln for ln in lines if ln.startswith("ok ")]
    not_oks = [ln for ln in lines if ln.startswith("not ok ")]
    assert len(oks) >= 20, out
    assert all("# TODO" in ln for ln in not_oks), out
    plan = next(ln for ln in lines if ln.startswith("1.."))
    assert int(plan[3:]) == len(oks) + len(not_oks)
    for check in checks:
        assert any(ln.startswith("ok ") and check in ln for ln in lines), check


def test_ktest_nmi_blocked_until_iret():
    status, out = qemu("-kernel", str(IMAGES / "ktest_nmi.elf"), timeout=30)
    assert status == exit_status(0), out
    assert "# ktest_nmi: 8 checks, 0 failed" in out


def test_lowload_linked_low_finds_its_boot_data_outside_the_image():
    """guests/src/lowload.c lies at 0x2000-0x8FFF: QEMU puts the command line after it and the
    info structure at 0x9500 (hw/i386/multiboot.c); acrn-sim's loader also keeps clear of it."""
    status, out = qemu("-kernel", str(IMAGES / "lowload.elf"), "-append", "a b", timeout=30)
    assert status == exit_status(0), out
    assert "# lowload: 5 checks, 0 failed" in out
    assert "lowload: arguments 'a b'" in out


# ---- Linux ----


def linux(kernel: Path, initrd: Path, append: str, *extra: str, smp: int = 1):
    # One socket per CPU: QEMU 7.2's "-smp 2" is one socket of two cores, and SeaBIOS's MP
    # table lists only the first CPU of a package, so with acpi=off Linux would see one CPU.
    return qemu(
        "-m",
        "256M",
        "-smp",
        f"{smp},sockets={smp}",
        "-kernel",
        str(kernel),
        "-initrd",
        str(initrd),
        "-append",
        f"console=ttyS0 {append}",
        *extra,
    )


def assert_booted(out: str, cpus: int):
    assert f"{MARK} reached /init" in out, out[-3000:]
    assert f"{MARK} cpus {cpus} online" in out, out[-3000:]


@pytest.mark.parametrize("smp,acpi", [(1, "on"), (2, "on"), (2, "off")])
def test_linux_boots_to_init_and_powers_off(smp, acpi):
    append = "acrnsim.exit=42" + (" acpi=off" if acpi == "off" else "")
    status, out = linux(LINUX / "bzImage", LINUX / "initramfs.cpio.gz", append, smp=smp)
    assert_booted(out, smp)
    assert f"{MARK} kernel 6.1." in out and "-acrnsim x86_64" in out
    assert f"{MARK} exit 42" in out
    assert status == exit_status(42), out[-3000:]
    if acpi == "off":
        assert "MPTABLE: APIC at: 0xFEE00000" in out  # SMP from the MP table then
    assert "serial8250: ttyS0 at I/O 0x3f8 (irq = 4" in out


def disk_image(path: Path, size: int = 1 << 20) -> bytes:
    data = b"".join(hashlib.sha256(i.to_bytes(4, "little")).digest() for i in range(size // 32))
    path.write_bytes(data)
    return data


@pytest.mark.parametrize("modern", [True, False], ids=["modern", "legacy"])
def test_linux_virtio_blk_checksum(tmp_path, modern):
    data = disk_image(tmp_path / "disk.img")
    sectors = 64
    want = hashlib.sha256(data[: sectors * 512]).hexdigest()
    # acrn-dm's virtio-blk is legacy-only (an I/O BAR0); QEMU's default is transitional.
    flags = "disable-legacy=on,disable-modern=off" if modern else "disable-modern=on"
    status, out = linux(
        LINUX / "bzImage",
        LINUX / "initramfs.cpio.gz",
        f"acrnsim.test=blk acrnsim.sectors={sectors}",
        "-drive",
        f"file={tmp_path / 'disk.img'},if=none,id=d0,format=raw",
        "-device",
        f"virtio-blk-pci,drive=d0,{flags}",
        smp=1,
    )
    assert_booted(out, 1)
    blk = f"{MARK} blk vda size {len(data) // 512} sectors, first {sectors} sectors sha256 {want}"
    assert blk in out, out[-3000:]
    assert status == exit_status(0), out[-3000:]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    try:
        rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return True  # cannot tell: assume it is
    return any(r.split()[1].endswith(f":{port:04X}") and r.split()[3] == "0A" for r in rows)


def test_linux_two_vms_ping_over_virtio_net():
    port, count = free_port(), 3
    results: dict[str, tuple[int, str]] = {}

    def vm(name, ip, peer, mac, netdev, code):
        results[name] = linux(
            LINUX / "bzImage",
            LINUX / "initramfs.cpio.gz",
            f"acrnsim.test=net acrnsim.ip={ip} acrnsim.peer={peer} acrnsim.count={count} "
            f"acrnsim.exit={code}",
            "-netdev",
            f"socket,id=n0,{netdev}",
            "-device",
            f"virtio-net-pci,netdev=n0,mac={mac}",
        )

    a = threading.Thread(
        target=vm,
        args=("a", "10.0.0.1", "10.0.0.2", "52:54:00:00:00:01", f"listen=127.0.0.1:{port}", 1),
    )
    a.start()
    # the listening side must be up before the other connects (a probe connection would
    # become QEMU's peer, so look for the socket in /proc/net/tcp instead)
    for _ in range(100):
        if listening(port):
            break
        threading.Event().wait(0.1)
    vm("b", "10.0.0.2", "10.0.0.1", "52:54:00:00:00:02", f"connect=127.0.0.1:{port}", 2)
    a.join(timeout=120)
    for name, peer, code in (("a", "10.0.0.2", 1), ("b", "10.0.0.1", 2)):
        status, out = results[name]
        assert_booted(out, 1)
        ping = f"{MARK} net ping {peer}: {count} packets transmitted, {count} packets received"
        assert ping in out, out[-2000:]
        assert status == exit_status(code), out[-2000:]


def test_linux_virtio_rng_and_console(tmp_path):
    """The same /init checks as tests/test_linux_virtio.py: /dev/hwrng served by virtio_rng,
    and a line each way over a virtio console port (hvc0). The host's line waits in the pipe
    until the guest opens the port (QEMU's virtio-serial sends only to a connected guest)."""
    pipe = tmp_path / "con"
    for end in ("in", "out"):
        os.mkfifo(f"{pipe}.{end}")
    keep = os.open(f"{pipe}.in", os.O_RDWR)  # held open: QEMU reads it, we write the line
    os.write(keep, b"hello from the host\n")
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(Path(f"{pipe}.out").read_bytes()))
    reader.start()
    try:
        status, out = linux(
            LINUX / "bzImage",
            LINUX / "initramfs.cpio.gz",
            "acrnsim.test=rng,console",
            "-device",
            "virtio-rng-pci",
            "-device",
            "virtio-serial-pci",
            "-chardev",
            f"pipe,id=c0,path={pipe}",
            "-device",
            "virtconsole,chardev=c0,name=stdio_port",
        )
    finally:
        os.close(keep)
    reader.join(timeout=10)
    assert status == exit_status(0), out[-3000:]
    assert re.search(rf"{MARK} rng virtio_rng\.0 32 bytes [0-9a-f]{{64}}", out), out[-3000:]
    assert f"{MARK} console read 'hello from the host' from /dev/hvc0" in out
    assert b"acrn-sim-init: hello over /dev/hvc0" in b"".join(got)


@pytest.mark.skipif(
    not (DEBIAN / "vmlinuz").exists(),
    reason="Debian's kernel not fetched (make -C guests/linux debian)",
)
@pytest.mark.parametrize("smp", [1, 2])
def test_debian_kernel_loads_virtio_modules(tmp_path, smp):
    data = disk_image(tmp_path / "disk.img")
    want = hashlib.sha256(data[: 8 * 512]).hexdigest()
    status, out = linux(
        DEBIAN / "vmlinuz",
        DEBIAN / "initramfs.cpio.gz",
        "acrnsim.test=blk acrnsim.sectors=8 acrnsim.exit=5",
        "-drive",
        f"file={tmp_path / 'disk.img'},if=none,id=d0,format=raw",
        "-device",
        "virtio-blk-pci,drive=d0,disable-modern=on",
        smp=smp,
    )
    assert_booted(out, smp)
    assert f"{MARK} loaded 11 modules" in out
    assert "failed" not in out.split(f"{MARK} reached")[1]
    assert f"first 8 sectors sha256 {want}" in out
    assert status == exit_status(5), out[-3000:]
