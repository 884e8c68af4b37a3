"""Datasets: folders, globs and object-store prefixes of many files; shards by file and by
row group; bytes each shard reads; --resume after a killed shard; S3 input and output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from bench._s3server import S3
from scoring.datasets import open_dataset, plan
from scoring.errors import InputError, ModelError
from scoring.formats import Format, part_path
from scoring.merge import merge_file
from scoring.model import Predict, load_model
from scoring.score import ScoreOptions, Summary, score
from scoring.shards import Shard
from tests.scoring.conftest import points_table, read_result, write_points
from xor_dnn.storage import open_store

Loaded = tuple[Predict, int, float]


@pytest.fixture(scope="module")
def model(model_dir: Path) -> Loaded:
    """Version 2, loaded once for the module (each job takes it through its loader)."""
    return load_model(model_dir, 2)


def run(
    model: Loaded, src: str | Path, out: str | Path, *, fmt: Format | None = None, **kw: Any
) -> Summary:
    options = ScoreOptions(str(src), str(out), kw.pop("input_format", None), fmt, **kw)
    return score(options, lambda: model)


def make_folder(root: Path, files: int, rows: int, fmt: Format, *, extras: bool = False) -> int:
    """``files`` point files with ids unique across the folder; with ``extras``, one empty file
    and one of only bad rows as well. Returns the number of good rows."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        table = points_table(rows, seed=i)
        table = table.set_column(0, "id", pa.array(np.arange(rows) + i * rows))
        write_points(table, root / f"f{i:03d}.{fmt}", fmt)
    if extras:
        (root / f"empty.{fmt}").write_bytes(b"")
        bad = points_table(3).set_column(1, "x", pa.array([None, None, None], pa.float64()))
        write_points(bad, root / f"bad.{fmt}", fmt)
    return files * rows


def scored_ids_and_probs(out: Path, fmt: Format) -> tuple[list[int], np.ndarray, np.ndarray]:
    ids: list[int] = []
    xy, probs = [], []
    for path in sorted(out.rglob(f"*.{fmt}")):
        if ".rejects" in path.name or path.name.startswith((".", "_")):
            continue
        t = read_result(path, fmt)
        if t.num_rows == 0:
            continue
        ids += [int(v) for v in t.column("id").to_pylist()]
        xy.append(np.column_stack([t.column("x").to_numpy(), t.column("y").to_numpy()]))
        probs.append(t.column("probability").to_numpy())
    return ids, np.concatenate(xy), np.concatenate(probs)


@pytest.mark.parametrize(("files", "extras"), [(1, False), (7, True), (100, True)])
def test_folder_scores_every_row_once_one_output_per_input(
    model: Loaded,
    reference: Callable[[np.ndarray], np.ndarray],
    tmp_path: Path,
    files: int,
    extras: bool,
) -> None:
    fmt = Format.PARQUET
    good = make_folder(tmp_path / "in", files, 50, fmt, extras=extras)
    s = run(model, tmp_path / "in", tmp_path / "out")
    expected_files = files + (2 if extras else 0)
    assert (s.files, s.rows_scored, s.rows_rejected) == (expected_files, good, 3 if extras else 0)
    ids, xy, probs = scored_ids_and_probs(tmp_path / "out", fmt)
    assert sorted(ids) == list(range(good))
    np.testing.assert_allclose(probs, reference(xy), rtol=1e-6, atol=1e-6)
    names = {p.name for p in (tmp_path / "out").iterdir()}
    for i in range(files):  # one output per input, named after it, rejects beside it
        assert {f"f{i:03d}.parquet", f"f{i:03d}.rejects.parquet"} <= names
    manifest = json.loads((tmp_path / "out" / "_xor_dnn_manifest.json").read_text())
    assert len(manifest["inputs"]) == expected_files and manifest["rows_scored"] == good
    if extras:
        bad = read_result(tmp_path / "out" / "bad.rejects.parquet", fmt)
        assert bad.column("row").to_pylist() == [1, 2, 3]
        assert read_result(tmp_path / "out" / "bad.parquet", fmt).num_rows == 0
        empty = [r for r in manifest["inputs"] if r["input"].endswith("empty.parquet")]
        assert empty[0]["empty"] is True and "empty.parquet" not in names


def test_csv_folder_to_jsonl_and_a_glob(model: Loaded, tmp_path: Path) -> None:
    make_folder(tmp_path / "in", 3, 40, Format.CSV, extras=True)
    make_folder(tmp_path / "in" / "more", 1, 40, Format.CSV)  # a subfolder is part of it
    s = run(model, tmp_path / "in", tmp_path / "out", fmt=Format.JSONL)
    assert (s.files, s.rows_scored, s.rows_rejected) == (6, 160, 3)
    assert (tmp_path / "out" / "more" / "f000.jsonl").exists()
    # A CSV file of only a header is scored (no rows); the empty one has no output.
    s = run(model, f"{tmp_path}/in/f00[01].csv", tmp_path / "glob", fmt=Format.CSV)
    assert (s.files, s.rows_scored) == (2, 80)
    assert sorted(p.name for p in (tmp_path / "glob").glob("*.csv")) == [
        "f000.csv",
        "f000.rejects.csv",
        "f001.csv",
        "f001.rejects.csv",
    ]


