"""pCPU scheduling of vCPU threads (ACRN hypervisor/common/schedule.c, sched_noop.c,
sched_bvt.c, sched_prio.c).

Each pCPU has a `SchedControl` (ACRN struct sched_control) and one scheduler policy. A vCPU
thread is a thread object pinned to one pCPU; it is RUNNING (it holds the pCPU), RUNNABLE
(queued) or BLOCKED (HLT, waiting for I/O completion, paused). The calls match ACRN's:
  wake_thread    a blocked thread becomes runnable, with a reschedule request on its pCPU
  sleep_thread   the running thread blocks; the pCPU picks the next (or goes idle)
  schedule       at a reschedule request the running thread is charged and the policy picks
A reschedule request for a pCPU that runs guest code kicks it (ACRN's IPI): the slice ends and
the thread reaches `schedule` at its next VM entry (hv/common/hv_main.py).

Simplifications (docs/simplifications.md):
- One scheduler for every pCPU, chosen per scenario (ACRN picks it at build time).
- BVT without warp (sched_bvt.c keeps the warp fields but, in the 3.x releases, never applies them).
- The idle thread is not a thread here: an idle pCPU simply has no current thread.
"""

from __future__ import annotations

THREAD_STS_RUNNING, THREAD_STS_RUNNABLE, THREAD_STS_BLOCKED = 1, 2, 3
PRIO_IDLE, PRIO_LOW, PRIO_HIGH = 0, 1, 2
PRIORITIES = {"PRIO_LOW": PRIO_LOW, "PRIO_HIGH": PRIO_HIGH}

BVT_MCU_MS = 1
BVT_CSA_MCU = 5
BVT_WEIGHT_MIN, BVT_WEIGHT_MAX = 1, 128
BVT_VT_RATIO_MIN = 8
BVT_VT_RATIO_MAX = BVT_WEIGHT_MAX * BVT_VT_RATIO_MIN // BVT_WEIGHT_MIN  # 1024


class SchedNoop:
    """sched_noop.c: at most one thread per pCPU, no time slicing (checked at boot)."""

    name = "noop"
    shares_pcpus = False

    def __init__(self, ticks_per_ms: int) -> None:
        self.thread = None
        self.slice_timer: int | None = None  # never armed: no time slicing

    def wake(self, t, now: int) -> None:
        self.thread = t

    def sleep(self, t, now: int, running: bool) -> None:
        self.thread = None

    def pick_next(self, curr, now: int):
        return self.thread


class SchedPrio:
    """sched_prio.c: the queue is sorted highest priority first, FIFO within a level; the
    head runs. No time slice: a higher priority preempts at the reschedule a wake-up makes."""

    name = "prio"
    shares_pcpus = True

    def __init__(self, ticks_per_ms: int) -> None:
        self.queue: list = []  # runnable threads, the running one included
        self.slice_timer: int | None = None  # never armed: no time slice

    def wake(self, t, now: int) -> None:
        if t in self.queue:
            return
        # insert after every thread of the same or higher priority (FIFO within a level)
        i = 0
        while i < len(self.queue) and self.queue[i].sched_priority >= t.sched_priority:
            i += 1
        self.queue.insert(i, t)

    def sleep(self, t, now: int, running: bool) -> None:
        if t in self.queue:
            self.queue.remove(t)

    def pick_next(self, curr, now: int):
        if curr is not None and curr in self.queue:
            # the running thread keeps its place unless a strictly higher priority waits
            head = self.queue[0]
            return curr if head.sched_priority <= curr.sched_priority else head
        return self.queue[0] if self.queue else None


