"""The Service VM kernel model (guests/service_vm/kernel.py): interrupt handlers run in
interrupt context, ahead of every task, as a Linux hard IRQ does."""

from __future__ import annotations

from collections import deque
from types import SimpleNamespace

from guests.service_vm.kernel import PREEMPT_GRANULE, ServiceVmKernel
from hv.guest.vcpu import Vcpu
from sim.stats import StepLatency
from sim.timeline import Timeline
from sim.timing import TimingProfile
from sim.trace import Tracer

VECTOR = 0xF3


def test_interrupt_handler_runs_before_queued_work():
    """Task A holds the vCPU for 2.5 granules, task B waits behind it. An interrupt that comes
    during A's first granule runs its handler at the end of that granule: before the rest of A
    and before B (as a task, the handler queued behind both)."""
    profile = TimingProfile.load()
    env = Timeline()
    kernel = ServiceVmKernel(
        SimpleNamespace(vm_id=0), profile, Tracer(profile.tsc_hz, enabled=False), StepLatency()
    )
    # What Vcpu._run_paravirt reads of its vCPU (and kernel.run: env and the pending queue)
    vcpu = SimpleNamespace(env=env, pending_extint=deque(), profile=profile)
    log: list[tuple[str, int]] = []

    def task(name: str, cycles: int):
        yield cycles
        log.append((name, env.now))

    def handler():
        yield 300
        log.append(("irq", env.now))

    kernel.request_irq(VECTOR, "test_irq", handler)
    kernel.spawn("A", task("A", 5 * PREEMPT_GRANULE // 2))
    kernel.spawn("B", task("B", 1000))
    env.timeout(PREEMPT_GRANULE // 2).callbacks.append(lambda _: vcpu.pending_extint.append(VECTOR))
    env.process(Vcpu._run_paravirt(vcpu, kernel))
    env.run()

    irq_at = PREEMPT_GRANULE + profile.cycles["inject_event"] + 300
    a_at = irq_at + 3 * PREEMPT_GRANULE // 2
    assert log == [("irq", irq_at), ("A", a_at), ("B", a_at + 1000)]
    assert not vcpu.pending_extint