def test_output_folder_inside_the_input_folder_is_not_read_back(
    model: Loaded, tmp_path: Path
) -> None:
    make_folder(tmp_path / "data", 2, 30, Format.PARQUET)
    for _ in range(2):
        s = run(model, tmp_path / "data", tmp_path / "data" / "scored")
        assert (s.files, s.rows_scored) == (2, 60)
    assert not (tmp_path / "data" / "scored" / "scored").exists()


def test_input_errors_name_the_input(model: Loaded, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"no \.csv, \.parquet.* file below it"):
        run(model, tmp_path / "empty", tmp_path / "out")
    make_folder(tmp_path / "mixed", 1, 5, Format.CSV)
    make_folder(tmp_path / "mixed", 1, 5, Format.PARQUET)
    with pytest.raises(InputError, match="several formats \\(csv, parquet\\)"):
        run(model, tmp_path / "mixed", tmp_path / "out")
    with pytest.raises(InputError, match="no such file"):
        run(model, tmp_path / "nope", tmp_path / "out")


def test_hive_partitions_are_columns_and_the_layout_is_kept(model: Loaded, tmp_path: Path) -> None:
    for day in (1, 2):
        for region in ("eu", "us"):
            folder = tmp_path / "in" / f"day={day}" / f"region={region}"
            make_folder(folder, 1, 30, Format.PARQUET)
    s = run(model, tmp_path / "in", tmp_path / "out")
    assert (s.files, s.rows_scored) == (4, 120)
    out = tmp_path / "out" / "day=2" / "region=us" / "f000.parquet"
    table = pq.read_table(out)
    assert table.column("day").to_pylist() == [2] * 30  # integers, as pyarrow infers them
    assert table.column("region").to_pylist() == ["us"] * 30
    assert table.column_names[-3:] == ["probability", "class_id", "model_version"]
    # The output folder reads back as one hive-partitioned dataset (markers are skipped).
    back = ds.dataset(tmp_path / "out", format="parquet", partitioning="hive")
    rows = back.to_table(filter=ds.field("region") == "eu")
    assert rows.num_rows == 60


@pytest.mark.parametrize("count", [2, 3, 8])
def test_dataset_shards_union_equals_unsharded(model: Loaded, tmp_path: Path, count: int) -> None:
    make_folder(tmp_path / "in", 5, 300, Format.PARQUET, extras=True)
    # One file much larger than the rest, in row groups: it is split between the shards.
    big = points_table(6000, seed=50).set_column(0, "id", pa.array(np.arange(6000) + 10_000))
    pq.write_table(big, tmp_path / "in" / "big.parquet", row_group_size=500)
    whole = run(model, tmp_path / "in", tmp_path / "whole")
    scored = rejected = 0
    for k in range(count):
        s = run(model, tmp_path / "in", tmp_path / "parts", shard=Shard(k, count))
        scored, rejected = scored + s.rows_scored, rejected + s.rows_rejected
    assert (scored, rejected) == (whole.rows_scored, whole.rows_rejected) == (7500, 3)
    ids, _, probs = scored_ids_and_probs(tmp_path / "parts", Format.PARQUET)
    assert len(ids) == len(set(ids)) == 7500  # each row once
    w_ids, _, w_probs = scored_ids_and_probs(tmp_path / "whole", Format.PARQUET)
    np.testing.assert_array_equal(
        probs[np.argsort(ids)], w_probs[np.argsort(w_ids)]
    )  # the same scores, row for row
    pieces = sorted(p.name for p in (tmp_path / "parts").glob("big-rg*.parquet"))
    assert len(pieces) > 1 and not (tmp_path / "parts" / "big.parquet").exists()


def test_plan_balances_by_size_and_is_deterministic(tmp_path: Path) -> None:
    for i, rows in enumerate([4000, 1000, 1000, 1000, 1000, 500, 500]):
        write_points(points_table(rows, seed=i), tmp_path / f"f{i}.csv", Format.CSV)
    dataset = open_dataset(str(tmp_path), None)
    loads = []
    seen: list[str] = []
    for k in range(3):
        units = plan(dataset, str(tmp_path / "o"), Format.CSV, Shard(k, 3))
        again = plan(dataset, str(tmp_path / "o"), Format.CSV, Shard(k, 3))
        assert [u.output.uri for u in units] == [u.output.uri for u in again]
        loads.append(sum(u.file.size for u in units))
        seen += [u.file.key for u in units]
    assert sorted(seen) == [f"f{i}.csv" for i in range(7)]  # each file to exactly one shard
    sizes = sorted(p.stat().st_size for p in tmp_path.glob("*.csv"))
    # The best split: the 4000-row file alone, 1000 + 1000 + 500 rows on each other shard.
    assert max(loads) == sizes[-1], loads
    assert abs(loads[1] - loads[2]) <= sizes[0], loads


