"""The ACPI tables and the MP table the device model gives a User VM, as guest-physical writes.

acrn-dm (devicemodel/hw/platform/acpi/acpi.c, acpi_build) writes ASL templates and compiles them
with iasl; here the same tables are assembled directly, at its addresses in the BIOS area:

    0xF2400 RSDP (revision 2)   0xF2440 RSDT   0xF2480 XSDT   0xF2500 MADT   0xF2600 FADT
    0xF2740 HPET   0xF2780 MCFG   0xF27C0 FACS   0xF3500 DSDT
    0xF0000 MP floating pointer, 0xF0010 MP configuration table (devicemodel/core/mptbl.c)

Fixed ports and interrupts (devicemodel/include/acpi.h, devicemodel/arch/x86/pm.c,
devicemodel/include/public/acrn_common.h): SCI on IRQ 9, SMI_CMD 0xB2 (ACPI_ENABLE 0xA0,
ACPI_DISABLE 0xA1), PM1a event block 0x400 (status 0x400, enable 0x402), PM1a control block
0x404, reset register 0xCF9 (value 0x0E). acrn-dm's FADT has no PM timer (IO_PMTMR is 0, "PM
Timer is disabled in ACPI"); `pm_timer=True` adds one at 0x408, where bhyve, the origin of
acrn-dm's tables, has it.

The DSDT is hand-assembled AML with the meaning of acrn-dm's: the \\_S3 and \\_S5 sleep packages
(SLP_TYP 3 and 5, which the PM1 control block acts on), PICM and \\_PIC, the PCI host bridge
\\_SB.PCI0 (pci_bus_write_dsdt: bus 0, the 0xCF8 configuration ports and the I/O and memory
windows), the HPET device and one processor device per vCPU (pm_write_dsdt). Tables that
depend on passthrough devices (NHLT, TPM2, RTCT), the LPC bridge's devices and P/C-state
objects are not built.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from acrn_sim.sim import ConfigError

# devicemodel/hw/platform/acpi/acpi.c
ACPI_BASE = 0xF2400
RSDT_OFFSET, XSDT_OFFSET, MADT_OFFSET, FADT_OFFSET = 0x040, 0x080, 0x100, 0x200
HPET_OFFSET, MCFG_OFFSET, FACS_OFFSET, DSDT_OFFSET = 0x340, 0x380, 0x3C0, 0x1100
ACPI_LENGTH = 0x100000 - ACPI_BASE
# devicemodel/include/acpi.h and devicemodel/include/public/acrn_common.h
SCI_INT = 9
SMI_CMD, ACPI_ENABLE, ACPI_DISABLE = 0xB2, 0xA0, 0xA1
PM1A_EVT_ADDR = 0x400
VIRTUAL_PM1A_CNT_ADDR = 0x404
IO_PMTMR = 0x0  # acrn-dm: the PM timer is disabled in ACPI
PM_TMR_ADDR = PM1A_EVT_ADDR + 8  # bhyve's IO_PMTMR, for pm_timer=True
RESET_REG_ADDR, RESET_VALUE = 0xCF9, 0x0E
SLP_TYP_S3, SLP_TYP_S5 = 3, 5
# devicemodel/include/hpet.h, hw/platform/hpet.c (8 timers, vendor 0x8086, revision 1)
VHPET_BASE, VHPET_SIZE = 0xFED00000, 1024
VHPET_NUM_TIMERS = 8
VHPET_BLOCK_ID = (0x8086 << 16) | ((VHPET_NUM_TIMERS - 1) << 8) | 1
# devicemodel/include/pci_core.h
PCI_EMUL_ECFG_BASE = 0xE000_0000
PCI_EMUL_IOBASE, PCI_EMUL_IOLIMIT = 0x2000, 0x10000
PCI_EMUL_MEMBASE32, PCI_EMUL_MEMLIMIT32 = 0x8000_0000, 0xE000_0000
PCI_EMUL_MEMBASE64, PCI_EMUL_MEMLIMIT64 = 0x40_0000_0000, 0x80_0000_0000
# devicemodel/core/mptbl.c
MPTABLE_BASE = 0xF0000
LAPIC_PADDR, LAPIC_VERSION = 0xFEE00000, 16
IOAPIC_PADDR, IOAPIC_VERSION = 0xFEC00000, 0x11
MP_SPECREV = 4
MPCH_OEMID, MPCH_PRODID = b"BHyVe   ", b"Hypervisor  "
MPEP_SIG = (6 << 8) | (26 << 4) | 5  # family 6, model 26, stepping 5
MPEP_FEATURES = 0xBFEBFBFF

OEM_ID = b"DM "  # iasl pads it to six bytes with zeros
OEM_REVISION = 1
# iasl writes its own ID and version here; there is no iasl in this build
ASL_COMPILER_ID, ASL_COMPILER_REVISION = b"INTL", 0

# The FADT's flags as acrn-dm's template decodes them (ACPI 6.x Table 5.10): WBINVD, PROC_C1,
# SLP_BUTTON, TMR_VAL_EXT (a 32-bit PM timer), RESET_REG_SUP, HEADLESS
FADT_FLAGS = (1 << 0) | (1 << 2) | (1 << 5) | (1 << 8) | (1 << 10) | (1 << 12)
# IA-PC boot architecture flags (Table 5.11): VGA not present, PCIe ASPM controls
FADT_IAPC_BOOT_ARCH = (1 << 2) | (1 << 4)
ACPI_GAS_SYSTEM_MEMORY, ACPI_GAS_SYSTEM_IO = 0, 1


def checksum(data: bytes) -> int:
    """The byte that makes `data` plus it sum to 0 modulo 256."""
    return -sum(data) & 0xFF


def _pad(s: bytes, n: int) -> bytes:
    return s.ljust(n, b"\0")[:n]


def _table(signature: bytes, revision: int, oem_table_id: bytes, body: bytes) -> bytes:
    """A system description table: the 36-byte header (ACPI 6.x §5.2.6) with its checksum."""
    length = 36 + len(body)
    head = struct.pack(
        "<4sIBB6s8sI4sI",
        signature,
        length,
        revision,
        0,
        _pad(OEM_ID, 6),
        _pad(oem_table_id, 8),
        OEM_REVISION,
        ASL_COMPILER_ID,
        ASL_COMPILER_REVISION,
    )
    raw = bytearray(head + body)
    raw[9] = checksum(raw)
    return bytes(raw)


def _gas(space: int, bit_width: int, access: int, address: int) -> bytes:
    """A Generic Address Structure (ACPI 6.x §5.2.3.2)."""
    return struct.pack("<BBBBQ", space, bit_width, 0, access, address)


def build_rsdp() -> bytes:
    """RSDP revision 2 (§5.2.5.3): checksum over the first 20 bytes, extended over all 36."""
    raw = bytearray(
        struct.pack(
            "<8sB6sBIIQB3s",
            b"RSD PTR ",
            0,
            _pad(OEM_ID, 6),
            2,
            ACPI_BASE + RSDT_OFFSET,
            36,
            ACPI_BASE + XSDT_OFFSET,
            0,
            b"\0\0\0",
        )
    )
    raw[8] = checksum(raw[:20])
    raw[32] = checksum(raw)
    return bytes(raw)


def _entries(hpet: bool, mcfg: bool) -> list[int]:
    offsets = [MADT_OFFSET, FADT_OFFSET] + [HPET_OFFSET] * hpet + [MCFG_OFFSET] * mcfg
    return [ACPI_BASE + off for off in offsets]


def build_rsdt(hpet: bool = True, mcfg: bool = True) -> bytes:
    body = b"".join(struct.pack("<I", a) for a in _entries(hpet, mcfg))
    return _table(b"RSDT", 1, b"DMRSDT  ", body)


def build_xsdt(hpet: bool = True, mcfg: bool = True) -> bytes:
    body = b"".join(struct.pack("<Q", a) for a in _entries(hpet, mcfg))
    return _table(b"XSDT", 1, b"DMXSDT  ", body)


def build_madt(num_cpus: int, lapic_ids: Sequence[int] | None = None, rtvm: bool = False) -> bytes:
    """MADT (§5.2.12) as basl_fwrite_madt writes it: a local APIC per vCPU (processor ID = vCPU
    number), the IOAPIC (ID 0, GSI base 0), unless the VM is an RTVM the overrides IRQ 0 ->
    GSI 2 (edge, high) and SCI_INT -> SCI_INT (level, high), and LINT1 as NMI on all CPUs.
    acrn-dm takes each local APIC ID from the physical CPU the vCPU runs on; the default here
    is the vCPU number, which is what this simulator's vLAPICs use."""
    ids = list(range(num_cpus)) if lapic_ids is None else list(lapic_ids)
    if len(ids) != num_cpus:
        raise ConfigError(f"MADT: {len(ids)} local APIC IDs for {num_cpus} vCPUs")
    body = struct.pack("<II", LAPIC_PADDR, 1)  # PCAT_COMPAT: there are 8259s too
    for vcpu, apic_id in enumerate(ids):
        body += struct.pack("<BBBBI", 0, 8, vcpu, apic_id, 1)  # enabled
    body += struct.pack("<BBBBII", 1, 12, 0, 0, IOAPIC_PADDR, 0)
    if not rtvm:
        body += struct.pack("<BBBBIH", 2, 10, 0, 0, 2, 0x0005)  # active high, edge
        body += struct.pack("<BBBBIH", 2, 10, 0, SCI_INT, SCI_INT, 0x000D)  # high, level
    body += struct.pack("<BBBHB", 4, 6, 0xFF, 0x0005, 1)
    return _table(b"APIC", 1, b"DMMADT  ", body)


