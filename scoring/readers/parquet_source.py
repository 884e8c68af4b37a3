"""Parquet shards: an equal row-index range (or a run of whole row groups), read through the
row groups it overlaps; only the footer and those row groups' column chunks are fetched."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from numpy.typing import NDArray

from scoring.readers.base import Batch, open_error
from scoring.shards import Shard, row_range
from xor_dnn.storage import RangeReader


class ParquetSource:
    """A Parquet shard: an equal row-index range, read through the row groups it overlaps."""

    unit = "rows"
    relative_rows = False
    row_base = 0

    def __init__(
        self,
        blob: RangeReader,
        name: str,
        shard: Shard,
        chunk_size: int,
        row_groups: tuple[int, int] | None = None,
    ) -> None:
        self.name = name
        try:
            # pre_buffer off: with it, Arrow reads ahead on its own IO threads, which call back
            # into this Python file object; a job stopped mid-file (Ctrl-C, SIGTERM) then exits
            # while they still run, and the interpreter's shutdown crashed (PyGILState_Release)
            # or hung. Reads happen on the reader thread instead, one row group at a time.
            self._file = pq.ParquetFile(blob, pre_buffer=False)
        except (pa.ArrowInvalid, OSError) as exc:
            raise open_error(name, exc) from exc
        self.schema = self._file.schema_arrow
        meta = self._file.metadata
        if row_groups is None:
            self.start, self.stop = row_range(meta.num_rows, shard)
        else:  # row groups [a, b) of the file: a dataset piece
            a, b = row_groups
            self.start = sum(meta.row_group(g).num_rows for g in range(a))
            self.stop = self.start + sum(meta.row_group(g).num_rows for g in range(a, b))
        self.total = self.stop - self.start
        self._chunk_size = chunk_size
        self._groups: list[int] = []
        self._first_row = 0
        offset = 0
        for g in range(meta.num_row_groups):
            n = meta.row_group(g).num_rows
            if offset < self.stop and offset + n > self.start:
                if not self._groups:
                    self._first_row = offset
                self._groups.append(g)
            offset += n

    def _record_batches(self) -> Iterator[pa.RecordBatch]:
        # One row group at a time: asked for several, Arrow pre-buffers all of them before the
        # first batch, so memory grew with the file (docs/scoring.md has the figures).
        for g in self._groups:
            yield from self._file.iter_batches(
                batch_size=self._chunk_size, row_groups=[g], use_threads=False
            )

    def batches(self) -> Iterator[Batch]:
        if self.total == 0:
            return
        pos = self._first_row
        done = 0
        try:
            for data in self._record_batches():
                lo = max(self.start - pos, 0)
                hi = min(self.stop - pos, data.num_rows)
                first = pos + lo
                pos += data.num_rows
                if hi <= lo:
                    if pos >= self.stop:
                        break
                    continue
                part = data.slice(lo, hi - lo)
                done += part.num_rows

                def numbers(idx: NDArray[np.int64], first: int = first) -> NDArray[np.int64]:
                    return np.asarray(idx, dtype=np.int64) + first + 1

                yield Batch(part, numbers, [], done)
                if pos >= self.stop:
                    break
        except (pa.ArrowInvalid, OSError) as exc:
            raise open_error(self.name, exc) from exc

    def lines(self) -> int:
        return 0

    def close(self) -> None:
        self._file.close()
