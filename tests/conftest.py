"""Shared helpers: boot a guest image as a pre-launched VM beside the Service VM, in-process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from acrn_sim.guests import image_path
from acrn_sim.hv.hypervisor import Hypervisor
from acrn_sim.scenarios import pre_launched, service_vm, user_vm, with_service_vm
from acrn_sim.sim.timing import TimingProfile

ROOT = Path(__file__).resolve().parents[1]


class Run:
    def __init__(self, hv, result, main: str = "PRE_VM0"):
        self.hv = hv
        self.result = result
        self.vm = next(v for v in hv.vms if v.name == main)
        self.service_vm = hv.service_vm()

    @property
    def console(self) -> str:
        return self.console_of(self.vm.name)

    def console_of(self, name: str) -> str:
        vm = next(v for v in self.hv.vms if v.name == name)
        if vm.is_post_launched:  # its console is the device model's UART
            return self.hv.consoles.get(name, b"").decode().replace("\r", "")
        return vm.console.decode().replace("\r", "")

    def dm(self, name: str = "POST_VM1"):
        return self.service_vm.software.dms[name]

    @property
    def exit_code(self) -> int | None:
        """What the VM under study wrote to port 0xF4 (a User VM's device model saw it)."""
        if self.vm.is_post_launched:
            return self.dm(self.vm.name).exit_code
        return self.vm.shutdown.exit_code if self.vm.shutdown else None


def boot(
    image: str,
    *,
    costs=(),
    busy=False,
    trace=True,
    seed=0,
    cmdline="",
    mem=32 << 20,
    before_run=None,
    until=None,
    watched=True,
    hotpath="auto",
    detect_smc=False,
) -> Run:
    profile = TimingProfile.load()
    for c in costs:
        profile.override(c)
    hv = Hypervisor(profile, seed=seed, trace=trace, hotpath=hotpath, detect_smc=detect_smc)
    vm = pre_launched(image_path(image) if "/" not in image else image, memory=mem, cmdline=cmdline)
    vm.watched = watched
    hv.boot([vm, service_vm(busy)])
    if before_run:
        before_run(hv)
    result = hv.run(until)
    return Run(hv, result)


def boot_user(
    images,
    *,
    costs=(),
    busy=False,
    polling=False,
    trace=True,
    cmdlines=None,
    until=None,
    hotpath="auto",
) -> Run:
    """User VMs (POST_VM1, POST_VM2, ... on pCPUs 1, 2, ...) beside the Service VM."""
    if isinstance(images, str):
        images = [images]
    vms = [
        user_vm(
            image_path(img),
            cmdline=(cmdlines or [""] * len(images))[i],
            pcpu=i + 1,
            name=f"POST_VM{i + 1}",
            polling=polling,
        )
        for i, img in enumerate(images)
    ]
    return boot_configs(
        with_service_vm(vms, busy=busy),
        main="POST_VM1",
        until=until,
        costs=costs,
        trace=trace,
        hotpath=hotpath,
    )


def boot_configs(
    configs,
    *,
    main: str,
    scheduler: str = "bvt",
    until=None,
    costs=(),
    trace=True,
    hotpath="auto",
    platform=None,
) -> Run:
    """Any list of VmConfig, with the scheduler given; consoles collected per VM; `platform`:
    the board's PCI devices (a sim.platform.PlatformConfig)."""
    profile = TimingProfile.load()
    for c in costs:
        profile.override(c)
    consoles: dict[str, bytes] = {}

    def sink(name, data):
        consoles[name] = consoles.get(name, b"") + data

    hv = Hypervisor(profile, console_sink=sink, scheduler=scheduler, trace=trace, hotpath=hotpath,
                    platform=platform)  # fmt: skip
    hv.consoles = consoles
    hv.boot(configs)
    return Run(hv, hv.run(until), main=main)


def boot_as(image: str, user: bool) -> Run:
    """The same guest as a User VM (through the device model) or as a pre-launched VM."""
    return boot_user(image) if user else boot(image)


def messages(stderr: str) -> list[str]:
    """stderr's lines, leaving out informational notes (e.g. the slower-path notice of an
    install without a C compiler)."""
    return [ln for ln in stderr.strip().splitlines() if not ln.startswith("acrn-sim: note:")]


# The command line, as `acrn-sim` runs it
CLI = [sys.executable, "-m", "acrn_sim.scenarios.cli"]


def cli(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def tmp(tmp_path):
    return tmp_path


def boot_virtio(vms, *, main="POST_VM1", until=None, costs=(), trace=False, hotpath="auto"):
    """User VMs with virtio devices: `vms` is a list of (image, command line, -s options) or
    of dicts of user_vm() arguments; VM i is POST_VM{i+1} on pCPU i+1."""
    configs = []
    for i, spec in enumerate(vms):
        kw = (
            dict(spec)
            if isinstance(spec, dict)
            else dict(zip(("image", "cmdline", "devices"), spec, strict=True))
        )
        kw["image"] = image_path(kw["image"]) if "/" not in kw["image"] else kw["image"]
        configs.append(user_vm(pcpu=i + 1, name=f"POST_VM{i + 1}", **kw))
    return boot_configs(
        with_service_vm(configs), main=main, until=until, costs=costs, trace=trace, hotpath=hotpath
    )