def build_fadt(pm_timer: bool = False) -> bytes:
    """FADT revision 5.1, 268 bytes (§5.2.9), with basl_fwrite_fadt's values."""
    facs, dsdt = ACPI_BASE + FACS_OFFSET, ACPI_BASE + DSDT_OFFSET
    tmr = PM_TMR_ADDR if pm_timer else IO_PMTMR
    body = struct.pack(
        "<IIBBHIBBBBIIIIIIIIBBBBBBBBHHHHBBBBBHBI",
        facs,
        dsdt,
        1,  # reserved (INT_MODEL in ACPI 1.0)
        0,  # preferred PM profile: unspecified
        SCI_INT,
        SMI_CMD,
        ACPI_ENABLE,
        ACPI_DISABLE,
        0,  # S4BIOS_REQ
        0,  # PSTATE_CNT
        PM1A_EVT_ADDR,
        0,  # PM1b event block
        VIRTUAL_PM1A_CNT_ADDR,
        0,  # PM1b control block
        0,  # PM2 control block
        tmr,
        0,  # GPE0 block
        0,  # GPE1 block
        4,  # PM1_EVT_LEN
        2,  # PM1_CNT_LEN
        0,  # PM2_CNT_LEN
        4 if pm_timer else 0,  # PM_TMR_LEN
        0,  # GPE0_BLK_LEN
        0,  # GPE1_BLK_LEN
        0,  # GPE1_BASE
        0,  # CST_CNT
        0,  # P_LVL2_LAT
        0,  # P_LVL3_LAT
        0,  # FLUSH_SIZE
        0,  # FLUSH_STRIDE
        0,  # DUTY_OFFSET
        0,  # DUTY_WIDTH
        0,  # DAY_ALRM
        0,  # MON_ALRM
        0x32,  # CENTURY: the CMOS index of the century
        FADT_IAPC_BOOT_ARCH,
        0,  # reserved
        FADT_FLAGS,
    )
    body += _gas(ACPI_GAS_SYSTEM_IO, 8, 1, RESET_REG_ADDR)
    body += struct.pack("<BHB", RESET_VALUE, 0, 1)  # ARM_BOOT_ARCH, FADT minor version 1
    body += struct.pack("<QQ", facs, dsdt)  # X_FIRMWARE_CTRL, X_DSDT
    body += _gas(ACPI_GAS_SYSTEM_IO, 32, 2, PM1A_EVT_ADDR)
    body += _gas(ACPI_GAS_SYSTEM_IO, 0, 0, 0)  # X_PM1b_EVT_BLK
    body += _gas(ACPI_GAS_SYSTEM_IO, 16, 2, VIRTUAL_PM1A_CNT_ADDR)
    body += _gas(ACPI_GAS_SYSTEM_IO, 0, 0, 0)  # X_PM1b_CNT_BLK
    body += _gas(ACPI_GAS_SYSTEM_IO, 8, 0, 0)  # X_PM2_CNT_BLK
    body += _gas(ACPI_GAS_SYSTEM_IO, 32, 3, tmr)  # X_PM_TMR_BLK
    body += _gas(ACPI_GAS_SYSTEM_IO, 0, 1, 0)  # X_GPE0_BLK
    body += _gas(ACPI_GAS_SYSTEM_IO, 0, 0, 0)  # X_GPE1_BLK
    body += _gas(ACPI_GAS_SYSTEM_IO, 8, 1, 0)  # SLEEP_CONTROL_REG
    body += _gas(ACPI_GAS_SYSTEM_IO, 8, 1, 0)  # SLEEP_STATUS_REG
    return _table(b"FACP", 5, b"DMFACP  ", body)


