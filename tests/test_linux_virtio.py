"""Linux's own virtio drivers against the device model's back ends: the committed 6.1 kernel
(drivers/virtio/virtio_pci_{legacy,modern}.c, drivers/block/virtio_blk.c,
drivers/net/virtio_net.c, drivers/char/virtio_console.c, drivers/char/hw_random/virtio-rng.c,
all built in) and its busybox /init (`acrnsim.test=...`, docs/real-guests.md) as User VMs with
acrn-dm's -s devices.

Linux's virtio_pci takes the modern interface of a transitional device and the legacy one of a
legacy-only device ("virtio_pci: leaving for legacy driver"), so each transport is tested by
offering one. Each boot takes 40-90 s of host time."""

import hashlib
import random
import re

import pytest

from acrn_sim.scenarios import linux_ping, user_vm, with_service_vm
from conftest import ROOT, boot_configs

LINUX = ROOT / "guests" / "images" / "linux"
BZIMAGE, INITRD = LINUX / "bzImage", LINUX / "initramfs.cpio.gz"
DEBIAN = ROOT / "guests" / "linux" / "cache" / "debian"
SECTORS = 64
LEGACY_NOTE = "virtio_pci: leaving for legacy driver"

pytestmark = pytest.mark.skipif(not BZIMAGE.is_file(), reason="no committed Linux image")


def _disk(tmp_path) -> tuple[str, bytes]:
    data = random.Random(7).randbytes(1 << 20)
    path = tmp_path / "disk.img"
    path.write_bytes(data)
    return str(path), data


def _boot(devices, tests, *, console_input=b"", kernel=BZIMAGE, initrd=INITRD, mem=128, extra=""):
    cmdline = f"console=ttyS0 acrnsim.test={tests} acrnsim.sectors={SECTORS} {extra}".strip()
    vm = user_vm(str(kernel), memory=mem << 20, cmdline=cmdline, initrd=str(initrd),
                 devices=devices, console_input=console_input)  # fmt: skip
    run = boot_configs(with_service_vm([vm]), main="POST_VM1", trace=False)
    return run, run.console_of("POST_VM1")


def _devices(run) -> dict[str, object]:
    return {d.CLASS_NAME: d for d in run.dm("POST_VM1").pci.devices}


def _check_blk(console: str, data: bytes) -> None:
    want = hashlib.sha256(data[: SECTORS * 512]).hexdigest()
    assert f"blk vda size {len(data) // 512} sectors, first {SECTORS} sectors sha256 {want}" in (
        console
    ), console[-3000:]


def _check_rng(console: str, dev) -> None:
    m = re.search(r"acrn-sim-init: rng virtio_rng\.0 32 bytes ([0-9a-f]{64})", console)
    assert m, console[-3000:]
    # what /dev/hwrng gave is what the device (or its kernel back end) handed out
    assert bytes.fromhex(m.group(1)) in bytes(dev.produced)


@pytest.mark.parametrize(
    "transport, console_port, rnd",
    [
        ("legacy", "@stdio:stdio_port", ""),  # the console port: Linux's hvc0
        ("transitional", "stdio:p1", ",kernel=on"),  # a generic port, /dev/vport1p0; VBS-K
    ],
)
def test_linux_drivers_blk_rng_console(tmp_path, transport, console_port, rnd):
    """virtio-blk (the sha256 of the first sectors against the file), virtio-rnd through the
    hwrng core's /dev/hwrng, and virtio-console both ways, over one transport."""
    path, data = _disk(tmp_path)
    t = ",legacy" if transport == "legacy" else ""
    devices = [f"3,virtio-blk,{path}{t}", f"5,virtio-console,{console_port}{t}",
               f"6,virtio-rnd{t}{rnd}"]  # fmt: skip
    run, console = _boot(devices, "blk,rng,console", console_input=b"hello from the host\n")
    assert run.exit_code == 0, console[-3000:]
    assert "acrn-sim-init: exit 0" in console
    assert "Call Trace" not in console
    devs = _devices(run)
    if transport == "legacy":
        assert console.count(LEGACY_NOTE) == 3
    else:
        assert LEGACY_NOTE not in console
    for d in devs.values():
        assert d.modern_in_use == (transport != "legacy"), d.name
        assert d.stats.requests > 0, d.name
        assert d.stats.errors == [], (d.name, d.stats.errors)
    assert devs["virtio-rnd"].stats.backend == ("VBS-K" if rnd else "VBS-U")
    _check_blk(console, data)
    _check_rng(console, devs["virtio-rnd"])
    # the console port is hvc0; a generic one is vport<virtio index>p<port>: virtio1 (after
    # virtio-blk in slot 3), port 0
    port = "/dev/hvc0" if console_port.startswith("@") else "/dev/vport1p0"
    # what the guest wrote to the port came out of the device (a tty adds CRs: ONLCR)
    out = bytes(devs["virtio-console"].output).replace(b"\r", b"")
    assert f"acrn-sim-init: hello over {port}\n".encode() in out
    assert f"acrn-sim-init: console read 'hello from the host' from {port}" in console


