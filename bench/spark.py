"""Spark engine benchmark: ``xor-dnn score --engine spark`` on ``local[2]`` against the stream
engine (``xor-dnn score``) on the same Parquet file, and a check that both give the same result.

Three ways, each a fresh process: the stream engine; ``--engine spark`` as a user runs it (a
cold start: the JVM, then each Python worker's TensorFlow import and model load happen inside
the job); and ``scoring.spark.score_dataframe`` twice in one session, the second job timed
(the workers already hold the model, as on a long-lived cluster). Figures are reported as a
ratio to the stream engine measured in the same run. The scores of ``--engine spark`` are
compared row by row (by id) with the stream engine's, and the rejected ids too.

    python -m bench.spark                  # 1M points
    python -m bench.spark --rows 200000    # quick look

Exits 1 when the Spark engine fails, or its scores differ by more than 1e-6 or it rejects
other rows; throughput has no target (the ratio is reported).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np

from bench._cli import print_table
from bench.score import SCORE_SCRIPT, add_workspace_options, run_child, workspace

TOLERANCE = 1e-6
MASTER = "local[2]"
WARM_SCRIPT = """
import json, os, sys, time
from pyspark.sql import SparkSession
from scoring.spark import BATCH_ROWS_CONF, score_dataframe
src, out, model_dir, chunk = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
spark = SparkSession.builder.master(os.environ["BENCH_MASTER"]).getOrCreate()
spark.conf.set(BATCH_ROWS_CONF, chunk)
df = spark.read.parquet(src)
t0 = time.perf_counter()
score_dataframe(df, model_dir).scores.write.mode("overwrite").parquet(out + "-cold")
t1 = time.perf_counter()
result = score_dataframe(df, model_dir)
result.scores.write.mode("overwrite").parquet(out)
t2 = time.perf_counter()
print(json.dumps({"rows_scored": result.rows_scored, "cold_seconds": t1 - t0,
                  "seconds": t2 - t1, "model_loads": sum(result.model_loads.values())}))
spark.stop()
"""


def make_input(path: Path, n: int) -> int:
    """``id``, ``x``, ``y`` with one x in 1,000 NaN (rejected); returns how many are bad."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(n)
    xy = rng.uniform(-5, 5, size=(n, 2))
    xy[::1000, 0] = np.nan
    table = pa.table({"id": np.arange(n, dtype=np.int64), "x": xy[:, 0], "y": xy[:, 1]})
    pq.write_table(table, path, row_group_size=65536)
    return len(range(0, n, 1000))


def _read(path: Path) -> Any:
    import pyarrow.dataset as ds

    files = [path] if path.is_file() else sorted(path.glob("part-*.parquet"))
    return ds.dataset(files, format="parquet").to_table()


