"""Traces open cleanly in Perfetto: sim/tracecheck.py reads a trace as Perfetto's JSON importer
does (slices nest on each track, B/E balance, per-track time order, flows go out and come back,
ids from 1 with names), and finds the faults it looks for when they are put in. (Every
scenario's trace is checked in tests/test_outputs.py.)"""

from __future__ import annotations

import copy
import json

import pytest

from acrn_sim.sim.tracecheck import check_trace
from conftest import cli


@pytest.fixture(scope="module")
def io_trace(tmp_path_factory):
    path = tmp_path_factory.mktemp("trace") / "two.json"
    r = cli("run", "scenarios/two_user_vms.py", "--trace", str(path))
    assert r.returncode == 0, r.stderr
    return json.loads(path.read_text())


def test_an_io_request_is_one_flow_across_vcpu_hypervisor_service_vm_and_device_model(io_trace):
    events = io_trace["traceEvents"]
    names = {(e["pid"], e.get("tid")): e["args"]["name"] for e in events if e["ph"] == "M"}
    flow = [e for e in events if e.get("bind_id") == 3]
    assert [e["args"]["step"] for e in flow] == list(range(1, 10))
    assert [e["name"].split()[2] for e in flow][:2] == ["vm_exit", "insert_request"]
    tracks = [names[(e["pid"], e["tid"])] for e in flow]
    assert tracks[0].startswith("vCPU0") and tracks[-1] == tracks[0]
    assert tracks[1].startswith("I/O requests POST_VM") and tracks[7] == tracks[1]
    assert tracks[2].startswith("HSM") and tracks[4].startswith("acrn-dm POST_VM")
    assert names[(flow[0]["pid"], None)].startswith("VM") and names[(2, None)] == "hypervisor"
    # each step lasts until the next one: the slices touch, and the chain covers the exit
    for a, b in zip(flow, flow[1:], strict=False):
        assert round((a["ts"] + a["dur"]) * 1000) == round(b["ts"] * 1000)
    assert flow[0].get("flow_out") and not flow[0].get("flow_in")
    assert flow[-1].get("flow_in") and not flow[-1].get("flow_out")


def test_counters_for_ioreq_slots_and_run_queues(io_trace):
    counters = [e for e in io_trace["traceEvents"] if e["ph"] == "C"]
    slots = [e["args"]["in use"] for e in counters if e["name"] == "IOREQ slots POST_VM2"]
    assert slots and max(slots) == 1 and slots[-1] == 0  # one vCPU: one slot at most
    runq = [e["args"]["vCPUs"] for e in counters if e["name"] == "run queue pCPU1"]
    assert runq and set(runq) <= {0, 1}


# --------------------------------------------------------------- the checker finds faults
def _broken(doc: dict, how) -> list[str]:
    doc = copy.deepcopy(doc)
    how(doc["traceEvents"])
    return check_trace(doc)


def _slices(events):
    return [e for e in events if e["ph"] == "X" and e.get("cat") == "vmexit"]


def test_start_and_duration_rounded_apart_overlap_by_a_nanosecond(io_trace):
    """The old export: ts and dur each rounded from cycles; about one slice in twenty then
    ended a nanosecond after its neighbour began."""

    def separately(events):
        hz = io_trace["otherData"]["tsc_hz"]
        for e in events:
            if e["ph"] == "X":
                c, d = e["args"]["cycle"], e["args"]["cycles"]
                e["ts"], e["dur"] = round(c * 1e6 / hz, 6), round(d * 1e6 / hz, 6)

    problems = _broken(io_trace, separately)
    assert any("overlaps" in p for p in problems), problems[:3]


def test_the_checker_finds_each_fault(io_trace):
    def overlap(events):
        a, b = _slices(events)[:2]
        b.update(pid=a["pid"], tid=a["tid"], ts=a["ts"] + a["dur"] / 2, dur=a["dur"])

    def unbalanced(events):
        e = dict(_slices(events)[0], ph="B")
        e.pop("dur")
        events.append(e)

    def end_without_begin(events):
        events.append({**{k: v for k, v in _slices(events)[0].items() if k != "dur"}, "ph": "E"})

    def unordered(events):
        i = next(i for i, e in enumerate(events) if e["ph"] == "X")
        track = (events[i]["pid"], events[i]["tid"])
        j = max(k for k, e in enumerate(events) if (e["pid"], e.get("tid")) == track)
        events[i], events[j] = events[j], events[i]

    def zero_ids(events):
        for e in events:
            e["pid"] -= 1

    def flow_cut(events):
        for e in events:
            if e.get("bind_id") == 3 and e["args"]["step"] == 9:
                e.pop("flow_in")
                e["flow_out"] = True

    def unnamed(events):
        events[:] = [e for e in events if not (e["ph"] == "M" and e["name"] == "thread_name")]

    def shared_tid(events):
        e = next(e for e in events if e["ph"] == "X" and e["pid"] > 3)
        events.append({**e, "pid": 3})

    def display_unit(events):
        pass

    cases = {
        overlap: "overlaps",
        unbalanced: "never closed",
        end_without_begin: "no B open",
        unordered: "out of order",
        zero_ids: "ids start at 1",
        flow_cut: "flow 3",
        unnamed: "has no thread_name",
        shared_tid: "is used in pid",
    }
    for how, what in cases.items():
        problems = _broken(io_trace, how)
        assert any(what in p for p in problems), (how.__name__, problems[:3])
    doc = dict(io_trace, displayTimeUnit="ns")
    assert any("displayTimeUnit" in p for p in check_trace(doc))
    assert check_trace(io_trace) == []
