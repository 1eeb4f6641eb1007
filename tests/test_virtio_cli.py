"""The virtio devices from the command line (acrn-dm's -s and --virtio_poll) and from a
scenario XML's <virtio_devices>: what a new user types, what comes out, and the one-line
refusals of options that cannot work."""

from __future__ import annotations

import json
import struct
import subprocess

import pytest

from conftest import CLI, ROOT, cli, messages

SCENARIO = """<?xml version="1.0"?>
<acrn-config>
  <hv><FEATURES><SCHEDULER>SCHED_BVT</SCHEDULER></FEATURES></hv>
  <vm id="0"><load_order>SERVICE_VM</load_order><name>Service_VM</name></vm>
  <vm id="1">
    <load_order>POST_LAUNCHED_VM</load_order><name>POST_STD_VM1</name>
    <memory><size>32</size></memory>
    <cpu_affinity><pcpu><pcpu_id>1</pcpu_id></pcpu></cpu_affinity>
    <os_config><kern_type>KERNEL_ELF</kern_type><kern_mod>vblk</kern_mod>
      <bootargs>n=16</bootargs></os_config>
    <virtio_devices>
      <console><use_type>Virtio console</use_type><backend_type>pty</backend_type></console>
      <network><virtio_framework>Kernel based (Virtual Host)</virtio_framework>
        <interface_name>tap0</interface_name></network>
      <block>{disk}</block>
      <block>/nonexistent/UserVM.img</block>
    </virtio_devices>
  </vm>
</acrn-config>
"""


@pytest.fixture
def disk(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(bytes(1 << 20))
    return path


def test_vblk_from_the_command_line_writes_the_image(disk, tmp_path):
    stats = tmp_path / "stats.json"
    p = cli("run", "guests/images/vblk.elf", "--cmdline", "n=16", "-s", f"3,virtio-blk,{disk}",
            "--report", "--stats", str(stats))  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert "vblk: PASS" in p.stdout
    w = (0 * 0x9E3779B1 + 1 * 0x85EBCA77 + 0xC2B2AE3D) & 0xFFFF_FFFF  # sector 0, word 1
    assert struct.unpack_from("<I", disk.read_bytes(), 4)[0] == w ^ (w >> 16)
    assert "Virtio devices:" in p.stderr and "virtio-blk@3" in p.stderr
    assert "kick -> back end" in p.stderr
    virtio = json.loads(stats.read_text())["virtio"]
    assert virtio[0]["device"] == "virtio-blk" and virtio[0]["requests"] > 0


def test_console_input_from_standard_input():
    p = subprocess.run(
        [*CLI, "run", "guests/images/vcons.elf", "--cmdline",
         "lines=1 read=5", "-s", "5,virtio-console,@stdio:stdio_port"],
        cwd=ROOT, input=b"hello", capture_output=True, timeout=120,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert b"vcons: received 5 bytes: 'hello'" in p.stdout


@pytest.mark.parametrize(
    "args,words",
    [
        (["-s", "3,virtio-scsi,x"], 'unknown device "virtio-scsi"'),
        (["-s", "3,virtio-blk,/nonexistent.img"], "not found"),
        (["-s", "3,virtio-blk"], "needs a backing file"),
        (["-s", "3,virtio-blk,{disk},vbsk"], "no kernel back end for virtio-blk"),
        (["-s", "3,virtio-rnd", "-s", "3,virtio-rnd"], "already occupied"),
        (["-s", "0,virtio-rnd"], "slots are 1-31"),
        (["-s", "x,virtio-rnd"], "the slot must be a number"),
        (["-s", "4,virtio-net,eth0"], "needs a tap name"),
        (["-s", "4,virtio-net,tap0,mac=01:00:00:00:00:01"], "multicast"),
        (["-s", "5,virtio-console,@pty:p"], "not modelled"),
        (["-s", "6,virtio-rnd,kernel=maybe"], "unknown virtio-rnd option"),
        (["-s", "6,virtio-rnd,legacy,modern"], "both legacy and modern"),
        (["--virtio_poll", "10"], "1000 to 10000000 ns"),
        (["--load-order", "pre", "-s", "6,virtio-rnd"], "for a User VM"),
    ],
)
def test_bad_options_are_refused_with_one_line(args, words, disk):
    p = cli("run", "guests/images/vrng.elf", *[a.format(disk=disk) for a in args])
    assert p.returncode == 2
    lines = messages(p.stderr)
    assert len(lines) == 1 and words in lines[0], p.stderr


def test_scenario_script_or_xml_takes_no_slot_options():
    p = cli("run", "scenarios/hello.py", "-s", "6,virtio-rnd")
    assert p.returncode == 2 and "a scenario gives its VMs' devices itself" in p.stderr


def test_scenario_xml_virtio_devices_become_the_vms_devices(disk, tmp_path):
    xml = tmp_path / "virtio.xml"
    xml.write_text(SCENARIO.format(disk=disk))
    p = cli("run", str(xml), "--image", f"vblk={ROOT / 'guests/images/vblk.elf'}", "--report")
    assert p.returncode == 0, p.stderr
    assert "vblk: PASS" in p.stdout
    notes = [ln for ln in p.stderr.splitlines() if ln.startswith("acrn-sim: virtio.xml")]
    assert any("/nonexistent/UserVM.img: no such image file here" in n for n in notes)
    assert any("pty back end is left out" in n for n in notes)
    # the block and the NIC (vhost) are there; vblk used the block device
    assert "virtio-blk@3" in p.stderr and "virtio-net@4" in p.stderr
