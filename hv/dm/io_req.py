"""I/O requests (ACRN hypervisor/dm/io_req.c): one port or MMIO access of a guest, from the VM
exit that decoded it to the value that goes back into the vCPU.

`emulate_io` decides, once, where a request goes:
- the hypervisor's own handler for that range (vm->emul_pio / vm->emul_mmio: the vUART, the
  vPIC, the vIOAPIC, ...), which completes it at once;
- for a post-launched VM, when no handler covers it, the Service VM, through the vCPU's slot
  of the VM's IOREQ page (`acrn_insert_request`): steps 2 to 8 of the I/O path;
- otherwise the default: a read gets all ones, a write is dropped (also for an access that
  straddles a handler's boundary, which ACRN refuses with -EIO).

The IOREQ page is real bytes in Service VM memory (layout in hv/public.py); HSM and the
device model read and write the same bytes. Every request that goes to the Service VM has a
step record (sim/stats.py StepLatency), kept by the request's id: the hypervisor stamps its
steps on the record it holds, the Service VM's side stamps its own through the id that the
slot carries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from acrn_sim.hv import public as P
from acrn_sim.hv.common.event import wait_event_ioreq
from acrn_sim.sim.engine import MASK64

IoRead = Callable[[object, int, int], int]  # (vcpu, address, size) -> value
IoWrite = Callable[[object, int, int, int], None]  # (vcpu, address, size, value)

# The nine steps of a request through the Service VM, by number: the short names that the
# statistics (`io_requests`), --report and the trace give them; a step lasts until the next one,
# and step 10 is the guest's next instruction (docs/architecture.md has the functions).
STEP_NAMES = {
    1: "vm_exit",  # the exit; pio_instr_vmexit_handler / ept_violation_vmexit_handler decode
    2: "insert_request",  # acrn_insert_request: PENDING in the slot, the upcall
    3: "hsm_isr",  # HSM's interrupt handler queues the dispatch work
    4: "hsm_dispatch",  # PROCESSING, the device model's I/O thread woken
    5: "dm_handle",  # the device model finds the device and calls its emulation
    6: "dm_emulate",  # the device writes the result into the slot
    7: "notify_finish",  # COMPLETE, HC_NOTIFY_REQUEST_FINISH (unless the VM polls)
    8: "io_complete",  # dm_emulate_io_complete: the value back to the vCPU, slot FREE
    9: "vm_entry",  # vcpu_resume: RIP past the instruction, VM entry
}

# Who completed a request
BY_HV, BY_DEFAULT, BY_HSM, BY_DM = "hypervisor", "default", "hsm", "device model"


def all_ones(size: int) -> int:
    return MASK64 >> (64 - 8 * size)


_UNKNOWN = object()  # IoEmul.find: not looked up yet
ALL_ONES = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFF_FFFF, 8: MASK64}  # all_ones of each access size


@dataclass(frozen=True)
class IoRange:
    name: str
    base: int
    length: int
    read: IoRead
    write: IoWrite
    # (vcpu, IoReq) -> True when this request is not the handler's after all and goes to the
    # Service VM (the vPCI of a post-launched VM forwards other devices' PCICFG accesses)
    forward: Callable[[object, IoReq], bool] | None = None


class IoEmul:
    """A VM's hypervisor-emulated port and MMIO ranges (vm->emul_pio, vm->emul_mmio)."""

    def __init__(self) -> None:
        self.pio: list[IoRange] = []
        self.mmio: list[IoRange] = []
        # (table id, address, size) -> what `find` answered: a guest uses few ports and
        # ranges, and an unclaimed one would scan the whole table at each access
        self._found: dict[tuple[int, int, int], IoRange | None | bool] = {}

    def register_pio(self, name: str, base: int, length: int, read: IoRead, write: IoWrite,
                     forward: Callable[[object, IoReq], bool] | None = None):  # fmt: skip
        self.pio.append(IoRange(name, base, length, read, write, forward))
        self._found.clear()

    def register_mmio(self, name: str, base: int, length: int, read: IoRead, write: IoWrite):
        self.mmio.append(IoRange(name, base, length, read, write))
        self._found.clear()

    def find(self, table: list[IoRange], addr: int, size: int) -> IoRange | None | bool:
        """The range of `table` (self.pio or self.mmio) that covers the access; False if it
        straddles a boundary; None if none."""
        key = (id(table), addr, size)
        found = self._found.get(key, _UNKNOWN)
        if found is not _UNKNOWN:
            return found
        end = addr + size
        found = None
        for r in table:
            base = r.base
            if base < end and addr < base + r.length:  # they overlap
                found = r if base <= addr and end <= base + r.length else False
                break
        self._found[key] = found
        return found


