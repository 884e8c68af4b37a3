"""The score job end to end in-process: results, formats, bad rows, strict mode, shards, merge."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scoring.errors import InputError, ModelError, StrictModeError
from scoring.formats import Format, part_path
from scoring.merge import merge_file
from scoring.model import load_model
from scoring.score import ScoreOptions, Summary, score
from scoring.shards import Shard
from tests.scoring.conftest import points_table, read_result, write_points
from xor_dnn.modelstore import FAST_CALL_ATOL, FAST_CALL_RTOL

FORMATS = list(Format)


def run(model_dir: Path, src: Path, out: Path, *, version: int | None = 2, **kw: Any) -> Summary:
    fmt_in = kw.pop("input_format", Format(src.suffix[1:]))
    fmt_out = kw.pop("output_format", Format(out.suffix[1:]))
    options = ScoreOptions(src, out, fmt_in, fmt_out, progress=False, **kw)
    return score(options, lambda: load_model(model_dir, version))


@pytest.mark.parametrize(("fmt_in", "fmt_out"), list(itertools.product(FORMATS, FORMATS)))
def test_every_format_pair_matches_direct_signature_calls(
    model_dir: Path,
    reference: Callable[[np.ndarray], np.ndarray],
    tmp_path: Path,
    fmt_in: Format,
    fmt_out: Format,
) -> None:
    table = points_table(1500, seed=3)
    src = write_points(table, tmp_path / f"in.{fmt_in}", fmt_in)
    out = tmp_path / f"out.{fmt_out}"
    summary = run(model_dir, src, out, chunk_size=256)
    assert (summary.rows_read, summary.rows_scored, summary.rows_rejected) == (1500, 1500, 0)
    assert summary.model_version == 2
    result = read_result(out, fmt_out)
    assert result.column_names == [
        "id",
        "x",
        "y",
        "label",
        "probability",
        "class_id",
        "model_version",
    ]
    # A CSV carries no types: its other columns stay text, in every output format.
    id_type = pa.string() if fmt_in is Format.CSV and fmt_out is not Format.CSV else pa.int64()
    assert result.schema.field("id").type == id_type
    assert [int(v) for v in result.column("id").to_pylist()] == list(range(1500))  # order kept
    assert result.column("label").to_pylist() == table.column("label").to_pylist()
    xy = np.column_stack([table.column("x").to_numpy(), table.column("y").to_numpy()])
    np.testing.assert_allclose(result.column("x").to_numpy(), xy[:, 0], rtol=0, atol=0)
    expected = reference(xy)
    got = result.column("probability").to_numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    assert result.column("class_id").to_pylist() == (expected >= 0.5).astype(int).tolist()
    assert set(result.column("model_version").to_pylist()) == {2}
    assert read_result(tmp_path / f"out.rejects.{fmt_out}", fmt_out).num_rows == 0


def test_parquet_output_records_version_in_metadata(model_dir: Path, tmp_path: Path) -> None:
    src = write_points(points_table(10), tmp_path / "in.parquet", Format.PARQUET)
    run(model_dir, src, tmp_path / "out.parquet", version=1)
    meta = pq.read_schema(tmp_path / "out.parquet").metadata
    assert meta[b"xor_dnn.model_version"] == b"1"
    assert pq.read_table(tmp_path / "out.parquet").schema.field("class_id").type == pa.int8()


BAD_CSV = (
    "id,x,y,label\n"  # line 1
    "0,1.5,-2,ok\n"  # 2
    "1,abc,1,text\n"  # 3: not a number
    "\n"  # 4: blank line: missing
    "2,1,2\n"  # 5: too few fields
    "3, -1.5 ,2e0,spaces\n"  # 6: fine
    "4,nan,1,nan\n"  # 7: not finite
    "5,1,,empty y\n"  # 8: missing y
    "6,1,2,a,extra\n"  # 9: too many fields
    "7,-inf,3,inf\n"  # 10: not finite
    "8,1,1e999,overflow\n"  # 11: overflows to inf
    "9,-2,3,ok\n"  # 12
)
BAD_CSV_REJECTS = [
    (3, "x", "not a number", "abc"),
    (4, "x", "missing value", ""),
    (5, None, "expected 4 fields, got 3", "2,1,2"),
    (7, "x", "not finite", "nan"),
    (8, "y", "missing value", ""),
    (9, None, "expected 4 fields, got 5", "6,1,2,a,extra"),
    (10, "x", "not finite", "-inf"),
    (11, "y", "not finite", "1e999"),
]


@pytest.mark.parametrize("chunk_size", [1, 3, 65536])
def test_csv_bad_rows_are_rejected_with_line_numbers(
    model_dir: Path, tmp_path: Path, chunk_size: int
) -> None:
    src = tmp_path / "in.csv"
    src.write_text(BAD_CSV)
    summary = run(model_dir, src, tmp_path / "out.csv", chunk_size=chunk_size)
    assert (summary.rows_read, summary.rows_scored, summary.rows_rejected) == (11, 3, 8)
    assert read_result(tmp_path / "out.csv", Format.CSV).column("id").to_pylist() == [0, 3, 9]
    rejects = read_result(tmp_path / "out.rejects.csv", Format.CSV)
    got = list(zip(*(rejects.column(c).to_pylist() for c in rejects.column_names), strict=True))
    assert [(r, c or None, why, v or "") for r, c, why, v in got] == BAD_CSV_REJECTS


BAD_JSONL = (
    '{"id": 0, "x": 1.5, "y": -2}\n'  # 1
    '{"id": 1, "x": "abc", "y": 1}\n'  # 2: not a number
    "\n"  # 3: blank, skipped
    '{"id": 2, "y": 2}\n'  # 4: x missing
    "not json\n"  # 5
    '{"id": 3, "x": true, "y": 2}\n'  # 6: boolean is not a number
    '{"id": 4, "x": 1, "y": null}\n'  # 7: missing y
    "[1, 2]\n"  # 8: not an object
    '{"id": 5, "x": 1e999, "y": 0}\n'  # 9: not finite
    '{"id": [6], "x": 1, "y": 2}\n'  # 10: a list does not fit the number column id
    '{"id": 7, "x": -2, "y": 3, "new": 1}\n'  # 11: fine
)


def test_jsonl_bad_rows(model_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(BAD_JSONL)
    summary = run(model_dir, src, tmp_path / "out.jsonl", chunk_size=2)
    assert (summary.rows_scored, summary.rows_rejected) == (2, 8)
    assert read_result(tmp_path / "out.jsonl", Format.JSONL).column("id").to_pylist() == [0, 7]
    rejects = read_result(tmp_path / "out.rejects.jsonl", Format.JSONL)
    rows = rejects.column("row").to_pylist()
    reasons = rejects.column("reason").to_pylist()
    assert rows == [2, 4, 5, 6, 7, 8, 9, 10]
    assert reasons[:6] == [
        "not a number",
        "missing value",
        "invalid JSON",
        "not a number",
        "missing value",
        "not a JSON object",
    ]
    assert reasons[6] == "not finite"
    assert reasons[7].startswith("does not fit")
    assert rejects.column("column").to_pylist()[:2] == ["x", "x"]


def test_parquet_bad_rows(model_dir: Path, tmp_path: Path) -> None:
    table = pa.table(
        {"x": [1.0, None, float("nan"), 2.0, float("inf")], "y": [1.0, 2.0, 3.0, None, 1.0]}
    )
    pq.write_table(table, tmp_path / "in.parquet", row_group_size=2)
    summary = run(model_dir, tmp_path / "in.parquet", tmp_path / "out.csv")
    assert (summary.rows_scored, summary.rows_rejected) == (1, 4)
    rejects = read_result(tmp_path / "out.rejects.csv", Format.CSV)
    assert rejects.column("row").to_pylist() == [2, 3, 4, 5]
    assert rejects.column("reason").to_pylist() == [
        "missing value",
        "not finite",
        "missing value",
        "not finite",
    ]


@pytest.mark.parametrize("fmt", FORMATS)
def test_strict_mode_names_first_bad_row_and_writes_nothing(
    model_dir: Path, tmp_path: Path, fmt: Format
) -> None:
    table = points_table(50)
    xs = table.column("x").to_pylist()
    xs[31] = None
    xs[40] = None
    src = write_points(table.set_column(1, "x", pa.array(xs)), tmp_path / f"in.{fmt}", fmt)
    with pytest.raises(StrictModeError) as err:
        run(model_dir, src, tmp_path / f"out.{fmt}", strict=True, chunk_size=16)
    expected_row = 33 if fmt is Format.CSV else 32  # a CSV header is row 1
    assert (err.value.row, err.value.column) == (expected_row, "x")
    assert f"row {expected_row}, column 'x'" in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"in.{fmt}"]
    assert job_threads() == []


def test_strict_mode_on_malformed_csv_row(model_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("x,y\n1,2\n3\n")
    with pytest.raises(StrictModeError, match="row 3: expected 2 fields, got 1"):
        run(model_dir, src, tmp_path / "out.csv", strict=True)


def _dump(table: pa.Table) -> list[tuple[Any, ...]]:
    return sorted(zip(*(table.column(c).to_pylist() for c in table.column_names), strict=True))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("count", [1, 3, 7])
def test_shards_union_equals_unsharded(
    model_dir: Path, tmp_path: Path, fmt: Format, count: int
) -> None:
    table = points_table(997, seed=5)
    xs = table.column("x").to_pylist()
    for i in (0, 500, 996):
        xs[i] = None  # bad rows in the first, a middle and the last shard
    src = write_points(table.set_column(1, "x", pa.array(xs)), tmp_path / f"in.{fmt}", fmt)
    whole = tmp_path / "whole" / f"out.{fmt}"
    run(model_dir, src, whole, chunk_size=64)
    out = tmp_path / "parts" / f"out.{fmt}"
    scored = rejected = 0
    for k in range(count):
        s = run(model_dir, src, out, shard=Shard(k, count), chunk_size=64)
        assert s.output == str(part_path(out, k, count))
        scored += s.rows_scored
        rejected += s.rows_rejected
    assert (scored, rejected) == (994, 3)
    parts = [read_result(part_path(out, k, count), fmt) for k in range(count)]
    ids = [int(i) for p in parts for i in p.column("id").to_pylist()]
    assert ids == sorted(set(ids)) and len(ids) == 994  # none twice, none missing, in order
    if count > 1:
        assert merge_file(out, fmt)["parts"] == count
        merge_file(tmp_path / "parts" / f"out.rejects.{fmt}", fmt)
    assert _dump(read_result(out, fmt)) == _dump(read_result(whole, fmt))
    whole_rejects = read_result(tmp_path / "whole" / f"out.rejects.{fmt}", fmt)
    assert _dump(read_result(tmp_path / "parts" / f"out.rejects.{fmt}", fmt)) == _dump(
        whole_rejects
    )
    assert whole_rejects.column("row").to_pylist() == (
        [2, 502, 998] if fmt is Format.CSV else [1, 501, 997]
    )


def test_more_shards_than_rows(model_dir: Path, tmp_path: Path) -> None:
    src = write_points(points_table(2), tmp_path / "in.csv", Format.CSV)
    total = sum(
        run(model_dir, src, tmp_path / "o.csv", shard=Shard(k, 7)).rows_scored for k in range(7)
    )
    assert total == 2
    assert read_result(part_path(tmp_path / "o.csv", 6, 7), Format.CSV).num_rows == 0


@pytest.mark.parametrize(
    ("content", "kwargs", "message"),
    [
        ("a,y\n1,2\n", {}, "no column 'x' \\(--x-col\\); it has: a, y"),
        ("x,y\n1,2\n", {"y_col": "x"}, "--x-col and --y-col are both 'x'"),
        ("x,y,probability\n1,2,3\n", {}, "already has column\\(s\\) probability"),
        ("", {}, "empty file"),
        ("x,x\n1,2\n", {}, "duplicate column names"),
    ],
)
def test_input_errors_fail_before_loading_the_model(
    tmp_path: Path, content: str, kwargs: dict[str, Any], message: str
) -> None:
    src = tmp_path / "in.csv"
    src.write_text(content)
    options = ScoreOptions(src, tmp_path / "o.csv", Format.CSV, Format.CSV, **kwargs)

    def never() -> Any:
        raise AssertionError("the model was loaded before the input was checked")

    with pytest.raises(InputError, match=message):
        score(options, never)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


def test_unreadable_parquet(tmp_path: Path) -> None:
    src = tmp_path / "in.parquet"
    src.write_bytes(b"not parquet at all")
    options = ScoreOptions(src, tmp_path / "o.csv", Format.PARQUET, Format.CSV)
    with pytest.raises(InputError, match=r"in\.parquet: cannot read"):
        score(options, lambda: (np.zeros, 1, 0.0))


def test_missing_version(model_dir: Path, tmp_path: Path) -> None:
    src = write_points(points_table(3), tmp_path / "in.csv", Format.CSV)
    with pytest.raises(ModelError, match="version 9 not found"):
        run(model_dir, src, tmp_path / "o.csv", version=9)
    with pytest.raises(ModelError, match="no model version under"):
        run(tmp_path / "empty", src, tmp_path / "o.csv", version=None)
    assert not (tmp_path / "o.csv").exists()


def test_failure_mid_run_leaves_nothing(model_dir: Path, tmp_path: Path) -> None:
    src = write_points(points_table(2000), tmp_path / "in.parquet", Format.PARQUET)
    (tmp_path / "out.csv").write_text("previous result\n")
    calls = 0
    predict, version, _ = load_model(model_dir, 2)

    def flaky(points: np.ndarray) -> np.ndarray:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("device lost")
        return predict(points)

    options = ScoreOptions(src, tmp_path / "out.csv", Format.PARQUET, Format.CSV, chunk_size=100)
    with pytest.raises(ModelError, match="device lost"):
        score(options, lambda: (flaky, version, 0.0))
    # The earlier complete file is untouched and no temporary file is left.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet", "out.csv"]
    assert (tmp_path / "out.csv").read_text() == "previous result\n"
    assert job_threads() == []


def job_threads() -> list[str]:
    """The job's reader and writer threads still alive (none once score() has returned)."""
    return [t.name for t in threading.enumerate() if t.name.startswith("xor-dnn-score")]