def build_facs() -> bytes:
    """FACS version 2, 64 bytes (§5.2.10); it has no checksum."""
    return struct.pack("<4sIIIIIQB3sI24s", b"FACS", 64, 0, 0, 0, 0, 0, 2, b"", 0, b"")


def build_hpet() -> bytes:
    """HPET description table (IA-PC HPET specification 1.0a, §3.2.4)."""
    body = struct.pack("<I", VHPET_BLOCK_ID)
    body += _gas(ACPI_GAS_SYSTEM_MEMORY, 0, 0, VHPET_BASE)
    body += struct.pack("<BHB", 0, 0, 1)  # HPET number, minimum tick, 4 KiB page protection
    return _table(b"HPET", 1, b"DMHPET  ", body)


def build_mcfg() -> bytes:
    """MCFG (PCI Firmware Specification 3.0 §4.1.2): ECAM at 0xE0000000, segment 0, buses
    0-255."""
    body = bytes(8) + struct.pack("<QHBBI", PCI_EMUL_ECFG_BASE, 0, 0, 0xFF, 0)
    return _table(b"MCFG", 1, b"DMMCFG  ", body)


# ------------------------------------------------------------------ AML (ACPI 6.x §20)
def _pkg_length(content_len: int) -> bytes:
    """PkgLength encoding of a package whose contents (after PkgLength) are content_len bytes:
    the encoded length counts its own bytes (§20.2.4)."""
    for extra in range(4):
        total = content_len + 1 + extra
        if extra == 0 and total < 0x40:
            return bytes([total])
        if extra and total < 1 << (4 + 8 * extra):
            rest = (total >> 4).to_bytes(extra, "little")
            return bytes([(extra << 6) | (total & 0xF)]) + rest
    raise ValueError("AML package too long")


