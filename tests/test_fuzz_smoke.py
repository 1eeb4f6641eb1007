"""A bounded fuzz campaign in the test suite: about 200 seeded cases through the real CLI.
It fails on any crash, hang or memory signature that is not a known, tracked bug
(tests/fuzz/known.py). `make fuzz` runs the long campaign."""

from __future__ import annotations

import pytest
from fuzz.cases import GENERATORS, make_case
from fuzz.known import is_known
from fuzz.runner import BAD_CLASSES, classify, run_campaign, table

SMOKE_SEED, SMOKE_N = 20240601, 200


def test_cases_are_a_function_of_seed_and_index():
    for i in range(30):
        a, b = make_case(7, i), make_case(7, i)
        assert (a.category, a.kind, a.args, a.files) == (b.category, b.kind, b.args, b.files)
    cats = {make_case(7, i).category for i in range(200)}
    assert cats == {c for c, g in GENERATORS.items() if g is not None}


@pytest.mark.parametrize("seed", [1, 2026])
def test_a_long_campaign_generates_every_case(seed):
    """Generating a case never fails, so a campaign cannot die part-way: seed 2026's case
    generator once made a --cost tsc_hz of 5,000 digits, more than int() converts, and the
    runner stopped after about 4,000 of 10,000 cases."""
    for index in range(10_000):
        make_case(seed, index)


def test_classification():
    assert classify(0, "", None, "k", 10)[0] == "clean"
    assert (
        classify(124, "acrn-sim: simulated-time limit reached at 1.000 us\n", None, "k", 10)[0]
        == "clean"
    )
    assert classify(125, "acrn-sim: VM X: triple fault: ...\n", None, "k", 10)[0] == "guest_error"
    assert classify(2, "acrn-sim: error: bad size 'x'\n", None, "k", 10)[0] == "guest_error"
    tb = 'Traceback (most recent call last):\n  File "/x/y.py", line 3, in f\nKeyError: 5\n'
    assert classify(1, tb, None, "k", 10) == ("crash", "KeyError at ?")
    line = ("acrn-sim: internal error in VM A at cycle 5: OverflowError: big "
            "(hv/instr_emul.py:261 in _string_iteration); please report it\n")  # fmt: skip
    assert classify(70, line, None, "k", 10) == (
        "crash", "OverflowError at hv/instr_emul.py:261 in _string_iteration"
    )  # fmt: skip
    assert classify(-11, "", None, "k", 10) == ("crash", "signal SIGSEGV")
    assert classify(None, "acrn-sim: interrupted at cycle 99\n", "hang", "k", 10)[1].startswith(
        "hang: simulated time passed"
    )
    assert classify(None, "acrn-sim: interrupted at cycle 5\n", "hang", "k", 10)[1].startswith(
        "hang: slow"
    )
    assert classify(-9, "", "hang-kill", "k", 10)[1].startswith("hang: no answer to Ctrl-C")
    assert classify(130, "", "hang", "k", 10)[1].startswith("hang: slow")
    assert classify(None, "", "memory", "k", 10)[0] == "memory"


@pytest.mark.timeout(600)
def test_fuzz_smoke():
    # (a lower floor under the hang bound than a campaign's: slow fault storms, which are
    # known, would otherwise take most of the minute)
    c = run_campaign(SMOKE_SEED, SMOKE_N, jobs=2, minimize_budget=0, min_bound_s=2.5)
    print(table(c))
    new = {s: e for s, e in c.signatures.items() if e["class"] in BAD_CLASSES and not is_known(s)}
    first = {s: e["first"] for s, e in new.items()}
    assert not new, (
        f"new fuzz findings (seed {SMOKE_SEED}; rerun one with `python -m tests.fuzz.runner "
        f"--seed {SMOKE_SEED} --only INDEX`): {first}\n{table(c)}"
    )
    assert len(c.outcomes) == SMOKE_N
