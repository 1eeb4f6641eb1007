"""Where the Multiboot loader puts its boot data (sim/bootproto.py): never where the image loads.
QEMU's loader (hw/i386/multiboot.c) likewise puts the command line after the image; a kernel
linked low (guests/src/lowload.c, from 0x2000) boots the same under QEMU
(tests/test_qemu_reference.py) and here."""

from __future__ import annotations

import struct

import pytest
from fuzz import images

from acrn_sim.sim import ConfigError, bootproto
from conftest import boot, boot_user

MEM = 32 << 20


def _overlaps(a: int, n: int, b: int, m: int) -> bool:
    return a < b + m and b < a + n


def _image(tmp_path, paddr: int, size: int, bits: int = 32) -> str:
    """An ELF image with one segment of `size` bytes at `paddr`, a Multiboot header first."""
    flags = 0
    hdr = struct.pack("<III", images.MB_MAGIC, flags, (-(images.MB_MAGIC + flags)) & 0xFFFFFFFF)
    seg = hdr + bytes(size - len(hdr))
    data = (images.elf64 if bits == 64 else images.elf32)(seg, paddr + 0x10, paddr=paddr)
    path = tmp_path / f"img{bits}.elf"
    path.write_bytes(data)
    return str(path)


def test_an_image_at_1_mib_keeps_the_usual_layout(tmp_path):
    boot_image = bootproto.prepare(_image(tmp_path, 0x100000, 0x1000), MEM, "x")
    assert boot_image.state.gprs["rbx"] == 0x8100  # the info structure, as before
    assert boot_image.state.rip == 0x8C00  # the trampoline
    assert bootproto.choose_layout([(0x100000, 0x101000)], MEM).base == 0x1000


@pytest.mark.parametrize("bits", [32, 64])
@pytest.mark.parametrize("paddr,size", [(0x8000, 0x1000), (0x2000, 0x6000), (0x1000, 0x9E000)])
def test_boot_data_goes_where_the_image_does_not_load(tmp_path, bits, paddr, size):
    boot_image = bootproto.prepare(_image(tmp_path, paddr, size, bits), MEM, "a b")
    image = [(a, d) for a, d in boot_image.writes if a == paddr]
    assert len(image) == 1 and len(image[0][1]) == size
    for addr, data in boot_image.writes:
        if (addr, data) != image[0]:
            assert not _overlaps(addr, len(data), paddr, size), hex(addr)
    state = boot_image.state
    mbi = state.gprs["rbx"]
    assert not _overlaps(mbi, 88, paddr, size)
    assert not _overlaps(state.gprs["rsp"] - 0x1000, 0x1000, paddr, size)  # the stack
    written = dict(boot_image.writes)
    info = written[mbi]
    cmdline_addr = struct.unpack_from("<I", info, 16)[0]
    assert written[cmdline_addr].endswith(b" a b\0")
    if bits == 64:
        assert not _overlaps(state.cr3, 0x6000, paddr, size)  # the identity map
    # conventional memory first; only an image filling it pushes the block above the image
    base = bootproto.choose_layout([(paddr, paddr + size)], MEM).base
    assert base + bootproto.BOOT_BLOCK <= 0x9FC00 or base >= paddr + size


def test_no_room_for_the_boot_data_is_a_clear_error():
    # conventional memory taken, and nothing left above the image
    with pytest.raises(ConfigError, match="no room for the boot data"):
        bootproto.choose_layout([(0x1000, 0x9F000), (0x100000, MEM - 0x1000)], MEM)


@pytest.mark.parametrize("user", [False, True], ids=["pre-launched", "user-vm"])
def test_lowload_linked_at_0x2000_boots(user):
    """The image fills 0x2000-0x7467, where the boot data used to be: refused before."""
    run = boot_user("lowload.elf", cmdlines=["a b"]) if user else boot("lowload.elf", cmdline="a b")
    assert run.exit_code == 0, run.console
    assert "# lowload: 5 checks, 0 failed" in run.console
    assert "lowload: arguments 'a b'" in run.console
