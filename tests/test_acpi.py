"""The ACPI and MP tables (sim/acpi.py) and the devices behind them: the PM1 registers and PM
timer (guests/service_vm/acpi_pm.py), PIT channel 2 with port 0x61 (guests/service_vm/pit61.py).
"""

from __future__ import annotations

import shutil
import struct
import subprocess

import pytest

from acrn_sim.guests.service_vm import acpi_pm as pm
from acrn_sim.guests.service_vm.pit61 import PIT_HZ, PitChannel2
from acrn_sim.sim import ConfigError, acpi

IASL = shutil.which("iasl")
ACPIEXEC = shutil.which("acpiexec")
SIGNATURES = {
    0xF2400: b"RSD PTR ",
    0xF2440: b"RSDT",
    0xF2480: b"XSDT",
    0xF2500: b"APIC",
    0xF2600: b"FACP",
    0xF2740: b"HPET",
    0xF2780: b"MCFG",
    0xF27C0: b"FACS",
    0xF3500: b"DSDT",
}


def tables(num_cpus: int = 2, **kw) -> dict[int, bytes]:
    return dict(acpi.build_acpi(num_cpus, **kw))


def by_signature(t: dict[int, bytes]) -> dict[bytes, bytes]:
    return {d[:4]: d for d in t.values()}


def madt_entries(madt: bytes) -> list[tuple[int, bytes]]:
    out, off = [], 44
    while off < len(madt):
        kind, length = madt[off], madt[off + 1]
        out.append((kind, madt[off : off + length]))
        off += length
    assert off == len(madt)
    return out


# ------------------------------------------------------------------ structure and checksums
def test_addresses_signatures_lengths_checksums():
    t = tables(4, pm_timer=True)
    assert {a: d[: len(SIGNATURES[a])] for a, d in t.items()} == SIGNATURES
    for addr, data in t.items():
        if addr == acpi.ACPI_BASE:  # RSDP: 20-byte and 36-byte checksums
            assert len(data) == 36 and sum(data[:20]) & 0xFF == 0 and sum(data) & 0xFF == 0
        elif data[:4] == b"FACS":
            assert struct.unpack_from("<I", data, 4)[0] == len(data) == 64
        else:
            assert struct.unpack_from("<I", data, 4)[0] == len(data)
            assert sum(data) & 0xFF == 0, data[:4]
            assert data[10:16] == b"DM \0\0\0"
    spans = sorted((a, a + len(d)) for a, d in t.items())
    assert all(x[1] <= y[0] for x, y in zip(spans, spans[1:], strict=False))
    assert spans[0][0] == 0xF2400 and spans[-1][1] <= 0x100000  # the BIOS area, below 1 MiB
    fadt = by_signature(t)[b"FACP"]
    assert len(fadt) == 268 and fadt[8] == 5 and fadt[131] == 1  # FADT 5.1


def test_pointers_lead_to_the_tables():
    t = tables(2)
    sig = by_signature(t)
    rsdp = t[0xF2400]
    assert rsdp[15] == 2  # revision 2: XSDT
    rsdt_addr, _, xsdt_addr = struct.unpack_from("<IIQ", rsdp, 16)
    assert (rsdt_addr, xsdt_addr) == (0xF2440, 0xF2480)
    xsdt, rsdt = t[xsdt_addr], t[rsdt_addr]
    x = struct.unpack_from(f"<{(len(xsdt) - 36) // 8}Q", xsdt, 36)
    r = struct.unpack_from(f"<{(len(rsdt) - 36) // 4}I", rsdt, 36)
    assert list(x) == list(r) == [0xF2500, 0xF2600, 0xF2740, 0xF2780]
    assert [t[a][:4] for a in x] == [b"APIC", b"FACP", b"HPET", b"MCFG"]
    fadt = sig[b"FACP"]
    facs, dsdt = struct.unpack_from("<II", fadt, 36)
    x_facs, x_dsdt = struct.unpack_from("<QQ", fadt, 132)
    assert facs == x_facs == 0xF27C0 and t[facs][:4] == b"FACS"
    assert dsdt == x_dsdt == 0xF3500 and t[dsdt][:4] == b"DSDT"


def test_hpet_and_mcfg_can_be_left_out():
    t = tables(1, hpet=False, mcfg=False)
    assert set(by_signature(t)) == {b"RSD ", b"RSDT", b"XSDT", b"APIC", b"FACP", b"FACS", b"DSDT"}
    xsdt = t[0xF2480]
    assert struct.unpack_from("<2Q", xsdt, 36) == (0xF2500, 0xF2600) and len(xsdt) == 52


