"""The Spark engine: score a DataFrame with the SavedModel through Arrow (``mapInArrow``), the
model loaded once per Python worker process and kept there for the process's life.

Usage, inside an existing Spark job::

    from scoring.spark import score_dataframe

    result = score_dataframe(spark.read.parquet("s3a://lake/points/"), "s3://models/xor")
    result.scores.write.parquet("s3a://lake/scores/")    # input columns + the three added
    result.rejects.write.parquet("s3a://lake/rejects/")  # bad rows, with the reason

The rules are the stream engine's (:mod:`scoring.score`, :mod:`scoring.validate`): the same
rows are rejected for the same reasons, the scores get the same columns and types, and every
row carries the version that scored it, resolved once on the driver so that every executor
loads that one. ``xor-dnn score --engine spark`` (:func:`score_files`) reads and writes files
with it. What differs, and why, is in docs/spark.md.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pyarrow as pa

from scoring.errors import InputError, ModelError, OutputError, ScoringError
from scoring.formats import Format, default_rejects_path, detect_format
from scoring.model import Predict, load_model, resolve_version
from scoring.score import (
    ADDED_COLUMNS,
    CLASS_ID,
    MODEL_VERSION,
    PROBABILITY,
    added_columns,
    score_batch,
)
from scoring.validate import OK, parse_coordinate, reject_reasons

if TYPE_CHECKING:
    import argparse

    from pyspark import SparkContext
    from pyspark.accumulators import Accumulator, AccumulatorParam
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

REJECT_COLUMN, REJECT_REASON = "reject_column", "reject_reason"
REJECT_COLUMNS = (REJECT_COLUMN, REJECT_REASON)
"""Added to a rejected row, which keeps its own columns: Spark knows no line numbers, so the
row's own key (an id column) is what locates it."""
BATCH_ROWS_CONF = "spark.sql.execution.arrow.maxRecordsPerBatch"

_models: dict[tuple[str, int], Predict] = {}
"""This process's loaded models by (model dir, version): a Python worker serves many tasks."""
_models_lock = threading.Lock()


def worker_id() -> str:
    """The host and process that runs this code: executors in pods may share process ids."""
    return f"{socket.gethostname()}:{os.getpid()}"


def cached_model(model_dir: str, version: int, warm_up_rows: int) -> tuple[Predict, bool]:
    """``(predict, loaded_now)``: the model from this process's cache, loaded on first use."""
    key = (model_dir, version)
    with _models_lock:
        predict = _models.get(key)
        if predict is not None:
            return predict, False
        predict, _, _ = load_model(model_dir, version, warm_up_rows=warm_up_rows)
        _models[key] = predict
        return predict, True


