"""PCI passthrough under VT-d: a User VM and a pre-launched VM drive the board's DMA sensor
(DMA into their memory, MSIs through the hypervisor), configuration accesses exit while BAR
accesses do not, DMA outside a VM's memory faults and writes nothing, a device a VM was not
given cannot be reached from it, and the Service VM alone finds a DMAR table."""

import json
import struct

import pytest

from acrn_sim.guests import image_path
from acrn_sim.hv import public as P
from acrn_sim.hv.arch.vtd import vmid_to_domainid
from acrn_sim.hv.guest.vmcs import ExitReason
from acrn_sim.hv.hypervisor import Hypervisor
from acrn_sim.scenarios import dma_attack, pre_launched, user_vm, with_service_vm
from acrn_sim.sim import ConfigError
from acrn_sim.sim.acpi_dmar import find_table
from acrn_sim.sim.platform import DRHD_BASE, PlatformConfig
from acrn_sim.sim.timing import TimingProfile
from conftest import cli, messages

SID = 0x00F8  # 00:1f.0
BOARD = PlatformConfig(devices=["00:1f.0,sensor,latency_us=20"])


def booted(configs, board=BOARD, trace=True):
    """A hypervisor on `board` with `configs` booted, consoles kept in hv.consoles."""
    consoles: dict[str, bytes] = {}
    hv = Hypervisor(
        TimingProfile.load(),
        trace=trace,
        platform=board,
        console_sink=lambda n, d: consoles.__setitem__(n, consoles.get(n, b"") + d),
    )
    hv.consoles = consoles
    hv.boot(configs)
    return hv


def run(configs, board=BOARD, trace=True, until_s=2):
    hv = booted(configs, board, trace)
    hv.result = hv.run(hv.profile.tsc_hz * until_s)
    return hv


def console(hv, name):
    vm = next(v for v in hv.vms if v.name == name)
    data = vm.console if not vm.is_post_launched else hv.consoles.get(name, b"")
    return data.decode(errors="replace").replace("\r", "")


def result_line(text):
    line = next(ln for ln in text.splitlines() if ln.startswith("result "))
    return {k: int(v) for k, v in (kv.split("=") for kv in line.split()[1:])}


def passthru_user_vm(n=12, image="sensor.elf", cmdline=None, slot="7,passthru,00/1f/0"):
    vm = user_vm(image_path(image), cmdline=cmdline or f"n={n}", name="PTVM", devices=[slot])
    return with_service_vm([vm])


def hypercalls(hv):
    return [int(e.args["id"], 16) for e in hv.tracer.of_kind("hypercall")]


# ------------------------------------------------------------------- a User VM
def test_a_user_vm_drives_its_passthrough_device_by_dma_and_msi():
    n = 12
    hv = run(passthru_user_vm(n))
    text = console(hv, "PTVM")
    assert "sensor: PASS" in text, text
    res = result_line(text)
    assert res["errors"] == 0 and res["msis"] == n
    dev = hv.platform.devices[SID].stats()
    assert dev["requests"] == n and dev["msis"] == n and dev["dma_bytes"] == n * 64
    unit = hv.vtd.units[0].stats
    assert unit["translations"] >= 2 * n and unit["faults"] == 0 and not hv.vtd.faults
    # every MSI went device -> DMAR (IRTE) -> host IRQ -> ptirq softirq -> the vLAPIC
    assert hv.ptdev.counts["PTVM remapped"] == n
    assert all(r.msi <= r.host <= r.irr for r in hv.ptdev.records)
    # the device model assigned it while the VM was CREATED and gave it back, paused
    calls = hypercalls(hv)
    assign, start = calls.index(P.HC_ASSIGN_PCIDEV), calls.index(P.HC_START_VM)
    deassign, destroy = calls.index(P.HC_DEASSIGN_PCIDEV), calls.index(P.HC_DESTROY_VM)
    assert assign < start < calls.index(P.HC_PAUSE_VM) < deassign < destroy
    svc = hv.service_vm()
    assert hv.pdev_owner[SID] is svc
    assert hv.vtd.device_domain[SID].domain_id == vmid_to_domainid(svc.vm_id)
    bar = hv.platform.bars(SID)[0][1]
    assert svc.ept.walk(bar) is not None  # the Service VM's again, its BAR too


