"""Host physical memory: one anonymous mapping; an HPA is an offset into it."""

from __future__ import annotations

import ctypes
import mmap
import struct

from acrn_sim.sim import ConfigError
from acrn_sim.sim.limits import fmt_size


def host_ram() -> int | None:
    """The host's physical memory in bytes (MemTotal), or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


class HostMemory:
    """The machine's DRAM. Unicorn engines map *views* of it (mem_map_ptr), never copies."""

    def __init__(self, size: int) -> None:
        if size <= 0 or size % 4096:
            raise ValueError("host memory size must be a positive multiple of 4 KiB")
        # Checked before any work starts: a guest's RAM is touched lazily, so a mapping larger
        # than the host could still succeed and fail much later, when the guest writes it.
        ram = host_ram()
        if ram is not None and size > ram:
            raise ConfigError(
                f"the VMs need {fmt_size(size)} of host memory in all, more than this host's "
                f"{fmt_size(ram)} (use a smaller --mem)"
            )
        self.size = size
        try:
            self._map = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        except (OSError, OverflowError, MemoryError) as e:
            raise ConfigError(
                f"cannot allocate {fmt_size(size)} of host memory for the VMs: "
                f"{getattr(e, 'strerror', None) or e} (use a smaller --mem)"
            ) from None
        self._buf = (ctypes.c_char * size).from_buffer(self._map)
        self.base = ctypes.addressof(self._buf)
        # The bytes, indexable by HPA (bounds-checked), for a hot reader of single bytes
        # (the I/O bitmap at each port access)
        self.bytes = memoryview(self._map)
        # Write watchpoints, for a waiter that spins on a memory location (see
        # hv Vcpu.spin_until_complete): called after a Python-side write covering the address.
        # A hot writer may test `watches` itself and skip the call to `wrote` when empty.
        self.watches: dict[int, object] = {}

    def host_ptr(self, hpa: int) -> int:
        """Host virtual address of an HPA, for Unicorn's mem_map_ptr."""
        return self.base + hpa

    def _check(self, hpa: int, length: int) -> None:
        if hpa < 0 or hpa + length > self.size:
            raise IndexError(f"HPA range {hpa:#x}+{length:#x} outside host memory")

    def read(self, hpa: int, length: int) -> bytes:
        self._check(hpa, length)
        return self._map[hpa : hpa + length]

    def write(self, hpa: int, data: bytes) -> None:
        self._check(hpa, len(data))
        self._map[hpa : hpa + len(data)] = data
        self.wrote(hpa, len(data))

    def view(self, hpa: int, length: int) -> memoryview:
        """A writable view of [hpa, hpa+length), for a structure read and written often (an
        IOREQ slot). Whoever writes through it calls `wrote` so that watchers see it."""
        self._check(hpa, length)
        return memoryview(self._map)[hpa : hpa + length]

    def wrote(self, hpa: int, length: int) -> None:
        """Python-side bytes at [hpa, hpa+length) changed: call the watchers of that range."""
        if self.watches:
            for addr, fn in list(self.watches.items()):
                if hpa <= addr < hpa + length:
                    fn()

    def watch(self, hpa: int, fn) -> None:
        self.watches[hpa] = fn

    def unwatch(self, hpa: int) -> None:
        self.watches.pop(hpa, None)

    def read_u64(self, hpa: int) -> int:
        self._check(hpa, 8)
        return struct.unpack_from("<Q", self._map, hpa)[0]

    def write_u64(self, hpa: int, value: int) -> None:
        self._check(hpa, 8)
        struct.pack_into("<Q", self._map, hpa, value)

    def read_u32(self, hpa: int) -> int:
        self._check(hpa, 4)
        return struct.unpack_from("<I", self._map, hpa)[0]

    def write_u32(self, hpa: int, value: int) -> None:
        self._check(hpa, 4)
        struct.pack_into("<I", self._map, hpa, value)

    def fill(self, hpa: int, length: int, byte: int = 0) -> None:
        self._check(hpa, length)
        ctypes.memset(self.base + hpa, byte, length)


class MemWindow:
    """A fixed range of host memory seen from one side, addressed from its start: what a
    kernel mapping of a pinned buffer is (the IOREQ page as HSM maps it, as the hypervisor
    keeps it). Reads and writes go to the same bytes as every other view of them."""

    def __init__(self, mem: HostMemory, hpa: int, length: int) -> None:
        mem._check(hpa, length)
        self.mem = mem
        self.hpa = hpa
        self.length = length
        # The memory's watch table itself (never replaced): a hot writer tests it as it is
        self.watches = mem.watches

    def view(self, offset: int, length: int) -> memoryview:
        return self.mem.view(self.hpa + offset, length)

    def wrote(self, offset: int, length: int) -> None:
        self.mem.wrote(self.hpa + offset, length)

    def address(self, offset: int) -> int:
        """The host address of an offset, for a watch on it (the hypervisor's side only)."""
        return self.hpa + offset
