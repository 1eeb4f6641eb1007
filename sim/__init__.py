"""The machine and the clock: host memory, CPUs, the Unicorn engine, timing, tracing.

Nothing in this package knows about ACRN: it models hardware (and the simulator's own plumbing).
"""

# First, before any module imports unicorn: choose the library it loads (sim/unicorn_engine.py).
from acrn_sim.sim import unicorn_engine as _unicorn_engine

_unicorn_engine.select()


class ConfigError(Exception):
    """A user-facing configuration or input problem: reported as one line, non-zero exit."""
