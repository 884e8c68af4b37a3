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
    """A job of ``files`` units: ``start_file(i)`` when unit i begins, ``update(fraction,
    rows)`` as it goes (``fraction`` of unit i done, ``rows`` scored by the job so far; redrawn
    at most every ``interval`` seconds), ``close()`` to end the line.

    The line shows the bar and percentage over the whole job, files done, rows, rows per
    second (the job's average) and an ETA.
    """

    def __init__(
        self,
        files: int,
        *,
        enabled: bool | None = None,
        stream: TextIO | None = None,
        interval: float = 0.2,
        unit: str = "files",
    ) -> None:
        self._stream = stream or sys.stderr
        self.enabled = self._stream.isatty() if enabled is None else enabled
        self._files = max(files, 1)
        self._unit = unit
        self._current = 0
        self._interval = interval
        self._start = time.monotonic()
        self._last = 0.0
        self._drawn = False
        self._rows = 0

    def start_file(self, index: int) -> None:
        self._current = index
        self.update(0.0, self._rows)

    def update(self, fraction: float, rows: int, *, force: bool = False) -> None:
        self._rows = rows
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < self._interval:
            return
        self._last = now
        elapsed = max(now - self._start, 1e-9)
        rate = rows / elapsed
        frac = min((self._current + min(max(fraction, 0.0), 1.0)) / self._files, 1.0)
        filled = int(frac * 30)
        eta = elapsed * (1 - frac) / frac if frac > 0 else float("inf")
        eta_text = f"ETA {eta:4.0f}s" if eta != float("inf") else "ETA   ?s"
        done = min(self._current, self._files)
        self._stream.write(
            f"\r[{'#' * filled}{'.' * (30 - filled)}] {frac * 100:5.1f}%"
            f" {self._unit} {done}/{self._files} {_si(rows)} rows {_si(rate)} rows/s {eta_text}  "
        )
        self._stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self._stream.write("\n")
            self._stream.flush()