def test_read_error_mid_run_surfaces_and_leaves_nothing(model_dir: Path, tmp_path: Path) -> None:
    # Reading runs ahead on its own thread: an error it meets after some chunks were scored
    # (invalid UTF-8 near the end of a CSV) must still fail the job, with no file left.
    src = write_points(points_table(6000), tmp_path / "in.csv", Format.CSV)
    data = src.read_bytes()
    cut = data.rfind(b"\n", 0, len(data) - 2000) + 1
    src.write_bytes(data[:cut] + b"\xff" + data[cut:])
    predict, version, _ = load_model(model_dir, 2)
    calls = 0

    def counting(points: np.ndarray) -> np.ndarray:
        nonlocal calls
        calls += 1
        return predict(points)

    options = ScoreOptions(src, tmp_path / "out.parquet", Format.CSV, Format.PARQUET, 256)
    with pytest.raises(InputError, match=r"in\.csv: cannot read"):
        score(options, lambda: (counting, version, 0.0))
    assert calls > 1  # the failure came mid-run, not at open
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]
    assert job_threads() == []


def test_seconds_run_from_open_to_rename_without_the_model_load(
    model_dir: Path, tmp_path: Path
) -> None:
    src = write_points(points_table(100), tmp_path / "in.parquet", Format.PARQUET)
    predict, version, _ = load_model(model_dir, 2)

    def slow_load() -> tuple[Callable[[np.ndarray], np.ndarray], int, float]:
        time.sleep(1.0)
        return predict, version, 1.0

    options = ScoreOptions(src, tmp_path / "out.parquet", Format.PARQUET, Format.PARQUET)
    started = time.perf_counter()
    summary = score(options, slow_load)
    wall = time.perf_counter() - started
    assert summary.startup_seconds == 1.0
    assert 0.0 < summary.seconds <= wall - 1.0  # the whole call less the (>= 1 s) load
    assert summary.rows_per_second == pytest.approx(100 / summary.seconds, rel=0.01)