def _pkg(op: bytes, content: bytes) -> bytes:
    return op + _pkg_length(len(content)) + content


def _nameseg(seg: str) -> bytes:
    if not 1 <= len(seg) <= 4:
        raise ValueError(f"bad AML name segment {seg!r}")
    return seg.ljust(4, "_").encode()


def _namestring(path: str) -> bytes:
    """A NameString: an optional root or parent prefix, then one, two (DualNamePrefix) or more
    (MultiNamePrefix) name segments."""
    prefix = b""
    while path.startswith(("\\", "^")):
        prefix += path[0].encode()
        path = path[1:]
    segs = [_nameseg(s) for s in path.split(".")] if path else []
    if len(segs) == 1:
        return prefix + segs[0]
    if len(segs) == 2:
        return prefix + b"\x2e" + b"".join(segs)
    return prefix + b"\x2f" + bytes([len(segs)]) + b"".join(segs)


def _int(value: int) -> bytes:
    """The shortest integer encoding, as iasl emits it: Zero, One, or a prefixed constant."""
    if value == 0:
        return b"\x00"
    if value == 1:
        return b"\x01"
    for prefix, fmt, limit in ((0x0A, "<B", 1 << 8), (0x0B, "<H", 1 << 16), (0x0C, "<I", 1 << 32)):
        if value < limit:
            return bytes([prefix]) + struct.pack(fmt, value)
    return b"\x0e" + struct.pack("<Q", value)


