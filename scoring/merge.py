"""``--merge``: join the parts of a sharded run into the single file a one-shard run would write.

Parts are checked first (all N present with their completion markers, one shard count,
identical columns), then streamed in shard order into one output that is published only
when complete (:meth:`xor_dnn.storage.Store.open_output`), so a merge is as atomic as a run,
locally or on an object store. CSV and JSONL parts are joined byte for byte (a CSV part's
header once); Parquet parts row group by row group.

Rejects parts are where the merge does more than join: a text shard after the first numbers
its reject rows from its own start (it never reads the bytes before its range), and its marker
records how many lines its range held; the merge adds the lines of the earlier shards, so the
merged rejects carry the file's own line numbers, the same as an unsharded run's.
"""

from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from scoring.errors import InputError, OutputError
from scoring.formats import Format, find_parts
from scoring.manifest import read_marker
from scoring.writers import REJECT_SCHEMA, open_sink
from xor_dnn.storage import Output, StorageError, Store, open_store, split_uri

_COPY = 8 << 20


def _blocks(store: Store, key: str) -> Any:
    blob = store.open_input(key)
    at = 0
    while at < blob.length:
        block = blob.read_range(at, at + _COPY)
        if not block:
            return
        at += len(block)
        yield block


def _merge_text(store: Store, parts: list[str], out: Output, header: bool) -> int:
    lines = 0
    first_line: bytes | None = None
    for part in parts:
        last = b"\n"
        skip_header = header
        for block in _blocks(store, part):
            if skip_header:
                nl = block.find(b"\n")
                line, block = block[: nl + 1], block[nl + 1 :]
                if first_line is None:
                    first_line = line
                    out.write(line)
                elif line != first_line:
                    raise InputError(
                        f"{store.child(part)}: its header differs from"
                        f" {store.child(parts[0])}'s; parts of two runs?"
                    )
                skip_header = False
            if not block:
                continue
            lines += block.count(b"\n")
            out.write(block)
            last = block[-1:]
        if last != b"\n":  # a part always ends a line, but never glue two rows together
            out.write(b"\n")
            lines += 1
    return lines


def _merge_parquet(store: Store, parts: list[str], out: Output) -> int:
    rows = 0
    files = [pq.ParquetFile(store.open_input(p)) for p in parts]
    schema = files[0].schema_arrow
    for part, f in zip(parts, files, strict=True):
        if not f.schema_arrow.equals(schema):
            raise InputError(
                f"{store.child(part)}: its columns differ from {store.child(parts[0])}'s;"
                " parts of different runs?"
            )
    dictionary = [f.name for f in schema if not pa.types.is_floating(f.type)]
    with pq.ParquetWriter(out, schema, compression="snappy", use_dictionary=dictionary) as w:
        for f in files:
            for g in range(f.metadata.num_row_groups):
                table = f.read_row_group(g)
                rows += table.num_rows
                w.write_table(table)
    return rows


def _read_rejects(store: Store, key: str, fmt: Format) -> pa.Table:
    data = b"".join(_blocks(store, key))
    if fmt is Format.PARQUET:
        return pq.read_table(pa.BufferReader(data))
    if fmt is Format.CSV:
        types = {f.name: f.type for f in REJECT_SCHEMA}
        return pcsv.read_csv(
            pa.BufferReader(data),
            convert_options=pcsv.ConvertOptions(column_types=types, strings_can_be_null=True),
        )
    rows = [json.loads(line) for line in data.splitlines() if line.strip()]
    return pa.Table.from_pylist(rows, schema=REJECT_SCHEMA)


def _offsets(store: Store, parts: list[str]) -> list[int] | None:
    """What to add to each part's reject rows, or None when no part numbers relatively."""
    markers = []
    for part in parts:
        marker = read_marker(store, part)
        if marker is None:
            raise InputError(
                f"{store.child(part)}: no completion marker beside it: its shard did not"
                " finish (re-run it, with --resume to skip the finished ones)"
            )
        markers.append(marker)
    is_rejects = all(
        m.get("rejects") == store.child(p) for m, p in zip(markers, parts, strict=True)
    )
    if not is_rejects or not any(m.get("relative_rows") for m in markers):
        return None
    offsets, line = [], 0
    for m in markers:
        if m.get("relative_rows"):
            offsets.append(line)
            line += int(m.get("lines", 0))
        else:  # numbered from the file's start (the first shard): continue from its end
            offsets.append(0)
            line = int(m.get("row_base", 0)) + int(m.get("lines", 0))
    return offsets


def _merge_rejects(
    store: Store, parts: list[str], key: str, fmt: Format, offsets: list[int]
) -> int:
    sink = open_sink(store, key, fmt, REJECT_SCHEMA)
    rows = 0
    try:
        for part, offset in zip(parts, offsets, strict=True):
            table = _read_rejects(store, part, fmt).select(REJECT_SCHEMA.names)
            table = table.cast(REJECT_SCHEMA)
            row = np.asarray(table.column("row").to_numpy(zero_copy_only=False)) + offset
            table = table.set_column(0, REJECT_SCHEMA.field(0), pa.array(row, pa.int64()))
            for batch in table.to_batches():
                sink.write(batch)
            rows += table.num_rows
        sink.commit()
    except BaseException:
        sink.abort()
        raise
    return rows


def merge_file(uri: str | PurePosixPath | Any, fmt: Format) -> dict[str, Any]:
    """Merge the parts of ``uri`` (a path or object URI); returns ``{"output", "parts",
    "rows"}``."""
    parent, name = split_uri(str(uri))
    store = open_store(parent)
    try:
        names = [k for k, _ in store.entries() if "/" not in k]
    except StorageError as exc:
        raise InputError(f"merge: {exc}") from None
    found, count = find_parts(PurePosixPath(name), names)
    parts = [p.name for p in found]
    try:
        offsets = _offsets(store, parts)
        if offsets is not None:
            rows = _merge_rejects(store, parts, name, fmt, offsets)
        else:
            out = store.open_output(name)
            try:
                if fmt is Format.PARQUET:
                    rows = _merge_parquet(store, parts, out)
                else:
                    rows = _merge_text(store, parts, out, header=fmt is Format.CSV)
                out.commit()
            except BaseException:
                out.abort()
                raise
    except (OSError, StorageError) as exc:
        raise OutputError(f"merge into {store.child(name)}: {exc}") from exc
    return {"output": store.child(name), "parts": count, "rows": rows}
