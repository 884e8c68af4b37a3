"""Helpers for the scoring tests: point files in every format and a reader for the results."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from scoring.formats import Format


def points_table(n: int, seed: int = 0) -> pa.Table:
    """``id``, ``x``, ``y``, ``label`` (text, some with commas and quotes): n clean rows."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(-5, 5, size=(n, 2))
    labels = [("a,b" if i % 97 == 0 else 'say "hi"' if i % 89 == 0 else f"p{i}") for i in range(n)]
    return pa.table(
        {"id": np.arange(n, dtype=np.int64), "x": xy[:, 0], "y": xy[:, 1], "label": labels}
    )


def write_points(table: pa.Table, path: Path, fmt: Format) -> Path:
    """Write ``table`` the way a person's tools would (repr floats, plain CSV, one JSON a line)."""
    rows = table.to_pylist()
    if fmt is Format.CSV:
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(table.column_names)
            w.writerows([list(r.values()) for r in rows])
    elif fmt is Format.JSONL:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        pq.write_table(table, path, row_group_size=max(len(table) // 5, 1))
    return path


def read_result(path: Path, fmt: Format) -> pa.Table:
    """A scoring output read back with ordinary readers, columns typed for comparison."""
    if fmt is Format.CSV:
        table = pcsv.read_csv(
            path, convert_options=pcsv.ConvertOptions(column_types={"label": pa.string()})
        )
    elif fmt is Format.JSONL:
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        table = pa.Table.from_pylist(lines) if lines else pa.table({})
    else:
        table = pq.read_table(path)
    return table


@pytest.fixture(scope="session")
def reference(model_dir: Path) -> Callable[[np.ndarray], np.ndarray]:
    """Class-1 probabilities from a direct call of version 2's serving signature."""
    import tensorflow as tf

    fn = tf.saved_model.load(str(model_dir / "2")).signatures["serving_default"]

    def call(xy: np.ndarray) -> np.ndarray:
        points = tf.constant(np.asarray(xy, dtype=np.float32))
        return np.asarray(fn(points=points)["probability"].numpy().reshape(-1))

    return call


# The storage tests' S3 API server (moto behind a counting proxy), shared, not copied.
from tests.storage.conftest import bucket, s3  # noqa: E402, F401
