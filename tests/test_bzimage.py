"""The bzImage loader (sim/bzimage.py): the setup header, the zero page and its e820 map, where
each piece goes, the 32-bit entry state, and the errors for broken images."""

from __future__ import annotations

import glob
import os
import random
import struct

import pytest

from acrn_sim.sim import ConfigError
from acrn_sim.sim import bzimage as bz
from acrn_sim.sim.bootproto import apply_state

MB = 1 << 20
ENTRY_CODE_LEN = 64


def make_bzimage(
    *,
    setup_sects: int = 4,
    version: int = 0x020F,
    loadflags: int = bz.LOADED_HIGH,
    payload: bytes = b"",
    payload_size: int = 0x4000,
    init_size: int = 0x10000,
    initrd_addr_max: int = 0x7FFFFFFF,
    cmdline_size: int = 2047,
    kernel_alignment: int = 0x200000,
    relocatable: int = 1,
    pref_address: int = 0x1000000,
    header_end: int = 0x26C,
    syssize: int | None = None,
) -> bytes:
    """A bzImage as arch/x86/boot/tools/build.c lays one out: the boot sector and setup
    sectors, then the protected-mode part padded to syssize paragraphs."""
    setup = ((setup_sects or 4) + 1) * 512
    img = bytearray(setup + payload_size)
    img[setup : setup + len(payload)] = payload
    img[0x1F1] = setup_sects
    struct.pack_into("<HIHHHH", img, 0x1F2, 1, syssize or payload_size // 16, 0, 0xFFFF, 0, 0xAA55)
    img[0x200] = 0xEB  # jmp short over the header
    img[0x201] = header_end - 0x202
    img[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", img, 0x206, version)
    img[0x211] = loadflags
    struct.pack_into("<I", img, 0x214, 0x100000)  # code32_start
    struct.pack_into("<H", img, 0x224, 0x5BE0)  # heap_end_ptr, as a real image has it
    struct.pack_into(
        "<IIBBHI",
        img,
        0x22C,
        initrd_addr_max,
        kernel_alignment,
        relocatable,
        21,
        bz.XLF_KERNEL_64,
        cmdline_size,
    )
    struct.pack_into("<QI", img, 0x258, pref_address, init_size)
    return bytes(img)


def write(tmp_path, name: str, data: bytes) -> str:
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


# ------------------------------------------------------------------ the setup header
def test_header_fields_are_read_as_the_image_has_them():
    hdr = bz.parse_setup_header(make_bzimage(setup_sects=7, init_size=0x123000))
    assert hdr.version == 0x020F and hdr.version_str == "2.15"
    assert hdr.setup_sects == 7 and hdr.setup_size == 8 * 512
    assert hdr.syssize == 0x4000 // 16
    assert hdr.loadflags & bz.LOADED_HIGH
    assert (hdr.code32_start, hdr.relocatable_kernel) == (0x100000, 1)
    assert hdr.kernel_alignment == 0x200000
    assert (hdr.initrd_addr_max, hdr.cmdline_size) == (0x7FFFFFFF, 2047)
    assert (hdr.pref_address, hdr.init_size, hdr.xloadflags) == (0x1000000, 0x123000, 1)
    assert (hdr.vid_mode, hdr.heap_end_ptr, hdr.min_alignment) == (0xFFFF, 0x5BE0, 21)
    assert hdr.header_end == 0x26C


def test_setup_sects_zero_means_four():
    assert bz.parse_setup_header(make_bzimage(setup_sects=0)).setup_size == 5 * 512


def test_fields_newer_than_the_protocol_read_as_zero():
    # 2.09 has no pref_address, init_size, min_alignment or xloadflags (even if bytes are there)
    hdr = bz.parse_setup_header(make_bzimage(version=0x0209))
    assert (hdr.pref_address, hdr.init_size, hdr.xloadflags, hdr.min_alignment) == (0, 0, 0, 0)
    assert hdr.cmdline_size == 2047  # 2.06


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "too short for a Linux setup header"),
        (bytes(0x205), "too short for a Linux setup header"),
        (bytes(4096), "no 'HdrS' signature"),
        (make_bzimage()[:0x207], "truncated in the setup header"),
        (make_bzimage()[:0x240], "truncated in the setup header"),
        (make_bzimage(header_end=0x230), "setup header ends at 0x230"),
        (make_bzimage(version=0x0205, header_end=0x238), "boot protocol 2.05 is too old"),
        (make_bzimage(loadflags=0), "zImage"),
        (make_bzimage()[: 5 * 512], "the setup code alone needs 2560 bytes"),
        (make_bzimage(syssize=0x4000 // 16 + 1), "truncated: the kernel needs"),
        (make_bzimage()[:-1], "truncated: the kernel needs"),
        (make_bzimage(kernel_alignment=0x180000), "not a power of 2"),
    ],
)
def test_broken_headers_raise_one_line_config_errors(data, message):
    with pytest.raises(ConfigError) as e:
        bz.parse_setup_header(data, "k")
    assert message in str(e.value) and "\n" not in str(e.value)


def test_bad_boot_flag():
    img = bytearray(make_bzimage())
    img[0x1FE:0x200] = b"\0\0"
    with pytest.raises(ConfigError, match="bad boot_flag 0x0000"):
        bz.parse_setup_header(bytes(img))


def test_any_truncation_or_corruption_is_a_config_error_never_a_crash():
    good = make_bzimage(payload_size=0x200)
    for n in range(0, 0x300):
        try:
            bz.parse_setup_header(good[:n])
        except ConfigError:
            pass
    rng = random.Random(7)
    for _ in range(2000):
        img = bytearray(good)
        for _ in range(rng.randint(1, 8)):
            img[rng.randrange(0x1F1, 0x270)] = rng.randrange(256)
        try:
            bz.parse_setup_header(bytes(img[: rng.randrange(0x1F0, len(img) + 1)]))
        except ConfigError:
            pass


# ------------------------------------------------------------------ the e820 map
def test_e820_map_for_ram_below_2g():
    assert bz.e820_map(256 * MB) == [
        (0, 0xA0000, bz.E820_TYPE_RAM),
        (0x100000, 256 * MB - 0x100000, bz.E820_TYPE_RAM),
        (0xE0000000, 0x20000000, bz.E820_TYPE_RESERVED),  # MCFG and 32-bit MMIO up to 4 GiB
        (0x100000000, 0, bz.E820_TYPE_RESERVED),  # the empty high-RAM entry acrn-dm leaves
    ]


def test_e820_map_with_high_ram():
    e820 = bz.e820_map(3 << 30)
    assert e820[1] == (0x100000, (2 << 30) - 0x100000, bz.E820_TYPE_RAM)
    assert e820[-1] == (4 << 30, 1 << 30, bz.E820_TYPE_RAM)
    assert bz.split_memory(3 << 30) == (2 << 30, 1 << 30)


@pytest.mark.parametrize("mem", [2 * MB, 32 * MB, 1 << 31, (1 << 31) + 4096, 8 << 30])
def test_e820_ram_adds_up_and_ranges_do_not_overlap(mem):
    e820 = bz.e820_map(mem)
    ram = sum(n for _, n, t in e820 if t == bz.E820_TYPE_RAM)
    assert ram == mem - (0x100000 - 0xA0000)  # all of it but the legacy hole 640K-1M
    spans = sorted((b, b + n) for b, n, _ in e820 if n)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))


