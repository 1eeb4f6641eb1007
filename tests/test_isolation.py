"""A misbehaving guest affects only its own VM: a triple fault shuts that VM down and is
reported, while the Service VM keeps running; a hostile User VM (triple faults, tight loops,
I/O floods, IPI storms, memory scribbles, MSR storms, reset loops, random code) changes neither
the console output nor the memory of a well-behaved VM beside it."""

import hashlib
import random

import pytest
from fuzz import images, x86

from acrn_sim.guests import image_path
from acrn_sim.hv.common.vm import VmState
from acrn_sim.hv.guest.vmcs import ExitReason
from acrn_sim.scenarios import pre_launched, user_vm, with_service_vm
from acrn_sim.sim.units import parse_simtime
from conftest import boot, boot_configs, cli, messages


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


# ---- a hostile User VM beside a well-behaved pre-launched one
# The well-behaved VM (ticker.elf: a tick every 2 ms from its LAPIC timer, on pCPU 1, console
# through the hypervisor's vUART) must print the same and end with the same RAM, byte for byte,
# whatever the User VM on pCPU 2 does.


_MV = x86.mov_imm
_ICR = 0xFEE00300


def _ipi_storm() -> bytes:
    # ICR writes: fixed vector 0x30 to all including self, NMI to all excluding self, INIT
    body = b""
    for icr in (0x00080030, 0x000C0400, 0x000C0500, 0x000C0630):
        body += _MV(x86.EBX, _ICR) + _MV(x86.EAX, icr) + x86.store_ebx(4)
    return body + x86.jmp_rel32(-len(body))


def _scribble() -> bytes:
    # rep stosd over its own RAM and far beyond it (EPT violations), then again
    body = _MV(x86.EAX, 0xDEADBEEF) + _MV(x86.EDI, 0x200000) + _MV(x86.ECX, 0x10000)
    body += x86.rep(x86.STOSD) + _MV(x86.EDI, 0x4000000) + _MV(x86.ECX, 64) + x86.rep(x86.STOSD)
    body += _MV(x86.EBX, 0xFFFFF000) + x86.store_ebx(4)
    return body + x86.jmp_rel32(-len(body))


def _msr_cr_storm() -> bytes:
    body = _MV(x86.ECX, 0x1B) + _MV(x86.EAX, 0xFEE00900) + _MV(x86.EDX, 0) + x86.WRMSR
    body += _MV(x86.ECX, 0x10) + x86.WRMSR + _MV(x86.ECX, 0x6E0) + _MV(x86.EAX, 1) + x86.WRMSR
    return body + x86.jmp_rel32(-len(body))


HOSTILE = {
    "idle": lambda: x86.halt_forever(),
    "tight_loop": lambda: x86.jmp_rel8(0),
    "io_flood": lambda: _MV(x86.EAX, 0x41) + x86.mov_dx(0x3F8) + x86.out_dx(1) + x86.jmp_rel8(-3),
    "pci_flood": lambda: (_MV(x86.EAX, 0x80000000) + x86.mov_dx(0xCF8) + x86.out_dx(4)
                          + x86.mov_dx(0xCFC) + x86.in_dx(4) + x86.jmp_rel8(-15)),
    "ipi_storm": _ipi_storm,
    "memory_scribble": _scribble,
    "msr_storm": _msr_cr_storm,
    "reset_loop": lambda: _MV(x86.EAX, 6) + x86.mov_dx(0xCF9) + x86.out_dx(1),
}  # fmt: skip


def _run_beside(hostile: bytes | str, tmp) -> tuple[str, str, object]:
    if isinstance(hostile, bytes):
        f = tmp / "hostile.elf"
        f.write_bytes(hostile)
        hostile = str(f)
    good = pre_launched(image_path("ticker.elf"), pcpu=1, name="GOOD")
    good.watched = False  # the run goes to the time limit
    bad = user_vm(hostile, pcpu=2, name="HOSTILE")
    bad.watched = False
    run = boot_configs([good, *with_service_vm([bad])], main="GOOD", until=12 * 2_400_000,
                       trace=False)  # fmt: skip
    start, size = run.hv.reserved_ranges()[1]  # (the hypervisor's range is first)
    ram = hashlib.sha256(run.hv.mem.read(start, size)).hexdigest()
    return run.console_of("GOOD"), ram, run


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    console, ram, _ = _run_beside(images.guest("flat32", HOSTILE["idle"]()),
                                  tmp_path_factory.mktemp("base"))  # fmt: skip
    assert console.count("tick") >= 5
    return console, ram


def _check_isolated(baseline, tmp, hostile):
    console, ram, run = _run_beside(hostile, tmp)
    assert (console, ram) == baseline
    hv_stats = run.hv.stats.to_json()["vms"]
    assert "HOSTILE" in hv_stats, "the hostile VM never ran"
    assert run.service_vm.shutdown is None
    return run


@pytest.mark.parametrize("kind", sorted(k for k in HOSTILE if k != "idle"))
def test_hostile_user_vm_does_not_touch_its_neighbour(baseline, tmp, kind):
    _check_isolated(baseline, tmp, images.guest("flat32", HOSTILE[kind](), idt=True))


def test_triple_faulting_user_vm_beside(baseline, tmp):
    run = _check_isolated(baseline, tmp, image_path("triple.elf"))
    hostile = next(v for v in run.hv.vms if v.name == "HOSTILE")
    assert hostile.shutdown is not None and hostile.shutdown.kind == "triple_fault"


@pytest.mark.parametrize("seed", range(4))
def test_random_code_user_vm_beside(baseline, tmp, seed):
    rng = random.Random(seed)
    mode = images.MODES[seed % 3]
    _check_isolated(baseline, tmp, images.guest(mode, rng.randbytes(256), idt=seed % 2 == 0))
