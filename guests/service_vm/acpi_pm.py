"""The device model's ACPI fixed hardware for a User VM, behind the FADT that sim/acpi.py builds.

- The PM1a event block at PM1A_EVT_ADDR (0x400): PM1_STS at 0x400, PM1_EN at 0x402, 16 bits
  each; and the PM1a control block PM1_CNT at VIRTUAL_PM1A_CNT_ADDR (0x404). Writing SLP_EN
  with SLP_TYP 5, the value the DSDT's \\_S5 package holds, powers the VM off; SLP_TYP 3 (\\_S3)
  suspends it. The SMI command port 0xB2 takes ACPI_ENABLE / ACPI_DISABLE, which set and clear
  SCI_EN (devicemodel/arch/x86/pm.c: pm1_status_handler, pm1_enable_handler,
  pm1_control_handler, smi_cmd_handler, sci_update).
- The ACPI PM timer (ACPI 6.x §4.8.3.3): a free-running 24- or 32-bit counter at 3.579545 MHz,
  read from simulated time. acrn-dm's FADT has none; this is for a FADT built with
  pm_timer=True (at sim/acpi.py's PM_TMR_ADDR, 0x408, bhyve's pmtmr.c).

Each device has the interface of guests/service_vm/devices.py's: pio(port, size, is_write,
value) -> the value read. Time and the outside world come in as callables, so the classes do not
depend on the device model: now() returns simulated TSC cycles, tsc_hz converts them.
"""

from __future__ import annotations

from collections.abc import Callable

from acrn_sim.sim.acpi import (
    ACPI_DISABLE,
    ACPI_ENABLE,
    PM1A_EVT_ADDR,
    PM_TMR_ADDR,
    SLP_TYP_S3,
    SLP_TYP_S5,
    SMI_CMD,
    VIRTUAL_PM1A_CNT_ADDR,
)

PM_TIMER_HZ = 3_579_545

# PM1 status and enable bits (ACPI 6.x Tables 4.16, 4.17; pm.c's PM1_*)
PM1_TMR_STS, PM1_BM_STS, PM1_GBL_STS = 0x0001, 0x0010, 0x0020
PM1_PWRBTN_STS, PM1_SLPBTN_STS, PM1_RTC_STS, PM1_WAK_STS = 0x0100, 0x0200, 0x0400, 0x8000
PM1_TMR_EN, PM1_GBL_EN, PM1_PWRBTN_EN, PM1_SLPBTN_EN, PM1_RTC_EN = 0x01, 0x20, 0x100, 0x200, 0x400
# PM1 control bits (Table 4.18; devicemodel/include/public/acrn_common.h's VIRTUAL_PM1A_*)
VIRTUAL_PM1A_SCI_EN = 0x0001
VIRTUAL_PM1A_SLP_TYP = 0x1C00
VIRTUAL_PM1A_SLP_EN = 0x2000
VIRTUAL_PM1A_ALWAYS_ZERO = 0xC003

# What a guest may clear in PM1_STS and set in PM1_EN (pm1_status_handler, pm1_enable_handler)
_STS_W1C = PM1_WAK_STS | PM1_RTC_STS | PM1_SLPBTN_STS | PM1_PWRBTN_STS | PM1_BM_STS
_EN_WRITABLE = PM1_RTC_EN | PM1_PWRBTN_EN | PM1_GBL_EN


def _ones(size: int) -> int:
    return (1 << (8 * size)) - 1


class PmTimer:
    """The ACPI PM timer's counter: ticks at 3.579545 MHz since simulated time 0, truncated to
    24 bits, or to 32 when the FADT sets TMR_VAL_EXT (sim/acpi.py's FADT does)."""

    PORT = PM_TMR_ADDR

    def __init__(self, now: Callable[[], int], tsc_hz: int, bits: int = 32) -> None:
        if bits not in (24, 32):
            raise ValueError("the ACPI PM timer has 24 or 32 bits")
        self.now = now
        self.tsc_hz = tsc_hz
        self.bits = bits

    def ticks(self) -> int:
        # exact: the tick count is the floor of elapsed time times the frequency
        return self.now() * PM_TIMER_HZ // self.tsc_hz

    def value(self) -> int:
        return self.ticks() & ((1 << self.bits) - 1)

    def pio(self, port: int, size: int, is_write: bool, value: int) -> int:
        if is_write:
            return 0  # read-only
        # a narrower read sees the bytes of the register at its port, as on an I/O bus
        return (self.value() >> (8 * (port - self.PORT))) & _ones(size)


