"""Dataset batch-scoring benchmark: a folder of Parquet files, the same through the local S3
server, peak RSS against the number of files, and the bytes N shards of one CSV read.

Every scoring run is a fresh ``xor-dnn score`` process (``bench.score``'s child runner: its
rows/s from the job's JSON summary, its peak RSS from its own ``VmHWM``). The baseline, in
the same run and interleaved with the folder runs, is one Parquet file holding all the
folder's rows: the folder's rows/s is also shown as a ratio of it, which moves less with the
shared machine's load than either figure alone.

    python -m bench datasets                       # 20 files x 250k rows; 1M-row CSV shards
    python -m bench.datasets --files 20 --rows 50000 --repeats 1     # a quick look

Exits 1 when a target is missed: >= 3M rows/s for the folder end to end; peak RSS with all
the files within 10% of that with a fifth of them (the same rows per file); the N shards'
bytes read <= 1.1x the CSV's size and the last shard's within 0.15x of the first's. The S3
figure (target >= 1M rows/s) is reported, not enforced: it measures moto, a Python server.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np

from bench._cli import print_table
from bench.score import SCORE_SCRIPT, add_workspace_options, run_child, workspace

TARGET_FOLDER_ROWS_PER_S = 3_000_000
TARGET_S3_ROWS_PER_S = 1_000_000
MAX_RSS_GROWTH = 0.10
MAX_BYTES_RATIO = 1.10
MAX_LAST_MINUS_FIRST = 0.15


def make_folder(folder: Path, files: int, rows: int) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        path = folder / f"part-{i:04d}.parquet"
        if not path.exists():
            rng = np.random.default_rng(i)
            xy = rng.uniform(-5, 5, size=(rows, 2))
            ids = np.arange(rows, dtype=np.int64) + i * rows
            pq.write_table(pa.table({"id": ids, "x": xy[:, 0], "y": xy[:, 1]}), path)
    return folder


def make_single(path: Path, files: int, rows: int) -> Path:
    """All the folder's rows in one Parquet file (the baseline)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.exists():
        parts = []
        for i in range(files):
            xy = np.random.default_rng(i).uniform(-5, 5, size=(rows, 2))
            ids = np.arange(rows, dtype=np.int64) + i * rows
            parts.append(pa.table({"id": ids, "x": xy[:, 0], "y": xy[:, 1]}))
        pq.write_table(pa.concat_tables(parts), path)
    return path


