"""The timing model: named costs in cycles, each with its source, loaded from a TOML profile.

A profile is data (sim/profiles/*.toml). Every number carries a `source` string that cites
a publication (docs/timing-sources.md), so a user can see where it came from and change it
(`--cost NAME=CYCLES`).

Every value is checked against its allowed range (`value_range`) when a profile is loaded and
when the command line overrides it: the model divides by some of them and loops on others, so
an out-of-range value would fail deep inside the run, or stop simulated time for good.
"""

from __future__ import annotations

import functools
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from acrn_sim.sim import ConfigError

DEFAULT_PROFILE = Path(__file__).parent / "profiles" / "default.toml"

# The TSC frequency: from 1 MHz (the schedulers count in 1 ms units of tsc_hz // 1000 cycles,
# which must not be 0) to 100 GHz.
TSC_HZ_RANGE = (1_000_000, 100_000_000_000)
# Any cost: at most 10^9 cycles (0.4 s at 2.4 GHz), so that sums of costs over a long run stay
# far inside the 64-bit counters of the statistics and the trace.
MAX_COST = 1_000_000_000
# Costs that must be at least a cycle, so that no loop of the model can run in zero simulated
# time: every VM exit pays vmexit_hw and vmentry_hw, and every basic block pays its
# instructions' classes (all of them >= 1). A scheduler quantum shorter than a VM exit's round
# trip would spend the run on slice boundaries, one basic block per slice.
_MIN_COST = {"vmexit_hw": 1, "vmentry_hw": 1, "sched_quantum": 1_000}
_MIN_CLASS = 1
_CYCLES = re.compile(r"\s*(\d{1,30})\s*", re.ASCII)


@dataclass(frozen=True)
class Cost:
    name: str
    cycles: int
    source: str


class TimingProfile:
    def __init__(self, tsc_hz: int, costs: dict[str, Cost], classes: dict[str, Cost]) -> None:
        self.tsc_hz = tsc_hz
        self.costs = costs
        self.classes = classes
        # name -> cycles, for the simulator's hot paths: a subscript, not a call per cost.
        # Kept equal to `costs` by `override`, the only way costs change.
        self.cycles = {name: c.cycles for name, c in costs.items()}

    @classmethod
    def load(cls, path: str | Path = DEFAULT_PROFILE) -> TimingProfile:
        """A profile from its TOML file. A profile may start from another one: `base =
        "default"` (the default profile) or a path relative to the file; its own tables
        then change only the names they give."""
        data = _with_base(_read_toml(path), path)
        costs = _table(data, "costs", path)
        classes = _table(data, "instruction_classes", path)
        machine = data.get("machine", {})
        tsc_hz = machine.get("tsc_hz") if isinstance(machine, dict) else None
        lo, hi = TSC_HZ_RANGE
        if type(tsc_hz) is not int or not lo <= tsc_hz <= hi:
            raise ConfigError(
                f"timing profile {path}: machine.tsc_hz must be an integer from {lo} to {hi}"
            )
        if Path(path) != DEFAULT_PROFILE:
            # The model reads every cost and class by name during the run: a profile must
            # name the same ones as the default profile, and only those.
            want_costs, want_classes = _default_names()
            for section, have, want in (
                ("costs", costs, want_costs),
                ("instruction_classes", classes, want_classes),
            ):
                missing, extra = sorted(want - set(have)), sorted(set(have) - want)
                if missing:
                    raise ConfigError(
                        f"timing profile {path}: {section}.{missing[0]} is missing "
                        f"({len(missing)} of the {len(want)} names of {section} are)"
                    )
                if extra:
                    raise ConfigError(
                        f"timing profile {path}: unknown {section}.{extra[0]} "
                        "(see `acrn-sim profile` for the names)"
                    )
        return cls(tsc_hz, costs, classes)

    def cost(self, name: str) -> int:
        return self.cycles[name]

    def klass(self, name: str) -> int:
        return self.classes[name].cycles

    def override(self, assignment: str) -> None:
        """Apply 'NAME=CYCLES' (a cost or an instruction class) from the command line."""
        name, sep, value = assignment.partition("=")
        name = name.strip()
        m = _CYCLES.fullmatch(value)
        if not sep or not m:
            raise ConfigError(f"bad --cost {assignment!r}: expected NAME=CYCLES")
        cycles = int(m.group(1))
        if name in self.costs:
            check_value("costs", name, cycles, "--cost")
            self.costs[name] = Cost(name, cycles, "command line override")
            self.cycles[name] = cycles
        elif name in self.classes:
            check_value("instruction_classes", name, cycles, "--cost")
            self.classes[name] = Cost(name, cycles, "command line override")
        elif name == "tsc_hz":
            check_value("machine", name, cycles, "--cost")
            self.tsc_hz = cycles
        else:
            raise ConfigError(f"unknown cost {name!r} (see `acrn-sim profile` for the names)")

    def describe(self) -> str:
        lines = [f"tsc_hz = {self.tsc_hz}"]
        for title, tab in (("costs", self.costs), ("instruction classes", self.classes)):
            lines.append(f"\n{title}:")
            for c in tab.values():
                lines.append(f"  {c.name:<24} {c.cycles:>9}  {c.source}")
        return "\n".join(lines)


