"""Letting simulated time pass on the simpy timeline, without an event when none is needed.

A vCPU thread or a Service VM task that spends cycles yields `hold(env, cycles)`. When nothing
else is scheduled before the end of that wait, and nothing can be, since every other actor
acts only through scheduled events, the wait is exactly equivalent to a simpy Timeout that
would be the next event processed. `hold` then moves the clock itself and returns at once.
It saves an event, a heap push and pop, and a process resume. An I/O round trip has about
twenty such waits. Otherwise it yields a real Timeout. Either way the same things happen at
the same simulated times in the same order, so traces are unchanged (tests/test_timeline.py).

It reads simpy's private clock and queue (`_now`, `_queue`), so simpy is pinned and
`check_simpy` verifies that layout once at start-up.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from heapq import heappush

import simpy
from simpy.events import NORMAL

from sim import ConfigError

PINNED_SIMPY = "4.1.2"
FAST = True  # False: always a real Timeout (tests compare both ways)


def advance(env: simpy.Environment, cycles: int) -> bool:
    """Let `cycles` pass at once if nothing else can happen meanwhile; False when the caller
    must wait on a real Timeout instead. The hottest callers use it as
    `if not advance(env, c): yield env.timeout(c)`, which is `hold` without a generator."""
    end = env._now + cycles
    queue = env._queue
    # Strictly later: an event due at `end` itself was scheduled first and must run first.
    if FAST and (not queue or queue[0][0] > end):
        env._now = end
        return True
    return False


class _Alarm:
    """A timeline entry that only calls back: all that Environment.step reads of an event it
    pops is `callbacks` (taken, then set to None) and `_ok` (False would mean a failure)."""

    __slots__ = ("callbacks", "_ok")

    def __init__(self, callback: Callable[[_Alarm], None]) -> None:
        self.callbacks: list | None = [callback]
        self._ok = True


def call_later(env: simpy.Environment, delay: int, callback: Callable[[_Alarm], None]) -> None:
    """callback(entry) `delay` cycles from now: what `env.timeout(delay).callbacks.append(
    callback)` does, at the same place in the queue (priority NORMAL, the next event id), so
    the order of everything on the timeline is the same. A Timeout costs a bound-class call,
    an Event's set-up and Environment.schedule; a timer callback (an upcall, a wake-up IPI,
    a slice timer) needs none of it."""
    if delay < 0:
        raise ValueError(f"negative delay {delay}")
    heappush(env._queue, (env._now + delay, NORMAL, next(env._eid), _Alarm(callback)))


def succeed_in_callback(env: simpy.Environment, ev: simpy.Event) -> None:
    """ev.succeed() from a timeline callback (`Hypervisor.after`, `call_later`), as that callback's
    last action. When nothing else is due at this cycle, the event would be the very next
    one processed: its callbacks (the waiting process) run at once instead, without a heap
    push and pop and an Environment.step. Otherwise it is scheduled as usual. Either way the
    same things happen in the same order (tests/test_timeline.py).
    Not for use inside a process: the woken one would run before the caller's next step."""
    queue = env._queue
    if not FAST or (queue and queue[0][0] <= env._now):
        ev.succeed()
        return
    if ev._value is not simpy.events.PENDING:
        raise RuntimeError(f"{ev} has already been triggered")
    ev._ok = True
    ev._value = None
    callbacks, ev.callbacks = ev.callbacks, None  # as Environment.step does
    for callback in callbacks:
        callback(ev)


def hold(env: simpy.Environment, cycles: int) -> Generator:
    """Generator: `cycles` of simulated time pass for the calling process."""
    if not advance(env, cycles):
        yield env.timeout(cycles)


_checked = False


def check_simpy() -> None:
    """Verify the private fields `hold` relies on, with a clear error if they moved."""
    global _checked
    if _checked:
        return
    version = getattr(simpy, "__version__", "?")
    if version != PINNED_SIMPY:
        raise ConfigError(
            f"simpy {version} is installed but acrn-sim needs exactly {PINNED_SIMPY} "
            f"(it reads the private clock and queue): pip install simpy=={PINNED_SIMPY}"
        )
    env = simpy.Environment()
    env.timeout(7)
    queue = getattr(env, "_queue", None)
    if not (isinstance(queue, list) and queue and queue[0][0] == 7 and env._now == 0):
        raise ConfigError(f"simpy {version}: the event queue layout is not the expected one")
    seen: list[float] = []

    def proc():
        yield from hold(env, 3)  # fast: the queue's next event is at 7
        seen.append(env.now)
        yield from hold(env, 4)  # not fast: an event is due at 7 itself
        seen.append(env.now)

    env.process(proc())
    env.run()
    if seen != [3, 7]:
        raise ConfigError(f"simpy {version}: the clock does not behave as expected ({seen})")
    # call_later's entries and Timeouts due at one time run in the order they were made
    order: list[str] = []
    env.timeout(5).callbacks.append(lambda _ev: order.append("timeout"))
    call_later(env, 5, lambda _ev: order.append("alarm"))
    env.timeout(5).callbacks.append(lambda _ev: order.append("timeout 2"))
    env.run()
    if order != ["timeout", "alarm", "timeout 2"] or env._now != 12:
        raise ConfigError(f"simpy {version}: the event queue does not behave as expected")
    _checked = True
