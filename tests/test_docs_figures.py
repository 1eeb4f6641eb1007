"""The docs say what the commands print: scenarios/docs_figures.py makes every figure the README
and docs/ quote from a command, and --check fails when one of them no longer matches."""

from __future__ import annotations

import shutil

import pytest

from acrn_sim.scenarios import docs_figures
from acrn_sim.scenarios.docs_figures import FIGURES, DocsError, regions, update
from conftest import ROOT


def _copy(tmp):
    shutil.copy(ROOT / "README.md", tmp / "README.md")
    shutil.copytree(ROOT / "docs", tmp / "docs")
    return tmp


def _fig(name: str):
    return next(f for f in FIGURES if f.name == name)


@pytest.mark.timeout(1800)
def test_every_quoted_figure_is_what_its_command_prints():
    assert update(ROOT, FIGURES, write=False) == []


def test_a_wrong_quote_is_found(tmp):
    root = _copy(tmp)
    text = (root / "README.md").read_text()
    start, end = regions(text, "README.md")["round-trips"]
    fig = text[start:end]
    wrong = fig.replace(" cycles (", "0 cycles (", 1)  # one number off
    assert wrong != fig
    (root / "README.md").write_text(text[:start] + wrong + text[end:])
    assert update(root, [_fig("round-trips")], write=False) == ["README.md: round-trips"]
    assert docs_figures.main(["--check", "--root", str(root), "--only", "round-trips"]) == 1
    # rewriting puts the command's figure back
    assert update(root, [_fig("round-trips")], write=True) == ["README.md: round-trips"]
    assert (root / "README.md").read_text() == text


def test_a_file_line_that_moved_is_found(tmp):
    root = _copy(tmp)
    path = root / "docs" / "architecture.md"
    text = path.read_text()
    path.write_text(text.replace("| hv/common/hv_main.py:", "| hv/common/hv_main.py:1", 1))
    assert update(root, [_fig("nine-steps")], write=False) == ["docs/architecture.md: nine-steps"]


def test_broken_markers_are_one_line_errors(tmp):
    root = _copy(tmp)
    path = root / "docs" / "architecture.md"
    path.write_text(path.read_text().replace("<!-- /figure -->", "", 1))
    with pytest.raises(DocsError, match="has no <!-- /figure -->"):
        update(root, [_fig("nine-steps")], write=False)
    assert docs_figures.main(["--check", "--root", str(root), "--only", "nine-steps"]) == 2
    assert docs_figures.main(["--only", "no-such-figure"]) == 2
