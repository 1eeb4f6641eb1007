"""Every scenario script and a few images, each run once with every file output: the trace
imports cleanly (sim/tracecheck.py), the statistics conform to sim/schemas/stats.schema.json
(checked by the `jsonschema` package and by sim/schema.py), and --csv holds the same figures."""

from __future__ import annotations

import csv
import json

import jsonschema
import pytest

from acrn_sim.scenarios.api import csv_tables
from acrn_sim.sim.schema import check_stats, stats_schema
from acrn_sim.sim.tracecheck import check_trace
from conftest import ROOT, cli

# every scenario script, its XML twins, and images that take the other paths (pre-launched,
# polling, SMP, MMIO, virtio's kernel back end), kept short
RUNS = {
    "hello.elf": ["guests/images/hello.elf"],
    "timing-pre": ["guests/images/timing.elf", "--load-order", "pre"],
    "timing-polling": ["guests/images/timing.elf", "--polling"],
    "smp": ["guests/images/smp.elf", "--cpu-affinity", "1,2"],
    "mmiotest": ["guests/images/mmiotest.elf"],
    "vrng-kernel": ["guests/images/vrng.elf", "-s", "6,virtio-rnd,kernel=on"],
    "hello.py": ["scenarios/hello.py"],
    "two_user_vms.py": ["scenarios/two_user_vms.py"],
    "ipi_latency.py": ["scenarios/ipi_latency.py", "--set", "n=20"],
    "virtio_net.py": ["scenarios/virtio_net.py", "--set", "n=20"],
    "automotive_sdc.py": ["scenarios/automotive_sdc.py", "--set", "frames=2"],
    "rtvm_latency.py": ["scenarios/rtvm_latency.py", "--set", "samples=10"],
    "two_user_vms.xml": ["scenarios/two_user_vms.xml"],
    "hybrid.xml": ["scenarios/xml/hybrid.xml", "--until", "2ms"],
}


@pytest.fixture(scope="module", params=sorted(RUNS))
def outputs(request, tmp_path_factory):
    name = request.param
    d = tmp_path_factory.mktemp(name.replace(".", "_"))
    r = cli("run", *RUNS[name], "--trace", str(d / "t.json"), "--stats", str(d / "s.json"),
            "--csv", str(d / "csv"), "--plot", str(d / "plots"), "--report", "--explain",
            timeout=300)  # fmt: skip
    assert r.returncode in (0, 124), r.stderr
    stats = sorted(d.glob("s*.json"))
    traces = sorted(d.glob("t*.json"))
    assert stats and len(stats) == len(traces)
    # --report and --explain once per configuration, --plot into a folder per configuration
    assert r.stderr.count("simulated time: ") == len(stats)
    assert r.stderr.count("The first I/O round trip") + r.stderr.count("--explain: no I/O") == len(
        stats
    )
    pngs = sorted((d / "plots").rglob("*.png"))
    assert len({p.parent for p in pngs}) == len(stats) and pngs
    return name, d, stats, traces


def test_every_trace_imports_cleanly(outputs):
    name, _, _, traces = outputs
    for path in traces:
        doc = json.loads(path.read_text())
        assert check_trace(doc) == [], path.name
        assert any(e["ph"] == "X" for e in doc["traceEvents"])


def test_every_statistics_file_conforms_to_the_schema(outputs):
    name, _, stats, _ = outputs
    for path in stats:
        doc = json.loads(path.read_text())
        jsonschema.validate(doc, stats_schema())
        assert check_stats(doc) == []
        assert doc["schema_version"] == 1
        for devices in doc["io_requests"].values():
            for steps in devices.values():
                assert steps["total"]["name"] == "round_trip"
                assert all(s["name"] for s in steps.values())
    if name == "rtvm_latency.py":  # one file per configuration, each with its histogram
        assert [p.name for p in stats] == ["s.dedicated.json", "s.shared.json"]
        for p in stats:
            doc = json.loads(p.read_text())
            assert doc["run"]["configuration"] == p.name.split(".")[1]
            assert sum(doc["scenario"]["histogram_us"].values()) == 10
    if name == "automotive_sdc.py":
        doc = json.loads(stats[0].read_text())
        rows = {r["vm"]: r for r in doc["scenario"]["vms"]}
        assert rows["CLUSTER"]["io_p99"] == doc["vms"]["CLUSTER"]["exits"]["IO_INSTRUCTION"]["p99"]
    if name == "vrng-kernel":
        assert json.loads(stats[0].read_text())["virtio"][0]["backend"] == "VBS-K"


def test_csv_holds_the_same_tables(outputs):
    name, d, stats, _ = outputs
    doc = json.loads(stats[0].read_text())
    csv_dir = d / "csv" if len(stats) == 1 else d / "csv" / stats[0].name.split(".")[1]
    tables = csv_tables(doc)
    assert sorted(p.stem for p in csv_dir.iterdir()) == sorted(tables)
    for table, rows in tables.items():
        with open(csv_dir / f"{table}.csv", newline="") as f:
            got = list(csv.reader(f))
        assert got == [[str(c) for c in row] for row in rows], table
    exits = {(r[0], r[1]): r for r in tables["exits"][1:]}
    for vm, v in doc["vms"].items():
        for reason, s in v.get("exits", {}).items():
            assert exits[(vm, reason)][2:] == [s[k] for k in tables["exits"][0][2:]]


def step_one(doc):
    return doc["io_requests"]["VM"]["uart"]["1"]


def test_the_schema_refuses_what_breaks_it():
    """Both validators find each fault: a field missing, a step keyed wrongly, a wrong type."""
    doc = json.loads((ROOT / "tests" / "data" / "stats_min.json").read_text())
    assert check_stats(doc) == []
    jsonschema.validate(doc, stats_schema())
    faults = {
        "no schema_version": lambda d: d.pop("schema_version"),
        "schema_version 2": lambda d: d.update(schema_version=2),
        "step 10": lambda d: d["io_requests"]["VM"]["uart"].update({"10": step_one(d)}),
        "p99 a string": lambda d: d["vms"]["VM"]["exits"]["CPUID"].update(p99="12"),
        "no mean": lambda d: d["vms"]["VM"]["exits"]["CPUID"].pop("mean"),
        "unknown status": lambda d: d["run"].update(status="fine"),
        "step without name": lambda d: d["io_requests"]["VM"]["uart"]["1"].pop("name"),
    }  # fmt: skip
    for what, breaks in faults.items():
        broken = json.loads(json.dumps(doc))
        breaks(broken)
        assert check_stats(broken), what
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, stats_schema())
