"""The board's DMA Remapping Reporting table (Intel VT-d specification §8: the DMAR ACPI table)
and the RSDP and XSDT that lead to it, as the platform firmware provides them.

DMAR (§8.1): the standard header, the host address width (N - 1 for an N-bit physical address
space), flags (bit 0 INTR_REMAP: the platform supports interrupt remapping; bit 1
X2APIC_OPT_OUT), then remapping structures. The board has one DMA Remapping Hardware Unit
Definition (DRHD, §8.3, type 0): INCLUDE_PCI_ALL (it covers every PCI device of segment 0),
its register base address, no device scopes.

Where it is: RSDP (revision 2) at FIRMWARE_ACPI_BASE, which the ACPI specification's RSDP
search (the 0xE0000-0xFFFFF BIOS area, 16-byte aligned; ACPI 6.x §5.2.5.1) finds, then the
XSDT and the DMAR. Who sees it is the hypervisor's business (hv/arch/board.py).
"""

from __future__ import annotations

import struct

from acrn_sim.sim.acpi import checksum

FIRMWARE_ACPI_BASE = 0xF0000
XSDT_OFFSET, DMAR_OFFSET = 0x40, 0x100
HOST_ADDRESS_WIDTH = 39  # physical address bits of the modelled part
DMAR_INTR_REMAP, DMAR_X2APIC_OPT_OUT = 0x1, 0x2
DRHD_INCLUDE_PCI_ALL = 0x1
OEM_ID, OEM_TABLE_ID = b"ACRSIM", b"SIMBOARD"


def _header(signature: bytes, revision: int, body: bytes) -> bytes:
    length = 36 + len(body)
    head = struct.pack("<4sIBB6s8sI4sI", signature, length, revision, 0, OEM_ID, OEM_TABLE_ID,
                       1, b"ASIM", 1)  # fmt: skip
    table = bytearray(head + body)
    table[9] = checksum(bytes(table))
    return bytes(table)


def build_dmar(drhd_base: int, intr_remap: bool = True) -> bytes:
    flags = DMAR_INTR_REMAP if intr_remap else 0
    drhd = struct.pack("<HHBBHQ", 0, 16, DRHD_INCLUDE_PCI_ALL, 0, 0, drhd_base)
    body = struct.pack("<BB10x", HOST_ADDRESS_WIDTH - 1, flags) + drhd
    return _header(b"DMAR", 1, body)


def build_tables(drhd_base: int) -> list[tuple[int, bytes]]:
    """(physical address, bytes) of the RSDP, the XSDT and the DMAR."""
    base = FIRMWARE_ACPI_BASE
    xsdt = _header(b"XSDT", 1, struct.pack("<Q", base + DMAR_OFFSET))
    rsdp = bytearray(struct.pack("<8sB6sBIIQB3x", b"RSD PTR ", 0, OEM_ID, 2, 0, 36,
                                 base + XSDT_OFFSET, 0))  # fmt: skip
    rsdp[8] = checksum(bytes(rsdp[:20]))
    rsdp[32] = checksum(bytes(rsdp))
    return [(base, bytes(rsdp)), (base + XSDT_OFFSET, xsdt),
            (base + DMAR_OFFSET, build_dmar(drhd_base))]  # fmt: skip


def find_table(read, signature: bytes) -> bytes | None:
    """Follow RSDP -> XSDT to the table with `signature` in memory read by read(addr, n)."""
    for rsdp_at in range(0xE0000, 0x100000, 16):
        if read(rsdp_at, 8) == b"RSD PTR ":
            break
    else:
        return None
    xsdt_at = struct.unpack("<Q", read(rsdp_at + 24, 8))[0]
    if read(xsdt_at, 4) != b"XSDT":
        return None
    length = struct.unpack("<I", read(xsdt_at + 4, 4))[0]
    for off in range(36, length, 8):
        at = struct.unpack("<Q", read(xsdt_at + off, 8))[0]
        if read(at, 4) == signature:
            n = struct.unpack("<I", read(at + 4, 4))[0]
            return read(at, n)
    return None
