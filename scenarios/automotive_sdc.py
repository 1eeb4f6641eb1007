"""The software-defined cockpit: four pCPUs, five VMs.

  VM              role                                   default placement
  Service_VM      device models for every User VM        pCPU 0 (PRIO_HIGH, as ACRN)
  CLUSTER         instrument cluster: a 60 fps frame     pCPU 1, RTVM, LAPIC passthrough,
                  (16.7 ms) with 4 ms of drawing and     polling I/O completion, PRIO_HIGH
                  8 sensor reads through the DM
  IVI             infotainment: storage I/O (50 us of    pCPU 2, PRIO_LOW
                  DM work each) between short bursts
  REAR1, REAR2    rear-seat displays: 30 fps frames      both on pCPU 3, PRIO_LOW
                  with 12 ms of decoding each

Each frame that ends after the next frame's release is a deadline miss. The report gives,
per VM, frames, misses and frame response-time percentiles (release to done), and the VM's
I/O round trips through the Service VM (p50/p99 of its IO_INSTRUCTION exits).

Change it from the command line:
  --scheduler bvt|prio|noop                the pCPU scheduler (default bvt)
  --set cluster=N --set ivi=N --set rear1=N --set rear2=N   a VM's pCPU
  --set cluster_rt=no                      the cluster as a standard VM (no passthrough)
  --set inherit=no                         device-model threads without priority inheritance
  --set frames=N                           cluster frames to run (default 30: 0.5 s)
e.g.  acrn-sim run scenarios/automotive_sdc.py --set cluster_rt=no --set cluster=3
"""

from __future__ import annotations

from acrn_sim.guests import image_path
from acrn_sim.scenarios import param, results, service_vm, user_vm
from acrn_sim.sim import ConfigError

PARAMS = ("cluster", "ivi", "rear1", "rear2", "cluster_rt", "inherit", "frames")
SCHEDULER = "bvt"
CLUSTER_US, REAR_US = 16_667, 33_333


def scenario(opts):
    frames = param(opts, "frames", 30)
    if frames <= 0:
        raise ConfigError("--set frames must be positive")
    pcpu = {name: param(opts, name, default) for name, default in
            (("cluster", 1), ("ivi", 2), ("rear1", 3), ("rear2", 3))}  # fmt: skip
    for name, p in pcpu.items():
        if not 1 <= p <= 3:
            raise ConfigError(f"--set {name}={p}: User VMs go on pCPUs 1-3 (0 is the Service VM's)")
    cluster = user_vm(image_path("workload.elf"), cmdline=f"frame {frames} {CLUSTER_US} 4000 8",
                      name="CLUSTER", pcpu=pcpu["cluster"])  # fmt: skip
    cluster.priority = "PRIO_HIGH"
    if param(opts, "cluster_rt", True, bool):
        cluster.vm_type = "RTVM"
        cluster.lapic_passthrough = True
        cluster.io_completion_polling = True
    ivi = user_vm(image_path("workload.elf"), cmdline="io 1000000 200", name="IVI",
                  pcpu=pcpu["ivi"])  # fmt: skip
    ivi.watched = False  # it runs as long as the others
    rear_frames = max(1, frames * CLUSTER_US // REAR_US)
    rears = [
        user_vm(
            image_path("workload.elf"),
            cmdline=f"frame {rear_frames} {REAR_US} 12000 2",
            name=f"REAR{i}",
            pcpu=pcpu[f"rear{i}"],
        )  # fmt: skip
        for i in (1, 2)
    ]
    user_vms = [cluster, ivi, *rears]
    svc = service_vm(user_vms=user_vms)
    svc.dm_priority_inheritance = param(opts, "inherit", True, bool)
    return [svc, *user_vms]


def results_json(hv, result) -> dict:
    """The cockpit's figures (cycles): per User VM its pCPUs and type, frames, deadline misses
    and frame response times, and its I/O round trips through the Service VM (IO_INSTRUCTION
    exits); the statistics' "scenario" section, and what report() prints."""
    stats = hv.stats.to_json()["vms"]
    svc = hv.service_vm()
    rows = []
    for vm in hv.vms:
        if vm.is_service_vm:
            continue
        r = results(hv.consoles.get(vm.name, b""))
        io = stats.get(vm.name, {}).get("exits", {}).get("IO_INSTRUCTION")
        frames = {k: r[k] for k in ("frames", "misses", "p50", "p99", "max")} if r and (
            "frames" in r) else None  # fmt: skip
        rows.append({
            "vm": vm.name,
            "pcpus": [v.pcpu_id for v in vm.vcpus],
            "type": "RTVM+LAPIC-PT" if vm.lapic_pt else vm.config.vm_type,
            "frames": frames,
            "io_p50": io["p50"] if io else None,
            "io_p99": io["p99"] if io else None,
        })  # fmt: skip
    return {
        "scheduler": hv.scheduler,
        "dm_priority_inheritance": bool(svc.config.dm_priority_inheritance),
        "sim_cycles": result.end_cycle,
        "vms": rows,
    }


def report(hv, result) -> str:
    c = results_json(hv, result)
    hz = hv.profile.tsc_hz
    ms = lambda c: f"{c * 1e3 / hz:7.2f}"  # noqa: E731
    us = lambda c: f"{c * 1e6 / hz:7.1f}"  # noqa: E731
    lines = [
        "",
        f"Software-defined cockpit: scheduler {c['scheduler']}, device-model priority "
        f"inheritance {'on' if c['dm_priority_inheritance'] else 'off'}, "
        f"{c['sim_cycles'] * 1e3 / hz:.1f} ms simulated",
        "",
        f"  {'VM':<8} {'pCPU':>4} {'type':<12} {'frames':>6} {'misses':>6} {'p50 ms':>7} "
        f"{'p99 ms':>7} {'max ms':>7}   {'I/O p50 us':>10} {'I/O p99 us':>10}",
    ]
    for row in c["vms"]:
        f = row["frames"]
        if f:
            frame = (
                f"{f['frames']:>6} {f['misses']:>6} {ms(f['p50'])} {ms(f['p99'])} {ms(f['max'])}"
            )
        else:
            frame = f"{'-':>6} {'-':>6} {'-':>7} {'-':>7} {'-':>7}"
        if row["io_p50"] is not None:
            iol = f"{us(row['io_p50']):>10} {us(row['io_p99']):>10}"
        else:
            iol = f"{'-':>10} {'-':>10}"
        pcpus = ",".join(str(p) for p in row["pcpus"])
        lines.append(f"  {row['vm']:<8} {pcpus:>4} {row['type']:<12} {frame}   {iol}")
    return "\n".join(lines)