def _string(s: str) -> bytes:
    return b"\x0d" + s.encode() + b"\0"


def _eisaid(pnp: str) -> bytes:
    """EISAID("PNP0A03"): three letters in 5 bits each and four hex digits, stored big-endian."""
    code = (ord(pnp[0]) - 0x40) << 26 | (ord(pnp[1]) - 0x40) << 21 | (ord(pnp[2]) - 0x40) << 16
    code |= int(pnp[3:], 16)
    return _int(int.from_bytes(code.to_bytes(4, "big"), "little"))


def _name(path: str, obj: bytes) -> bytes:
    return b"\x08" + _namestring(path) + obj


def _scope(path: str, body: bytes) -> bytes:
    return _pkg(b"\x10", _namestring(path) + body)


def _device(path: str, body: bytes) -> bytes:
    return _pkg(b"\x5b\x82", _namestring(path) + body)


def _method(path: str, nargs: int, body: bytes) -> bytes:
    return _pkg(b"\x14", _namestring(path) + bytes([nargs & 7]) + body)  # NotSerialized


def _package(*elements: bytes) -> bytes:
    return _pkg(b"\x12", bytes([len(elements)]) + b"".join(elements))


def _buffer(data: bytes) -> bytes:
    return _pkg(b"\x11", _int(len(data)) + data)


def _resource_template(*descriptors: bytes) -> bytes:
    return _buffer(b"".join(descriptors) + b"\x79\x00")  # End Tag, checksum 0 (not checked)


# Resource descriptors (ACPI 6.x §6.4). Flags: ResourceProducer, PosDecode, MinFixed, MaxFixed.
_ADDR_FLAGS = 0x0C


def _io16(port: int, length: int) -> bytes:
    return struct.pack("<BBHHBB", 0x47, 1, port, port, 1, length)  # IO (Decode16, ...)


def _word_address(kind: int, type_flags: int, lo: int, hi: int) -> bytes:
    return struct.pack(
        "<BHBBBHHHHH", 0x88, 13, kind, _ADDR_FLAGS, type_flags, 0, lo, hi, 0, hi - lo + 1
    )


def _dword_memory(lo: int, hi: int) -> bytes:
    # NonCacheable, ReadWrite, AddressRangeMemory, TypeStatic
    return struct.pack("<BHBBBIIIII", 0x87, 23, 0, _ADDR_FLAGS, 0x01, 0, lo, hi, 0, hi - lo + 1)


def _qword_memory(lo: int, hi: int) -> bytes:
    return struct.pack("<BHBBBQQQQQ", 0x8A, 43, 0, _ADDR_FLAGS, 0x01, 0, lo, hi, 0, hi - lo + 1)


def _memory32_fixed(base: int, length: int) -> bytes:
    return struct.pack("<BHBII", 0x86, 9, 1, base, length)  # ReadWrite


def _pci0_crs() -> bytes:
    """\\_SB.PCI0._CRS as pci_bus_write_dsdt writes it for bus 0. acrn-dm's I/O and memory
    windows cover what its BAR allocator handed out plus some slack; here they are the whole
    ranges it allocates from."""
    return _resource_template(
        _word_address(2, 0, 0, 0),  # WordBusNumber: bus 0
        _io16(0xCF8, 8),
        _word_address(1, 0x03, 0x0000, 0x0CF7),  # WordIO, EntireRange
        _word_address(1, 0x03, 0x0D00, PCI_EMUL_IOBASE - 1),
        _word_address(1, 0x03, PCI_EMUL_IOBASE, PCI_EMUL_IOLIMIT - 1),
        _dword_memory(PCI_EMUL_MEMBASE32, PCI_EMUL_MEMLIMIT32 - 1),
        _qword_memory(PCI_EMUL_MEMBASE64, PCI_EMUL_MEMLIMIT64 - 1),
    )


