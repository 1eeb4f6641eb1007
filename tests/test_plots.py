"""Plots (scenarios/plots.py): the numbers each plot is given are the statistics' own, and the
files are drawn (`acrn-sim plot`, `run --plot`)."""

from __future__ import annotations

import json

import pytest

from acrn_sim.scenarios import plots
from conftest import cli


@pytest.fixture(scope="module")
def stats(tmp_path_factory):
    d = tmp_path_factory.mktemp("plots")
    r = cli("run", "scenarios/two_user_vms.py", "--stats", str(d / "s.json"), "--plot",
            str(d / "run-plots"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    return d, json.loads((d / "s.json").read_text())


def test_histograms_are_the_statistics(stats):
    _, doc = stats
    hz = doc["tsc_hz"]
    data = plots.histogram_data(doc)
    assert {(h["vm"], h["what"]) for h in data} == {
        (vm, f"I/O to {dev}, round trip")
        for vm, devices in doc["io_requests"].items()
        for dev in devices
    }
    h = next(h for h in data if h["vm"] == "POST_VM2" and "uart" in h["what"])
    total = doc["io_requests"]["POST_VM2"]["uart"]["total"]
    buckets = doc["histograms"]["io_requests"]["POST_VM2"]["uart"]
    assert h["buckets"] == [(lo * 1e6 / hz, hi * 1e6 / hz, n) for lo, hi, n in buckets]
    assert sum(n for _, _, n in h["buckets"]) == total["count"] == h["count"]
    assert (h["p50"], h["p99"]) == (total["p50"] * 1e6 / hz, total["p99"] * 1e6 / hz)
    # the marks fall in the buckets that hold them
    assert any(lo <= h["p99"] < hi for lo, hi, _ in h["buckets"])


def test_histograms_of_exits_without_io_through_the_service_vm(tmp):
    r = cli("run", "guests/images/timing.elf", "--load-order", "pre", "--stats",
            str(tmp / "s.json"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = json.loads((tmp / "s.json").read_text())
    data = plots.histogram_data(doc)
    cpuid = next(h for h in data if (h["vm"], h["what"]) == ("PRE_VM0", "exit CPUID"))
    assert cpuid["count"] == sum(n for *_, n in cpuid["buckets"]) == 64


def test_exit_ranges_are_the_statistics(stats):
    _, doc = stats
    data = plots.exits_data(doc)
    assert len(data) == sum(len(v.get("exits", {})) for v in doc["vms"].values())
    cpuid = next(x for x in data if x["vm"] == "POST_VM2" and x["what"] == "exit CPUID")
    s = doc["vms"]["POST_VM2"]["exits"]["CPUID"]
    assert cpuid["count"] == s["count"]
    assert cpuid["cycles"] == {k: s[k] for k in ("min", "p50", "p90", "p99", "max")}


def test_step_bars_are_the_nine_steps_means(stats):
    _, doc = stats
    hz = doc["tsc_hz"]
    data = plots.steps_data(doc)
    bar = next(b for b in data["bars"] if (b["vm"], b["device"]) == ("POST_VM2", "uart"))
    steps = doc["io_requests"]["POST_VM2"]["uart"]
    assert bar["steps"] == {int(k): s["mean"] * 1e6 / hz for k, s in steps.items() if k != "total"}
    assert data["step_names"][1] == "vm_exit" and data["step_names"][9] == "vm_entry"
    # the stack adds up to the round trip's mean, within the means' rounding
    assert abs(sum(bar["steps"].values()) - steps["total"]["mean"] * 1e6 / hz) < 0.01


def test_timeline_is_who_held_each_pcpu(stats):
    _, doc = stats
    hz = doc["tsc_hz"]
    data = plots.timeline_data(doc)
    for pcpu, d in doc["pcpus"].items():
        spans = data["pcpus"][int(pcpu)]
        held: dict[str, float] = {}
        for _, length, who in spans:
            held[who] = held.get(who, 0.0) + length
        assert held.keys() == d["held"].keys()
        for who, cycles in d["held"].items():
            assert held[who] == pytest.approx(cycles * 1e6 / hz)
    assert data["pcpus"][2][0][2] == "POST_VM2/0"


def test_the_files_are_drawn(stats, tmp):
    d, _ = stats
    names = sorted(p.name for p in (d / "run-plots").iterdir())
    assert names == ["exits.png", "io_steps.png", "latency.png", "pcpu_timeline.png"]
    r = cli("plot", str(d / "s.json"), "-o", str(tmp / "p"))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp / "p").iterdir()) == names
    assert all((tmp / "p" / n).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for n in names)


def test_plot_refuses_what_is_not_a_statistics_file(tmp):
    (tmp / "x.json").write_text('{"traceEvents": []}')
    r = cli("plot", str(tmp / "x.json"))
    assert r.returncode == 2
    assert r.stderr.startswith("acrn-sim: error: ") and r.stderr.count("\n") == 1
    assert "not an acrn-sim statistics file" in r.stderr
    r = cli("plot", str(tmp / "missing.json"))
    assert r.returncode == 2 and "cannot read" in r.stderr
