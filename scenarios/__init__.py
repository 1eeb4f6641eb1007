"""Runnable scenario scripts, and the helpers they share.

A scenario script is a Python file with a function `scenario(opts) -> list[VmConfig]`; `opts`
holds the command-line options (mem, cmdline, service_vm_busy, ...). `acrn-sim run FILE.py` runs it.
What else a script may define (SCHEDULER, PARAMS, RUNS, report, results_json, summary) is in
scenarios/api.py (Scenario), which loads and runs scripts for the command line and for Python.
"""

from acrn_sim.guests import image_path
from acrn_sim.guests.service_vm.dm import ServiceVmSoftware, UserVmConfig
from acrn_sim.hv.common.vm import POST_LAUNCHED_VM, PRE_LAUNCHED_VM, SERVICE_VM, VmConfig
from acrn_sim.sim import ConfigError

SERVICE_VM_MEM = 32 << 20
SERVICE_VM_OWN = 16 << 20  # what the Service VM's own guest image may use; the rest is a pool


def _align_2m(size: int) -> int:
    return (size + (2 << 20) - 1) & ~((2 << 20) - 1)


def service_vm(busy: bool = False, pcpu: int = 0, user_vms: list[VmConfig] = ()) -> VmConfig:
    """The Service VM running the built-in guest (idle: halts; busy: computes) and, when there
    are User VMs, its modelled software: HSM and one device model per User VM."""
    user_vms = list(user_vms)
    memory = SERVICE_VM_MEM
    if user_vms:
        # each User VM: its RAM in 2 MiB huge pages, then its IOREQ page (which makes the
        # next RAM start at the following 2 MiB boundary); 2 MiB more for HSM's own pages
        memory = SERVICE_VM_OWN + (2 << 20) + sum(_align_2m(c.memory) + (2 << 20) for c in user_vms)
    config = VmConfig(
        name="Service_VM",
        load_order=SERVICE_VM,
        image=image_path("service_vm.elf"),
        memory=(memory + (2 << 20) - 1) & ~((2 << 20) - 1),
        cpu_affinity=[pcpu],
        cmdline="busy" if busy else "idle",
        watched=False,
    )
    if user_vms:
        dms = [
            UserVmConfig(
                c.name,
                c.image,
                c.memory,
                c.cmdline,
                c.cpu_affinity,
                c.io_completion_polling,
                c.priority,
                c.initrd,
                list(c.devices),
                c.virtio_poll,
                c.console_input,
            )
            for c in user_vms
        ]
        config.software = ModelledServiceVm(config, dms)
    return config


class ModelledServiceVm:
    """The Service VM's software modelled in Python (HSM and a device model per User VM), as
    a scenario gives it (VmConfig.software): built at boot on the Service VM's port, and kept
    here (`instance`) for what the scenario reads of it afterwards, such as the exit code a
    device model saw its User VM write."""

    def __init__(self, config: VmConfig, dms: list[UserVmConfig]) -> None:
        self.config = config
        self.dms = dms
        self.instance: ServiceVmSoftware | None = None

    def __call__(self, port) -> ServiceVmSoftware:
        c = self.config
        self.instance = ServiceVmSoftware(
            port,
            self.dms,
            (SERVICE_VM_OWN, c.memory),
            c.vm_manager,
            c.dm_priority_inheritance,
        )
        return self.instance


def device_model(configs: list[VmConfig], name: str):
    """The device model of User VM `name` in a run of `configs`, or None."""
    for c in configs:
        if isinstance(c.software, ModelledServiceVm) and c.software.instance is not None:
            return c.software.instance.dms.get(name)
    return None


def pre_launched(
    image: str,
    memory: int = 32 << 20,
    cmdline: str = "",
    pcpu: int = 1,
    name: str = "PRE_VM0",
    pci_devs: list[str] = (),
) -> VmConfig:
    """A VM the hypervisor starts itself. `pci_devs`: the board's PCI devices passed through
    to it ("00:1f.0": ACRN's <pci_devs>); the board has them from the scenario's PLATFORM or
    the command line's --pdev (scenarios/board.py)."""
    return VmConfig(
        name=name,
        load_order=PRE_LAUNCHED_VM,
        image=image,
        memory=memory,
        cpu_affinity=[pcpu],
        cmdline=cmdline,
        pci_devs=list(pci_devs),
    )


