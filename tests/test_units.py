"""Unit tests of the hardware models and helpers."""

import struct

import pytest

from acrn_sim.hv.guest.ept import EPT_RD, EPT_RWX, EPT_WB, EPT_WR, Ept
from acrn_sim.sim import ConfigError, events, paging
from acrn_sim.sim.devices.fw_cfg import FwCfg
from acrn_sim.sim.devices.uart16550 import Uart16550
from acrn_sim.sim.hostmem import HostMemory
from acrn_sim.sim.selftest import check_unicorn
from acrn_sim.sim.stats import percentile, summarize
from acrn_sim.sim.units import parse_simtime, parse_size


def make_ept(size=16 << 20):
    mem = HostMemory(size)
    nxt = [size - (1 << 20)]

    def alloc():
        nxt[0] += 0x1000
        mem.fill(nxt[0] - 0x1000, 0x1000)
        return nxt[0] - 0x1000

    return mem, Ept(mem, alloc)


def test_ept_real_tables_in_host_memory():
    mem, ept = make_ept()
    ept.add_mr(0, 0x200000, 0x400000, EPT_RWX | EPT_WB << 3)
    assert ept.walk(0x1234) == (0x201234, EPT_RWX | EPT_WB << 3 | 0x80)  # 2 MiB leaf (PS)
    # The root entry is a real EPT entry in host memory pointing at the PDPT.
    root_entry = mem.read_u64(ept.root)
    assert root_entry & 7 == 7 and ept.eptp == ept.root | (3 << 3) | 6
    assert ept.regions() == [(0, 0x200000, 0x400000, EPT_RWX)]


def test_ept_delete_splits_large_pages():
    _, ept = make_ept()
    ept.add_mr(0, 0, 0x400000, EPT_RWX | EPT_WB << 3)
    ept.del_mr(0x201000, 0x1000)
    assert ept.walk(0x201000) is None
    assert ept.walk(0x202000)[0] == 0x202000
    assert ept.regions() == [(0, 0, 0x201000, EPT_RWX), (0x202000, 0x202000, 0x1FE000, EPT_RWX)]


def test_ept_permissions_split_runs():
    _, ept = make_ept()
    ept.add_mr(0, 0, 0x2000, EPT_RD | EPT_WR)
    ept.add_mr(0x2000, 0x2000, 0x1000, EPT_RWX)
    assert ept.regions() == [(0, 0, 0x2000, EPT_RD | EPT_WR), (0x2000, 0x2000, 0x1000, EPT_RWX)]


def test_uart_polling_and_interrupt_driven():
    out, irq = [], []
    u = Uart16550(out.append, irq.append)
    u.write(3, 0x80)  # DLAB
    u.write(0, 1)
    u.write(1, 0)
    assert (u.read(0), u.read(1)) == (1, 0)
    u.write(3, 0x03)
    assert u.read(5) & 0x60 == 0x60  # THRE | TEMT
    u.write(0, ord("A"))
    assert out == [ord("A")]
    u.write(4, 0x08)  # OUT2: the IRQ reaches the PIC
    u.write(1, 0x02)  # enable THR-empty interrupt
    assert irq == [True] and u.read(2) & 0x0F == 0x02
    assert irq == [True, False] and u.read(2) & 0x01  # reading IIR cleared it
    u.write(1, 0x01)  # receive-data interrupt
    u.feed(b"xy")
    assert u.read(2) & 0x0F == 0x04 and u.read(5) & 1
    assert (u.read(0), u.read(0)) == (ord("x"), ord("y"))
    assert not u.read(5) & 1 and irq[-1] is False
    u.write(4, 0x18)  # loopback
    u.write(0, ord("z"))
    assert u.read(0) == ord("z") and out == [ord("A")]
    u.write(7, 0x5A)
    assert u.read(7) == 0x5A


def test_fw_cfg():
    fw = FwCfg(64 << 20, 2)
    fw.pio_write(0, 2, 0x0000)
    assert bytes(fw.pio_read(1, 1) for _ in range(4)) == b"QEMU"
    fw.pio_write(0, 2, 0x0003)
    assert struct.unpack("<Q", bytes(fw.pio_read(1, 1) for _ in range(8)))[0] == 64 << 20
    fw.pio_write(0, 2, 0x0005)
    assert fw.pio_read(1, 1) == 2


def test_paging_walks():
    mem = bytearray(0x10000)

    def rd(a, n):
        return bytes(mem[a : a + n])

    # 32-bit paging, one 4 KiB page 0x400000 -> 0x3000 via PT at 0x2000
    struct.pack_into("<I", mem, 0x1000 + 1 * 4, 0x2003)
    struct.pack_into("<I", mem, 0x2000, 0x3001)  # present, read-only
    st = paging.PagingState(0x80010011, 0x1000, 0, 0)
    assert paging.translate(0x400123, st, rd) == 0x3123
    with pytest.raises(paging.PageFault) as e:
        paging.translate(0x400123, st, rd, write=True)
    assert e.value.error_code == paging.PF_P | paging.PF_W
    with pytest.raises(paging.PageFault) as e:
        paging.translate(0x800000, st, rd)
    assert e.value.error_code == 0
    assert paging.translate(0x1234, paging.PagingState(0x11, 0, 0, 0), rd) == 0x1234


def test_double_fault_table():
    assert events._is_double_fault(0, 13) and events._is_double_fault(14, 14)
    assert events._is_double_fault(14, 13) and not events._is_double_fault(13, 14)
    assert not events._is_double_fault(6, 13) and not events._is_double_fault(3, 14)


def test_percentiles_are_nearest_rank():
    vals = list(range(1, 101))
    assert percentile(vals, 50) == 50 and percentile(vals, 99) == 99 and percentile(vals, 90) == 90
    s = summarize([5, 1, 3])
    assert (s["count"], s["total_cycles"], s["min"], s["max"], s["p50"]) == (3, 9, 1, 5, 3)


def test_units():
    assert parse_size("64M") == 64 << 20 and parse_size("4096") == 4096
    assert parse_simtime("1ms", 2_400_000_000) == 2_400_000
    assert parse_simtime("10cycles", 1) == 10
    with pytest.raises(ConfigError):
        parse_size("big")


def test_unicorn_selftest_passes():
    check_unicorn()
