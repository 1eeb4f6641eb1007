"""Unit checks of the pieces under the virtio devices: the split virtqueue's checks on guest
memory (virtio 1.0 §2.4), the PCI core's BARs, MSI-X and INTx (PCI 3.0 §6), the transport's
registers (virtio 1.0 §4.1), and HC_INJECT_MSI through the vLAPIC."""

from __future__ import annotations

import struct

import pytest

from acrn_sim.guests.service_vm.pci_core import (
    PCIBAR_IO,
    PCIBAR_MEM32,
    PciResources,
    PciVdev,
    PirqRouter,
)
from acrn_sim.guests.service_vm.virtio.vring import (
    VRING_DESC_F_INDIRECT,
    VRING_DESC_F_NEXT,
    VRING_DESC_F_WRITE,
    GuestMemory,
    RingError,
    VirtQueue,
    need_event,
)
from conftest import boot_user


# ------------------------------------------------------------------------------ the ring
class _Window:
    def __init__(self, buf: bytearray) -> None:
        self.buf = buf

    def view(self, off: int, n: int):
        return memoryview(self.buf)[off : off + n]


class _Port:
    def __init__(self, size: int) -> None:
        self.ram = bytearray(size)

    def map(self, gpa: int, length: int):
        return _Window(self.ram)


RAM = 1 << 20
DESC, AVAIL, USED = 0x1000, 0x2000, 0x3000


def ring(qsize: int = 8, features: int = 1 << 28):
    port = _Port(RAM)
    mem = GuestMemory(port, 0, RAM)
    vq = VirtQueue(0, qsize)
    vq.gpa_desc, vq.gpa_avail, vq.gpa_used = DESC, AVAIL, USED
    vq.enable_modern()
    vq.features = features
    return port.ram, mem, vq


def put_desc(ram, i, addr, length, flags=0, nxt=0, base=DESC):
    struct.pack_into("<QIHH", ram, base + 16 * i, addr, length, flags, nxt)


def publish(ram, vq, *heads):
    idx = struct.unpack_from("<H", ram, AVAIL + 2)[0]
    for h in heads:
        struct.pack_into("<H", ram, AVAIL + 4 + 2 * (idx % vq.qsize), h)
        idx += 1
    struct.pack_into("<H", ram, AVAIL + 2, idx)


def test_a_chain_and_an_indirect_table_unfold_into_their_buffers():
    ram, mem, vq = ring()
    put_desc(ram, 0, 0x8000, 16, VRING_DESC_F_NEXT, 3)
    put_desc(ram, 3, 0x9000, 512, VRING_DESC_F_WRITE)
    put_desc(ram, 1, 0x4000, 32, VRING_DESC_F_INDIRECT)
    put_desc(ram, 0, 0xA000, 8, VRING_DESC_F_NEXT, 1, base=0x4000)
    put_desc(ram, 1, 0xB000, 8, VRING_DESC_F_WRITE, base=0x4000)
    publish(ram, vq, 0, 1)
    a, b = vq.getchain(mem), vq.getchain(mem)
    assert a.head == 0 and a.segments == [(0x8000, 16, False), (0x9000, 512, True)]
    assert b.head == 1 and b.segments == [(0xA000, 8, False), (0xB000, 8, True)]
    assert vq.getchain(mem) is None
    vq.relchain(mem, 1, 8)
    vq.relchain(mem, 0, 512)
    assert struct.unpack_from("<HHIIII", ram, USED) == (0, 2, 1, 8, 0, 512)


@pytest.mark.parametrize(
    "build,words",
    [
        (lambda r: put_desc(r, 0, RAM - 8, 16, VRING_DESC_F_WRITE), "outside the guest's RAM"),
        (lambda r: (put_desc(r, 0, 0x8000, 8, VRING_DESC_F_NEXT, 1),
                    put_desc(r, 1, 0x8000, 8, VRING_DESC_F_NEXT, 0)), "descriptor loop"),
        (lambda r: put_desc(r, 0, 0x8000, 8, VRING_DESC_F_NEXT, 9), "out of range"),
        (lambda r: put_desc(r, 0, 0x4000, 16 * 9, VRING_DESC_F_INDIRECT), "longer than the queue"),
        (lambda r: put_desc(r, 0, 0x4000, 24, VRING_DESC_F_INDIRECT), "indirect table of 24"),
        (lambda r: (put_desc(r, 0, 0x4000, 32, VRING_DESC_F_INDIRECT),
                    put_desc(r, 0, 0x5000, 16, VRING_DESC_F_INDIRECT, base=0x4000)),
         "inside an indirect table"),
        (lambda r: put_desc(r, 0, RAM - 16, 32, VRING_DESC_F_INDIRECT), "indirect table"),
        (lambda r: (put_desc(r, 0, 0x8000, 8, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 1),
                    put_desc(r, 1, 0x9000, 8)), "device-readable buffer after"),
    ],
    ids=["addr", "loop", "next", "long", "indirect-len", "nested", "table-addr", "order"],
)  # fmt: skip
def test_broken_chains_are_ring_errors(build, words):
    ram, mem, vq = ring()
    build(ram)
    publish(ram, vq, 0)
    with pytest.raises(RingError, match=words):
        vq.getchain(mem)


