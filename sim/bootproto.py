"""Boot protocols: what a loader writes into guest memory and which CPU state it hands over.

One piece serves both loaders of the model: the hypervisor's for the Service VM and
pre-launched VMs (hv/vboot.py, ACRN hypervisor/boot/guest/) and the device model's for User
VMs (guests/service_vm/dm.py, ACRN devicemodel/core/sw_load_*.c), which hands the CPU
state over through HC_SET_VCPU_REGS.

- Multiboot v1 (Multiboot Specification 0.6.96 §3): an ELF32 image, or any image whose header
  has the address fields (flag bit 16). Entry in flat 32-bit protected mode, paging off,
  IF = 0, EAX = 0x2BADB002, EBX = GPA of the info structure (memory sizes, memory map, command
  line, boot loader name).
- ELF64: entry in long mode on an identity map of the first 4 GiB (2 MiB pages), RDI (and EBX) =
  the same Multiboot info structure.

The boot data lies in one 32 KiB block, where the image loads nothing; at its base B:
  B+0x0000-0x5FFF  ELF64 identity-map page tables     B+0x6FF0  initial stack (down)
  B+0x7000  GDT     B+0x7100  Multiboot info     B+0x7200  memory map     B+0x7400  command line
  B+0x7800  boot loader name   B+0x7C00  segment-loading trampoline
B is 0x1000 (the block is 0x1000-0x8FFF) unless a segment of the image lies there; then the
first free page-aligned place in conventional memory (below 0x9FC00), else the first above
the image. QEMU's Multiboot loader (hw/i386/multiboot.c) likewise puts the command lines, the
boot loader name and the module list after the image, and keeps its info structure and memory
map in one fixed place (0x9000-0x95FF); a kernel linked low (a real-mode trampoline at 0x8000,
an image below 1 MiB) then loads as under QEMU.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

from acrn_sim.sim import ConfigError
from acrn_sim.sim.elf import ElfImage, Segment, parse_elf
from acrn_sim.sim.limits import MAX_CMDLINE, MAX_IMAGE_SIZE, MIN_VM_MEMORY, fmt_size
from acrn_sim.sim.paths import locate, shown

MULTIBOOT_HEADER_MAGIC = 0x1BADB002
MULTIBOOT_BOOTLOADER_MAGIC = 0x2BADB002
MB_INFO_MEMORY, MB_INFO_CMDLINE, MB_INFO_MEM_MAP, MB_INFO_LOADER_NAME = 1, 1 << 2, 1 << 6, 1 << 9
MB_AOUT_KLUDGE = 1 << 16
BOOT_BLOCK = 0x8000  # the size of the boot data block
DEFAULT_BOOT_BASE = 0x1000
CONVENTIONAL_END = 0x9FC00  # the end of the first RAM range of the memory map (below the EBDA)
LOADER_NAME = b"acrn-sim\0"
EFER_LME, EFER_LMA = 1 << 8, 1 << 10
GDT32 = struct.pack("<QQQ", 0, 0x00CF9A000000FFFF, 0x00CF92000000FFFF)
GDT64 = struct.pack("<QQQ", 0, 0x00AF9A000000FFFF, 0x00CF92000000FFFF)


@dataclass(frozen=True)
class BootLayout:
    """Where the boot data goes: a 32 KiB block at `base` (the module docstring)."""

    base: int = DEFAULT_BOOT_BASE

    @property
    def area(self) -> tuple[int, int]:
        return self.base, self.base + BOOT_BLOCK

    pt = property(lambda self: self.base)
    initial_sp = property(lambda self: self.base + 0x6FF0)
    gdt = property(lambda self: self.base + 0x7000)
    mbi = property(lambda self: self.base + 0x7100)
    mmap = property(lambda self: self.base + 0x7200)
    cmdline = property(lambda self: self.base + 0x7400)
    name = property(lambda self: self.base + 0x7800)
    trampoline = property(lambda self: self.base + 0x7C00)


def choose_layout(segments: list[tuple[int, int]], mem_size: int) -> BootLayout:
    """The boot block's place: 0x1000 if no segment ([start, end) pairs) lies there, else the
    first page-aligned 32 KiB of conventional memory after a segment that holds none, else 1
    MiB or the first place after a segment above it, in RAM below 4 GiB (the 32-bit entry
    needs it addressable)."""

    def free(base: int) -> bool:
        return all(end <= base or start >= base + BOOT_BLOCK for start, end in segments)

    ends = sorted((end + 0xFFF) & ~0xFFF for _, end in segments)
    candidates = [DEFAULT_BOOT_BASE, *(e for e in ends if e < 0x100000), 0x100000]
    candidates += [e for e in ends if e >= 0x100000]
    for base in candidates:
        low = base + BOOT_BLOCK <= CONVENTIONAL_END
        high = base >= 0x100000 and base + BOOT_BLOCK <= min(mem_size, 1 << 32)
        if (low or high) and free(base):
            return BootLayout(base)
    raise ConfigError(
        f"no room for the boot data ({BOOT_BLOCK // 1024} KiB) beside the image in "
        f"{mem_size:#x} bytes of RAM (use a larger --mem)"
    )


@dataclass
class BootState:
    """The CPU state a boot protocol hands over (the fields of ACRN's struct acrn_regs)."""

    gprs: dict[str, int] = field(default_factory=dict)
    gdt: tuple[int, int] = (0, 0)  # (base, limit)
    idt: tuple[int, int] = (0, 0x3FF)
    rip: int = 0
    cr0: int = 0
    cr3: int = 0
    cr4: int = 0
    ia32_efer: int = 0
    rflags: int = 0x2
    selectors: dict[str, int] = field(default_factory=dict)  # cs, ss, ds, es

    @property
    def long_mode(self) -> bool:
        return bool(self.ia32_efer & EFER_LMA)


@dataclass
class BootImage:
    """What to write where in guest-physical memory, and the CPU state at entry."""

    writes: list[tuple[int, bytes]]
    state: BootState
    bits: int


def read_image(path: str) -> bytes:
    p = Path(locate(path))
    try:
        if not p.exists():
            raise ConfigError(f"guest image not found: {path}")
        if not p.is_file():
            raise ConfigError(f"guest image is not a file: {path}")
        with open(p, "rb") as f:
            # One byte more than the limit tells a file that is too large, without reading it
            # whole (a file in /proc reports size 0, so its size cannot be asked first)
            data = f.read(MAX_IMAGE_SIZE + 1)
    except OSError as e:
        raise ConfigError(f"cannot read guest image {path}: {e.strerror or e}") from None
    except ValueError as e:  # a path with a NUL byte, or that the OS cannot represent
        raise ConfigError(f"bad guest image path {path!r}: {e}") from None
    if len(data) > MAX_IMAGE_SIZE:
        raise ConfigError(f"guest image {path} is larger than {fmt_size(MAX_IMAGE_SIZE)}")
    return data


def find_multiboot_header(data: bytes) -> tuple[int, tuple[int, ...]] | None:
    """(offset, header words) of a valid Multiboot header in the first 8 KiB, 4-aligned. The
    words are all eight when the file holds them, else only magic, flags and checksum."""
    for off in range(0, min(len(data), 8192) - 11, 4):
        magic, flags, checksum = struct.unpack_from("<III", data, off)
        if magic == MULTIBOOT_HEADER_MAGIC and (magic + flags + checksum) & 0xFFFF_FFFF == 0:
            if off + 32 <= len(data):
                return off, struct.unpack_from("<8I", data, off)
            return off, (magic, flags, checksum)
    return None


def _image_from_address_fields(data: bytes, mb, name: str) -> ElfImage:
    off, words = mb
    if len(words) < 8:
        raise ConfigError(
            f"{name}: the Multiboot header at offset {off:#x} asks for address fields "
            "but the file ends inside them"
        )
    _, _, _, header_addr, load_addr, load_end, bss_end, entry = words
    start = off - (header_addr - load_addr)
    if start < 0 or load_addr > header_addr:
        raise ConfigError(f"{name}: inconsistent Multiboot address fields")
    if load_end and load_end <= load_addr:
        raise ConfigError(f"{name}: Multiboot load_end_addr is not above load_addr")
    if bss_end and bss_end < max(load_end, load_addr):
        raise ConfigError(f"{name}: Multiboot bss_end_addr is below the loaded image")
    end = len(data) if load_end == 0 else start + (load_end - load_addr)
    if end > len(data):
        raise ConfigError(f"{name}: Multiboot load_end_addr lies past the end of the file")
    blob = data[start:end]
    memsz = max(len(blob), (bss_end - load_addr) if bss_end else 0)
    if memsz == 0:
        raise ConfigError(f"{name}: the Multiboot address fields load nothing")
    return ElfImage(32, 3, entry, (Segment(load_addr, load_addr, blob, memsz),))


def encode_cmdline(cmdline: str, name: str) -> bytes:
    """The command line's bytes as given: a str from the command line holds bytes that are not
    UTF-8 as surrogate escapes (PEP 383), and those go to the guest unchanged."""
    data = cmdline.encode("utf-8", "surrogateescape")
    if len(data) > MAX_CMDLINE:
        raise ConfigError(f"{name}: the command line is {len(data)} bytes, at most {MAX_CMDLINE}")
    if b"\0" in data:
        raise ConfigError(f"{name}: the command line holds a NUL byte")
    return data


def _multiboot_info(lay: BootLayout, mem_size: int, cmdline: str) -> list[tuple[int, bytes]]:
    mmap = b"".join(
        struct.pack("<IQQI", 20, base, length, kind)
        for base, length, kind in (
            (0, 0x9FC00, 1),
            (0x9FC00, 0x400, 2),
            (0xF0000, 0x10000, 2),
            (0x100000, mem_size - 0x100000, 1),
        )
    )
    flags = MB_INFO_MEMORY | MB_INFO_CMDLINE | MB_INFO_MEM_MAP | MB_INFO_LOADER_NAME
    info = bytearray(88)
    struct.pack_into("<III", info, 0, flags, 640, (mem_size - 0x100000) // 1024)
    struct.pack_into("<I", info, 16, lay.cmdline)
    struct.pack_into("<II", info, 44, len(mmap), lay.mmap)
    struct.pack_into("<I", info, 64, lay.name)
    cmd = encode_cmdline(cmdline, "VM") + b"\0"
    return [
        (lay.mbi, bytes(info)),
        (lay.mmap, mmap),
        (lay.cmdline, cmd),
        (lay.name, LOADER_NAME),
    ]


def prepare(path: str, mem_size: int, cmdline: str = "") -> BootImage:
    """Parse the image at `path` and lay out its boot for a VM with `mem_size` bytes of RAM."""
    data = read_image(path)
    name = Path(path).name
    if mem_size < MIN_VM_MEMORY:
        raise ConfigError(f"{name}: the VM needs at least {fmt_size(MIN_VM_MEMORY)} of memory")
    encode_cmdline(cmdline, name)
    mb = find_multiboot_header(data)
    if data[:4] == b"\x7fELF":
        image = parse_elf(data, name)
        if image.machine not in (3, 62):
            raise ConfigError(f"{name}: not an x86 ELF (e_machine {image.machine})")
    elif mb is not None and mb[1][1] & MB_AOUT_KLUDGE:
        image = _image_from_address_fields(data, mb, name)
    else:
        raise ConfigError(f"{name}: not an ELF file (and no Multiboot header with address fields)")
    if image.bits == 32 and mb is None:
        raise ConfigError(f"{name}: ELF32 image without a Multiboot header")
    footprint = sum(seg.memsz for seg in image.segments)
    if footprint > MAX_IMAGE_SIZE:
        raise ConfigError(
            f"{name}: the image's segments need {fmt_size(footprint)} of memory, "
            f"at most {fmt_size(MAX_IMAGE_SIZE)}"
        )
    writes: list[tuple[int, bytes]] = []
    for seg in image.segments:
        if seg.paddr + seg.memsz > mem_size:
            raise ConfigError(
                f"{name}: image needs memory up to {seg.paddr + seg.memsz:#x} but the VM has "
                f"{mem_size:#x} bytes (use a larger --mem)"
            )
        writes.append((seg.paddr, seg.data + bytes(seg.memsz - len(seg.data))))
    lay = choose_layout([(s.paddr, s.paddr + s.memsz) for s in image.segments], mem_size)
    # A loader's command line starts with the kernel's own path: GRUB passes its `multiboot`
    # line, QEMU's -kernel "<file> <-append string>" (hw/i386/multiboot.c), space included.
    # A shipped image is named by its path in the package, wherever that lies (sim/paths.py).
    writes += _multiboot_info(lay, mem_size, f"{shown(path)} {cmdline}")
    if image.bits == 32:
        state = _protected_mode_entry(lay, image.entry, writes)
    else:
        state = _long_mode_entry(lay, image.entry, writes)
    return BootImage(writes, state, image.bits)


def _protected_mode_entry(lay: BootLayout, entry: int, writes: list) -> BootState:
    # Segment registers get their hidden descriptors only when the CPU loads them, so, like a
    # real boot loader, a trampoline loads every segment register and far-jumps to the entry.
    trampoline = (
        b"\x66\xb8\x10\x00"  # mov ax, 0x10
        b"\x8e\xd8\x8e\xc0\x8e\xd0\x8e\xe0\x8e\xe8"  # mov ds/es/ss/fs/gs, ax
        + b"\xb8"
        + struct.pack("<I", MULTIBOOT_BOOTLOADER_MAGIC)  # mov eax, 0x2BADB002
        + b"\xea"
        + struct.pack("<IH", entry, 0x08)  # ljmp 0x08:entry
    )
    writes += [(lay.gdt, GDT32), (lay.trampoline, trampoline)]
    return BootState(
        gprs={"rax": MULTIBOOT_BOOTLOADER_MAGIC, "rbx": lay.mbi, "rsp": lay.initial_sp},
        gdt=(lay.gdt, len(GDT32) - 1),
        rip=lay.trampoline,
        cr0=0x11,
        selectors={"cs": 0x08, "ss": 0x10, "ds": 0x10, "es": 0x10},
    )


def _long_mode_entry(lay: BootLayout, entry: int, writes: list) -> BootState:
    # PML4 -> one PDPT -> four PDs of 2 MiB pages: identity map of [0, 4 GiB)
    pml4, pdpt, pds = lay.pt, lay.pt + 0x1000, lay.pt + 0x2000
    writes += [
        (pml4, struct.pack("<Q", pdpt | 0x3) + bytes(4088)),
        (
            pdpt,
            b"".join(struct.pack("<Q", (pds + i * 0x1000) | 0x3) for i in range(4))
            + bytes(4096 - 32),
        ),
        (pds, b"".join(struct.pack("<Q", (i << 21) | 0x83) for i in range(2048))),
        (lay.gdt, GDT64),
    ]
    return BootState(
        gprs={
            "rax": MULTIBOOT_BOOTLOADER_MAGIC,
            "rbx": lay.mbi,
            "rdi": lay.mbi,
            "rsp": lay.initial_sp,
        },
        gdt=(lay.gdt, len(GDT64) - 1),
        idt=(0, 0xFFF),
        rip=entry,
        cr0=0x8000_0011,
        cr3=pml4,
        cr4=0x20,
        ia32_efer=EFER_LME | EFER_LMA,
        selectors={"cs": 0x08, "ss": 0x10, "ds": 0x10, "es": 0x10},
    )


def apply_state(engine, state: BootState) -> None:
    """Put a UC_MODE_64 engine into `state` (docs/unicorn.md: for 32-bit protected mode,
    CR0=PE|PG then CR0=PE drops LMA, EFER=0, and only CS/DS/SS/ES selectors are written)."""
    engine.set_table_reg("gdtr", *state.gdt)
    engine.set_table_reg("idtr", *state.idt)
    if state.long_mode:
        engine.set_reg("cr3", state.cr3)
        engine.set_reg("cr4", state.cr4)
        engine.msr_write(0xC000_0080, state.ia32_efer)
        engine.set_reg("cr0", state.cr0)
    else:
        engine.set_reg("cr4", 0x20)
        engine.set_reg("cr0", 0x8000_0011)
        engine.set_reg("cr0", state.cr0)
        engine.msr_write(0xC000_0080, state.ia32_efer)
        engine.set_reg("cr4", state.cr4)
        engine.set_reg("cr3", state.cr3)
    engine.set_regs(state.selectors)
    gprs = {r: 0 for r in ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp")}
    gprs.update(state.gprs)
    engine.set_regs({**gprs, "rflags": state.rflags, "rip": state.rip})
    engine.flush_blocks()