class SchedBvt:
    """sched_bvt.c (Borrowed Virtual Time, without warp): avt advances by run time x vt_ratio
    in MCU units (vt_ratio = 1024 / weight), the runqueue is sorted by evt = avt, the head
    runs, and with a second runnable thread a one-shot timer ends the slice after
    (evt2 - evt1) / vt_ratio + CSA MCUs. A woken thread's avt is raised to svt if it fell
    more than CSA behind (it cannot hoard credit while asleep)."""

    name = "bvt"
    shares_pcpus = True

    def __init__(self, ticks_per_ms: int) -> None:
        self.mcu = BVT_MCU_MS * ticks_per_ms
        self.queue: list = []  # sorted by evt, the running thread included
        self.svt = 0
        # The one-shot slice timer's expiry, set at each pick (None: not armed). An attribute
        # of every policy, read at each VM entry and each switch.
        self.slice_timer: int | None = None

    def _insert(self, t) -> None:
        i = 0
        while i < len(self.queue) and self.queue[i].bvt.evt <= t.bvt.evt:
            i += 1
        self.queue.insert(i, t)

    def wake(self, t, now: int) -> None:
        if t in self.queue:
            return
        d = t.bvt
        if d.avt <= self.svt - BVT_CSA_MCU:  # fell more than CSA behind while asleep
            d.avt = self.svt
        d.evt = d.avt
        self._insert(t)

    def sleep(self, t, now: int, running: bool) -> None:
        if running:
            self._update_vt(t, now)  # (it leaves the runqueue: no new place to find)
        if t in self.queue:
            self.queue.remove(t)

    def _update_vt(self, t, now: int) -> None:
        """update_vt: charge the running thread for the time since it was picked."""
        d = t.bvt
        if now > d.start_tsc:
            mcus, d.residual = divmod((now - d.start_tsc) * d.vt_ratio + d.residual, self.mcu)
            d.avt += mcus
            d.start_tsc = now
        d.evt = d.avt

    def _charge(self, t, now: int) -> None:
        """update_vt, then the thread's place in the runqueue by its new evt."""
        self._update_vt(t, now)
        if t in self.queue:
            self.queue.remove(t)
            self._insert(t)

    def pick_next(self, curr, now: int):
        if curr is not None:
            self._charge(curr, now)
        queue = self.queue
        self.slice_timer = None
        if not queue:
            return None
        first = queue[0]
        d = first.bvt
        self.svt = d.avt
        d.start_tsc = now
        if len(queue) > 1:
            delta_mcu = queue[1].bvt.evt - d.evt
            run_countdown = delta_mcu // d.vt_ratio + BVT_CSA_MCU
            self.slice_timer = now + run_countdown * self.mcu
        return first


class BvtData:
    """struct sched_bvt_data (without warp)."""

    def __init__(self, weight: int) -> None:
        self.weight = min(max(weight, BVT_WEIGHT_MIN), BVT_WEIGHT_MAX)
        self.vt_ratio = BVT_VT_RATIO_MAX // self.weight
        self.avt = self.evt = 0
        self.residual = 0
        self.start_tsc = 0


SCHEDULERS = {cls.name: cls for cls in (SchedNoop, SchedBvt, SchedPrio)}


