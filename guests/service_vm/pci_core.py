"""acrn-dm's PCI emulation core for the devices it creates from `-s` options (ACRN
devicemodel/hw/pci/core.c and irq.c; PCI Local Bus Specification 3.0 §6, MSI-X §6.8.2).

What a guest sees:
- a type-0 configuration space: identity, command (I/O, memory and bus-master decoding set
  at creation, as pci_emul_init does), status with the capability list, BARs, interrupt pin
  and line;
- BARs that the device model places itself when it creates the device (pci_emul_alloc_bar),
  in slot order: I/O from 0x2000, 32-bit memory from the low-memory limit (2 GiB) up to the
  ECAM at 0xE0000000; a 64-bit BAR of at most 32 MiB is placed below 4 GiB too (ACRN's
  workaround for drivers that cannot reach higher). Sizes are rounded up to powers of two,
  at least 4 bytes for I/O and 16 for memory;
- a BAR is decoded (its range registered with the device model's inout or memory table,
  modify_bar_registration) while the command register enables its space; writing all ones
  reads back the size mask; moving it re-registers it;
- capabilities from 0x40, dword aligned (pci_emul_add_capability): MSI with one message and
  MSI-X with its table at offset 0 of a memory BAR and the PBA at the next 4 KiB
  (pci_emul_add_msixcap); entries start masked;
- INTx: the least-used pin of the slot (pci_lintr_request), routed to one of 8 PIRQ pins, each
  bound to an IRQ from 3-7, 9-12, 14-15 that nothing reserved (pirq_alloc_pin); the
  interrupt-line register holds that IRQ. An asserted line waits (PENDING) while MSI or MSI-X
  is enabled or the command register's Interrupt Disable is set (pci_lintr_update).

Simplification: ACRN raises INTx on the IOAPIC pin it allocated for the slot (16 and up,
pci_irq_assert); the model raises the PIRQ's IRQ (below 16), which HC_SET_IRQLINE routes to
both the vPIC and the vIOAPIC, so a guest that programs the 8259 with the interrupt-line
register (what a firmware-less guest does, as bhyve's pci_irq_assert also serves) gets it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# configuration space registers (PCI 3.0 §6.1)
PCIR_VENDOR, PCIR_DEVICE, PCIR_COMMAND, PCIR_STATUS = 0x00, 0x02, 0x04, 0x06
PCIR_REVID, PCIR_PROGIF, PCIR_SUBCLASS, PCIR_CLASS = 0x08, 0x09, 0x0A, 0x0B
PCIR_HDRTYPE, PCIR_BAR0, PCIR_SUBVEND_0, PCIR_SUBDEV_0 = 0x0E, 0x10, 0x2C, 0x2E
PCIR_CAP_PTR, PCIR_INTLINE, PCIR_INTPIN = 0x34, 0x3C, 0x3D
PCIM_CMD_PORTEN, PCIM_CMD_MEMEN, PCIM_CMD_BUSMASTEREN = 0x1, 0x2, 0x4
PCIM_CMD_INTXDIS = 0x400
PCIM_STATUS_INTXSTATE, PCIM_STATUS_CAPPRESENT = 0x08, 0x10
PCIY_MSI, PCIY_VENDOR, PCIY_MSIX = 0x05, 0x09, 0x11
PCIM_MSICTRL_64BIT, PCIM_MSICTRL_MSI_ENABLE, PCIM_MSICTRL_MME_MASK = 0x80, 0x01, 0x70
PCIM_MSIXCTRL_MSIX_ENABLE, PCIM_MSIXCTRL_FUNCTION_MASK = 0x8000, 0x4000
PCIM_MSIX_VCTRL_MASK = 0x1
MSIX_TABLE_ENTRY_SIZE = 16
CAP_START_OFFSET = 0x40

PCIBAR_NONE, PCIBAR_IO, PCIBAR_MEM32, PCIBAR_MEM64, PCIBAR_MEMHI64 = range(5)
PCIM_BAR_IO_SPACE, PCIM_BAR_MEM_64, PCIM_BAR_MEM_PREFETCH = 0x1, 0x4, 0x8

# the VM's PCI windows (core.c: PCI_EMUL_IOBASE, PCI_EMUL_IOLIMIT, lowmem limit, ECAM base)
PCI_EMUL_IOBASE, PCI_EMUL_IOLIMIT = 0x2000, 0x1_0000
PCI_EMUL_MEMBASE32, PCI_EMUL_MEMLIMIT32 = 0x8000_0000, 0xE000_0000
MEM64_BELOW_4G_MAX = 32 << 20  # pci_emul_alloc_pbar: 64-bit BARs this small stay below 4 GiB

# irq.c: 8 PIRQ pins; IRQs 3-7, 9-12 and 14-15 may be routed to them
PERMITTED_IRQS = 0xDEF8
PIRQ_PINS = 8


def _pow2_at_least(size: int, minimum: int) -> int:
    size = max(size, minimum)
    return 1 << (size - 1).bit_length()


@dataclass
class PciBar:
    type: int = PCIBAR_NONE
    addr: int = 0
    size: int = 0


class PciResources:
    """One VM's BAR allocators (pci_emul_iobase, pci_emul_membase32: init_pci), used in slot
    order at device creation."""

    def __init__(self) -> None:
        self.iobase = PCI_EMUL_IOBASE
        self.membase32 = PCI_EMUL_MEMBASE32

    def alloc(self, bar_type: int, size: int) -> int | None:
        """pci_emul_alloc_resource: the next naturally aligned block, or None if full."""
        if bar_type == PCIBAR_IO:
            base, limit = self.iobase, PCI_EMUL_IOLIMIT
        else:
            base, limit = self.membase32, PCI_EMUL_MEMLIMIT32
        addr = (base + size - 1) & ~(size - 1)
        if addr + size > limit:
            return None
        if bar_type == PCIBAR_IO:
            self.iobase = addr + size
        else:
            self.membase32 = addr + size
        return addr


class PirqRouter:
    """The 8-pin PCI interrupt router (irq.c, after Intel's ICH10): each device's INTx pin gets
    the least-used PIRQ pin, which gets the least-used permitted IRQ nothing reserved."""

    def __init__(self, reserved: tuple[int, ...] = ()) -> None:
        self.use_count = [0] * PIRQ_PINS
        self.pin_irq: list[int | None] = [None] * PIRQ_PINS
        self.irq_counts: dict[int, int] = {
            irq: 0 for irq in range(16) if PERMITTED_IRQS >> irq & 1 and irq not in reserved
        }

    def alloc_pin(self) -> int:
        """pirq_alloc_pin: a PIRQ pin, 1..8."""
        best = min(range(PIRQ_PINS), key=lambda p: (self.use_count[p], p))
        self.use_count[best] += 1
        if self.pin_irq[best] is None and self.irq_counts:
            irq = min(self.irq_counts, key=lambda i: (self.irq_counts[i], i))
            self.irq_counts[irq] += 1
            self.pin_irq[best] = irq
        return best + 1

    def irq(self, pin: int) -> int:
        """pirq_irq: the IRQ of a PIRQ pin (0xFF if none)."""
        irq = self.pin_irq[pin - 1] if 1 <= pin <= PIRQ_PINS else None
        return 0xFF if irq is None else irq


class _IoBar:
    """A device's I/O BAR in the device model's inout table (pci_emul_io_handler)."""

    cost = "dm_emulate_pio"

    def __init__(self, dev: PciVdev, idx: int) -> None:
        self.dev, self.idx = dev, idx

    def pio(self, port: int, size: int, is_write: bool, value: int) -> int:
        dev = self.dev
        off = port - dev.bars[self.idx].addr
        if is_write:
            dev.bar_write(self.idx, off, size, value)
            value = 0
        else:
            value = dev.bar_read(self.idx, off, size) & ((1 << (8 * size)) - 1)
        dev.after_access()
        return value


class _MemBar:
    """A device's memory BAR in the device model's memory table (pci_emul_mem_handler): an
    8-byte access is two 4-byte ones."""

    def __init__(self, dev: PciVdev, idx: int) -> None:
        self.dev, self.idx = dev, idx

    def mmio(self, offset: int, size: int, is_write: bool, value: int) -> int:
        dev, idx = self.dev, self.idx
        if size == 8:
            if is_write:
                dev.bar_write(idx, offset, 4, value & 0xFFFF_FFFF)
                dev.bar_write(idx, offset + 4, 4, value >> 32)
                value = 0
            else:
                lo = dev.bar_read(idx, offset, 4) & 0xFFFF_FFFF
                value = lo | (dev.bar_read(idx, offset + 4, 4) & 0xFFFF_FFFF) << 32
        elif is_write:
            dev.bar_write(idx, offset, size, value)
            value = 0
        else:
            value = dev.bar_read(idx, offset, size) & ((1 << (8 * size)) - 1)
        dev.after_access()
        return value


class PciVdev:
    """An emulated PCI function (struct pci_vdev). Subclasses implement bar_read/bar_write.
    `bus` is the VM's PCI emulation in the device model (guests/service_vm/pci_emul.py): it
    places and registers BARs and makes the interrupt ioctls.

    Interrupt changes (an INTx level, an MSI-X message) are queued in `irq_work` and sent by
    `flush_interrupts`, a generator that runs in a device-model thread: the worker that
    raised them, or, for a change made by a register access, the I/O thread right after the
    emulation (the device model's post-emulation work), before the request completes."""

    def __init__(self, bus, name: str, slot: int, func: int = 0) -> None:
        self.bus = bus
        self.name = name
        self.slot, self.func = slot, func
        self.config = bytearray(256)
        self.bars = [PciBar() for _ in range(6)]
        self.capend = 0
        self.prevcap = 0
        self.msi_enabled = False
        self.msi_addr = self.msi_data = 0
        self.msix_table: list[list[int]] = []  # per entry [addr, data, vector_control]
        self.msix_bar = -1
        self.msix_pba_offset = 0
        self.msix_cap = 0
        self.msix_enabled = False
        self.msix_function_mask = False
        self.lintr_pin = 0
        self.lintr_irq = 0xFF
        self.lintr_state = "IDLE"  # IDLE, ASSERTED or PENDING (core.c)
        # ("line", irq, level, done) / ("msi", address, data, done); done() runs once sent
        self.irq_work: list[tuple] = []
        self.set_cfgdata8(PCIR_INTLINE, 0xFF)  # legacy interrupts off until requested
        self.set_cfgdata16(PCIR_COMMAND, PCIM_CMD_PORTEN | PCIM_CMD_MEMEN | PCIM_CMD_BUSMASTEREN)

    # ------------------------------------------------------------ raw config space
    def get_cfgdata(self, off: int, size: int) -> int:
        return int.from_bytes(self.config[off : off + size], "little")

    def set_cfgdata(self, off: int, size: int, value: int) -> None:
        self.config[off : off + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")

    def get_cfgdata16(self, off: int) -> int:
        return self.get_cfgdata(off, 2)

    def set_cfgdata8(self, off: int, v: int) -> None:
        self.set_cfgdata(off, 1, v)

    def set_cfgdata16(self, off: int, v: int) -> None:
        self.set_cfgdata(off, 2, v)

    def set_cfgdata32(self, off: int, v: int) -> None:
        self.set_cfgdata(off, 4, v)

    def set_ids(self, vendor: int, device: int, class_code: int, subvendor: int, subdev: int,
                revision: int = 0) -> None:  # fmt: skip
        self.set_cfgdata16(PCIR_VENDOR, vendor)
        self.set_cfgdata16(PCIR_DEVICE, device)
        self.config[PCIR_PROGIF : PCIR_CLASS + 1] = class_code.to_bytes(3, "little")
        self.set_cfgdata8(PCIR_REVID, revision)
        self.set_cfgdata16(PCIR_SUBVEND_0, subvendor)
        self.set_cfgdata16(PCIR_SUBDEV_0, subdev)

    # ------------------------------------------------------------------- BARs
    def alloc_bar(self, idx: int, bar_type: int, size: int) -> None:
        """pci_emul_alloc_bar: place the BAR now, write it into configuration space, decode it."""
        size = _pow2_at_least(size, 4 if bar_type == PCIBAR_IO else 16)
        addr = self.bus.resources.alloc(bar_type, size)
        if addr is None:
            raise ValueError(f"{self.name}: no room for a {size:#x}-byte BAR{idx}")
        self.bars[idx] = PciBar(bar_type, addr, size)
        if bar_type == PCIBAR_IO:
            self.set_cfgdata32(PCIR_BAR0 + 4 * idx, addr | PCIM_BAR_IO_SPACE)
        elif bar_type == PCIBAR_MEM32:
            self.set_cfgdata32(PCIR_BAR0 + 4 * idx, addr)
        else:  # 64-bit, below 4 GiB: the high half is 0
            self.set_cfgdata32(PCIR_BAR0 + 4 * idx, addr | PCIM_BAR_MEM_64)
            self.bars[idx + 1] = PciBar(PCIBAR_MEMHI64)
            self.set_cfgdata32(PCIR_BAR0 + 4 * idx + 4, 0)
        if self._decodes(idx):
            self._register_bar(idx)

    def _decodes(self, idx: int) -> bool:
        t = self.bars[idx].type
        cmd = self.get_cfgdata16(PCIR_COMMAND)
        if t == PCIBAR_IO:
            return bool(cmd & PCIM_CMD_PORTEN)
        return t in (PCIBAR_MEM32, PCIBAR_MEM64) and bool(cmd & PCIM_CMD_MEMEN)

    def _register_bar(self, idx: int) -> None:
        bar = self.bars[idx]
        if bar.addr == 0:
            return  # an unassigned BAR decodes nothing
        label = f"{self.name} BAR{idx}"
        if bar.type == PCIBAR_IO:
            self.bus.register_inout(label, bar.addr, bar.size, _IoBar(self, idx))
        else:
            self.bus.register_mem(label, bar.addr, bar.size, _MemBar(self, idx))

    def _unregister_bar(self, idx: int) -> None:
        bar = self.bars[idx]
        if bar.addr == 0:
            return
        if bar.type == PCIBAR_IO:
            self.bus.unregister_inout(bar.addr)
        else:
            self.bus.unregister_mem(bar.addr)

    def unregister_bars(self) -> None:
        for i, bar in enumerate(self.bars):
            if bar.type not in (PCIBAR_NONE, PCIBAR_MEMHI64) and self._decodes(i):
                self._unregister_bar(i)

    def bar_read(self, idx: int, offset: int, size: int) -> int:
        if idx == self.msix_bar:
            return self.msix_table_read(offset, size)
        return 0xFFFF_FFFF_FFFF_FFFF

    def bar_write(self, idx: int, offset: int, size: int, value: int) -> None:
        if idx == self.msix_bar:
            self.msix_table_write(offset, size, value)

    # ----------------------------------------------------------- capabilities
    def add_capability(self, capdata: bytes) -> int:
        """pci_emul_add_capability: append to the list (dword aligned); its offset."""
        reallen = (len(capdata) + 3) & ~3
        sts = self.get_cfgdata16(PCIR_STATUS)
        capoff = CAP_START_OFFSET if not sts & PCIM_STATUS_CAPPRESENT else self.capend + 1
        if capoff + reallen > 256:
            raise ValueError(f"{self.name}: configuration space full")
        if not sts & PCIM_STATUS_CAPPRESENT:
            self.set_cfgdata8(PCIR_CAP_PTR, capoff)
            self.set_cfgdata16(PCIR_STATUS, sts | PCIM_STATUS_CAPPRESENT)
        else:
            self.set_cfgdata8(self.prevcap + 1, capoff)
        self.config[capoff : capoff + len(capdata)] = capdata
        self.set_cfgdata8(capoff + 1, 0)
        self.prevcap = capoff
        self.capend = capoff + reallen - 1
        return capoff

    def capabilities(self) -> list[tuple[int, int]]:
        """(offset, id) of every capability, in list order."""
        out, off, seen = [], self.config[PCIR_CAP_PTR], set()
        while off >= CAP_START_OFFSET and off not in seen:
            seen.add(off)
            out.append((off, self.config[off]))
            off = self.config[off + 1]
        return out

    def add_msicap(self) -> None:
        """pci_emul_add_msicap(dev, 1): one message, 64-bit address."""
        self.add_capability(struct.pack("<BBHIIH", PCIY_MSI, 0, PCIM_MSICTRL_64BIT, 0, 0, 0))

    def add_msixcap(self, nvec: int, barnum: int) -> None:
        """pci_emul_add_msixcap: nvec entries, masked; table at 0 of BAR barnum, the PBA at
        the next 4 KiB; the BAR holds both."""
        tab_size = (nvec * MSIX_TABLE_ENTRY_SIZE + 4095) & ~4095
        pba_size = (nvec + 63) // 64 * 8
        self.msix_table = [[0, 0, PCIM_MSIX_VCTRL_MASK] for _ in range(nvec)]
        self.msix_bar = barnum
        self.msix_pba_offset = tab_size
        self.alloc_bar(barnum, PCIBAR_MEM32, tab_size + pba_size)
        self.msix_cap = self.add_capability(
            struct.pack("<BBHII", PCIY_MSIX, 0, nvec - 1, barnum, tab_size | barnum)
        )

    def msix_table_read(self, offset: int, size: int) -> int:
        """pci_emul_msix_tread: 1, 4 or 8-byte aligned reads of the table; the PBA reads 0."""
        if size not in (1, 4, 8) or (offset % MSIX_TABLE_ENTRY_SIZE) % size:
            return 0xFFFF_FFFF_FFFF_FFFF
        index, off = divmod(offset, MSIX_TABLE_ENTRY_SIZE)
        if index < len(self.msix_table):
            e = self.msix_table[index]
            raw = struct.pack("<QII", e[0], e[1], e[2])
            return int.from_bytes(raw[off : off + size], "little")
        pba_end = self.msix_pba_offset + (len(self.msix_table) + 63) // 64 * 8
        return 0 if self.msix_pba_offset <= offset < pba_end else 0xFFFF_FFFF_FFFF_FFFF

    def msix_table_write(self, offset: int, size: int, value: int) -> None:
        """pci_emul_msix_twrite: aligned 4 or 8-byte writes to the table; others ignored."""
        index, off = divmod(offset, MSIX_TABLE_ENTRY_SIZE)
        if size not in (4, 8) or off % size or index >= len(self.msix_table):
            return
        e = self.msix_table[index]
        raw = bytearray(struct.pack("<QII", e[0], e[1], e[2]))
        raw[off : off + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
        e[0], e[1], e[2] = struct.unpack("<QII", raw)

    def msix_is_enabled(self) -> bool:
        """pci_msix_enabled: MSI-X on and MSI off."""
        return self.msix_enabled and not self.msi_enabled

    def send_msix(self, index: int) -> bool:
        """pci_generate_msix: queue table entry `index`'s message; False if none is sent."""
        msg = self.msix_message(index)
        if msg is not None:
            self.irq_work.append(("msi", msg[0], msg[1], None))
        return msg is not None

    def flush_interrupts(self):
        """Generator, in a device-model thread: send the queued interrupt changes
        (HC_SET_IRQLINE, HC_INJECT_MSI through HSM's ioctls)."""
        while self.irq_work:
            kind, a, b, done = self.irq_work.pop(0)
            if kind == "line":
                yield from self.bus.set_irqline(a, bool(b))
            else:
                yield from self.bus.inject_msi(a, b)
            if done is not None:
                done()

    def after_access(self) -> None:
        """Right after a register or configuration access: queued interrupt changes go out
        from the I/O thread before the request completes (ACRN raises them inside the
        emulation)."""
        if self.irq_work:
            self.bus.post_work(self.flush_interrupts())

    def msix_message(self, index: int) -> tuple[int, int] | None:
        """pci_generate_msix's decision: the (address, data) to send for table entry `index`,
        or None (MSI-X off, function masked, entry masked or out of range; no PBA bit is kept,
        as in ACRN)."""
        if not self.msix_is_enabled() or self.msix_function_mask:
            return None
        if not 0 <= index < len(self.msix_table):
            return None
        addr, data, ctrl = self.msix_table[index]
        return None if ctrl & PCIM_MSIX_VCTRL_MASK else (addr, data)

    # ------------------------------------------------------------------- INTx
    def lintr_request(self) -> None:
        """pci_lintr_request: INTA (each function is alone in its slot here)."""
        self.lintr_pin = 1
        self.set_cfgdata8(PCIR_INTPIN, 1)

    def lintr_route(self, router: PirqRouter) -> None:
        """pci_lintr_route: a PIRQ pin, and its IRQ into the interrupt-line register."""
        if self.lintr_pin:
            self.lintr_irq = router.irq(router.alloc_pin())
            self.set_cfgdata8(PCIR_INTLINE, self.lintr_irq)

    def _lintr_permitted(self) -> bool:
        cmd = self.get_cfgdata16(PCIR_COMMAND)
        return not (self.msi_enabled or self.msix_enabled or cmd & PCIM_CMD_INTXDIS)

    def _irq_level(self, level: bool) -> None:
        if self.lintr_irq < 16:
            self.irq_work.append(("line", self.lintr_irq, int(level), None))
        sts = self.get_cfgdata16(PCIR_STATUS)
        sts = sts | PCIM_STATUS_INTXSTATE if level else sts & ~PCIM_STATUS_INTXSTATE
        self.set_cfgdata16(PCIR_STATUS, sts)

    def lintr_assert(self) -> None:
        if self.lintr_pin and self.lintr_state == "IDLE":
            if self._lintr_permitted():
                self.lintr_state = "ASSERTED"
                self._irq_level(True)
            else:
                self.lintr_state = "PENDING"

    def lintr_deassert(self) -> None:
        if self.lintr_state == "ASSERTED":
            self.lintr_state = "IDLE"
            self._irq_level(False)
        elif self.lintr_state == "PENDING":
            self.lintr_state = "IDLE"

    def _lintr_update(self) -> None:
        if self.lintr_state == "ASSERTED" and not self._lintr_permitted():
            self._irq_level(False)
            self.lintr_state = "PENDING"
        elif self.lintr_state == "PENDING" and self._lintr_permitted():
            self.lintr_state = "ASSERTED"
            self._irq_level(True)

    # ----------------------------------------------------- configuration cycles
    def cfg(self, reg: int, size: int, is_write: bool, value: int) -> int:
        """pci_cfgrw for this function: what the device model's emulate_pci_cfgrw calls."""
        if size not in (1, 2, 4) or reg % size or reg + size > 256:
            return 0 if is_write else (1 << (8 * size)) - 1
        if not is_write:
            value = self.cfgread(reg, size)
        else:
            self.cfgwrite(reg, size, value & ((1 << (8 * size)) - 1))
            value = 0
        self.after_access()
        return value

    def cfgread(self, reg: int, size: int) -> int:
        return self.get_cfgdata(reg, size)

    def cfgwrite(self, reg: int, size: int, value: int) -> None:
        if PCIR_BAR0 <= reg < PCIR_BAR0 + 24:
            if size == 4:  # BARs take dword writes only (pci_cfgrw)
                self._bar_write(reg, value)
            return
        if reg <= PCIR_STATUS + 1 and reg + size > PCIR_COMMAND:
            self._cmdsts_write(reg, size, value)
            return
        if self.capend and CAP_START_OFFSET <= reg <= self.capend:
            self._capwrite(reg, size, value)
            return
        if reg == PCIR_INTLINE and size == 1:
            self.set_cfgdata8(reg, value)  # writable scratch for the OS (PCI 3.0 §6.2.4)
        # identity, header and everything else: read-only

    def _bar_write(self, reg: int, value: int) -> None:
        idx = (reg - PCIR_BAR0) // 4
        bar = self.bars[idx]
        if bar.type == PCIBAR_NONE:
            return
        if bar.type == PCIBAR_MEMHI64:
            lo = self.bars[idx - 1]
            mask = ~(lo.size - 1) >> 32 & 0xFFFF_FFFF
            self.set_cfgdata32(reg, value & mask)
            return  # the model keeps 64-bit BARs below 4 GiB: the high half only reads back
        mask = ~(bar.size - 1) & 0xFFFF_FFFF
        if bar.type == PCIBAR_IO:
            new, low = value & mask & 0xFFFF, PCIM_BAR_IO_SPACE
        else:
            new = value & mask
            low = PCIM_BAR_MEM_64 if bar.type == PCIBAR_MEM64 else 0
        self.set_cfgdata32(reg, (value & mask) | low)
        if value == 0xFFFF_FFFF:
            return  # sizing: the mask reads back; the decoded address does not move
        if new != bar.addr:
            decoding = self._decodes(idx)
            if decoding:
                self._unregister_bar(idx)
            bar.addr = new
            if decoding:
                self._register_bar(idx)

    def _cmdsts_write(self, reg: int, size: int, value: int) -> None:
        """pci_emul_cmdsts_write: status bits are read-only here; a decoding change registers
        or unregisters every BAR of that space; Interrupt Disable updates INTx."""
        old_cmd = self.get_cfgdata16(PCIR_COMMAND)
        shift = (reg & 3) * 8
        readonly = (0xFFFF_F880 >> shift) & ((1 << (8 * size)) - 1)
        old = self.get_cfgdata(reg, size)
        self.set_cfgdata(reg, size, (value & ~readonly) | (old & readonly))
        changed = old_cmd ^ self.get_cfgdata16(PCIR_COMMAND)
        for i, bar in enumerate(self.bars):
            space = {PCIBAR_IO: PCIM_CMD_PORTEN, PCIBAR_MEM32: PCIM_CMD_MEMEN,
                     PCIBAR_MEM64: PCIM_CMD_MEMEN}.get(bar.type)  # fmt: skip
            if space and changed & space:
                if self._decodes(i):
                    self._register_bar(i)
                else:
                    self._unregister_bar(i)
        self._lintr_update()

    def _capwrite(self, reg: int, size: int, value: int) -> None:
        """pci_emul_capwrite: ID and next pointer are read-only (a 4-byte write at the ID is
        trimmed to its upper half); MSI and MSI-X message control keep their read-only
        fields; other capabilities take the bytes."""
        caps = self.capabilities()
        capoff, capid = caps[0]
        for off, cid in caps:
            if off <= reg:
                capoff, capid = off, cid
        if reg in (capoff, capoff + 1):
            if reg == capoff and size == 4:
                reg, size, value = reg + 2, 2, value >> 16
            else:
                return
        if capid == PCIY_MSIX and reg == capoff + 2 and size == 2:
            rw = PCIM_MSIXCTRL_MSIX_ENABLE | PCIM_MSIXCTRL_FUNCTION_MASK
            value = (self.get_cfgdata16(reg) & ~rw) | (value & rw)
            self.msix_enabled = bool(value & PCIM_MSIXCTRL_MSIX_ENABLE)
            self.msix_function_mask = bool(value & PCIM_MSIXCTRL_FUNCTION_MASK)
            self.set_cfgdata16(reg, value)
            self._lintr_update()
            self.msix_control_changed()
            return
        if capid == PCIY_MSIX:
            return  # table and PBA offsets are read-only
        if capid == PCIY_MSI and reg == capoff + 2 and size == 2:
            rw = PCIM_MSICTRL_MME_MASK | PCIM_MSICTRL_MSI_ENABLE
            value = (self.get_cfgdata16(reg) & ~rw) | (value & rw)
            self.set_cfgdata16(reg, value)
            self.msi_enabled = bool(value & PCIM_MSICTRL_MSI_ENABLE)
            self.msi_addr = self.get_cfgdata(capoff + 4, 8)
            self.msi_data = self.get_cfgdata16(capoff + 12)
            self._lintr_update()
            return
        self.set_cfgdata(reg, size, value)
        self.capwrite_other(capoff, capid, reg, size)

    def msix_control_changed(self) -> None:
        """A subclass hook: MSI-X was enabled or disabled (virtio moves its legacy registers)."""

    def capwrite_other(self, capoff: int, capid: int, reg: int, size: int) -> None:
        """A subclass hook: bytes of another capability were written."""
