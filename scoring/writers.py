"""Output files written atomically through :meth:`xor_dnn.storage.Store.open_output`.

``commit()`` publishes the file under its final name; ``abort()`` (any error, Ctrl-C,
SIGTERM) leaves nothing there: locally a hidden temporary file beside the target is renamed or
deleted (a SIGKILL can leave the hidden ``.<name>.tmp-<pid>-<random>`` file behind, never a
partial file under the final name); on an object store a multipart upload is completed or
aborted (a SIGKILL leaves an incomplete upload, invisible, that a bucket lifecycle rule expires).

CSV: values that need no quotes are written bare (Arrow's default would quote every text
value); JSONL lines are assembled with Arrow string kernels, not a Python loop per row.
"""

from __future__ import annotations

import csv
import io
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
from xor_dnn.storage import Output, StorageError, Store, discard_local_temp_files

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
    uri: str

    def write(self, batch: pa.RecordBatch) -> None: ...

    def commit(self) -> None: ...

    def abort(self) -> None: ...


def discard_temp_files(final: Path) -> None:
    """Remove every local temporary file this process made for ``final``."""
    discard_local_temp_files(final)


class _AtomicFile:
    def __init__(self, store: Store, key: str) -> None:
        self.uri = store.child(key)
        try:
            self._out: Output = store.open_output(key)
        except (OSError, StorageError) as exc:
            raise OutputError(f"output {self.uri}: cannot write: {exc}") from exc

    def _publish(self) -> None:
        try:
            self._out.commit()
        except (OSError, StorageError) as exc:
            self._out.abort()
            raise OutputError(f"output {self.uri}: cannot publish: {exc}") from exc

    def _unlink(self) -> None:
        self._out.abort()


def _csv_header(names: list[str]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(names)
    return out.getvalue().encode()


class CsvSink(_AtomicFile):
    def __init__(self, store: Store, key: str, schema: pa.Schema) -> None:
        super().__init__(store, key)
        self._text = any(
            pa.types.is_string(f.type) or pa.types.is_large_string(f.type) for f in schema
        )
        self._bare = pcsv.WriteOptions(include_header=False, quoting_style="none")
        self._quoted = pcsv.WriteOptions(include_header=False)
        self._out.file.write(_csv_header(schema.names))

    def write(self, batch: pa.RecordBatch) -> None:
        if not self._text:
            buf = pa.BufferOutputStream()
            pcsv.write_csv(batch, buf, write_options=self._quoted)
            self._out.file.write(buf.getvalue())
            return
        # Try bare values first; Arrow refuses them when one holds a comma, quote or newline.
        buf = pa.BufferOutputStream()
        try:
            pcsv.write_csv(batch, buf, write_options=self._bare)
        except pa.ArrowInvalid:
            buf = pa.BufferOutputStream()
            pcsv.write_csv(batch, buf, write_options=self._quoted)
        self._out.file.write(buf.getvalue())

    def commit(self) -> None:
        self._publish()

    def abort(self) -> None:
        self._unlink()


class ParquetSink(_AtomicFile):
    def __init__(self, store: Store, key: str, schema: pa.Schema) -> None:
        super().__init__(store, key)
        # Dictionary encoding and compression only pay off on repeated values, never on float
        # coordinates and probabilities: snappy left a scored file the same size and made the
        # write slower (docs/scoring.md has the figures), so those columns are stored plain.
        floats = [f.name for f in schema if pa.types.is_floating(f.type)]
        codecs = {f.name: "none" if f.name in floats else "snappy" for f in schema}
        dictionary = [f.name for f in schema if f.name not in floats]
        try:
            self._writer = pq.ParquetWriter(
                self._out.file, schema, compression=codecs, use_dictionary=dictionary
            )
        except OSError as exc:
            self._out.abort()
            raise OutputError(f"output {self.uri}: cannot write: {exc}") from exc
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
        self._publish()

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
    def __init__(self, store: Store, key: str, schema: pa.Schema) -> None:
        super().__init__(store, key)
        self._keys = [orjson.dumps(name).decode() + ":" for name in schema.names]

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
        self._out.file.write(data.slice(start, stop - start))

    def commit(self) -> None:
        self._publish()

    def abort(self) -> None:
        self._unlink()


def open_sink(store: Store, key: str, fmt: Format, schema: pa.Schema) -> Sink:
    """A writer for ``key`` of ``store`` that publishes nothing under that name until
    ``commit()``."""
    if fmt is Format.CSV:
        return CsvSink(store, key, schema)
    if fmt is Format.PARQUET:
        return ParquetSink(store, key, schema)
    return JsonlSink(store, key, schema)
