"""Reader behaviour that the end-to-end tests cannot see: memory bounded by a row group."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from scoring.formats import Format
from scoring.readers import Source, open_source
from scoring.shards import Shard
from xor_dnn.storage import open_store


def _open(path: Path, fmt: Format, chunk_size: int) -> Source:
    blob = open_store(path.parent).open_input(path.name)
    return open_source(blob, str(path), fmt, Shard(), chunk_size, ("x", "y"))


def test_parquet_reader_holds_one_row_group_not_the_file(tmp_path: Path) -> None:
    # Random floats do not compress, so the file's size is its buffers' size. Arrow asked for
    # every row group at once pre-buffers all of them; the reader must ask for one at a time.
    rows, group = 400_000, 20_000
    xy = np.random.default_rng(0).uniform(-5, 5, size=(rows, 2))
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"x": xy[:, 0], "y": xy[:, 1]}), path, row_group_size=group)
    file_bytes = path.stat().st_size
    source = _open(path, Format.PARQUET, 8192)
    base = pa.total_allocated_bytes()
    peak = seen = 0
    for batch in source.batches():
        peak = max(peak, pa.total_allocated_bytes() - base)
        seen += batch.data.num_rows
    source.close()
    assert seen == rows
    assert peak < file_bytes / 5, (peak, file_bytes)


def _csv(path: Path, rows: int, *, long_every: int = 0) -> Path:
    xy = np.random.default_rng(1).uniform(-5, 5, size=(rows, 2))
    with open(path, "w") as fh:
        fh.write("x,y,label\n")
        for i, (x, y) in enumerate(xy):
            label = "z" * 60_000 if long_every and i % long_every == 0 else f"p{i}"
            fh.write(f"{x!r},{y!r},{label}\n")
    return path


def test_csv_reader_reads_a_few_blocks_ahead_not_the_file(tmp_path: Path) -> None:
    # Arrow's streaming CSV reader reads up to 32 blocks ahead on its own thread; the reader
    # must hold it to a few, or a big file costs tens of MB more than a small one.
    path = _csv(tmp_path / "in.csv", 150_000)  # about 6 MB: 90 blocks of 64 KiB
    source = _open(path, Format.CSV, 1000)
    tracemalloc.start()
    try:
        seen = 0
        for batch in source.batches():
            seen += batch.data.num_rows
            time.sleep(0.002)  # a consumer slower than the reading thread
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        source.close()
    assert seen == 150_000
    assert peak < 12 * 65536, peak


def test_csv_lines_near_a_block_long_are_all_read(tmp_path: Path) -> None:
    # 60 kB lines in 64 KiB blocks: most batches need the next block to finish their last
    # line, so pacing the reads must still let those through (a deadlock would hang here).
    path = _csv(tmp_path / "in.csv", 3000, long_every=20)
    source = _open(path, Format.CSV, 100)
    labels = [v for b in source.batches() for v in b.data.column("label").to_pylist()]
    source.close()
    assert len(labels) == 3000
    assert [len(v) for v in labels[::20]] == [60_000] * 150
    assert labels[2999] == "p2999"
