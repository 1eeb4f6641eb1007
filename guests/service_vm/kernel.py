"""A minimal model of the Service VM kernel: tasks (kernel work items and the device model's
threads) run one at a time on Service VM vCPU 0, each step costing cycles of that vCPU.

A task is a generator that yields operations:
  int          consume that many cycles of the vCPU (a step of work)
  Wait(wq)     sleep on a wait queue until woken (the task re-checks its condition)
  Call(...)    make a hypercall; the return value is sent back into the task
Interrupts claimed by a handler (the HSM upcall) run it in interrupt context (a Linux hard IRQ):
at once, ahead of every task, without sleeping; it spends cycles (yields ints) and queues tasks.

Tasks have priorities (Linux scheduling classes, simplified): the runnable task with the highest
priority runs next, FIFO within a priority, and a task that consumes cycles is preempted at the
next `PREEMPT_GRANULE` boundary when a higher-priority task became runnable (a Linux
preemptible kernel's wake-up preemption). Kernel work (the HSM interrupt and its workqueue)
runs above every user thread. Timers (`add_timer`) fire through the local APIC timer vector.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Generator
from dataclasses import dataclass

KERNEL_PRIO = 10  # kernel work: above every user-space thread's priority
# A device model's threads by its User VM's scenario <priority> (with priority inheritance)
USER_PRIORITIES = {"PRIO_LOW": 1, "PRIO_HIGH": 2}
LOCAL_TIMER_VECTOR = 0xEC  # Linux's local APIC timer vector
# Preemption granularity: a task's long step runs in pieces this long (about 5 us).
PREEMPT_GRANULE = 12_000


@dataclass
class Wait:
    wq: WaitQueue


@dataclass
class Call:
    hcall_id: int
    param1: int = 0
    param2: int = 0


class WaitQueue:
    def __init__(self, kernel: ServiceVmKernel, name: str) -> None:
        self.kernel = kernel
        self.name = name
        self.waiters: list[Task] = []

    def wake_up(self) -> None:
        waiters, self.waiters = self.waiters, []
        for task in waiters:
            self.kernel.make_runnable(task)


class Task:
    def __init__(self, name: str, gen: Generator, priority: int) -> None:
        self.name = name
        self.gen = gen
        self.priority = priority
        self.send_value = None
        self.remaining = 0  # cycles left of a step cut short by preemption


class ServiceVmKernel:
    """The Service VM's kernel, as the hypervisor sees it (hv/service_vm_port.py Software). It
    reaches the hypervisor only through its port: hypercalls, its memory, its interrupts and
    its clock."""

    def __init__(self, port) -> None:
        self.port = port
        self.profile = port.profile
        self.cycles = port.profile.cycles  # a task yields self.cycles["name"]: those cycles
        self.tracer = port.tracer
        self.steps = port.steps  # the I/O path's step recorder (a measuring instrument)
        self.runq: list[Task] = []
        # vector -> (name, handler); a handler is a generator that yields only cycles
        self.irq_handlers: dict[int, tuple[str, Callable[[], Generator]]] = {}
        self.request_irq(LOCAL_TIMER_VECTOR, "local_timer", self._timer_tick)
        self._timers: list[tuple[int, int, Callable[[], None]]] = []
        self._timer_seq = 0
        self.workload_preempted = False
        self._pool_next = 0
        self._pool_end = 0

    # ---- memory: a bump allocator over the RAM the Service VM's guest image leaves free
    # (the device model's hugetlb pages and buffers come from it)
    def set_pool(self, start: int, end: int) -> None:
        self._pool_next, self._pool_end = start, end

    def alloc(self, size: int, align: int = 0x1000) -> int | None:
        gpa = (self._pool_next + align - 1) & ~(align - 1)
        if gpa + size > self._pool_end:
            return None
        self._pool_next = gpa + size
        return gpa  # never handed out before, so still zero, like fresh kernel pages

    # ---- scheduling
    def spawn(self, name: str, gen: Generator, priority: int = KERNEL_PRIO) -> Task:
        task = Task(name, gen, priority)
        self.make_runnable(task)
        return task

    def make_runnable(self, task: Task) -> None:
        self.runq.append(task)

    def _pick(self) -> Task:
        runq = self.runq
        if len(runq) == 1:
            return runq.pop()
        best = max(t.priority for t in runq)
        task = next(t for t in runq if t.priority == best)  # FIFO within a priority
        runq.remove(task)
        return task

    def _claims_any(self, pending) -> bool:
        """Whether a vector in the vCPU's (non-empty) pending queue has a handler here. The run
        loop tests the queue for emptiness itself first: it is empty at nearly every step."""
        return any(v in self.irq_handlers for v in pending)

    def _preempted_by(self, task: Task) -> bool:
        runq = self.runq  # (usually empty: no generator then)
        return bool(runq) and any(t.priority > task.priority for t in runq)

    # ---- timers: hrtimers on the local APIC timer (one interrupt per expiry)
    def add_timer(self, cycle: int, fn: Callable[[], None]) -> None:
        """Call fn() from the timer interrupt at `cycle` (absolute simulated time)."""
        self._timer_seq += 1
        heapq.heappush(self._timers, (cycle, self._timer_seq, fn))
        self.port.timer_at(cycle, LOCAL_TIMER_VECTOR)

    def _timer_tick(self) -> Generator:
        now = self.now()
        while self._timers and self._timers[0][0] <= now:
            _, _, fn = heapq.heappop(self._timers)
            fn()
        yield from ()  # (a handler is a generator; this one takes no modelled time)

    def now(self) -> int:
        return self.port.clock.now

    # ---- interrupts
    def request_irq(self, vector: int, name: str, handler: Callable[[], Generator]) -> None:
        """Linux request_irq: `handler()` runs in interrupt context when `vector` comes in;
        `name` labels its span in the trace."""
        self.irq_handlers[vector] = (name, handler)

    # ---- what the hypervisor calls (hv/service_vm_port.py Software)
    def claims_vector(self, vector: int) -> bool:
        return vector in self.irq_handlers

    def interrupt(self, vector: int, preempted: bool):
        """Generator: the vector's handler, in interrupt context. It runs to its end with
        interrupts off (another one waits in the vCPU's queue), ahead of any task."""
        # A user-space thread woken now competes with the preempted workload (see
        # wakeup_latency).
        self.workload_preempted = preempted
        port = self.port
        clock = port.clock
        start = clock.now
        name, handler = self.irq_handlers[vector]
        for cycles in handler():
            if not clock.spend(cycles):
                yield clock.timeout(cycles)
        if self.tracer.enabled:
            port.trace_span(name, start)

    def wakeup_latency(self) -> int:
        """Extra scheduling delay for a woken user-space thread when the VM's own workload
        was running (service_vm_sched_latency); none when the vCPU was idle."""
        return self.cycles["service_vm_sched_latency"] if self.workload_preempted else 0

    def has_work(self) -> bool:
        return bool(self.runq)

    def run(self):
        port = self.port
        clock = port.clock
        tracer = self.tracer
        pending = port.pending_vectors
        while self.runq:
            task = self._pick()
            start = clock.now
            while True:
                if task.remaining:  # a long step, in pieces
                    step = min(task.remaining, PREEMPT_GRANULE)
                    task.remaining -= step
                    if not clock.spend(step):
                        yield clock.timeout(step)
                    if task.remaining and (
                        (pending and self._claims_any(pending)) or self._preempted_by(task)
                    ):
                        self.runq.insert(0, task)  # first again within its priority
                        break
                    continue
                if pending and self._claims_any(pending):  # the interrupt handler runs first
                    self.runq.insert(0, task)
                    break
                try:
                    op = task.gen.send(task.send_value)
                except StopIteration:
                    break
                task.send_value = None
                if type(op) is int:
                    if op > PREEMPT_GRANULE:
                        task.remaining = op  # in pieces: a higher priority may come in
                        continue
                    if op and not clock.spend(op):
                        yield clock.timeout(op)
                elif isinstance(op, Wait):
                    op.wq.waiters.append(task)
                    break
                elif isinstance(op, Call):
                    task.send_value = yield from port.hypercall(op.hcall_id, op.param1, op.param2)
                else:
                    raise TypeError(f"task {task.name} yielded {op!r}")
            if tracer.enabled:
                port.trace_span(task.name, start)
            if pending and self._claims_any(pending):
                return  # back to the vCPU's loop, which runs the handler and calls run again