class IoReq:
    """One access (ACRN struct io_request): its type, direction, address, size and value, its
    id (given when it goes to the Service VM: its IOREQ number in this run), who completed it,
    and its step record (the cycle and the function of each step of the I/O path)."""

    __slots__ = (
        "io_type",
        "direction",
        "address",
        "size",
        "value",
        "start",
        "id",
        "completed_by",
        "record",
        "vcpu",
        "decoded_by",
        "pci",
    )

    def __init__(
        self,
        vcpu,
        io_type: int,
        direction: int,
        address: int,
        size: int,
        value: int,
        start: int,
        decoded_by: str,
    ) -> None:
        self.vcpu = vcpu
        self.decoded_by = decoded_by  # the exit handler that decoded the access (step 1)
        self.io_type = io_type
        self.direction = direction
        self.address = address
        self.size = size
        self.value = value
        self.start = start  # the cycle of the VM exit that made it (step 1)
        self.id: int | None = None
        self.completed_by: str | None = None
        self.record = None
        self.pci: tuple[int, int, int, int] | None = None  # PCICFG: (bus, dev, func, reg)

    def label(self) -> str:
        kind = P.IOREQ_TYPE_NAMES[self.io_type]
        read = self.direction == P.ACRN_IOREQ_DIR_READ
        return f"{kind} {self.address:#x}/{self.size} {'r' if read else 'w'}"

    # -- the step record (only for requests that go to the Service VM)
    def begin(self) -> None:
        """Step 1, at the VM exit: the request gets its id and its record."""
        v = self.vcpu
        hv = v.hv
        self.id = hv.next_ioreq_seq()
        traced = hv.tracer.enabled
        steps = hv.ioreq_steps
        # The texts are for the trace and for the requests the recorder keeps whole
        what = ""
        if traced or steps.keeping():
            what = f"VM exit ({self.label()}), the hypervisor decodes the access"
        self.record = steps.begin(self.id, v.vm.name, v.vcpu_id, self.start, self.decoded_by, what)
        if traced:
            self._instant(1, what, self.start)

    def stamp(self, n: int, by: str, what: str, value: int | None = None) -> None:
        """A step the hypervisor does (2, 8 and 9), now."""
        t = self.vcpu.env.now
        steps = self.record.steps
        if n not in steps:  # (StepRecord.stamp_at, without the call)
            steps[n] = t
            self.record.by[n] = by
            self.record.what[n] = what
        if self.vcpu.hv.tracer.enabled:
            self._instant(n, what, t, value)

    def finish(self, by: str) -> None:
        """Step 10: back in the guest."""
        v = self.vcpu
        t = v.env.now
        what = "back in the guest"
        if v.hv.tracer.enabled:
            self._instant(10, what, t)
        v.hv.ioreq_steps.finish(self.record, t, by, what)

    def _instant(self, n: int, what: str, t: int, value: int | None = None) -> None:
        v = self.vcpu
        args: dict = {"step": n, "req": self.id, "io": self.label()}
        if n == 1:
            args["reason"] = v.exit_reason
        elif n == 2:
            args["slot"] = v.vcpu_id
        elif n == 8:
            args["value"] = f"{value:#x}" if value is not None else ""
        v.hv.tracer.instant(
            "ioreq", f"step {n}: {what}", t, v.pcpu_id, v.vm.vm_id, v.vcpu_id, **args
        )


def emulate_io(vcpu, req: IoReq):
    """ACRN emulate_io: complete `req` in the hypervisor or by default, and return None; or,
    for the Service VM, return the wait for it (a generator: `yield from` it). Afterwards
    req.value holds what a read returns."""
    vm = vcpu.vm
    table = vm.io.pio if req.io_type == P.ACRN_IOREQ_TYPE_PORTIO else vm.io.mmio
    r = vm.io.find(table, req.address, req.size)
    mask = ALL_ONES[req.size]
    if r and r.forward is not None and vm.is_post_launched and r.forward(vcpu, req):
        return acrn_insert_request(vcpu, req)
    if r:  # hv_emulate_pio / hv_emulate_mmio
        if req.direction == P.ACRN_IOREQ_DIR_READ:
            req.value = r.read(vcpu, req.address, req.size) & mask
        else:
            r.write(vcpu, req.address, req.size, req.value & mask)
        req.completed_by = BY_HV
        return None
    if r is None and vm.is_post_launched:
        return acrn_insert_request(vcpu, req)
    # no handler, or one crossed at its boundary (-EIO): all ones to a read
    if req.direction == P.ACRN_IOREQ_DIR_READ:
        req.value = mask
    req.completed_by = BY_DEFAULT
    return None


