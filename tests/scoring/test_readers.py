"""Reader behaviour that the end-to-end tests cannot see: memory bounded by a row group."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from scoring.formats import Format
from scoring.readers import open_source
from scoring.shards import Shard


def test_parquet_reader_holds_one_row_group_not_the_file(tmp_path: Path) -> None:
    # Random floats do not compress, so the file's size is its buffers' size. Arrow asked for
    # every row group at once pre-buffers all of them; the reader must ask for one at a time.
    rows, group = 400_000, 20_000
    xy = np.random.default_rng(0).uniform(-5, 5, size=(rows, 2))
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"x": xy[:, 0], "y": xy[:, 1]}), path, row_group_size=group)
    file_bytes = path.stat().st_size
    source = open_source(path, Format.PARQUET, Shard(), 8192, ("x", "y"))
    base = pa.total_allocated_bytes()
    peak = seen = 0
    for batch in source.batches():
        peak = max(peak, pa.total_allocated_bytes() - base)
        seen += batch.data.num_rows
    source.close()
    assert seen == rows
    assert peak < file_bytes / 5, (peak, file_bytes)
