"""Linux bzImage loading, as the device model's `-k`, `-r` and `-B` options do it.

acrn-dm (devicemodel/core/sw_load_bzimage.c, sw_load_common.c; the RAM split in vmmapi.c's
vm_setup_memory) writes the whole bzImage file at 16 MiB and puts everything else at the top of
low RAM ("lowmem"):

    16 MiB                                 the bzImage file; startup_32 at 16 MiB + setup size
    lowmem - roundup(initrd + 8K, 4K) - 2K the boot GDT (null, null, __BOOT_CS, __BOOT_DS)
    lowmem - roundup(initrd + 8K, 4K)      the initrd
    lowmem - 8K                            the command line
    lowmem - 4K                            the zero page (struct boot_params) with the e820 map

and starts the BSP with Linux's 32-bit boot protocol (Documentation/arch/x86/boot.rst, "32-bit
Boot Protocol"): flat protected mode from that GDT, CS = __BOOT_CS (0x10), DS = ES = SS =
__BOOT_DS (0x18), paging and interrupts off, ESI = the zero page, every other register 0.

The zero page is zeroed, the kernel's setup header (struct setup_header,
arch/x86/include/uapi/asm/bootparam.h) is copied in at 0x1F1, and acrn-dm fills
type_of_loader = 0xFF, loadflags |= QUIET_FLAG, ramdisk_image/ramdisk_size, cmd_line_ptr and the
e820 table. It leaves heap_end_ptr, CAN_USE_HEAP, vid_mode and code32_start as the image has
them: only the real-mode setup code, which this entry skips, reads them.

acrn-dm checks only that the file fits. This loader also rejects, with one ConfigError line, what
would make the boot fail later: a missing or truncated setup header, a boot protocol older than
2.06, a kernel that does not load high, an initrd above initrd_addr_max, a command line longer
than cmdline_size or than the STR_LEN bytes acrn-dm copies, and a decompression buffer
(init_size from the relocated load address, arch/x86/boot/compressed/head_64.S) that would run
into the initrd, GDT, command line or zero page.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from acrn_sim.sim import ConfigError
from acrn_sim.sim.bootproto import BootImage, BootState, read_image
from acrn_sim.sim.paths import locate

KB, MB, GB = 1 << 10, 1 << 20, 1 << 30

# devicemodel/core/sw_load_bzimage.c
KERNEL_LOAD_OFF = 16 * MB
# devicemodel/include/sw_load.h: the -B buffer, and what sw_load_bzimage.c copies of it
STR_LEN = 1024
BOOT_ARG_LEN = 2048
E820_TYPE_RAM, E820_TYPE_RESERVED = 1, 2
# devicemodel/include/pci_core.h and vmmapi.h: vm_create sets lowmem_limit = PCI_EMUL_MEMBASE32;
# RAM beyond it goes at HIGHRAM_START_ADDR (vm_setup_memory)
PCI_EMUL_MEMBASE32 = 0x8000_0000
PCI_EMUL_ECFG_BASE = 0xE000_0000
HIGHRAM_START_ADDR = 4 * GB

# struct boot_params / struct setup_header (arch/x86/include/uapi/asm/bootparam.h)
SETUP_HEADER_OFF = 0x1F1
HDRS_MAGIC = b"HdrS"
BOOT_FLAG_MAGIC = 0xAA55
ZERO_PAGE_SIZE = 4096
BP_E820_ENTRIES = 0x1E8
BP_E820_TABLE = 0x2D0
E820_MAX_ENTRIES_ZEROPAGE = 128
# acrn-dm's struct _zeropage copies the header up to, not including, kernel_info_offset
HDR_COPY_END = 0x268
LOADED_HIGH, KASLR_FLAG, QUIET_FLAG, KEEP_SEGMENTS, CAN_USE_HEAP = 1, 2, 1 << 5, 1 << 6, 1 << 7
XLF_KERNEL_64, XLF_CAN_BE_LOADED_ABOVE_4G = 1, 2
XLF_EFI_HANDOVER_32, XLF_EFI_HANDOVER_64, XLF_EFI_KEXEC = 4, 8, 16
LOADER_TYPE_UNDEFINED = 0xFF
MIN_BOOT_PROTOCOL = 0x206  # cmdline_size, which the command line is checked against

# The boot GDT (bzimage_init_gdt) and CR0 = PE | ET | NE that acrn-dm sets
BOOT_CS, BOOT_DS = 0x10, 0x18
BOOT_GDT = struct.pack("<4Q", 0, 0, 0x00CF9B000000FFFF, 0x00CF93000000FFFF)
BOOT_CR0 = 0x31

# (field, offset, struct format, boot protocol that introduced it: 2.10 is 0x020A) - the
# header table of boot.rst
_FIELDS = (
    ("setup_sects", 0x1F1, "B", 0),
    ("root_flags", 0x1F2, "H", 0),
    ("syssize", 0x1F4, "I", 0),
    ("ram_size", 0x1F8, "H", 0),
    ("vid_mode", 0x1FA, "H", 0),
    ("root_dev", 0x1FC, "H", 0),
    ("boot_flag", 0x1FE, "H", 0),
    ("jump", 0x200, "H", 0x200),
    ("version", 0x206, "H", 0x200),
    ("kernel_version", 0x20E, "H", 0x200),
    ("type_of_loader", 0x210, "B", 0x200),
    ("loadflags", 0x211, "B", 0x200),
    ("code32_start", 0x214, "I", 0x200),
    ("ramdisk_image", 0x218, "I", 0x200),
    ("ramdisk_size", 0x21C, "I", 0x200),
    ("heap_end_ptr", 0x224, "H", 0x201),
    ("cmd_line_ptr", 0x228, "I", 0x202),
    ("initrd_addr_max", 0x22C, "I", 0x203),
    ("kernel_alignment", 0x230, "I", 0x205),
    ("relocatable_kernel", 0x234, "B", 0x205),
    ("min_alignment", 0x235, "B", 0x20A),
    ("xloadflags", 0x236, "H", 0x20C),
    ("cmdline_size", 0x238, "I", 0x206),
    ("hardware_subarch", 0x23C, "I", 0x207),
    ("payload_offset", 0x248, "I", 0x208),
    ("payload_length", 0x24C, "I", 0x208),
    ("setup_data", 0x250, "Q", 0x209),
    ("pref_address", 0x258, "Q", 0x20A),
    ("init_size", 0x260, "I", 0x20A),
    ("handover_offset", 0x264, "I", 0x20B),
    ("kernel_info_offset", 0x268, "I", 0x20F),
)


@dataclass(frozen=True)
class SetupHeader:
    """The fields of a kernel's setup header this loader uses, as the image has them (fields
    newer than the image's boot protocol read as 0)."""

    setup_sects: int
    root_flags: int
    syssize: int
    ram_size: int
    vid_mode: int
    root_dev: int
    boot_flag: int
    jump: int
    version: int
    kernel_version: int
    type_of_loader: int
    loadflags: int
    code32_start: int
    ramdisk_image: int
    ramdisk_size: int
    heap_end_ptr: int
    cmd_line_ptr: int
    initrd_addr_max: int
    kernel_alignment: int
    relocatable_kernel: int
    min_alignment: int
    xloadflags: int
    cmdline_size: int
    hardware_subarch: int
    payload_offset: int
    payload_length: int
    setup_data: int
    pref_address: int
    init_size: int
    handover_offset: int
    kernel_info_offset: int
    header_end: int  # 0x202 + the jump's displacement byte at 0x201 (boot.rst)

    @property
    def setup_size(self) -> int:
        """The real-mode part: the boot sector plus setup_sects sectors (0 means 4)."""
        return ((self.setup_sects or 4) + 1) * 512

    @property
    def version_str(self) -> str:
        return f"{self.version >> 8}.{self.version & 0xFF:02d}"