class CountsParam:
    """A Spark accumulator of counts by key (the worker that did something, and how often)."""

    def zero(self, value: dict[str, int]) -> dict[str, int]:
        return {}

    def addInPlace(self, a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
        for key, n in b.items():
            a[key] = a.get(key, 0) + n
        return a


@dataclass(frozen=True)
class _Scorer:
    """The executor side of the scores: valid rows of each Arrow batch through the model."""

    model_dir: str
    version: int
    x_col: str
    y_col: str
    threshold: float
    chunk_size: int
    loads: Accumulator[dict[str, int]]
    batches: Accumulator[dict[str, int]]
    rows: Accumulator[int]

    def _model(self) -> Predict:
        predict, loaded = cached_model(self.model_dir, self.version, self.chunk_size)
        if loaded:
            self.loads.add({worker_id(): 1})
        return predict

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            xi = batch.schema.get_field_index(self.x_col)
            yi = batch.schema.get_field_index(self.y_col)
            rows = score_batch(batch, xi, yi, self._model, self.chunk_size)
            if rows is None:
                continue
            columns = list(rows.data.columns)
            columns[xi] = pa.array(rows.x, pa.float64())
            columns[yi] = pa.array(rows.y, pa.float64())
            columns += added_columns(rows.probability, self.threshold, self.version)
            self.batches.add({worker_id(): 1})
            self.rows.add(rows.data.num_rows)
            yield pa.RecordBatch.from_arrays(columns, names=[*batch.schema.names, *ADDED_COLUMNS])


@dataclass(frozen=True)
class _Rejecter:
    """The executor side of the rejects: bad rows of each Arrow batch, with column and reason."""

    x_col: str
    y_col: str
    rows: Accumulator[int]

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            _, xc = parse_coordinate(batch.column(batch.schema.get_field_index(self.x_col)))
            _, yc = parse_coordinate(batch.column(batch.schema.get_field_index(self.y_col)))
            idx = np.flatnonzero((xc != OK) | (yc != OK))
            if len(idx) == 0:
                continue
            x_bad, reasons = reject_reasons(xc, yc, idx)
            bad = batch.take(pa.array(idx))
            columns = [
                *bad.columns,
                pa.array([self.x_col if b else self.y_col for b in x_bad.tolist()], pa.string()),
                pa.array(reasons, pa.string()),
            ]
            self.rows.add(len(idx))
            yield pa.RecordBatch.from_arrays(columns, names=[*batch.schema.names, *REJECT_COLUMNS])


@dataclass(frozen=True)
class _Counters:
    """The accumulators the executors add to, read on the driver."""

    loads: Accumulator[dict[str, int]]
    batches: Accumulator[dict[str, int]]
    scored: Accumulator[int]
    rejected: Accumulator[int]

    @classmethod
    def start(cls, sc: SparkContext) -> _Counters:
        counts = cast("AccumulatorParam[dict[str, int]]", CountsParam())
        return cls(
            sc.accumulator({}, counts),
            sc.accumulator({}, counts),
            sc.accumulator(0),
            sc.accumulator(0),
        )


@dataclass
class Scored:
    """What :func:`score_dataframe` returns: two lazy DataFrames and the counters they feed.

    Nothing runs until an action (a write, a count) is taken on a DataFrame; the counters hold
    what the actions taken so far did (a retried or speculative task counts again).
    """

    scores: DataFrame
    """Every input column (x and y as doubles) + probability, class_id, model_version."""
    rejects: DataFrame
    """Every input column as read + reject_column, reject_reason; no model involved."""
    model_version: int
    model_dir: str
    """As the executors load it (a local folder made absolute)."""
    _counters: _Counters

    @property
    def model_loads(self) -> dict[str, int]:
        """Model loads by worker process (``host:pid``): 1 for each process that scored."""
        return dict(self._counters.loads.value)

    @property
    def batches(self) -> dict[str, int]:
        """Arrow batches scored, by worker process."""
        return dict(self._counters.batches.value)

    @property
    def rows_scored(self) -> int:
        return int(self._counters.scored.value)

    @property
    def rows_rejected(self) -> int:
        return int(self._counters.rejected.value)


@contextlib.contextmanager
def _no_pandas_warning() -> Iterator[None]:
    """pyspark warns about pandas 3 when Arrow is first used; this engine uses no pandas."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "PySpark does not yet fully support", FutureWarning)
        yield


def _check_columns(schema: StructType, x_col: str, y_col: str) -> None:
    names = schema.names
    if x_col == y_col:
        raise InputError(f"--x-col and --y-col are both {x_col!r}")
    for flag, col in (("--x-col", x_col), ("--y-col", y_col)):
        if col not in names:
            raise InputError(f"input: no column {col!r} ({flag}); it has: {', '.join(names)}")
    clash = [c for c in (*ADDED_COLUMNS, *REJECT_COLUMNS) if c in names]
    if clash:
        raise InputError(
            f"input: already has column(s) {', '.join(clash)} that scoring adds;"
            " rename or drop them first"
        )


def _executor_model_dir(model_dir: str | os.PathLike[str]) -> str:
    """A local folder as an absolute path (executors may not share the driver's working
    directory); a URI as given."""
    from xor_dnn.storage import StorageError, open_store

    try:
        root = open_store(model_dir).local_root
    except StorageError as exc:
        raise ModelError(str(exc)) from None
    return str(Path(root).resolve()) if root is not None else os.fspath(model_dir)


def score_dataframe(
    df: DataFrame,
    model_dir: str | os.PathLike[str],
    *,
    version: int | None = None,
    x_col: str = "x",
    y_col: str = "y",
    threshold: float = 0.5,
    chunk_size: int = 65536,
) -> Scored:
    """Score ``df`` with version ``version`` (newest when None) of the model at ``model_dir``.

    ``model_dir`` is a folder every executor can read or a model-repository URI (``s3://…``,
    ``gs://…``; executors then need the store's ``AWS_*`` / ``GOOGLE_*`` settings in their
    environment). The version is resolved here, on the driver; each Python worker process
    loads it at its first valid row and keeps it for later batches, tasks and jobs.
    ``chunk_size`` caps the rows of one model call; Spark's Arrow batches hold
    ``spark.sql.execution.arrow.maxRecordsPerBatch`` rows. Raises InputError (missing or
    clashing columns, bad threshold) and ModelError (no such version) before any job runs.
    """
    from pyspark.sql.types import (
        ByteType,
        DoubleType,
        FloatType,
        IntegerType,
        StringType,
        StructField,
        StructType,
    )

    if not 0.0 <= threshold <= 1.0:
        raise InputError(f"threshold must be in [0, 1], got {threshold}")
    if chunk_size < 1:
        raise InputError(f"chunk_size must be >= 1, got {chunk_size}")
    _check_columns(df.schema, x_col, y_col)
    number = resolve_version(model_dir, version)
    where = _executor_model_dir(model_dir)
    counters = _Counters.start(df.sparkSession.sparkContext)

    coords = (x_col, y_col)
    score_fields = [
        StructField(f.name, DoubleType(), False) if f.name in coords else f
        for f in df.schema.fields
    ]
    score_fields += [
        StructField(PROBABILITY, FloatType(), False),
        StructField(CLASS_ID, ByteType(), False),
        StructField(MODEL_VERSION, IntegerType(), False),
    ]
    reject_fields = [
        *df.schema.fields,
        StructField(REJECT_COLUMN, StringType(), False),
        StructField(REJECT_REASON, StringType(), False),
    ]
    c = counters
    scorer = _Scorer(
        where, number, x_col, y_col, threshold, chunk_size, c.loads, c.batches, c.scored
    )
    rejecter = _Rejecter(x_col, y_col, c.rejected)
    with _no_pandas_warning():
        scores = df.mapInArrow(scorer, StructType(score_fields))
        rejects = df.mapInArrow(rejecter, StructType(reject_fields))
    return Scored(
        scores=scores,
        rejects=rejects,
        model_version=number,
        model_dir=where,
        _counters=counters,
    )


# -- xor-dnn score --engine spark --------------------------------------------------------------

_SCORING_ERROR = re.compile(r"scoring\.errors\.(\w+): (.+)")


def _one_line(exc: BaseException) -> str:
    """A Spark error's first line, or the scoring error a Python worker raised."""
    text = str(exc)
    found = _SCORING_ERROR.findall(text)
    if found:
        return str(found[-1][1]).strip()
    _, traceback, tail = text.rpartition("Traceback (most recent call last):")
    if traceback:  # a Python worker failed: its exception line, after the frames
        for line in tail.splitlines():
            if line.strip() and not line[0].isspace():
                return line.strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _as_scoring_error(exc: Exception) -> ScoringError:
    """A failed Spark job as the scoring error an executor raised, or one line of Spark's."""
    found = _SCORING_ERROR.findall(str(exc))
    if found:
        name, message = found[-1]
        kind = {"InputError": InputError, "OutputError": OutputError}.get(name, ModelError)
        return kind(message.strip())
    return ScoringError(f"spark job failed: {_one_line(exc)}")


def _path(path: Path | str) -> str:
    """The path Spark is given: ``pathlib`` turns ``s3a://b/k`` into ``s3a:/b/k``; undo that
    (``file:/tmp/x`` is already what Hadoop writes)."""
    text = os.fspath(path)
    if text.startswith("file:"):
        return text
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]+):/(?!/)", r"\1://", text, count=1)


