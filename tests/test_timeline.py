"""sim/timeline.Timeline.hold: a wait without an event when nothing else can happen
meanwhile, in the same order as a simpy Timeout otherwise."""

import pytest
import simpy

from acrn_sim.sim import ConfigError, timeline
from acrn_sim.sim.timeline import Timeline, check_simpy


def _order(fast: bool, monkeypatch) -> list[tuple[str, float]]:
    monkeypatch.setattr(timeline, "FAST", fast)
    env = Timeline()
    log: list[tuple[str, float]] = []

    def a():
        yield from env.hold(3)  # nothing due before 3: no event needed
        log.append(("a3", env.now))
        yield from env.hold(2)  # b's timeout is due at 5 too, and was scheduled first
        log.append(("a5", env.now))
        yield from env.hold(10)  # c's callback at 12 comes first
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
    env = Timeline()
    env.timeout(10)
    events = []

    def p():
        t = env.now
        g = env.hold(4)
        events.append(next(g, None))  # fast: no event yielded, the clock moved
        events.append(env.now - t)
        g = env.hold(6)  # due at 10, like the queued timeout: a real event
        events.append(type(next(g)).__name__)
        yield env.timeout(0)

    env.process(p())
    env.run()
    assert events == [None, 4, "Timeout"]


def _wake_order(fast: bool, monkeypatch) -> tuple[list[tuple[str, float]], set[str]]:
    """Two sleepers woken from timeout callbacks: `a` at 5, when nothing else is due, `b` at
    10, when another process's timeout (scheduled before b's wake-up) is due at 10 too."""
    monkeypatch.setattr(timeline, "FAST", fast)
    env = Timeline()
    log: list[tuple[str, float]] = []
    waits: dict[str, simpy.Event] = {}
    queued: set[str] = set()  # which wake-up events went through the event queue
    schedule = env.schedule

    def spy(event, priority=1, delay=0):
        queued.update(name for name, ev in waits.items() if ev is event)
        schedule(event, priority, delay)

    env.schedule = spy

    def sleeper(name: str):
        waits[name] = env.event()
        yield waits[name]
        log.append((name, env.now))
        yield env.timeout(1)
        log.append((f"{name}+1", env.now))

    def other():
        yield env.timeout(10)
        log.append(("other", env.now))

    env.timeout(5).callbacks.append(lambda _e: env.wake(waits["a"], tail_call=True))
    env.timeout(10).callbacks.append(lambda _e: env.wake(waits["b"], tail_call=True))
    for p in (sleeper("a"), sleeper("b"), other()):
        env.process(p)
    env.run()
    return log, queued


def test_a_wake_up_in_a_callback_runs_at_once_only_when_it_would_be_next(monkeypatch):
    expected = [("a", 5), ("a+1", 6), ("other", 10), ("b", 10), ("b+1", 11)]
    log, queued = _wake_order(False, monkeypatch)
    assert log == expected and queued == {"a", "b"}
    log, queued = _wake_order(True, monkeypatch)
    assert log == expected and queued == {"b"}  # a's ran at once; b's waited its turn


def test_simpy_self_test_passes_and_catches_a_wrong_version(monkeypatch):
    check_simpy()
    monkeypatch.setattr(timeline, "_checked", False)
    monkeypatch.setattr(simpy, "__version__", "9.9")
    with pytest.raises(ConfigError, match="simpy 9.9 is installed"):
        check_simpy()


def test_call_later_runs_in_the_order_a_timeout_would():
    """call_later's entries take the same place in the queue as a Timeout made at the same
    moment: among callbacks due at one cycle, creation order decides, whichever made them."""
    env = Timeline()
    log: list[tuple[str, float]] = []
    env.timeout(4).callbacks.append(lambda _e: log.append(("timeout", env.now)))
    env.call_later(4, lambda _e: log.append(("alarm", env.now)))
    env.call_later(2, lambda _e: log.append(("early", env.now)))
    env.timeout(4).callbacks.append(lambda _e: log.append(("timeout 2", env.now)))
    env.run()
    assert log == [("early", 2), ("timeout", 4), ("alarm", 4), ("timeout 2", 4)]
    with pytest.raises(ValueError, match="negative delay"):
        env.call_later(-1, lambda _e: None)
