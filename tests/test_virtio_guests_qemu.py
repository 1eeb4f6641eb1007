"""The virtio guest programs (guests/src/vblk.c, vnet.c, vcons.c, vrng.c, vbench.c) against a
back end nobody here wrote: QEMU's virtio-pci devices under TCG, booted with -kernel.

The matrix covers legacy-only, modern-only and transitional devices (with transport=legacy
and transport=modern), MSI-X, INTx and polling, and EVENT_IDX and INDIRECT_DESC refused by
the driver or not offered by the device. The guests check themselves and exit through QEMU's
isa-debug-exit port (QEMU's exit status is 2 * code + 1); the tests also check what the
guests print and, for virtio-blk, the disk file on the host.
"""

from __future__ import annotations

import re
import shutil
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

QEMU = shutil.which("qemu-system-x86_64")
pytestmark = pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed")

IMAGES = Path(__file__).resolve().parents[1] / "guests" / "images"
TIMEOUT = 60

# Device properties and guest options per transport case:
# (id, property suffix for -device, guest options, transport the guest must report)
TRANSPORTS = [
    ("legacy-only", ",disable-modern=on", "", "legacy"),
    ("modern-only", ",disable-legacy=on", "", "modern"),
    ("transitional-legacy", "", "transport=legacy", "legacy"),
    ("transitional-modern", "", "transport=modern", "modern"),
]
IRQS = ["msix", "intx", "poll"]
INDIRECT, EVENT_IDX = 1 << 28, 1 << 29
# (id, property suffix, guest options, expect INDIRECT_DESC, expect EVENT_IDX)
FEATURES = [
    ("guest-refuses-both", "", "indirect=0 event_idx=0", False, False),
    ("guest-refuses-event-idx", "", "event_idx=0", True, False),
    ("device-offers-neither", ",event_idx=off,indirect_desc=off", "", False, False),
]


def qemu(
    image: str,
    append: str,
    *args: str,
    serial: Path | None = None,
    stdin: bytes | None = None,
    timeout: int = TIMEOUT,
) -> tuple[int | None, str]:
    """Boots guests/images/IMAGE with -append APPEND; returns (the guest's exit code, its UART
    output). The exit code is None if QEMU stopped some other way."""
    cmd = [
        QEMU,
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
        "-m",
        "64M",
        "-kernel",
        str(IMAGES / image),
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=4",
        "-serial",
        f"file:{serial}" if serial else "stdio",
        "-append",
        append,
        *args,
    ]
    p = subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout)
    out = serial.read_bytes() if serial else p.stdout
    code = p.returncode >> 1 if p.returncode & 1 else None
    return code, out.decode(errors="replace").replace("\r", "")


def describe(console: str, device: str) -> dict[str, str]:
    """The key=value fields of the library's line about DEVICE (vio_describe)."""
    m = re.search(rf"{device} at \S+ id \S+ (.*)", console)
    assert m, console
    return dict(kv.split("=", 1) for kv in m.group(1).split())


def result(console: str) -> dict[str, int]:
    lines = [ln for ln in console.splitlines() if ln.startswith("result ")]
    assert lines, console
    return {k: int(v) for k, v in (kv.split("=") for kv in lines[-1].split()[1:])}


def passed(code: int | None, console: str, prog: str) -> None:
    assert code == 0, console
    assert f"{prog}: PASS" in console, console
    assert "FAIL" not in console, console


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def blk_pattern(lba: int, seed: int = 1) -> bytes:
    """Sector LBA as vblk writes it (see guests/src/vblk.c)."""
    words = []
    for j in range(128):
        w = (lba * 0x9E3779B1 + j * 0x85EBCA77 + seed * 0xC2B2AE3D) & 0xFFFFFFFF
        words.append(w ^ (w >> 16))
    return struct.pack("<128I", *words)


