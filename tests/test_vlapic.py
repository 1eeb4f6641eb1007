"""The vLAPIC: timer modes on the timeline, TPR, EOI, x2APIC; exits it causes."""

import re

import pytest

from conftest import boot, boot_user


@pytest.mark.parametrize("user", [False, True])
def test_lapic_guest(user):
    run = boot_user("lapic.elf") if user else boot("lapic.elf")
    code = run.dm().exit_code if user else run.vm.shutdown.exit_code
    assert code == 0, run.console
    assert "lapic: all checks passed" in run.console


def test_timer_fires_on_time_within_a_block():
    """The periodic timer's interrupts are injected exactly one period apart: the vCPU's
    slice ends at the expiry, so the guest sees no drift."""
    run = boot("lapic.elf")
    injected = [e.cycle for e in run.hv.tracer.of_kind("inject")
                if e.vm == run.vm.vm_id and e.args["vector"] == 0x31]  # fmt: skip
    assert len(injected) >= 5
    assert {b - a for a, b in zip(injected, injected[1:], strict=False)} == {12000}
    intervals = [int(x) for x in re.findall(r"periodic: interval (\d+)", run.console)]
    assert intervals and all(iv == 12000 for iv in intervals)


def test_xapic_accesses_are_apic_access_exits():
    run = boot("lapic.elf")
    exits = run.hv.stats.to_json()["vms"]["PRE_VM0"]["exits"]
    assert exits["APIC_ACCESS"]["count"] > 10
    assert exits["WRMSR"]["count"] >= 3  # TSC deadline, APIC_BASE, SELF_IPI/EOI in x2APIC


def test_msr_guest_still_passes_with_deadline_semantics():
    run = boot("msr.elf")
    assert run.vm.shutdown.exit_code == 0, run.console
