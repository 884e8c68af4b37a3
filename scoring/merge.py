"""``--merge``: join the parts of a sharded run into the single file a one-shard run would write.

Parts are checked first (all N present, one shard count, identical columns), then streamed in
shard order into a temporary file that is renamed into place, so a merge is as atomic as a
run. CSV and JSONL parts are joined byte for byte (a CSV part's header once); Parquet parts
row group by row group. Rejects parts, when present, are merged the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from scoring.errors import InputError, OutputError
from scoring.formats import Format, find_parts
from xor_dnn.storage import atomic_writer

_COPY = 8 << 20


def _merge_text(parts: list[Path], tmp: Path, header: bool) -> int:
    lines = 0
    first_line: bytes | None = None
    with open(tmp, "wb") as out:
        for part in parts:
            with open(part, "rb") as fh:
                if header:
                    line = fh.readline()
                    if first_line is None:
                        first_line = line
                        out.write(line)
                    elif line != first_line:
                        raise InputError(
                            f"{part}: its header differs from {parts[0]}'s; parts of two runs?"
                        )
                last = b"\n"
                while block := fh.read(_COPY):
                    lines += block.count(b"\n")
                    out.write(block)
                    last = block[-1:]
                if last != b"\n":  # a part always ends a line, but never glue two rows together
                    out.write(b"\n")
                    lines += 1
    return lines


def _merge_parquet(parts: list[Path], tmp: Path) -> int:
    rows = 0
    files = [pq.ParquetFile(p) for p in parts]
    schema = files[0].schema_arrow
    for part, f in zip(parts, files, strict=True):
        if not f.schema_arrow.equals(schema):
            raise InputError(
                f"{part}: its columns differ from {parts[0]}'s; parts of different runs?"
            )
    dictionary = [f.name for f in schema if not pa.types.is_floating(f.type)]
    with pq.ParquetWriter(str(tmp), schema, compression="snappy", use_dictionary=dictionary) as w:
        for f in files:
            for g in range(f.metadata.num_row_groups):
                table = f.read_row_group(g)
                rows += table.num_rows
                w.write_table(table)
    for f in files:
        f.close()
    return rows


def merge_file(path: Path, fmt: Format) -> dict[str, Any]:
    """Merge the parts of ``path``; returns ``{"output", "parts", "rows"}``."""
    parts, count = find_parts(path)
    try:
        with atomic_writer(path) as tmp:
            if fmt is Format.PARQUET:
                rows = _merge_parquet(parts, tmp)
            else:
                rows = _merge_text(parts, tmp, header=fmt is Format.CSV)
    except OSError as exc:
        raise OutputError(f"merge into {path}: {exc}") from exc
    return {"output": str(path), "parts": count, "rows": rows}