def parse_setup_header(data: bytes, name: str = "bzImage") -> SetupHeader:
    """Read and check the setup header of a bzImage file's contents (boot.rst, "The Real-Mode
    Kernel Header"). A problem raises ConfigError naming it."""
    if len(data) < 0x206:
        raise ConfigError(f"{name}: {len(data)} bytes is too short for a Linux setup header")
    if data[0x202:0x206] != HDRS_MAGIC:
        raise ConfigError(f"{name}: not a Linux bzImage (no 'HdrS' signature at 0x202)")
    if len(data) < 0x208:
        raise ConfigError(f"{name}: truncated in the setup header (no boot protocol version)")
    version = struct.unpack_from("<H", data, 0x206)[0]
    header_end = 0x202 + data[0x201]
    needed = max(
        (off + struct.calcsize(fmt) for _, off, fmt, since in _FIELDS if since <= version),
        default=0x208,
    )
    if header_end < min(needed, HDR_COPY_END):
        raise ConfigError(
            f"{name}: the setup header ends at {header_end:#x} but boot protocol "
            f"{version >> 8}.{version & 0xFF:02d} has fields up to {needed:#x}"
        )
    if len(data) < min(needed, header_end):
        raise ConfigError(f"{name}: truncated in the setup header ({len(data)} bytes)")
    values = {
        field: (struct.unpack_from("<" + fmt, data, off)[0] if since <= version else 0)
        for field, off, fmt, since in _FIELDS
        if off + struct.calcsize(fmt) <= len(data)
    }
    values.update({f: 0 for f, *_ in _FIELDS if f not in values})
    hdr = SetupHeader(**values, header_end=header_end)
    if hdr.boot_flag != BOOT_FLAG_MAGIC:
        raise ConfigError(f"{name}: bad boot_flag {hdr.boot_flag:#06x} (expected 0xaa55)")
    if version < MIN_BOOT_PROTOCOL:
        raise ConfigError(
            f"{name}: boot protocol {hdr.version_str} is too old (2.06 or later is needed)"
        )
    if not hdr.loadflags & LOADED_HIGH:
        raise ConfigError(f"{name}: a zImage (not loaded high) cannot be loaded; use a bzImage")
    if hdr.setup_size >= len(data):
        raise ConfigError(
            f"{name}: truncated: the setup code alone needs {hdr.setup_size} bytes, "
            f"the file has {len(data)}"
        )
    # The build tool pads the protected-mode part to syssize paragraphs; a signed image (a PE
    # signature appended) is longer, a cut-off one shorter.
    if hdr.setup_size + hdr.syssize * 16 > len(data):
        raise ConfigError(
            f"{name}: truncated: the kernel needs {hdr.setup_size + hdr.syssize * 16} bytes "
            f"(setup + syssize), the file has {len(data)}"
        )
    if hdr.relocatable_kernel and (
        hdr.kernel_alignment == 0 or hdr.kernel_alignment & (hdr.kernel_alignment - 1)
    ):
        raise ConfigError(f"{name}: kernel_alignment {hdr.kernel_alignment:#x} is not a power of 2")
    return hdr