def test_fadt_ports_interrupt_and_flags():
    fadt = by_signature(tables(1))[b"FACP"]
    assert struct.unpack_from("<H", fadt, 46)[0] == 9  # SCI_INT
    assert struct.unpack_from("<IBB", fadt, 48) == (0xB2, 0xA0, 0xA1)  # SMI_CMD, enable/disable
    pm1a_evt, _, pm1a_cnt, _, _, pm_tmr = struct.unpack_from("<6I", fadt, 56)
    assert (pm1a_evt, pm1a_cnt, pm_tmr) == (0x400, 0x404, 0)  # acrn-dm: no PM timer
    assert tuple(fadt[88:92]) == (4, 2, 0, 0)  # PM1 event, PM1 control, PM2, PM timer lengths
    flags = struct.unpack_from("<I", fadt, 112)[0]
    assert flags == 0x1525  # WBINVD, C1, sleep button, TMR_VAL_EXT, reset register, headless
    assert not flags & (1 << 20)  # not hardware-reduced: the PM1 blocks are used
    assert fadt[116:128] == struct.pack("<BBBBQ", 1, 8, 0, 1, 0xCF9) and fadt[128] == 0x0E
    # the 64-bit PM1 blocks: I/O space, widths 32 and 16
    assert fadt[148:160] == struct.pack("<BBBBQ", 1, 32, 0, 2, 0x400)
    assert fadt[172:184] == struct.pack("<BBBBQ", 1, 16, 0, 2, 0x404)
    with_timer = by_signature(tables(1, pm_timer=True))[b"FACP"]
    assert struct.unpack_from("<I", with_timer, 76)[0] == acpi.PM_TMR_ADDR == 0x408
    assert with_timer[91] == 4
    assert with_timer[208:220] == struct.pack("<BBBBQ", 1, 32, 0, 3, 0x408)


def test_hpet_and_mcfg_contents():
    sig = by_signature(tables(1))
    hpet, mcfg = sig[b"HPET"], sig[b"MCFG"]
    assert len(hpet) == 56 and len(mcfg) == 60
    assert struct.unpack_from("<I", hpet, 36)[0] == 0x80860701  # 8 timers, Intel, revision 1
    assert hpet[40:52] == struct.pack("<BBBBQ", 0, 0, 0, 0, 0xFED00000)
    assert struct.unpack_from("<QHBB", mcfg, 44) == (0xE0000000, 0, 0, 255)


# ------------------------------------------------------------------ MADT
@pytest.mark.parametrize("n", [1, 2, 4, 8, 21])
def test_madt_has_a_local_apic_per_vcpu(n):
    madt = by_signature(tables(n))[b"APIC"]
    assert struct.unpack_from("<II", madt, 36) == (0xFEE00000, 1)  # PCAT_COMPAT
    entries = madt_entries(madt)
    lapics = [e for k, e in entries if k == 0]
    assert [(e[2], e[3], struct.unpack_from("<I", e, 4)[0]) for e in lapics] == [
        (i, i, 1) for i in range(n)
    ]
    assert [k for k, _ in entries] == [0] * n + [1, 2, 2, 4]
    ioapic = entries[n][1]
    assert struct.unpack_from("<BBII", ioapic, 2) == (0, 0, 0xFEC00000, 0)  # ID 0, GSI base 0
    isos = [struct.unpack_from("<BBIH", e, 2) for k, e in entries if k == 2]
    assert isos == [(0, 0, 2, 0x5), (0, 9, 9, 0xD)]  # IRQ0 -> GSI2 edge; SCI level
    nmi = entries[-1][1]
    assert struct.unpack_from("<BHB", nmi, 2) == (0xFF, 0x5, 1)  # LINT1 on all CPUs


def test_madt_for_an_rtvm_and_with_physical_apic_ids():
    madt = by_signature(tables(2, rtvm=True, lapic_ids=[2, 6]))[b"APIC"]
    entries = madt_entries(madt)
    assert [k for k, _ in entries] == [0, 0, 1, 4]  # no overrides for an RTVM
    assert [(e[2], e[3]) for k, e in entries if k == 0] == [(0, 2), (1, 6)]


def test_cpu_count_limits():
    with pytest.raises(ConfigError):
        acpi.build_acpi(0)
    with pytest.raises(ConfigError, match="room for 1 to 21"):
        acpi.build_acpi(22)
    with pytest.raises(ConfigError):
        acpi.build_acpi(2, lapic_ids=[0])
    madt = dict(acpi.build_acpi(21))[0xF2500]
    assert 0xF2500 + len(madt) <= 0xF2600  # the largest MADT still ends before the FADT


# ------------------------------------------------------------------ DSDT and AML
def aml_pkg_length(data: bytes, off: int) -> tuple[int, int]:
    lead = data[off]
    extra = lead >> 6
    if not extra:
        return lead & 0x3F, 1
    value = lead & 0xF
    for i in range(extra):
        value |= data[off + 1 + i] << (4 + 8 * i)
    return value, 1 + extra


@pytest.mark.parametrize("n", [0, 1, 0x3E, 0x3F, 0x40, 0xFFD, 0xFFE, 0x1000, 0xFFFFD, 0xFFFFE])
def test_aml_pkg_length_round_trips(n):
    enc = acpi._pkg_length(n)
    total, used = aml_pkg_length(enc, 0)
    assert used == len(enc) and total == n + len(enc)


def sleep_type(dsdt: bytes, name: bytes) -> int:
    """The first element of \\_Sx's package: NameOp, name, PackageOp, PkgLength, count, ..."""
    off = dsdt.index(b"\x08" + name) + 5
    assert dsdt[off] == 0x12  # PackageOp
    _, used = aml_pkg_length(dsdt, off + 1)
    off += 1 + used
    assert dsdt[off] == 2  # two elements, as acrn-dm's
    op = dsdt[off + 1]
    return {0x00: 0, 0x01: 1}.get(op) if op in (0, 1) else dsdt[off + 2]