def test_indirect_needs_the_feature_and_indices_are_checked():
    ram, mem, vq = ring(features=0)
    put_desc(ram, 0, 0x4000, 16, VRING_DESC_F_INDIRECT)
    publish(ram, vq, 0)
    with pytest.raises(RingError, match="without VIRTIO_RING_F_INDIRECT_DESC"):
        vq.getchain(mem)
    ram, mem, vq = ring()
    publish(ram, vq, 8)  # a head the queue does not have
    with pytest.raises(RingError, match="head descriptor 8"):
        vq.getchain(mem)
    ram, mem, vq = ring()
    struct.pack_into("<H", ram, AVAIL + 2, 9)  # 9 entries in a queue of 8
    with pytest.raises(RingError, match="more than the queue holds"):
        vq.has_descs(mem)


def test_the_driver_writing_the_used_index_is_caught():
    ram, mem, vq = ring()
    put_desc(ram, 0, 0x8000, 8, VRING_DESC_F_WRITE)
    publish(ram, vq, 0)
    vq.relchain(mem, vq.getchain(mem).head, 8)
    struct.pack_into("<H", ram, USED + 2, 0)  # back to 0
    with pytest.raises(RingError, match="the driver wrote the used ring"):
        vq.relchain(mem, 0, 8)


def test_interrupt_decisions_follow_the_flag_or_used_event():
    ram, mem, vq = ring()
    for _ in range(3):
        vq.relchain(mem, 0, 1)
    struct.pack_into("<H", ram, AVAIL, 1)  # VRING_AVAIL_F_NO_INTERRUPT
    assert not vq.endchains(mem, False)
    struct.pack_into("<H", ram, AVAIL, 0)
    vq.relchain(mem, 0, 1)
    assert vq.endchains(mem, False)
    ram, mem, vq = ring(features=1 << 29)  # EVENT_IDX
    struct.pack_into("<H", ram, AVAIL + 4 + 2 * 8, 5)  # used_event: interrupt at entry 5
    for n in range(1, 8):
        vq.relchain(mem, 0, 1)
        assert vq.endchains(mem, False) == (n == 6), n  # crossing 5 is moving to 6
    assert need_event(5, 6, 5) and not need_event(5, 5, 4) and need_event(0xFFFF, 1, 0xFFF0)


def test_notification_suppression_on_the_device_side():
    ram, mem, vq = ring()
    vq.disable_notify(mem)
    assert struct.unpack_from("<H", ram, USED)[0] == 1  # VRING_USED_F_NO_NOTIFY
    assert vq.enable_notify(mem) is False and struct.unpack_from("<H", ram, USED)[0] == 0
    ram, mem, vq = ring(features=1 << 29)
    vq.disable_notify(mem)  # with EVENT_IDX the flags stay 0: avail_event stays behind
    assert struct.unpack_from("<H", ram, USED)[0] == 0
    put_desc(ram, 0, 0x8000, 8, VRING_DESC_F_WRITE)
    publish(ram, vq, 0)
    assert vq.enable_notify(mem) is True  # something came: take it
    vq.getchain(mem)
    assert vq.enable_notify(mem) is False
    assert struct.unpack_from("<H", ram, USED + 4 + 8 * 8)[0] == 1  # avail_event = next


# ------------------------------------------------------------------------------ PCI core
class _Bus:
    def __init__(self) -> None:
        self.resources = PciResources()
        self.io, self.mem, self.posted = {}, {}, []

    def register_inout(self, name, base, size, handler):
        self.io[base] = (size, handler)

    def unregister_inout(self, base):
        self.io.pop(base)

    def register_mem(self, name, base, size, handler):
        self.mem[base] = (size, handler)

    def unregister_mem(self, base):
        self.mem.pop(base)

    def post_work(self, gen):
        self.posted.append(gen)