def split_memory(memory: int) -> tuple[int, int]:
    """(lowmem, highmem) as vm_setup_memory splits the VM's RAM: up to lowmem_limit below
    4 GiB, the rest at HIGHRAM_START_ADDR."""
    if memory > PCI_EMUL_MEMBASE32:
        return PCI_EMUL_MEMBASE32, memory - PCI_EMUL_MEMBASE32
    return memory, 0


def e820_map(memory: int) -> list[tuple[int, int, int]]:
    """(base, length, type) entries as acrn_create_e820_table builds them for a VM with
    `memory` bytes of RAM and neither a virtual SSRAM nor a GPU's reserved memory: its table
    e820_default_entries with the empty entries removed. Its removal loop never looks at the
    last entry, so the empty high-RAM entry (a zero-length reserved range at 4 GiB) stays when
    all RAM is low; Linux's e820 sanitizer drops it."""
    if memory <= MB:
        raise ConfigError(f"a VM needs more than 1 MiB of memory (got {memory:#x} bytes)")
    lowmem, highmem = split_memory(memory)
    lowmem_limit = PCI_EMUL_MEMBASE32
    entries = [
        [0, 0xA0000, E820_TYPE_RAM],  # 0 to video memory
        [MB, lowmem - MB, E820_TYPE_RAM],  # 1 MiB to lowmem (LOWRAM_E820_ENTRY)
        [lowmem_limit, 0, E820_TYPE_RESERVED],  # virtual SSRAM: none
        [lowmem_limit, 0, E820_TYPE_RESERVED],  # GPU DSM and OpRegion: none
        [0, 0, E820_TYPE_RESERVED],  # low RAM above those: none without them
        [PCI_EMUL_ECFG_BASE, 4 * GB - PCI_EMUL_ECFG_BASE, E820_TYPE_RESERVED],  # MCFG, MMIO
        [HIGHRAM_START_ADDR, 0, E820_TYPE_RESERVED],  # high RAM
    ]
    if highmem:
        entries[-1] = [HIGHRAM_START_ADDR, highmem, E820_TYPE_RAM]
    # its loop drops the empty entries but stops before the last one
    return [(b, n, t) for b, n, t in entries[:-1] if n] + [tuple(entries[-1])]