def test_e820_needs_more_than_1m():
    with pytest.raises(ConfigError):
        bz.e820_map(MB)


# ------------------------------------------------------------------ the layout and zero page
def test_layout_and_zero_page(tmp_path):
    mem = 64 * MB
    kernel = make_bzimage(setup_sects=0x27)
    initrd = bytes(range(256)) * 40  # 10240 bytes
    boot = bz.prepare_bzimage(
        write(tmp_path, "bzImage", kernel), write(tmp_path, "initrd", initrd), "console=ttyS0", mem
    )
    at = dict(boot.writes)
    rd_load_size = (len(initrd) + 8192 + 4095) & ~4095  # RAMDISK_LOAD_SIZE
    rd = mem - rd_load_size
    assert at[16 * MB] == kernel  # the whole file, setup sectors included
    assert at[rd] == initrd
    assert at[rd - 2048] == bz.BOOT_GDT
    assert at[mem - 8192] == b"console=ttyS0\0"
    zp = at[mem - 4096]
    assert len(zp) == 4096
    spans = sorted((a, a + len(d)) for a, d in boot.writes)
    assert all(x[1] <= y[0] for x, y in zip(spans, spans[1:], strict=False))
    assert spans[-1][1] <= mem

    # the setup header is the image's, from 0x1F1 up to kernel_info_offset ...
    assert zp[0x1F1:0x210] == kernel[0x1F1:0x210]
    assert zp[0x22C:0x268] == kernel[0x22C:0x268]
    assert zp[0x268:0x26C] == bytes(4)
    # ... with what acrn-dm fills in
    assert zp[0x210] == 0xFF  # type_of_loader: undefined
    assert zp[0x211] == bz.LOADED_HIGH | bz.QUIET_FLAG
    assert struct.unpack_from("<II", zp, 0x218) == (rd, len(initrd))
    assert struct.unpack_from("<I", zp, 0x228)[0] == mem - 8192  # cmd_line_ptr
    # ... and what it leaves as the image has it: only real-mode setup code reads these
    assert struct.unpack_from("<H", zp, 0x224)[0] == 0x5BE0  # heap_end_ptr
    assert not zp[0x211] & bz.CAN_USE_HEAP
    assert struct.unpack_from("<H", zp, 0x1FA)[0] == 0xFFFF  # vid_mode
    assert struct.unpack_from("<I", zp, 0x214)[0] == 0x100000  # code32_start
    assert zp[0x1EF] == 0  # sentinel: the header was copied, not the whole sector
    assert zp[:0x1E8] == bytes(0x1E8)  # screen_info, acpi_rsdp_addr, ext_* fields: zero
    n = zp[0x1E8]
    table = [struct.unpack_from("<QQI", zp, 0x2D0 + 20 * i) for i in range(n)]
    assert table == bz.e820_map(mem)
    assert zp[0x2D0 + 20 * n : 0xCD0] == bytes(0xCD0 - 0x2D0 - 20 * n)


