"""VMCALL exits (ACRN hypervisor/arch/x86/guest/vmcall.c).

Convention: R8 = hypercall ID, RDI = param1, RSI = param2, RAX = result (0 or -errno).
Checks, in ACRN's order: only the Service VM (or a VM with the secure-world/TEE/REE flags) may
use VMCALL, anyone else gets #UD; CPL must be 0, else #GP(0); an unknown or refused ID returns
-ENOTTY.
"""

from __future__ import annotations

from acrn_sim.hv.common.hypercall import ENOTTY, HYPERCALLS
from acrn_sim.hv.common.trace import trace_hypercall
from acrn_sim.sim.engine import MASK64


def vmcall_vmexit_handler(vcpu) -> int:
    vm = vcpu.vm
    if not vm.is_service_vm:
        vcpu.queue_exception(6)  # #UD
        return 0
    cs = vcpu.engine.reg("cs")
    if cs & 3:
        vcpu.queue_exception(13, 0)
        return 0
    hcall_id, p1, p2 = vcpu.engine.regs(["r8", "rdi", "rsi"])
    vcpu.engine.set_reg("rax", hypercall(vcpu, hcall_id, p1, p2) & MASK64)
    return 0


def hypercall(vcpu, hcall_id: int, p1: int, p2: int) -> int:
    """The dispatch once the checks passed: the handler's result (0 or -errno)."""
    handler = HYPERCALLS.get(hcall_id & 0xFFFF_FFFF)
    ret = handler(vcpu, p1, p2) if handler else -ENOTTY
    if vcpu.hv.tracer.enabled:
        trace_hypercall(vcpu, hcall_id, ret)
    return ret
