"""What the device model writes into a User VM before it starts it (ACRN devicemodel/core/
sw_load_common.c, sw_load_bzimage.c, sw_load_elf.c; hw/platform/acpi/acpi.c; core/mptbl.c).

acrn-dm builds the ACPI tables and the MP table in the BIOS area first (vm_init_vdevs:
acpi_build, mptable_build), then loads the guest software (acrn_sw_load):
- a Linux bzImage, with `-k KERNEL -r INITRD -B BOOTARGS`: sim/bzimage.py lays it out as
  sw_load_bzimage.c does (zero page, e820 map, the 32-bit boot protocol entry);
- anything else this simulator accepts (a Multiboot or ELF64 image): sim/bootproto.py, whose
  Multiboot command line starts with the image's own path, as GRUB and QEMU pass it.
The result is a list of (guest-physical address, bytes) to copy into the VM's RAM through the
device model's own mapping of it, and the BSP's registers for HC_SET_VCPU_REGS.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from acrn_sim.sim import ConfigError, acpi, bootproto, bzimage
from acrn_sim.sim.bootproto import BootState

BIOS_AREA = (0xF0000, 0x100000)  # where the ACPI and MP tables go (ACPI_BASE 0xF2400)


@dataclass
class GuestSoftware:
    """The writes and the entry state of one load; `kind` is "bzimage" or "multiboot"."""

    kind: str
    writes: list[tuple[int, bytes]]
    state: BootState


def is_bzimage(path: str) -> bool:
    """Whether the file has a Linux setup header ("HdrS" at 0x202, Documentation/arch/x86/
    boot.rst): acrn-dm's -k takes such a kernel; -k with anything else is refused there."""
    try:
        with open(path, "rb") as f:
            head = f.read(0x206)
    except OSError:
        return False
    return bzimage.is_bzimage(head)


def platform_tables(num_vcpus: int, *, lapic_pt: bool = False) -> list[tuple[int, bytes]]:
    """The ACPI tables and the MP table as acrn-dm writes them for every User VM. acrn-dm's
    FADT has no PM timer, and so has this one; the HPET and MCFG tables are written as
    acrn-dm writes them (docs/platform-tables.md: nothing answers behind them yet, and Linux
    then does without)."""
    return acpi.build_acpi(num_vcpus, rtvm=lapic_pt) + acpi.build_mptable(
        num_vcpus, lapic_pt=lapic_pt
    )


def load(
    image: str,
    memory: int,
    cmdline: str,
    num_vcpus: int,
    *,
    initrd: str | None = None,
    lapic_pt: bool = False,
) -> GuestSoftware:
    """Everything the device model writes for a User VM, in the order it writes it (a later
    write wins where two overlap, as in acrn-dm)."""
    tables = platform_tables(num_vcpus, lapic_pt=lapic_pt)
    if is_bzimage(image):
        boot = bzimage.prepare_bzimage(image, initrd, cmdline, memory)
        return GuestSoftware("bzimage", tables + boot.writes, boot.state)
    if initrd is not None:
        raise ConfigError(
            f"{Path(image).name}: an initrd (-r) goes with a Linux bzImage; this image is not one"
        )
    boot = bootproto.prepare(image, memory, cmdline)
    return GuestSoftware("multiboot", tables + boot.writes, boot.state)