def _input_format(path: Path, override: str | None) -> Format:
    """``override``, else the extension, else the one extension of a local folder's files."""
    if override or not path.is_dir():
        return detect_format(path, override, "input")
    try:
        return detect_format(path, None, "input")  # a folder named points.parquet
    except InputError:
        pass
    found = set()
    for p in path.rglob("*"):
        if p.is_file() and not p.name.startswith((".", "_")):
            try:
                found.add(detect_format(p, None, "input"))
            except InputError:
                continue  # a side file: a README, a schema
    if len(found) != 1:
        what = ", ".join(sorted(f.value for f in found)) or "no csv, parquet or jsonl files"
        raise InputError(
            f"input {path}: cannot tell the folder's format ({what}); pass --input-format"
        )
    return found.pop()


def _session(progress: bool) -> tuple[SparkSession, bool]:
    """The active session, or a new one (``True``: this run owns it and stops it) that draws
    Spark's progress bar on stderr when ``progress``."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active, False
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        # Not under spark-submit: this process starts Spark, whose Python workers would
        # otherwise run the first `python3` on PATH, which may not have TensorFlow.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    with _no_pandas_warning():
        builder = SparkSession.builder.appName("xor-dnn score")
        builder = builder.config("spark.ui.showConsoleProgress", str(progress).lower())
        return builder.getOrCreate(), True


def _read(spark: SparkSession, path: str, fmt: Format) -> DataFrame:
    reader = spark.read
    if fmt is Format.CSV:
        # Every column as text, as the stream engine keeps a CSV's other columns.
        # RFC 4180 quoting (a quote inside quotes is doubled), as Arrow and Python's csv write.
        return reader.option("header", True).option("escape", '"').csv(path)
    if fmt is Format.PARQUET:
        return reader.parquet(path)
    return reader.json(path)


def _write(df: DataFrame, path: str, fmt: Format) -> None:
    writer = df.write.mode("overwrite")
    if fmt is Format.CSV:
        writer.option("header", True).option("escape", '"').csv(path)
    elif fmt is Format.PARQUET:
        writer.parquet(path)
    else:
        writer.json(path)


def _replaceable(folder: Path) -> bool:
    """Spark's ``overwrite`` deletes the whole folder first: only let it delete what looks like
    a Spark output (part files, markers, hidden checksums, ``key=value`` partition folders)."""
    return all(p.name.startswith(("part-", "_", ".")) or "=" in p.name for p in folder.iterdir())


def _check_outputs(src: Path, out: Path, rejects: Path) -> None:
    """Refuse outputs that would delete the input or a folder that is not a Spark output."""
    source = src.resolve()
    for flag, path in (("--output", out), ("--rejects", rejects)):
        where = path.resolve()
        if where == source or where in source.parents:
            raise OutputError(f"{flag} {path} would delete the input {src}")
        if where.is_dir() and not _replaceable(where):
            raise OutputError(
                f"{flag} {path}: an existing folder that is not a Spark output (files other"
                " than part-*, _SUCCESS); Spark would delete it: remove it or pick another"
            )
    if rejects.resolve() == out.resolve():
        raise OutputError(f"--rejects {rejects} is the output folder")


def _refuse(args: argparse.Namespace) -> None:
    refused = [
        ("--strict", args.strict, "a distributed job has no first bad row"),
        ("--num-shards", args.num_shards is not None, "Spark splits the input itself"),
        ("--shard-index", args.shard_index is not None, "Spark splits the input itself"),
    ]
    for flag, given, why in refused:
        if given:
            raise InputError(f"{flag} does not apply to --engine spark ({why})")


def score_files(args: argparse.Namespace, model_dir: str) -> dict[str, Any]:
    """``xor-dnn score --engine spark``: the JSON summary of scoring a file or a folder.

    Spark reads the input itself (a folder of part files, hive partitions included) and writes
    the output and the rejects as folders, rejects first, each replacing what was there.
    """
    try:
        from py4j.protocol import Py4JJavaError
        from pyspark.errors import AnalysisException, PySparkException
    except ImportError as exc:
        needs = "--engine spark needs pyspark: pip install 'xor-dnn[spark]'"
        raise InputError(f"{needs} ({exc})") from None

    _refuse(args)
    # Spark and Hadoop take paths and their own URIs (s3a://); the CLI passes text.
    source, output = Path(args.input), Path(args.output)
    in_fmt = _input_format(source, args.input_format or args.format)
    override = args.output_format or args.format
    try:
        out_fmt = detect_format(output, override, "output")
    except InputError:
        out_fmt = in_fmt  # a folder named without an extension: the input's format
    rejects_path = Path(args.rejects) if args.rejects else default_rejects_path(output, out_fmt)
    _check_outputs(source, output, rejects_path)

    started = time.perf_counter()
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    spark, owned = _session(progress)
    startup = time.perf_counter() - started
    try:
        spark.conf.set(BATCH_ROWS_CONF, str(args.chunk_size))
        opened = time.perf_counter()
        try:
            df = _read(spark, _path(args.input), in_fmt)
        except AnalysisException as exc:
            raise InputError(f"input {args.input}: {_one_line(exc)}") from None
        result = score_dataframe(
            df,
            model_dir,
            version=args.model_version,
            x_col=args.x_col,
            y_col=args.y_col,
            threshold=args.threshold,
            chunk_size=args.chunk_size,
        )
        try:
            # Rejects first: a visible output always has its rejects beside it.
            _write(result.rejects, _path(rejects_path), out_fmt)
            _write(result.scores, _path(args.output), out_fmt)
        except (PySparkException, Py4JJavaError) as exc:
            raise _as_scoring_error(exc) from None
        seconds = time.perf_counter() - opened
        return {
            "status": "ok",
            "engine": "spark",
            "master": spark.sparkContext.master,
            "input": str(args.input),
            "output": str(args.output),
            "rejects": str(rejects_path),
            "model_version": result.model_version,
            "rows_read": result.rows_scored + result.rows_rejected,
            "rows_scored": result.rows_scored,
            "rows_rejected": result.rows_rejected,
            "seconds": round(seconds, 4),
            "rows_per_second": round(result.rows_scored / seconds, 1) if seconds else 0.0,
            "startup_seconds": round(startup, 4),
            "model_loads": sum(result.model_loads.values()),
            "worker_processes": len(result.batches),
        }
    finally:
        if owned:
            spark.stop()