def test_bars_are_placed_at_creation_sized_and_moved():
    bus = _Bus()
    a, b = PciVdev(bus, "a", 3), PciVdev(bus, "b", 4)
    a.alloc_bar(0, PCIBAR_IO, 72)  # rounded up to 128
    a.alloc_bar(1, PCIBAR_MEM32, 4096 + 8)  # to 8 KiB
    b.alloc_bar(0, PCIBAR_IO, 24)
    assert a.cfg(0x10, 4, False, 0) == 0x2001 and b.cfg(0x10, 4, False, 0) == 0x2081
    assert a.cfg(0x14, 4, False, 0) == 0x8000_0000
    assert set(bus.io) == {0x2000, 0x2080} and bus.mem[0x8000_0000][0] == 0x2000
    a.cfg(0x10, 4, True, 0xFFFF_FFFF)  # sizing reads back the mask, the range stays
    assert a.cfg(0x10, 4, False, 0) == 0xFFFF_FF81 and 0x2000 in bus.io
    a.cfg(0x10, 4, True, 0xC000)  # moved
    assert 0xC000 in bus.io and 0x2000 not in bus.io
    a.cfg(0x04, 2, True, 0)  # decoding off: no range
    assert 0xC000 not in bus.io and 0x8000_0000 not in bus.mem


def test_msix_table_and_capability():
    bus = _Bus()
    dev = PciVdev(bus, "d", 3)
    dev.add_msixcap(3, 1)
    ((cap, capid),) = dev.capabilities()
    assert capid == 0x11 and dev.cfg(cap + 2, 2, False, 0) == 2  # table size 3, encoded N-1
    assert dev.cfg(cap + 8, 4, False, 0) == 0x1000 | 1  # PBA at 4 KiB in BAR1
    assert dev.msix_message(0) is None  # disabled, and every entry starts masked
    dev.cfg(cap + 2, 2, True, 0x8000)  # enable
    dev.msix_table_write(0, 4, 0xFEE0_0000)
    dev.msix_table_write(8, 4, 0x31)
    assert dev.msix_message(0) is None  # still masked
    dev.msix_table_write(12, 4, 0)
    assert dev.msix_message(0) == (0xFEE0_0000, 0x31)
    dev.cfg(cap + 2, 2, True, 0xC000)  # function mask
    assert dev.msix_message(0) is None
    assert dev.msix_table_read(0x1000, 8) == 0  # the PBA


def test_intx_routing_assert_and_interrupt_disable():
    bus, router = _Bus(), PirqRouter(reserved=(4,))
    devs = [PciVdev(bus, f"d{i}", 3 + i) for i in range(3)]
    for d in devs:
        d.lintr_request()
        d.lintr_route(router)
    assert [d.cfg(0x3C, 1, False, 0) for d in devs] == [3, 5, 6]  # least used, 4 reserved
    d = devs[0]
    d.lintr_assert()
    assert d.irq_work[-1][:3] == ("line", 3, 1) and d.cfg(0x06, 2, False, 0) & 0x8
    d.cfg(0x04, 2, True, 0x0407)  # Interrupt Disable: the line drops, the assertion waits
    assert d.irq_work[-1][:3] == ("line", 3, 0) and d.lintr_state == "PENDING"
    d.cfg(0x04, 2, True, 0x0007)
    assert d.irq_work[-1][:3] == ("line", 3, 1) and d.lintr_state == "ASSERTED"


# --------------------------------------------------------------------------- HC_INJECT_MSI
def test_inject_msi_goes_to_the_destination_vlapic():
    run = boot_user("hello.elf")
    vm = run.vm
    v = vm.vcpus[0]
    v.vlapic.irr = 0
    vm.inject_msi(0xFEE0_0000 | v.vlapic.apic_id << 12, 0x41)  # fixed, edge
    assert v.vlapic.irr >> 0x41 & 1 and not v.vlapic.tmr >> 0x41 & 1
    vm.inject_msi(0xFEE0_0000 | (v.vlapic.apic_id + 1) << 12, 0x42)  # nobody there
    vm.inject_msi(0xFED0_0000, 0x43)  # not an interrupt message
    assert not v.vlapic.irr >> 0x42 & 1 and not v.vlapic.irr >> 0x43 & 1
    vm.inject_msi(0xFEE0_0000 | v.vlapic.apic_id << 12, 0x400)  # delivery mode NMI
    assert v.pending_nmi
