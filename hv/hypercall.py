"""Hypercall IDs and handlers (ACRN hypervisor/include/public/acrn_hv_defs.h,
hypervisor/common/hypercall.c). IDs are (0x80 << 24) | offset."""

from __future__ import annotations

import struct

HC_ID_BASE = 0x8000_0000
HC_GET_API_VERSION = HC_ID_BASE | 0x00
HC_SERVICE_VM_OFFLINE_CPU = HC_ID_BASE | 0x01
HC_SET_CALLBACK_VECTOR = HC_ID_BASE | 0x02
HC_CREATE_VM = HC_ID_BASE | 0x10
HC_DESTROY_VM = HC_ID_BASE | 0x11
HC_START_VM = HC_ID_BASE | 0x12
HC_PAUSE_VM = HC_ID_BASE | 0x13
HC_CREATE_VCPU = HC_ID_BASE | 0x14
HC_RESET_VM = HC_ID_BASE | 0x15
HC_SET_VCPU_REGS = HC_ID_BASE | 0x16
HC_INJECT_MSI = HC_ID_BASE | 0x23
HC_SET_IRQLINE = HC_ID_BASE | 0x25
HC_SET_IOREQ_BUFFER = HC_ID_BASE | 0x30
HC_NOTIFY_REQUEST_FINISH = HC_ID_BASE | 0x31
HC_VM_SET_MEMORY_REGIONS = HC_ID_BASE | 0x42

HV_API_MAJOR_VERSION = 1
HV_API_MINOR_VERSION = 0

EINVAL, ENOTTY, EFAULT = 22, 25, 14


def hcall_get_api_version(vcpu, param1: int, param2: int) -> int:
    """Write {u32 major, u32 minor} at the GPA in param1."""
    data = struct.pack("<II", HV_API_MAJOR_VERSION, HV_API_MINOR_VERSION)
    return 0 if vcpu.engine.write_phys(param1, data) else -EFAULT


# The dispatch table: hypercall ID -> handler(vcpu, param1, param2) -> int.
HYPERCALLS = {
    HC_GET_API_VERSION: hcall_get_api_version,
    HC_CREATE_VCPU: lambda vcpu, p1, p2: 0,  # a no-op in ACRN: vCPUs come with the VM
}