def user_vm(
    image: str,
    memory: int = 32 << 20,
    cmdline: str = "",
    pcpu: int = 1,
    name: str = "POST_VM1",
    polling: bool = False,
    initrd: str | None = None,
    devices: list[str] = (),
    virtio_poll: int = 0,
    console_input: bytes = b"",
) -> VmConfig:
    """A post-launched User VM: created at run time by its device model in the Service VM.
    `image` is a Multiboot/ELF image or a Linux bzImage (acrn-dm's -k), `initrd` goes with a
    bzImage (-r) and `cmdline` is the kernel's command line (-B). `devices`: PCI devices in
    acrn-dm's -s form, e.g. ["3,virtio-blk,disk.img,ro", "4,virtio-net,tap0,vhost"];
    `virtio_poll`: acrn-dm's --virtio_poll period in ns; `console_input`: what a
    virtio-console's host side sends to the guest. The -s options are checked here, so that
    a bad one stops the scenario before it runs."""
    from acrn_sim.guests.service_vm.pci_emul import parse_slots

    parse_slots(devices)
    check_virtio_poll(virtio_poll)
    return VmConfig(
        name=name,
        load_order=POST_LAUNCHED_VM,
        image=image,
        memory=memory,
        cpu_affinity=[pcpu],
        cmdline=cmdline,
        io_completion_polling=polling,
        initrd=initrd,
        devices=list(devices),
        virtio_poll=virtio_poll,
        console_input=console_input,
    )


def check_virtio_poll(ns: int) -> None:
    """acrn_parse_virtio_poll_interval: 1 us to 10 ms."""
    if ns and not 1_000 <= ns <= 10_000_000:
        raise ConfigError(f"--virtio_poll {ns}: the interval is 1000 to 10000000 ns (1 us-10 ms)")


def with_service_vm(user_vms: list[VmConfig], busy: bool = False) -> list[VmConfig]:
    """The usual shared scenario: the Service VM (VM0, pCPU 0) and User VMs created by it."""
    return [service_vm(busy, user_vms=user_vms), *user_vms]


def simulate(
    configs: list[VmConfig], opts, scheduler: str, until: int | None = None, platform=None,
    profile=None,
):  # fmt: skip
    """Run one configuration for a scenario script's main(): the command line's timing
    profile (or `profile`), seed and hot path; consoles collected per VM in hv.consoles;
    `platform`: the board (a sim.platform.PlatformConfig)."""
    from acrn_sim.hv.hypervisor import Hypervisor  # here: scenario modules stay cheap to import

    consoles: dict[str, bytes] = {}

    def sink(name: str, data: bytes) -> None:
        consoles[name] = consoles.get(name, b"") + data

    hv = Hypervisor(
        profile or opts.profile_obj, seed=opts.seed, console_sink=sink, hotpath=opts.hotpath,
        scheduler=scheduler, trace=False, platform=platform,
    )  # fmt: skip
    hv.consoles = consoles
    hv.boot(configs)
    return hv, hv.run(until)


def param(opts, key: str, default, kind=int):
    """A --set parameter of a scenario script, converted, with a clear error."""
    raw = getattr(opts, "params", {}).get(key)
    if raw is None:
        return default
    if kind is bool:
        if raw not in ("yes", "no"):
            raise ConfigError(f"--set {key}={raw}: expected yes or no")
        return raw == "yes"
    try:
        return kind(raw)
    except ValueError:
        raise ConfigError(f"--set {key}={raw}: expected {kind.__name__}") from None


def results(console: bytes) -> dict[str, int] | None:
    """The guest's last "result key=value ..." line (guests/src/workload.c), or None."""
    lines = [ln for ln in console.decode(errors="replace").splitlines() if ln.startswith("result ")]
    if not lines:
        return None
    return {k: int(v) for k, v in (kv.split("=") for kv in lines[-1].split()[1:])}


def histogram(console: bytes) -> dict[int, int]:
    """The guest's "hist BUCKET COUNT" lines: wake-up latency in 1 us buckets."""
    out = {}
    for ln in console.decode(errors="replace").splitlines():
        if ln.startswith("hist "):
            _, b, n = ln.split()
            out[int(b)] = int(n)
    return out
