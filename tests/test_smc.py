"""Self-modifying code: with --detect-smc a block whose bytes the guest rewrites is decoded
and costed again (guests/src/smc.c rewrites two XORs into two DIVs of the same length)."""

import re

import pytest
from test_fast_engine import assert_same_on_both_engines

from acrn_sim.sim import unicorn_engine
from acrn_sim.sim.timing import TimingProfile
from conftest import boot, cli

N = 200  # calls of the routine per run, in smc.c


def _cycles(console: str) -> tuple[int, int, int, int]:
    (c1, r1), (c2, r2) = re.findall(r"(\d+) cycles, result (\d+)", console)
    return int(c1), int(r1), int(c2), int(r2)


@pytest.mark.parametrize("hotpath", ["native", "python"])
def test_rewritten_block_is_costed_again(hotpath):
    run = boot("smc.elf", detect_smc=True, hotpath="auto" if hotpath == "native" else hotpath)
    c1, r1, c2, r2 = _cycles(run.console)
    assert run.vm.shutdown.exit_code == 0 and (r1, r2) == (7, 42)
    # the only difference between the two runs: two XORs (base) became two DIVs (div)
    prof = TimingProfile.load()
    assert c2 - c1 == N * 2 * (prof.klass("div") - prof.klass("base"))
    assert run.vm.vcpus[0].engine.smc_blocks_dropped >= 1


def test_cost_follows_the_profile():
    run = boot("smc.elf", detect_smc=True, costs=["div=61"])
    c1, _, c2, _ = _cycles(run.console)
    assert c2 - c1 == N * 2 * (61 - TimingProfile.load().klass("base"))


def test_without_detection_the_first_cost_stays():
    """The documented limit of the default: the new bytes run (result 42) but the block keeps
    the cost decoded from its first bytes, and no block is dropped."""
    run = boot("smc.elf")
    c1, r1, c2, r2 = _cycles(run.console)
    assert (r1, r2) == (7, 42)
    assert c1 == c2
    assert run.vm.vcpus[0].engine.smc_blocks_dropped == 0


def test_cli_option():
    p = cli("run", "guests/images/smc.elf", "--detect-smc")
    assert p.returncode == 0, p.stderr
    c1, _, c2, _ = _cycles(p.stdout)
    assert c2 > c1


@pytest.mark.skipif(not unicorn_engine.built(), reason="the fast engine is not built")
@pytest.mark.parametrize(
    "options",
    [[], ["--detect-smc"], ["--detect-smc", "--hotpath", "python"]],
    ids=["default", "detect-smc", "detect-smc-python"],
)
def test_same_on_both_engines(options, tmp_path):
    """The fast engine (Unicorn with the store-path patch) runs the rewritten routine and
    costs it exactly as PyPI's: console, statistics and trace byte for byte."""
    out = assert_same_on_both_engines(["guests/images/smc.elf", *options], tmp_path)
    assert out["status"] == 0
    c1, r1, c2, r2 = _cycles(out["stdout"].decode())
    assert (r1, r2) == (7, 42)
    assert (c2 > c1) == ("--detect-smc" in options)
