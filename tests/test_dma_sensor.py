"""The DMA sensor on a bare board (sim/): its configuration space, its registers, its DMA and
MSI writes through the platform, on its own timeline. No hypervisor: the platform's DMA is
untranslated and a stub stands for the remapping hardware's interrupt side."""

import struct

import pytest

from acrn_sim.sim import ConfigError
from acrn_sim.sim.devices import dma_sensor as S
from acrn_sim.sim.hostmem import HostMemory
from acrn_sim.sim.pci import PCIR_BAR0, PCIR_COMMAND
from acrn_sim.sim.platform import Platform, PlatformConfig, parse_device
from acrn_sim.sim.timeline import Timeline

HZ = 2_400_000_000
SID = 0x00F8


class Msis:
    """The interrupt side: every message, with its cycle."""

    def __init__(self, env):
        self.env, self.got = env, []

    def translate(self, sid, addr, length, write):
        return [(addr, length)], 0

    def interrupt(self, sid, addr, data):
        self.got.append((self.env.now, sid, addr, data))
        return 0


def board(spec="00:1f.0,sensor,latency_us=10"):
    env = Timeline()
    p = Platform(HostMemory(16 << 20), env, HZ, PlatformConfig([spec]))
    p.iommu = Msis(env)
    return env, p, p.devices[SID]


def enable(p, dev, msi=True):
    cfg = dev.config
    p.cfg_write(SID, PCIR_COMMAND, 2, 0x6)  # memory space, bus master
    if msi:
        c = cfg.msi_cap
        p.cfg_write(SID, c + 4, 4, 0xFEE00000)
        p.cfg_write(SID, c + 12, 2, 0x45)
        p.cfg_write(SID, c + 2, 2, 1)
    return cfg.bar_address(0)


def test_configuration_space_identity_bar_sizing_and_msi_capability():
    env, p, dev = board()
    assert p.cfg_read(SID, 0, 4) == S.DEVICE << 16 | S.VENDOR
    assert p.cfg_read(SID, 0x08, 4) >> 8 == S.CLASS
    bar = p.cfg_read(SID, PCIR_BAR0, 4)
    assert bar and bar >= 0xC0000000  # placed in the PCI MMIO window above RAM
    p.cfg_write(SID, PCIR_BAR0, 4, 0xFFFFFFFF)
    assert p.cfg_read(SID, PCIR_BAR0, 4) == 0xFFFFF000  # 4 KiB, 32-bit memory
    p.cfg_write(SID, PCIR_BAR0, 4, bar)
    cap = p.cfg_read(SID, 0x34, 1)
    assert p.cfg_read(SID, cap, 1) == 0x05 and p.cfg_read(SID, cap + 2, 2) & 0x80  # MSI, 64-bit
    assert p.cfg_read(SID, 0x3D, 1) == 0  # no INTx pin
    assert p.cfg_read(0x0008, 0, 4) == 0xFFFFFFFF  # nothing at 00:01.0


def test_registers_need_memory_decoding():
    env, p, dev = board()
    base = dev.config.bar_address(0)
    assert p.mmio_read(base, 4, 0) == 0xFFFFFFFF
    enable(p, dev, msi=False)
    assert p.mmio_read(base + S.REG_ID, 4, 0) == S.ID_VALUE


def test_a_request_is_acquired_written_by_dma_and_interrupted_on_the_device_timeline():
    env, p, dev = board()
    base = enable(p, dev)
    ring, buf = 0x10000, 0x20000
    p.mem.write(ring, struct.pack("<QI", buf, 64))
    for reg, v in ((S.REG_RING_LO, ring), (S.REG_RING_SIZE, 4),
                   (S.REG_CTRL, S.CTRL_EN | S.CTRL_IRQ_EN)):  # fmt: skip
        p.mmio_write(base + reg, 4, v, 0)
    p.mmio_write(base + S.REG_TAIL, 4, 1, 1000)  # the doorbell, at cycle 1000
    env.run()
    assert p.mem.read(buf, 64) == S.sample_bytes(0, 64)
    flags, ts, seq, n = struct.unpack("<IQII", p.mem.read(ring + 12, 20))
    assert flags == S.DESC_DONE and seq == 0 and n == 64
    ((when, sid, addr, data),) = p.iommu.got
    assert (sid, addr, data) == (SID, 0xFEE00000, 0x45)
    # not before the acquisition (10 us) after the doorbell; the sample's time is in between
    assert 1000 + 10 * HZ // 1_000_000 <= ts <= when
    assert p.mmio_read(base + S.REG_HEAD, 4, 0) == 1
    assert p.mmio_read(base + S.REG_INTR, 4, 0) & S.INTR_DONE


def test_no_bus_mastering_no_dma_and_a_dma_error():
    env, p, dev = board()
    base = enable(p, dev)
    p.cfg_write(SID, PCIR_COMMAND, 2, 0x2)  # memory space only
    p.mmio_write(base + S.REG_RING_SIZE, 4, 2, 0)
    p.mmio_write(base + S.REG_CTRL, 4, S.CTRL_EN | S.CTRL_IRQ_EN, 0)
    p.mmio_write(base + S.REG_TAIL, 4, 1, 0)
    env.run()
    assert p.mmio_read(base + S.REG_STATUS, 4, 0) & S.STATUS_DMA_ERR
    assert not p.iommu.got  # no bus mastering: no MSI either


def test_stream_mode_samples_at_its_period_and_drops_without_descriptors():
    env, p, dev = board("00:1f.0,sensor,period_us=10")
    base = enable(p, dev)
    ring = 0x10000
    for i in range(2):
        p.mem.write(ring + 32 * i, struct.pack("<QI", 0x20000 + 0x100 * i, 64))
    p.mmio_write(base + S.REG_RING_LO, 4, ring, 0)
    p.mmio_write(base + S.REG_RING_SIZE, 4, 2, 0)
    p.mmio_write(base + S.REG_TAIL, 4, 2, 0)
    p.mmio_write(base + S.REG_CTRL, 4, S.CTRL_EN | S.CTRL_STREAM | S.CTRL_IRQ_EN, 0)
    env.run(until=55 * HZ // 1_000_000)
    assert p.mmio_read(base + S.REG_SEQ, 4, 0) == 5  # a sample every 10 us
    assert p.mmio_read(base + S.REG_DROPS, 4, 0) == 3  # two descriptors, five samples
    assert len(p.iommu.got) == 2
    p.mmio_write(base + S.REG_CTRL, 4, S.CTRL_RESET, env.now)
    assert p.mmio_read(base + S.REG_SEQ, 4, 0) == 0


def test_jitter_draws_the_same_sequence_for_the_same_seed():
    a = S.Acquisition(1000, 500, seed=3)
    b = S.Acquisition(1000, 500, seed=3)
    seq = [a.next_ns() for _ in range(20)]
    assert seq == [b.next_ns() for _ in range(20)]
    assert all(1000 <= t <= 1500 for t in seq) and len(set(seq)) > 1


@pytest.mark.parametrize(
    "spec, message",
    [
        ("00:1f.0", "expected BB:DD.F,KIND"),
        ("00:20.0,sensor", "out of range"),
        ("00:1f.0,nic", "unknown kind 'nic'"),
        ("00:1f.0,sensor,latency_us=x", "expected a number"),
        ("00:1f.0,sensor,colour=red", "unknown option 'colour'"),
    ],
)
def test_bad_device_specs_are_one_line_errors(spec, message):
    with pytest.raises(ConfigError, match=message):
        sid, kind, opts = parse_device(spec)
        from acrn_sim.sim.platform import device_kinds

        device_kinds()[kind]("x", opts)
