"""The native block hook and the pure-Python one give byte-identical traces on every guest."""

import json

import pytest

from conftest import boot
from sim.hotpath import native_library

GUESTS = [
    "hello.elf",
    "hello64.elf",
    "cpuid.elf",
    "msr.elf",
    "exceptions.elf",
    "longmode.elf",
    "timing.elf",
    "unclaimed.elf",
    "triple.elf",
    "irqwin.elf",
]


def trace_of(image, hotpath):
    def inject(hv):
        if image == "irqwin.elf":  # exercises the interrupt window (slow mode of the hook)
            hv.vms[0].vcpus[0].queue_external_interrupt(0x31)

    run = boot(image, hotpath=hotpath, before_run=inject)
    return json.dumps(run.hv.tracer.chrome_trace(), sort_keys=True), run


@pytest.mark.skipif(native_library() is None, reason="native hot path not built")
@pytest.mark.parametrize("image", GUESTS)
def test_native_and_python_paths_identical(image):
    native, run_n = trace_of(image, "native")
    python, run_p = trace_of(image, "python")
    assert run_n.vm.vcpus[0].engine.hotpath == "native"
    assert run_p.vm.vcpus[0].engine.hotpath == "python"
    assert native == python
    assert run_n.vm.console == run_p.vm.console


def test_hotpath_python_is_always_available():
    _, run = trace_of("hello.elf", "python")
    assert run.vm.shutdown.exit_code == 0