class AcpiPm:
    """PM1_STS, PM1_EN, PM1_CNT and SMI_CMD. Register it at PM1A_EVT_ADDR (4 ports),
    VIRTUAL_PM1A_CNT_ADDR (2 ports) and SMI_CMD (1 port).

    on_poweroff() runs when the guest enters S5, on_suspend() when it enters S3; set_sci(level)
    drives SCI_INT (a level-triggered line: the caller turns it into HC_SET_IRQLINE). As in
    acrn-dm, PM1 registers take 16-bit accesses only (other sizes read all ones and are
    dropped), SCI_EN starts clear until the guest writes ACPI_ENABLE to SMI_CMD, and the only
    event is the power button (press_power_button, as acrn-dm's SIGTERM and `acrnctl stop`)."""

    def __init__(
        self,
        on_poweroff: Callable[[], None],
        on_suspend: Callable[[], None] | None = None,
        set_sci: Callable[[bool], None] | None = None,
    ) -> None:
        self.on_poweroff = on_poweroff
        self.on_suspend = on_suspend
        self.set_sci = set_sci
        self.pm1_status = 0
        self.pm1_enable = 0
        self.pm1_control = 0
        self.sci_active = False

    # ------------------------------------------------------------------ SCI
    def _sci_update(self) -> None:
        # Without SCI_EN an event would be an SMI, which ACRN does not have: nothing changes.
        if not self.pm1_control & VIRTUAL_PM1A_SCI_EN:
            return
        need = bool(
            self.pm1_enable
            & self.pm1_status
            & (PM1_TMR_STS | PM1_GBL_STS | PM1_PWRBTN_STS | PM1_SLPBTN_STS | PM1_RTC_STS)
        )
        if need != self.sci_active:
            self.sci_active = need
            if self.set_sci is not None:
                self.set_sci(need)

    def press_power_button(self) -> None:
        if not self.pm1_status & PM1_PWRBTN_STS:
            self.pm1_status |= PM1_PWRBTN_STS
            self._sci_update()

    # ------------------------------------------------------------------ registers
    def pio(self, port: int, size: int, is_write: bool, value: int) -> int:
        if port == SMI_CMD:
            if is_write and size == 1:
                if value & 0xFF == ACPI_ENABLE:
                    self.pm1_control |= VIRTUAL_PM1A_SCI_EN
                elif value & 0xFF == ACPI_DISABLE:
                    self.pm1_control &= ~VIRTUAL_PM1A_SCI_EN
                return 0
            return 0 if is_write else _ones(size)  # write-only, byte-wide
        if size != 2 or port not in (PM1A_EVT_ADDR, PM1A_EVT_ADDR + 2, VIRTUAL_PM1A_CNT_ADDR):
            return 0 if is_write else _ones(size)
        if port == PM1A_EVT_ADDR:
            if not is_write:
                return self.pm1_status
            self.pm1_status &= ~(value & _STS_W1C)
            self._sci_update()
        elif port == PM1A_EVT_ADDR + 2:
            if not is_write:
                return self.pm1_enable
            self.pm1_enable = value & _EN_WRITABLE
            self._sci_update()
        else:
            if not is_write:
                return self.pm1_control
            self._write_control(value & 0xFFFF)
        return 0

    def _write_control(self, value: int) -> None:
        # SLP_EN and the reserved bits read as zero; OSPM cannot change SCI_EN.
        keep = self.pm1_control & VIRTUAL_PM1A_SCI_EN
        self.pm1_control = keep | (value & ~(VIRTUAL_PM1A_SLP_EN | VIRTUAL_PM1A_ALWAYS_ZERO))
        if value & VIRTUAL_PM1A_SLP_EN:
            slp_typ = (self.pm1_control & VIRTUAL_PM1A_SLP_TYP) >> 10
            if slp_typ == SLP_TYP_S5:
                self.on_poweroff()
            elif slp_typ == SLP_TYP_S3 and self.on_suspend is not None:
                self.on_suspend()
