"""What every reader yields (:class:`Batch`, :class:`Malformed`) and the :class:`Source` it
is, with the helpers the text readers share."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from scoring.errors import InputError


@dataclass(frozen=True)
class Malformed:
    """A row that could not be split into the file's columns (wrong field count, bad JSON)."""

    row: int
    reason: str
    text: str
    column: str | None = None


@dataclass
class Batch:
    """Rows read from the input, with their row numbers available on demand."""

    data: pa.RecordBatch
    row_numbers: Callable[[NDArray[np.int64]], NDArray[np.int64]]
    """Row numbers of the rows at the given positions in ``data``."""
    malformed: list[Malformed] = field(default_factory=list)
    """Unreadable rows found up to this batch's end, in row order."""
    done: int = 0
    """Progress units (bytes or rows) consumed once this batch is read."""


class Source(Protocol):
    name: str
    """The input's path or URI, for messages."""
    schema: pa.Schema
    total: int
    """Progress units in this shard: bytes for text files, rows for Parquet."""
    unit: str

    row_base: int
    """The line number before the shard's first line that its row numbers count from: the
    header's for the first text shard, 0 for a later one (numbered from its own start, and
    made global by ``--merge``), 0 for Parquet (row indexes are global)."""
    relative_rows: bool
    """True when row numbers count from the shard's start rather than the file's."""

    def lines(self) -> int:
        """Lines in the shard's byte range once read (0 for Parquet)."""
        ...

    def batches(self) -> Iterator[Batch]: ...

    def close(self) -> None: ...


def open_error(name: str, exc: Exception) -> InputError:
    return InputError(f"input {name}: cannot read: {exc}")


def block_size(sample: bytes, chunk_size: int) -> int:
    """Bytes per read block so a block holds about ``chunk_size`` rows, from a sample of the
    file's lines (the bytes read for its header or types: no read of its own)."""
    per_line = max(len(sample) / max(sample.count(b"\n"), 1), 1.0)
    guess = int(per_line * chunk_size * 1.05)
    return max(1 << 16, min(guess, 1 << 28))


def empty_batch(schema: pa.Schema) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([], schema=schema)


def no_rows(idx: NDArray[np.int64]) -> NDArray[np.int64]:
    return np.zeros(len(idx), dtype=np.int64)
