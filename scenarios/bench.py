"""`acrn-sim bench`: host-speed figures, each measured in the same run as its reference.

Host time is read here (time.perf_counter) and only here: it measures the simulator, never
feeds the simulation. Figures are ratios or rates against bare Unicorn on the same machine, so
that a noisy, shared host shifts both sides alike.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from unicorn import UC_ARCH_X86, UC_MODE_64, Uc

from guests import image_path
from hv.hypervisor import Hypervisor
from scenarios import device_model, pre_launched, service_vm, user_vm, with_service_vm
from sim.timing import TimingProfile

COMPUTE_ITERATIONS = 20_000_000
MEMORY_ITERATIONS = 10_000_000
EXITS = 20_000
SCALING_ITERATIONS = 2_000_000  # of the memory kernel, per VM


@dataclass
class Timed:
    seconds: float
    hv: Hypervisor


def _boot(cmdlines: list[str], hotpath: str) -> Hypervisor:
    configs = [
        pre_launched(
            image_path("bench.elf"), memory=16 << 20, cmdline=c, pcpu=i + 1, name=f"PRE_VM{i}"
        )
        for i, c in enumerate(cmdlines)
    ]
    hv = Hypervisor(TimingProfile.load(), trace=False, hotpath=hotpath)
    hv.boot(configs + [service_vm()])
    return hv


def _run(cmdlines: list[str], hotpath: str = "native") -> Timed:
    hv = _boot(cmdlines, hotpath)
    t0 = time.perf_counter()
    hv.run()
    seconds = time.perf_counter() - t0
    for vm in hv.vms[: len(cmdlines)]:
        if not vm.shutdown or vm.shutdown.exit_code != 0:
            raise RuntimeError(f"bench guest failed in {vm.name}: {vm.shutdown}")
    return Timed(seconds, hv)


def _run_user(cmdline: str, hotpath: str) -> float:
    """Host seconds for a User VM whose I/O all goes through the Service VM."""
    hv = Hypervisor(TimingProfile.load(), trace=False, hotpath=hotpath)
    configs = with_service_vm([user_vm(image_path("bench.elf"), memory=16 << 20, cmdline=cmdline)])
    hv.boot(configs)
    t0 = time.perf_counter()
    hv.run()
    seconds = time.perf_counter() - t0
    dm = device_model(configs, "POST_VM1")
    if dm.exit_code != 0:
        raise RuntimeError(f"bench guest failed in POST_VM1: {dm.exit_code}")
    return seconds


def _bare_unicorn_seconds(cmdline: str) -> float:
    """The same image and boot state, in a fresh engine with no hooks at all."""
    hv = _boot([cmdline], "python")
    src = hv.vms[0].vcpus[0].engine
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    for gpa, hpa, size, _perm in hv.vms[0].ept.regions():
        uc.mem_map_ptr(gpa, size, 7, hv.mem.host_ptr(hpa))
    uc.context_restore(src.uc.context_save())
    rip = src.reg("rip")
    t0 = time.perf_counter()
    uc.emu_start(rip, 0xFFFF_FFFF_FFFF_FFFF)  # ends at the guest's final HLT
    return time.perf_counter() - t0


def _compute(kind: str, iterations: int, hotpath: str, out) -> float:
    cmd = f"{kind} {iterations}"
    bare = _bare_unicorn_seconds(cmd)
    sim = _run([cmd], hotpath)
    insns = sim.hv.vms[0].vcpus[0].engine.st.insns  # the same code runs in both
    ratio = bare / sim.seconds
    bare_mips, sim_mips = insns / bare / 1e6, insns / sim.seconds / 1e6
    out(
        f"  {kind:<8} {insns / 1e6:7.1f} M instructions: bare Unicorn {bare_mips:7.1f} MIPS, "
        f"acrn-sim {sim_mips:7.1f} MIPS = {100 * ratio:3.0f}% of bare"
    )
    return ratio


def run_bench(out=print, hotpath: str = "native") -> dict[str, float]:
    results: dict[str, float] = {}
    out(f"compute-bound guest, cycle accounting on ({hotpath} hot path), against bare Unicorn:")
    results["memory_ratio"] = _compute("memory", MEMORY_ITERATIONS, hotpath, out)
    results["compute_ratio"] = _compute("compute", COMPUTE_ITERATIONS, hotpath, out)
    out("  (memory: a loop over an array, typical code; compute: a 5-instruction register-only")
    out("   loop, the worst case for per-block accounting: Unicorn's own hook dispatch dominates)")

    cpuid = _run([f"cpuid {EXITS}"], hotpath)
    results["cpuid_exits_per_s"] = EXITS / cpuid.seconds
    out(f"CPUID exits:          {results['cpuid_exits_per_s']:10.0f} per host second")
    pio = _run([f"pio {EXITS}"], hotpath)
    results["pio_hv_per_s"] = EXITS / pio.seconds
    out(f"PIO exits completed in the hypervisor: {results['pio_hv_per_s']:10.0f} per host second")
    ioreq = _run_user(f"pio {EXITS}", hotpath)
    results["pio_ioreq_per_s"] = EXITS / ioreq
    out(
        "PIO round trips through the IOREQ path (Service VM, HSM, device model): "
        f"{results['pio_ioreq_per_s']:7.0f} per host second"
    )

    one = _run([f"memory {SCALING_ITERATIONS}"], hotpath)
    eight = _run([f"memory {SCALING_ITERATIONS}"] * 8, hotpath)
    tsc = one.hv.profile.tsc_hz
    results["host_per_sim_1vm"] = one.seconds / (one.hv.now() / tsc)
    results["host_per_sim_8vm"] = eight.seconds / (eight.hv.now() / tsc)
    results["scaling_8_over_1"] = eight.seconds / one.seconds
    out("8-VM scenario (8 pre-launched VMs, one pCPU each, same work per VM):")
    out(
        f"  1 VM:  {one.seconds:6.3f} host s for {one.hv.now() / tsc * 1e3:7.3f} simulated ms "
        f"({results['host_per_sim_1vm']:.2f} host s per simulated s)"
    )
    out(
        f"  8 VMs: {eight.seconds:6.3f} host s for {eight.hv.now() / tsc * 1e3:7.3f} simulated ms "
        f"({results['host_per_sim_8vm']:.2f} host s per simulated s)"
    )
    out(f"  host time 8 VMs / 1 VM = {results['scaling_8_over_1']:.2f} (linear: 8.00)")
    return results
