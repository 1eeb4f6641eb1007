"""The command line behaves the same everywhere: every option is documented, every scenario
script honours every output option, consoles print whole lines, and the progress line appears
on a terminal only."""

from __future__ import annotations

import argparse
import io
import json
import sys

import pytest

from acrn_sim.guests import image_path
from acrn_sim.scenarios import progress
from acrn_sim.scenarios.api import Simulation
from acrn_sim.scenarios.cli import Consoles, build_parser
from conftest import cli


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_help_documents_every_option():
    parser = build_parser()
    parsers = _subparsers(parser)
    for group in ("scenario", "lab"):
        parsers.update({f"{group} {k}": v for k, v in _subparsers(parsers[group]).items()})
    for name, sub in parsers.items():
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            label = action.option_strings or [action.dest]
            assert action.help and action.help != argparse.SUPPRESS, (name, label)
        text = sub.format_help()
        for action in sub._actions:
            for opt in action.option_strings:
                assert opt in text, (name, opt)
    run_help = cli("run", "--help").stdout
    assert "--profile FILE" in run_help and "timing profile" in run_help
    for opt in ("--csv DIR", "--plot DIR", "--stats FILE", "--no-progress"):
        assert opt in run_help


def test_a_script_with_several_configurations_honours_every_output(tmp):
    r = cli("run", "scenarios/rtvm_latency.py", "--set", "samples=10", "--report", "--explain",
            "--stats", str(tmp / "s.json"), "--trace", str(tmp / "t.json"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp.iterdir()) == [
        "s.dedicated.json", "s.shared.json", "t.dedicated.json", "t.shared.json"
    ]  # fmt: skip
    for run in ("shared", "dedicated"):
        assert f"configuration {run} ==" in r.stderr
    assert r.stderr.count("VM LATENCY_VM: VM exits") == 2  # --report, once per configuration
    assert "shared pCPU under BVT" in r.stdout and "dedicated pCPU, RTVM" in r.stdout
    shared = json.loads((tmp / "s.shared.json").read_text())
    assert shared["vms"]["BUSY_VM"]["exits"]["IO_INSTRUCTION"]["count"] > 0


def test_a_script_that_runs_itself_refuses_output_options(tmp):
    script = tmp / "own.py"
    script.write_text(
        "from acrn_sim.guests import image_path\n"
        "from acrn_sim.scenarios import pre_launched, service_vm\n"
        "def scenario(opts):\n"
        "    return [pre_launched(image_path('hello.elf')), service_vm()]\n"
        "def main(opts):\n    return 0\n"
    )
    r = cli("run", str(script), "--stats", str(tmp / "s.json"))
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "runs itself (main())" in r.stderr
    assert "--stats cannot apply" in r.stderr
    assert cli("run", str(script)).returncode == 0


def _consoles(show_all: bool, chunks) -> str:
    out = io.BytesIO()
    wrapper = io.TextIOWrapper(out)
    saved, sys.stdout = sys.stdout, wrapper
    try:
        c = Consoles(show_all, main="MAIN")
        for name, data in chunks:
            c(name, data)
        c.flush()
    finally:
        sys.stdout = saved
    return out.getvalue().decode()


def test_consoles_print_whole_lines_prefixed_by_their_vm():
    chunks = [("A", b"hel"), ("B", b"wor"), ("MAIN", b"main "), ("A", b"lo\r\nsecond"),
              ("B", b"ld\n"), ("MAIN", b"line\n"), ("A", b" line")]  # fmt: skip
    assert _consoles(True, chunks) == ("[A] hello\n[B] world\nmain line\n[A] second line\n")
    # without --consoles: the VM under study only, as it comes
    assert _consoles(False, chunks) == "main line\n"


def test_consoles_of_a_run_never_interleave_within_a_line():
    r = cli("run", "scenarios/automotive_sdc.py", "--set", "frames=2", "--consoles")
    assert r.returncode == 0, r.stderr
    names = ("Service_VM", "IVI", "REAR1", "REAR2")
    for line in r.stdout.splitlines():
        inner = line[1:] if line.startswith("[") else line
        assert not any(f"[{n}]" in inner for n in names), line


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _sim() -> Simulation:
    sim = Simulation()
    sim.add_service_vm()
    sim.add_user_vm(image_path("timing.elf"))
    return sim


def test_progress_line_on_a_terminal_only(monkeypatch):
    monkeypatch.setattr(progress, "FIRST_AFTER_S", 0.0)
    sim = _sim()
    hv = sim.boot()
    tty = _Tty()
    with progress.Progress(hv, stream=tty) as p:
        assert p.enabled
        hv.run(None)
    line = p.line(2.0)
    assert line.startswith("acrn-sim: simulated ") and line.endswith(" MIPS")
    assert " ms, host 2.0 s, " in line
    text = tty.getvalue()
    assert text == "" or (text.startswith("\r\x1b[K") and text.endswith("\r\x1b[K"))
    pipe = io.StringIO()
    with progress.Progress(_sim().boot(), stream=pipe) as p:
        assert not p.enabled
    assert pipe.getvalue() == ""


@pytest.mark.parametrize("args", [["--no-progress"], []])
def test_outputs_do_not_depend_on_the_progress_line(tmp, args):
    r = cli("run", "guests/images/timing.elf", "--stats", str(tmp / "s.json"), *args)
    assert r.returncode == 0 and "MIPS" not in r.stderr + r.stdout


def test_bad_output_directories_are_refused_before_the_run(tmp):
    (tmp / "file").write_text("")
    for opt in ("--csv", "--plot"):
        r = cli("run", "guests/images/hello.elf", opt, str(tmp / "file"))
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
        assert "is not a directory" in r.stderr and r.stdout == ""  # nothing ran
