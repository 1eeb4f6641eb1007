"""A misbehaving guest affects only its own VM: a triple fault shuts that VM down and is
reported, while the Service VM keeps running."""

from conftest import boot, cli, messages
from hv.common.vm import VmState
from hv.guest.vmcs import ExitReason
from sim.units import parse_simtime


def test_triple_fault_shuts_down_only_that_vm():
    limit = parse_simtime("5ms", 2_400_000_000)
    # Not "watched": the run goes on to the time limit instead of ending with this VM.
    run = boot("triple.elf", busy=True, until=limit, watched=False)
    vm, svc = run.vm, run.service_vm
    assert vm.shutdown.kind == "triple_fault"
    assert "double fault" in vm.shutdown.reason
    assert vm.state is VmState.POWERED_OFF
    # The Service VM (busy workload) was still running at the end of the run, long after.
    assert svc.state is VmState.RUNNING and svc.shutdown is None
    assert run.result.status == "time_limit"
    assert run.hv.now() >= limit > vm.shutdown.cycle
    exits = run.hv.stats.to_json()["vms"]["PRE_VM0"]["exits"]
    assert exits["TRIPLE_FAULT"]["count"] == 1
    # The fault is in the trace as a VM event and as a TRIPLE_FAULT exit on the vCPU track.
    names = {e.name for e in run.hv.tracer.events}
    assert "VM0 triple_fault" in names and ExitReason.TRIPLE_FAULT.name in names


def test_service_vm_keeps_running_after_triple_fault():
    """Watch the Service VM's guest time grow after the pre-launched VM died."""
    limit = parse_simtime("3ms", 2_400_000_000)
    run = boot("triple.elf", busy=True, until=limit, watched=False)
    died = run.vm.shutdown.cycle
    svc_runs = [e for e in run.hv.tracer.of_kind("run") if e.vm == run.service_vm.vm_id]
    assert any(e.cycle > died for e in svc_runs)
    assert "Service VM: busy workload" in run.service_vm.console.decode()


def test_triple_fault_on_the_command_line():
    p = cli("run", "guests/images/triple.elf", "--load-order", "pre")
    assert p.returncode == 125
    lines = messages(p.stderr)
    assert len(lines) == 1 and "triple fault" in lines[0] and "PRE_VM0" in lines[0]
    assert "Traceback" not in p.stderr