def value_range(section: str, name: str) -> tuple[int, int]:
    """The allowed [low, high] of a profile value: machine.tsc_hz, a cost or a class."""
    if section == "machine":
        return TSC_HZ_RANGE
    if section == "instruction_classes":
        return _MIN_CLASS, MAX_COST
    return _MIN_COST.get(name, 0), MAX_COST


def check_value(section: str, name: str, value: int, where: str) -> None:
    lo, hi = value_range(section, name)
    if not lo <= value <= hi:
        raise ConfigError(f"{where} {name}={value} is out of range: {lo} to {hi}")


def _with_base(data: dict, path: str | Path, depth: int = 0) -> dict:
    """The profile's tables over those of its `base`, if it names one."""
    base = data.get("base")
    if base is None:
        return data
    if not isinstance(base, str) or depth > 4:
        raise ConfigError(f"timing profile {path}: base must name one profile (not a chain)")
    base_path = DEFAULT_PROFILE if base == "default" else Path(path).parent / base
    merged = _with_base(_read_toml(base_path), base_path, depth + 1)
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in merged.items()}
    for key, value in data.items():
        if key == "base":
            continue
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key].update(value)
        else:
            out[key] = value
    return out


def _read_toml(path: str | Path) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"timing profile not found: {path}") from None
    except OSError as e:
        raise ConfigError(f"cannot read timing profile {path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"timing profile {path} is not valid TOML: {e}") from None
    except ValueError as e:  # bytes that are not UTF-8
        raise ConfigError(f"timing profile {path} is not valid TOML: {e}") from None


def _table(data: dict, section: str, path: str | Path) -> dict[str, Cost]:
    entries = data.get(section, {})
    if not isinstance(entries, dict):
        raise ConfigError(f"timing profile {path}: {section} must be a table")
    out = {}
    for name, entry in sorted(entries.items()):
        if not isinstance(entry, dict) or "cycles" not in entry or "source" not in entry:
            raise ConfigError(f"timing profile {path}: {section}.{name} needs cycles and source")
        cycles = entry["cycles"]
        lo, hi = value_range(section, name)
        if type(cycles) is not int or not lo <= cycles <= hi:
            raise ConfigError(
                f"timing profile {path}: {section}.{name} cycles must be an integer "
                f"from {lo} to {hi}"
            )
        out[name] = Cost(name, cycles, str(entry["source"]))
    return out


@functools.cache
def _default_names() -> tuple[frozenset[str], frozenset[str]]:
    data = _read_toml(DEFAULT_PROFILE)
    return frozenset(data.get("costs", {})), frozenset(data.get("instruction_classes", {}))
