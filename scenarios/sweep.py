"""`acrn-sim sweep`: run the cross product of parameter values on Dask, one row per point.

    acrn-sim sweep TARGET --param NAME=V1,V2,... [--param ...] --out results.parquet
                   [--workers N | --scheduler tcp://HOST:8786] [--resume] [-- RUN OPTIONS]

TARGET is anything `acrn-sim run` takes (an image, a scenario script, an ACRN scenario XML).
A parameter NAME is, in this order of lookup:
- a cost of the timing profile, or `tsc_hz` (`--cost NAME=V`, see `acrn-sim profile`);
- an option of `acrn-sim run`, with `-` or `_` (`--NAME V`; for a switch such as
  `service_vm_busy` or `polling`, the values are yes/no);
- a scenario script's own parameter (`--set NAME=V`, listed in its PARAMS).

Each point is one run of the command line in a fresh process on a Dask worker: deterministic,
so the same point gives the same row wherever it runs. A point that fails is recorded with its
error, and the others go on. The results file is written after every point that finishes, so a
sweep interrupted half-way resumes from it (`--resume` runs only the points it lacks).

A row holds the parameters, `status` (the run's exit status), `error` (a failure's last line),
`sim_cycles`, and the metrics of the run's statistics, flattened: `io.VM.DEVICE.total.p50`
(cycles), `exits.VM.REASON.count`, ... and the `result KEY=VALUE` line a guest prints
(`result.KEY`). Dask and pandas/pyarrow are the optional `sweep` extra.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from acrn_sim.sim import ConfigError
from acrn_sim.sim.timing import TimingProfile

RUN_SWITCHES = ("service_vm_busy", "polling", "detect_smc", "consoles")
RUN_OPTIONS = ("mem", "cmdline", "cpu_affinity", "until", "scheduler", "seed", "load_order")
KEY_COLUMNS = ("status", "error")


def parse_params(specs: list[str]) -> dict[str, list[str]]:
    """NAME=V1,V2 -> {NAME: [V1, V2]}, in the order given."""
    params: dict[str, list[str]] = {}
    for spec in specs:
        name, eq, values = spec.partition("=")
        name = name.strip()
        if not eq or not name or not values:
            raise ConfigError(f"--param {spec!r}: expected NAME=V1,V2,...")
        if name in params:
            raise ConfigError(f"--param {name}: given twice")
        params[name] = [v.strip() for v in values.split(",") if v.strip()]
        if not params[name]:
            raise ConfigError(f"--param {spec!r}: no values")
    if not params:
        raise ConfigError("sweep: give at least one --param NAME=V1,V2,...")
    return params


def point_args(name: str, value: str, profile: TimingProfile, script_params: tuple) -> list[str]:
    """The `acrn-sim run` arguments that set one parameter."""
    if name in profile.costs or name in profile.classes or name == "tsc_hz":
        return ["--cost", f"{name}={value}"]
    key = name.replace("-", "_")
    if key in RUN_SWITCHES:
        if value not in ("yes", "no"):
            raise ConfigError(f"--param {name}: the values of a switch are yes or no")
        return [f"--{key.replace('_', '-')}"] if value == "yes" else []
    if key in RUN_OPTIONS:
        return [f"--{key.replace('_', '-')}", value]
    if name in script_params:
        return ["--set", f"{name}={value}"]
    raise ConfigError(
        f"--param {name}: not a cost of the timing profile, an option of `acrn-sim run`, "
        "or a parameter of the scenario script"
    )


def points(params: dict[str, list[str]]) -> list[dict[str, str]]:
    names = list(params)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*params.values())]


def flatten(stats: dict) -> dict[str, float]:
    """The metrics of a run's statistics, one column each."""
    out: dict[str, float] = {"sim_cycles": stats.get("sim_cycles", 0)}
    for vm, devices in sorted(stats.get("io_requests", {}).items()):
        for dev, steps in sorted(devices.items()):
            for step, summary in sorted(steps.items()):
                for k in ("count", "mean", "p50", "p99", "max"):
                    if k in summary:
                        out[f"io.{vm}.{dev}.{step}.{k}"] = summary[k]
    for vm, data in sorted(stats.get("vms", {}).items()):
        for reason, summary in sorted(data.get("exits", {}).items()):
            for k in ("count", "total_cycles", "p50", "p99"):
                out[f"exits.{vm}.{reason}.{k}"] = summary[k]
    return out


def guest_results(console: str) -> dict[str, float]:
    """The last `result KEY=VALUE ...` line a guest printed, as result.KEY columns."""
    lines = [ln for ln in console.splitlines() if ln.startswith("result ")]
    out: dict[str, float] = {}
    if lines:
        for kv in lines[-1].split()[1:]:
            k, _, v = kv.partition("=")
            try:
                out[f"result.{k}"] = int(v)
            except ValueError:
                continue
    return out


def run_point(argv: list[str], cwd: str) -> dict:
    """One point, on a worker: `acrn-sim run ARGV --stats FILE` in a fresh process."""
    with tempfile.TemporaryDirectory() as tmp:
        stats_file = os.path.join(tmp, "stats.json")
        p = subprocess.run(
            [sys.executable, "-m", "acrn_sim.scenarios.cli", "run", *argv, "--stats", stats_file],
            cwd=cwd,
            capture_output=True,
            text=True,
        )
        row: dict = {"status": p.returncode, "error": ""}
        if p.returncode not in (0, 124) or not os.path.exists(stats_file):
            last = [ln for ln in p.stderr.splitlines() if ln.strip()]
            row["error"] = last[-1] if last else f"exit status {p.returncode}"
        if os.path.exists(stats_file):
            with open(stats_file) as f:
                row.update(flatten(json.load(f)))
        row.update(guest_results(p.stdout))
        return row


