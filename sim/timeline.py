"""The one clock: simulated time as an integer count of TSC cycles, on a simpy event queue.

Everything that happens in a run happens on one `Timeline`. Time moves in one way per concern:
- a process (a vCPU thread, the Service VM's software on its vCPU) spends cycles with
  `spend` (the test, usable inline on the hottest paths: `if not tl.spend(c): yield
  tl.timeout(c)`) or its generator form `hold`;
- a timer (an interrupt due later, an IPI in flight, a device's period) is `call_later`;
- a sleeping process is woken with `wake`.

`spend` lets the cycles pass at once when nothing else is scheduled before their end: every
other actor acts only through scheduled events, so nothing can happen meanwhile, and moving the
clock is exactly what a Timeout that would be the next event processed would do. It saves an
event, a heap push and pop, and a process resume. Otherwise the caller waits on a real Timeout.
Either way the same things happen at the same cycles in the same order, so traces do not
depend on it (tests/test_timeline.py compares both ways on every guest).

This module is the only one that reads simpy's private state (the clock `_now`, the queue
`_queue`, the event-id counter `_eid`, the active process): simpy is pinned, and `check_simpy`
verifies that layout once at start-up. Everyone else reads the clock as `now`.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from heapq import heappush

import simpy
from simpy.events import NORMAL, PENDING

from acrn_sim.sim import ConfigError

# A process that a kick cuts into receives this in its wait (simpy's, re-exported: nothing
# outside this module imports simpy)
Interrupt = simpy.Interrupt

PINNED_SIMPY = "4.1.2"
FAST = True  # False: always a real Timeout and a queued wake-up (tests compare both ways)


class _Alarm:
    """A queue entry that only calls back: all that Environment.step reads of an event it
    pops is `callbacks` (taken, then set to None) and `_ok` (False would mean a failure)."""

    __slots__ = ("callbacks", "_ok")

    def __init__(self, callback: Callable[[_Alarm], None]) -> None:
        self.callbacks: list | None = [callback]
        self._ok = True


class Timeline(simpy.Environment):
    """simpy's Environment, with the clock in cycles and the three ways time moves.

    The clock is a plain attribute, `now`: the model reads it several dozen times per I/O
    round trip, and simpy's `now` is a property (a call each time). simpy itself reads and
    writes `_now` (once or twice per event), which this class maps onto `now`."""

    now = 0  # (an instance attribute from __init__ on: this shadows simpy's property)

    @property
    def _now(self) -> int:
        return self.now

    @_now.setter
    def _now(self, cycle: int) -> None:
        self.now = cycle

    def spend(self, cycles: int) -> bool:
        """Let `cycles` pass at once if nothing else can happen meanwhile; False when the
        caller must wait on `self.timeout(cycles)` instead."""
        end = self.now + cycles
        queue = self._queue
        # Strictly later: an event due at `end` itself was scheduled first and must run first.
        if FAST and (not queue or queue[0][0] > end):
            self.now = end
            return True
        return False

    def hold(self, cycles: int) -> Generator:
        """Generator: `cycles` pass for the calling process (`spend`, else a Timeout)."""
        if not self.spend(cycles):
            yield self.timeout(cycles)

    def call_later(self, delay: int, callback: Callable[[_Alarm], None]) -> None:
        """callback(entry) `delay` cycles from now. The entry goes where a Timeout made now
        would go (priority NORMAL, the next event id), so the order of everything on the
        timeline is the same as with `timeout(delay).callbacks.append(callback)`, without the
        Timeout's set-up: a timer needs none of it."""
        if delay < 0:
            raise ValueError(f"negative delay {delay}")
        heappush(self._queue, (self.now + delay, NORMAL, next(self._eid), _Alarm(callback)))

    def wake(self, ev: simpy.Event, tail_call: bool = False) -> None:
        """Wake whoever waits on `ev` (if nobody triggered it yet). `tail_call`: the caller is
        a timer callback (call_later) and this is its last action. When nothing else is due at
        this cycle, the event would be the very next one processed, so its waiter runs at once
        instead of through the queue; otherwise, or from inside a process (where the woken one
        would run before the caller's next step), it is scheduled as usual."""
        if ev._value is not PENDING:
            return
        queue = self._queue
        if (
            not tail_call
            or not FAST
            or self._active_proc is not None
            or (queue and queue[0][0] <= self.now)
        ):
            ev.succeed()
            return
        ev._ok = True
        ev._value = None
        callbacks, ev.callbacks = ev.callbacks, None  # as Environment.step does
        for callback in callbacks:
            callback(ev)

    def next_event_time(self) -> int | None:
        """When the next scheduled event is due (None: nothing is scheduled)."""
        queue = self._queue
        return queue[0][0] if queue else None


_checked = False


def check_simpy() -> None:
    """Verify the private fields the Timeline relies on, with a clear error if they moved."""
    global _checked
    if _checked:
        return
    version = getattr(simpy, "__version__", "?")
    if version != PINNED_SIMPY:
        raise ConfigError(
            f"simpy {version} is installed but acrn-sim needs exactly {PINNED_SIMPY} "
            f"(it reads the private clock and queue): pip install simpy=={PINNED_SIMPY}"
        )
    tl = Timeline()
    tl.timeout(7)
    queue = getattr(tl, "_queue", None)
    if not (isinstance(queue, list) and queue and queue[0][0] == 7 and tl.now == 0):
        raise ConfigError(f"simpy {version}: the event queue layout is not the expected one")
    if "now" not in vars(tl) or vars(tl).get("_now") is not None:  # the clock is ours
        raise ConfigError(f"simpy {version}: the clock is not where Timeline keeps it")
    seen: list[float] = []

    def proc():
        yield from tl.hold(3)  # fast: the queue's next event is at 7
        seen.append(tl.now)
        yield from tl.hold(4)  # not fast: an event is due at 7 itself
        seen.append(tl.now)
        if tl._active_proc is None:  # wake() tells a process from a callback by it
            seen.append(-1)

    tl.process(proc())
    tl.run()
    if seen != [3, 7] or tl._active_proc is not None:
        raise ConfigError(f"simpy {version}: the clock does not behave as expected ({seen})")
    # call_later's entries and Timeouts due at one time run in the order they were made
    order: list[str] = []
    tl.timeout(5).callbacks.append(lambda _ev: order.append("timeout"))
    tl.call_later(5, lambda _ev: order.append("alarm"))
    tl.timeout(5).callbacks.append(lambda _ev: order.append("timeout 2"))
    tl.run()
    if order != ["timeout", "alarm", "timeout 2"] or tl.now != 12:
        raise ConfigError(f"simpy {version}: the event queue does not behave as expected")
    _checked = True
