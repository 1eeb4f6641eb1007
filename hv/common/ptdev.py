"""Passthrough interrupt entries (ACRN hypervisor/common/ptdev.c): one `ptirq_remapping_info`
per passthrough MSI vector, keyed by the physical source (device and entry number) and the
virtual one (the VM's virtual device and entry number), with the physical IRQ and host vector
it was given (ptirq_activate_entry) and the guest's and the device's MSI messages.

A physical interrupt on the entry's host vector runs `ptirq_interrupt_handler` on the pCPU it
arrived at, which queues the entry for that pCPU's softirq; the softirq (ptirq_softirq, in
hv/guest/assign.py) injects the guest's MSI into its vLAPIC. Both are charged together as
`ptirq_softirq` cycles: ACRN's own sampling puts an external-interrupt exit's root-mode time
at 0.8-1.0 us, with the exit's dispatch and handler.

The path of every interrupt is recorded (`PtirqRecord`): when the device wrote its message,
when the remapped interrupt reached the pCPU, and when the guest's vector was set in its
vLAPIC's IRR; the statistics summarize it per VM and mode.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from acrn_sim.sim.stats import summarize

PTIRQ_FIRST = 48  # ACRN allocates MSI IRQs above the IOAPIC's GSIs; the IRTE index is the IRQ


@dataclass
class PtirqEntry:
    vm: object
    phys_sid: int  # the physical device (requester id)
    virt_sid: int  # the virtual device in `vm`
    entry_nr: int = 0
    allocated_pirq: int | None = None  # also the IRTE index
    vector: int | None = None  # the host vector (remapped mode)
    vmsi: tuple[int, int] = (0, 0)  # the guest's (address, data)
    pmsi: tuple[int, int] = (0, 0)  # what the device sends (remappable format)
    mode: str = "remapped"  # "remapped", "posted" or "lapic_pt"
    active: bool = False


@dataclass
class PtirqRecord:
    vm: str
    mode: str
    msi: int  # the device's message write
    host: int  # the interrupt reached the pCPU (or the posted notification)
    irr: int  # the guest's vector set in its vLAPIC


@dataclass
class Ptdev:
    hv: object
    entries: list[PtirqEntry] = field(default_factory=list)
    records: list[PtirqRecord] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    _pirqs: set[int] = field(default_factory=set)

    def lookup_phys(self, phys_sid: int, entry_nr: int = 0) -> PtirqEntry | None:
        for e in self.entries:
            if e.phys_sid == phys_sid and e.entry_nr == entry_nr:
                return e
        return None

    def lookup_virt(self, vm, virt_sid: int, entry_nr: int = 0) -> PtirqEntry | None:
        for e in self.entries:
            if e.vm is vm and e.virt_sid == virt_sid and e.entry_nr == entry_nr:
                return e
        return None

    def lookup_pirq(self, pirq: int) -> PtirqEntry | None:
        for e in self.entries:
            if e.allocated_pirq == pirq:
                return e
        return None

    def alloc_entry(self, vm, phys_sid: int, virt_sid: int, entry_nr: int = 0) -> PtirqEntry:
        entry = PtirqEntry(vm, phys_sid, virt_sid, entry_nr)
        self.entries.append(entry)
        return entry

    def activate_entry(self, entry: PtirqEntry) -> None:
        """ptirq_activate_entry: a physical IRQ (the IRTE index) and its host vector, whose
        handler is ptirq_interrupt_handler."""
        pirq = PTIRQ_FIRST
        while pirq in self._pirqs:
            pirq += 1
        self._pirqs.add(pirq)
        entry.allocated_pirq = pirq
        entry.vector = self.hv.irq.alloc_vector(
            f"ptirq {entry.vm.name}", lambda pcpu, e=entry: self.interrupt_handler(e, pcpu)
        )
        entry.active = True

    def release_entry(self, entry: PtirqEntry) -> None:
        """ptirq_deactivate_entry + ptirq_release_entry."""
        if entry.vector is not None:
            self.hv.irq.free_vector(entry.vector)
        self._pirqs.discard(entry.allocated_pirq)
        entry.active = False
        if entry in self.entries:
            self.entries.remove(entry)

    def interrupt_handler(self, entry: PtirqEntry, pcpu: int) -> None:
        """ptirq_interrupt_handler: queue the entry for the softirq, which injects it."""
        from acrn_sim.hv.guest.assign import ptirq_softirq

        if not entry.active:
            return
        host = self.hv.now()
        self.hv.env.call_later(
            self.hv.profile.cycles["ptirq_softirq"], lambda _e: ptirq_softirq(entry, host)
        )

    def record(self, entry: PtirqEntry, host: int) -> None:
        vtd = self.hv.vtd
        msi = vtd.msi_times.get(entry.phys_sid, host) if vtd is not None else host
        self.counts[f"{entry.vm.name} {entry.mode}"] += 1
        if len(self.records) < 100_000:
            self.records.append(PtirqRecord(entry.vm.name, entry.mode, msi, host, self.hv.now()))

    def report(self) -> dict:
        """Per VM and mode: interrupts, and the cycles from the device's message to the
        vLAPIC (stats JSON: "ptirq")."""
        groups: dict[str, list[int]] = defaultdict(list)
        for r in self.records:
            groups[f"{r.vm} {r.mode}"].append(r.irr - r.msi)
        return {k: {"interrupts": self.counts[k], "msi_to_vlapic": summarize(v)}
                for k, v in sorted(groups.items())}  # fmt: skip
