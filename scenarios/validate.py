"""Checks of what a scenario script gives (its VmConfigs and module attributes) before any VM
is built: a wrong type or a value out of range gets one line naming the VM and the field,
instead of a traceback from deep inside the model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from acrn_sim.hv.common.schedule import PRIORITIES
from acrn_sim.hv.common.vm import LOAD_ORDERS, PRE_LAUNCHED_VM, VmConfig
from acrn_sim.sim import ConfigError
from acrn_sim.sim.limits import MAX_CMDLINE, MAX_VM_NAME, check_pcpus, check_vm_memory
from acrn_sim.sim.units import MAX_CYCLES

VM_TYPES = ("STANDARD_VM", "RTVM")
BVT_WEIGHT_RANGE = (1, 128)  # ACRN's sched_bvt weights
VM_MANAGER_OPS = ("pause", "resume")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_bool(vm: str, field: str, v: Any) -> None:
    if not isinstance(v, bool):
        raise ConfigError(f"VM {vm}: {field} must be True or False, not {v!r:.40}")


def _check_choice(vm: str, field: str, v: Any, choices) -> None:
    if not isinstance(v, str) or v not in choices:
        raise ConfigError(f"VM {vm}: {field} must be one of {', '.join(choices)}, not {v!r:.40}")


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise ConfigError(f"a VM's name must be a non-empty string, not {name!r:.40}")
    # The name travels in HC_CREATE_VM's 16-byte field and names trace tracks and messages.
    if len(name.encode("utf-8", "surrogateescape")) > MAX_VM_NAME or not name.isprintable():
        raise ConfigError(
            f"VM name {name!r:.40}: at most {MAX_VM_NAME} bytes of printable characters"
        )
    return name


def check_cmdline(what: str, cmdline: Any) -> None:
    """A Multiboot command line: a string of at most MAX_CMDLINE bytes, no NUL. (A str from
    the command line holds bytes that are not UTF-8 as surrogate escapes: they count as the
    bytes they stand for.)"""
    if not isinstance(cmdline, str):
        raise ConfigError(f"{what} must be a string, not {cmdline!r:.40}")
    data = cmdline.encode("utf-8", "surrogateescape")
    if len(data) > MAX_CMDLINE:
        raise ConfigError(f"{what} is {len(data)} bytes, at most {MAX_CMDLINE}")
    if b"\0" in data:
        raise ConfigError(f"{what} holds a NUL byte")


def check_config(c: Any) -> None:
    """Every field of one VmConfig: type, then range."""
    if not isinstance(c, VmConfig):
        raise ConfigError(f"a scenario's VMs must be VmConfig objects, not {c!r:.40}")
    vm = check_name(c.name)
    _check_choice(vm, "load_order", c.load_order, LOAD_ORDERS)
    if not isinstance(c.image, str) or not c.image:
        raise ConfigError(f"VM {vm}: image must be a path string, not {c.image!r:.40}")
    if not _is_int(c.memory):
        raise ConfigError(f"VM {vm}: memory must be a number of bytes, not {c.memory!r:.40}")
    check_vm_memory(c.memory, f"VM {vm}: memory")
    if not isinstance(c.cpu_affinity, list | tuple) or not all(_is_int(p) for p in c.cpu_affinity):
        raise ConfigError(
            f"VM {vm}: cpu_affinity must be a list of pCPU numbers, not {c.cpu_affinity!r:.40}"
        )
    check_pcpus(list(c.cpu_affinity), f"VM {vm}: cpu_affinity")
    check_cmdline(f"VM {vm}: cmdline", c.cmdline)
    _check_choice(vm, "vm_type", c.vm_type, VM_TYPES)
    for field in ("watched", "io_completion_polling", "lapic_passthrough"):
        _check_bool(vm, field, getattr(c, field))
    _check_bool(vm, "dm_priority_inheritance", c.dm_priority_inheritance)
    if c.software is not None and not callable(c.software):
        raise ConfigError(f"VM {vm}: software must be None or a factory, not {c.software!r:.40}")
    _check_choice(vm, "priority", c.priority, tuple(PRIORITIES))
    lo, hi = BVT_WEIGHT_RANGE
    if not _is_int(c.bvt_weight) or not lo <= c.bvt_weight <= hi:
        raise ConfigError(f"VM {vm}: bvt_weight must be an integer from {lo} to {hi}")
    if not isinstance(c.pci_devs, list | tuple) or not all(isinstance(d, str) for d in c.pci_devs):
        raise ConfigError(f"VM {vm}: pci_devs must be a list of PCI addresses like '00:1f.0'")
    if c.pci_devs and c.load_order != PRE_LAUNCHED_VM:
        raise ConfigError(f"VM {vm}: pci_devs is for a pre-launched VM (a User VM's device "
                          "model passes devices through: -s N,passthru,BB/DD/F)")  # fmt: skip
    if not isinstance(c.vm_manager, list | tuple):
        raise ConfigError(f"VM {vm}: vm_manager must be a list, not {c.vm_manager!r:.40}")
    for cmd in c.vm_manager:
        ok = isinstance(cmd, tuple | list) and len(cmd) == 4
        if ok:
            cycle, op, name, vcpu = cmd
            ok = (
                _is_int(cycle)
                and 0 <= cycle <= MAX_CYCLES
                and op in VM_MANAGER_OPS
                and isinstance(name, str)
                and (vcpu is None or (_is_int(vcpu) and vcpu >= 0))
            )
        if not ok:
            raise ConfigError(
                f"VM {vm}: vm_manager entry {cmd!r:.60} is not (cycle, 'pause'|'resume', "
                "VM name, vCPU or None)"
            )


def check_configs(configs: Any, where: str) -> list[VmConfig]:
    if not isinstance(configs, list | tuple) or not configs:
        raise ConfigError(f"{where}: scenario() must return a list of VmConfig")
    if not all(isinstance(c, VmConfig) for c in configs):
        raise ConfigError(f"{where}: scenario() must return a list of VmConfig")
    for c in configs:
        check_config(c)
    return list(configs)


def check_module(module: Any, where: str, schedulers) -> dict[str, Any]:
    """A scenario module's optional attributes: SCHEDULER, PARAMS, report, main."""
    scheduler = getattr(module, "SCHEDULER", None)
    if scheduler is not None and (not isinstance(scheduler, str) or scheduler not in schedulers):
        raise ConfigError(
            f"{where}: SCHEDULER must be one of {', '.join(schedulers)}, not {scheduler!r:.40}"
        )
    params = getattr(module, "PARAMS", ())
    if isinstance(params, str) or not isinstance(params, list | tuple | set | frozenset):
        raise ConfigError(f"{where}: PARAMS must be a list of names, not {params!r:.40}")
    if not all(isinstance(p, str) for p in params):
        raise ConfigError(f"{where}: PARAMS must be a list of names (strings)")
    out: dict[str, Any] = {"scheduler": scheduler, "params": tuple(params)}
    # PLATFORM: the board's devices (scenarios/board.py checks it when the run builds it)
    out["platform"] = getattr(module, "PLATFORM", None)
    for name in ("report", "main", "scenario"):
        fn: Callable | None = getattr(module, name, None)
        if fn is not None and not callable(fn):
            raise ConfigError(f"{where}: {name} must be a function, not {fn!r:.40}")
        out[name] = fn
    return out
