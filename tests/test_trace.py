"""--trace writes Chrome trace-event JSON with a track per pCPU and per vCPU, exits visible."""

import json

from conftest import cli


def test_trace_is_valid_trace_event_json(tmp):
    path = tmp / "trace.json"
    p = cli("run", "guests/images/cpuid.elf", "--load-order", "pre", "--trace", str(path))
    assert p.returncode == 0, p.stderr
    doc = json.loads(path.read_text())
    events = doc["traceEvents"]
    for e in events:
        assert e["ph"] in ("X", "i", "M", "C")
        assert isinstance(e["pid"], int) and e["pid"] >= 1
        if e["ph"] != "M":
            assert isinstance(e["ts"], (int, float)) and e["ts"] >= 0
            assert "tid" in e
        if e["ph"] == "X":
            assert e["dur"] >= 0
    names = {
        (e["pid"], e.get("tid"), e["args"]["name"])
        for e in events
        if e["ph"] == "M" and e["name"] == "thread_name"
    }
    # ids from 1: pid 1 the pCPUs (tids 1, 2), then pid 3 + vm_id per VM, tids following on
    assert (1, 1, "pCPU0") in names and (1, 2, "pCPU1") in names
    assert (3, 3, "vCPU0 (pCPU1)") in names  # VM0's vCPU0 runs on pCPU1
    # VM exits on the vCPU tracks, guest slices on the pCPU tracks (pid 1)
    exits = [e for e in events if e.get("cat") == "vmexit"]
    assert {e["name"] for e in exits} >= {"CPUID", "IO_INSTRUCTION"}
    assert all(e["pid"] >= 3 for e in exits)
    runs = [e for e in events if e.get("cat") == "run"]
    assert any(e["pid"] == 1 and e["tid"] == 2 for e in runs)
    # ts is in microseconds: an exit's duration in cycles matches its dur
    hz = doc["otherData"]["tsc_hz"]
    e = exits[0]
    assert abs(e["dur"] - e["args"]["cycles"] * 1e6 / hz) <= 1e-3  # whole nanoseconds