class SchedControl:
    """One pCPU's scheduling state (ACRN struct sched_control): the current thread and the
    policy. Threads are Vcpu objects; they call wake/sleep/schedule from their simpy process."""

    def __init__(self, hv, pcpu_id: int, policy) -> None:
        self.hv = hv
        self.env = hv.env
        self.pcpu_id = pcpu_id
        self.policy = policy
        self.curr = None
        self.need_resched = False
        self._slice_gen = 0
        self._traced = hv.tracer.enabled  # the run queue's length as a counter in the trace
        # (cycle, the thread that holds the pCPU from then on, or None: idle), for the
        # statistics' per-pCPU timeline; one entry per switch
        self.history: list = []

    # -- the thread side (generators run inside the vCPU's simpy process)
    def wake_thread(self, t) -> bool:
        """A blocked thread becomes runnable. True when it must then wait for the pCPU, as
        `if sched.wake_thread(t): yield from sched.wait_for_turn(t)` (from an idle pCPU it
        usually holds it at once: then no generator is made)."""
        t.thread_status = THREAD_STS_RUNNABLE
        now = self.env.now
        policy = self.policy
        policy.wake(t, now)
        if self._traced:
            self._trace_runq(now)
        if self.curr is None:
            self._switch_to(policy.pick_next(None, now), True)  # from idle
        elif self.curr is not t:
            self.make_reschedule_request()
        return self.curr is not t or now < t.pcpu_ready  # (not has_pcpu(t), inline)

    def sleep_thread(self, t) -> None:
        """The running thread blocks (HLT, I/O wait, pause): the pCPU picks the next one."""
        t.thread_status = THREAD_STS_BLOCKED
        now = self.env.now
        policy = self.policy
        running = self.curr is t
        policy.sleep(t, now, running)
        if self._traced:
            self._trace_runq(now)
        if running:
            self.curr = None
            self._switch_to(policy.pick_next(None, now), True)  # from idle

    def exit_thread(self, t) -> None:
        """The thread ends (its VM went down): it leaves the pCPU and the runqueue."""
        if t.thread_status != THREAD_STS_BLOCKED:
            self.sleep_thread(t)

    def schedule(self, t):
        """At a reschedule request: charge the running thread and pick; a thread that loses
        the pCPU waits, runnable, until it is picked again."""
        self.need_resched = False
        nxt = self.policy.pick_next(t, self.env.now)
        if nxt is t:
            self._arm_slice_timer()  # _switch_to arms it otherwise
            return
        t.thread_status = THREAD_STS_RUNNABLE
        self._switch_to(nxt, False)
        yield from self.wait_for_turn(t)

    def make_reschedule_request(self) -> None:
        """ACRN make_reschedule_request: flag the pCPU; a remote pCPU gets a kick IPI, which
        ends the slice of guest code it is running."""
        self.need_resched = True
        if self.curr is not None:
            self.curr.kick("reschedule")

    # -- internals
    def _trace_runq(self, now: int) -> None:
        """The threads queued on this pCPU, the running one included (noop: its one thread)."""
        policy = self.policy
        queue = getattr(policy, "queue", None)
        n = len(queue) if queue is not None else int(getattr(policy, "thread", None) is not None)
        self.hv.tracer.counter("runq", self.pcpu_id, now, n)

    def _switch_to(self, nxt, from_idle: bool) -> None:
        self.curr = nxt
        self.history.append((self.env.now, nxt))
        if self.policy.slice_timer is None:
            self._slice_gen += 1  # (_arm_slice_timer with no timer to arm, without the call)
        else:
            self._arm_slice_timer()
        if nxt is None:
            return
        nxt.thread_status = THREAD_STS_RUNNING
        # A switch between two vCPU threads saves one context and loads another (VMPTRLD);
        # waking from idle is part of the wake-up path's own cost.
        self._grant_pcpu(nxt, 0 if from_idle else self.hv.profile.cycles["sched_switch"])
        if self.hv.tracer.enabled:
            self.hv.trace_sched(self, nxt)

    def _grant_pcpu(self, t, cost: int) -> None:
        """The policy picked thread `t`: it runs after the context switch's `cost`."""
        t.pcpu_ready = self.env.now + cost
        ev, t.turn_ev = t.turn_ev, None
        if ev is not None and not ev.triggered:
            ev.succeed()

    def wait_for_turn(self, t):
        """Generator: until the runnable thread `t` holds the pCPU (or blocks again): the
        switch to it completes, or the policy picks it."""
        env = self.env
        while (self.curr is not t or env.now < t.pcpu_ready) and (
            t.thread_status != THREAD_STS_BLOCKED
        ):
            if self.curr is t:
                yield from env.hold(t.pcpu_ready - env.now)
            else:
                t.turn_ev = env.event()
                yield t.turn_ev

    def _arm_slice_timer(self) -> None:
        """The BVT one-shot timer: at its expiry, a reschedule request."""
        self._slice_gen += 1
        due = self.policy.slice_timer
        if due is None:
            return
        gen = self._slice_gen

        def expire(_ev) -> None:
            if gen == self._slice_gen:
                self.make_reschedule_request()

        self.env.call_later(max(0, due - self.env.now), expire)
