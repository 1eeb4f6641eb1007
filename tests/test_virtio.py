"""The device model's virtio devices (guests/service_vm/virtio/) against the guest programs
that first proved themselves against QEMU (guests/src/vblk.c, vnet.c, vcons.c, vrng.c): every
device over both transports and each interrupt mode, the kernel back ends, and what each
device does with its host side (the disk image, the bridge, the console, the entropy)."""

from __future__ import annotations

import hashlib
import re
import struct

import pytest

from acrn_sim.scenarios import results
from conftest import boot_virtio

TRANSPORTS = [  # (id, device suffix, guest options, transport the guest reports)
    ("legacy-only", ",legacy", "", "legacy"),
    ("modern-only", ",modern", "", "modern"),
    ("transitional-legacy", "", "transport=legacy", "legacy"),
    ("transitional-modern", "", "transport=modern", "modern"),
]
IRQS = ["msix", "intx", "poll"]
VERSION_1, INDIRECT, EVENT_IDX = 1 << 32, 1 << 28, 1 << 29


@pytest.fixture
def disk(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(bytes(1 << 20))  # 2048 sectors
    return path


def devices_for(kind: str, suffix: str, disk) -> tuple[str, str, list[str]]:
    """(image, command line, -s options) of a short run of each program."""
    return {
        "blk": ("vblk.elf", "n=64", [f"3,virtio-blk,{disk}{suffix}"]),
        "net": ("vnet.elf", "n=40", [f"4,virtio-net,tap0{suffix}", f"5,virtio-net,tap1{suffix}"]),
        "console": ("vcons.elf", "lines=3", [f"5,virtio-console,@stdio:stdio_port{suffix}"]),
        "rng": ("vrng.elf", "bytes=1024", [f"6,virtio-rnd{suffix}"]),
    }[kind]


def vblk_word(sector: int, j: int, seed: int = 1) -> int:
    """guests/src/vblk.c's pattern (docs/virtio-guests.md)."""
    w = (sector * 0x9E3779B1 + j * 0x85EBCA77 + seed * 0xC2B2AE3D) & 0xFFFF_FFFF
    return w ^ (w >> 16)


def offered(console: str) -> int:
    return int(re.search(r"offered=([0-9a-f]+)", console).group(1), 16)


# ------------------------------------------------------------------ every device, every way
@pytest.mark.parametrize("kind", ["blk", "net", "console", "rng"])
@pytest.mark.parametrize("transport", TRANSPORTS, ids=[t[0] for t in TRANSPORTS])
@pytest.mark.parametrize("irq", IRQS)
def test_every_device_works_over_each_transport_and_interrupt_mode(kind, transport, irq, disk):
    _id, suffix, guest_opts, expect = transport
    image, cmdline, devices = devices_for(kind, suffix, disk)
    run = boot_virtio([(image, f"{cmdline} {guest_opts} irq={irq}", devices)])
    assert run.exit_code == 0, run.console
    assert f"transport={expect} irq={irq}" in run.console
    dev = run.dm().pci.devices[0]
    assert dev.stats.requests > 0 and not dev.stats.errors
    if irq == "intx":  # the line the device model routed (PIRQ) is what the guest used
        assert f"line={dev.lintr_irq}" in run.console and dev.lintr_irq < 16


VBSK_CASES = [("rng", t) for t in TRANSPORTS[:3]] + [("net", TRANSPORTS[1]), ("net", TRANSPORTS[2])]


@pytest.mark.parametrize("kind,transport", VBSK_CASES, ids=[f"{k}-{t[0]}" for k, t in VBSK_CASES])
def test_kernel_back_ends_serve_the_rings_without_the_device_model(kind, transport, disk):
    """VBS-K (virtio-rnd kernel=on, virtio-net vhost): after DRIVER_OK every notification is
    completed by HSM's ioeventfd client and no device-model thread wakes for the work."""
    _id, suffix, guest_opts, _ = transport
    opt = ",kernel=on" if kind == "rng" else ",vhost"
    image, cmdline, devices = devices_for(kind, suffix, disk)
    run = boot_virtio([(image, f"{cmdline} {guest_opts}", [d + opt for d in devices])])
    assert run.exit_code == 0, run.console
    for dev in run.dm().pci.devices:
        s = dev.stats
        assert s.backend == "VBS-K" and s.requests > 0
        assert s.ioreqs_kernel == s.kicks > 0  # every notification went to the kernel
        assert s.kernel_wakeups > 0
        # the device model saw only configuration reads and the reset at the end
        assert s.dm_wakeups <= s.ioreqs_dm <= 12  # (the MAC and link status are read too)


def test_vbsk_needs_msix_and_falls_back_to_the_device_model(disk):
    run = boot_virtio([("vrng.elf", "bytes=512 irq=intx", ["6,virtio-rnd,kernel=on"])])
    assert run.exit_code == 0
    s = run.dm().pci.devices[0].stats
    assert s.backend == "VBS-U" and s.ioreqs_kernel == 0 and s.requests > 0
    assert any("VBS-K needs MSI-X" in what for _, what in s.errors)


# ------------------------------------------------------------------------------ virtio-blk
def test_blk_writes_1000_sectors_that_persist_in_the_image(disk):
    run = boot_virtio([("vblk.elf", "", [f"3,virtio-blk,{disk}"])])
    assert run.exit_code == 0, run.console
    assert "result sectors=1000 " in run.console
    data = disk.read_bytes()
    for sector in range(1000):
        words = struct.unpack_from("<128I", data, sector * 512)
        assert words == tuple(vblk_word(sector, j) for j in range(128)), sector
    assert data[1000 * 512 :] == bytes(len(data) - 1000 * 512)  # nothing beyond
    # the checksum the guest computed over what it read back is the file's
    fnv = 0xCBF29CE484222325
    for b in data[: 1000 * 512]:
        fnv = ((fnv ^ b) * 0x100000001B3) & 0xFFFF_FFFF_FFFF_FFFF
    assert f"fnv1a64={fnv:016x}" in run.console


def test_blk_read_only_image_refuses_writes_and_stays_untouched(disk):
    disk.write_bytes(b"\x5a" * (1 << 20))
    run = boot_virtio([("vblk.elf", "ro=1", [f"3,virtio-blk,{disk},ro"])])
    assert run.exit_code == 0, run.console
    assert "ro=1" in run.console and "write to a read-only disk: status=1" in run.console
    assert offered(run.console) & 1 << 5  # VIRTIO_BLK_F_RO
    assert disk.read_bytes() == b"\x5a" * (1 << 20)


def test_blk_features_identifier_and_flush(disk):
    plain = boot_virtio([("vblk.elf", "n=8", [f"3,virtio-blk,{disk}"])])
    wb = boot_virtio([("vblk.elf", "n=8", [f"3,virtio-blk,{disk},writeback"])])
    base = offered(plain.console)
    assert base & (VERSION_1 | INDIRECT | EVENT_IDX) == VERSION_1 | INDIRECT | EVENT_IDX
    assert base & (1 << 2 | 1 << 6 | 1 << 10) == 1 << 2 | 1 << 6 | 1 << 10  # SEG_MAX, BLK_SIZE..
    assert not base & (1 << 9)  # writethrough by default (ACRN): no FLUSH
    assert offered(wb.console) == base | 1 << 9 | 1 << 11  # FLUSH, CONFIG_WCE
    assert "flush=1" in wb.console and "vblk: flush status=0" in wb.console
    # GET_ID: "ACRN--" and the MD5 of the option string (virtio_block.c)
    d = hashlib.md5(str(disk).encode()).hexdigest().upper()
    assert f"serial='ACRN--{d[:4]}-{d[4:8]}-{d[8:12]}' (status 0)" in plain.console


def test_device_ids_bars_and_msix_table_sizes(disk):
    """PCI identity and resources as acrn-dm gives them: legacy ID 0x1000+ (transitional) or
    0x1040 + type (modern only); BARs placed at creation: BAR0 I/O (24 + the device
    configuration, a power of 2), BAR1 the MSI-X table of nvq + 1 entries, BAR4 16 KiB."""
    cases = [("blk", 0x80, 2), ("net", 0x20, 3), ("console", 0x40, 5), ("rng", 0x20, 2)]
    for kind, legacy_size, entries in cases:
        image, cmdline, devices = devices_for(kind, "", disk)
        run = boot_virtio([(image, f"{cmdline} verbose=1", devices)])
        con = run.console
        assert run.exit_code == 0
        assert f"msix_entries={entries}" in con
        assert re.search(rf"BAR0 io [0-9a-f]+ size {legacy_size:x}\n", con), (kind, con[:600])
        assert re.search(r"BAR4 mem [0-9a-f]+ size 4000 64-bit\n", con)
        assert "(assigned here)" not in con  # the device model placed every BAR
        modern = boot_virtio([(image, cmdline, [devices[0] + ",modern"])]).console
        vtype = {"blk": 2, "net": 1, "console": 3, "rng": 4}[kind]
        assert f"id 1af4:{0x1040 + vtype:04x}" in modern


# ------------------------------------------------------------------------------ virtio-net
@pytest.mark.parametrize("backend", ["", ",vhost"], ids=["VBS-U", "vhost"])
def test_two_user_vms_exchange_1000_packets_through_the_bridge(backend):
    run = boot_virtio(
        [
            ("vnet.elf", "role=ping", [f"4,virtio-net,tap0{backend}"]),
            ("vnet.elf", "role=pong", [f"4,virtio-net,tap1{backend}"]),
        ]
    )
    for vm in ("POST_VM1", "POST_VM2"):
        assert run.dm(vm).exit_code == 0, run.console_of(vm)
        assert "1000 frames checked" in run.console_of(vm)
    ping = results(run.console_of("POST_VM1").encode())
    assert ping["packets"] == 1000
    tap0, tap1 = (run.dm(vm).pci.devices[0].tap for vm in ("POST_VM1", "POST_VM2"))
    assert (tap0.name, tap1.name) == ("acrn_tap0", "acrn_tap1")
    # every request crossed from tap0 to tap1 and every reply back (request 0 may have gone
    # out more than once, before the pong VM was ready)
    assert tap1.rx_frames >= 1000 and tap0.rx_frames == 1000
    assert tap0.tx_frames == tap1.rx_frames and tap1.tx_frames == 1000


def test_mac_addresses_come_from_the_options():
    run = boot_virtio([("vnet.elf", "n=10", ["4,virtio-net,tap0,mac=52:54:00:00:00:0a",
                                             "5,virtio-net,tap1"])])  # fmt: skip
    assert run.exit_code == 0
    assert "nic0 mac=52:54:00:00:00:0a link=up" in run.console
    assert re.search(r"nic1 mac=00:16:3e:[0-9a-f:]{8} link=up", run.console)  # ACRN's default


# -------------------------------------------------------------------------- virtio-console
def test_console_output_input_and_emergency_write(tmp_path):
    run = boot_virtio([{"image": "vcons.elf", "cmdline": "lines=2 read=5 emerg=1",
                        "devices": ["5,virtio-console,@stdio:stdio_port"],
                        "console_input": b"hello"}])  # fmt: skip
    assert run.exit_code == 0, run.console
    dev = run.dm().pci.devices[0]
    assert bytes(dev.output) == (b"virtio-console line 1 of 2\nvirtio-console line 2 of 2\n"
                                 b"virtio-console emergency write\necho: hello\n")  # fmt: skip
    assert "vcons: received 5 bytes: 'hello'" in run.console
    out = tmp_path / "console.txt"
    run = boot_virtio([("vcons.elf", "lines=3", [f"5,virtio-console,@file:port0={out}"])])
    assert run.exit_code == 0
    assert out.read_bytes() == b"".join(b"virtio-console line %d of 3\n" % i for i in (1, 2, 3))
    assert "virtio-console line" not in run.console  # not on the VM's console this time


# ------------------------------------------------------------------------------ virtio-rnd
def test_rng_is_seeded_and_the_same_through_either_back_end():
    def fnv(devices):
        run = boot_virtio([("vrng.elf", "bytes=2048", devices)])
        assert run.exit_code == 0
        return re.search(r"fnv1a64=([0-9a-f]+)", run.console).group(1)

    a = fnv(["6,virtio-rng"])
    assert a == fnv(["6,virtio-rnd"]) == fnv(["6,virtio-rnd,kernel=on"])
    assert fnv(["6,virtio-rnd,seed=7"]) != a


# ------------------------------------------------------------------------------- poll mode
def test_poll_mode_serves_the_rings_without_notifications():
    poll = boot_virtio([{"image": "vbench.elf", "cmdline": "dev=rng n=128 batch=8",
                         "devices": ["6,virtio-rnd"], "virtio_poll": 100_000}])  # fmt: skip
    kick = boot_virtio([("vbench.elf", "dev=rng n=128 batch=8", ["6,virtio-rnd"])])
    p, k = results(poll.console.encode()), results(kick.console.encode())
    assert poll.exit_code == kick.exit_code == 0
    assert k["kicks"] == 16 and p["kicks"] <= 1  # the first, before the first poll
    s = poll.dm().pci.devices[0].stats
    assert s.polls > 0 and s.requests == 128