class Results:
    """The results table, one row per point; the file is rewritten after every point."""

    def __init__(self, path: str, names: list[str], resume: bool) -> None:
        import pandas as pd  # the optional `sweep` extra

        self.pd = pd
        self.path = Path(path)
        self.names = names
        self.rows: list[dict] = []
        if resume and self.path.exists():
            try:
                old = pd.read_parquet(self.path)
            except Exception as e:
                raise ConfigError(f"--resume: cannot read {path}: {e}") from None
            if not set(names) <= set(old.columns):
                raise ConfigError(f"--resume: {path} was made with other parameters")
            self.rows = old.to_dict("records")

    def done(self) -> set[tuple[str, ...]]:
        return {tuple(str(r[n]) for n in self.names) for r in self.rows}

    def add(self, point: dict[str, str], row: dict) -> None:
        self.rows.append({**point, **row})
        self.write()

    def frame(self):
        df = self.pd.DataFrame(self.rows)
        if len(df):
            df = df.sort_values(self.names, kind="stable").reset_index(drop=True)
            front = [*self.names, *KEY_COLUMNS]
            df = df[front + sorted(c for c in df.columns if c not in front)]
        return df

    def write(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        self.frame().to_parquet(tmp, index=False)
        os.replace(tmp, self.path)


def run_sweep(opts) -> int:
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise ConfigError(
            "sweep needs Dask and pandas: pip install -e '.[sweep]' (the README's set-up has it)"
        ) from None
    params = parse_params(opts.param)
    profile = TimingProfile.load(opts.profile)
    script_params: tuple = ()
    if opts.target.endswith(".py"):
        from acrn_sim.scenarios.cli import load_script_params

        script_params = load_script_params(opts.target)
    base = [opts.target, *opts.run_args]
    todo = []
    results = Results(opts.out, list(params), opts.resume)
    done = results.done()
    for point in points(params):
        argv = base + [
            a for n, v in point.items() for a in point_args(n, v, profile, script_params)
        ]
        if tuple(point[n] for n in params) not in done:
            todo.append((point, argv))
    total = len(points(params))
    print(f"acrn-sim: sweep: {total} points, {total - len(todo)} already in {opts.out}",
          file=sys.stderr)  # fmt: skip
    if not todo:
        return 0
    if opts.scheduler:
        client = Client(opts.scheduler)
    else:
        cluster = LocalCluster(
            n_workers=opts.workers, threads_per_worker=1, processes=True, dashboard_address=None
        )
        client = Client(cluster)
    cwd = str(Path(__file__).resolve().parents[1])
    try:
        futures = {client.submit(run_point, argv, cwd, pure=False): point for point, argv in todo}
        finished = 0
        for future in as_completed(futures):
            point = futures[future]
            try:
                row = future.result()
            except Exception as e:  # a worker lost, say: recorded, the others go on
                row = {"status": -1, "error": f"{type(e).__name__}: {e}"}
            results.add(point, row)
            finished += 1
            _progress(finished, len(todo), sys.stderr)
    finally:
        client.close()
        if not opts.scheduler:
            cluster.close()
    failed = sum(1 for r in results.rows if r["status"] not in (0, 124))
    print(f"acrn-sim: sweep: {len(results.rows)} points in {opts.out}, {failed} failed",
          file=sys.stderr)  # fmt: skip
    return 0


def _progress(done: int, total: int, out) -> None:
    width = 30
    filled = width * done // total
    end = "\n" if done == total or not out.isatty() else "\r"
    out.write(f"  [{'#' * filled}{'.' * (width - filled)}] {done}/{total} points{end}")
    out.flush()


def plot_sweep(path: str, y: str | None, x: str | None, out: str) -> str:
    """A metric against a parameter, one line per value of the other parameters."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    df = pd.read_parquet(path)
    params = [c for c in df.columns if c not in KEY_COLUMNS and not _is_metric(c)]
    if not params:
        raise ConfigError(f"{path}: no parameter columns")
    x = x or params[0]
    if x not in params:
        raise ConfigError(f"--x {x}: not a parameter of {path} ({', '.join(params)})")
    metrics = [c for c in df.columns if _is_metric(c)]
    if y is None:  # the round trip of the device with the most requests
        p99 = [c for c in metrics if c.startswith("io.") and c.endswith(".total.p99")]
        y = max(p99, key=lambda c: (df[c[: -len("p99")] + "count"].max(), c), default=None)
        y = y or "sim_cycles"
    if y not in df.columns:
        raise ConfigError(f"--y {y}: not a column of {path}")
    others = [p for p in params if p != x]
    fig, ax = plt.subplots(figsize=(7, 4))
    groups = df.groupby(others) if others else [((), df)]
    for key, g in groups:
        g = g.sort_values(x, key=lambda s: pd.to_numeric(s, errors="coerce").fillna(0))
        label = ", ".join(
            f"{n}={v}"
            for n, v in zip(others, key if isinstance(key, tuple) else (key,), strict=False)
        )
        ax.plot(g[x].astype(str), g[y], marker="o", label=label or y)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _is_metric(column: str) -> bool:
    return column == "sim_cycles" or column.split(".")[0] in ("io", "exits", "result")