def test_dsdt_sleep_packages_and_devices():
    dsdt = acpi.build_dsdt(3)
    assert sleep_type(dsdt, b"_S5_") == acpi.SLP_TYP_S5 == 5
    assert sleep_type(dsdt, b"_S3_") == acpi.SLP_TYP_S3 == 3
    assert dsdt.count(b"ACPI0007") == 3 and b"PR02" in dsdt and b"PR03" not in dsdt
    assert b"PCI0" in dsdt and b"HPET" in dsdt
    assert acpi._eisaid("PNP0A03") == b"\x0c\x41\xd0\x0a\x03"


def run(cmd: list[str], cwd) -> str:
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)
    return p.stdout + p.stderr


@pytest.mark.skipif(IASL is None, reason="iasl (acpica-tools) is not installed")
def test_iasl_disassembles_every_table(tmp_path):
    for addr, data in tables(4, pm_timer=True).items():
        if addr == acpi.ACPI_BASE:
            continue  # iasl reads system description tables only, not a bare RSDP
        name = data[:4].decode().lower()
        (tmp_path / f"{name}.dat").write_bytes(data)
        out = run([IASL, "-d", f"{name}.dat"], tmp_path)
        assert "Error" not in out and "Warning" not in out and "Invalid" not in out, out
        dsl = (tmp_path / f"{name}.dsl").read_text()
        assert f'Signature : "{data[:4].decode()}"' in dsl or "DefinitionBlock" in dsl
    dsl = (tmp_path / "dsdt.dsl").read_text()
    assert "Name (_S5, Package (0x02)" in dsl and 'EisaId ("PNP0A03")' in dsl


# The tables as acrn-dm's acpi.c describes them, in iasl's data table language: compiled by
# iasl they must give our bytes (less the checksum and the compiler ID iasl fills in).
HEADER = """[0004] Signature : "{sig}"
[0004] Table Length : 00000000
[0001] Revision : {rev:02X}
[0001] Checksum : 00
[0006] Oem ID : "DM "
[0008] Oem Table ID : "{oem}"
[0004] Oem Revision : 00000001
[0004] Asl Compiler ID : "xxxx"
[0004] Asl Compiler Revision : 00000000
"""
GAS = """[0012] {name} : [Generic Address Structure]
[0001] Space ID : {space:02X}
[0001] Bit Width : {width:02X}
[0001] Bit Offset : 00
[0001] Encoded Access Width : {access:02X}
[0008] Address : {addr:016X}
"""


