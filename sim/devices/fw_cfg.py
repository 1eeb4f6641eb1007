"""QEMU's fw_cfg, I/O-port interface (QEMU docs/specs/fw_cfg.rst): selector at base (16-bit
write), data at base+1 (byte reads stream the selected item). Items: the "QEMU" signature, the
interface ID (traditional interface only, no DMA), RAM size, CPU counts and an empty file
directory."""

from __future__ import annotations

import struct

FW_CFG_SIGNATURE, FW_CFG_ID, FW_CFG_RAM_SIZE, FW_CFG_NB_CPUS = 0x00, 0x01, 0x03, 0x05
FW_CFG_MAX_CPUS, FW_CFG_FILE_DIR = 0x0F, 0x19
FW_CFG_PORT_SEL = 0x510
FW_CFG_PORT_DATA = 0x511


class FwCfg:
    def __init__(self, ram_size: int, cpus: int) -> None:
        self.items = {
            FW_CFG_SIGNATURE: b"QEMU",
            FW_CFG_ID: struct.pack("<I", 1),
            FW_CFG_RAM_SIZE: struct.pack("<Q", ram_size),
            FW_CFG_NB_CPUS: struct.pack("<H", cpus),
            FW_CFG_MAX_CPUS: struct.pack("<H", cpus),
            FW_CFG_FILE_DIR: struct.pack(">I", 0),
        }
        self.selected = b""
        self.offset = 0

    def select(self, key: int) -> None:
        self.selected = self.items.get(key & 0x3FFF, b"")
        self.offset = 0

    def read_data(self) -> int:
        if self.offset >= len(self.selected):
            return 0
        value = self.selected[self.offset]
        self.offset += 1
        return value

    # Port-level access (offset 0 = selector, 1 = data)
    def pio_read(self, offset: int, size: int) -> int:
        if offset == 1:
            value = 0
            for _ in range(size):  # wider reads stream bytes most-significant first, as QEMU
                value = (value << 8) | self.read_data()
            return value
        return 0xFFFF_FFFF >> (32 - 8 * size)

    def pio_write(self, offset: int, size: int, value: int) -> None:
        if offset == 0:
            self.select(value)
