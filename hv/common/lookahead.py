"""How far a vCPU may run guest code ahead of the timeline: the model's synchronization of
pCPUs (ACRN has none to do: real pCPUs run in parallel).

A slice of guest code runs in one go at the cycle it starts (sim/engine.py), and its time then
passes on the timeline. An event that another pCPU sends the vCPU meanwhile (an IPI, an
interrupt a device model raises, a reschedule or pause kick) can only be taken once the
slice's code has run, so it would be late by up to the slice's length. A slice therefore ends
no later than the earliest cycle at which another pCPU could send the vCPU an event, plus
`sync_lookahead` (a profile parameter, default 2,400 cycles = 1 us at 2.4 GHz): no event
from another pCPU is taken more than that, and one basic block, after its true time.

Who can send a vCPU an event (`senders`): the other vCPUs of its VM (IPIs); for a
post-launched VM, the Service VM's vCPU 0 (where its device models and VM manager run); for
the Service VM's vCPU 0, every post-launched VM's vCPUs (their I/O requests are upcalls).
Such a sender acts next:
- at the end of its running slice, if it runs guest code (that code has already run);
- no earlier than the next event on the timeline, if it is blocked (only an event wakes it);
- at any moment, if it is between two slices (in the hypervisor, in the Service VM's
  software, or waiting for its pCPU): the slice then runs `sync_lookahead`.
With no possible sender at all (a pre-launched VM alone on its pCPUs), and whenever every
sender is blocked with nothing due, a slice runs freely, to its quantum.
"""

from __future__ import annotations

from acrn_sim.hv.common.schedule import THREAD_STS_BLOCKED
from acrn_sim.hv.guest.vcpu import RUNNING


def senders(vcpu) -> tuple:
    """The vCPUs of other pCPUs that can send `vcpu` an event, for the VMs there are now
    (kept in vcpu.senders until a VM is created or goes: Hypervisor.vms_changed)."""
    if vcpu.senders is not None:
        return vcpu.senders
    hv = vcpu.hv
    vm = vcpu.vm
    found = [v for v in vm.vcpus if v is not vcpu]
    svc = hv.service_vm()
    if vm.is_post_launched and svc is not None:
        found.append(svc.vcpus[0])
    elif vm.is_service_vm and vcpu.vcpu_id == 0:
        found += [v for other in hv.vms if other.is_post_launched for v in other.vcpus]
    vcpu.senders = tuple(v for v in found if v.pcpu_id != vcpu.pcpu_id)
    return vcpu.senders


def horizon(vcpu, found: tuple) -> int | None:
    """The earliest cycle at which one of `found` (senders(vcpu)) could send `vcpu` an event;
    None: none can before something else happens that ends the slice anyway."""
    env = vcpu.env
    now = env.now
    earliest = None
    for s in found:
        if s.state is not RUNNING:
            continue  # not started, or its VM is down: a start is itself an event
        end = s.slice_end
        if end is not None and end > now:
            at = end
        elif s.thread_status == THREAD_STS_BLOCKED:
            at = env.next_event_time()
            if at is None:
                continue
        else:
            return now
        if earliest is None or at < earliest:
            earliest = at
    return earliest