def reference_templates(num_cpus: int) -> dict[str, str]:
    madt = HEADER.format(sig="APIC", rev=1, oem="DMMADT  ")
    madt += "[0004] Local Apic Address : FEE00000\n[0004] Flags (decoded below) : 00000001\n"
    madt += "PC-AT Compatibility : 1\n"
    for i in range(num_cpus):
        madt += f"""[0001] Subtable Type : 00
[0001] Length : 08
[0001] Processor ID : {i:02x}
[0001] Local Apic ID : {i:02x}
[0004] Flags (decoded below) : 00000001
Processor Enabled : 1
Runtime Online Capable : 0
"""
    madt += """[0001] Subtable Type : 01
[0001] Length : 0C
[0001] I/O Apic ID : 00
[0001] Reserved : 00
[0004] Address : fec00000
[0004] Interrupt : 00000000
[0001] Subtable Type : 02
[0001] Length : 0A
[0001] Bus : 00
[0001] Source : 00
[0004] Interrupt : 00000002
[0002] Flags (decoded below) : 0005
Polarity : 1
Trigger Mode : 1
[0001] Subtable Type : 02
[0001] Length : 0A
[0001] Bus : 00
[0001] Source : 09
[0004] Interrupt : 00000009
[0002] Flags (decoded below) : 000D
Polarity : 1
Trigger Mode : 3
[0001] Subtable Type : 04
[0001] Length : 06
[0001] Processor ID : FF
[0002] Flags (decoded below) : 0005
Polarity : 1
Trigger Mode : 1
[0001] Interrupt Input LINT : 01
"""
    fadt = HEADER.format(sig="FACP", rev=5, oem="DMFACP  ")
    fadt += """[0004] FACS Address : 000F27C0
[0004] DSDT Address : 000F3500
[0001] Model : 01
[0001] PM Profile : 00
[0002] SCI Interrupt : 0009
[0004] SMI Command Port : 000000B2
[0001] ACPI Enable Value : A0
[0001] ACPI Disable Value : A1
[0001] S4BIOS Command : 00
[0001] P-State Control : 00
[0004] PM1A Event Block Address : 00000400
[0004] PM1B Event Block Address : 00000000
[0004] PM1A Control Block Address : 00000404
[0004] PM1B Control Block Address : 00000000
[0004] PM2 Control Block Address : 00000000
[0004] PM Timer Block Address : 00000000
[0004] GPE0 Block Address : 00000000
[0004] GPE1 Block Address : 00000000
[0001] PM1 Event Block Length : 04
[0001] PM1 Control Block Length : 02
[0001] PM2 Control Block Length : 00
[0001] PM Timer Block Length : 00
[0001] GPE0 Block Length : 00
[0001] GPE1 Block Length : 00
[0001] GPE1 Base Offset : 00
[0001] _CST Support : 00
[0002] C2 Latency : 0000
[0002] C3 Latency : 0000
[0002] CPU Cache Size : 0000
[0002] Cache Flush Stride : 0000
[0001] Duty Cycle Offset : 00
[0001] Duty Cycle Width : 00
[0001] RTC Day Alarm Index : 00
[0001] RTC Month Alarm Index : 00
[0001] RTC Century Index : 32
[0002] Boot Flags (decoded below) : 0000
Legacy Devices Supported (V2) : 0
8042 Present on ports 60/64 (V2) : 0
VGA Not Present (V4) : 1
MSI Not Supported (V4) : 0
PCIe ASPM Not Supported (V4) : 1
CMOS RTC Not Present (V5) : 0
[0001] Reserved : 00
[0004] Flags (decoded below) : 00000000
WBINVD instruction is operational (V1) : 1
WBINVD flushes all caches (V1) : 0
All CPUs support C1 (V1) : 1
C2 works on MP system (V1) : 0
Control Method Power Button (V1) : 0
Control Method Sleep Button (V1) : 1
RTC wake not in fixed reg space (V1) : 0
RTC can wake system from S4 (V1) : 0
32-bit PM Timer (V1) : 1
Docking Supported (V1) : 0
Reset Register Supported (V2) : 1
Sealed Case (V3) : 0
Headless - No Video (V3) : 1
Use native instr after SLP_TYPx (V3) : 0
PCIEXP_WAK Bits Supported (V4) : 0
Use Platform Timer (V4) : 0
RTC_STS valid on S4 wake (V4) : 0
Remote Power-on capable (V4) : 0
Use APIC Cluster Model (V4) : 0
Use APIC Physical Destination Mode (V4) : 0
Hardware Reduced (V5) : 0
Low Power S0 Idle (V5) : 0
"""
    fadt += GAS.format(name="Reset Register", space=1, width=8, access=1, addr=0xCF9)
    fadt += """[0001] Value to cause reset : 0E
[0002] ARM Flags (decoded below): 0000
PSCI Compliant : 0
Must use HVC for PSCI : 0
[0001] FADT Minor Revision : 01
[0008] FACS Address : 00000000000F27C0
[0008] DSDT Address : 00000000000F3500
"""
    for name, width, access, addr in (
        ("PM1A Event Block", 32, 2, 0x400),
        ("PM1B Event Block", 0, 0, 0),
        ("PM1A Control Block", 16, 2, 0x404),
        ("PM1B Control Block", 0, 0, 0),
        ("PM2 Control Block", 8, 0, 0),
        ("PM Timer Block", 32, 3, 0),
        ("GPE0 Block", 0, 1, 0),
        ("GPE1 Block", 0, 0, 0),
        ("Sleep Control Register", 8, 1, 0),
        ("Sleep Status Register", 8, 1, 0),
    ):
        fadt += GAS.format(name=name, space=1, width=width, access=access, addr=addr)
    hpet = (
        HEADER.format(sig="HPET", rev=1, oem="DMHPET  ") + "[0004] Hardware Block ID : 80860701\n"
    )
    hpet += GAS.format(name="Timer Block Register", space=0, width=0, access=0, addr=0xFED00000)
    hpet += """[0001] Sequence Number : 00
[0002] Minimum Clock Ticks : 0000
[0004] Flags (decoded below) : 00000001
4K Page Protect : 1
64K Page Protect : 0
"""
    mcfg = (
        HEADER.format(sig="MCFG", rev=1, oem="DMMCFG  ")
        + """[0008] Reserved : 0
[0008] Base Address : 00000000E0000000
[0002] Segment Group Number : 0000
[0001] Start Bus Number : 00
[0001] End Bus Number : FF
[0004] Reserved : 0
"""
    )
    facs = """[0004] Signature : "FACS"
[0004] Length : 00000040
[0004] Hardware Signature : 00000000
[0004] 32 Firmware Waking Vector : 00000000
[0004] Global Lock : 00000000
[0004] Flags (decoded below) : 00000000
S4BIOS Support Present : 0
64-bit Wake Supported (V2) : 0
[0008] 64 Firmware Waking Vector : 0000000000000000
[0001] Version : 02
[0003] Reserved : 000000
[0004] OspmFlags (decoded below) : 00000000
64-bit Wake Env Required (V2) : 0
"""
    rsdt = HEADER.format(sig="RSDT", rev=1, oem="DMRSDT  ")
    xsdt = HEADER.format(sig="XSDT", rev=1, oem="DMXSDT  ")
    for i, a in enumerate((0xF2500, 0xF2600, 0xF2740, 0xF2780)):
        rsdt += f"[0004] ACPI Table Address {i} : {a:08X}\n"
        xsdt += f"[0004] ACPI Table Address {i} : {a:016X}\n"
    rsdp = """[0008] Signature : "RSD PTR "
[0001] Checksum : 43
[0006] Oem ID : "DM "
[0001] Revision : 02
[0004] RSDT Address : 000F2440
[0004] Length : 00000024
[0008] XSDT Address : 00000000000F2480
[0001] Extended Checksum : 00
[0003] Reserved : 000000
"""
    return {
        "RSD ": rsdp,
        "RSDT": rsdt,
        "XSDT": xsdt,
        "APIC": madt,
        "FACP": fadt,
        "HPET": hpet,
        "MCFG": mcfg,
        "FACS": facs,
    }


def without_compiler_fields(data: bytes) -> bytes:
    if data[:4] in (b"RSD ", b"FACS"):
        return data
    raw = bytearray(data)
    raw[9] = 0
    raw[28:36] = bytes(8)
    return bytes(raw)


