"""A progress line for long runs on a terminal: simulated time, host time and guest MIPS.

It is drawn on standard error only when that is a terminal, from a host thread that reads the
simulation's clock and instruction counters (it never touches the timeline, so the run, its
statistics and its trace are the same with or without it), and erased when the run ends:
nothing of it reaches a file or a pipe.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

FIRST_AFTER_S = 1.0  # a run shorter than this shows nothing
EVERY_S = 0.5


class Progress:
    def __init__(self, hv, stream: TextIO | None = None, enabled: bool | None = None) -> None:
        self.hv = hv
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            try:
                enabled = self.stream.isatty()
            except (AttributeError, ValueError):
                enabled = False
        self.enabled = enabled
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._drawn = False
        self._t0 = 0.0
        self._lock = threading.Lock()

    def __enter__(self) -> Progress:
        if self.enabled:
            self._t0 = time.monotonic()
            self._thread = threading.Thread(target=self._loop, name="acrn-sim progress",
                                            daemon=True)  # fmt: skip
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.clear()

    def clear(self) -> None:
        """Erase the line (before a console writes to the same terminal; at the end); the
        next update draws it again."""
        with self._lock:
            if self._drawn:
                self.stream.write("\r\x1b[K")
                self.stream.flush()
                self._drawn = False

    def line(self, host_s: float) -> str:
        hv = self.hv
        hz = hv.profile.tsc_hz
        insns = 0
        for vm in list(hv.vms):
            for vcpu in vm.vcpus:
                engine = getattr(vcpu, "engine", None)
                st = getattr(engine, "st", None)
                insns += int(getattr(st, "insns", 0) or 0)
        mips = insns / host_s / 1e6 if host_s > 0 else 0.0
        sim_ms = hv.now() * 1e3 / hz
        return f"acrn-sim: simulated {sim_ms:,.3f} ms, host {host_s:,.1f} s, {mips:,.1f} MIPS"

    def _loop(self) -> None:
        if self._stop.wait(FIRST_AFTER_S):
            return
        while True:
            try:
                text = self.line(time.monotonic() - self._t0)
            except Exception:  # the model changed under the reader: skip this update
                text = None
            if text is not None:
                with self._lock:
                    self.stream.write("\r\x1b[K" + text)
                    self.stream.flush()
                    self._drawn = True
            if self._stop.wait(EVERY_S):
                return