def acrn_insert_request(vcpu, req: IoReq):
    """Generator: steps 2-8 of the I/O path. The slot must be FREE; the request goes in, with
    completion_polling from the VM's flag, then the state PENDING (after the request: the
    write barrier); the HSM upcall goes to Service VM vCPU 0. The vCPU then sleeps on
    VCPU_EVENT_IOREQ (notification mode) or spins on the slot (polling mode) until COMPLETE."""
    hv = vcpu.hv
    vm = vcpu.vm
    if vm.ioreq_page is None:
        vm.crash(vcpu, "I/O request before the device model set an IOREQ buffer")
        return
    slot = vm.ioreq_slots[vcpu.vcpu_id]
    req.begin()
    env = hv.env
    insert = vcpu.profile.cycles["ioreq_insert"]
    if not env.spend(insert):
        yield env.timeout(insert)
    if slot.processed != P.ACRN_IOREQ_STATE_FREE:
        vm.crash(vcpu, f"IOREQ slot {vcpu.vcpu_id} is not FREE (state {slot.processed})")
        return
    polling = vm.io_completion_polling
    slot.fill(req.io_type, req.direction, req.address, req.size, req.value, polling, req.id)
    if req.pci is not None:
        slot.set_pci(*req.pci)  # a PCICFG request: the hypervisor's vPCI latched the address
    slot.processed = P.ACRN_IOREQ_STATE_PENDING
    req.stamp(
        2, "acrn_insert_request", "request PENDING in the IOREQ slot, upcall to Service VM vCPU 0"
    )
    vcpu.req = req
    hv.fire_hsm_interrupt(vm)
    epoch = vcpu.epoch
    if polling:
        yield from spin_until_complete(vcpu, slot)
    else:
        yield from wait_event_ioreq(vcpu, slot)
    if vcpu.epoch != epoch:  # the VM was reset meanwhile: this request is gone with it
        return
    yield from dm_emulate_io_complete(vcpu, req, slot)


def spin_until_complete(vcpu, slot):
    """Polling mode: the vCPU spins on its pCPU reading the slot's state (ACRN loops on
    PAUSE). The model wakes at the write of COMPLETE, then adds the spin loop's
    `ioreq_poll_notice` to see it: the same bytes, without one event per PAUSE."""
    env = vcpu.env
    if slot.processed != P.ACRN_IOREQ_STATE_COMPLETE:
        ev = env.event()
        mem = vcpu.hv.mem
        addr = slot.state_address

        def on_write() -> None:
            if slot.processed == P.ACRN_IOREQ_STATE_COMPLETE and not ev.triggered:
                ev.succeed()

        mem.watch(addr, on_write)
        yield ev
        mem.unwatch(addr)
    yield from env.hold(vcpu.profile.cycles["ioreq_poll_notice"])


def dm_emulate_io_complete(vcpu, req: IoReq, slot: P.IoRequest):
    """Step 8 (ACRN dm_emulate_io_complete): the value of a read comes back from the slot,
    and the slot is FREE again. (The caller merges it into the vCPU: RAX for a port read,
    the instruction's destination for MMIO.)"""
    env = vcpu.env
    post_work = vcpu.profile.cycles["ioreq_post_work"]
    if not env.spend(post_work):
        yield env.timeout(post_work)
    result = slot.value if req.direction == P.ACRN_IOREQ_DIR_READ else None
    if result is not None:
        # The device model answers in the slot's full width (an unclaimed MMIO read gives
        # IOREQ_MMIO_INVAL, 64 bits of ones): what the access reads is its size's worth
        req.value = result = result & ALL_ONES[req.size]
    slot.processed = P.ACRN_IOREQ_STATE_FREE
    req.completed_by = req.record.completed_by or BY_DM
    req.stamp(
        8,
        "dm_emulate_io_complete",
        "hypervisor copies the result into the vCPU, slot FREE",
        result,
    )
