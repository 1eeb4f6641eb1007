"""Parsing of user-given sizes and simulated times, and cycle/time conversion."""

from __future__ import annotations

import re
from fractions import Fraction

from acrn_sim.sim import ConfigError

_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
_TIME_UNITS = {
    "s": Fraction(1),
    "ms": Fraction(1, 10**3),
    "us": Fraction(1, 10**6),
    "ns": Fraction(1, 10**9),
}


# The longest number accepted: enough for any size or time in range, and short enough that no
# conversion can fail (Python refuses to convert integers of more than 4,300 digits).
_MAX_DIGITS = 30
# The simulated clock and the statistics hold cycle counts as signed 64-bit integers.
MAX_CYCLES = (1 << 63) - 1


def parse_size(text: str) -> int:
    """'64M', '512K', '1G' or a plain byte count -> bytes. (Digits are ASCII only: a
    superscript or another script's digit is not a number here.)"""
    m = re.fullmatch(
        rf"\s*(\d{{1,{_MAX_DIGITS}}})\s*([KMG]?)(?:i?B)?\s*", text, re.IGNORECASE | re.ASCII
    )
    if not m:
        raise ConfigError(f"bad size {text!r}: expected a number with an optional K, M or G suffix")
    return int(m.group(1)) * _SIZE_UNITS[m.group(2).upper()]


def parse_simtime(text: str, tsc_hz: int) -> int:
    """'10ms', '2s', '500us', '1000000cycles' -> TSC cycles (rounded down)."""
    n = _MAX_DIGITS
    m = re.fullmatch(
        rf"\s*(\d{{1,{n}}}(?:\.\d{{1,{n}}})?)\s*(s|ms|us|ns|cycles)\s*", text, re.ASCII
    )
    if not m:
        raise ConfigError(
            f"bad simulated time {text!r}: expected e.g. 10ms, 2s, 500us or 1000000cycles"
        )
    value = Fraction(m.group(1))
    if m.group(2) == "cycles":
        cycles = int(value)
    else:
        cycles = int(value * _TIME_UNITS[m.group(2)] * tsc_hz)
    if cycles > MAX_CYCLES:
        raise ConfigError(
            f"simulated time {text!r} is out of range: at most {MAX_CYCLES} cycles (2^63 - 1)"
        )
    return cycles


def cycles_to_ns(cycles: int, tsc_hz: int) -> Fraction:
    """Exact conversion: time is an integer cycle count, so ns are a rational number."""
    return Fraction(cycles * 10**9, tsc_hz)


def fmt_us(cycles: int, tsc_hz: int) -> str:
    """Microseconds with three decimals, computed exactly (no float rounding surprises)."""
    ns = cycles_to_ns(cycles, tsc_hz)
    thousandths = round(ns)  # ns == thousandths of a microsecond
    return f"{thousandths // 1000}.{thousandths % 1000:03d}"
