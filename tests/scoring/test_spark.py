"""The Spark engine on real Spark in local mode (``local[2]``): the same scores and the same
rejected rows as the stream engine, the model loaded once per worker process, models from a
folder and from an S3 API, one-line errors.

Needs Java: without it the tests skip, unless ``XOR_DNN_REQUIRE_SPARK=1`` (set by ``.ci/run``)
makes a missing Java a failure. pyspark itself is in the ``dev`` extra: never skipped.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from bench._s3server import S3, running_s3
from scoring.errors import InputError, ModelError
from scoring.formats import Format
from tests.scoring.conftest import points_table, read_result, write_points
from xor_dnn.cli import main
from xor_dnn.modelstore import MANIFEST_FILE, publish_version

pytestmark = pytest.mark.slow

TOLERANCE = 1e-6
BAD_TEXT = ["", "  ", "abc", "1,5", "true", "nan", "-inf", "1e999"]
"""Coordinates the stream engine rejects, as a CSV writes them."""


def _java_missing() -> str | None:
    java_home = os.environ.get("JAVA_HOME")
    if shutil.which("java") or (java_home and Path(java_home, "bin", "java").is_file()):
        return None
    return "no java on PATH: apt-get install -y openjdk-17-jre-headless"


@pytest.fixture(scope="session")
def s3_for_spark() -> Iterator[S3]:
    """An S3 API whose ``AWS_*`` settings are in the environment before Spark starts: the
    executors' Python workers inherit the environment the JVM was started with."""
    with running_s3() as server:
        yield server


@pytest.fixture(scope="session")
def spark(s3_for_spark: S3) -> Iterator[Any]:
    """One ``local[2]`` SparkSession for this module (a JVM start costs seconds)."""
    reason = _java_missing()
    if reason is not None:
        if os.environ.get("XOR_DNN_REQUIRE_SPARK") == "1":
            pytest.fail(f"{reason} (XOR_DNN_REQUIRE_SPARK=1 forbids skipping the Spark tests)")
        pytest.skip(reason)
    from pyspark.sql import SparkSession

    # The workers must run this interpreter (the one with TensorFlow), not `python3` on PATH.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    session = (
        SparkSession.builder.master("local[2]")
        .appName("xor-dnn tests")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    try:
        yield session
    finally:
        session.stop()