def test_csv_shards_read_only_their_own_bytes(model: Loaded, tmp_path: Path) -> None:
    src = write_points(points_table(40_000, seed=3), tmp_path / "in.csv", Format.CSV)
    size = src.stat().st_size
    reads = [
        run(model, src, tmp_path / "o.csv", shard=Shard(k, 4), chunk_size=4096).bytes_read
        for k in range(4)
    ]
    # Each reads its quarter, plus the header's first 16 KiB and 4 KiB past each cut.
    for got in reads:
        assert 0.24 * size < got < 0.25 * size + (32 << 10), (got, size)
    assert reads[3] - reads[0] <= 0.15 * size
    assert sum(reads) <= 1.1 * size
    # And the merged rejects/outputs still equal one run's (the union test covers rows).
    assert merge_file(tmp_path / "o.csv", Format.CSV)["rows"] == 40_000


def test_dataset_shards_bytes_read_total(model: Loaded, tmp_path: Path) -> None:
    make_folder(tmp_path / "in", 12, 2000, Format.PARQUET)
    size = sum(p.stat().st_size for p in (tmp_path / "in").iterdir())
    total = sum(
        run(model, tmp_path / "in", tmp_path / "out", shard=Shard(k, 4)).bytes_read
        for k in range(4)
    )
    assert size * 0.9 < total <= 1.1 * size, (total, size)


def test_resume_skips_finished_files_in_process(model: Loaded, tmp_path: Path) -> None:
    make_folder(tmp_path / "in", 3, 200, Format.PARQUET)
    calls = 0
    predict, version, _ = model

    def flaky(points: np.ndarray) -> np.ndarray:
        nonlocal calls
        calls += 1
        if calls == 7:  # the second file's second row group (40 rows each)
            raise RuntimeError("node lost")
        return predict(points)

    options = ScoreOptions(str(tmp_path / "in"), str(tmp_path / "out"), None, None, 100)
    with pytest.raises(ModelError, match="node lost"):
        score(options, lambda: (flaky, version, 0.0))
    assert (tmp_path / "out" / ".f000.parquet.done.json").exists()
    assert not (tmp_path / "out" / "f001.parquet").exists()
    first = (tmp_path / "out" / "f000.parquet").stat().st_mtime_ns
    s = run(model, tmp_path / "in", tmp_path / "out", resume=True)
    assert (s.files, s.files_skipped, s.rows_scored) == (3, 1, 400)
    assert (tmp_path / "out" / "f000.parquet").stat().st_mtime_ns == first  # not rewritten
    ids, _, _ = scored_ids_and_probs(tmp_path / "out", Format.PARQUET)
    assert sorted(ids) == list(range(600))
    # A changed input is not "finished": its size no longer matches the marker.
    write_points(points_table(10, seed=1), tmp_path / "in" / "f000.parquet", Format.PARQUET)
    s = run(model, tmp_path / "in", tmp_path / "out", resume=True)
    assert (s.files_skipped, s.rows_scored) == (2, 10)


def _cli(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "xor_dnn", "score", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )


@pytest.mark.slow
def test_resume_after_a_killed_shard_redoes_only_the_unfinished_file(
    model_dir: Path, tmp_path: Path
) -> None:
    make_folder(tmp_path / "in", 3, 100_000, Format.PARQUET)
    out = tmp_path / "out"
    args = ["-i", str(tmp_path / "in"), "-o", str(out), "--model-dir", str(model_dir)]
    proc = _cli(*args, "--chunk-size", "50", env={"XOR_DNN_NUM_SHARDS": "1"})
    deadline = time.monotonic() + 300
    while not (out / ".f000.parquet.done.json").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the first file never finished"
        time.sleep(0.005)  # polling for a file to appear, with a deadline
    os.kill(proc.pid, signal.SIGSTOP)
    job = psutil.Process(proc.pid)
    while job.status() not in (psutil.STATUS_STOPPED, psutil.STATUS_ZOMBIE):
        time.sleep(0.001)
    finished = sorted(p.name for p in out.glob(".*.done.json") if "rejects" not in p.name)
    proc.kill()
    proc.communicate()
    if len(finished) == 3:
        pytest.fail("the job finished every file before it could be stopped")
    assert not (out / "f002.parquet").exists()
    marks = {p.name: p.stat().st_mtime_ns for p in out.glob(".*.done.json")}
    again = _cli(*args, "--resume", env={})
    stdout, stderr = again.communicate(timeout=300)
    assert again.returncode == 0, stderr
    s = json.loads(stdout.strip().splitlines()[-1])
    assert s["files_skipped"] == len(finished) and s["rows_scored"] == 100_000 * (3 - len(finished))
    for name in finished:  # finished files were not redone
        assert (out / name).stat().st_mtime_ns == marks[name]
    ids, _, _ = scored_ids_and_probs(out, Format.PARQUET)
    assert sorted(ids) == list(range(300_000))


