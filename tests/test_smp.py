"""SMP: a VM with two vCPUs, each with its own engine over the VM's memory; the boot CPU
starts the other with INIT-SIPI-SIPI; IPIs between them."""

import pytest

from acrn_sim.guests import image_path
from acrn_sim.scenarios import pre_launched, service_vm, user_vm, with_service_vm
from conftest import boot_configs


def _smp(user: bool, image: str = "smp.elf"):
    if user:
        vm = user_vm(image_path(image), name="POST_VM1")
        vm.cpu_affinity = [1, 2]
        return boot_configs(with_service_vm([vm]), main="POST_VM1", until=2_400_000_000)
    vm = pre_launched(image_path(image))
    vm.cpu_affinity = [1, 2]
    return boot_configs([vm, service_vm()], main="PRE_VM0", until=2_400_000_000)


@pytest.mark.parametrize("user", [False, True])
def test_second_vcpu_starts_with_init_sipi_sipi_and_both_print(user):
    run = _smp(user)
    console = run.console_of(run.vm.name)
    assert run.exit_code == 0, console
    assert "BSP: APIC ID 0, starting vCPU 1" in console
    assert "AP: vCPU with APIC ID 1 is up" in console
    assert "AP: IPI 3a received" in console
    assert "both vCPUs printed; PASS" in console
    # the first Startup IPI starts the AP; the second is ignored, as on hardware
    sipis = [e for e in run.hv.tracer.of_kind("vm") if "SIPI" in e.name]
    assert len(sipis) == 1 and sipis[0].vcpu == 1
    # both vCPUs ran guest code, each on its own pCPU
    vcpus = run.hv.stats.to_json()["vms"][run.vm.name]["vcpus"]
    assert vcpus["0"]["guest"] > 0 and vcpus["1"]["guest"] > 0
    assert [v.pcpu_id for v in run.vm.vcpus] == [1, 2]


def test_an_ap_without_a_startup_ipi_never_runs():
    run = _smp(False, "hello.elf")
    assert run.exit_code == 0
    vcpus = run.hv.stats.to_json()["vms"]["PRE_VM0"]["vcpus"]
    assert "1" not in vcpus  # no time of any kind: guest, exits, halted
    assert not any(e.vcpu == 1 for e in run.hv.tracer.of_kind("vmexit") if e.vm == run.vm.vm_id)
