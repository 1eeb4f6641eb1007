"""`pip install .` (not editable) into a fresh virtual environment, then the API and the CLI
from another directory: the package installs under the one name acrn_sim, with the guest images
and example scenarios as its data, and no generic top-level module (sim, hv, guests,
scenarios) lands in site-packages."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tracked_files() -> list[str]:
    p = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip("not a git checkout: the install test copies the tracked files")
    return p.stdout.splitlines()


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with `pip install .` done from a copy of the tracked files (so the build
    leaves nothing in the checkout). The dependencies come from this environment through a
    path entry, which does not run its .pth files, so the editable install here stays out."""
    base = tmp_path_factory.mktemp("install")
    src = base / "src"
    for f in _tracked_files():
        if (ROOT / f).is_file():
            (src / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, src / f)
    env_dir = base / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    purelib = subprocess.run(
        [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    # this environment's site-packages, after the new one's own
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(purelib) / "outer_deps.pth").write_text("\n".join(sorted(deps)) + "\n")
    (base / "before.txt").write_text("\n".join(sorted(p.name for p in Path(purelib).iterdir())))
    # as a user does it: the build in an isolated environment (setuptools from the index)
    p = subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", str(src)],
                       capture_output=True, text=True, timeout=600)  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    return env_dir


def _run(installed: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={"PATH": f"{installed / 'bin'}:/usr/bin:/bin"})  # fmt: skip


def test_the_api_runs_a_two_vm_scenario_from_another_directory(installed, tmp_path):
    code = (
        "import acrn_sim, sys\n"
        "assert 'site-packages' in acrn_sim.__file__, acrn_sim.__file__\n"
        "sim = acrn_sim.Simulation()\n"
        "sim.add_service_vm()\n"
        "sim.add_user_vm(acrn_sim.image('bench.elf'), pcpus=[1], memory='16M',\n"
        "                cmdline='pio 3000', watched=False)\n"
        "sim.add_user_vm(acrn_sim.image('timing.elf'), pcpus=[2], memory='16M')\n"
        "io = sim.run().io_latency('POST_VM2', 'uart').round_trip\n"
        "print(io.p50, io.p99)\n"
        "for name in ('sim', 'hv', 'guests', 'scenarios'):\n"
        "    assert name not in sys.modules, name\n"
    )
    p = _run(installed, [str(installed / "bin" / "python"), "-c", code], tmp_path)
    assert p.returncode == 0, p.stderr
    p50, p99 = map(int, p.stdout.split())
    assert 0 < p50 <= p99  # the round trip through the Service VM, in cycles


def test_site_packages_holds_one_name(installed):
    purelib = next((installed / "lib").glob("python3*/site-packages"))
    before = set((installed.parent / "before.txt").read_text().split("\n"))
    added = {p.name for p in purelib.iterdir()} - before
    assert added == {"acrn_sim", "acrn_sim-0.1.0.dist-info"}
    pkg = purelib / "acrn_sim"
    for data in ("guests/images/hello.elf", "guests/images/linux/bzImage",
                 "sim/profiles/default.toml", "sim/schemas/stats.schema.json",
                 "scenarios/two_user_vms.xml", "scenarios/two_user_vms.images",
                 "scenarios/xml/shared.xml"):  # fmt: skip
        assert (pkg / data).is_file(), data


def test_the_cli_runs_shipped_images_and_scenarios_from_another_directory(installed, tmp_path):
    acrn_sim = str(installed / "bin" / "acrn-sim")
    p = _run(installed, [acrn_sim, "run", "guests/images/hello.elf"], tmp_path)
    assert p.returncode == 0, p.stderr
    assert "Hello from an ACRN guest!" in p.stdout
    p = _run(installed, [acrn_sim, "run", "scenarios/two_user_vms.xml", "--until", "5ms"],
             tmp_path)  # fmt: skip
    assert p.returncode == 124, p.stderr  # the time limit: it ran
    p = _run(installed, [acrn_sim, "run", "no/such.elf"], tmp_path)
    assert p.returncode == 2
    assert (
        p.stderr.strip().splitlines()[-1] == "acrn-sim: error: guest image not found: no/such.elf"
    )


def test_the_running_interpreter_is_not_disturbed():
    """The other tests run children; this process still imports the checkout's package."""
    import acrn_sim

    assert Path(acrn_sim.__file__).resolve().parent == ROOT / "acrn_sim"
    assert sys.modules["acrn_sim"] is acrn_sim