def _with_bad_rows(n: int, seed: int, bad_every: int) -> tuple[list[dict[str, Any]], int]:
    """Rows of ``points_table`` as text with a bad x or y (or both) every ``bad_every`` rows."""
    rows = points_table(n, seed).to_pylist()
    bad = 0
    for i, row in enumerate(rows):
        row["x"], row["y"] = repr(row["x"]), repr(row["y"])
        if i % bad_every == 3:
            value = BAD_TEXT[(i // bad_every) % len(BAD_TEXT)]
            which = ("x", "y", "xy")[(i // bad_every) % 3]
            for col in which:
                row[col] = value
            bad += 1
        elif i % bad_every == 5:
            row["x"] = f" {row['x']} "  # surrounding spaces are allowed
    return rows, bad


def _write_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(rows[0].keys())
        w.writerows([r.values() for r in rows])
    return path


def _csv_folder(folder: Path) -> tuple[Path, int]:
    """Three CSV files (ids unique across them) with bad rows of every kind; total bad rows."""
    folder.mkdir()
    total_bad = 0
    for k in range(3):
        rows, bad = _with_bad_rows(1500, seed=k, bad_every=37)
        for row in rows:
            row["id"] += k * 10_000
        _write_csv(rows, folder / f"points-{k}.csv")
        total_bad += bad
    return folder, total_bad


def _parquet_folder(folder: Path) -> Path:
    """Four Parquet files of typed columns: NaN, infinity and nulls among the doubles."""
    folder.mkdir()
    for k in range(4):
        table = points_table(1200, seed=10 + k)
        x = table.column("x").to_numpy().copy()
        y = table.column("y").to_numpy().copy()
        x[7::50], y[19::60] = np.nan, np.inf
        x_mask = np.zeros(len(x), dtype=bool)
        x_mask[11::70] = True
        table = table.set_column(1, "x", pa.array(x, mask=x_mask))
        table = table.set_column(2, "y", pa.array(y))
        table = table.set_column(0, "id", pa.array(table.column("id").to_numpy() + k * 10_000))
        pq.write_table(table, folder / f"part-{k}.parquet", row_group_size=400)
    return folder


def _stream_cli(
    files: list[Path], out_dir: Path, model_dir: Path, fmt: Format
) -> tuple[dict[int, tuple[float, int, int]], set[tuple[int, str, str]]]:
    """Scores by id and the rejected (id, column, reason) of the stream engine, file by file."""
    scores: dict[int, tuple[float, int, int]] = {}
    rejected: set[tuple[int, str, str]] = set()
    out_dir.mkdir()
    for src in files:
        out = out_dir / f"{src.stem}.parquet"
        args = ["score", "-i", str(src), "-o", str(out), "--model-dir", str(model_dir)]
        assert main(args) == 0
        table = pq.read_table(out)
        for row in table.select(["id", "probability", "class_id", "model_version"]).to_pylist():
            scores[int(row["id"])] = (row["probability"], row["class_id"], row["model_version"])
        if fmt is Format.PARQUET:
            ids = pq.read_table(src).column("id").to_pylist()
        else:
            with open(src, newline="") as fh:
                ids = [int(r["id"]) for r in csv.DictReader(fh)]
        first_row = 1 if fmt is Format.PARQUET else 2  # a CSV's header is line 1
        for rej in pq.read_table(out_dir / f"{src.stem}.rejects.parquet").to_pylist():
            rejected.add((ids[rej["row"] - first_row], rej["column"], rej["reason"]))
    return scores, rejected


def _spark_output(folder: Path, fmt: Format) -> pa.Table:
    parts = sorted(p for p in folder.iterdir() if p.name.startswith("part-"))
    assert (folder / "_SUCCESS").is_file()
    if fmt is Format.PARQUET:
        return ds.dataset(parts, format="parquet").to_table()
    tables = [read_result(p, Format.CSV) for p in parts if p.stat().st_size]
    return pa.concat_tables([t for t in tables if t.num_rows], promote_options="permissive")


def _assert_same_as_stream(
    out: pa.Table,
    rejects: pa.Table,
    expected: dict[int, tuple[float, int, int]],
    expected_rejects: set[tuple[int, str, str]],
) -> None:
    ids = [int(i) for i in out.column("id").to_pylist()]
    assert len(ids) == len(set(ids)) == len(expected)
    assert set(ids) == set(expected)
    want = np.array([expected[i][0] for i in ids])
    got = np.asarray(out.column("probability").to_pylist(), dtype=np.float64)
    assert np.max(np.abs(got - want)) <= TOLERANCE
    assert [int(c) for c in out.column("class_id").to_pylist()] == [expected[i][1] for i in ids]
    assert {int(v) for v in out.column("model_version").to_pylist()} == {expected[ids[0]][2]}
    got_rejects = {
        (int(r["id"]), r["reject_column"], r["reject_reason"]) for r in rejects.to_pylist()
    }
    assert got_rejects == expected_rejects


def test_csv_folder_scores_and_rejects_like_the_stream_engine(
    spark: Any, model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, bad = _csv_folder(tmp_path / "points")
    expected, expected_rejects = _stream_cli(
        sorted(folder.iterdir()), tmp_path / "stream", model_dir, Format.CSV
    )
    assert len(expected_rejects) == bad > 0
    capsys.readouterr()
    out = tmp_path / "scores.parquet"
    args = ["score", "--engine", "spark", "-i", str(folder), "-o", str(out)]
    code = main([*args, "--model-dir", str(model_dir)])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0, summary
    assert summary["status"] == "ok" and summary["engine"] == "spark"
    assert summary["rows_scored"] == len(expected) and summary["rows_rejected"] == bad
    assert summary["model_version"] == 2 and summary["rejects"] == str(
        tmp_path / "scores.rejects.parquet"
    )
    scores = _spark_output(out, Format.PARQUET)
    added = ["probability", "class_id", "model_version"]
    assert scores.column_names == ["id", "x", "y", "label", *added]
    types = {f.name: f.type for f in scores.schema}
    assert (types["x"], types["y"], types["probability"]) == (pa.float64(),) * 2 + (pa.float32(),)
    assert (types["class_id"], types["model_version"]) == (pa.int8(), pa.int32())
    # The label column holds commas and doubled quotes: read back whole.
    assert set(scores.column("label").to_pylist()) >= {"a,b", 'say "hi"'}
    rejects = _spark_output(tmp_path / "scores.rejects.parquet", Format.PARQUET)
    _assert_same_as_stream(scores, rejects, expected, expected_rejects)


def test_parquet_folder_to_csv_like_the_stream_engine(
    spark: Any, model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _parquet_folder(tmp_path / "points")
    expected, expected_rejects = _stream_cli(
        sorted(folder.iterdir()), tmp_path / "stream", model_dir, Format.PARQUET
    )
    reasons = {reason for _, _, reason in expected_rejects}
    assert reasons == {"missing value", "not finite"}
    out = tmp_path / "scores"
    args = ["score", "--engine", "spark", "-i", str(folder), "-o", str(out)]
    args += ["--output-format", "csv", "--model-dir", str(model_dir), "--version", "2"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["rows_read"] == 4 * 1200
    scores = _spark_output(out, Format.CSV)
    rejects = _spark_output(tmp_path / "scores.rejects.csv", Format.CSV)
    _assert_same_as_stream(scores, rejects, expected, expected_rejects)


def test_model_loads_once_per_worker_process_not_per_batch(
    spark: Any, model_dir: Path, tmp_path: Path
) -> None:
    from scoring.spark import BATCH_ROWS_CONF, score_dataframe

    # A model folder of its own: no worker of this session has this cache key yet.
    own = tmp_path / "xor"
    shutil.copytree(model_dir / "2", own / "2")
    folder = _parquet_folder(tmp_path / "points")
    df = spark.read.parquet(str(folder)).repartition(8)
    previous = spark.conf.get(BATCH_ROWS_CONF)
    spark.conf.set(BATCH_ROWS_CONF, "100")
    try:
        first = score_dataframe(df, own)
        first.scores.write.format("noop").mode("overwrite").save()
        second = score_dataframe(df, str(own))
        second.scores.write.format("noop").mode("overwrite").save()
    finally:
        spark.conf.set(BATCH_ROWS_CONF, previous)
    assert first.model_version == second.model_version == 2
    assert first.model_dir == str(own.resolve())
    # Every worker process that scored loaded the model exactly once for dozens of batches.
    assert sum(first.batches.values()) >= 40
    assert first.model_loads == dict.fromkeys(first.batches, 1)
    # A worker that already held the model in the first job did not load it again.
    for worker in second.batches:
        assert second.model_loads.get(worker, 0) == (0 if worker in first.batches else 1)
    assert first.rows_scored == second.rows_scored > 4000


def test_model_from_an_s3_bucket(
    spark: Any,
    s3_for_spark: S3,
    model_dir: Path,
    reference: Callable[[np.ndarray], np.ndarray],
) -> None:
    from scoring.spark import score_dataframe

    bucket = s3_for_spark.make_bucket()
    uri = f"s3://{bucket}/models/xor"
    number, _ = publish_version(
        uri,
        lambda tmp: shutil.copytree(
            model_dir / "2", tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns(MANIFEST_FILE)
        ),
    )
    table = points_table(3000, seed=5).select(["id", "x", "y"])
    df = spark.createDataFrame(table).repartition(3)
    result = score_dataframe(df, uri, threshold=0.25)
    got = result.scores.toArrow().sort_by("id")
    assert result.model_version == number and result.model_dir == uri
    assert set(got.column("model_version").to_pylist()) == {number}
    want = reference(np.column_stack([got.column("x"), got.column("y")]))
    prob = got.column("probability").to_numpy()
    assert np.max(np.abs(prob - want)) <= TOLERANCE
    assert got.column("class_id").to_pylist() == (prob >= 0.25).astype(int).tolist()
    assert sum(result.model_loads.values()) >= 1
    assert result.rejects.count() == 0


def test_bad_calls_fail_before_any_job(spark: Any, model_dir: Path) -> None:
    from scoring.spark import score_dataframe

    df = spark.createDataFrame([(1.0, 2.0, 0.1)], ["x", "y", "probability"])
    with pytest.raises(InputError, match="no column 'lon' \\(--x-col\\); it has: x, y"):
        score_dataframe(df, model_dir, x_col="lon")
    with pytest.raises(InputError, match="already has column\\(s\\) probability"):
        score_dataframe(df, model_dir)
    clean = df.drop("probability")
    with pytest.raises(ModelError, match=r"version 9 not found under .* \(have: \[1, 2\]\)"):
        score_dataframe(clean, model_dir, version=9)
    with pytest.raises(InputError, match=r"threshold must be in \[0, 1\], got 1\.5"):
        score_dataframe(clean, model_dir, threshold=1.5)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--strict"], "--strict does not apply to --engine spark"),
        (["--num-shards", "2"], "--num-shards does not apply to --engine spark"),
        (["--y-col", "lat"], "no column 'lat' (--y-col)"),
        (["--version", "5"], "version 5 not found"),
    ],
)
def test_cli_errors_are_one_line(
    spark: Any,
    model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    src = write_points(points_table(20), tmp_path / "in.parquet", Format.PARQUET)
    args = ["score", "--engine", "spark", "-i", str(src), "-o", str(tmp_path / "o.parquet")]
    assert main([*args, "--model-dir", str(model_dir), *extra]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out.strip().splitlines()[-1])["status"] == "error"
    assert message in captured.err and captured.err.count("\n") == 1
    assert not (tmp_path / "o.parquet").exists()


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("points", "--output {tmp}/points would delete the input {tmp}/points"),
        (".", "--output {tmp} would delete the input {tmp}/points"),
        ("docs", "--output {tmp}/docs: an existing folder that is not a Spark output"),
    ],
)
def test_outputs_that_spark_would_delete_wrongly_are_refused(
    spark: Any,
    model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    output: str,
    message: str,
) -> None:
    folder = tmp_path / "points"
    folder.mkdir()
    write_points(points_table(10), folder / "a.parquet", Format.PARQUET)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("keep me")
    out = tmp_path / output
    args = ["score", "--engine", "spark", "-i", str(folder), "-o", str(out)]
    assert main([*args, "--model-dir", str(model_dir)]) == 1
    assert message.format(tmp=tmp_path) in capsys.readouterr().err
    assert (folder / "a.parquet").is_file() and (tmp_path / "docs" / "notes.txt").is_file()


def test_a_model_that_fails_on_the_executors_is_one_line(
    spark: Any, model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(model_dir / "1", broken / "1")
    (broken / "1" / "saved_model.pb").write_bytes(b"not a SavedModel")
    src = write_points(points_table(50), tmp_path / "in.csv", Format.CSV)
    out = tmp_path / "o.parquet"
    args = ["score", "--engine", "spark", "-i", str(src), "-o", str(out)]
    code = main([*args, "--model-dir", str(broken)])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and "Traceback" not in err
    assert str(broken / "1") in err
    assert not (out / "_SUCCESS").exists()


def test_a_folder_needs_one_format(
    spark: Any, model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "points"
    folder.mkdir()
    write_points(points_table(10), folder / "a.csv", Format.CSV)
    # Side files as Hadoop tools leave them: a marker and a hidden checksum.
    (folder / "_SUCCESS").write_bytes(b"")
    (folder / ".a.csv.crc").write_bytes(b"crc")
    args = ["score", "--engine", "spark", "-i", str(folder), "-o", str(tmp_path / "o")]
    assert main([*args, "--model-dir", str(model_dir)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["rows_scored"] == 10
    assert next((tmp_path / "o").glob("part-*.csv"))  # the input's format, for a bare name
    write_points(points_table(10), folder / "b.parquet", Format.PARQUET)
    assert main([*args, "--model-dir", str(model_dir)]) == 1
    assert "cannot tell the folder's format (csv, parquet); pass --input-format" in (
        capsys.readouterr().err
    )


def test_hive_partitioned_folder_keeps_its_partition_column(
    spark: Any, model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "points"
    for k, region in enumerate(("north", "south")):
        (folder / f"region={region}").mkdir(parents=True)
        table = points_table(200, seed=k).select(["id", "x", "y"])
        table = table.set_column(0, "id", pa.array(table.column("id").to_numpy() + k * 1000))
        pq.write_table(table, folder / f"region={region}" / "part-0.parquet")
    out = tmp_path / "scores"
    args = ["score", "--engine", "spark", "-i", str(folder), "-o", str(out)]
    assert main([*args, "--model-dir", str(model_dir)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["rows_scored"] == 400
    scores = _spark_output(out, Format.PARQUET)
    added = ["probability", "class_id", "model_version"]
    assert scores.column_names == ["id", "x", "y", "region", *added]
    pairs = zip(scores["id"].to_pylist(), scores["region"].to_pylist(), strict=True)
    by_region: dict[str, list[int]] = {"north": [], "south": []}
    for i, region in pairs:
        by_region[region].append(int(i))
    assert {k: sorted(v) for k, v in by_region.items()} == {
        "north": list(range(200)),
        "south": list(range(1000, 1200)),
    }
