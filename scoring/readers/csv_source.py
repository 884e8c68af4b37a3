"""CSV shards: the header parsed here, rows by Arrow's streaming reader, all as text (a CSV
carries no types, and guessing them from the first rows fails later rows and lets shards
disagree); x and y are parsed by :mod:`scoring.validate`."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
from numpy.typing import NDArray

from scoring.errors import InputError
from scoring.readers.base import Batch, Malformed, block_size, empty_batch, no_rows, open_error
from scoring.readers.rangefile import RangeFile
from scoring.shards import Shard, byte_range
from xor_dnn.storage import RangeReader

_CSV_BLOCKS_AHEAD = 2
_HEADER_READ = 1 << 14
"""The first read for the header: small files are read whole by it (and not again)."""


def _first_line(blob: RangeReader) -> tuple[bytes, bytes]:
    """The header line, newline included (the whole file when it has no newline), and the
    bytes read after it (a sample of the lines, for the block size)."""
    at = 0
    head = b""
    while True:
        block = blob.read_range(at, at + _HEADER_READ)
        head += block
        nl = head.find(b"\n")
        if nl >= 0:
            return head[: nl + 1], head[nl + 1 :]
        if len(block) < _HEADER_READ:
            return head, b""
        at += len(block)


def _csv_numbers(
    first_line: int, base: int, keys: NDArray[np.int64]
) -> Callable[[NDArray[np.int64]], NDArray[np.int64]]:
    """Row numbers for rows ``base + idx`` of a CSV stream whose first line is ``first_line``.

    Skipped (malformed) lines shift the rows after them: the j-th skipped line displaces
    every row whose ordinal is >= ``keys[j]``, the count of rows read before it.
    """

    def numbers(idx: NDArray[np.int64]) -> NDArray[np.int64]:
        o = np.asarray(idx, dtype=np.int64) + base
        shift = np.searchsorted(keys, o, side="right")
        return np.asarray(first_line + o + shift, dtype=np.int64)

    return numbers


class CsvSource:
    """A CSV shard: header parsed here, rows by Arrow's streaming reader, all as text."""

    unit = "bytes"

    def __init__(self, blob: RangeReader, name: str, shard: Shard, chunk_size: int) -> None:
        self.name = name
        self._blob = blob
        try:
            first, self._sample = _first_line(blob)
        except OSError as exc:
            raise open_error(name, exc) from exc
        if not first.strip():
            raise InputError(f"input {name}: empty file or blank first line (no CSV header)")
        data_start = len(first)
        try:
            header = first.decode("utf-8-sig").rstrip("\r\n")
        except UnicodeDecodeError:
            raise InputError(f"input {name}: the CSV header is not UTF-8") from None
        names = next(csv.reader([header]))
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise InputError(f"input {name}: duplicate column names in the header: {dupes}")
        self.names = names
        self.schema = pa.schema([(n, pa.string()) for n in names])
        self.start, self.stop = byte_range(blob, data_start, shard)
        self.total = self.stop - self.start
        # The first shard numbers from the header; a later one from its own start (never
        # reading the bytes before it), made global by --merge from the earlier shards' lines.
        self.relative_rows = self.start > data_start
        self.row_base = 0 if self.relative_rows else 1
        self._lines_before = self.row_base
        self._chunk_size = chunk_size
        self._file: RangeFile | None = None
        self._bad: list[Malformed] = []
        # Non-decreasing: for the j-th skipped line s_j, the data rows read before it.
        self._skip_keys: list[int] = []

    def _on_invalid(self, row: Any) -> str:
        line = row.number if row.number is not None else -1
        self._skip_keys.append(line - 1 - len(self._skip_keys))
        self._bad.append(
            Malformed(
                self._lines_before + line,
                f"expected {row.expected_columns} fields, got {row.actual_columns}",
                row.text,
            )
        )
        return "skip"

    def batches(self) -> Iterator[Batch]:
        if self.total == 0:
            return
        self._file = RangeFile(self._blob, self.start, self.stop, ahead=_CSV_BLOCKS_AHEAD)
        try:
            self._file.want(True)
            try:
                reader = pcsv.open_csv(
                    self._file,
                    read_options=pcsv.ReadOptions(
                        column_names=self.names,
                        block_size=block_size(self._sample, self._chunk_size),
                        # One thread keeps the invalid-row callback's line numbers exact.
                        use_threads=False,
                    ),
                    parse_options=pcsv.ParseOptions(
                        invalid_row_handler=self._on_invalid, ignore_empty_lines=False
                    ),
                    convert_options=pcsv.ConvertOptions(
                        column_types=dict.fromkeys(self.names, pa.string()),
                        strings_can_be_null=False,
                    ),
                )
            except (pa.ArrowInvalid, OSError) as exc:
                raise open_error(self.name, exc) from exc
            ordinal = 0
            while True:
                self._file.want(True)
                try:
                    data = reader.read_next_batch()
                except StopIteration:
                    break
                except (pa.ArrowInvalid, OSError) as exc:
                    raise open_error(self.name, exc) from exc
                finally:
                    self._file.want(False)
                numbers = _csv_numbers(
                    self._lines_before + 1, ordinal, np.asarray(self._skip_keys, dtype=np.int64)
                )

                ordinal += data.num_rows
                last = int(numbers(np.array([data.num_rows - 1]))[0]) if data.num_rows else 0
                flush = [m for m in self._bad if m.row <= last] if data.num_rows else []
                self._bad = self._bad[len(flush) :]
                yield Batch(data, numbers, flush, self._file.consumed)
            if self._bad:
                yield Batch(empty_batch(self.schema), no_rows, self._bad, self.total)
                self._bad = []
        finally:
            # Dropping Arrow's reader waits for its background read: never leave one held back.
            self._file.stop_pacing()

    def lines(self) -> int:
        return self._file.lines if self._file is not None else 0

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
