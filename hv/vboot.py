"""Loading a guest image into a VM and setting its boot CPU state (ACRN hypervisor/boot/guest/
vboot*.c does this for the Service VM and pre-launched VMs; the device model does it for User
VMs with the same protocols).

- Multiboot v1 (the Multiboot Specification 0.6.96 §3): an ELF32 image, or any image whose
  header has the address fields (flag bit 16). Entry in flat 32-bit protected mode, paging off,
  IF = 0, EAX = 0x2BADB002, EBX = GPA of the info structure (memory sizes, memory map,
  command line, boot loader name).
- ELF64: entry in long mode on an identity map of the first 4 GiB (2 MiB pages), RDI = the same
  Multiboot info structure.

Fixed low-memory layout used by the loader (an image must not overlap it):
  0x1000-0x6FFF  ELF64 identity-map page tables
  0x8000         GDT       0x8100  Multiboot info   0x8200  memory map   0x8400  command line
  0x8800         boot loader name   0x8C00  segment-loading trampoline   0x7FF0  initial stack
"""

from __future__ import annotations

import struct
from pathlib import Path

from sim import ConfigError
from sim.elf import ElfImage, parse_elf

MULTIBOOT_HEADER_MAGIC = 0x1BADB002
MULTIBOOT_BOOTLOADER_MAGIC = 0x2BADB002
MB_INFO_MEMORY, MB_INFO_CMDLINE, MB_INFO_MEM_MAP, MB_INFO_LOADER_NAME = 1, 1 << 2, 1 << 6, 1 << 9
MB_AOUT_KLUDGE = 1 << 16
PT_BASE, GDT_BASE, MBI_BASE, MMAP_BASE, CMDLINE_BASE, NAME_BASE = (
    0x1000, 0x8000, 0x8100, 0x8200, 0x8400, 0x8800,
)  # fmt: skip
TRAMPOLINE_BASE = 0x8C00
BOOT_AREA = (0x1000, 0x9000)
INITIAL_SP = 0x7FF0
LOADER_NAME = b"acrn-sim\0"
EFER_LME, EFER_LMA = 1 << 8, 1 << 10
GDT32 = struct.pack("<QQQ", 0, 0x00CF9A000000FFFF, 0x00CF92000000FFFF)
GDT64 = struct.pack("<QQQ", 0, 0x00AF9A000000FFFF, 0x00CF92000000FFFF)


def read_image(path: str) -> bytes:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"guest image not found: {path}")
    if not p.is_file():
        raise ConfigError(f"guest image is not a file: {path}")
    return p.read_bytes()


def find_multiboot_header(data: bytes) -> tuple[int, tuple[int, ...]] | None:
    """(offset, header words) of a valid Multiboot header in the first 8 KiB, 4-aligned."""
    for off in range(0, min(len(data), 8192) - 11, 4):
        magic, flags, checksum = struct.unpack_from("<III", data, off)
        if magic == MULTIBOOT_HEADER_MAGIC and (magic + flags + checksum) & 0xFFFF_FFFF == 0:
            words = (
                struct.unpack_from("<8I", data, off)
                if off + 32 <= len(data)
                else (magic, flags, checksum)
            )
            return off, words
    return None


def _load_segments(vm, image: ElfImage, name: str, mem_size: int) -> None:
    for seg in image.segments:
        if seg.paddr < BOOT_AREA[1] and seg.paddr + seg.memsz > BOOT_AREA[0]:
            raise ConfigError(f"{name}: segment at {seg.paddr:#x} overlaps the boot area")
        if seg.paddr + seg.memsz > mem_size:
            raise ConfigError(
                f"{name}: image needs memory up to {seg.paddr + seg.memsz:#x} but the VM has "
                f"{mem_size:#x} bytes (use a larger --mem)"
            )
        vm.copy_to_gpa(seg.paddr, seg.data + bytes(seg.memsz - len(seg.data)))


def _multiboot_info(vm, mem_size: int, cmdline: str) -> None:
    mem_lower_kb = 640
    mem_upper_kb = (mem_size - 0x100000) // 1024
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
    struct.pack_into("<III", info, 0, flags, mem_lower_kb, mem_upper_kb)
    struct.pack_into("<I", info, 16, CMDLINE_BASE)
    struct.pack_into("<II", info, 44, len(mmap), MMAP_BASE)
    struct.pack_into("<I", info, 64, NAME_BASE)
    cmd = cmdline.encode()[:0x3FF] + b"\0"
    for gpa, blob in ((MBI_BASE, bytes(info)), (MMAP_BASE, mmap), (CMDLINE_BASE, cmd),
                      (NAME_BASE, LOADER_NAME)):  # fmt: skip
        vm.copy_to_gpa(gpa, blob)