@pytest.mark.skipif(IASL is None, reason="iasl (acpica-tools) is not installed")
def test_tables_match_acrn_dm_templates_compiled_by_iasl(tmp_path):
    ours = by_signature(tables(3))
    for sig, text in reference_templates(3).items():
        src, out = tmp_path / f"{sig.strip()}.tpl", tmp_path / f"{sig.strip()}.aml"
        src.write_text(text)
        log = run([IASL, "-p", str(out), str(src)], tmp_path)
        assert out.exists(), log
        ref = out.read_bytes()
        assert without_compiler_fields(ours[sig.encode()]) == without_compiler_fields(ref), sig


def reference_dsdt_asl(num_cpus: int) -> str:
    """acrn-dm's DSDT (basl_fwrite_dsdt, pci_write_dsdt, pci_bus_write_dsdt for a bus 0 with no
    INTx devices, pm_write_dsdt) as ASL, with this model's PCI windows."""
    words = [(0, 0, 0xCF7, 0xCF8), (0, 0xD00, 0x1FFF, 0x1300), (0, 0x2000, 0xFFFF, 0xE000)]
    wordio = "".join(
        f"WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange,"
        f" {g:#x}, {lo:#x}, {hi:#x}, 0, {n:#x}, ,, , TypeStatic)\n"
        for g, lo, hi, n in words
    )
    cpus = "".join(
        f'Device (PR{i:02d}) {{ Name (_HID, "ACPI0007") Name (_UID, {i:#04x}) }}\n'
        for i in range(num_cpus)
    )
    return f"""DefinitionBlock ("dm_dsdt.aml", "DSDT", 2, "DM ", "DMDSDT  ", 0x00000001)
{{
  Name (_S3, Package () {{ 0x03, Zero, }})
  Name (_S5, Package () {{ 0x05, Zero, }})
  Name (PICM, 0x00)
  Method (_PIC, 1, NotSerialized) {{ Store (Arg0, PICM) }}
  Scope (_SB)
  {{
    Device (PCI0)
    {{
      Name (_HID, EisaId ("PNP0A03"))
      Name (_ADR, Zero)
      Method (_BBN, 0, NotSerialized) {{ Return (0x00000000) }}
      Name (_CRS, ResourceTemplate ()
      {{
        WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode, 0, 0, 0, 0, 1,,,)
        IO (Decode16, 0x0CF8, 0x0CF8, 0x01, 0x08)
        {wordio}
        DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite,
          0, 0x80000000, 0xDFFFFFFF, 0, 0x60000000, ,, , AddressRangeMemory, TypeStatic)
        QWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite,
          0, 0x4000000000, 0x7FFFFFFFFF, 0, 0x4000000000, ,, , AddressRangeMemory, TypeStatic)
      }})
    }}
  }}
  Scope (_SB.PCI0)
  {{
    Device (HPET)
    {{
      Name (_HID, EISAID ("PNP0103"))
      Name (_UID, 0)
      Name (_CRS, ResourceTemplate () {{ Memory32Fixed (ReadWrite, 0xFED00000, 0x00000400) }})
    }}
  }}
  Scope (_SB)
  {{
    {cpus}
  }}
}}
"""


@pytest.mark.skipif(IASL is None, reason="iasl (acpica-tools) is not installed")
@pytest.mark.parametrize("n", [1, 3, 12])
def test_dsdt_matches_iasl_compiling_acrn_dm_asl(tmp_path, n):
    (tmp_path / "dsdt.asl").write_text(reference_dsdt_asl(n))
    log = run([IASL, "-p", "ref", "dsdt.asl"], tmp_path)
    ref = (tmp_path / "ref.aml").read_bytes()
    assert "0 Errors" in log, log
    assert without_compiler_fields(acpi.build_dsdt(n)) == without_compiler_fields(ref)


@pytest.mark.skipif(ACPIEXEC is None, reason="acpiexec (acpica-tools) is not installed")
def test_acpica_loads_the_tables_and_evaluates_the_dsdt(tmp_path):
    files = []
    for data in tables(2).values():
        if data[:4] in (b"RSD ", b"RSDT", b"XSDT", b"FACS"):
            continue  # acpiexec builds its own root tables around the ones it is given
        name = data[:4].decode().lower() + ".dat"
        (tmp_path / name).write_bytes(data)
        files.append(name)
    cmds = "evaluate \\_S5; evaluate \\_SB.PR01._UID; evaluate \\_PIC 1; evaluate \\PICM"
    out = run([ACPIEXEC, "-b", cmds, *files], tmp_path)
    s5 = out[out.index("Evaluating \\_S5") :]
    assert "[Package] Contains 2 Elements" in s5
    assert "[Integer] = 0000000000000005" in s5.split("Evaluating")[1]
    uid = out.split("Evaluating \\_SB.PR01._UID")[1].split("Evaluating")[0]
    assert "[Integer] = 0000000000000001" in uid
    picm = out.split("Evaluating \\PICM")[1]
    assert "[Integer] = 0000000000000001" in picm
    assert "AE_AML" not in out and "AE_NOT_FOUND" not in out


