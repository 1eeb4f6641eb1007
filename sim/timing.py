"""The timing model: named costs in cycles, each with its source, loaded from a TOML profile.

A profile is data (sim/profiles/*.toml). Every number carries a `source` string that cites
a publication (docs/timing-sources.md), so a user can see where it came from and change it
(`--cost NAME=CYCLES`).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from sim import ConfigError

DEFAULT_PROFILE = Path(__file__).parent / "profiles" / "default.toml"


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
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"timing profile not found: {path}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"timing profile {path} is not valid TOML: {e}") from None

        def table(section: str) -> dict[str, Cost]:
            out = {}
            for name, entry in sorted(data.get(section, {}).items()):
                if not isinstance(entry, dict) or "cycles" not in entry or "source" not in entry:
                    raise ConfigError(
                        f"timing profile {path}: {section}.{name} needs cycles and source"
                    )
                if not isinstance(entry["cycles"], int) or entry["cycles"] < 0:
                    raise ConfigError(
                        f"timing profile {path}: {section}.{name} cycles must be >= 0"
                    )
                out[name] = Cost(name, entry["cycles"], str(entry["source"]))
            return out

        machine = data.get("machine", {})
        tsc_hz = machine.get("tsc_hz")
        if not isinstance(tsc_hz, int) or tsc_hz <= 0:
            raise ConfigError(f"timing profile {path}: machine.tsc_hz must be a positive integer")
        return cls(tsc_hz, table("costs"), table("instruction_classes"))

    def cost(self, name: str) -> int:
        return self.cycles[name]

    def klass(self, name: str) -> int:
        return self.classes[name].cycles

    def override(self, assignment: str) -> None:
        """Apply 'NAME=CYCLES' (a cost or an instruction class) from the command line."""
        name, sep, value = assignment.partition("=")
        name = name.strip()
        if not sep or not value.strip().isdigit():
            raise ConfigError(f"bad --cost {assignment!r}: expected NAME=CYCLES")
        cycles = int(value)
        if name in self.costs:
            self.costs[name] = Cost(name, cycles, "command line override")
            self.cycles[name] = cycles
        elif name in self.classes:
            self.classes[name] = Cost(name, cycles, "command line override")
        elif name == "tsc_hz":
            if cycles <= 0:
                raise ConfigError("tsc_hz must be positive")
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
