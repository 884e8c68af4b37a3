"""JSONL shards: types from the first MiB of the file, identically in every shard; a line that
does not fit them is found by bisection and rejected alone."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.json as pjson
from numpy.typing import NDArray

from scoring.errors import InputError
from scoring.readers.base import Batch, Malformed, block_size, empty_batch, open_error
from scoring.readers.rangefile import RangeFile
from scoring.shards import Shard, byte_range
from xor_dnn.storage import RangeReader

_SCHEMA_SAMPLE = 1 << 20


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
        self,
        blob: RangeReader,
        name: str,
        shard: Shard,
        chunk_size: int,
        coordinates: tuple[str, str],
    ) -> None:
        self.name = name
        self._blob = blob
        self._coordinates = coordinates
        self.schema, sample = self._infer_schema(blob, name, coordinates)
        self.start, self.stop = byte_range(blob, 0, shard)
        self.total = self.stop - self.start
        # As for CSV: a later shard numbers lines from its own start; --merge makes them global.
        self.relative_rows = self.start > 0
        self.row_base = 0
        self._lines_before = 0
        self._block = block_size(sample, chunk_size)
        self._file: RangeFile | None = None
        self._parse = pjson.ParseOptions(
            explicit_schema=self.schema, unexpected_field_behavior="ignore"
        )

    @staticmethod
    def _infer_schema(
        blob: RangeReader, name: str, coordinates: tuple[str, str]
    ) -> tuple[pa.Schema, bytes]:
        # Every shard reads the same first MiB, so all agree on the types (the one read
        # before a later shard's range, bounded whatever the file's size).
        try:
            sample = blob.read_range(0, _SCHEMA_SAMPLE)
            more = blob.length > len(sample)
        except OSError as exc:
            raise open_error(name, exc) from exc
        if more:
            sample = sample[: sample.rfind(b"\n") + 1] or sample
        if not sample.strip():
            raise InputError(f"input {name}: empty file (no JSON lines)")
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
                raise InputError(f"input {name}: no valid JSON object in the first lines") from None
            schema = _merge_schemas(schemas)
        fields = []
        for f in schema:
            if f.name in coordinates:
                fields.append(pa.field(f.name, pa.float64()))
            elif pa.types.is_null(f.type):
                fields.append(pa.field(f.name, pa.string()))
            else:
                fields.append(f)
        return pa.schema(fields), sample

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
        self._file = RangeFile(self._blob, self.start, self.stop)
        for block, line0 in self._read_blocks():
            starts, ends, nonblank = _line_bounds(block)
            tables, rows, bad = self._parse_range(
                block, starts, ends, np.flatnonzero(nonblank).astype(np.int64)
            )
            # Positions in the block -> file line numbers (1-based).
            malformed = [Malformed(line0 + pos + 1, m.reason, m.text, m.column) for pos, m in bad]
            if tables:
                data = pa.concat_tables(tables).combine_chunks()
                batch = data.to_batches()[0] if data.num_rows else empty_batch(self.schema)
                lines = np.concatenate(rows) + line0 + 1
            else:
                batch, lines = empty_batch(self.schema), np.zeros(0, dtype=np.int64)

            def numbers(
                idx: NDArray[np.int64], lines: NDArray[np.int64] = lines
            ) -> NDArray[np.int64]:
                return lines[np.asarray(idx, dtype=np.int64)]

            yield Batch(batch, numbers, malformed, self._file.consumed)

    def lines(self) -> int:
        return self._file.lines if self._file is not None else 0

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