# ------------------------------------------------------------------ MP table
def parse_mptable(writes):
    at = dict(writes)
    fp = at[acpi.MPTABLE_BASE]
    assert fp[:4] == b"_MP_" and len(fp) == 16 and fp[8] == 1 and fp[9] == 4
    assert sum(fp) & 0xFF == 0
    cfg = at[struct.unpack_from("<I", fp, 4)[0]]
    length, rev = struct.unpack_from("<HB", cfg, 4)
    assert cfg[:4] == b"PCMP" and length == len(cfg) and rev == 4 and sum(cfg) & 0xFF == 0
    assert cfg[8:16] == b"BHyVe   " and cfg[16:28] == b"Hypervisor  "
    count, lapic = struct.unpack_from("<HI", cfg, 34)
    assert lapic == 0xFEE00000
    entries, off = [], 44
    for _ in range(count):
        size = 20 if cfg[off] == 0 else 8
        entries.append(cfg[off : off + size])
        off += size
    assert off == len(cfg)
    return entries


@pytest.mark.parametrize("n", [1, 4, 21])
def test_mptable(n):
    writes = acpi.build_mptable(n)
    assert writes[0][0] == 0xF0000 and writes[1][0] == 0xF0010
    assert writes[1][0] + len(writes[1][1]) <= acpi.ACPI_BASE
    entries = parse_mptable(writes)
    kinds = [e[0] for e in entries]
    assert kinds == [0] * n + [1, 1, 2] + [3] * 16 + [4, 4]
    procs = [struct.unpack_from("<BBBBII", e) for e in entries[:n]]
    assert procs == [(0, i, 16, 1 | (2 if i == 0 else 0), 0x7A5, 0xBFEBFBFF) for i in range(n)]
    assert [e[2:8] for e in entries[n : n + 2]] == [b"PCI   ", b"ISA   "]
    assert struct.unpack_from("<BBBBI", entries[n + 2]) == (2, 0, 0x11, 1, 0xFEC00000)
    ioints = [struct.unpack_from("<BBHBBBB", e) for e in entries[n + 3 : n + 19]]
    assert ioints[0] == (3, 3, 0, 1, 0, 0, 0)  # pin 0: ExtINT
    assert ioints[2] == (3, 0, 0, 1, 0, 0, 2)  # IRQ 0 on pin 2
    assert ioints[9] == (3, 0, 0xF, 1, 9, 0, 9)  # SCI: level, active low
    assert all(ioints[p] == (3, 0, 0, 1, p, 0, p) for p in (1, 3, 4, 8, 15))
    lints = [struct.unpack_from("<BBHBBBB", e) for e in entries[-2:]]
    assert lints == [(4, 3, 0, 0, 0, 0xFF, 0), (4, 1, 0, 0, 0, 0xFF, 1)]


def test_mptable_with_lapic_passthrough_has_no_ioapic():
    kinds = [e[0] for e in parse_mptable(acpi.build_mptable(2, lapic_pt=True))]
    assert kinds == [0, 0, 1, 1, 4, 4]


# ------------------------------------------------------------------ the PM timer
TSC_HZ = 2_100_000_000


class Clock:
    def __init__(self) -> None:
        self.t = 0

    def __call__(self) -> int:
        return self.t


def test_pm_timer_counts_simulated_time_exactly():
    clock = Clock()
    timer = pm.PmTimer(clock, TSC_HZ)
    assert timer.pio(0x408, 4, False, 0) == 0
    clock.t = TSC_HZ  # one second
    assert timer.pio(0x408, 4, False, 0) == 3_579_545
    clock.t = TSC_HZ * 1000 // 3_579_545  # just short of 1000 ticks
    assert timer.value() == 999
    clock.t = (1000 * TSC_HZ + 3_579_544) // 3_579_545  # the first cycle of tick 1000
    assert timer.value() == 1000
    clock.t = 10 * TSC_HZ
    assert timer.value() == 35_795_450  # 32 bits: no wrap yet
    timer24 = pm.PmTimer(clock, TSC_HZ, bits=24)
    assert timer24.value() == 35_795_450 % (1 << 24)
    clock.t = 1200 * TSC_HZ  # 20 minutes: the 32-bit counter has wrapped
    assert timer.value() == (1200 * 3_579_545) % (1 << 32)
    assert timer.pio(0x408, 2, False, 0) == timer.value() & 0xFFFF
    assert timer.pio(0x40A, 2, False, 0) == timer.value() >> 16
    timer.pio(0x408, 4, True, 0)  # read-only
    assert timer.value() == (1200 * 3_579_545) % (1 << 32)


def test_pm_timer_reads_are_monotonic_and_follow_the_clock():
    clock = Clock()
    timer = pm.PmTimer(clock, TSC_HZ)
    last = -1
    for step in range(0, 50_000, 997):
        clock.t = step * 113
        v = timer.value()
        assert v >= last and v == clock.t * 3_579_545 // TSC_HZ
        last = v


# ------------------------------------------------------------------ PM1 and S5
class Calls:
    def __init__(self) -> None:
        self.poweroff = 0
        self.suspend = 0
        self.sci: list[bool] = []


def make_pm() -> tuple[pm.AcpiPm, Calls]:
    calls = Calls()

    def off() -> None:
        calls.poweroff += 1

    def suspend() -> None:
        calls.suspend += 1

    return pm.AcpiPm(off, suspend, calls.sci.append), calls