def build_dsdt(num_cpus: int) -> bytes:
    """The DSDT: DefinitionBlock ("DSDT", compliance revision 2: 64-bit integers)."""
    store_arg0_picm = b"\x70\x68" + _namestring("PICM")  # Store (Arg0, PICM)
    pci0 = _device(
        "PCI0",
        _name("_HID", _eisaid("PNP0A03"))
        + _name("_ADR", _int(0))
        + _method("_BBN", 0, b"\xa4" + _int(0))  # Return (0)
        + _name("_CRS", _pci0_crs()),
    )
    hpet = _device(
        "HPET",
        _name("_HID", _eisaid("PNP0103"))
        + _name("_UID", _int(0))
        + _name("_CRS", _resource_template(_memory32_fixed(VHPET_BASE, VHPET_SIZE))),
    )
    cpus = b"".join(
        _device(f"PR{i:02d}", _name("_HID", _string("ACPI0007")) + _name("_UID", _int(i)))
        for i in range(num_cpus)
    )
    aml = (
        _name("_S3", _package(_int(SLP_TYP_S3), _int(0)))
        + _name("_S5", _package(_int(SLP_TYP_S5), _int(0)))
        + _name("PICM", _int(0))
        + _method("_PIC", 1, store_arg0_picm)
        + _scope("_SB", pci0)
        + _scope("_SB.PCI0", hpet)
        + _scope("_SB", cpus)
    )
    return _table(b"DSDT", 2, b"DMDSDT  ", aml)


# ------------------------------------------------------------------ the whole set
MAX_CPUS = (FADT_OFFSET - MADT_OFFSET - 36 - 8 - 12 - 20 - 6) // 8  # the MADT's room: 21


def build_acpi(
    num_cpus: int,
    *,
    lapic_ids: Sequence[int] | None = None,
    rtvm: bool = False,
    pm_timer: bool = False,
    hpet: bool = True,
    mcfg: bool = True,
) -> list[tuple[int, bytes]]:
    """(guest-physical address, bytes) of every table acpi_build writes by default. `rtvm`
    drops the MADT's interrupt source overrides as acrn-dm does for an RTVM; `pm_timer` adds
    a PM timer at PM_TMR_ADDR to the FADT; `hpet` and `mcfg` can leave out tables whose
    devices (the HPET at 0xFED00000, ECAM at 0xE0000000) a model does not have."""
    if not 1 <= num_cpus <= MAX_CPUS:
        raise ConfigError(f"ACPI: {num_cpus} vCPUs (the MADT has room for 1 to {MAX_CPUS})")
    tables = [
        (0, build_rsdp()),
        (RSDT_OFFSET, build_rsdt(hpet, mcfg)),
        (XSDT_OFFSET, build_xsdt(hpet, mcfg)),
        (MADT_OFFSET, build_madt(num_cpus, lapic_ids, rtvm)),
        (FADT_OFFSET, build_fadt(pm_timer)),
    ]
    tables += [(HPET_OFFSET, build_hpet())] * hpet + [(MCFG_OFFSET, build_mcfg())] * mcfg
    tables += [(FACS_OFFSET, build_facs()), (DSDT_OFFSET, build_dsdt(num_cpus))]
    return [(ACPI_BASE + off, data) for off, data in tables]


