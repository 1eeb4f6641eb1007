"""pCPU scheduling (noop, BVT, priority), the VM manager's pause and resume, and the
configuration rules about sharing pCPUs."""

import re

import pytest

from acrn_sim.guests import image_path
from acrn_sim.hv.hypervisor import Hypervisor
from acrn_sim.scenarios import pre_launched, user_vm, with_service_vm
from acrn_sim.sim import ConfigError
from acrn_sim.sim.timing import TimingProfile
from conftest import boot_configs, boot_user, cli

MS = 2_400_000


def _busy_vms(**extra):
    """Two pre-launched VMs computing forever on pCPU 1 (no Service VM)."""
    vms = []
    for i, kw in enumerate(extra.get("params", [{}, {}])):
        vm = pre_launched(image_path("service_vm.elf"), cmdline="busy", pcpu=1, name=f"VM{i}")
        vm.watched = False
        for k, v in kw.items():
            setattr(vm, k, v)
        vms.append(vm)
    return vms


def _guest_time(run, name):
    return run.hv.stats.to_json()["vms"][name]["vcpus"]["0"].get("guest", 0)


@pytest.mark.parametrize("weights", [(1, 1), (1, 3)])
def test_bvt_shares_a_pcpu_in_proportion_to_weight(weights):
    params = [{"bvt_weight": w} for w in weights]
    run = boot_configs(_busy_vms(params=params), main="VM0", until=100 * MS)
    a, b = _guest_time(run, "VM0"), _guest_time(run, "VM1")
    assert a + b > 90 * MS  # the pCPU was busy all along, less context switches
    ratio = b / a
    expected = weights[1] / weights[0]
    assert expected * 0.8 < ratio < expected * 1.25, ratio
    # it is time-sliced: with the CSA of 5 MCU, slices of about 5-10 ms, not one long run
    switches = [e for e in run.hv.tracer.of_kind("sched") if e.pcpu == 1]
    assert 8 < len(switches) < 60


def test_priority_runs_the_high_priority_thread_only():
    params = [{"priority": "PRIO_LOW"}, {"priority": "PRIO_HIGH"}]
    run = boot_configs(_busy_vms(params=params), main="VM0", scheduler="prio", until=20 * MS)
    assert _guest_time(run, "VM1") > 19 * MS
    assert _guest_time(run, "VM0") < MS  # only before the high one first got the pCPU


def test_noop_refuses_two_vcpus_on_one_pcpu():
    with pytest.raises(ConfigError, match="noop scheduler runs one vCPU per pCPU"):
        Hypervisor(TimingProfile.load(), scheduler="noop").boot(_busy_vms())


def test_an_rtvm_cannot_share_its_pcpu():
    vms = _busy_vms()
    vms[0].vm_type = "RTVM"
    with pytest.raises(ConfigError, match="RTVM VM0 shares pCPU 1"):
        Hypervisor(TimingProfile.load()).boot(vms)


def test_unknown_scheduler_is_a_clear_error():
    r = cli("run", "guests/images/hello.elf", "--scheduler", "fifo")
    assert r.returncode == 2 and "invalid choice" in r.stderr


# ------------------------------------------------------------- pause / resume
def _ticker(pause=None):
    vm = user_vm(image_path("ticker.elf"), name="POST_VM1")
    configs = with_service_vm([vm])
    if pause:
        configs[0].vm_manager = pause
    return boot_configs(configs, main="POST_VM1", until=200 * MS)


def _vm1_activity(run):
    """Cycles at which VM1's vCPU 0 ran guest code or exited."""
    vm_id = run.vm.vm_id
    return [e.cycle for e in run.hv.tracer.events if e.vm == vm_id and e.kind in ("run", "vmexit")]


@pytest.mark.parametrize("vcpu", [None, 0])
def test_a_paused_vm_makes_no_progress_then_continues(vcpu):
    plain = _ticker()
    assert plain.exit_code == 0
    t0, t1 = 5 * MS, 15 * MS
    run = _ticker([(t0, "pause", "POST_VM1", vcpu), (t1, "resume", "POST_VM1", vcpu)])
    assert run.exit_code == 0, run.console
    # the same ticks, in order; the guest saw one gap of about the pause's length
    ticks = re.findall(r"tick (\d+)", run.console)
    assert ticks == [str(i) for i in range(1, 11)]
    gap = int(re.search(r"longest gap (\d+) us", run.console).group(1))
    assert 10_000 <= gap <= 12_000
    # nothing ran between the pause taking effect and the resume
    pause = next(e for e in run.hv.tracer.events if e.kind == "vm" and "pause" in e.name)
    resume = next(e for e in run.hv.tracer.events if e.kind == "vm" and "resume" in e.name)
    assert t0 <= pause.cycle < t0 + MS // 10 and t1 <= resume.cycle < t1 + MS // 10
    during = [c for c in _vm1_activity(run) if pause.cycle + MS // 10 < c < resume.cycle]
    assert during == []
    # and the paused time is accounted as such: the pause takes effect at the vCPU's next VM
    # entry, which for a halted vCPU is its next timer tick (the period is 2 ms)
    paused = run.hv.stats.to_json()["vms"]["POST_VM1"]["vcpus"]["0"]["paused"]
    assert resume.cycle - pause.cycle - 2 * MS - MS // 10 < paused <= resume.cycle - pause.cycle
    # the run ends later than without the pause, by less than the pause: the periodic timer
    # kept running, and its expiries while paused merged into one pending interrupt (IRR)
    delta = run.result.end_cycle - plain.result.end_cycle
    assert 6 * MS < delta < 10 * MS


def test_pause_from_the_command_line():
    r = cli("run", "guests/images/ticker.elf", "--pause", "POST_VM1@5ms:15ms")
    assert r.returncode == 0, r.stderr
    assert "tick 10" in r.stdout
    r = cli("run", "guests/images/ticker.elf", "--pause", "NOPE@5ms:1ms")
    assert r.returncode == 2 and "END after START" in r.stderr
    r = cli("run", "guests/images/ticker.elf", "--pause", "NOPE@1ms:5ms")
    assert r.returncode == 2 and "no User VM named 'NOPE'" in r.stderr


def test_reset_still_works_through_the_pause_path():
    run = boot_user("reset.elf")
    assert run.exit_code == 0, run.console
