"""Bad input from a guest (guests/src/vbad.c breaks one virtio rule per run): the simulator
stays up, another User VM runs on undisturbed, no memory outside the offending guest changes,
the device reacts as the specification allows (DEVICE_NEEDS_RESET, or the request failed with
an error status, or the notification ignored), the event is in the device's report and the
trace, and the device works again after the driver resets it. Both back ends: the device model
(VBS-U) and, where the device has one, the kernel back end (VBS-K)."""

from __future__ import annotations

import struct

import pytest

from conftest import boot_virtio

# case -> (device options, the report's words for it)
CASES = {
    "addr": ("6,virtio-rnd", "outside the guest's RAM"),
    "loop": ("6,virtio-rnd", "descriptor loop"),
    "long": ("6,virtio-rnd", "longer than the queue"),
    "nested": ("6,virtio-rnd", "an indirect descriptor inside an indirect table"),
    "rodesc": ("3,virtio-blk,{disk}", "asked to write into a device-readable buffer"),
    "qsize": ("6,virtio-rnd,modern", "is not a power of 2"),
    "notify": ("6,virtio-rnd", "notify for queue 7, which does not exist"),
    "usedidx": ("6,virtio-rnd", "the driver wrote the used ring"),
}
RESET_CASES = {"addr", "loop", "long", "nested", "qsize", "usedidx"}  # DEVICE_NEEDS_RESET
SLOT, IOREQ_SLOT_SIZE, OFF_PROCESSED = 256, 256, 136
MB = 1 << 20


def outside_memory(run, dm) -> tuple[bytes, bytes]:
    """Service VM memory around the offending VM's RAM that nothing may write: the rest of its
    IOREQ page (slots 1-15; it has one vCPU) and the gap up to the next 2 MiB boundary, where
    the next VM's RAM starts. (The Service VM is identity-mapped: its GPA is the HPA.)"""
    end = dm.ram + dm.cfg.memory  # the IOREQ page follows the RAM
    gap_end = (end + 0x1000 + 2 * MB - 1) & ~(2 * MB - 1)
    mem = run.hv.mem
    return mem.read(end + IOREQ_SLOT_SIZE, 0x1000 - IOREQ_SLOT_SIZE), mem.read(
        end + 0x1000, gap_end - end - 0x1000
    )


def idle_slots() -> bytes:
    """IOREQ slots 1-15 as the hypervisor left them: zero, state FREE (3)."""
    slot = bytearray(IOREQ_SLOT_SIZE)
    struct.pack_into("<I", slot, OFF_PROCESSED, 3)
    return bytes(slot) * 15


@pytest.fixture
def disk(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(bytes(1 << 20))
    return path


@pytest.mark.parametrize("backend", ["VBS-U", "VBS-K"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_driver_is_contained_and_reported(case, backend, disk):
    devices, words = CASES[case]
    if backend == "VBS-K":
        if "virtio-rnd" not in devices:
            pytest.skip("virtio-blk has no kernel back end")
        devices += ",kernel=on"
    run = boot_virtio(
        [
            ("vbad.elf", f"case={case}", [devices.format(disk=disk)]),
            ("vrng.elf", "bytes=8192", ["6,virtio-rnd"]),  # a neighbour that must not notice
        ],
        trace=True,
    )
    assert run.result.status == "done"  # the simulator stayed up and both VMs finished
    bad, good = run.dm("POST_VM1"), run.dm("POST_VM2")
    assert bad.exit_code == 0, run.console_of("POST_VM1")
    assert "vbad: recovered=1" in run.console_of("POST_VM1")
    assert good.exit_code == 0 and "vrng: PASS" in run.console_of("POST_VM2")
    # nothing outside the offending guest's RAM changed
    ioreq_rest, gap = outside_memory(run, bad)
    assert ioreq_rest == idle_slots()
    assert gap == bytes(len(gap))
    # the device's reaction, as the console shows it
    line = next(ln for ln in run.console_of("POST_VM1").splitlines() if ln.startswith("vbad: case"))
    assert ("needs_reset=1" in line) == (case in RESET_CASES)
    if case == "rodesc":
        assert "blk_status=1" in line and "used=1" in line  # VIRTIO_BLK_S_IOERR
    # reported: in the device's errors and in the trace
    dev = bad.pci.devices[0]
    assert any(words in what for _, what in dev.stats.errors), dev.stats.errors
    assert any(words in e.name for e in run.hv.tracer.of_kind("virtio"))
    if case in RESET_CASES:
        assert any("DEVICE_NEEDS_RESET" in what for _, what in dev.stats.errors)
    assert not good.pci.devices[0].stats.errors


@pytest.mark.parametrize("where", ["ioreq-page", "next-vm"])
def test_a_buffer_just_past_ram_is_never_written(where):
    """The addresses right after a User VM's RAM are, in the Service VM, its IOREQ page and
    the next VM's memory: a descriptor there gets DEVICE_NEEDS_RESET, and those bytes stay."""
    gpa = {"ioreq-page": 32 * MB + 2 * SLOT, "next-vm": 34 * MB + 0x1000}[where]
    run = boot_virtio(
        [
            ("vbad.elf", f"case=addr addr={gpa:#x}", ["6,virtio-rnd"]),
            ("vrng.elf", "bytes=8192", ["6,virtio-rnd"]),
        ]
    )
    bad, good = run.dm("POST_VM1"), run.dm("POST_VM2")
    assert bad.exit_code == 0 and good.exit_code == 0
    assert "needs_reset=1" in run.console_of("POST_VM1")
    assert good.ram == bad.ram + 34 * MB  # the next VM's RAM is where the guest aimed
    assert outside_memory(run, bad)[0] == idle_slots()
