"""Event injection: an external interrupt made pending while IF = 0 opens the interrupt
window; it is injected after STI and its one-instruction shadow, through the guest's IDT."""

import pytest

from acrn_sim.hv.guest.vmcs import (
    FIELDS,
    VMX_GUEST_RIP,
    VMX_PROC_VM_EXEC_CONTROLS,
    VMX_PROCBASED_CTLS_IRQ_WIN,
    ExitReason,
    Vmcs,
)
from conftest import boot


def test_interrupt_waits_for_sti_then_arrives():
    def inject(hv):
        hv.vms[0].vcpus[0].queue_external_interrupt(0x31)

    run = boot("irqwin.elf", before_run=inject)
    assert run.vm.shutdown.exit_code == 0, run.console
    assert "interrupt while IF=0: 0, after STI: 1" in run.console
    exits = run.hv.stats.to_json()["vms"]["PRE_VM0"]["exits"]
    assert exits[ExitReason.INTERRUPT_WINDOW.name]["count"] == 1
    injected = [e for e in run.hv.tracer.of_kind("inject") if e.vm == 0]
    assert [e.args["vector"] for e in injected] == [0x31]
    # Injection happened after the window exit, never before it.
    window = [e for e in run.hv.tracer.of_kind("vmexit") if e.name == "INTERRUPT_WINDOW"][0]
    assert injected[0].cycle >= window.cycle


def test_without_injection_the_guest_reports_it():
    run = boot("irqwin.elf")
    assert run.vm.shutdown.exit_code == 1


def test_vmcs_holds_its_fields_from_creation_and_rejects_an_unknown_one():
    vmcs = Vmcs()
    assert vmcs.read(VMX_GUEST_RIP) == 0 and set(vmcs.fields) == set(FIELDS)
    vmcs.set_bits(VMX_PROC_VM_EXEC_CONTROLS, VMX_PROCBASED_CTLS_IRQ_WIN)
    vmcs.clear_bits(VMX_PROC_VM_EXEC_CONTROLS, VMX_PROCBASED_CTLS_IRQ_WIN | 1)
    assert vmcs.read(VMX_PROC_VM_EXEC_CONTROLS) == 0
    with pytest.raises(KeyError):
        vmcs.read(0x7FFE)  # no such encoding in the model: a VMREAD bug, not a zero