def test_s5_powers_off_with_the_sleep_type_from_the_dsdt():
    dev, calls = make_pm()
    slp_typ = sleep_type(acpi.build_dsdt(1), b"_S5_")
    # ACPICA writes SLP_TYP first, then SLP_TYP | SLP_EN (acpi_hw_legacy_sleep)
    dev.pio(0x404, 2, True, slp_typ << 10)
    assert calls.poweroff == 0
    dev.pio(0x404, 2, True, (slp_typ << 10) | pm.VIRTUAL_PM1A_SLP_EN)
    assert calls.poweroff == 1 and calls.suspend == 0
    assert dev.pio(0x404, 2, False, 0) == slp_typ << 10  # SLP_EN reads back as 0


def test_s3_suspends_and_other_sleep_types_do_nothing():
    dev, calls = make_pm()
    dev.pio(0x404, 2, True, (3 << 10) | pm.VIRTUAL_PM1A_SLP_EN)
    assert (calls.suspend, calls.poweroff) == (1, 0)
    dev.pio(0x404, 2, True, (7 << 10) | pm.VIRTUAL_PM1A_SLP_EN)
    assert (calls.suspend, calls.poweroff) == (1, 0)


def test_sci_en_is_set_by_smi_cmd_and_kept_by_pm1_control():
    dev, _ = make_pm()
    assert dev.pio(0x404, 2, False, 0) & pm.VIRTUAL_PM1A_SCI_EN == 0
    dev.pio(0xB2, 1, True, acpi.ACPI_ENABLE)
    assert dev.pio(0x404, 2, False, 0) & pm.VIRTUAL_PM1A_SCI_EN
    dev.pio(0x404, 2, True, 0xFFFF & ~pm.VIRTUAL_PM1A_SLP_EN)  # OSPM cannot clear it ...
    assert dev.pio(0x404, 2, False, 0) == 0x1FFD  # ... and bits 0-1, 14-15 read as 0
    dev.pio(0xB2, 1, True, acpi.ACPI_DISABLE)
    assert dev.pio(0x404, 2, False, 0) == 0x1FFC
    assert dev.pio(0xB2, 1, False, 0) == 0xFF  # write-only


def test_power_button_raises_the_sci_when_enabled():
    dev, calls = make_pm()
    dev.press_power_button()
    assert dev.pio(0x400, 2, False, 0) == pm.PM1_PWRBTN_STS and calls.sci == []  # no SCI_EN
    dev.pio(0xB2, 1, True, acpi.ACPI_ENABLE)
    dev.pio(0x402, 2, True, 0xFFFF)
    assert dev.pio(0x402, 2, False, 0) == pm.PM1_RTC_EN | pm.PM1_PWRBTN_EN | pm.PM1_GBL_EN
    assert calls.sci == [True]
    dev.pio(0x400, 2, True, pm.PM1_PWRBTN_STS)  # write 1 to clear
    assert dev.pio(0x400, 2, False, 0) == 0 and calls.sci == [True, False]
    dev.pio(0x400, 2, True, 0xFFFF)
    assert calls.sci == [True, False]  # level unchanged: no new call


def test_pm1_registers_take_16bit_accesses_only():
    dev, calls = make_pm()
    assert dev.pio(0x404, 1, False, 0) == 0xFF and dev.pio(0x400, 4, False, 0) == 0xFFFF_FFFF
    dev.pio(0x404, 4, True, (5 << 10) | pm.VIRTUAL_PM1A_SLP_EN)
    assert calls.poweroff == 0


# ------------------------------------------------------------------ PIT channel 2 and port 0x61
class Guest:
    """Port accesses by a guest whose every access costs `cost` TSC cycles."""

    def __init__(self, dev, clock: Clock, cost: int = 1500) -> None:
        self.dev, self.clock, self.cost = dev, clock, cost

    def outb(self, value: int, port: int) -> None:
        self.clock.t += self.cost
        self.dev.pio(port, 1, True, value)

    def inb(self, port: int) -> int:
        self.clock.t += self.cost
        return self.dev.pio(port, 1, False, 0)


