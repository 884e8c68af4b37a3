"""Streaming readers: one shard of a CSV, Parquet or JSONL file as Arrow record batches.

Every reader yields :class:`Batch` objects of about ``chunk_size`` rows and never holds more
than a couple of them, so memory does not grow with the file. Each batch can map its rows back
to their *row number* as a person would find them: for CSV and JSONL the 1-based line number
in the file (a CSV header is line 1, so the first data row is row 2, as in a spreadsheet); for
Parquet the 1-based row index.

CSV columns are read as text (a CSV carries no types, and guessing them from the first rows
fails later rows and lets shards disagree); x and y are parsed by :mod:`scoring.validate`.
JSONL types come from the first MiB of the file, identically in every shard; a line that does
not fit them is found by bisection and rejected alone.
"""

from __future__ import annotations

import csv
import io
import json
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.json as pjson
import pyarrow.parquet as pq
from numpy.typing import NDArray

from scoring.errors import InputError
from scoring.formats import Format
from scoring.shards import Shard, byte_range, count_newlines, row_range

_SAMPLE = 1 << 16
_CSV_BLOCKS_AHEAD = 2
_STALL = 0.02
_SCHEMA_SAMPLE = 1 << 20


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
    path: Path
    schema: pa.Schema
    total: int
    """Progress units in this shard: bytes for text files, rows for Parquet."""
    unit: str

    def batches(self) -> Iterator[Batch]: ...

    def close(self) -> None: ...


class _RangeFile(io.RawIOBase):
    """A read-only view of bytes ``[start, stop)`` of a file, counting what was read.

    With ``ahead`` set, reads are paced by the consumer: Arrow's streaming CSV reader reads
    blocks on a background thread up to 32 ahead of the batches taken (about 85 MB at 65,536
    rows a block), so a big file's peak memory was 60 MB above a small one's. A read waits
    while ``ahead`` blocks are already read and not yet taken as batches. It is never held
    for good: once the consumer has waited ``_STALL`` seconds for a batch (a line longer than
    a block needs more blocks), the read goes ahead.
    """

    def __init__(self, path: Path, start: int, stop: int, ahead: int | None = None) -> None:
        super().__init__()
        self._fd = os.open(path, os.O_RDONLY)
        self._pos = start
        self._stop = stop
        self.consumed = 0
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
        data = os.pread(self._fd, want, self._pos)
        view[: len(data)] = data
        self._pos += len(data)
        self.consumed += len(data)
        return len(data)

    def close(self) -> None:
        with self._pace:
            self._closing = True
            self._pace.notify_all()
        if not self.closed:
            os.close(self._fd)
        super().close()


def _open_error(path: Path, exc: Exception) -> InputError:
    return InputError(f"input {path}: cannot read: {exc}")


def _bytes_per_line(path: Path, start: int, stop: int) -> float:
    with open(path, "rb") as fh:
        fh.seek(start)
        sample = fh.read(min(_SAMPLE, stop - start))
    return max(len(sample) / max(sample.count(b"\n"), 1), 1.0)


