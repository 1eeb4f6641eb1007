"""The Service VM kernel model (guests/service_vm/kernel.py): interrupt handlers run in
interrupt context, ahead of every task, as a Linux hard IRQ does."""

from __future__ import annotations

from collections import deque
from types import SimpleNamespace

from acrn_sim.guests.service_vm.kernel import PREEMPT_GRANULE, ServiceVmKernel
from acrn_sim.hv.common.hv_main import service_vm_software
from acrn_sim.sim.stats import StepLatency
from acrn_sim.sim.timeline import Timeline
from acrn_sim.sim.timing import TimingProfile
from acrn_sim.sim.trace import Tracer

VECTOR = 0xF3


def test_interrupt_handler_runs_before_queued_work():
    """Task A holds the vCPU for 2.5 granules, task B waits behind it. An interrupt that comes
    during A's first granule runs its handler at the end of that granule: before the rest of A
    and before B (as a task, the handler queued behind both)."""
    profile = TimingProfile.load()
    env = Timeline()
    pending: deque[int] = deque()
    # What the kernel has of its port (hv/service_vm_port.py) in this test
    port = SimpleNamespace(
        clock=env,
        profile=profile,
        tracer=Tracer(profile.tsc_hz, enabled=False),
        steps=StepLatency(),
        pending_vectors=pending,
        timer_at=lambda cycle, vector: None,
    )
    kernel = ServiceVmKernel(port)
    # What hv_main.service_vm_software reads of its vCPU
    vcpu = SimpleNamespace(env=env, pending_extint=pending, profile=profile)
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
    env.process(service_vm_software(vcpu, kernel, False))
    env.run()

    irq_at = PREEMPT_GRANULE + profile.cycles["inject_event"] + 300
    a_at = irq_at + 3 * PREEMPT_GRANULE // 2
    assert log == [("irq", irq_at), ("A", a_at), ("B", a_at + 1000)]
    assert not vcpu.pending_extint
