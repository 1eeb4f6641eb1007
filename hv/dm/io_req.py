"""The hypervisor's side of IOREQ (ACRN hypervisor/dm/io_req.c): an I/O that no hypervisor
handler claims, from a post-launched VM, goes to the Service VM through the vCPU's slot of the
VM's IOREQ page.

Steps 1, 2, 8 and 9 of the I/O path (DESIGN.md) happen here:
  2. acrn_insert_request: the slot must be FREE; copy type and request in, set
     completion_polling from the VM's flag, then state PENDING; fire the HSM upcall (vector 0xF3
     by default) into Service VM vCPU 0.
     Notification mode: the vCPU sleeps on VCPU_EVENT_IOREQ until HC_NOTIFY_REQUEST_FINISH.
     Polling mode: the vCPU spins on its pCPU until the slot reads COMPLETE.
  8. dm_emulate_io_complete: copy the value back (PIO/PCICFG reads merge into RAX under the
     access size), then state FREE.
The page holds real bytes in host memory; the Service VM reads and writes the same bytes.
"""

from __future__ import annotations

from hv import public as P


class IoreqTrace:
    """The nine steps of one request, as trace events carrying their step numbers, and as
    the step recorder's entries (hv.ioreq_steps). Created at step 1."""

    def __init__(self, vcpu, seq: int, io: tuple[int, int, int, int], at: int) -> None:
        hv = vcpu.hv
        self.vcpu = vcpu
        self.seq = seq
        self.io = io  # (type, address, size, direction)
        self.traced = hv.tracer.enabled
        steps = hv.ioreq_steps
        # Texts are for the trace and for the requests the recorder keeps whole; the
        # recorder times every request, so the steps are recorded either way.
        detailed = self.traced or steps.keeping()
        what = f"VM exit ({self.label()}), the hypervisor decodes the access" if detailed else ""
        self.record = steps.start(vcpu.vm.name, vcpu.vcpu_id, seq, at, what)
        if self.traced:
            self._instant(1, what, at)

    def label(self) -> str:
        rtype, address, size, direction = self.io
        kind = P.IOREQ_TYPE_NAMES[rtype]
        return f"{kind} {address:#x}/{size} {'r' if direction == 0 else 'w'}"

    def step(self, n: int, what: str, value: int | None = None) -> None:
        """Steps 2, 8 and 9 (`value`: what step 8 copies back into the vCPU)."""
        t = self.vcpu.env.now
        if self.traced:
            self._instant(n, what, t, value)
        r = self.record  # (StepLatency's record layout, written here without a call)
        r["steps"][n] = t
        r["what"][n] = what

    def finish(self) -> None:
        """Step 10, back in the guest."""
        v = self.vcpu
        t = v.env.now
        what = "back in the guest"
        if self.traced:
            self._instant(10, what, t)
        v.hv.ioreq_steps.finish(v.vm.name, v.vcpu_id, self.record, t, what)

    def _instant(self, n: int, what: str, t: int, value: int | None = None) -> None:
        v = self.vcpu
        args: dict = {"step": n, "req": self.seq, "io": self.label()}
        if n == 1:
            args["reason"] = v.exit_reason
        elif n == 2:
            args["slot"] = v.vcpu_id
        elif n == 8:
            args["value"] = f"{value:#x}" if value is not None else ""
        v.hv.tracer.instant(
            "ioreq", f"step {n}: {what}", t, v.pcpu_id, v.vm.vm_id, v.vcpu_id, **args
        )


def emulate_via_service_vm(
    vcpu, rtype: int, address: int, size: int, direction: int, value: int, exit_start: int
):
    """Generator: send one request to the Service VM and wait for it; returns the value read."""
    hv = vcpu.hv
    vm = vcpu.vm
    prof = vcpu.profile
    if vm.ioreq_page is None:
        vm.crash(vcpu, "I/O request before the device model set an IOREQ buffer")
        return 0
    slot = vm.ioreq_slots[vcpu.vcpu_id]
    tr = IoreqTrace(vcpu, hv.next_ioreq_seq(), (rtype, address, size, direction), exit_start)
    env = hv.env
    insert = prof.cycles["ioreq_insert"]
    if not env.spend(insert):
        yield env.timeout(insert)
    # --- step 2: acrn_insert_request
    if slot.processed != P.ACRN_IOREQ_STATE_FREE:
        vm.crash(vcpu, f"IOREQ slot {vcpu.vcpu_id} is not FREE (state {slot.processed})")
        return 0
    polling = vm.io_completion_polling
    slot.fill(rtype, direction, address, size, value, polling)
    slot.processed = P.ACRN_IOREQ_STATE_PENDING  # after the request: the write barrier
    tr.step(2, "request PENDING in the IOREQ slot, upcall to Service VM vCPU 0")
    vcpu.current_ioreq = tr
    hv.fire_hsm_interrupt(vm, tr)
    epoch = vcpu.epoch
    if polling:
        # ACRN polls the state with PAUSE; the vCPU keeps its pCPU (no wake-up needed).
        yield from vcpu.spin_until_complete(slot)
    else:
        yield from vcpu.wait_event_ioreq(slot)
    if vcpu.epoch != epoch:  # the VM was reset meanwhile: this request is gone with it
        return 0
    # --- step 8: post-work
    post_work = prof.cycles["ioreq_post_work"]
    if not env.spend(post_work):
        yield env.timeout(post_work)
    result = slot.value if direction == P.ACRN_IOREQ_DIR_READ else None
    slot.processed = P.ACRN_IOREQ_STATE_FREE
    tr.step(8, "hypervisor copies the result into the vCPU, slot FREE", result)
    vcpu.current_ioreq = tr
    return result
