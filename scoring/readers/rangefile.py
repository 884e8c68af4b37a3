"""A byte range of a file as a raw stream, paced by its consumer: what Arrow's streaming readers
read a text shard through."""

from __future__ import annotations

import io
import threading
from typing import Any

from xor_dnn.storage import RangeReader

_STALL = 0.02


class RangeFile(io.RawIOBase):
    """A read-only view of bytes ``[start, stop)`` of a file, counting what was read and the
    newlines in it (a shard's line count, which ``--merge`` uses to number rejects globally).

    With ``ahead`` set, reads are paced by the consumer: Arrow's streaming CSV reader reads
    blocks on a background thread up to 32 ahead of the batches taken, so a big file's peak
    memory grew above a small one's (docs/scoring.md has the figures). A read waits
    while ``ahead`` blocks are already read and not yet taken as batches. It is never held
    for good: once the consumer has waited ``_STALL`` seconds for a batch (a line longer than
    a block needs more blocks), the read goes ahead.
    """

    def __init__(self, blob: RangeReader, start: int, stop: int, ahead: int | None = None) -> None:
        super().__init__()
        self._blob = blob
        self._pos = start
        self._stop = stop
        self.consumed = 0
        self.newlines = 0
        self.last_byte = b""
        self._ahead = ahead
        self._pace = threading.Condition()
        self._reads = self._taken = 0
        self._wanted = self._closing = False

    def readable(self) -> bool:
        return True

    def stop_pacing(self) -> None:
        """Let every read through from now on (the consumer is done or gone)."""
        with self._pace:
            self._ahead = None
            self._pace.notify_all()

    def want(self, wanted: bool) -> None:
        """The consumer starts (True) or stops (False) waiting for the next batch."""
        with self._pace:
            self._wanted = wanted
            if not wanted:
                self._taken += 1
            self._pace.notify_all()

    def readinto(self, buffer: Any) -> int:
        if self._ahead is not None:
            with self._pace:
                while (
                    self._ahead is not None
                    and not self._closing
                    and self._reads - self._taken >= self._ahead
                ):
                    timed_out = not self._pace.wait(_STALL if self._wanted else None)
                    if timed_out and self._wanted:
                        break
                if self._closing:
                    return 0
                self._reads += 1
        view = memoryview(buffer).cast("B")
        want = min(len(view), self._stop - self._pos)
        if want <= 0:
            return 0
        data = self._blob.read_range(self._pos, self._pos + want)
        view[: len(data)] = data
        self._pos += len(data)
        self.consumed += len(data)
        self.newlines += data.count(b"\n")
        if data:
            self.last_byte = data[-1:]
        return len(data)

    def read(self, size: int = -1) -> bytes:
        buffer = bytearray(max(size, 0) if size >= 0 else self._stop - self._pos)
        n = self.readinto(buffer)
        return bytes(buffer[:n])

    @property
    def lines(self) -> int:
        """Lines read so far: newlines, plus an unterminated last line."""
        tail = 1 if self.last_byte not in (b"", b"\n") and self._pos >= self._stop else 0
        return self.newlines + tail

    def close(self) -> None:
        with self._pace:
            self._closing = True
            self._pace.notify_all()
        super().close()
