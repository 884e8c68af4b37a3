"""Output files written atomically: a hidden temporary file beside the target, renamed on commit.

``commit()`` renames the temporary file to its final name; ``abort()`` (any error, Ctrl-C,
SIGTERM) deletes it; so the final name only ever holds a complete file. A SIGKILL can leave the
hidden ``.<name>.tmp-<pid>-<random>`` file behind, never a partial file under the final name.

CSV: values that need no quotes are written bare (Arrow's default would quote every text
value); JSONL lines are assembled with Arrow string kernels, not a Python loop per row.
"""

from __future__ import annotations

import csv
import io
import os
import secrets
from pathlib import Path
from typing import Protocol

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from scoring.errors import OutputError
from scoring.formats import Format

REJECT_SCHEMA = pa.schema(
    [
        pa.field("row", pa.int64()),
        pa.field("column", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("value", pa.string()),
    ]
)
"""Rejects: the row number (see scoring.readers), the column at fault (null: the whole row),
a reason, and the offending value or line as written."""

_PARQUET_ROW_GROUP = 1 << 16
"""Rows gathered before a row group is written: the default chunk, so each chunk is encoded as
it arrives (overlapping the model) instead of piling up for one long serial write at commit."""


class Sink(Protocol):
    path: Path

    def write(self, batch: pa.RecordBatch) -> None: ...

    def commit(self) -> None: ...

    def abort(self) -> None: ...


def temp_path(final: Path) -> Path:
    """A hidden name beside ``final`` (same folder, so the rename is atomic); globs skip it."""
    return final.with_name(f".{final.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


def discard_temp_files(final: Path) -> None:
    """Remove every temporary file this process made for ``final``.

    A sink removes its own on abort; this also catches one whose sink was never returned
    (Ctrl-C or SIGTERM landing while it was being opened)."""
    for tmp in final.parent.glob(f".{final.name}.tmp-{os.getpid()}-*"):
        tmp.unlink(missing_ok=True)


class _AtomicFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"output {path}: cannot create its folder: {exc}") from exc
        self.tmp = temp_path(path)
        self._committed = False

    def _rename(self) -> None:
        try:
            os.replace(self.tmp, self.path)
        except OSError as exc:
            self._unlink()
            raise OutputError(f"output {self.path}: cannot rename into place: {exc}") from exc
        self._committed = True

    def _unlink(self) -> None:
        self.tmp.unlink(missing_ok=True)
        # Aborted after its own commit (the job failed renaming its other output): outputs
        # appear together or not at all.
        if self._committed:
            self.path.unlink(missing_ok=True)


def _csv_header(names: list[str]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(names)
    return out.getvalue().encode()


class CsvSink(_AtomicFile):
    def __init__(self, path: Path, schema: pa.Schema) -> None:
        super().__init__(path)
        self._text = any(
            pa.types.is_string(f.type) or pa.types.is_large_string(f.type) for f in schema
        )
        self._bare = pcsv.WriteOptions(include_header=False, quoting_style="none")
        self._quoted = pcsv.WriteOptions(include_header=False)
        try:
            self._file = pa.OSFile(str(self.tmp), "wb")
            self._file.write(_csv_header(schema.names))
        except OSError as exc:
            raise OutputError(f"output {path}: cannot write: {exc}") from exc

    def write(self, batch: pa.RecordBatch) -> None:
        if not self._text:
            pcsv.write_csv(batch, self._file, write_options=self._quoted)
            return
        # Try bare values first; Arrow refuses them when one holds a comma, quote or newline.
        buf = pa.BufferOutputStream()
        try:
            pcsv.write_csv(batch, buf, write_options=self._bare)
        except pa.ArrowInvalid:
            buf = pa.BufferOutputStream()
            pcsv.write_csv(batch, buf, write_options=self._quoted)
        self._file.write(buf.getvalue())

    def commit(self) -> None:
        self._file.close()
        self._rename()

    def abort(self) -> None:
        self._file.close()
        self._unlink()


class ParquetSink(_AtomicFile):
    def __init__(self, path: Path, schema: pa.Schema) -> None:
        super().__init__(path)
        # Dictionary encoding and compression only pay off on repeated values, never on float
        # coordinates and probabilities: snappy left a scored file the same size and made the
        # write slower (docs/scoring.md has the figures), so those columns are stored plain.
        floats = [f.name for f in schema if pa.types.is_floating(f.type)]
        codecs = {f.name: "none" if f.name in floats else "snappy" for f in schema}
        dictionary = [f.name for f in schema if f.name not in floats]
        try:
            self._writer = pq.ParquetWriter(
                str(self.tmp), schema, compression=codecs, use_dictionary=dictionary
            )
        except OSError as exc:
            raise OutputError(f"output {path}: cannot write: {exc}") from exc
        self._pending: list[pa.RecordBatch] = []
        self._rows = 0

    def _flush(self) -> None:
        if self._pending:
            self._writer.write_table(pa.Table.from_batches(self._pending))
            self._pending, self._rows = [], 0

    def write(self, batch: pa.RecordBatch) -> None:
        # Each write is a row group: gather small batches so row groups are not tiny.
        self._pending.append(batch)
        self._rows += batch.num_rows
        if self._rows >= _PARQUET_ROW_GROUP:
            self._flush()

    def commit(self) -> None:
        self._flush()
        self._writer.close()
        self._rename()

    def abort(self) -> None:
        self._pending = []
        try:
            self._writer.close()
        finally:
            self._unlink()


def _json_strings(arr: pa.Array) -> pa.Array:
    """JSON string literals for a text column; orjson per value only when escapes are needed."""
    if pc.any(pc.match_substring_regex(arr, r"[\x00-\x1f\\\"]")).as_py():
        return pa.array(
            [None if v is None else orjson.dumps(v).decode() for v in arr.to_pylist()],
            pa.string(),
        )
    return pc.binary_join_element_wise('"', arr, '"', "")


def _json_fragments(arr: pa.Array) -> pa.Array:
    """Each value of ``arr`` as JSON text; null, nan and inf become ``null``."""
    t = arr.type
    if pa.types.is_floating(t):
        text = pc.if_else(
            pc.is_finite(arr), pc.cast(arr, pa.string()), pa.scalar(None, pa.string())
        )
    elif pa.types.is_integer(t):
        text = pc.cast(arr, pa.string())
    elif pa.types.is_boolean(t):
        text = pc.if_else(arr, "true", "false")
    elif pa.types.is_string(t) or pa.types.is_large_string(t):
        text = _json_strings(pc.cast(arr, pa.string()))
    else:  # nested, temporal, decimal...: rare in point files, so one value at a time
        text = pa.array(
            [orjson.dumps(v, default=str).decode() for v in arr.to_pylist()], pa.string()
        )
    return pc.fill_null(text, "null")


class JsonlSink(_AtomicFile):
    def __init__(self, path: Path, schema: pa.Schema) -> None:
        super().__init__(path)
        self._keys = [orjson.dumps(name).decode() + ":" for name in schema.names]
        try:
            self._file = pa.OSFile(str(self.tmp), "wb")
        except OSError as exc:
            raise OutputError(f"output {path}: cannot write: {exc}") from exc

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        parts: list[pa.Array | str] = []
        for i, (key, column) in enumerate(zip(self._keys, batch.columns, strict=True)):
            parts.append(("{" if i == 0 else ",") + key)
            parts.append(_json_fragments(column))
        parts.append("}\n")
        lines = pc.binary_join_element_wise(*parts, "")
        # No nulls (every fragment was filled), so the value buffer is exactly the lines.
        _, offsets_buf, data = lines.buffers()
        offsets = np.frombuffer(offsets_buf, dtype=np.int32)
        start, stop = int(offsets[lines.offset]), int(offsets[lines.offset + len(lines)])
        self._file.write(data.slice(start, stop - start))

    def commit(self) -> None:
        self._file.close()
        self._rename()

    def abort(self) -> None:
        self._file.close()
        self._unlink()


def open_sink(path: Path, fmt: Format, schema: pa.Schema) -> Sink:
    """A writer for ``path`` that publishes nothing under that name until ``commit()``."""
    if fmt is Format.CSV:
        return CsvSink(path, schema)
    if fmt is Format.PARQUET:
        return ParquetSink(path, schema)
    return JsonlSink(path, schema)