def test_without_initrd_and_with_setup_sects_zero(tmp_path):
    kernel = make_bzimage(setup_sects=0)
    boot = bz.prepare_bzimage(write(tmp_path, "k", kernel), None, "", 32 * MB)
    at = dict(boot.writes)
    zp = at[32 * MB - 4096]
    assert struct.unpack_from("<II", zp, 0x218) == (0, 0)  # no ramdisk
    assert at[32 * MB - 8192] == b"\0"
    assert at[32 * MB - 8192 - 2048] == bz.BOOT_GDT  # RAMDISK_LOAD_SIZE is 8K with no initrd
    assert zp[0x1F1] == 4 and at[16 * MB][0x1F1] == 4  # both patched, as acrn-dm does
    assert boot.state.rip == 16 * MB + 5 * 512


def test_entry_state_is_the_32bit_boot_protocol(tmp_path):
    mem = 64 * MB
    boot = bz.prepare_bzimage(write(tmp_path, "k", make_bzimage(setup_sects=3)), None, "", mem)
    s = boot.state
    assert boot.bits == 32 and not s.long_mode
    assert s.rip == 16 * MB + 4 * 512  # startup_32: the protected-mode kernel's first byte
    assert s.gprs["rsi"] == mem - 4096  # the zero page
    assert all(s.gprs.get(r, 0) == 0 for r in ("rbp", "rdi", "rbx"))
    assert s.cr0 & 1 and not s.cr0 & (1 << 31)  # protected mode, paging off
    assert s.cr0 == 0x31 and s.cr4 == 0 and s.ia32_efer == 0
    assert not s.rflags & (1 << 9)  # interrupts off
    assert s.selectors == {"cs": 0x10, "ss": 0x18, "ds": 0x18, "es": 0x18}
    gdt = dict(boot.writes)[s.gdt[0]]
    assert s.gdt[1] == len(gdt) - 1 == 31
    for sel, kind in ((0x10, 0xB), (0x18, 0x3)):  # code execute/read, data read/write
        d = struct.unpack_from("<Q", gdt, sel)[0]
        base = (d >> 16) & 0xFFFFFF | ((d >> 56) << 24)
        limit = (d & 0xFFFF) | ((d >> 32) & 0xF0000)
        g, db, present = (d >> 55) & 1, (d >> 54) & 1, (d >> 47) & 1
        assert (base, limit, g, db, present) == (0, 0xFFFFF, 1, 1, 1)  # flat 4 GiB, 32-bit
        assert (d >> 40) & 0xF == kind


