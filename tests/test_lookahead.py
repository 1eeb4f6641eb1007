"""Cross-pCPU events on time (hv/common/lookahead.py): a vCPU's slice of guest code does not
run far past the earliest cycle another pCPU could send it an event."""

import re

from acrn_sim.guests import image_path
from acrn_sim.scenarios import pre_launched, service_vm
from conftest import boot_configs, cli


def _ipi_delays(*args: str) -> tuple[int, int]:
    p = cli("run", "scenarios/ipi_latency.py", *args)
    assert p.returncode == 0, p.stderr
    m = re.search(r"IPI delivery: min (\d+) max (\d+) cycles", p.stdout)
    assert m, p.stdout
    return int(m.group(1)), int(m.group(2))


def _modelled_ipi_path(profile) -> int:
    """The sender's APIC-access exit up to its handler, which sends the IPI; the receiver's
    external-interrupt exit round trip; the injection at its next VM entry."""
    c = profile.cycles
    exit_to_handler = c["vmexit_hw"] + c["vmexit_dispatch"]
    receiver_exit = exit_to_handler + c["handler_default"] + c["vmentry_hw"]
    return exit_to_handler + receiver_exit + c["inject_event"]


def test_an_ipi_to_a_busy_vcpu_on_another_pcpu_arrives_within_the_lookahead():
    from acrn_sim.sim.timing import TimingProfile

    profile = TimingProfile.load()
    low, high = _ipi_delays()
    path = _modelled_ipi_path(profile)
    # never up to a scheduler quantum (2.4 M cycles): at most 3,000 cycles past the path
    assert high < path + 3000
    # the path itself is charged (the receiver between two slices skips its exit)
    assert low >= path - profile.cycles["vmexit_hw"] - profile.cycles["handler_default"] - 600
    # and the spread is the lookahead: a smaller one gives a smaller worst case
    _low, high_small = _ipi_delays("--cost", "sync_lookahead=240")
    assert high_small < high


def test_a_vcpu_with_no_possible_sender_runs_its_whole_quantum():
    """A pre-launched VM alone on its pCPU: no other pCPU can send it an event, so its slices
    are not cut (the lookahead costs nothing there)."""
    vm = pre_launched(image_path("bench.elf"), memory=16 << 20, cmdline="compute 3000000")
    run = boot_configs([vm, service_vm()], main="PRE_VM0")
    assert run.vm.shutdown.exit_code == 0
    quantum = run.hv.profile.cycles["sched_quantum"]
    slices = [e.dur for e in run.hv.tracer.of_kind("run") if e.vm == run.vm.vm_id]
    # (a slice ends at the first block boundary at or past its budget)
    assert len(slices) > 2 and all(quantum <= d < quantum + 100 for d in slices[1:-1])
