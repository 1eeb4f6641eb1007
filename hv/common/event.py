"""A vCPU's waits (ACRN hypervisor/common/event.c wait_event/signal_event on
vcpu->events[VCPU_EVENT_IOREQ] and [VCPU_EVENT_VIRTUAL_INTERRUPT]).

A waiting vCPU thread sleeps (sleep_thread: its pCPU picks another thread or goes idle) until
the event is signalled; then it is woken (wake_thread) and waits for its pCPU again. A signal
from another pCPU reaches the vCPU's pCPU as an IPI, and the thread runs again after the
`vcpu_wakeup` cycles that the IPI and the switch from the idle thread take.
"""

from __future__ import annotations

from acrn_sim.hv.common.trace import time_buckets
from acrn_sim.hv.public import ACRN_IOREQ_STATE_COMPLETE


def wake_after_ipi(vcpu, ev) -> None:
    """Fire `ev`, which the vCPU's thread waits on, `vcpu_wakeup` cycles from now: the IPI to
    the vCPU's pCPU and the switch from its idle thread."""
    env = vcpu.env

    def wake(_entry) -> None:
        if not ev.triggered:
            env.wake(ev, tail_call=True)

    env.call_later(vcpu.profile.cycles["vcpu_wakeup"], wake)


def _running_again(vcpu):
    """Generator: after a wait, the thread is runnable again and waits for its pCPU."""
    if vcpu.sched.wake_thread(vcpu):
        yield from vcpu.sched.wait_for_turn(vcpu)


def wait_event_ioreq(vcpu, slot):
    """Notification mode: sleep on VCPU_EVENT_IOREQ until HC_NOTIFY_REQUEST_FINISH signals it;
    then the slot must read COMPLETE (ACRN acrn_insert_request)."""
    while slot.processed != ACRN_IOREQ_STATE_COMPLETE:
        vcpu.ioreq_wait = vcpu.env.event()
        vcpu.sched.sleep_thread(vcpu)
        yield vcpu.ioreq_wait
        vcpu.ioreq_wait = None
        if not vcpu.is_running():
            return
        yield from _running_again(vcpu)


def signal_event_ioreq(vcpu) -> None:
    """From HC_NOTIFY_REQUEST_FINISH: wake the vCPU that waits for its request."""
    ev = vcpu.ioreq_wait
    if ev is not None and not ev.triggered:
        wake_after_ipi(vcpu, ev)


def wait_event_virtual_interrupt(vcpu):
    """HLT: the thread sleeps until an interrupt is pending (vcpu.signal_event_virtual_
    interrupt). The wait is halted time, and is taken out of the HLT exit's handling time."""
    env = vcpu.env
    vcpu.wait_ev = env.event()
    vcpu.wait_start = env.now
    vcpu.sched.sleep_thread(vcpu)
    yield vcpu.wait_ev
    vcpu.wait_ev = None
    account_wait(vcpu)
    if vcpu.is_running():
        yield from _running_again(vcpu)


def wait_native_halt(vcpu):
    """The guest halted its own (passed-through) CPU: time passes as halted, with no exit."""
    vcpu.wait_ev = vcpu.env.event()
    vcpu.wait_start = vcpu.env.now  # end_of_run counts a wait still in progress
    yield vcpu.wait_ev
    vcpu.wait_ev = None
    account_wait(vcpu, in_exit=False)


def account_wait(vcpu, in_exit: bool = True) -> None:
    """Count the wait since wait_start as halted time; a wait inside an exit (HLT's handler) is
    also taken out of that exit's handling time."""
    now = vcpu.env.now
    waited = now - vcpu.wait_start
    vcpu.wait_start = now
    if in_exit:
        vcpu.halted += waited
    (vcpu.time or time_buckets(vcpu))["halted"] += waited


def end_of_run(vcpu) -> None:
    """The run is over: count a wait still in progress as halted time."""
    if vcpu.wait_ev is not None and not vcpu.wait_ev.triggered:
        account_wait(vcpu)