def test_the_entry_state_runs_32bit_code_in_the_engine(tmp_path):
    """Hand the state to a vCPU engine the way HC_SET_VCPU_REGS does (sim.bootproto.apply_state)
    and run code at the entry that does what Linux's startup_32 does first: a stack from the
    zero page's scratch field, call/pop to find itself, segment loads and a far jump through
    the boot GDT, reads of boot_params through ESI."""
    from acrn_sim.hv.arch import vmx
    from acrn_sim.sim.blockcost import BlockDecoder
    from acrn_sim.sim.engine import Engine
    from acrn_sim.sim.timing import TimingProfile

    mem = 40 * MB
    entry = 16 * MB + 5 * 512
    code = bytearray(
        b"\xfc\xfa"  # cld; cli
        b"\x8d\xa6\xe8\x01\x00\x00"  # lea esp, [esi+0x1e8]   (BP_scratch + 4)
        b"\xe8\x00\x00\x00\x00"  # call 1f
        b"\x5d"  # 1: pop ebp
        b"\xb8\x18\x00\x00\x00"  # mov eax, 0x18
        b"\x8e\xd8\x8e\xc0\x8e\xd0"  # mov ds, eax; mov es, eax; mov ss, eax
        b"\xea\x00\x00\x00\x00\x10\x00"  # ljmp 0x10:2f
        b"\x8b\x86\x28\x02\x00\x00"  # 2: mov eax, [esi+0x228]   (cmd_line_ptr)
        b"\x8b\x9e\x18\x02\x00\x00"  # mov ebx, [esi+0x218]       (ramdisk_image)
        b"\x0f\xb6\x8e\xe8\x01\x00\x00"  # movzx ecx, byte [esi+0x1e8]   (e820_entries)
        b"\x8c\xca"  # mov edx, cs
        b"\xf4"  # hlt
    )
    far = code.index(b"\xea")
    struct.pack_into("<I", code, far + 1, entry + far + 7)
    boot = bz.prepare_bzimage(
        write(tmp_path, "k", make_bzimage(payload=bytes(code))),
        write(tmp_path, "rd", b"initrd"),
        "quiet",
        mem,
    )
    eng = Engine(BlockDecoder(TimingProfile.load(), vmx.exits_before), lambda bits: 0, "python")
    eng.uc.mem_map(0, mem)
    for gpa, data in boot.writes:
        eng.uc.mem_write(gpa, data)
    apply_state(eng, boot.state)
    assert eng.code_bits() == 32
    stop = eng.run(1_000_000, 0)
    assert stop.insn is not None and stop.insn.mnemonic == "hlt", stop
    eax, ebx, ecx, edx, ebp, esp = eng.regs(["rax", "rbx", "rcx", "rdx", "rbp", "rsp"])
    assert ebp == entry + 13  # call/pop found where it runs
    assert esp == boot.state.gprs["rsi"] + 0x1E8  # the pushed return address was popped
    assert (eax, ebx, ecx, edx) == (mem - 8192, mem - 12288, 4, 0x10)