def _roundup(value: int, align: int) -> int:
    return (value + align - 1) & ~(align - 1)


@dataclass(frozen=True)
class Layout:
    """Where acrn-dm puts each piece, in guest-physical addresses."""

    lowmem: int
    highmem: int
    kernel: int  # the whole bzImage file
    entry: int  # startup_32: kernel + setup size
    gdt: int
    ramdisk: int
    cmdline: int
    kernel_entry_slot: int  # reserved by acrn-dm's layout, unused
    zero_page: int


def layout(memory: int, ramdisk_size: int, setup_size: int) -> Layout:
    lowmem, highmem = split_memory(memory)
    ramdisk_load_size = _roundup(ramdisk_size + 8 * KB, 4 * KB)  # RAMDISK_LOAD_SIZE
    ramdisk = lowmem - ramdisk_load_size
    return Layout(
        lowmem=lowmem,
        highmem=highmem,
        kernel=KERNEL_LOAD_OFF,
        entry=KERNEL_LOAD_OFF + setup_size,
        gdt=ramdisk - 2 * KB,
        ramdisk=ramdisk,
        cmdline=lowmem - 8 * KB,
        kernel_entry_slot=lowmem - 6 * KB,
        zero_page=lowmem - 4 * KB,
    )


def decompress_target(hdr: SetupHeader, entry: int) -> int:
    """Where the decompressor's buffer of init_size bytes starts: the load address rounded up
    to kernel_alignment for a relocatable kernel, but never below LOAD_PHYSICAL_ADDR (which
    pref_address holds); a kernel that is not relocatable uses LOAD_PHYSICAL_ADDR
    (arch/x86/boot/compressed/head_64.S, startup_32)."""
    pref = hdr.pref_address or 0x100000  # before protocol 2.10, the 1 MiB default
    if hdr.relocatable_kernel:
        return max(_roundup(entry, hdr.kernel_alignment), pref)
    return pref


def build_zero_page(
    data: bytes,
    hdr: SetupHeader,
    *,
    cmd_line_ptr: int,
    ramdisk: tuple[int, int] | None,
    e820: list[tuple[int, int, int]],
) -> bytes:
    """struct boot_params as acrn_prepare_zeropage fills it."""
    zp = bytearray(ZERO_PAGE_SIZE)
    end = min(hdr.header_end, HDR_COPY_END)
    zp[SETUP_HEADER_OFF:end] = data[SETUP_HEADER_OFF:end]
    zp[0x1F1] = hdr.setup_sects or 4  # acrn_get_bzimage_setup_size's backward compatibility
    zp[0x210] = LOADER_TYPE_UNDEFINED
    zp[0x211] |= QUIET_FLAG
    if ramdisk is not None:
        struct.pack_into("<II", zp, 0x218, *ramdisk)
    struct.pack_into("<I", zp, 0x228, cmd_line_ptr)
    if len(e820) > E820_MAX_ENTRIES_ZEROPAGE:
        raise ConfigError(f"{len(e820)} e820 entries do not fit in the zero page")
    zp[BP_E820_ENTRIES] = len(e820)
    for i, (base, length, kind) in enumerate(e820):
        struct.pack_into("<QQI", zp, BP_E820_TABLE + 20 * i, base, length, kind)
    return bytes(zp)


def entry_state(lay: Layout) -> BootState:
    """The BSP's registers as acrn_sw_load_bzimage sets them (the rest zero, as its memset)."""
    return BootState(
        gprs={"rsi": lay.zero_page, "rbp": 0, "rdi": 0, "rbx": 0},
        gdt=(lay.gdt, len(BOOT_GDT) - 1),
        idt=(0, 0),
        rip=lay.entry,
        cr0=BOOT_CR0,
        rflags=0x2,  # IF = 0
        selectors={"cs": BOOT_CS, "ss": BOOT_DS, "ds": BOOT_DS, "es": BOOT_DS},
    )


