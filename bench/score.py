"""Batch-scoring benchmark: throughput and peak memory at 1M and 5M points, against the naive way.

Each run is a fresh ``xor-dnn score`` process; its peak RSS is its own ``VmHWM`` and its rows/s
come from the job's own JSON summary, which times the run from opening the input to the
renamed output and leaves out only the TensorFlow import, model load and warm-up calls
(reported separately as startup). The repeats are interleaved (every case once, then again),
so a burst of load from another process on a shared machine hits every case alike, and the
page cache is synced before each run, so one run's writeback does not slow the next. The naive
way is what a notebook does: pandas reads the whole file, Keras ``model.predict``, pandas
writes it back.

    python bench/score.py                 # full run (~5M points), prints a table
    python bench/score.py --sizes 200000  # quick look; memory target needs two sizes

Exits 1 when a target is missed: >= 1M rows/s CSV->CSV, >= 3M rows/s Parquet->Parquet,
peak RSS < 1.2 GB, and peak RSS at the largest size within 10% of the smallest.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench._cli import print_table

TARGET_ROWS_PER_S = {"csv": 1_000_000, "parquet": 3_000_000}
MAX_RSS_MB = 1200.0
MAX_RSS_GROWTH = 0.10
# Peak RSS as the process itself sees it (VmHWM): ru_maxrss from wait4 would include the
# benchmark's own memory at fork time, inherited across exec on Linux.
SCORE_SCRIPT = """
import sys
from xor_dnn.cli import main
code = main(sys.argv[1:])
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print("VMHWM_KB", hwm, file=sys.stderr)
sys.exit(code)
"""
NAIVE_SCRIPT = """
import sys, time, resource, json, os
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
t0 = time.perf_counter()
import pandas as pd
from training.model import ModelConfig, build_model
model = build_model(ModelConfig())
t1 = time.perf_counter()
df = pd.read_csv(sys.argv[1]) if sys.argv[1].endswith(".csv") else pd.read_parquet(sys.argv[1])
df["probability"] = model.predict(df[["x", "y"]].to_numpy("float32"), verbose=0).reshape(-1)
df["class_id"] = (df["probability"] >= 0.5).astype("int8")
df.to_csv(sys.argv[2], index=False) if sys.argv[2].endswith(".csv") else df.to_parquet(sys.argv[2])
t2 = time.perf_counter()
print(json.dumps({"rows_scored": len(df), "seconds": t2 - t1, "startup_seconds": t1 - t0}))
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print("VMHWM_KB", hwm, file=sys.stderr)
"""


def make_inputs(folder: Path, n: int) -> dict[str, Path]:
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    paths = {"csv": folder / f"points-{n}.csv", "parquet": folder / f"points-{n}.parquet"}
    if all(p.exists() for p in paths.values()):
        return paths
    rng = np.random.default_rng(n)
    xy = rng.uniform(-5, 5, size=(n, 2))
    table = pa.table({"x": xy[:, 0], "y": xy[:, 1]})
    pcsv.write_csv(table, paths["csv"])
    pq.write_table(table, paths["parquet"])
    return paths


def ensure_model(model_dir: Path) -> Path:
    """The lesson's default network, briefly fitted: throughput does not depend on accuracy."""
    from xor_dnn.modelstore import latest_version, publish_version

    if latest_version(model_dir) is not None:
        return model_dir
    from training.data import generate
    from training.model import ModelConfig, build_model, export_savedmodel

    config = ModelConfig(epochs=1)
    model = build_model(config)
    points, labels = generate(1000)
    model.fit(points, labels, epochs=1, verbose=0)
    publish_version(model_dir, lambda tmp: export_savedmodel(model, tmp))
    return model_dir


def add_workspace_options(parser: argparse.ArgumentParser) -> None:
    """``--model-dir`` and ``--workdir``: every scoring benchmark takes them (:func:`workspace`)."""
    parser.add_argument("--model-dir", type=Path, help="default: a fresh model in --workdir")
    parser.add_argument("--workdir", type=Path, help="default: a temporary folder")


@dataclass
class Workspace:
    """Where a scoring benchmark writes, and the model it scores with."""

    folder: Path
    """``--workdir``, or a temporary folder removed once this object is gone."""
    model_dir: Path
    """``--model-dir``, or a fresh model in ``folder``."""
    _tmp: tempfile.TemporaryDirectory[str]


def workspace(args: argparse.Namespace, prefix: str) -> Workspace:
    """The folder and model of :func:`add_workspace_options`'s parsed ``args``."""
    tmp = tempfile.TemporaryDirectory(prefix=prefix)
    folder = args.workdir or Path(tmp.name)
    folder.mkdir(parents=True, exist_ok=True)
    return Workspace(folder, args.model_dir or ensure_model(folder / "models" / "xor"), tmp)


