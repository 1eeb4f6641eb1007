"""The machine and the clock: host memory, CPUs, the Unicorn engine, timing, tracing.

Nothing in this package knows about ACRN: it models hardware (and the simulator's own plumbing).
"""


class ConfigError(Exception):
    """A user-facing configuration or input problem: reported as one line, non-zero exit."""