def make_csv(path: Path, rows: int) -> Path:
    import pyarrow as pa
    import pyarrow.csv as pcsv

    if not path.exists():
        xy = np.random.default_rng(7).uniform(-5, 5, size=(rows, 2))
        ids = np.arange(rows, dtype=np.int64)
        pcsv.write_csv(pa.table({"id": ids, "x": xy[:, 0], "y": xy[:, 1]}), path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--rows", type=int, default=250_000, help="rows per file")
    parser.add_argument("--repeats", type=int, default=3, help="runs per case; medians shown")
    parser.add_argument("--csv-rows", type=int, default=1_000_000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--no-s3", action="store_true", help="skip the S3 server case")
    add_workspace_options(parser)
    args = parser.parse_args(argv)

    ws = workspace(args, "xor-dnn-bench-datasets-")
    work, model_dir = ws.folder, ws.model_dir
    score = [sys.executable, "-c", SCORE_SCRIPT, "score", "--model-dir", str(model_dir)]
    score.append("--no-progress")
    few = max(args.files // 5, 1)
    folder = make_folder(work / "folder", args.files, args.rows)
    small = make_folder(work / f"folder-{few}", few, args.rows)
    single = make_single(work / "single.parquet", args.files, args.rows)
    print(f"cores: {os.cpu_count()}, load average at start: {os.getloadavg()[0]:.1f}")

    cases: dict[str, list[dict[str, Any]]] = {}
    runs = {
        f"one file, {args.files * args.rows:,} rows (baseline)": [
            "-i",
            str(single),
            "-o",
            str(work / "out-single.parquet"),
        ],
        f"folder, {args.files} files x {args.rows:,} rows": [
            "-i",
            str(folder),
            "-o",
            str(work / "out-folder"),
        ],
        f"folder, {few} files x {args.rows:,} rows": [
            "-i",
            str(small),
            "-o",
            str(work / "out-few"),
        ],
    }
    for _ in range(args.repeats):  # interleaved, so load bursts hit every case alike
        for name, cmd in runs.items():
            os.sync()
            cases.setdefault(name, []).append(run_child([*score, *cmd]))

    failures: list[str] = []
    table: list[dict[str, Any]] = []
    for name, results in cases.items():
        table.append(
            {
                "case": name,
                "rows_per_s": statistics.median(r["rows_per_second"] for r in results),
                "seconds": statistics.median(r["seconds"] for r in results),
                "rss_mb": statistics.median(r["rss_mb"] for r in results),
                "files": results[0].get("files", 1),
                "rows": results[0]["rows_scored"],
            }
        )
    base, full, part = table
    full["ratio"] = full["rows_per_s"] / base["rows_per_s"]
    if full["rows_per_s"] < TARGET_FOLDER_ROWS_PER_S:
        failures.append(f"folder {full['rows_per_s']:,.0f} rows/s < {TARGET_FOLDER_ROWS_PER_S:,}")
    growth = full["rss_mb"] / part["rss_mb"] - 1
    if growth > MAX_RSS_GROWTH:
        failures.append(f"peak RSS grew {growth:+.1%} from {few} to {args.files} files")

    if not args.no_s3:
        table.append(s3_case(score, folder, args.repeats))
        table[-1]["ratio"] = table[-1]["rows_per_s"] / base["rows_per_s"]

    print()
    print_table(
        ["case", "files", "rows", "rows/s (median)", "vs one file", "seconds", "peak RSS MB"],
        "lrrrrrr",
        (
            [
                row["case"],
                str(row["files"]),
                f"{row['rows']:,}",
                f"{row['rows_per_s']:,.0f}",
                f"{row['ratio']:.2f}x" if "ratio" in row else "",
                f"{row['seconds']:.2f}",
                f"{row['rss_mb']:.0f}",
            ]
            for row in table
        ),
    )
    print(
        f"\npeak RSS {part['rss_mb']:.0f} MB ({few} files) -> {full['rss_mb']:.0f} MB"
        f" ({args.files} files): {growth:+.1%} (target within {MAX_RSS_GROWTH:.0%})"
    )

    failures += shard_case(score, work, args.csv_rows, args.shards)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    for failure in failures:
        print(f"TARGET MISSED: {failure}")
    return 1 if failures else 0


def s3_case(score: list[str], folder: Path, repeats: int) -> dict[str, Any]:
    """The folder uploaded to moto's S3 server, scored from one prefix into another."""
    from bench._s3server import running_s3
    from xor_dnn.storage import open_store

    with running_s3() as s3:
        bucket = s3.make_bucket()
        store = open_store(f"s3://{bucket}/points")
        files = sorted(folder.iterdir())
        for path in files:
            store.upload(path, path.name)
        results = [
            run_child([*score, "-i", f"s3://{bucket}/points/", "-o", f"s3://{bucket}/scored-{k}"])
            for k in range(repeats)
        ]
    rows_per_s = statistics.median(r["rows_per_second"] for r in results)
    print(f"S3 (moto): {rows_per_s:,.0f} rows/s (target {TARGET_S3_ROWS_PER_S:,}: reported)")
    return {
        "case": f"S3 prefix -> S3 prefix (moto), {len(files)} files",
        "rows_per_s": rows_per_s,
        "seconds": statistics.median(r["seconds"] for r in results),
        "rss_mb": statistics.median(r["rss_mb"] for r in results),
        "files": results[0]["files"],
        "rows": results[0]["rows_scored"],
    }


def shard_case(score: list[str], work: Path, rows: int, shards: int) -> list[str]:
    src = make_csv(work / f"points-{rows}.csv", rows)
    size = src.stat().st_size
    reads = []
    for k in range(shards):
        s = run_child(
            [*score, "-i", str(src), "-o", str(work / "shards" / "o.csv"),
             "--num-shards", str(shards), "--shard-index", str(k)]
        )  # fmt: skip
        reads.append(int(s["bytes_read"]))
    total = sum(reads) / size
    spread = (reads[-1] - reads[0]) / size
    print(f"\n{shards} shards of a {rows:,}-row CSV ({size:,} bytes): bytes read per shard")
    print(" ".join(f"{r:,}" for r in reads))
    print(
        f"total {total:.3f}x the file (target <= {MAX_BYTES_RATIO}x); last minus first"
        f" {spread:+.4f}x (target <= {MAX_LAST_MINUS_FIRST}x)"
    )
    print(json.dumps({"bytes_read": reads, "file_bytes": size}))
    failures = []
    if total > MAX_BYTES_RATIO:
        failures.append(f"shards read {total:.3f}x the file")
    if spread > MAX_LAST_MINUS_FIRST:
        failures.append(f"the last shard read {spread:.3f}x more than the first")
    return failures


if __name__ == "__main__":
    sys.exit(main())