def run_child(cmd: list[str]) -> dict[str, Any]:
    """Run ``cmd``, return its JSON summary plus its own peak RSS (MB) and wall seconds."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    out, err = proc.stdout.read(), proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err.decode()[-2000:]}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    hwm = [line for line in err.decode().splitlines() if line.startswith("VMHWM_KB")]
    result["rss_mb"] = int(hwm[-1].split()[1]) / 1024 if hwm else usage.ru_maxrss / 1024
    result["wall_seconds"] = time.perf_counter() - started
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--repeats", type=int, default=3, help="runs per case; medians shown")
    parser.add_argument(
        "--naive-size",
        type=int,
        default=1_000_000,
        help="points for the pandas + Keras predict comparison (0: skip)",
    )
    add_workspace_options(parser)
    parser.add_argument("--chunk-size", type=int, default=65536)
    args = parser.parse_args(argv)

    ws = workspace(args, "xor-dnn-bench-")
    work, model_dir = ws.folder, ws.model_dir
    score = [
        sys.executable,
        "-c",
        SCORE_SCRIPT,
        "score",
        "--model-dir",
        str(model_dir),
        "--chunk-size",
        str(args.chunk_size),
        "--no-progress",
    ]
    print(f"cores: {os.cpu_count()}, load average at start: {os.getloadavg()[0]:.1f}")

    rows: list[dict[str, Any]] = []
    cases = [(n, fmt) for n in sorted(args.sizes) for fmt in ("csv", "parquet")]
    inputs = {n: make_inputs(work, n) for n in sorted(args.sizes)}
    runs: dict[tuple[int, str], list[dict[str, Any]]] = {case: [] for case in cases}
    for _ in range(args.repeats):
        for n, fmt in cases:
            # Repeats replace the previous run's file: unlinking it is inside the timed window.
            # The previous run's output is flushed to disk first, so its writeback (hundreds of
            # MB after a 5M-row CSV) does not land in this run's window; no run ever fsyncs.
            out = work / f"scored-{n}.{fmt}"
            os.sync()
            runs[n, fmt].append(run_child([*score, "-i", str(inputs[n][fmt]), "-o", str(out)]))
    for n, fmt in cases:
        (work / f"scored-{n}.{fmt}").unlink(missing_ok=True)
    for (n, fmt), done in runs.items():
        assert all(r["rows_scored"] == n for r in done)
        rows.append(
            {
                "case": f"{fmt}->{fmt}",
                "rows": n,
                "way": "xor-dnn score",
                "rows_per_s": statistics.median(r["rows_per_second"] for r in done),
                "seconds": statistics.median(r["seconds"] for r in done),
                "startup": statistics.median(r["startup_seconds"] for r in done),
                "rss_mb": max(r["rss_mb"] for r in done),
                "cpu_per_m": statistics.median(r["cpu_seconds"] / n * 1e6 for r in done),
            }
        )
    if args.naive_size:
        naive_inputs = make_inputs(work, args.naive_size)
        for fmt in ("csv", "parquet"):
            os.sync()
            r = run_child(
                [
                    sys.executable,
                    "-c",
                    NAIVE_SCRIPT,
                    str(naive_inputs[fmt]),
                    str(work / f"naive.{fmt}"),
                ]
            )
            rows.append(
                {
                    "case": f"{fmt}->{fmt}",
                    "rows": args.naive_size,
                    "way": "naive pandas + Keras predict",
                    "rows_per_s": r["rows_scored"] / r["seconds"],
                    "seconds": r["seconds"],
                    "startup": r["startup_seconds"],
                    "rss_mb": r["rss_mb"],
                    "cpu_per_m": None,
                }
            )

    header = ["case", "rows", "way", f"rows/s (median of {args.repeats})", "seconds"]
    header += ["startup s (TF import + load + warm-up)", "peak RSS MB", "CPU s per 1M rows"]
    print()
    print_table(
        header,
        "lrlrrrrr",
        (
            [
                r["case"],
                f"{r['rows']:,}",
                r["way"],
                f"{r['rows_per_s']:,.0f}",
                f"{r['seconds']:.2f}",
                f"{r['startup']:.1f}",
                f"{r['rss_mb']:.0f}",
                "" if r["cpu_per_m"] is None else f"{r['cpu_per_m']:.2f}",
            ]
            for r in rows
        ),
    )

    failures = []
    ours = [r for r in rows if r["way"] == "xor-dnn score"]
    for r in ours:
        target = TARGET_ROWS_PER_S[r["case"].split("->")[0]]
        if r["rows_per_s"] < target:
            failures.append(
                f"{r['case']} {r['rows']:,} rows: {r['rows_per_s']:,.0f} rows/s < {target:,}"
            )
        if r["rss_mb"] > MAX_RSS_MB:
            failures.append(
                f"{r['case']} {r['rows']:,} rows: peak RSS {r['rss_mb']:.0f} MB > {MAX_RSS_MB:.0f}"
            )
    sizes = sorted({r["rows"] for r in ours})
    if len(sizes) > 1:
        for case in ("csv->csv", "parquet->parquet"):
            small = next(r for r in ours if r["case"] == case and r["rows"] == sizes[0])
            large = next(r for r in ours if r["case"] == case and r["rows"] == sizes[-1])
            growth = large["rss_mb"] / small["rss_mb"] - 1
            print(
                f"{case}: peak RSS {small['rss_mb']:.0f} MB at {sizes[0]:,} rows, "
                f"{large['rss_mb']:.0f} MB at {sizes[-1]:,} rows ({growth:+.1%})"
            )
            if growth > MAX_RSS_GROWTH:
                failures.append(f"{case}: peak RSS grows {growth:+.1%} > {MAX_RSS_GROWTH:.0%}")
    print(f"load average at end: {os.getloadavg()[0]:.1f}")
    for f in failures:
        print(f"MISSED: {f}")
    print("all targets met" if not failures else f"{len(failures)} target(s) missed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