# ------------------------------------------------------------------ what does not fit
def test_errors_for_what_does_not_fit(tmp_path):
    k = write(tmp_path, "k", make_bzimage())
    with pytest.raises(ConfigError, match="no room above 16 MiB"):
        bz.prepare_bzimage(k, None, "", 16 * MB)
    big_initrd = write(tmp_path, "rd", bytes(8 * MB))
    with pytest.raises(ConfigError, match="no room above 16 MiB"):
        bz.prepare_bzimage(k, big_initrd, "", 24 * MB)
    huge = write(tmp_path, "huge", make_bzimage(payload_size=18 * MB))
    with pytest.raises(ConfigError, match="runs into the initrd"):
        bz.prepare_bzimage(huge, None, "", 34 * MB)
    # init_size from the 2 MiB-aligned load address (18 MiB) runs over the top of RAM
    fat = write(tmp_path, "fat", make_bzimage(init_size=15 * MB))
    with pytest.raises(ConfigError, match=r"decompresses into \[0x1200000, 0x2100000\)"):
        bz.prepare_bzimage(fat, None, "", 32 * MB)
    bz.prepare_bzimage(fat, None, "", 34 * MB)  # fits
    low_max = write(tmp_path, "lowmax", make_bzimage(initrd_addr_max=0x01FFFFFF))
    with pytest.raises(ConfigError, match="above the kernel's initrd_addr_max 0x1ffffff"):
        bz.prepare_bzimage(low_max, write(tmp_path, "r", b"x"), "", 64 * MB)
    short = write(tmp_path, "short", make_bzimage(cmdline_size=8))
    with pytest.raises(ConfigError, match=r"at most 8 \(cmdline_size\)"):
        bz.prepare_bzimage(short, None, "123456789", 64 * MB)
    with pytest.raises(ConfigError, match="acrn-dm copies at most 1023"):
        bz.prepare_bzimage(k, None, "x" * 1024, 64 * MB)
    bz.prepare_bzimage(k, None, "x" * 1023, 64 * MB)


def test_missing_and_empty_files(tmp_path):
    k = write(tmp_path, "k", make_bzimage())
    with pytest.raises(ConfigError, match="not found"):
        bz.prepare_bzimage(str(tmp_path / "nope"), None, "", 64 * MB)
    with pytest.raises(ConfigError, match="initrd not found"):
        bz.prepare_bzimage(k, str(tmp_path / "nope"), "", 64 * MB)
    with pytest.raises(ConfigError, match="initrd is empty"):
        bz.prepare_bzimage(k, write(tmp_path, "empty", b""), "", 64 * MB)


def test_decompress_target():
    hdr = bz.parse_setup_header(make_bzimage())
    assert bz.decompress_target(hdr, 16 * MB + 0x5000) == 18 * MB  # aligned up to 2 MiB
    hdr = bz.parse_setup_header(make_bzimage(pref_address=0x4000000))
    assert bz.decompress_target(hdr, 16 * MB + 0x5000) == 0x4000000  # never below pref
    hdr = bz.parse_setup_header(make_bzimage(relocatable=0, pref_address=0x1000000))
    assert bz.decompress_target(hdr, 16 * MB + 0x5000) == 16 * MB


# ------------------------------------------------------------------ a real kernel
def _real_kernel() -> str | None:
    env = os.environ.get("ACRN_SIM_BZIMAGE")
    if env:
        return env if os.path.isfile(env) else None
    found = sorted(p for p in glob.glob("/boot/vmlinuz-*") if os.access(p, os.R_OK))
    return found[-1] if found else None


@pytest.mark.skipif(_real_kernel() is None, reason="no Linux bzImage (set ACRN_SIM_BZIMAGE)")
def test_a_real_linux_bzimage():
    path = _real_kernel()
    data = open(path, "rb").read()
    hdr = bz.parse_setup_header(data, path)
    assert hdr.version >= bz.MIN_BOOT_PROTOCOL and hdr.loadflags & bz.LOADED_HIGH
    assert hdr.setup_size + hdr.syssize * 16 <= len(data)
    assert hdr.relocatable_kernel and hdr.init_size > 0
    boot = bz.prepare_bzimage(path, None, "console=ttyS0", 512 * MB)
    zp = dict(boot.writes)[512 * MB - 4096]
    end = min(hdr.header_end, bz.HDR_COPY_END)
    assert zp[0x1F1:0x210] == data[0x1F1:0x210] and zp[0x212:0x218] == data[0x212:0x218]
    assert zp[0x22C:end] == data[0x22C:end]
    with pytest.raises(ConfigError, match="decompresses into"):
        bz.prepare_bzimage(path, None, "", 16 * MB + hdr.init_size)
