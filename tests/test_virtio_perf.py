"""What the virtio notification paths cost, from guests/src/vbench.c (relationships of the
model, not numbers): a kernel back end (VBS-K) against the device model's (VBS-U), and
notification suppression (EVENT_IDX, the flags, none) at several batch sizes."""

from __future__ import annotations

import pytest

from acrn_sim.scenarios import results
from conftest import boot_virtio


@pytest.fixture
def disk(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(bytes(4 << 20))
    return path


def bench(cmdline: str, devices: list[str]):
    run = boot_virtio([("vbench.elf", cmdline, devices)])
    assert run.exit_code == 0, run.console
    return run, results(run.console.encode()), run.dm().pci.devices[0].stats


def vm_exits(run) -> int:
    return sum(len(v) for v in run.hv.stats.exits["POST_VM1"].values())


def per_request(cmdline: str, devices: list[str]) -> dict[str, float]:
    """VM exits and interrupts per request, at the margin: two runs of 256 and 512 requests,
    so that the set-up, the driver's own output and the reset cancel out."""
    (r1, _, s1), (r2, _, s2) = (bench(f"{cmdline} n={n}", devices) for n in (256, 512))
    return {
        "exits": (vm_exits(r2) - vm_exits(r1)) / 256,
        "irqs": (s2.interrupts - s1.interrupts) / 256,
        "kicks": (s2.kicks - s1.kicks) / 256,
    }


def test_vbsk_has_lower_latency_and_fewer_device_model_wakeups_than_vbsu():
    runs = {}
    for name, dev in (("VBS-U", "6,virtio-rnd"), ("VBS-K", "6,virtio-rnd,kernel=on")):
        run, res, stats = bench("dev=rng n=256 batch=1", [dev])
        assert stats.backend == name
        io_thread = run.dm().hsm.vms[run.dm().vmid].default_client.wakeups
        runs[name] = (res, stats, io_thread)
    (u, us, u_io), (k, ks, k_io) = runs["VBS-U"], runs["VBS-K"]
    # the guest's own measure of a request, kick to seeing it used
    assert k["lat_avg"] < u["lat_avg"] and k["lat_p99"] < u["lat_p99"]
    # the device model is not woken for VBS-K requests: neither its I/O thread (the kicks go
    # to HSM's ioeventfd client) nor a worker (the kernel's does the work)
    # (VBS-K: the driver's reset at the end is all the device model sees after DRIVER_OK)
    assert ks.dm_wakeups <= ks.ioreqs_dm < 8 and us.dm_wakeups >= 2 * 256
    assert us.ioreqs_dm >= 256 and ks.ioreqs_kernel >= 256
    assert k_io + 256 <= u_io
    # where the time goes: the kick reaches the back end sooner; the same work and interrupt
    ku, kk = (s.to_json()["steps"] for s in (us, ks))
    assert kk["kick_to_backend"]["mean"] < ku["kick_to_backend"]["mean"]
    for stats, res in ((us, u), (ks, k)):
        steps = stats.to_json()["steps"]
        device_side = sum(steps[s]["mean"] for s in steps)
        assert device_side < res["lat_avg"]  # the guest's latency includes them, and more


@pytest.mark.parametrize("batch", [8, 32])
def test_event_idx_gives_fewer_exits_and_interrupts_than_no_suppression(batch, disk):
    """virtio-blk, `batch` requests per notification (as deep): the eight blockif workers
    complete requests close together. Without suppression each completion interrupts the
    guest (and each interrupt costs an EOI exit); with the flags, those that come while the
    driver has not suppressed again still do; with EVENT_IDX only the one that crosses
    used_event does."""
    dev = [f"3,virtio-blk,{disk}"]
    cmd = f"dev=blk batch={batch} depth={batch}"
    none = per_request(f"{cmd} suppress=0", dev)
    flags = per_request(f"{cmd} event_idx=0", dev)
    event_idx = per_request(cmd, dev)
    assert event_idx["irqs"] < none["irqs"] and event_idx["exits"] < none["exits"]
    assert event_idx["irqs"] < flags["irqs"] and event_idx["exits"] < flags["exits"]
    assert none["irqs"] == 1.0  # no suppression: one interrupt per request
    assert event_idx["kicks"] == none["kicks"] == 1 / batch  # one kick per batch either way


def test_batching_and_delayed_notification():
    """Batches share a notification and an interrupt; with more in flight than a batch,
    EVENT_IDX's avail_event lets the driver skip the kicks of batches the device will reach
    anyway (the flags leave it to timing)."""
    one = per_request("dev=rng batch=1", ["6,virtio-rnd"])
    many = per_request("dev=rng batch=32", ["6,virtio-rnd"])
    assert many["exits"] < one["exits"] and many["irqs"] < one["irqs"]
    assert one["kicks"] == 1 and many["kicks"] == 1 / 32
    delayed = per_request("dev=rng batch=8 depth=64", ["6,virtio-rnd"])
    assert delayed["kicks"] < 1 / 8  # some batches needed no kick at all