def test_s3_input_and_output(
    model: Loaded,
    reference: Callable[[np.ndarray], np.ndarray],
    s3: S3,
    bucket: str,
    tmp_path: Path,
) -> None:
    good = make_folder(tmp_path / "in", 7, 400, Format.PARQUET, extras=True)
    store = open_store(f"s3://{bucket}/points")
    for path in sorted((tmp_path / "in").iterdir()):
        store.upload(path, path.name)
    s = run(model, f"s3://{bucket}/points/", f"s3://{bucket}/scored")
    assert (s.files, s.rows_scored, s.rows_rejected) == (9, good, 3)
    keys = s3.keys(bucket)
    assert "scored/f006.parquet" in keys and "scored/f006.rejects.parquet" in keys
    assert "scored/_xor_dnn_manifest.json" in keys
    # Read back through the same layer; every id once, scores as direct calls give them.
    down = tmp_path / "down"
    down.mkdir()
    out = open_store(f"s3://{bucket}/scored")
    for key in out.list():
        if key.endswith(".parquet") and "rejects" not in key:
            out.download(key, down / key)
    ids, xy, probs = scored_ids_and_probs(down, Format.PARQUET)
    assert sorted(ids) == list(range(good))
    np.testing.assert_allclose(probs, reference(xy), rtol=1e-6, atol=1e-6)
    # --resume against the bucket: nothing is scored again (the empty file has no output
    # to find, and costs nothing either way).
    again = run(model, f"s3://{bucket}/points/", f"s3://{bucket}/scored", resume=True)
    assert (again.files_skipped, again.rows_scored, again.bytes_read) == (8, 0, 0)


def test_s3_csv_shards_read_their_ranges_and_merge(
    model: Loaded, s3: S3, bucket: str, tmp_path: Path
) -> None:
    table = points_table(40_000, seed=4)
    xs = table.column("x").to_pylist()
    xs[39_990] = None  # a bad row in the last shard
    src = write_points(table.set_column(1, "x", pa.array(xs)), tmp_path / "in.csv", Format.CSV)
    open_store(f"s3://{bucket}").upload(src, "in.csv")
    size = src.stat().st_size
    reads = []
    for k in range(4):
        s = run(model, f"s3://{bucket}/in.csv", f"s3://{bucket}/o/s.csv", shard=Shard(k, 4))
        reads.append(s.bytes_read)
    assert sum(reads) <= 1.1 * size and reads[3] - reads[0] <= 0.15 * size
    merge_file(f"s3://{bucket}/o/s.csv", Format.CSV)
    merge_file(f"s3://{bucket}/o/s.rejects.csv", Format.CSV)
    out = open_store(f"s3://{bucket}/o")
    rejects = out.read("s.rejects.csv").decode().splitlines()
    assert rejects[1].startswith("39992,x,missing value")  # the file's own line number
    assert out.read("s.csv").count(b"\n") == 40_000
    assert part_path(Path("s.csv"), 3, 4).name in {k for k in out.list()}


def test_s3_failure_mid_file_leaves_no_object_and_no_upload(
    model: Loaded, s3: S3, bucket: str, tmp_path: Path
) -> None:
    import http.client

    make_folder(tmp_path / "in", 1, 300_000, Format.PARQUET)
    calls = 0
    predict, version, _ = model

    def flaky(points: np.ndarray) -> np.ndarray:
        nonlocal calls
        calls += 1
        if calls == 4:  # after a few multipart-sized chunks were written
            raise RuntimeError("node lost")
        return predict(points)

    options = ScoreOptions(
        str(tmp_path / "in"), f"s3://{bucket}/out", None, Format.CSV, chunk_size=65536
    )
    with pytest.raises(ModelError, match="node lost"):
        score(options, lambda: (flaky, version, 0.0))
    assert s3.keys(bucket) == []
    conn = http.client.HTTPConnection("127.0.0.1", s3.moto_port, timeout=30)
    conn.request("GET", f"/{bucket}?uploads")
    listing = conn.getresponse().read().decode()
    conn.close()
    assert "<Upload>" not in listing  # the multipart upload was aborted
