"""Shared helpers: boot a guest image as a pre-launched VM beside the Service VM, in-process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from guests import image_path
from hv.hypervisor import Hypervisor
from scenarios import pre_launched, service_vm
from sim.timing import TimingProfile

ROOT = Path(__file__).resolve().parents[1]


class Run:
    def __init__(self, hv, result):
        self.hv = hv
        self.result = result
        self.vm = hv.vms[0]
        self.service_vm = hv.vms[1]

    @property
    def console(self) -> str:
        return self.vm.console.decode().replace("\r", "")


def boot(image: str, *, costs=(), busy=False, trace=True, seed=0, cmdline="", mem=32 << 20,
         before_run=None, until=None, watched=True, hotpath="auto") -> Run:  # fmt: skip
    profile = TimingProfile.load()
    for c in costs:
        profile.override(c)
    hv = Hypervisor(profile, seed=seed, trace=trace, hotpath=hotpath)
    vm = pre_launched(image_path(image) if "/" not in image else image, memory=mem,
                      cmdline=cmdline)  # fmt: skip
    vm.watched = watched
    hv.boot([vm, service_vm(busy)])
    if before_run:
        before_run(hv)
    result = hv.run(until)
    return Run(hv, result)


def cli(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "scenarios.cli", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


@pytest.fixture
def tmp(tmp_path):
    return tmp_path
