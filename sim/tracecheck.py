"""Checks a Chrome trace-event document the way Perfetto's JSON importer reads it, so that a
trace that opens with warnings, misplaced slices or lost flows fails a test instead.

What the importer does (google/perfetto, src/trace_processor/importers/json/
json_trace_parser_impl.cc and json_utils.cc), and what is checked here because of it:
- `ts` and `dur` are microseconds; each becomes integer nanoseconds on its own
  (llround(value * 1000)). Slices are compared in those integers: a slice that ends 1 ns after
  its neighbour begins, because its start and duration were rounded apart, is an overlap.
- A thread track is (pid, tid); its slices ("X", and "i" instants with scope "t", which are
  slices of duration 0) must nest: one that begins inside another must end inside it.
- "B" and "E" pair up on a track, in order; an "E" without its "B", or a "B" left open, is
  unbalanced.
- Flows (version 2: `bind_id` with `flow_out` / `flow_in` on a slice) go out of one slice and
  into a later one; a flow that never ends, ends twice or goes back in time is broken.
- Counters ("C") carry numeric args.
- pid and tid 0 are the kernel's swapper in Perfetto's model of processes: ids start at 1,
  and every process and thread is named by an "M" event.
Events of one track must come in time order in the file (Perfetto sorts, the legacy Chrome
viewer does not), so the file reads the same in both.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

PHASES = {"X", "B", "E", "i", "C", "M"}


def to_ns(us: Any) -> int:
    """A `ts` or `dur` in microseconds as the importer stores it: llround(us * 1000)."""
    return int(math.floor(float(us) * 1000 + 0.5))


def check_trace(doc: Any) -> list[str]:
    """Every problem found in the trace `doc` (a parsed JSON object), as one line each; an
    empty list when Perfetto would import it cleanly."""
    problems: list[str] = []
    if not isinstance(doc, dict) or not isinstance(doc.get("traceEvents"), list):
        return ["not a trace: no traceEvents array"]
    if "displayTimeUnit" in doc:
        # Perfetto takes a displayTimeUnit of "ns" or "ms" as the unit of ts itself
        # (json_trace_tokenizer.cc MaybeParseDisplayTimeUnit); the Chrome viewer does not.
        problems.append("displayTimeUnit is set: Perfetto and Chrome read ts differently")
    events = doc["traceEvents"]
    named_pids: set[int] = set()
    named_tids: set[tuple[int, int]] = set()
    used_pids: set[int] = set()
    used_tids: set[tuple[int, int]] = set()
    tid_owner: dict[int, int] = {}
    last_ts: dict[tuple[int, int], int] = {}
    slices: dict[tuple[int, int], list[tuple[int, int, int]]] = defaultdict(list)
    open_b: dict[tuple[int, int], list[tuple[int, str]]] = defaultdict(list)
    flows: dict[Any, list[tuple[int, int, bool, bool]]] = defaultdict(list)

    def bad(i: int, what: str) -> None:
        if len(problems) < 50:
            problems.append(f"event {i}: {what}")

    for i, e in enumerate(events):
        if not isinstance(e, dict):
            bad(i, "not an object")
            continue
        ph = e.get("ph")
        if ph not in PHASES:
            bad(i, f"phase {ph!r} is not one this trace uses")
            continue
        pid, tid = e.get("pid"), e.get("tid")
        if not isinstance(pid, int) or pid < 1:
            bad(i, f"pid {pid!r}: ids start at 1")
            continue
        if ph == "M":
            name = (e.get("args") or {}).get("name")
            if not isinstance(name, str) or not name:
                bad(i, "metadata without a name")
            if e.get("name") == "process_name":
                named_pids.add(pid)
            elif e.get("name") == "thread_name":
                if not isinstance(tid, int) or tid < 1:
                    bad(i, f"tid {tid!r}: ids start at 1")
                    continue
                named_tids.add((pid, tid))
            continue
        if not isinstance(tid, int) or tid < 1:
            bad(i, f"tid {tid!r}: ids start at 1")
            continue
        if tid_owner.setdefault(tid, pid) != pid:
            # Perfetto keys a thread by its tid: one tid in two processes is one thread that
            # moved between them.
            bad(i, f"tid {tid} is used in pid {tid_owner[tid]} and pid {pid}")
        track = (pid, tid)
        used_pids.add(pid)
        used_tids.add(track)
        ts_raw = e.get("ts")
        if not isinstance(ts_raw, int | float) or isinstance(ts_raw, bool) or ts_raw < 0:
            bad(i, f"ts {ts_raw!r} is not a time")
            continue
        ts = to_ns(ts_raw)
        if ts < last_ts.get(track, 0):
            bad(i, f"out of order on track {track}: {ts} ns after {last_ts[track]} ns")
        last_ts[track] = max(ts, last_ts.get(track, 0))
        if ph == "X":
            dur_raw = e.get("dur")
            if not isinstance(dur_raw, int | float) or isinstance(dur_raw, bool) or dur_raw < 0:
                bad(i, f"slice {e.get('name')!r}: dur {dur_raw!r} is not a duration")
                continue
            slices[track].append((ts, ts + to_ns(dur_raw), i))
            if "bind_id" in e:
                out, into = bool(e.get("flow_out")), bool(e.get("flow_in"))
                if not (out or into):
                    bad(i, f"flow {e['bind_id']!r} bound without a direction")
                flows[e["bind_id"]].append((ts, i, into, out))
        elif ph == "i":
            if e.get("s", "t") != "t":
                bad(i, f"instant with scope {e.get('s')!r} (only thread instants are used)")
            slices[track].append((ts, ts, i))
        elif ph == "B":
            open_b[track].append((ts, str(e.get("name"))))
        elif ph == "E":
            if not open_b[track]:
                bad(i, f"E on track {track} with no B open")
            else:
                open_b[track].pop()
        elif ph == "C":
            args = e.get("args")
            if not isinstance(args, dict) or not args:
                bad(i, "counter without values")
            elif not all(isinstance(v, int | float) and not isinstance(v, bool)
                         for v in args.values()):  # fmt: skip
                bad(i, f"counter {e.get('name')!r} with a value that is not a number")
    for track, stack in sorted(open_b.items()):
        for ts, name in stack:
            problems.append(f"track {track}: B {name!r} at {ts} ns is never closed")
    for track, spans in sorted(slices.items()):
        problems.extend(_nesting(track, spans))
    for fid, binds in flows.items():
        problems.extend(_flow(fid, binds))
    for pid in sorted(used_pids - named_pids):
        problems.append(f"pid {pid} has no process_name")
    for track in sorted(used_tids - named_tids):
        problems.append(f"track {track} has no thread_name")
    return problems


def _nesting(track: tuple[int, int], spans: list[tuple[int, int, int]]) -> list[str]:
    """Slices of one track, as the importer's slice stack takes them: in time order, the
    longer first among those that begin together; each must end within the one it is in."""
    out: list[str] = []
    stack: list[tuple[int, int, int]] = []
    for start, end, i in sorted(spans, key=lambda s: (s[0], -s[1], s[2])):
        while stack and stack[-1][1] <= start:  # those that ended
            stack.pop()
        if stack and stack[-1][1] < end:
            p_start, p_end, p_i = stack[-1]
            if len(out) < 20:
                out.append(
                    f"track {track}: event {i} [{start}, {end}] ns overlaps event {p_i} "
                    f"[{p_start}, {p_end}] ns"
                )
            continue
        stack.append((start, end, i))
    return out


def _flow(fid: Any, binds: list[tuple[int, int, bool, bool]]) -> list[str]:
    """One flow's slices in file order: out first, then in-and-out steps, then in; in time
    order."""
    ends = [(into, out) for _ts, _i, into, out in binds]
    shape_ok = (
        len(ends) >= 2
        and ends[0] == (False, True)
        and ends[-1] == (True, False)
        and all(e == (True, True) for e in ends[1:-1])
    )
    if not shape_ok:
        return [f"flow {fid!r}: {len(ends)} bindings do not go out, step and come in"]
    times = [ts for ts, *_ in binds]
    if times != sorted(times):
        return [f"flow {fid!r} goes back in time"]
    return []