# ------------------------------------------------------------------ MP table (MP spec 1.4)
MPCT_ENTRY_PROCESSOR, MPCT_ENTRY_BUS, MPCT_ENTRY_IOAPIC = 0, 1, 2
MPCT_ENTRY_INT, MPCT_ENTRY_LOCAL_INT = 3, 4
INTENTRY_TYPE_INT, INTENTRY_TYPE_NMI, INTENTRY_TYPE_EXTINT = 0, 1, 3
INTENTRY_FLAGS_POLARITY_ACTIVELO, INTENTRY_FLAGS_TRIGGER_LEVEL = 0x3, 0xC
PROCENTRY_FLAG_EN, PROCENTRY_FLAG_BP = 1, 2
ISA_BUS, PCI_BUS = 1, 0


def _int_entry(kind: int, int_type: int, flags: int, bus: int, irq: int, apic: int, pin: int):
    return struct.pack("<BBHBBBB", kind, int_type, flags, bus, irq, apic, pin)


def build_mptable(num_cpus: int, *, lapic_pt: bool = False) -> list[tuple[int, bytes]]:
    """The MP floating pointer and configuration table as mptable_build writes them: a
    processor per vCPU (APIC ID = vCPU number), buses PCI 0 and ISA 1, and, unless the VM has
    its LAPIC passed through, IOAPIC 0 with the 16 ISA interrupts (pin 0 ExtINT, IRQ 0 on pin
    2, SCI level and active low, the rest identity), then LINT0 ExtINT and LINT1 NMI."""
    if not 1 <= num_cpus <= 255:
        raise ConfigError(f"MP table: {num_cpus} vCPUs")
    entries = []
    for i in range(num_cpus):
        flags = PROCENTRY_FLAG_EN | (PROCENTRY_FLAG_BP if i == 0 else 0)
        entries.append(
            struct.pack(
                "<BBBBII8x", MPCT_ENTRY_PROCESSOR, i, LAPIC_VERSION, flags, MPEP_SIG, MPEP_FEATURES
            )
        )
    entries.append(struct.pack("<BB6s", MPCT_ENTRY_BUS, PCI_BUS, b"PCI   "))
    entries.append(struct.pack("<BB6s", MPCT_ENTRY_BUS, ISA_BUS, b"ISA   "))
    if not lapic_pt:
        entries.append(struct.pack("<BBBBI", MPCT_ENTRY_IOAPIC, 0, IOAPIC_VERSION, 1, IOAPIC_PADDR))
        for pin in range(16):
            if pin == 0:
                kind, flags, irq = INTENTRY_TYPE_EXTINT, 0, 0
            elif pin == 2:
                kind, flags, irq = INTENTRY_TYPE_INT, 0, 0
            elif pin == SCI_INT:
                flags = INTENTRY_FLAGS_POLARITY_ACTIVELO | INTENTRY_FLAGS_TRIGGER_LEVEL
                kind, irq = INTENTRY_TYPE_INT, SCI_INT
            else:
                kind, flags, irq = INTENTRY_TYPE_INT, 0, pin
            entries.append(_int_entry(MPCT_ENTRY_INT, kind, flags, ISA_BUS, irq, 0, pin))
    entries.append(_int_entry(MPCT_ENTRY_LOCAL_INT, INTENTRY_TYPE_EXTINT, 0, 0, 0, 0xFF, 0))
    entries.append(_int_entry(MPCT_ENTRY_LOCAL_INT, INTENTRY_TYPE_NMI, 0, 0, 0, 0xFF, 1))
    body = b"".join(entries)
    header = bytearray(
        struct.pack(
            "<4sHBB8s12sIHHIHBx",
            b"PCMP",
            44 + len(body),
            MP_SPECREV,
            0,
            MPCH_OEMID,
            MPCH_PRODID,
            0,  # no OEM table
            0,
            len(entries),
            LAPIC_PADDR,
            0,  # no extended entries
            0,
        )
    )
    config = bytearray(header + body)
    config[7] = checksum(config)
    mpfp = bytearray(struct.pack("<4sIBBB5x", b"_MP_", MPTABLE_BASE + 16, 1, MP_SPECREV, 0))
    mpfp[10] = checksum(mpfp)
    return [(MPTABLE_BASE, bytes(mpfp)), (MPTABLE_BASE + 16, bytes(config))]