def test_the_device_is_in_the_user_vms_domain_while_it_runs():
    hv = Hypervisor(TimingProfile.load(), trace=False, platform=BOARD)
    configs = passthru_user_vm(4)
    hv.boot(configs)
    seen = {}

    def at_start(_e):
        vm = next((v for v in hv.vms if v.name == "PTVM"), None)
        if vm is not None and vm.state.name == "RUNNING" and "did" not in seen:
            seen["did"] = hv.vtd.device_domain[SID].domain_id
            seen["vm"] = vm.vm_id
            seen["svc_bar"] = hv.service_vm().ept.walk(hv.platform.bars(SID)[0][1])
        hv.env.call_later(240_000, at_start)

    hv.env.call_later(0, at_start)
    hv.run(2 * hv.profile.tsc_hz)
    assert seen["did"] == vmid_to_domainid(seen["vm"]) != vmid_to_domainid(0)
    assert seen["svc_bar"] is None  # gone from the Service VM's EPT while assigned


# ------------------------------------------------------------- a pre-launched VM
def test_a_pre_launched_vm_gets_its_device_from_its_scenario():
    n = 10
    pre = pre_launched(image_path("sensor.elf"), cmdline=f"n={n}", pci_devs=["00:1f.0"])
    hv = run([pre, *with_service_vm([])])
    text = console(hv, "PRE_VM0")
    assert "sensor: PASS" in text and result_line(text)["msis"] == n, text
    vm = hv.vms[0]
    assert hv.pdev_owner[SID] is vm
    assert hv.vtd.device_domain[SID].domain_id == vmid_to_domainid(vm.vm_id)
    svc = hv.service_vm()
    assert SID not in svc.vpci.vdevs  # the Service VM does not see it
    assert svc.ept.walk(hv.platform.bars(SID)[0][1]) is None


def test_a_pre_launched_device_must_be_on_the_board():
    pre = pre_launched(image_path("hello.elf"), pci_devs=["00:1e.0"])
    with pytest.raises(ConfigError, match="no device at 00:1e.0 on the board"):
        run([pre, *with_service_vm([])])


# ---------------------------------------------------------- what exits and what does not
def test_bar_accesses_make_no_exit_and_configuration_accesses_do():
    hv = run(passthru_user_vm(8))
    vm = next(v for v in hv.vms if v.name == "PTVM")
    reads, writes = hv.pt_mmio_accesses["PTVM"]
    assert reads >= 8 and writes >= 16  # INTR read and W1C, doorbells, set-up
    exits = hv.tracer.of_kind("vmexit")
    mine = [e for e in exits if e.vm == vm.vm_id]
    assert not [e for e in mine if e.args["reason"] == ExitReason.EPT_VIOLATION]
    cfc = [e for e in mine if e.args["reason"] == ExitReason.IO_INSTRUCTION
           and (int(e.args["qualification"], 16) >> 16) & 0xFFFC == 0xCFC]  # fmt: skip
    assert cfc  # every configuration access is an exit...
    # ...answered by the hypervisor's vPCI: none of them went to the device model
    devices = {d for per_vm in hv.ioreq_steps.breakdown().values() for d in per_vm}
    assert not [d for d in devices if "passthru" in d or "00:07" in d]


def test_the_emulated_device_is_reached_through_exits_instead():
    hv = run(passthru_user_vm(4, slot="7,sensor,latency_us=20"))
    assert "sensor: PASS" in console(hv, "PTVM")
    vm = next(v for v in hv.vms if v.name == "PTVM")
    mine = [e for e in hv.tracer.of_kind("vmexit") if e.vm == vm.vm_id]
    assert [e for e in mine if e.args["reason"] == ExitReason.EPT_VIOLATION]
    assert "PTVM" not in hv.pt_mmio_accesses


# ------------------------------------------------------------------------- isolation
def test_dma_into_other_vms_the_hypervisor_and_past_its_ram_faults_and_writes_nothing():
    targets = dma_attack._layout(dma_attack._configs())
    configs = dma_attack._configs(targets)
    hv = booted(configs, dma_attack.PLATFORM)
    # what the pages hold before: the hypervisor's EPT root is not zero
    before = {name: hv.mem.read(hpa, 0x1000) for name, hpa in targets.items()}
    assert any(before.values())
    result = hv.run(hv.profile.tsc_hz)
    after = {name: hv.mem.read(hpa, 0x1000) for name, hpa in targets.items()}
    assert result.status == "done"
    assert after == before
    faults = hv.vtd.faults
    writes = [f for f in faults if f.is_write]
    assert sorted(f.address for f in writes) == sorted(targets.values())
    assert all(f.reason == 0x5 and f.sid == SID and f.vm == "ATTACKER" for f in writes)
    (read,) = [f for f in faults if not f.is_write]
    assert read.reason == 0x6 and read.address == list(targets.values())[0]
    assert len(hv.tracer.of_kind("vtd")) == len(faults)  # each one in the trace
    victim = next(v for v in hv.vms if v.name == "VICTIM")
    assert victim.shutdown.exit_code == 0 and victim.console.count(b"tick ") == 10
    attacker = console(hv, "ATTACKER")
    assert "dmaattack: done" in attacker and attacker.count("descriptor flags 1") == 3
    stats = hv.stats.to_json()["vtd"]
    assert stats["fault_records"] == len(faults) and stats["units"][0]["faults"] == len(faults)


