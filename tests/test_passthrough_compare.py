"""scenarios/passthrough_compare.py: the same requests passed through, emulated and over virtio,
against the no-hypervisor baseline. The assertions are orderings and ratios of the model's
own measurements, not numbers."""

import pytest

from acrn_sim.scenarios import passthrough_compare as pc
from conftest import cli


@pytest.fixture(scope="module")
def rows():
    return {r["way"]: r for r in pc.collect(n=24, latency_us=50, jitter_us=10)}


def test_passthrough_is_within_ten_percent_of_the_baseline_and_below_emulation(rows):
    base, pt = rows[pc.BASELINE], rows["passthrough"]
    emu, vio = rows["emulated"], rows["virtio"]
    assert base["p50_us"] <= pt["p50_us"] <= 1.10 * base["p50_us"]
    assert base["p99_us"] <= pt["p99_us"] <= 1.10 * base["p99_us"]
    assert pt["p50_us"] < vio["p50_us"] < emu["p50_us"]
    assert pt["p99_us"] < emu["p99_us"]


def test_where_each_way_spends_its_exits(rows):
    base, pt = rows[pc.BASELINE], rows["passthrough"]
    emu, vio = rows["emulated"], rows["virtio"]
    # the baseline's path has no exit; passthrough's has no Service VM work at all
    assert base["exits"] == 0 and base["svc_exits"] == 0
    assert pt["svc_exits"] == 0 and 0 < pt["exits"] < emu["exits"]
    # emulation and virtio go through the device model: the Service VM works per request
    assert emu["svc_exits"] > 0 and vio["svc_exits"] > 0
    for r in rows.values():
        assert r["n"] == 24 and r["msis"] == 24


def test_the_same_device_sequence_in_every_way(rows):
    """The acquisition times are drawn from one seeded sequence: every way's latencies minus
    the baseline's keep the same order of the requests' own spread."""
    base = rows[pc.BASELINE]["lat"]
    for way in pc.WAYS:
        lat = rows[way]["lat"]
        assert (
            sorted(range(len(base)), key=base.__getitem__)[:3]
            == sorted(range(len(lat)), key=lat.__getitem__)[:3]
        )


def test_the_script_prints_one_line_per_way(tmp_path):
    r = cli("run", "scenarios/passthrough_compare.py", "--set", "n=12", timeout=300)
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    for way in pc.WAYS:
        line = next(ln for ln in out if ln.startswith(f"{way}: "))
        words = line.split()
        assert words[1] == "p50" and words[3] == "us" and words[4] == "p99" and words[6] == "us"
        assert float(words[2]) <= float(words[5])
    assert any(ln.startswith("| way |") for ln in out)
