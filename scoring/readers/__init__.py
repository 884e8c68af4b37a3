"""Streaming readers: one shard of a CSV, Parquet or JSONL file as Arrow record batches.

Every reader yields :class:`Batch` objects of about ``chunk_size`` rows and never holds more
than a couple of them, so memory does not grow with the file. Each batch can map its rows back
to their *row number* as a person would find them: for CSV and JSONL the 1-based line number
in the file (a CSV header is line 1, so the first data row is row 2, as in a spreadsheet); for
Parquet the 1-based row index.

One module per format (``csv_source``, ``parquet_source``, ``jsonl_source``); :func:`open_source`
picks one.
"""

from __future__ import annotations

from scoring.formats import Format
from scoring.readers.base import Batch, Malformed, Source
from scoring.readers.csv_source import CsvSource
from scoring.readers.jsonl_source import JsonlSource
from scoring.readers.parquet_source import ParquetSource
from scoring.shards import Shard
from xor_dnn.storage import RangeReader

__all__ = ["Batch", "Malformed", "Source", "open_source"]


def open_source(
    blob: RangeReader,
    name: str,
    fmt: Format,
    shard: Shard,
    chunk_size: int,
    coordinates: tuple[str, str],
    row_groups: tuple[int, int] | None = None,
) -> Source:
    """Open the shard ``shard`` (or the Parquet ``row_groups`` [a, b)) of the file ``blob``
    (from :meth:`xor_dnn.storage.Store.open_input`); raises InputError naming ``name`` when
    it cannot be read."""
    if fmt is Format.CSV:
        return CsvSource(blob, name, shard, chunk_size)
    if fmt is Format.PARQUET:
        return ParquetSource(blob, name, shard, chunk_size, row_groups)
    return JsonlSource(blob, name, shard, chunk_size, coordinates)