@pytest.mark.parametrize("where", ["user", "pre"])
def test_a_device_not_given_to_a_vm_cannot_be_reached_from_it(where):
    """Neither its configuration space (the VM's vPCI or device model has no such device)
    nor its registers (the physical BAR's address is not in the VM's EPT)."""
    probe = f"probe={0xC0000000:#x}"  # the sensor's BAR on the board (the first in the window)
    if where == "user":
        vm = user_vm(image_path("dmaattack.elf"), cmdline=probe, name="OTHER")
        configs = with_service_vm([vm])
    else:
        configs = [pre_launched(image_path("dmaattack.elf"), cmdline=probe, name="OTHER"),
                   *with_service_vm([])]  # fmt: skip
    hv = run(configs)
    assert hv.platform.bars(SID)[0][1] == 0xC0000000
    text = console(hv, "OTHER")
    assert "dmaattack: done" in text
    assert "1234:d5a0" not in text  # not on its bus
    assert "probe c0000000 reads ffffffff" in text
    assert hv.platform.devices[SID].stats()["requests"] == 0


def test_a_user_vm_cannot_be_given_a_device_another_vm_holds():
    pre = pre_launched(image_path("hello.elf"), pci_devs=["00:1f.0"], pcpu=2)
    configs = [pre, *passthru_user_vm(2)]
    with pytest.raises(ConfigError, match="the Service VM has no PCI device 00:1f.0"):
        run(configs)


# -------------------------------------------------------------------- interrupts
def test_posted_and_lapic_passthrough_interrupts_take_fewer_steps_than_remapped():
    remapped = run(passthru_user_vm(6), trace=False)
    posted = run(passthru_user_vm(6), board=PlatformConfig(BOARD.devices, True), trace=False)
    rt = pre_launched(image_path("sensor.elf"), cmdline="n=6 x2apic=1", pci_devs=["00:1f.0"])
    rt.vm_type, rt.lapic_passthrough = "RTVM", True
    lapic_pt = run([rt, *with_service_vm([])])
    for hv, name in ((remapped, "PTVM"), (posted, "PTVM"), (lapic_pt, "PRE_VM0")):
        assert "sensor: PASS" in console(hv, name)
    assert remapped.ptdev.counts["PTVM remapped"] == 6
    assert posted.ptdev.counts["PTVM posted"] == 6
    assert lapic_pt.ptdev.counts["PRE_VM0 lapic_pt"] == 6

    def msi_to_vlapic(hv):
        return max(r.irr - r.msi for r in hv.ptdev.records)

    assert msi_to_vlapic(lapic_pt) < msi_to_vlapic(posted) < msi_to_vlapic(remapped)
    # with LAPIC passthrough the measured requests make no VM exit at all
    res = result_line(console(lapic_pt, "PRE_VM0"))
    window = [e for e in lapic_pt.tracer.of_kind("vmexit")
              if e.vm == 0 and res["t0"] <= e.cycle <= res["t1"]]  # fmt: skip
    assert window == []


def test_an_interrupt_remapping_fault_is_recorded_and_reported():
    hv = Hypervisor(TimingProfile.load(), trace=True, platform=BOARD)
    hv.boot(with_service_vm([]) + [pre_launched(image_path("ticker.elf"))])
    # the device sends a remappable-format message naming an IRTE nobody programmed
    hv.env.call_later(1000, lambda _e: hv.platform.msi(SID, 0xFEE00000 | 9 << 5 | 1 << 4, 0))
    hv.run(hv.profile.tsc_hz)
    (f,) = hv.vtd.faults
    assert f.interrupt and f.address == 9 and f.reason == 0x22 and f.sid == SID
    assert hv.tracer.of_kind("vtd")