def disk(tmp_path: Path, size: int = 1 << 20, fill: bytes = b"\0") -> Path:
    path = tmp_path / "disk.img"
    path.write_bytes((fill * (size // len(fill) + 1))[:size])
    return path


def blk_args(path: Path, props: str = "", readonly: bool = False) -> list[str]:
    ro = ",readonly=on" if readonly else ""
    return [
        "-drive",
        f"file={path},if=none,id=d0,format=raw{ro}",
        "-device",
        f"virtio-blk-pci,drive=d0,serial=acrn-sim-0001{props}",
    ]


def net_pair_args(props: str = "") -> list[str]:
    return [
        "-netdev",
        "hubport,id=h0,hubid=0",
        "-device",
        f"virtio-net-pci,netdev=h0{props}",
        "-netdev",
        "hubport,id=h1,hubid=0",
        "-device",
        f"virtio-net-pci,netdev=h1{props}",
    ]


# ---- virtio-blk ----


@pytest.mark.parametrize("irq", IRQS)
@pytest.mark.parametrize("tid,props,opts,transport", TRANSPORTS, ids=[t[0] for t in TRANSPORTS])
def test_blk_write_read_verify(tmp_path, tid, props, opts, transport, irq):
    path = disk(tmp_path)
    n = 300 if irq != "msix" else 1000
    code, out = qemu("vblk.elf", f"/boot/vblk.elf {opts} irq={irq} n={n}", *blk_args(path, props))
    passed(code, out, "vblk")
    info = describe(out, "virtio-blk")
    assert info["transport"] == transport and info["irq"] == irq
    assert "capacity=2048 sectors" in out
    assert "serial='acrn-sim-0001' (status 0)" in out
    assert "flush status=0" in out
    data = path.read_bytes()
    for lba in range(n):
        assert data[lba * 512 : lba * 512 + 512] == blk_pattern(lba), f"sector {lba}"
    assert data[n * 512 :] == bytes(len(data) - n * 512)
    assert f"checksum start=0 sectors={n} fnv1a64={fnv1a64(data[: n * 512]):016x}" in out
    r = result(out)
    assert r["writes"] == r["reads"] == (n + 7) // 8 and r["errors"] == 0


@pytest.mark.parametrize(
    "fid,props,opts,indirect,event_idx", FEATURES, ids=[f[0] for f in FEATURES]
)
@pytest.mark.parametrize("transport", ["legacy", "modern"])
def test_blk_ring_features(tmp_path, fid, props, opts, indirect, event_idx, transport):
    path = disk(tmp_path)
    code, out = qemu(
        "vblk.elf",
        f"transport={transport} {opts} n=200 serial=acrn-sim-0001",
        *blk_args(path, props),
    )
    passed(code, out, "vblk")
    features = int(describe(out, "virtio-blk")["features"], 16)
    assert bool(features & INDIRECT) == indirect and bool(features & EVENT_IDX) == event_idx
    assert (result(out)["indirect"] > 0) == indirect
    assert path.read_bytes()[199 * 512 : 200 * 512] == blk_pattern(199)


@pytest.mark.parametrize("transport", ["legacy", "modern"])
def test_blk_read_only(tmp_path, transport):
    fill = bytes(range(256))
    path = disk(tmp_path, fill=fill)
    before = path.read_bytes()
    code, out = qemu(
        "vblk.elf", f"transport={transport} ro=1 n=100", *blk_args(path, readonly=True)
    )
    passed(code, out, "vblk")
    assert "ro=1" in out and "write to a read-only disk: status=1" in out
    assert path.read_bytes() == before
    assert f"fnv1a64={fnv1a64(before[: 100 * 512]):016x}" in out


def test_blk_checksum_mode_matches_the_file(tmp_path):
    seed = bytes((i * 37 + 11) & 0xFF for i in range(4093))  # not sector-periodic
    path = disk(tmp_path, fill=seed)
    code, out = qemu("vblk.elf", "mode=read start=5 n=777", *blk_args(path, readonly=True))
    passed(code, out, "vblk")
    want = fnv1a64(path.read_bytes()[5 * 512 : 782 * 512])
    assert f"checksum start=5 sectors=777 fnv1a64={want:016x}" in out


def test_blk_detects_a_wrong_serial(tmp_path):
    code, out = qemu("vblk.elf", "n=8 serial=something-else", *blk_args(disk(tmp_path)))
    assert code == 1 and "vblk: FAIL" in out


def test_blk_small_queue_and_reassigned_bars(tmp_path):
    """qsize= (modern only) shrinks the ring; pci=reassign makes lib/pci.c place the BARs."""
    path = disk(tmp_path)
    code, out = qemu("vblk.elf", "qsize=4 indirect=0 pci=reassign verbose=1 n=64", *blk_args(path))
    passed(code, out, "vblk")
    assert "(assigned here)" in out
    assert path.read_bytes()[63 * 512 : 64 * 512] == blk_pattern(63)


def test_blk_pio_notify(tmp_path):
    """QEMU's modern-pio-notify adds a notify capability in an I/O BAR (multiplier 0)."""
    path = disk(tmp_path)
    code, out = qemu(
        "vblk.elf", "notify=pio verbose=1 n=64", *blk_args(path, ",modern-pio-notify=on")
    )
    passed(code, out, "vblk")
    assert re.search(r"notify \w+ \(io\) mult 0", out), out
    assert path.read_bytes()[63 * 512 : 64 * 512] == blk_pattern(63)


def test_blk_without_msix_falls_back_to_intx(tmp_path):
    code, out = qemu("vblk.elf", "n=64", *blk_args(disk(tmp_path), ",vectors=0"))
    passed(code, out, "vblk")
    assert describe(out, "virtio-blk")["irq"] == "intx"


def test_transport_that_is_not_there(tmp_path):
    code, out = qemu(
        "vblk.elf", "transport=legacy", *blk_args(disk(tmp_path), ",disable-legacy=on")
    )
    assert code == 2 and "has no legacy interface" in out


# ---- virtio-net ----


@pytest.mark.parametrize("irq", IRQS)
@pytest.mark.parametrize("tid,props,opts,transport", TRANSPORTS, ids=[t[0] for t in TRANSPORTS])
def test_net_two_nics_one_switch(tid, props, opts, transport, irq):
    code, out = qemu("vnet.elf", f"{opts} irq={irq}", *net_pair_args(props))
    passed(code, out, "vnet")
    info = describe(out, "virtio-net")
    assert info["transport"] == transport and info["irq"] == irq
    assert "nic0 mac=52:54:00:12:34:56 link=up" in out
    assert "nic1 mac=52:54:00:12:34:57 link=up" in out
    assert result(out)["packets"] == 1000


@pytest.mark.parametrize(
    "fid,props,opts,indirect,event_idx", FEATURES, ids=[f[0] for f in FEATURES]
)
def test_net_ring_features(fid, props, opts, indirect, event_idx):
    code, out = qemu("vnet.elf", f"{opts} n=300", *net_pair_args(props))
    passed(code, out, "vnet")
    features = int(describe(out, "virtio-net")["features"], 16)
    assert bool(features & INDIRECT) == indirect and bool(features & EVENT_IDX) == event_idx


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    try:
        with open("/proc/net/tcp") as f:
            return any(
                ln.split()[1].endswith(f":{port:04X}") and ln.split()[3] == "0A"
                for ln in f.readlines()[1:]
            )
    except OSError:
        time.sleep(1)
        return True


def _spawn(image: str, append: str, serial: Path, *args: str) -> subprocess.Popen:
    cmd = [QEMU, "-nodefaults", "-display", "none", "-no-reboot", "-m", "64M"]
    cmd += ["-kernel", str(IMAGES / image), "-device", "isa-debug-exit,iobase=0xf4,iosize=4"]
    cmd += ["-serial", f"file:{serial}", "-append", append, *args]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.parametrize(
    "ping_opts,pong_opts",
    [("", ""), ("transport=legacy irq=intx", "irq=poll event_idx=0 indirect=0")],
    ids=["defaults", "mixed"],
)
def test_net_two_vms_ping_pong(tmp_path, ping_opts, pong_opts):
    port = _free_port()
    pong = _spawn(
        "vnet.elf",
        f"role=pong {pong_opts}",
        tmp_path / "pong.txt",
        "-netdev",
        f"socket,id=n0,listen=127.0.0.1:{port}",
        "-device",
        "virtio-net-pci,netdev=n0,mac=52:54:00:00:00:02",
    )
    ping = None
    try:
        deadline = time.monotonic() + 10
        while not _listening(port) and time.monotonic() < deadline:
            time.sleep(0.05)
        ping = _spawn(
            "vnet.elf",
            f"role=ping {ping_opts}",
            tmp_path / "ping.txt",
            "-netdev",
            f"socket,id=n0,connect=127.0.0.1:{port}",
            "-device",
            "virtio-net-pci,netdev=n0,mac=52:54:00:00:00:01",
        )
        ping_rc = ping.wait(TIMEOUT)
        pong_rc = pong.wait(TIMEOUT)
    finally:
        for p in (pong, ping):
            if p and p.poll() is None:
                p.kill()
    ping_out = (tmp_path / "ping.txt").read_text().replace("\r", "")
    pong_out = (tmp_path / "pong.txt").read_text().replace("\r", "")
    passed(ping_rc >> 1 if ping_rc & 1 else None, ping_out, "vnet")
    passed(pong_rc >> 1 if pong_rc & 1 else None, pong_out, "vnet")
    assert "peer mac=52:54:00:00:00:02" in ping_out
    assert result(ping_out)["packets"] == result(pong_out)["packets"] == 1000


# ---- virtio-console ----


@pytest.mark.parametrize("irq", IRQS)
@pytest.mark.parametrize("tid,props,opts,transport", TRANSPORTS, ids=[t[0] for t in TRANSPORTS])
def test_console_lines(tmp_path, tid, props, opts, transport, irq):
    out_file = tmp_path / "console.txt"
    code, out = qemu(
        "vcons.elf",
        f"{opts} irq={irq} lines=7 emerg=1",
        "-device",
        f"virtio-serial-pci{props}",
        "-device",
        "virtconsole,chardev=c0",
        "-chardev",
        f"file,id=c0,path={out_file}",
    )
    passed(code, out, "vcons")
    assert describe(out, "virtio-console")["transport"] == transport
    want = "".join(f"virtio-console line {i} of 7\n" for i in range(1, 8))
    text = out_file.read_text()
    assert text.startswith(want)
    if "emergency write done" in out:
        assert text == want + "virtio-console emergency write\n"


@pytest.mark.parametrize("opts", ["", "transport=legacy irq=intx", "irq=poll"])
def test_console_reads_from_the_host(tmp_path, opts):
    code, out = qemu(
        "vcons.elf",
        f"{opts} lines=1 read=20",
        "-device",
        "virtio-serial-pci",
        "-device",
        "virtconsole,chardev=c0",
        "-chardev",
        "stdio,id=c0",
        serial=tmp_path / "serial.txt",
        stdin=b"hello from the host\n",
    )
    passed(code, out, "vcons")
    assert "received 20 bytes: 'hello from the host'" in out


# ---- virtio-rng ----


@pytest.mark.parametrize("irq", IRQS)
@pytest.mark.parametrize("tid,props,opts,transport", TRANSPORTS, ids=[t[0] for t in TRANSPORTS])
def test_rng(tid, props, opts, transport, irq):
    code, out = qemu(
        "vrng.elf", f"{opts} irq={irq} bytes=4096", "-device", f"virtio-rng-pci{props}"
    )
    passed(code, out, "vrng")
    assert describe(out, "virtio-rng")["transport"] == transport
    assert re.search(r"vrng: bytes=4096 fnv1a64=[0-9a-f]{16}", out)


@pytest.mark.parametrize("opts", ["", "transport=legacy indirect=0 event_idx=0 irq=intx"])
def test_rng_bytes_are_the_back_ends(tmp_path, opts):
    """An EGD back end fed from stdin: the hash must be that of the bytes fed, in order."""
    stream = bytes((i * 7 + 3) & 0xFF for i in range(8192))
    code, out = qemu(
        "vrng.elf",
        f"{opts} bytes=1000 chunk=100 depth=3",
        "-object",
        "rng-egd,id=r0,chardev=c0",
        "-chardev",
        "stdio,id=c0",
        "-device",
        "virtio-rng-pci,rng=r0",
        serial=tmp_path / "serial.txt",
        stdin=stream,
    )
    passed(code, out, "vrng")
    assert f"vrng: bytes=1000 fnv1a64={fnv1a64(stream[:1000]):016x}" in out


# ---- the workload program ----


@pytest.mark.parametrize(
    "opts",
    [
        "batch=1 depth=1",
        "batch=4 depth=16",
        "batch=8 depth=32 op=write bs=512",
        "batch=2 depth=8 irq=poll transport=legacy",
        "batch=2 depth=4 irq=intx event_idx=0",
    ],
)
def test_bench_blk(tmp_path, opts):
    code, out = qemu("vbench.elf", f"{opts} n=500", *blk_args(disk(tmp_path)))
    passed(code, out, "vbench")
    r = result(out)
    want = dict(kv.split("=") for kv in opts.split() if kv.split("=")[0] in ("batch", "depth"))
    assert r["reqs"] == 500 and r["errors"] == 0
    assert all(r[k] == int(v) for k, v in want.items())
    assert 0 < r["lat_min"] <= r["lat_p50"] <= r["lat_p99"] <= r["lat_max"]
    assert r["rps"] > 0 and r["kicks"] + r["suppressed"] >= 500 // int(want["batch"])


def test_bench_rng():
    code, out = qemu(
        "vbench.elf", "dev=rng bs=64 batch=2 depth=4 n=300", "-device", "virtio-rng-pci"
    )
    passed(code, out, "vbench")
    assert result(out)["reqs"] == 300
