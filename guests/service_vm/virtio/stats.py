"""What a virtio device counts and times, for `--report`, `--stats` and the tests: a measuring
instrument, not part of what ACRN does.

Per device, from the moment the driver sets DRIVER_OK (set-up accesses are not counted):
- requests: chains the device returned in the used ring (every queue);
- exits: the guest's accesses to the device's registers, each a VM exit that became an
  IOREQ; split into those the device model served (`ioreqs_dm`) and those HSM's in-kernel
  ioeventfd client served (`ioreqs_kernel`);
- kicks: notifications that reached the back end (through either path), polls;
- interrupts: MSI-X messages sent and INTx assertions, and the interrupt decisions that the
  driver's suppression turned down;
- device-model wake-ups: how often one of the device model's threads had to be woken for
  this device: its I/O thread for an access to the device's registers, or the device's own
  thread (a worker, the event loop);
- errors: what the driver did wrong (reported in the trace too), and what was done about it.

Each request's time is split into three steps (cycles):
  kick -> back end: from the VM exit of the kick (or the poll) that made the back end look,
                    to the back end taking the chain;
  back-end work:    from taking the chain to writing its used entry;
  interrupt:        from the used entry to the interrupt that covers it reaching the guest's
                    interrupt controller (the HC_INJECT_MSI / HC_SET_IRQLINE hypercall done).
A request whose kick was suppressed has no first step; one used while the driver suppressed
interrupts has its third step end at the next interrupt of its queue.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

from acrn_sim.sim.stats import summarize

STEPS = ("kick_to_backend", "backend_work", "irq_to_guest")


@dataclass
class VirtioStats:
    device: str
    vm: str
    transport: str = ""
    backend: str = "VBS-U"
    requests: int = 0
    exits: int = 0
    ioreqs_dm: int = 0
    ioreqs_kernel: int = 0
    kicks: int = 0
    polls: int = 0
    interrupts: int = 0
    config_interrupts: int = 0
    suppressed_interrupts: int = 0
    dm_wakeups: int = 0
    kernel_wakeups: int = 0
    bytes_in: int = 0  # written into guest buffers
    bytes_out: int = 0  # read from guest buffers
    errors: list[tuple[int, str]] = field(default_factory=list)
    steps: dict[str, array] = field(default_factory=lambda: {s: array("q") for s in STEPS})
    counting: bool = False  # from DRIVER_OK on

    def error(self, cycle: int, text: str) -> None:
        if len(self.errors) < 100:  # a driver that repeats a mistake does not grow memory
            self.errors.append((cycle, text))

    def to_json(self) -> dict:
        n = self.requests or 1
        out = {
            k: getattr(self, k)
            for k in ("device", "vm", "transport", "backend", "requests", "exits", "ioreqs_dm",
                      "ioreqs_kernel", "kicks", "polls", "interrupts", "config_interrupts",
                      "suppressed_interrupts", "dm_wakeups", "kernel_wakeups", "bytes_in",
                      "bytes_out")
        }  # fmt: skip
        out["per_request"] = {
            "exits": self.exits / n,
            "ioreqs_dm": self.ioreqs_dm / n,
            "ioreqs_kernel": self.ioreqs_kernel / n,
            "interrupts": self.interrupts / n,
            "dm_wakeups": self.dm_wakeups / n,
        }
        out["steps"] = {
            s: {**summarize(list(v)), "mean": sum(v) // len(v)} for s, v in self.steps.items() if v
        }
        out["errors"] = [{"cycle": c, "what": t} for c, t in self.errors]
        return out