def _block_size(path: Path, start: int, stop: int, chunk_size: int) -> int:
    """Bytes per read block so a block holds about ``chunk_size`` rows."""
    guess = int(_bytes_per_line(path, start, stop) * chunk_size * 1.05)
    return max(1 << 16, min(guess, 1 << 28))


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

    def __init__(self, path: Path, shard: Shard, chunk_size: int) -> None:
        self.path = path
        try:
            with open(path, "rb") as fh:
                first = fh.readline()
        except OSError as exc:
            raise _open_error(path, exc) from exc
        if not first.strip():
            raise InputError(f"input {path}: empty file or blank first line (no CSV header)")
        data_start = len(first)
        try:
            header = first.decode("utf-8-sig").rstrip("\r\n")
        except UnicodeDecodeError:
            raise InputError(f"input {path}: the CSV header is not UTF-8") from None
        names = next(csv.reader([header]))
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise InputError(f"input {path}: duplicate column names in the header: {dupes}")
        self.names = names
        self.schema = pa.schema([(n, pa.string()) for n in names])
        self.start, self.stop = byte_range(str(path), data_start, shard)
        self.total = self.stop - self.start
        self._lines_before = count_newlines(str(path), self.start)
        self._chunk_size = chunk_size
        self._file: _RangeFile | None = None
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
        self._file = _RangeFile(self.path, self.start, self.stop, ahead=_CSV_BLOCKS_AHEAD)
        try:
            self._file.want(True)
            try:
                reader = pcsv.open_csv(
                    self._file,
                    read_options=pcsv.ReadOptions(
                        column_names=self.names,
                        block_size=_block_size(self.path, self.start, self.stop, self._chunk_size),
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
                raise _open_error(self.path, exc) from exc
            ordinal = 0
            while True:
                self._file.want(True)
                try:
                    data = reader.read_next_batch()
                except StopIteration:
                    break
                except (pa.ArrowInvalid, OSError) as exc:
                    raise _open_error(self.path, exc) from exc
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
                yield Batch(_empty(self.schema), _no_rows, self._bad, self.total)
                self._bad = []
        finally:
            # Dropping Arrow's reader waits for its background read: never leave one held back.
            self._file.stop_pacing()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _empty(schema: pa.Schema) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([], schema=schema)


def _no_rows(idx: NDArray[np.int64]) -> NDArray[np.int64]:
    return np.zeros(len(idx), dtype=np.int64)


class ParquetSource:
    """A Parquet shard: an equal row-index range, read through the row groups it overlaps."""

    unit = "rows"

    def __init__(self, path: Path, shard: Shard, chunk_size: int) -> None:
        self.path = path
        try:
            self._file = pq.ParquetFile(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise _open_error(path, exc) from exc
        self.schema = self._file.schema_arrow
        meta = self._file.metadata
        self.start, self.stop = row_range(meta.num_rows, shard)
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
        # first batch, so memory grew with the file (84 MB of buffers for 5M rows, 21 MB for 1M).
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
            raise _open_error(self.path, exc) from exc

    def close(self) -> None:
        self._file.close()


def _line_bounds(block: bytes) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.bool_]]:
    """Start and end (newline excluded) of every line of ``block``, and which are not blank."""
    arr = np.frombuffer(block, dtype=np.uint8)
    ends = np.flatnonzero(arr == 10).astype(np.int64)
    if len(block) and block[-1:] != b"\n":
        ends = np.append(ends, len(block))
    starts = np.concatenate([[0], ends[:-1] + 1]).astype(np.int64) if len(ends) else ends
    solid = ~np.isin(arr, np.array([9, 10, 13, 32], dtype=np.uint8))
    filled = np.concatenate([[0], np.cumsum(solid, dtype=np.int64)])
    nonblank = filled[ends] - filled[starts] > 0
    return starts, ends, nonblank


def _classify_json_line(text: bytes, columns: tuple[str, str], error: str) -> Malformed:
    try:
        obj = json.loads(text)
    except ValueError:
        return Malformed(0, "invalid JSON", text.decode("utf-8", "replace"))
    shown = text.decode("utf-8", "replace")
    if not isinstance(obj, dict):
        return Malformed(0, "not a JSON object", shown)
    for col in columns:
        value = obj.get(col)
        if isinstance(value, bool) or (value is not None and not isinstance(value, int | float)):
            return Malformed(0, "not a number", json.dumps(value), col)
        if isinstance(value, float) and not np.isfinite(value):
            return Malformed(0, "not finite", str(value), col)
    return Malformed(0, f"does not fit the columns' types: {error}", shown)


def _merge_schemas(schemas: list[pa.Schema]) -> pa.Schema:
    """Field by field, in order of first appearance; a type clash keeps the first type seen
    (lines that disagree with it are rejected later, one by one)."""
    fields: dict[str, pa.Field] = {}
    for schema in schemas:
        for f in schema:
            old = fields.get(f.name)
            if old is None:
                fields[f.name] = f
                continue
            try:
                merged = pa.unify_schemas(
                    [pa.schema([old]), pa.schema([f])], promote_options="permissive"
                )
                fields[f.name] = merged.field(0)
            except (pa.ArrowTypeError, pa.ArrowInvalid):
                pass
    return pa.schema(list(fields.values()))


class JsonlSource:
    """A JSONL shard: one JSON object per line, blocks parsed by Arrow against a fixed schema."""

    unit = "bytes"

    def __init__(
        self, path: Path, shard: Shard, chunk_size: int, coordinates: tuple[str, str]
    ) -> None:
        self.path = path
        self._coordinates = coordinates
        self.schema = self._infer_schema(path, coordinates)
        self.start, self.stop = byte_range(str(path), 0, shard)
        self.total = self.stop - self.start
        self._lines_before = count_newlines(str(path), self.start)
        self._block = _block_size(path, self.start, self.stop, chunk_size)
        self._file: _RangeFile | None = None
        self._parse = pjson.ParseOptions(
            explicit_schema=self.schema, unexpected_field_behavior="ignore"
        )

    @staticmethod
    def _infer_schema(path: Path, coordinates: tuple[str, str]) -> pa.Schema:
        try:
            with open(path, "rb") as fh:
                sample = fh.read(_SCHEMA_SAMPLE)
                more = fh.read(1)
        except OSError as exc:
            raise _open_error(path, exc) from exc
        if more:
            sample = sample[: sample.rfind(b"\n") + 1] or sample
        if not sample.strip():
            raise InputError(f"input {path}: empty file (no JSON lines)")
        opts = pjson.ReadOptions(use_threads=False, block_size=len(sample) + 1)
        try:
            schema = pjson.read_json(pa.BufferReader(sample), read_options=opts).schema
        except pa.ArrowInvalid:
            # Bad lines among the first ones: take the types the good lines agree on.
            schemas = []
            for line in sample.splitlines()[:2000]:
                if line.strip():
                    try:
                        schemas.append(
                            pjson.read_json(pa.BufferReader(line), read_options=opts).schema
                        )
                    except pa.ArrowInvalid:
                        continue
            if not schemas:
                raise InputError(f"input {path}: no valid JSON object in the first lines") from None
            schema = _merge_schemas(schemas)
        fields = []
        for f in schema:
            if f.name in coordinates:
                fields.append(pa.field(f.name, pa.float64()))
            elif pa.types.is_null(f.type):
                fields.append(pa.field(f.name, pa.string()))
            else:
                fields.append(f)
        return pa.schema(fields)

    def _read_blocks(self) -> Iterator[tuple[bytes, int]]:
        """Blocks of whole lines and the file line number before each."""
        assert self._file is not None
        line = self._lines_before
        carry = b""
        while True:
            chunk = self._file.read(self._block)
            if not chunk:
                if carry:
                    yield carry, line
                return
            data = carry + chunk
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                carry = data
                continue
            block, carry = data[:cut], data[cut:]
            yield block, line
            line += block.count(b"\n")

    def _parse_range(
        self,
        block: bytes,
        starts: NDArray[np.int64],
        ends: NDArray[np.int64],
        rows: NDArray[np.int64],
    ) -> tuple[list[pa.Table], list[NDArray[np.int64]], list[tuple[int, Malformed]]]:
        """Parse the non-blank lines ``rows`` (positions into starts/ends); bisect on failure."""
        if len(rows) == 0:
            return [], [], []
        lo, hi = int(starts[rows[0]]), int(ends[rows[-1]])
        piece = block[lo:hi]
        error = ""
        try:
            table = pjson.read_json(
                pa.BufferReader(piece),
                read_options=pjson.ReadOptions(use_threads=False, block_size=len(piece) + 1),
                parse_options=self._parse,
            )
            if table.num_rows == len(rows):
                return [table], [rows], []
            error = f"{table.num_rows} objects on {len(rows)} lines"
        except pa.ArrowInvalid as exc:
            error = str(exc)
        if len(rows) == 1:
            bad = _classify_json_line(piece, self._coordinates, error)
            return [], [], [(int(rows[0]), bad)]
        mid = len(rows) // 2
        t1, r1, m1 = self._parse_range(block, starts, ends, rows[:mid])
        t2, r2, m2 = self._parse_range(block, starts, ends, rows[mid:])
        return t1 + t2, r1 + r2, m1 + m2

    def batches(self) -> Iterator[Batch]:
        if self.total == 0:
            return
        self._file = _RangeFile(self.path, self.start, self.stop)
        for block, line0 in self._read_blocks():
            starts, ends, nonblank = _line_bounds(block)
            tables, rows, bad = self._parse_range(
                block, starts, ends, np.flatnonzero(nonblank).astype(np.int64)
            )
            # Positions in the block -> file line numbers (1-based).
            malformed = [Malformed(line0 + pos + 1, m.reason, m.text, m.column) for pos, m in bad]
            if tables:
                data = pa.concat_tables(tables).combine_chunks()
                batch = data.to_batches()[0] if data.num_rows else _empty(self.schema)
                lines = np.concatenate(rows) + line0 + 1
            else:
                batch, lines = _empty(self.schema), np.zeros(0, dtype=np.int64)

            def numbers(
                idx: NDArray[np.int64], lines: NDArray[np.int64] = lines
            ) -> NDArray[np.int64]:
                return lines[np.asarray(idx, dtype=np.int64)]

            yield Batch(batch, numbers, malformed, self._file.consumed)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def open_source(
    path: Path, fmt: Format, shard: Shard, chunk_size: int, coordinates: tuple[str, str]
) -> Source:
    """Open the shard ``shard`` of ``path``; raises InputError naming the file when unreadable."""
    if not path.is_file():
        raise InputError(f"input {path}: no such file")
    if fmt is Format.CSV:
        return CsvSource(path, shard, chunk_size)
    if fmt is Format.PARQUET:
        return ParquetSource(path, shard, chunk_size)
    return JsonlSource(path, shard, chunk_size, coordinates)