def load_guest(vm, path: str, cmdline: str = "") -> None:
    """Load `path` into `vm` and set up its BSP for the image's boot protocol."""
    data = read_image(path)
    name = Path(path).name
    mem_size = vm.config.memory
    if mem_size < 2 << 20:
        raise ConfigError(f"VM {vm.name}: needs at least 2 MiB of memory")
    mb = find_multiboot_header(data)
    if data[:4] == b"\x7fELF":
        image = parse_elf(data, name)
        if image.machine not in (3, 62):
            raise ConfigError(f"{name}: not an x86 ELF (e_machine {image.machine})")
    elif mb is not None and mb[1][1] & MB_AOUT_KLUDGE:
        image = _image_from_address_fields(data, mb, name)
    else:
        raise ConfigError(f"{name}: not an ELF file (and no Multiboot header with address fields)")
    _load_segments(vm, image, name, mem_size)
    _multiboot_info(vm, mem_size, cmdline)
    bsp = vm.vcpus[0].engine
    if image.bits == 32:
        if mb is None:
            raise ConfigError(f"{name}: ELF32 image without a Multiboot header")
        _enter_protected_mode(vm, bsp, image.entry)
    else:
        _enter_long_mode(vm, bsp, image.entry)


def _image_from_address_fields(data: bytes, mb, name: str) -> ElfImage:
    from sim.elf import Segment

    off, (_, _, _, header_addr, load_addr, load_end, bss_end, entry) = mb
    start = off - (header_addr - load_addr)
    if start < 0 or load_addr > header_addr:
        raise ConfigError(f"{name}: inconsistent Multiboot address fields")
    end = len(data) if load_end == 0 else start + (load_end - load_addr)
    blob = data[start:end]
    memsz = max(len(blob), (bss_end - load_addr) if bss_end else 0)
    return ElfImage(32, 3, entry, (Segment(load_addr, load_addr, blob, memsz),))


def _enter_protected_mode(vm, engine, entry: int) -> None:
    """Flat 32-bit protected mode from a UC_MODE_64 engine (UNICORN_NOTES D.3 recipe):
    CR0=PE|PG then CR0=PE drops LMA; EFER=0; write CS/DS/SS selectors only, never FS/GS."""
    vm.copy_to_gpa(GDT_BASE, GDT32)
    engine.set_table_reg("gdtr", GDT_BASE, len(GDT32) - 1)
    engine.set_table_reg("idtr", 0, 0x3FF)
    engine.set_reg("cr4", 0x20)
    engine.set_reg("cr0", 0x8000_0011)
    engine.set_reg("cr0", 0x11)
    engine.msr_write(0xC000_0080, 0)
    engine.set_reg("cr4", 0)
    engine.set_regs({"cs": 0x08, "ds": 0x10, "ss": 0x10, "es": 0x10})
    # reg_write changes only the selectors, not the hidden descriptor caches, and QEMU's IRET
    # helper takes the stack size from SS's cache (measured: a 16-bit mask). So, like a real
    # boot loader, a trampoline loads every segment register and far-jumps to the entry.
    trampoline = (
        b"\x66\xb8\x10\x00"  # mov ax, 0x10
        b"\x8e\xd8\x8e\xc0\x8e\xd0\x8e\xe0\x8e\xe8"  # mov ds/es/ss/fs/gs, ax
        + b"\xb8"
        + struct.pack("<I", MULTIBOOT_BOOTLOADER_MAGIC)  # mov eax, 0x2BADB002
        + b"\xea"
        + struct.pack("<IH", entry, 0x08)  # ljmp 0x08:entry
    )
    vm.copy_to_gpa(TRAMPOLINE_BASE, trampoline)
    engine.set_regs({
        "rax": MULTIBOOT_BOOTLOADER_MAGIC, "rbx": MBI_BASE, "rcx": 0, "rdx": 0,
        "rsi": 0, "rdi": 0, "rbp": 0, "rsp": INITIAL_SP, "rflags": 0x2, "rip": TRAMPOLINE_BASE,
    })  # fmt: skip
    engine.flush_blocks()


def _enter_long_mode(vm, engine, entry: int) -> None:
    # PML4 -> one PDPT -> four PDs of 2 MiB pages: identity map of [0, 4 GiB)
    pml4, pdpt, pds = PT_BASE, PT_BASE + 0x1000, PT_BASE + 0x2000
    vm.copy_to_gpa(pml4, struct.pack("<Q", pdpt | 0x3) + bytes(4088))
    vm.copy_to_gpa(pdpt, b"".join(struct.pack("<Q", (pds + i * 0x1000) | 0x3) for i in range(4))
                   + bytes(4096 - 32))  # fmt: skip
    vm.copy_to_gpa(pds, b"".join(struct.pack("<Q", (i << 21) | 0x83) for i in range(2048)))
    vm.copy_to_gpa(GDT_BASE, GDT64)
    engine.set_table_reg("gdtr", GDT_BASE, len(GDT64) - 1)
    engine.set_table_reg("idtr", 0, 0xFFF)
    engine.set_reg("cr3", pml4)
    engine.set_reg("cr4", 0x20)
    engine.msr_write(0xC000_0080, EFER_LME | EFER_LMA)
    engine.set_reg("cr0", 0x8000_0011)
    engine.set_regs({"cs": 0x08, "ds": 0x10, "ss": 0x10, "es": 0x10})
    engine.set_regs({
        "rax": MULTIBOOT_BOOTLOADER_MAGIC, "rbx": MBI_BASE, "rdi": MBI_BASE,
        "rsp": INITIAL_SP, "rflags": 0x2, "rip": entry,
    })  # fmt: skip
    engine.flush_blocks()