def compare(stream_out: Path, spark_out: Path, stream_rejects: Path, spark_rejects: Path) -> str:
    """'' when the two engines agree, else what differs."""
    a = _read(stream_out).select(["id", "probability", "class_id"]).sort_by("id")
    b = _read(spark_out).select(["id", "probability", "class_id"]).sort_by("id")
    if a.column("id").to_pylist() != b.column("id").to_pylist():
        return f"scored ids differ ({a.num_rows} stream rows, {b.num_rows} spark rows)"
    diff = np.abs(a.column("probability").to_numpy() - b.column("probability").to_numpy())
    if diff.max(initial=0.0) > TOLERANCE:
        return f"probabilities differ by up to {diff.max():.3g} > {TOLERANCE}"
    if a.column("class_id").to_pylist() != b.column("class_id").to_pylist():
        return "class_id differs"
    stream_rows = {r - 1 for r in _read(stream_rejects).column("row").to_pylist()}  # 1-based
    spark_ids = set(_read(spark_rejects).column("id").to_pylist())
    if stream_rows != spark_ids:
        return f"rejected rows differ ({len(stream_rows)} stream, {len(spark_ids)} spark)"
    return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=1, help="runs per way; medians shown")
    add_workspace_options(parser)
    parser.add_argument("--chunk-size", type=int, default=65536)
    args = parser.parse_args(argv)

    ws = workspace(args, "xor-dnn-bench-spark-")
    work, model_dir = ws.folder, ws.model_dir.resolve()
    src = work / f"points-{args.rows}.parquet"
    bad = make_input(src, args.rows)
    # The Spark runs inherit these: local[2] (two Python workers), this interpreter for them.
    os.environ["PYSPARK_SUBMIT_ARGS"] = f"--master {MASTER} pyspark-shell"
    os.environ["BENCH_MASTER"] = MASTER
    os.environ["PYSPARK_PYTHON"] = sys.executable
    common = ["--model-dir", str(model_dir), "--chunk-size", str(args.chunk_size)]
    stream_cmd = [sys.executable, "-c", SCORE_SCRIPT, "score", *common, "--no-progress"]
    spark_cmd = [sys.executable, "-m", "xor_dnn", "score", "--engine", "spark", *common]
    warm_cmd = [sys.executable, "-c", WARM_SCRIPT, str(src), str(work / "warm.parquet")]
    warm_cmd += [str(model_dir), str(args.chunk_size)]
    print(f"cores: {os.cpu_count()}, load average at start: {os.getloadavg()[0]:.1f}")

    runs: dict[str, list[dict[str, Any]]] = {"stream": [], "spark": [], "warm": []}
    for _ in range(args.repeats):  # interleaved: a burst of load hits every way alike
        os.sync()
        out = ["-i", str(src), "-o", str(work / "stream.parquet")]
        runs["stream"].append(run_child([*stream_cmd, *out]))
        os.sync()
        runs["spark"].append(run_child([*spark_cmd, "-i", str(src), "-o", str(work / "spark")]))
        os.sync()
        runs["warm"].append(run_child(warm_cmd))

    failures = []
    for way, done in runs.items():
        for r in done:
            if r["rows_scored"] != args.rows - bad:
                failures.append(f"{way}: {r['rows_scored']} rows scored, {args.rows - bad} due")
    mismatch = compare(
        work / "stream.parquet",
        work / "spark",
        work / "stream.rejects.parquet",
        work / "spark.rejects.parquet",
    )
    if mismatch:
        failures.append(f"--engine spark vs stream: {mismatch}")

    def median(way: str, key: str) -> float:
        return statistics.median(float(r[key]) for r in runs[way])

    base_run = median("stream", "rows_per_second")
    wall = {way: median(way, "wall_seconds") for way in runs}
    base = args.rows / wall["stream"]
    table: list[tuple[str, float, float | None]] = [
        ("xor-dnn score (stream)", wall["stream"], median("stream", "seconds")),
        ("xor-dnn score --engine spark (cold)", wall["spark"], None),
        ("score_dataframe, 2nd job (warm)", wall["warm"], median("warm", "seconds")),
    ]
    print(f"\n{args.rows:,} points (Parquet -> Parquet), {MASTER}, median of {args.repeats}:")
    header = ["way", "process wall s", "rows/s end to end", "vs stream"]
    header += ["scoring s", "rows/s scoring", "vs stream"]
    rows = []
    for name, seconds, scoring in table:
        e2e = args.rows / seconds
        cells = [name, f"{seconds:.1f}", f"{e2e:,.0f}", f"{e2e / base:.2f}x"]
        if scoring is None:
            cells += ["", "", ""]
        else:
            rate = (args.rows - bad) / scoring
            cells += [f"{scoring:.2f}", f"{rate:,.0f}", f"{rate / base_run:.2f}x"]
        rows.append(cells)
    print_table(header, "lrrrrrr", rows)
    loads = [r["model_loads"] for r in runs["spark"]]
    warm_loads = [r["model_loads"] for r in runs["warm"]]
    print(f"--engine spark: model loads per run {loads} (one per Python worker process)")
    print(f"score_dataframe: model loads in the 2nd job {warm_loads} (the workers kept it)")
    print(f"load average at end: {os.getloadavg()[0]:.1f}")
    if not mismatch:
        print(f"--engine spark matches the stream engine (|dp| <= {TOLERANCE}, same rejects)")
    for f in failures:
        print(f"FAILED: {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