def is_bzimage(data: bytes) -> bool:
    """Whether the contents look like a Linux kernel with a setup header (for a loader that
    picks the boot protocol by looking at the file)."""
    return data[0x202:0x206] == HDRS_MAGIC


def _read_initrd(path: str) -> bytes:
    p = Path(locate(path))
    if not p.is_file():
        raise ConfigError(f"initrd not found: {path}")
    data = p.read_bytes()
    if not data:
        raise ConfigError(f"{p.name}: the initrd is empty")  # check_image: "file is empty"
    return data


def prepare_bzimage(
    kernel_path: str, initrd_path: str | None, cmdline: str, memory: int
) -> BootImage:
    """Lay out a bzImage, an optional initrd and a command line for a VM with `memory` bytes
    of RAM as acrn-dm does. The caller writes `writes` into guest RAM (RAM above 2 GiB, if
    any, belongs at HIGHRAM_START_ADDR as in the e820 map) and hands `state` to the BSP with
    HC_SET_VCPU_REGS. The ACPI and MP tables are separate (sim/acpi.py)."""
    data = read_image(kernel_path)
    name = Path(kernel_path).name
    hdr = parse_setup_header(data, name)
    initrd = _read_initrd(initrd_path) if initrd_path is not None else None
    rd_size = len(initrd) if initrd is not None else 0
    lay = layout(memory, rd_size, hdr.setup_size)
    if lay.lowmem <= _roundup(rd_size + 8 * KB, 4 * KB) + 2 * KB + KERNEL_LOAD_OFF:
        raise ConfigError(
            f"{name}: {memory:#x} bytes of memory leave no room above 16 MiB for the kernel"
            + (f" and the {rd_size}-byte initrd" if initrd is not None else "")
            + " (use a larger --mem)"
        )
    if lay.kernel + len(data) > lay.gdt:
        raise ConfigError(
            f"{name}: the {len(data)}-byte kernel at 16 MiB runs into the initrd and boot data "
            f"at {lay.gdt:#x} (use a larger --mem)"
        )
    target = decompress_target(hdr, lay.entry)
    buf_end = target + max(hdr.init_size, len(data) - hdr.setup_size)
    if buf_end > lay.gdt:
        raise ConfigError(
            f"{name}: the kernel decompresses into [{target:#x}, {buf_end:#x}), over the "
            f"initrd and boot data at {lay.gdt:#x} (use a larger --mem)"
        )
    if initrd is not None and lay.ramdisk + rd_size - 1 > hdr.initrd_addr_max:
        raise ConfigError(
            f"{name}: the initrd would end at {lay.ramdisk + rd_size - 1:#x}, above the "
            f"kernel's initrd_addr_max {hdr.initrd_addr_max:#x}"
        )
    args = cmdline.encode()
    if len(args) >= STR_LEN:
        raise ConfigError(
            f"{name}: the command line has {len(args)} bytes; acrn-dm copies at most "
            f"{STR_LEN - 1} of them"
        )
    if len(args) > hdr.cmdline_size:
        raise ConfigError(
            f"{name}: the command line has {len(args)} bytes; the kernel takes at most "
            f"{hdr.cmdline_size} (cmdline_size)"
        )
    image = bytearray(data)
    image[0x1F1] = hdr.setup_sects or 4  # acrn-dm patches the loaded copy too
    zero_page = build_zero_page(
        data,
        hdr,
        cmd_line_ptr=lay.cmdline,
        ramdisk=(lay.ramdisk, rd_size) if initrd is not None else None,
        e820=e820_map(memory),
    )
    writes = [(lay.kernel, bytes(image))]
    if initrd is not None:
        writes.append((lay.ramdisk, initrd))
    writes += [
        (lay.gdt, BOOT_GDT),
        (lay.cmdline, args + b"\0"),
        (lay.zero_page, zero_page),
    ]
    return BootImage(writes, entry_state(lay), 32)
