"""The hypervisor: host memory, the VMs, the pCPUs' threads, and the run (ACRN's boot flow:
init, create the pre-launched VMs and the Service VM, start them, then schedule).

Host physical memory layout:
  [0, service)                   Service VM RAM (identity-mapped, GPA = HPA)
  [service, service + HV_SIZE)   the hypervisor: EPT tables, I/O bitmaps (removed from the
                                 Service VM's EPT, as ACRN removes its own image)
  then each pre-launched VM's RAM, 2 MiB aligned (removed from the Service VM's EPT too)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from acrn_sim.hv.arch import vmx
from acrn_sim.hv.arch.board import enable_board, init_board
from acrn_sim.hv.arch.irq import HostIrq
from acrn_sim.hv.boot.vboot import load_guest
from acrn_sim.hv.common.event import end_of_run
from acrn_sim.hv.common.ptdev import Ptdev
from acrn_sim.hv.common.schedule import SCHEDULERS, SchedControl
from acrn_sim.hv.common.vm import (
    LOAD_ORDERS,
    POST_LAUNCHED_VM,
    PRE_LAUNCHED_VM,
    SERVICE_VM,
    Vm,
    VmConfig,
    VmState,
)
from acrn_sim.hv.dm.io_req import STEP_NAMES
from acrn_sim.hv.public import HYPERVISOR_CALLBACK_HSM_VECTOR
from acrn_sim.hv.service_vm_port import ServiceVmPort
from acrn_sim.sim import ConfigError
from acrn_sim.sim.blockcost import BlockDecoder
from acrn_sim.sim.hostmem import HostMemory
from acrn_sim.sim.hotpath import choose as hotpath_choose
from acrn_sim.sim.hotpath import fallback_notice
from acrn_sim.sim.platform import Platform, PlatformConfig
from acrn_sim.sim.selftest import check_unicorn
from acrn_sim.sim.stats import Stats, StepLatency
from acrn_sim.sim.timeline import Timeline, check_simpy
from acrn_sim.sim.timing import TimingProfile
from acrn_sim.sim.trace import Tracer

HV_SIZE = 4 << 20
ALIGN_2M = (2 << 20) - 1


@dataclass
class RunResult:
    status: str  # "done" (every watched VM is off), "time_limit" or "stalled"
    end_cycle: int


class Hypervisor:
    def __init__(
        self,
        profile: TimingProfile,
        seed: int = 0,
        trace: bool = True,
        console_sink: Callable[[str, bytes], None] | None = None,
        hotpath: str = "auto",
        scheduler: str = "bvt",
        detect_smc: bool = False,
        platform: PlatformConfig | None = None,
    ) -> None:
        check_unicorn()
        check_simpy()
        if scheduler not in SCHEDULERS:
            raise ConfigError(
                f"unknown scheduler {scheduler!r} (choose from {', '.join(SCHEDULERS)})"
            )
        self.scheduler = scheduler
        self._sched: dict[int, SchedControl] = {}
        self._hotpath_requested = hotpath
        self.hotpath = hotpath_choose(hotpath)
        self.detect_smc = detect_smc  # self-modifying code: re-decode written blocks
        self.profile = profile
        self.seed = seed
        self.env = Timeline()
        self.tracer = Tracer(profile.tsc_hz, enabled=trace)
        # The I/O path's step recorder; the statistics summarize it when read
        self.ioreq_steps = StepLatency(self.env, names=STEP_NAMES)
        self.tracer.step_names = STEP_NAMES
        if trace:  # each finished request's steps become linked slices in the trace
            self.ioreq_steps.on_finish = self.tracer.io_request
        self.stats = Stats(profile.tsc_hz, self.ioreq_steps)
        self.decoder = BlockDecoder(profile, vmx.exits_before)
        self.console_sink = console_sink or (lambda name, data: None)
        self.vms: list[Vm] = []
        self._service_vm: Vm | None = None
        self.post_configs: dict[str, VmConfig] = {}  # created later by the device model
        self.hsm_vector = HYPERVISOR_CALLBACK_HSM_VECTOR
        self._ioreq_seq = 0
        self.run_limit: int | None = None
        self._done = self.env.event()
        self._reserved: list[tuple[int, int]] = []
        self.mem: HostMemory | None = None
        self._next_page = 0
        self._hv_end = 0
        self._watched: list[str] = []
        # VM name -> {guest linear address: label}: the cycle at which vCPU 0 first runs the
        # block holding each address is kept in that VM's boot_marks (a boot report's markers)
        self.exec_markers: dict[str, dict[int, str]] = {}
        # The board's PCI devices and VT-d (hv/arch/board.py): built at boot
        self.platform_config = platform or PlatformConfig()
        self.platform: Platform | None = None
        self.vtd = None  # hv/arch/vtd.py, when the board has devices
        self.irq = HostIrq(self)
        self.ptdev = Ptdev(self)
        self.pi_descs: dict = {}  # vCPU -> its posted-interrupt descriptor (HPA)
        self.pdev_owner: dict = {}  # requester id -> the VM that has the device
        self.pre_launched_pdevs: dict[str, list[int]] = {}
        self.board_notes: list[str] = []  # scenario devices the board does not have
        self.pt_mmio_accesses: dict[str, list[int]] = {}  # VM -> [BAR reads, BAR writes]

    # ------------------------------------------------------------ memory
    def alloc_pages(self, n: int = 1) -> int:
        hpa = self._next_page
        if hpa + n * 0x1000 > self._hv_end:
            raise ConfigError("hypervisor memory for EPT tables is exhausted")
        self._next_page += n * 0x1000
        self.mem.fill(hpa, n * 0x1000)
        return hpa

    def alloc_page(self) -> int:
        return self.alloc_pages(1)

    def reserved_ranges(self) -> list[tuple[int, int]]:
        return list(self._reserved)

    # -------------------------------------------------------------- boot
    def boot(self, configs: list[VmConfig]) -> None:
        """Create and start every VM the hypervisor launches itself (ACRN: pre-launched VMs
        and the Service VM). Post-launched VMs are created later by the Service VM."""
        names = set()
        used_pcpus: dict[int, str] = {}
        shares = SCHEDULERS[self.scheduler].shares_pcpus
        for c in configs:
            if c.load_order not in LOAD_ORDERS:
                raise ConfigError(f"VM {c.name}: unknown load order {c.load_order!r}")
            if c.name in names:
                raise ConfigError(f"VM name {c.name!r} is used twice")
            names.add(c.name)
            if c.memory % 0x1000 or c.memory <= 0:
                raise ConfigError(f"VM {c.name}: memory size must be a positive multiple of 4 KiB")
            if len(set(c.cpu_affinity)) != len(c.cpu_affinity) or not c.cpu_affinity:
                raise ConfigError(f"VM {c.name}: cpu_affinity must list distinct pCPUs")
            for p in c.cpu_affinity:
                if p in used_pcpus and not shares:
                    # ACRN sched_noop.c runs exactly one thread per pCPU.
                    raise ConfigError(
                        f"pCPU {p} is given to both {used_pcpus[p]} and {c.name}: the noop "
                        "scheduler runs one vCPU per pCPU"
                    )
                used_pcpus.setdefault(p, c.name)
        for c in configs:
            # CPU sharing is not allowed for RTVMs (ACRN doc/tutorials/cpu_sharing.rst).
            if c.vm_type == "RTVM":
                for other in configs:
                    common = set(c.cpu_affinity) & set(other.cpu_affinity)
                    if other is not c and common:
                        raise ConfigError(
                            f"RTVM {c.name} shares pCPU {min(common)} with {other.name}: an "
                            "RTVM needs dedicated pCPUs"
                        )
        if sum(c.load_order == SERVICE_VM for c in configs) > 1:
            raise ConfigError("a scenario has at most one Service VM")

        service = [c for c in configs if c.load_order == SERVICE_VM]
        svc_size = (service[0].memory + ALIGN_2M) & ~ALIGN_2M if service else 0
        layout = {}
        top = svc_size + HV_SIZE
        for c in configs:
            if c.load_order == PRE_LAUNCHED_VM:
                layout[c.name] = top
                self._reserved.append((top, c.memory))
                top = (top + c.memory + ALIGN_2M) & ~ALIGN_2M
        self._reserved.insert(0, (svc_size, HV_SIZE))
        self.mem = HostMemory(top)
        self._next_page, self._hv_end = svc_size, svc_size + HV_SIZE
        init_board(self, configs)

        self._watched = [c.name for c in configs if c.watched]
        for c in configs:
            if c.load_order == POST_LAUNCHED_VM:
                self.post_configs[c.name] = c
                continue
            vm = self._new_vm(c)
            vm.create(layout.get(c.name))
            load_guest(vm, c.image, c.cmdline)
            if c.software is not None:
                vm.software = c.software(ServiceVmPort(vm, self.console_sink))
        if self.post_configs and not service:
            raise ConfigError("post-launched VMs need a Service VM to create them")
        enable_board(self)
        for vm in self.vms:
            vm.start()

    def _new_vm(self, config: VmConfig) -> Vm:
        vm = Vm(self, len(self.vms), config)
        self.vms.append(vm)
        self.vms_changed()
        if vm.is_service_vm:
            self._service_vm = vm
        for vcpu in vm.vcpus:
            self.tracer.register_vcpu(vm.vm_id, config.name, vcpu.vcpu_id, vcpu.pcpu_id)
        return vm

    def sched_control(self, pcpu_id: int) -> SchedControl:
        ctl = self._sched.get(pcpu_id)
        if ctl is None:
            policy = SCHEDULERS[self.scheduler](self.profile.tsc_hz // 1000)
            ctl = self._sched[pcpu_id] = SchedControl(self, pcpu_id, policy)
        return ctl

    def sched_controls(self) -> dict[int, SchedControl]:
        """Each pCPU's scheduling state that was used in the run, by pCPU."""
        return dict(sorted(self._sched.items()))

    def trace_sched(self, ctl: SchedControl, thread) -> None:
        """A context switch on a pCPU: visible on that pCPU's track."""
        vm = thread.vm
        self.tracer.instant(
            "sched",
            f"pCPU{ctl.pcpu_id} -> VM{vm.vm_id} vCPU{thread.vcpu_id}",
            self.now(),
            ctl.pcpu_id,
            vm.vm_id,
            thread.vcpu_id,
            scheduler=ctl.policy.name,
        )

    def vm_by_id(self, vm_id: int) -> Vm | None:
        return self.vms[vm_id] if 0 <= vm_id < len(self.vms) else None

    def service_vm(self) -> Vm | None:
        return self._service_vm  # at most one, created at boot

    def create_post_launched_vm(self, name: str, vm_flag: int, affinity: int) -> Vm | None:
        """HC_CREATE_VM: find the scenario's VM by name (ACRN matches the configured name);
        the requested pCPU affinity must be a subset of the configured one."""
        config = self.post_configs.get(name)
        if config is None or any(v.name == name and v.shutdown is None for v in self.vms):
            return None
        configured = sum(1 << p for p in config.cpu_affinity)
        if affinity & ~configured:
            return None
        vm = self._new_vm(config)
        vm.vm_flag = vm_flag
        vm.create(None)
        self.trace_vm(vm, "created", flags=vm_flag)
        return vm

    def next_ioreq_seq(self) -> int:
        self._ioreq_seq += 1
        return self._ioreq_seq

    def fire_hsm_interrupt(self, vm: Vm) -> None:
        """ACRN arch_fire_hsm_interrupt: vlapic_set_intr of the HSM vector on Service VM
        vCPU 0, which kicks that vCPU if it runs on another pCPU (IPI 0xE1)."""
        svc = self.service_vm()
        if svc is None or svc.shutdown is not None:
            vm.crash(vm.vcpus[0], "I/O request with no Service VM to serve it")
            return
        vcpu0 = svc.vcpus[0]
        vector = self.hsm_vector
        self.env.call_later(
            self.profile.cycles["upcall_ipi"],
            lambda _ev: vcpu0.queue_external_interrupt(vector, tail_call=True),
        )

    # ------------------------------------------------------------- events
    def now(self) -> int:
        return self.env.now

    def trace_vm(self, vm: Vm, what: str, **args) -> None:
        args = {k: v for k, v in args.items() if v not in (None, "")}
        self.tracer.instant(
            "vm", f"VM{vm.vm_id} {what}", self.now(), vm.vcpus[0].pcpu_id, vm.vm_id, 0, **args
        )

    def vms_changed(self) -> None:
        """A VM was created or went down: which vCPUs can send each other events changed
        (hv/common/lookahead.py)."""
        for vm in self.vms:
            for vcpu in vm.vcpus:
                vcpu.senders = None

    def vm_stopped(self, vm: Vm) -> None:
        self.vms_changed()
        off = {v.name for v in self.vms if v.state is VmState.POWERED_OFF}
        if self._watched and all(name in off for name in self._watched):
            if not self._done.triggered:
                self._done.succeed()

    # ---------------------------------------------------------------- run
    def run(self, until: int | None = None) -> RunResult:
        """Run the timeline until every watched VM is off, the limit, or nothing can happen."""
        self.run_limit = until
        fallback_notice(self._hotpath_requested, self.hotpath)
        stop_on = self._done
        if until is not None:
            stop_on = self._done | self.env.timeout(until)
        if not self._watched and until is None:
            raise ConfigError("nothing to wait for: no watched VM and no --until limit")
        try:
            self.env.run(until=stop_on)
        except RuntimeError as e:
            if "No scheduled events left" not in str(e):
                raise
            return self._finish("stalled")
        return self._finish("done" if self._done.triggered else "time_limit")

    def _finish(self, status: str) -> RunResult:
        self.stats.end_cycle = self.now()
        for vm in self.vms:
            for vcpu in vm.vcpus:
                end_of_run(vcpu)
        return RunResult(status, self.now())
