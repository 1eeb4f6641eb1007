"""The fuzz campaign: run generated cases through the real CLI, classify, keep reproducers.

    python -m tests.fuzz.runner --n 2000 --seed 1 [--jobs 2] [--out out/fuzz]
    python -m tests.fuzz.runner --seed 1 --only 137        # run one case again
    make fuzz N=10000 SEED=1

Each case is a subprocess `python -m acrn_sim.scenarios.cli run ...` with a simulated-time
limit, a host-time bound and an RSS bound. Classes:
  clean        exit 0-255 from the guest, 124 (time limit) or 126 (all halted)
  guest_error  125 (the VM crashed, triple-faulted or stopped as reported) or a one-line
               usage or configuration error (exit 2, "acrn-sim: error: ...")
  crash        a traceback, an internal error (exit 70), a signal, or any stderr line that is
               not one of the CLI's own one-line messages
  hang         still running after 10 times the host time the calibration predicts for the
               case's simulated time (at least MIN_BOUND_S)
  memory       RSS over the bound (polled from /proc/PID/status)
A crash's signature is its exception type and innermost project frame; a hang's or memory
case's is the generator's kind. The first case of each new signature is minimized (its parts
dropped while the signature stays) and kept in the output directory with a repro.sh.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .cases import GENERATORS, ROOT, WEIGHTS, Case, effective_sim_cycles, make_case

CLASSES = ("clean", "guest_error", "crash", "hang", "memory")
BAD_CLASSES = ("crash", "hang", "memory")
HANG_FACTOR = 10
MIN_BOUND_S = 5.0  # a floor under the hang bound: process start-up varies on a shared machine
MAX_BOUND_S = 60.0  # and a ceiling (cases simulate at most 20 ms)
RSS_LIMIT_MB = 2048
OUTPUT_TAIL = 64 * 1024
POLL_S = 0.05
INTERRUPT_WAIT_S = 2.0


@dataclass
class Calibration:
    startup_s: float  # host seconds of a run that simulates (almost) nothing
    host_per_sim_s: float  # host seconds per simulated second of a compute-bound guest
    min_bound_s: float = MIN_BOUND_S

    def bound(self, case: Case) -> float:
        sim_s = (case.sim_cycles or 0) / 2_400_000_000
        predicted = self.startup_s + self.host_per_sim_s * sim_s * max(1, case.vcpus)
        return min(max(HANG_FACTOR * predicted, self.min_bound_s), MAX_BOUND_S)


@dataclass
class Outcome:
    index: int
    category: str
    kind: str
    cls: str
    signature: str
    returncode: int | None
    host_s: float
    peak_rss_mb: float
    stderr: str = ""
    case: Case | None = field(default=None, repr=False)


def cli_command(args: list) -> list:
    return [sys.executable, "-m", "acrn_sim.scenarios.cli", "run", *args]


def _expand(args: list, directory: str) -> list:
    out = []
    for a in args:
        if isinstance(a, bytes):
            out.append(a.replace(b"{dir}", directory.encode()))
        else:
            out.append(a.replace("{dir}", directory))
    return out


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


def _tail(path: Path) -> str:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - OUTPUT_TAIL))
        return f.read().decode("utf-8", "replace")


def execute(case: Case, directory: Path, bound_s: float, rss_limit_mb: float) -> tuple:
    """Run the case once: (returncode or None, stderr tail, host seconds, peak RSS MB,
    'hang' | 'memory' | None)."""
    for name, data in case.files.items():
        (directory / name).write_bytes(data)
    argv = cli_command(_expand(case.args, str(directory)))
    out_path, err_path = directory / ".stdout", directory / ".stderr"
    env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}
    start = time.monotonic()
    peak, killed = 0.0, None
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(
            argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
            start_new_session=True,
        )  # fmt: skip
        while proc.poll() is None:
            peak = max(peak, _rss_mb(proc.pid))
            if peak > rss_limit_mb:
                killed = "memory"
            elif time.monotonic() - start > bound_s:
                killed = "hang"
            if killed:
                if killed == "hang":
                    # Ctrl-C first: the CLI then says where simulated time was, which tells a
                    # run that went past --until from one that is only slow
                    proc.send_signal(signal.SIGINT)
                    try:
                        proc.wait(INTERRUPT_WAIT_S)
                    except subprocess.TimeoutExpired:
                        pass
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    if killed == "hang":
                        killed = "hang-kill"  # (it did not answer Ctrl-C)
                proc.wait()
                break
            time.sleep(POLL_S)
    host_s = time.monotonic() - start
    return proc.returncode, _tail(err_path), host_s, peak, killed


_INTERNAL = re.compile(
    r"internal error[^:]*: (?P<type>[\w.]+)(?:: .*?)?(?: \((?P<where>\S+):(?P<line>\d+) in "
    r"(?P<func>\S+)\))?; please report it"
)
_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<func>\S+)')


def _traceback_signature(stderr: str) -> str:
    lines = stderr.splitlines()
    start = max(i for i, ln in enumerate(lines) if ln.startswith("Traceback"))
    where, exc = "", "unknown"
    for ln in lines[start:]:
        m = _FRAME.match(ln)
        if m:
            path = Path(m["file"])
            try:
                rel = path.resolve().relative_to(ROOT)
            except ValueError:
                continue
            if rel.parts and rel.parts[0] != ".venv":
                where = f"{rel.as_posix()}:{m['line']} in {m['func']}"
        elif ln and not ln[0].isspace() and not ln.startswith(("Traceback", "During", "The ")):
            exc = ln.split(":")[0].strip()
    return f"{exc} at {where or '?'}"


_INTERRUPTED = re.compile(r"acrn-sim: interrupted at cycle (\d+)")


def classify(
    returncode: int | None,
    stderr: str,
    killed: str | None,
    kind: str,
    sim_cycles: int | None,
    reports: bool = False,
) -> tuple:
    """(class, signature) of one run."""
    if killed == "memory":
        return "memory", f"memory: {kind}"
    if killed == "hang-kill":
        return "hang", f"hang: no answer to Ctrl-C within {INTERRUPT_WAIT_S:g} s: {kind}"
    if killed == "hang":
        m = _INTERRUPTED.search(stderr)
        if m is None:  # it ended by itself as Ctrl-C came: past the bound, but it ended
            return "hang", f"hang: slow (simulated time behind the bound): {kind}"
        if sim_cycles is not None and int(m[1]) >= sim_cycles:
            return "hang", f"hang: simulated time passed --until: {kind}"
        return "hang", f"hang: slow (simulated time behind the bound): {kind}"
    if "Traceback (most recent call last)" in stderr:
        return "crash", _traceback_signature(stderr)
    m = _INTERNAL.search(stderr)
    if m:
        where = f"{m['where']}:{m['line']} in {m['func']}" if m["where"] else "?"
        return "crash", f"{m['type']} at {where}"
    if returncode is not None and returncode < 0:
        return "crash", f"signal {signal.Signals(-returncode).name}"
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    # (--report and --explain print their tables to stderr: only the CLI's lines count then)
    stray = [ln for ln in lines if not ln.startswith("acrn-sim: ")] if not reports else []
    if stray:
        return "crash", "stray output: " + re.sub(r"\d+", "N", stray[0])[:80]
    if returncode == 2 and any(ln.startswith("acrn-sim: error: ") for ln in lines):
        errors = [ln for ln in lines if not ln.startswith("acrn-sim: note:")]
        if len(errors) != 1:
            return "crash", "error message is not one line"
        return "guest_error", "usage or configuration error"
    if returncode == 125:
        return "guest_error", "VM crashed or triple-faulted"
    if returncode == 70:
        return "crash", "exit 70 without a message"
    return "clean", "clean"


def run_case(case: Case, index: int, work: Path, cal: Calibration, rss_mb: float) -> Outcome:
    case.sim_cycles = effective_sim_cycles(case.args)
    directory = Path(tempfile.mkdtemp(prefix=f"case{index}-", dir=work))
    try:
        rc, stderr, host_s, peak, killed = execute(case, directory, cal.bound(case), rss_mb)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    reports = any(a in ("--report", "--explain") for a in case.args)
    cls, sig = classify(rc, stderr, killed, case.kind, case.sim_cycles, reports)
    return Outcome(index, case.category, case.kind, cls, sig, rc, host_s, peak, stderr, case)


def minimize(outcome: Outcome, work: Path, cal: Calibration, rss_mb: float, budget: int) -> Case:
    """Drop parts of the case (delta debugging, at most `budget` runs) while it still gives the
    same class and signature (for a hang or memory case: the same class)."""
    case = outcome.case
    if case is None or case.rebuild is None or len(case.parts) < 2:
        return case

    def same(parts: list) -> bool:
        nonlocal budget
        budget -= 1
        o = run_case(case.rebuild(parts), outcome.index, work, cal, rss_mb)
        if outcome.cls == "crash":
            return o.cls == "crash" and o.signature == outcome.signature
        return o.cls == outcome.cls

    parts, n = list(case.parts), 2
    while len(parts) >= 2 and budget > 0:
        chunk = math.ceil(len(parts) / n)
        for i in range(0, len(parts), chunk):
            candidate = parts[:i] + parts[i + chunk :]
            if candidate and budget > 0 and same(candidate):
                parts, n = candidate, max(n - 1, 2)
                break
        else:
            if n >= len(parts):
                break
            n = min(len(parts), 2 * n)
    return case.rebuild(parts)


def _shell_quote(a) -> str:
    if isinstance(a, bytes):
        return "$'" + "".join(f"\\x{b:02x}" for b in a) + "'"
    return "'" + a.replace("'", "'\\''") + "'"


def keep_reproducer(out: Path, n: int, outcome: Outcome, case: Case, seed: int) -> Path:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", outcome.signature)[:60].strip("-")
    d = out / f"{outcome.cls}-{n:02d}-{slug}"
    d.mkdir(parents=True, exist_ok=True)
    for name, data in case.files.items():
        (d / name).write_bytes(data)
    args = _expand(case.args, "$DIR")
    cmd = " ".join(['"${PYTHON:-.venv/bin/python}"', "-m", "acrn_sim.scenarios.cli", "run"]
                   + list(map(_shell_quote, args)))  # fmt: skip
    cmd = cmd.replace("'$DIR", '"$DIR"\'').replace("\"$DIR\"''", '"$DIR"')
    (d / "repro.sh").write_text(
        "#!/bin/sh\n# Run from the repository root (PYTHON: the venv's python by default). "
        f"Found by: python -m tests.fuzz.runner --seed {seed} --only {outcome.index}\n"
        'DIR="$(cd "$(dirname "$0")" && pwd)"\n'
        f"exec {cmd}\n"
    )
    (d / "stderr.txt").write_text(outcome.stderr[-8000:])
    info = {
        "seed": seed, "index": outcome.index, "category": outcome.category,
        "kind": case.kind, "class": outcome.cls, "signature": outcome.signature,
        "returncode": outcome.returncode, "host_s": round(outcome.host_s, 3),
        "parts": len(case.parts), "detail": case.detail,
    }  # fmt: skip
    (d / "case.json").write_text(json.dumps(info, indent=1) + "\n")
    return d


def calibrate(work: Path) -> Calibration:
    """Host time of the compute-bound benchmark guest for a short and a longer simulated time:
    start-up, and host seconds per simulated second."""
    image = "guests/images/bench.elf"

    def timed(until: str) -> float:
        best = math.inf
        for _ in range(2):
            t = time.monotonic()
            subprocess.run(
                cli_command([image, "--load-order", "pre", "--cmdline", "compute 1000000000",
                             "--until", until]),
                cwd=ROOT, capture_output=True, check=False,
            )  # fmt: skip
            best = min(best, time.monotonic() - t)
        return best

    short, long = timed("1cycles"), timed("50ms")
    return Calibration(short, max(0.0, long - short) / 0.05)


@dataclass
class Campaign:
    seed: int
    outcomes: list[Outcome]
    signatures: dict[str, dict]
    host_s: float
    calibration: Calibration


def run_campaign(
    seed: int,
    n: int,
    jobs: int = 2,
    out: Path | None = None,
    categories: list[str] | None = None,
    minimize_budget: int = 40,
    rss_mb: float = RSS_LIMIT_MB,
    start: int = 0,
    progress: bool = False,
    min_bound_s: float = MIN_BOUND_S,
) -> Campaign:
    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="acrn-sim-fuzz-"))
    try:
        cal = calibrate(work)
        cal.min_bound_s = min_bound_s
        if progress:
            print(
                f"calibration: start-up {cal.startup_s:.2f} s, "
                f"{cal.host_per_sim_s:.2f} host s per simulated s",
                file=sys.stderr,
            )
        indices = range(start, start + n)

        def one(i: int) -> Outcome:
            return run_case(make_case(seed, i, categories), i, work, cal, rss_mb)

        outcomes: list[Outcome] = []
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            for k, o in enumerate(pool.map(one, indices), 1):
                outcomes.append(o)
                if progress and (k % 100 == 0 or k == n):
                    bad = sum(o.cls in BAD_CLASSES for o in outcomes)
                    print(f"  {k}/{n} cases, {bad} bad", file=sys.stderr)
        signatures: dict[str, dict] = {}
        aliases: dict[str, str] = {}
        for o in outcomes:
            if o.cls not in BAD_CLASSES:
                continue
            key = aliases.get(o.signature, o.signature)
            entry = signatures.get(key)
            if entry is None:
                case = o.case
                if out is not None:
                    budget = minimize_budget if o.cls == "crash" else minimize_budget // 6
                    case = minimize(o, work, cal, rss_mb, budget)
                entry = {"class": o.cls, "count": 0, "first": o.index, "category": o.category,
                         "kind": case.kind, "reproducer": None}  # fmt: skip
                if out is not None:
                    d = keep_reproducer(out, len(signatures) + 1, o, case, seed)
                    entry["reproducer"] = str(d)
                signatures[key] = entry
            entry["count"] += 1
        for o in outcomes:
            o.case = None  # (the cases' files are no longer needed)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Campaign(seed, outcomes, signatures, time.monotonic() - t0, cal)


def table(c: Campaign) -> str:
    counts: dict[str, Counter] = defaultdict(Counter)
    for o in c.outcomes:
        counts[o.category][o.cls] += 1
    cats = [cat for cat in GENERATORS if cat in counts]
    head = f"  {'category':<10}" + "".join(f"{k:>13}" for k in CLASSES) + f"{'total':>8}"
    lines = [head]
    total: Counter = Counter()
    for cat in cats:
        row = counts[cat]
        total.update(row)
        lines.append(
            f"  {cat:<10}" + "".join(f"{row[k]:>13}" for k in CLASSES) + f"{sum(row.values()):>8}"
        )
    lines.append(
        f"  {'all':<10}" + "".join(f"{total[k]:>13}" for k in CLASSES) + f"{sum(total.values()):>8}"
    )
    lines.append(
        f"  seed {c.seed}, {len(c.outcomes)} cases, {c.host_s:.0f} s of host time "
        f"(calibration: start-up {c.calibration.startup_s:.2f} s, "
        f"{c.calibration.host_per_sim_s:.2f} host s per simulated s)"
    )
    if c.signatures:
        lines.append("")
        lines.append("  distinct signatures (class, count, first case, reproducer):")
        for sig, e in sorted(c.signatures.items(), key=lambda kv: (kv[1]["class"], kv[0])):
            lines.append(f"  {e['class']:<7}{e['count']:>5}  #{e['first']:<6} {sig}")
            if e["reproducer"]:
                lines.append(f"  {'':<20}{e['reproducer']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tests.fuzz.runner", description=__doc__.split("\n")[0]
    )
    p.add_argument("--n", type=int, default=200, help="number of cases")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--start", type=int, default=0, help="index of the first case")
    p.add_argument("--only", type=int, help="run the one case of this index, and show it")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", default="out/fuzz", help="directory for the reproducers")
    p.add_argument("--categories", help=f"comma-separated, of {', '.join(WEIGHTS)}")
    p.add_argument("--rss-mb", type=float, default=RSS_LIMIT_MB)
    p.add_argument("--no-minimize", action="store_true")
    opts = p.parse_args(argv)
    cats = opts.categories.split(",") if opts.categories else None
    if opts.only is not None:
        case = make_case(opts.seed, opts.only, cats)
        print(f"case {opts.only}: {case.category} ({case.kind}): {case.args}")
        opts.start, opts.n = opts.only, 1
    out = Path(opts.out)
    if out.exists() and opts.only is None:
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    c = run_campaign(
        opts.seed, opts.n, opts.jobs, out, cats,
        minimize_budget=0 if opts.no_minimize else 40, rss_mb=opts.rss_mb, start=opts.start,
        progress=True,
    )  # fmt: skip
    if opts.only is not None:
        o = c.outcomes[0]
        print(f"class {o.cls}: {o.signature} (exit {o.returncode}, {o.host_s:.2f} s)")
        print(o.stderr[-3000:], end="")
    print(table(c))
    return 1 if any(e["class"] in BAD_CLASSES for e in c.signatures.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