def _publish_constant_model(root: Path, value: float) -> None:
    import tensorflow as tf

    class Constant(tf.Module):  # type: ignore[misc]
        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="points")])
        def serve(self, points: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"probability": points[:, :1] * 0.0 + value}

    module = Constant()
    tf.saved_model.save(module, str(root / "1"), signatures={"serving_default": module.serve})


@pytest.mark.parametrize("value", [1.5, float("nan")])
def test_model_load_warms_up_and_rejects_impossible_probabilities(
    tmp_path: Path, value: float
) -> None:
    _publish_constant_model(tmp_path, value)
    with pytest.raises(ModelError, match="version 1: warm-up returned"):
        load_model(tmp_path, 1)


def test_model_load_warm_up_accepts_a_valid_model(tmp_path: Path) -> None:
    _publish_constant_model(tmp_path, 0.25)
    predict, version, seconds = load_model(tmp_path, None, warm_up_rows=1000)
    assert version == 1 and seconds > 0
    np.testing.assert_array_equal(predict(np.zeros((3, 2), np.float32)), [0.25] * 3)


def test_loaded_predict_matches_the_signature_to_float32_rounding(
    model_dir: Path, reference: Callable[[np.ndarray], np.ndarray]
) -> None:
    # load_model folds the variables into constants for speed; the answers may move only by
    # the float32 rounding xor_dnn.modelstore documents for a fast path.
    predict, version, _ = load_model(model_dir, 2, warm_up_rows=1000)
    xy = np.random.default_rng(7).uniform(-20, 20, size=(70_000, 2)).astype(np.float32)
    assert version == 2
    close = {"rtol": FAST_CALL_RTOL, "atol": FAST_CALL_ATOL}
    np.testing.assert_allclose(predict(xy), reference(xy), **close)
    np.testing.assert_allclose(predict(xy[:3]), reference(xy[:3]), **close)


