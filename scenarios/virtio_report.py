"""`--report` and `--stats` for the User VMs' virtio devices: per device, the requests and what
each cost (VM exits, IOREQs served by the device model or in the kernel, interrupts, device
model wake-ups), and each request's latency split into its steps (kick -> back end, back-end
work, interrupt). The counters are the devices' own (guests/service_vm/virtio/stats.py)."""

from __future__ import annotations

from acrn_sim.scenarios import ModelledServiceVm
from acrn_sim.sim.units import fmt_us

STEP_NAMES = {
    "kick_to_backend": "kick -> back end",
    "backend_work": "back-end work",
    "irq_to_guest": "interrupt",
}


def virtio_devices(configs) -> list:
    """Every virtio device of every device model in the run, in VM then slot order."""
    out = []
    for c in configs:
        sw = c.software
        if isinstance(sw, ModelledServiceVm) and sw.instance is not None:
            for dm in sw.instance.dms.values():
                out.extend(d for d in dm.pci.devices if hasattr(d, "stats"))
    return out


def virtio_json(configs) -> list[dict]:
    return [{"slot": d.slot, **d.stats.to_json()} for d in virtio_devices(configs)]


def virtio_report(configs, hv=None) -> str:
    devices = virtio_devices(configs)
    if not devices:
        return ""
    hz = hv.profile.tsc_hz if hv is not None else 0
    lines = [
        "",
        "Virtio devices: per request (a chain the device returned), counted from DRIVER_OK",
        f"  {'VM':<10}{'device':<18}{'transport':<14}{'back end':<9}{'requests':>9}"
        f"{'exits':>8}{'IOREQs DM':>10}{'in-kernel':>10}{'irqs':>7}{'DM wake':>8}",
    ]
    for d in devices:
        s = d.stats
        n = s.requests or 1
        lines.append(
            f"  {s.vm:<10}{f'{s.device}@{d.slot}':<18}{s.transport:<14}{s.backend:<9}"
            f"{s.requests:>9}{s.exits / n:>8.3f}{s.ioreqs_dm / n:>10.3f}"
            f"{s.ioreqs_kernel / n:>10.3f}{s.interrupts / n:>7.3f}{s.dm_wakeups / n:>8.3f}"
        )
    for d in devices:
        s = d.stats
        steps = s.to_json()["steps"]
        if not steps and not s.errors:
            continue
        lines.append("")
        lines.append(f"VM {s.vm}: {s.device}@{d.slot} ({s.backend}), request latency by step")
        if steps:
            lines.append(f"  {'step':<18}{'count':>8}{'mean':>9}{'p50':>9}{'p99':>9}{'max':>9}"
                         + (f"{'mean us':>9}" if hz else ""))  # fmt: skip
            for key, title in STEP_NAMES.items():
                r = steps.get(key)
                if r:
                    us = f"{fmt_us(r['mean'], hz):>9}" if hz else ""
                    lines.append(
                        f"  {title:<18}{r['count']:>8}{r['mean']:>9}{r['p50']:>9}{r['p99']:>9}"
                        f"{r['max']:>9}{us}"
                    )
        extra = [
            f"kicks {s.kicks}",
            f"polls {s.polls}",
            f"interrupts suppressed {s.suppressed_interrupts}",
            f"config interrupts {s.config_interrupts}",
            f"kernel wake-ups {s.kernel_wakeups}",
        ]
        lines.append("  " + ", ".join(extra))
        for cycle, what in s.errors[:5]:
            lines.append(f"  driver error at cycle {cycle}: {what}")
        if len(s.errors) > 5:
            lines.append(f"  ... {len(s.errors) - 5} more")
    if hv is not None:
        for vm in sorted({d.stats.vm for d in devices}):
            reqs = sum(d.stats.requests for d in devices if d.stats.vm == vm)
            exits = sum(len(v) for v in hv.stats.exits.get(vm, {}).values())
            if reqs:
                lines.append("")
                lines.append(
                    f"VM {vm}: {exits} VM exits in the whole run (set-up and every cause), "
                    f"{exits / reqs:.2f} per virtio request"
                )
    return "\n".join(lines)