# ------------------------------------------------------------------- the DMAR table
def test_only_the_service_vm_finds_a_dmar_table():
    pre = pre_launched(image_path("hello.elf"), pcpu=2)
    user = user_vm(image_path("hello.elf"), name="POST_VM1")
    hv = run([pre, *with_service_vm([user])], trace=False)
    svc = hv.service_vm()
    dmar = find_table(lambda a, n: svc.copy_from_gpa(a, n), b"DMAR")
    assert dmar is not None and sum(dmar) % 256 == 0
    flags = dmar[37]
    drhd_flags, _, base = struct.unpack_from("<BBxxQ", dmar, 48 + 4)
    assert flags & 1 and drhd_flags & 1 and base == DRHD_BASE  # INTR_REMAP; INCLUDE_PCI_ALL
    assert svc.ept.walk(DRHD_BASE) is None  # its registers are not the Service VM's
    for vm in hv.vms:
        if vm is not svc:
            assert find_table(lambda a, n, vm=vm: vm.copy_from_gpa(a, n) or b"", b"DMAR") is None


# ---------------------------------------------------------------------- the command line
def test_command_line_board_and_passthrough(tmp_path):
    stats = tmp_path / "stats.json"
    r = cli("run", "guests/images/sensor.elf", "--pdev", "00:1f.0,sensor,latency_us=5",
            "-s", "7,passthru,00/1f/0", "--cmdline", "n=5", "--stats", str(stats))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "sensor: PASS" in r.stdout
    data = json.loads(stats.read_text())
    assert data["vtd"]["fault_records"] == 0 and data["vtd"]["units"][0]["translations"] > 0
    assert data["ptirq"]["POST_VM1 remapped"]["interrupts"] == 5
    assert data["pci_devices"]["00:1f.0"]["msis"] == 5


@pytest.mark.parametrize(
    "args, message",
    [
        (["--pdev", "00:1f.0,nic"], "unknown kind 'nic'"),
        ([], "the Service VM has no PCI device 00:1f.0"),
        (["--pdev", "00:1f.0,sensor", "--pdev", "00:1f.0,sensor"], "given twice"),
    ],
)
def test_command_line_errors_are_one_line(args, message):
    r = cli("run", "guests/images/sensor.elf", "-s", "7,passthru,00/1f/0", *args)
    assert r.returncode == 2
    lines = messages(r.stderr)
    assert len(lines) == 1 and message in lines[0], r.stderr


def test_the_dma_attack_scenario_reports_faults_and_unchanged_memory():
    r = cli("run", "scenarios/dma_attack.py")
    assert r.returncode == 0, r.stderr
    faults = next(ln for ln in r.stdout.splitlines() if ln.startswith("VT-d faults: "))
    assert int(faults.split(": ")[1]) > 0
    assert "target memory unchanged: yes" in r.stdout.splitlines()


def test_the_reset_register_beside_the_configuration_ports_still_reaches_the_device_model():
    """With a passthrough device the hypervisor claims 0xCF8-0xCFF, but only the dword at
    0xCF8 and the data ports are its: 0xCF9 stays the device model's reset control."""
    hv = run(passthru_user_vm(image="reset.elf", cmdline="x"))
    dm = hv.service_vm().software.dms["PTVM"]
    assert dm.exit_code == 0 and dm.resets == 1
    assert "second boot: CMOS 0x50 = 5a" in console(hv, "PTVM")
    assert hv.pdev_owner[SID] is hv.service_vm()  # given back at its shutdown


def test_stream_mode_interrupts_at_the_devices_own_rate():
    period_us = 20
    board = PlatformConfig(devices=[f"00:1f.0,sensor,period_us={period_us}"])
    pre = pre_launched(image_path("sensor.elf"), cmdline="stream=40", pci_devs=["00:1f.0"])
    hv = run([pre, *with_service_vm([])], board=board, trace=False)
    text = console(hv, "PRE_VM0")
    assert "sensor: PASS" in text and "samples=40" in text and "drops=0" in text, text
    msis = [r.msi for r in hv.ptdev.records]
    assert len(msis) == 40
    period = period_us * hv.profile.tsc_hz // 1_000_000
    gaps = [b - a for a, b in zip(msis, msis[1:], strict=False)]
    # samples on the device's grid; the first gap is short by its DMA's IOTLB misses
    assert set(gaps[1:]) == {period} and gaps[0] < period


def test_a_device_pointed_at_its_own_bar_harms_nothing():
    """The VM's EPT maps its vBAR, so the IOMMU lets the DMA through, but it reaches no RAM
    (peer-to-peer is not modelled): dropped, reported by the device as an error, no fault,
    and the run goes on."""
    hv = run(passthru_user_vm(image="dmaattack.elf", cmdline="targets=0x80000000 ring=0x80000000"))
    text = console(hv, "PTVM")
    assert "dmaattack: done" in text and "dma errors 1" in text, text
    assert hv.platform.unclaimed_dma == 2 and not hv.vtd.faults
    assert hv.result.status == "done"
