"""A one-line progress bar on stderr, drawn only when stderr is a terminal (quiet in CI)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _si(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.1f}{unit}"
    return f"{value:.0f}"


class Progress:
    """``update(done, rows)`` redraws at most every ``interval`` seconds; ``close()`` ends the line.

    ``total`` is in the reader's units (bytes of a text file, rows of Parquet); the bar and ETA
    follow those units, the speed is always rows per second.
    """

    def __init__(
        self,
        total: int,
        *,
        enabled: bool | None = None,
        stream: TextIO | None = None,
        interval: float = 0.2,
    ) -> None:
        self._stream = stream or sys.stderr
        self.enabled = self._stream.isatty() if enabled is None else enabled
        self._total = total
        self._interval = interval
        self._start = time.monotonic()
        self._last = 0.0
        self._drawn = False

    def update(self, done: int, rows: int, *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < self._interval:
            return
        self._last = now
        elapsed = max(now - self._start, 1e-9)
        rate = rows / elapsed
        if self._total > 0:
            frac = min(done / self._total, 1.0)
            filled = int(frac * 30)
            eta = elapsed * (1 - frac) / frac if frac > 0 else float("inf")
            eta_text = f"ETA {eta:4.0f}s" if eta != float("inf") else "ETA   ?s"
            bar = f"[{'#' * filled}{'.' * (30 - filled)}] {frac * 100:5.1f}%"
        else:
            bar, eta_text = "", ""
        self._stream.write(f"\r{bar} {_si(rows)} rows {_si(rate)} rows/s {eta_text}  ")
        self._stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self._stream.write("\n")
            self._stream.flush()
