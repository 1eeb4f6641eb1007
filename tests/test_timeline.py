"""sim/timeline.hold: a wait without an event when nothing else can happen meanwhile, in the
same order as a simpy Timeout otherwise."""

import pytest
import simpy

import sim.timeline
from sim.timeline import check_simpy, hold


def _order(fast: bool, monkeypatch) -> list[tuple[str, float]]:
    monkeypatch.setattr(sim.timeline, "FAST", fast)
    env = simpy.Environment()
    log: list[tuple[str, float]] = []

    def a():
        yield from hold(env, 3)  # nothing due before 3: no event needed
        log.append(("a3", env.now))
        yield from hold(env, 2)  # b's timeout is due at 5 too, and was scheduled first
        log.append(("a5", env.now))
        yield from hold(env, 10)  # c's callback at 12 comes first
        log.append(("a15", env.now))

    def b():
        yield env.timeout(5)
        log.append(("b5", env.now))

    env.process(a())
    env.process(b())
    env.timeout(12).callbacks.append(lambda _e: log.append(("c12", env.now)))
    env.run()
    return log


def test_hold_keeps_the_order_of_timeouts(monkeypatch):
    expected = [("a3", 3), ("b5", 5), ("a5", 5), ("c12", 12), ("a15", 15)]
    assert _order(False, monkeypatch) == expected
    assert _order(True, monkeypatch) == expected


def test_hold_skips_the_event_only_when_nothing_is_due(monkeypatch):
    env = simpy.Environment()
    env.timeout(10)
    events = []

    def p():
        t = env.now
        g = hold(env, 4)
        events.append(next(g, None))  # fast: no event yielded, the clock moved
        events.append(env.now - t)
        g = hold(env, 6)  # due at 10, like the queued timeout: a real event
        events.append(type(next(g)).__name__)
        yield env.timeout(0)

    env.process(p())
    env.run()
    assert events == [None, 4, "Timeout"]


def test_simpy_self_test_passes_and_catches_a_wrong_version(monkeypatch):
    check_simpy()
    monkeypatch.setattr(sim.timeline, "_checked", False)
    monkeypatch.setattr(simpy, "__version__", "9.9")
    with pytest.raises(sim.ConfigError, match="simpy 9.9 is installed"):
        check_simpy()
