"""The board a run has: its PCI devices and whether its VT-d unit posts interrupts, from the
command line (`--pdev BB:DD.F,KIND[,KEY=VALUE...]`, `--posted-interrupts`) and from a
scenario script's PLATFORM (a sim.platform.PlatformConfig, or a function opts -> one). ACRN
reads the board from its board XML; a scenario XML names the board's devices in <pci_devs>
and takes the board itself from the command line here.

    acrn-sim run guests/images/sensor.elf --pdev 00:1f.0,sensor -s 7,passthru,00/1f/0
"""

from __future__ import annotations

from acrn_sim.sim import ConfigError
from acrn_sim.sim.platform import PlatformConfig, check_devices


def scenario_platform(value, opts, where: str) -> PlatformConfig | None:
    """A script's PLATFORM, called with the run's options if it is a function; checked."""
    if value is None:
        return None
    if callable(value) and not isinstance(value, PlatformConfig):
        try:
            value = value(opts)
        except ConfigError:
            raise
        except Exception as e:  # the script's own error, one line
            raise ConfigError(f"{where}: PLATFORM failed: {type(e).__name__}: {e}") from None
    if not isinstance(value, PlatformConfig):
        raise ConfigError(f"{where}: PLATFORM must be a PlatformConfig, not {value!r:.40}")
    if not isinstance(value.devices, list | tuple) or not all(
        isinstance(d, str) for d in value.devices
    ):
        raise ConfigError(f"{where}: PLATFORM.devices must be a list of device strings")
    check_devices(list(value.devices))
    return value


def platform_for(opts) -> PlatformConfig:
    """The run's board: the script's devices, then --pdev's; posted interrupts if either."""
    own = getattr(opts, "scenario_platform", None)
    devices = list(own.devices) if own is not None else []
    devices += list(getattr(opts, "pdev", []) or [])
    check_devices(devices)
    posted = bool(getattr(opts, "posted_interrupts", False)) or bool(own and own.posted_interrupts)
    return PlatformConfig(devices, posted)