def ticks_to_cycles(ticks: int) -> int:
    """The first TSC cycle of PIT clock `ticks`."""
    return -(-ticks * TSC_HZ // PIT_HZ)


def test_linux_pit_calibrate_tsc_loop():
    """arch/x86/kernel/tsc.c pit_calibrate_tsc: gate on, speaker off, channel 2 mode 0 with a
    10 ms latch, then poll port 0x61 bit 5. The TSC time to OUT2 going high gives the TSC
    frequency."""
    clock = Clock()
    clock.t = 123_456_789
    g = Guest(PitChannel2(clock, TSC_HZ), clock)
    latch = PIT_HZ // 100  # CAL_LATCH for 10 ms
    g.outb((g.inb(0x61) & ~0x02) | 0x01, 0x61)
    g.outb(0xB0, 0x43)
    g.outb(latch & 0xFF, 0x42)
    g.outb(latch >> 8, 0x42)
    written = clock.t
    t1 = clock.t
    polls = 0
    while (g.inb(0x61) & 0x20) == 0:
        polls += 1
        assert polls < 100_000
    t2 = clock.t
    # OUT2 rose at the edge latch + 1 clocks after the count was written: load, then latch
    rise = ticks_to_cycles(written * PIT_HZ // TSC_HZ + 1 + latch)
    assert t2 - g.cost < rise <= t2
    tsc_khz = (t2 - t1) // 10  # what pit_calibrate_tsc computes: cycles per ms
    assert abs(tsc_khz - TSC_HZ // 1000) < TSC_HZ // 1000 // 1000  # within 0.1%
    assert g.inb(0x61) & 0x21 == 0x21  # OUT2 stays high, the gate as written


def test_gate_low_holds_the_count():
    clock = Clock()
    g = Guest(PitChannel2(clock, TSC_HZ), clock, cost=0)
    g.outb(0x01, 0x61)
    g.outb(0xB0, 0x43)
    g.outb(100, 0x42)
    g.outb(0, 0x42)  # count 100, loaded on the next edge
    start = clock.t * PIT_HZ // TSC_HZ + 1
    clock.t = ticks_to_cycles(start + 40) + 1
    g.outb(0x00, 0x61)  # gate low after 40 clocks
    clock.t = ticks_to_cycles(start + 500) + 1
    assert g.inb(0x61) & 0x20 == 0  # 40 counted: still counting
    g.outb(0xD8, 0x43)  # read-back, channel 2 (bit 3), count only (bit 5 low, bit 4 high)
    assert g.inb(0x42) | g.inb(0x42) << 8 == 60  # the latched count, held while gated off
    g.outb(0xE8, 0x43)  # read-back, channel 2, status only
    assert g.inb(0x42) == 0x30  # OUT low, count loaded, LSB/MSB, mode 0
    g.outb(0x01, 0x61)  # gate high again at start + 500
    clock.t = ticks_to_cycles(start + 559) + 1
    assert g.inb(0x61) & 0x20 == 0  # 40 + 59 = 99
    clock.t = ticks_to_cycles(start + 560) + 1
    assert g.inb(0x61) & 0x20  # 100: terminal count


def test_quick_pit_calibrate_reads_the_falling_msb():
    """quick_pit_calibrate: count 0xFFFF, then pairs of reads (LSB, then MSB) of the running
    counter without latching it."""
    clock = Clock()
    g = Guest(PitChannel2(clock, TSC_HZ), clock, cost=0)
    g.outb(0x01, 0x61)
    g.outb(0xB0, 0x43)
    g.outb(0xFF, 0x42)
    g.outb(0xFF, 0x42)
    start = clock.t * PIT_HZ // TSC_HZ + 1
    for ticks in (0, 1, 255, 256, 1000, 0xFFFF, 0x10000, 0x10005):
        clock.t = ticks_to_cycles(start + ticks)
        lsb, msb = g.inb(0x42), g.inb(0x42)
        assert lsb | msb << 8 == (0xFFFF - ticks) & 0xFFFF
    assert g.inb(0x61) & 0x20  # past terminal count, the counter wraps, OUT stays high


def test_latch_status_and_the_refresh_bit():
    clock = Clock()
    dev = PitChannel2(clock, TSC_HZ)
    g = Guest(dev, clock, cost=0)
    g.outb(0xB0, 0x43)  # mode 0, LSB/MSB, gate still low
    g.outb(0xE8, 0x43)  # read-back, channel 2, status only (bit 5 high: no count)
    assert g.inb(0x42) == 0x40 | 0x30 | 0x00  # OUT low, null count, rw 3, mode 0
    g.outb(0x34, 0x42)
    g.outb(0x12, 0x42)
    clock.t = ticks_to_cycles(10)
    g.outb(0x80, 0x43)  # counter latch, channel 2
    clock.t = ticks_to_cycles(1000)
    assert (g.inb(0x42), g.inb(0x42)) == (0x34, 0x12)  # gate low: not counting
    seen = set()
    for tick in range(0, 18 * 4, 9):
        clock.t = ticks_to_cycles(tick)
        seen.add((tick // 18, g.inb(0x61) & 0x10))
    assert seen == {(0, 0), (1, 0x10), (2, 0), (3, 0x10)}
    g.outb(0x0F | 0xF0, 0x61)
    assert g.inb(0x61) & 0xCF == 0x0F  # bits 0-3 written; NMI sources read 0


def test_mode_2_rate_generator_on_channel_2():
    clock = Clock()
    g = Guest(PitChannel2(clock, TSC_HZ), clock, cost=0)
    g.outb(0x01, 0x61)
    g.outb(0xB4, 0x43)  # channel 2, LSB/MSB, mode 2
    g.outb(10, 0x42)
    g.outb(0, 0x42)
    start = 1
    outs = []
    for tick in range(start, start + 21):
        clock.t = ticks_to_cycles(tick)
        outs.append(bool(g.inb(0x61) & 0x20))
    assert outs == ([True] * 9 + [False]) * 2 + [True]  # low for one clock in each 10


def test_other_channels_go_to_the_existing_pit():
    seen = []

    class Other:
        def pio(self, port, size, is_write, value):
            seen.append((port, is_write, value))
            return 0x5A

    clock = Clock()
    dev = PitChannel2(clock, TSC_HZ, others=Other())
    assert dev.pio(0x40, 1, False, 0) == 0x5A
    dev.pio(0x43, 1, True, 0x34)  # channel 0, mode 2
    dev.pio(0x43, 1, True, 0xB0)  # channel 2: kept here
    dev.pio(0x43, 1, True, 0xC2)  # read-back of channel 0: passed on
    assert seen == [(0x40, False, 0), (0x43, True, 0x34), (0x43, True, 0xC2)]
    assert PitChannel2(clock, TSC_HZ).pio(0x40, 1, False, 0) == 0xFF