def test_linux_drivers_over_intx(tmp_path):
    """pci=nomsi: virtio_pci's INTx path (the ISR register read to clear, the line on the
    device model's PIRQ IRQ). Without a _PRT Linux takes the interrupt line register."""
    path, data = _disk(tmp_path)
    run, console = _boot([f"3,virtio-blk,{path}", "6,virtio-rnd"], "blk,rng",
                         extra="pci=nomsi acrnsim.irqs=1")  # fmt: skip
    assert run.exit_code == 0, console[-3000:]
    _check_blk(console, data)
    devs = _devices(run)
    _check_rng(console, devs["virtio-rnd"])
    for i, d in enumerate(devs.values()):
        assert not d.msix_is_enabled() and d.stats.errors == []
        line = d.config[0x3C]  # the interrupt line register
        assert re.search(rf"irqs +{line}: +\d+ +IO-APIC +{line}-edge +virtio{i}", console), console


def test_two_linux_vms_ping_each_other_over_virtio_net():
    """scenarios/linux_ping.py: virtio_net on both sides of the Service VM's bridge, the
    device model's back end, the modern interface of transitional devices."""
    run = boot_configs(with_service_vm(linux_ping.vms(count=3)), main="POST_VM1", trace=False)
    for i, name in enumerate(("POST_VM1", "POST_VM2")):
        console = run.console_of(name)
        peer = linux_ping.ADDRS[1 - i]
        assert run.dm(name).exit_code == 0, console[-3000:]
        assert f"net eth0 {linux_ping.ADDRS[i]} 52:54:00:00:00:0{i + 1}, peer {peer}" in console
        assert (
            f"net ping {peer}: 3 packets transmitted, 3 packets received, 0% packet loss" in console
        ), console[-3000:]
        net = run.dm(name).pci.devices[0]
        assert net.modern_in_use and net.stats.errors == []


def test_two_linux_vms_ping_over_legacy_virtio_net_with_vhost():
    """The same over legacy-only devices with the kernel back end (vhost-net): the rings go to
    vhost at DRIVER_OK, kicks are HSM's ioeventfds on the legacy notify port."""
    configs = with_service_vm(linux_ping.vms(count=2, backend="vhost", transport="legacy"))
    run = boot_configs(configs, main="POST_VM1", trace=False)
    for name in ("POST_VM1", "POST_VM2"):
        console = run.console_of(name)
        assert run.dm(name).exit_code == 0, console[-3000:]
        assert "2 packets transmitted, 2 packets received, 0% packet loss" in console
        assert LEGACY_NOTE in console
        net = run.dm(name).pci.devices[0]
        assert net.stats.backend == "VBS-K" and net.stats.ioreqs_kernel > 0
        assert net.stats.errors == []


@pytest.mark.skipif(
    not (DEBIAN / "vmlinuz").is_file(),
    reason="Debian's kernel not built (make -C guests/linux debian)",
)
def test_debian_kernel_loads_its_virtio_modules_and_reads_the_disk(tmp_path):
    """Debian's stock kernel: its initramfs insmods virtio_pci, virtio_blk, ... (not built in)."""
    path, data = _disk(tmp_path)
    run, console = _boot(
        [f"3,virtio-blk,{path}", "6,virtio-rnd"],
        "blk,rng",
        kernel=DEBIAN / "vmlinuz",
        initrd=DEBIAN / "initramfs.cpio.gz",
        mem=256,
        extra="nokaslr",
    )
    assert run.exit_code == 0, console[-3000:]
    assert re.search(r"acrn-sim-init: loaded \d+ modules", console)
    _check_blk(console, data)
    _check_rng(console, _devices(run)["virtio-rnd"])