@pytest.mark.parametrize("broken", ["raises", "inexact"])
def test_model_load_falls_back_to_the_signature(
    model_dir: Path,
    reference: Callable[[np.ndarray], np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
    broken: str,
) -> None:
    import tensorflow as tf
    from tensorflow.python.framework import convert_to_constants

    def fold(fn: Any) -> Any:
        if broken == "raises":
            raise ValueError("cannot fold this graph")
        return lambda points: [tf.fill([tf.shape(points)[0], 1], 0.5)]

    monkeypatch.setattr(convert_to_constants, "convert_variables_to_constants_v2", fold)
    predict, _, _ = load_model(model_dir, 2, warm_up_rows=100)
    xy = np.random.default_rng(8).uniform(-5, 5, size=(500, 2)).astype(np.float32)
    np.testing.assert_array_equal(predict(xy), reference(xy))


@pytest.mark.parametrize("output", ["out.csv", "out.parquet"])
def test_interrupt_while_an_output_opens_leaves_no_temporary_file(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, output: str
) -> None:
    # Ctrl-C landing after a sink made its temporary file but before the job holds the sink.
    import scoring.score as job

    real_open = job.open_sink

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        real_open(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(job, "open_sink", interrupted)
    src = write_points(points_table(100), tmp_path / "in.parquet", Format.PARQUET)
    fmt = Format.CSV if output.endswith(".csv") else Format.PARQUET
    options = ScoreOptions(src, tmp_path / "out" / output, Format.PARQUET, fmt)
    with pytest.raises(KeyboardInterrupt):
        score(options, lambda: load_model(model_dir, 2))
    assert list((tmp_path / "out").iterdir()) == []
