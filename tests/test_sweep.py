"""Parameter sweeps on Dask (scenarios/sweep.py): a row per point, deterministic points,
resumable, and the same table from a LocalCluster and from separate scheduler and worker
processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from conftest import ROOT, cli

pd = pytest.importorskip("pandas")
pytest.importorskip("dask.distributed")

PARAMS = ["--param", "dm_wakeup=12000,24000,36000,48000", "--param", "hsm_isr=1000,1500,3000"]


def _sweep(out, *extra: str):
    p = cli("sweep", "guests/images/timing.elf", *PARAMS, "--out", str(out), *extra)
    assert p.returncode == 0, p.stderr
    return p


def _table(path):
    df = pd.read_parquet(path)
    return df.sort_values(["dm_wakeup", "hsm_isr"]).reset_index(drop=True)


def test_twelve_points_on_a_local_cluster_resume_and_plot(tmp_path):
    out = tmp_path / "results.parquet"
    _sweep(out, "--workers", "2")
    df = _table(out)
    assert len(df) == 12 and set(df["status"]) == {0}
    rt = df.groupby("dm_wakeup")["io.POST_VM1.uart.total.p50"].first()
    # the device model's wake-up is in every round trip: 12,000 more cycles each step
    assert list(rt.diff().dropna().astype(int)) == [12000, 12000, 12000]
    again = _sweep(out, "--resume")
    assert "12 points, 12 already in" in again.stderr and "[#" not in again.stderr
    assert _table(out).equals(df)
    png = tmp_path / "sweep.png"
    p = cli("plot", str(out), "--x", "dm_wakeup", "-o", str(png))
    assert p.returncode == 0 and png.stat().st_size > 1000


def test_a_failed_point_is_recorded_and_the_others_go_on(tmp_path):
    out = tmp_path / "r.parquet"
    p = cli("sweep", "guests/images/timing.elf", "--param", "mem=8M,32M,99999G",
            "--out", str(out), "--workers", "1")  # fmt: skip
    assert p.returncode == 0, p.stderr
    df = pd.read_parquet(out).set_index("mem")
    assert df.loc["32M", "status"] == 0 and df.loc["99999G", "status"] == 2
    assert "--mem" in df.loc["99999G", "error"]


def test_an_unknown_parameter_is_a_one_line_error(tmp_path):
    p = cli("sweep", "guests/images/timing.elf", "--param", "warp=1,2", "--out",
            str(tmp_path / "x.parquet"))  # fmt: skip
    assert p.returncode == 2 and "--param warp: not a cost" in p.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_separate_scheduler_and_worker_give_the_same_table(tmp_path):
    local = tmp_path / "local.parquet"
    _sweep(local, "--workers", "2")
    port = _free_port()
    addr = f"tcp://127.0.0.1:{port}"
    bindir = os.path.dirname(sys.executable)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    sched = subprocess.Popen(
        [os.path.join(bindir, "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
         "--no-dashboard"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    worker = None
    try:
        time.sleep(3)
        worker = subprocess.Popen(
            [os.path.join(bindir, "dask"), "worker", addr, "--nworkers", "2", "--nthreads", "1",
             "--no-dashboard"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        remote = tmp_path / "remote.parquet"
        _sweep(remote, "--scheduler", addr)
        assert _table(remote).equals(_table(local))
    finally:
        for p in (worker, sched):
            if p is not None:
                p.terminate()
                p.wait(timeout=30)
