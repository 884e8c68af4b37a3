"""The score loop: read a shard in chunks, reject bad rows, call the SavedModel, write results.

Three threads form a pipeline (Arrow and TensorFlow release the GIL): one reads and decodes
chunk k+1 while the calling thread validates and scores chunk k and another encodes and writes
chunk k-1 (:mod:`scoring.pipeline`); the model comes from :mod:`scoring.model`.

Output = every input column, in order, with x and y as float64, then ``probability``
(float32, class 1), ``class_id`` (int8, probability >= threshold) and ``model_version``
(int32); a Parquet output also records the version in its schema metadata.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from scoring.errors import InputError, ModelError, OutputError, StrictModeError
from scoring.formats import Format, default_rejects_path, part_path
from scoring.model import Loader, Predict
from scoring.pipeline import Reader, Writer
from scoring.progress import Progress
from scoring.readers import Batch, Source, open_source
from scoring.shards import Shard
from scoring.validate import OK, REASONS, describe, is_text, parse_coordinate
from scoring.writers import REJECT_SCHEMA, Sink, discard_temp_files, open_sink

PROBABILITY, CLASS_ID, MODEL_VERSION = "probability", "class_id", "model_version"
ADDED_COLUMNS = (PROBABILITY, CLASS_ID, MODEL_VERSION)


@dataclass(frozen=True)
class ScoreOptions:
    """What to score and where; paths are the user's, before any shard suffix."""

    input: Path
    output: Path
    input_format: Format
    output_format: Format
    chunk_size: int = 65536
    x_col: str = "x"
    y_col: str = "y"
    rejects: Path | None = None
    strict: bool = False
    threshold: float = 0.5
    shard: Shard = field(default_factory=Shard)
    progress: bool | None = None
    """None: draw the bar only when stderr is a terminal."""

    @property
    def output_path(self) -> Path:
        return part_path(self.output, self.shard.index, self.shard.count)

    @property
    def rejects_path(self) -> Path:
        base = self.rejects or default_rejects_path(self.output, self.output_format)
        return part_path(base, self.shard.index, self.shard.count)


@dataclass
class Summary:
    """The job's result, printed as one JSON line."""

    status: str
    input: str
    output: str
    rejects: str
    model_version: int
    shard_index: int
    num_shards: int
    rows_read: int = 0
    rows_scored: int = 0
    rows_rejected: int = 0
    seconds: float = 0.0
    rows_per_second: float = 0.0
    startup_seconds: float = 0.0
    """TensorFlow import, model load and warm-up calls: the only part left out of ``seconds``,
    which runs from opening the input to the renamed outputs."""
    cpu_seconds: float = 0.0
    """CPU time of the whole process (all threads) during ``seconds``: the run's cost."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _text_column(digits: NDArray[np.uint8]) -> pa.Array:
    """One-character strings from their ASCII codes, built straight from Arrow buffers."""
    offsets = np.arange(len(digits) + 1, dtype=np.int32)
    return pa.StringArray.from_buffers(
        len(digits), pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(digits))
    )


def _repeat(value: int, n: int) -> pa.Array:
    text = str(value).encode()
    offsets = np.arange(n + 1, dtype=np.int32) * len(text)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(text * n))


def output_schema(
    source: pa.Schema, x_col: str, y_col: str, version: int, *, csv: bool = False
) -> pa.Schema:
    """The input's columns (x, y as float64) plus the three added ones.

    For a CSV output, where every value is text anyway, text x/y columns are kept as written
    and the integer columns are built as text: formatting numbers is most of a CSV write.
    """
    fields = []
    for f in source:
        if f.name in (x_col, y_col) and not (csv and is_text(f.type)):
            fields.append(pa.field(f.name, pa.float64()))
        else:
            fields.append(f.remove_metadata())
    fields += [
        pa.field(PROBABILITY, pa.float32()),
        pa.field(CLASS_ID, pa.string() if csv else pa.int8()),
        pa.field(MODEL_VERSION, pa.string() if csv else pa.int32()),
    ]
    meta = {b"xor_dnn.model_version": str(version).encode()}
    return pa.schema(fields, metadata=meta)


def _check_columns(source: Source, x_col: str, y_col: str) -> None:
    names = source.schema.names
    if x_col == y_col:
        raise InputError(f"--x-col and --y-col are both {x_col!r}")
    for flag, col in (("--x-col", x_col), ("--y-col", y_col)):
        if col not in names:
            raise InputError(
                f"input {source.path}: no column {col!r} ({flag}); it has: {', '.join(names)}"
            )
    clash = [c for c in ADDED_COLUMNS if c in names]
    if clash:
        raise InputError(
            f"input {source.path}: already has column(s) {', '.join(clash)} that scoring adds;"
            " rename or drop them first"
        )


def _rejects_batch(
    rows: list[int], cols: list[str | None], reasons: list[str], values: list[str]
) -> pa.RecordBatch:
    order = np.argsort(np.asarray(rows, dtype=np.int64), kind="stable")
    return pa.RecordBatch.from_arrays(
        [
            pa.array([rows[i] for i in order], pa.int64()),
            pa.array([cols[i] for i in order], pa.string()),
            pa.array([reasons[i] for i in order], pa.string()),
            pa.array([values[i] for i in order], pa.string()),
        ],
        schema=REJECT_SCHEMA,
    )


class _Job:
    def __init__(
        self,
        options: ScoreOptions,
        source: Source,
        predict: Predict,
        version: int,
        out: Sink,
        rejects: Sink,
        writer: Writer,
    ) -> None:
        self.o = options
        self.source = source
        self.predict = predict
        self.out = out
        self.rejects = rejects
        self.writer = writer
        names = source.schema.names
        self.xi, self.yi = names.index(options.x_col), names.index(options.y_col)
        self.csv = options.output_format is Format.CSV
        self.schema = output_schema(
            source.schema, options.x_col, options.y_col, version, csv=self.csv
        )
        self.version = version
        self.read = self.scored = self.rejected = 0

    def _bad_rows(
        self, batch: Batch, xc: NDArray[np.int8], yc: NDArray[np.int8], bad: NDArray[np.bool_]
    ) -> None:
        rows: list[int] = [m.row for m in batch.malformed]
        cols: list[str | None] = [m.column for m in batch.malformed]
        reasons = [m.reason for m in batch.malformed]
        values = [m.text for m in batch.malformed]
        if bad is not None and bad.any():
            idx = np.flatnonzero(bad)
            rows += batch.row_numbers(idx).tolist()
            x_bad = xc[idx] != OK
            raw_x = batch.data.column(self.xi).take(pa.array(idx)).to_pylist()
            raw_y = batch.data.column(self.yi).take(pa.array(idx)).to_pylist()
            for j, is_x in enumerate(x_bad.tolist()):
                cols.append(self.o.x_col if is_x else self.o.y_col)
                reasons.append(REASONS[int(xc[idx[j]] if is_x else yc[idx[j]])])
                values.append(describe(raw_x[j] if is_x else raw_y[j]))
        if not rows:
            return
        if self.o.strict:
            first = int(np.argmin(rows))
            raise StrictModeError(rows[first], cols[first], reasons[first])
        self.rejected += len(rows)
        self.writer.put(self.rejects, _rejects_batch(rows, cols, reasons, values))

    def run_batch(self, batch: Batch) -> None:
        data = batch.data
        self.read += data.num_rows + len(batch.malformed)
        xs, xc = parse_coordinate(data.column(self.xi))
        ys, yc = parse_coordinate(data.column(self.yi))
        bad = (xc != OK) | (yc != OK)
        any_bad = bool(bad.any())
        self._bad_rows(batch, xc, yc, bad if any_bad else None)  # type: ignore[arg-type]
        if any_bad:
            keep = ~bad
            data = data.filter(pa.array(keep))
            xs, ys = xs[keep], ys[keep]
        n = data.num_rows
        if n == 0:
            return
        points = np.empty((n, 2), dtype=np.float32)
        points[:, 0] = xs
        points[:, 1] = ys
        prob = np.empty(n, dtype=np.float32)
        step = self.o.chunk_size
        try:
            for lo in range(0, n, step):
                prob[lo : lo + step] = self.predict(points[lo : lo + step])
        except Exception as exc:  # TensorFlow raises many types; the job reports one
            raise ModelError(f"model call failed: {type(exc).__name__}: {exc}") from exc
        columns = list(data.columns)
        for i, values in ((self.xi, xs), (self.yi, ys)):
            if not is_text(self.schema.field(i).type):
                columns[i] = pa.array(values, pa.float64())
        positive = prob >= self.o.threshold
        columns.append(pa.array(prob, pa.float32()))
        if self.csv:
            columns += [
                _text_column(positive.astype(np.uint8) + ord("0")),
                _repeat(self.version, n),
            ]
        else:
            columns += [
                pa.array(positive.astype(np.int8), pa.int8()),
                pa.array(np.full(n, self.version, dtype=np.int32), pa.int32()),
            ]
        self.writer.put(self.out, pa.RecordBatch.from_arrays(columns, schema=self.schema))
        self.scored += n


def score(options: ScoreOptions, load: Loader) -> Summary:
    """Score one shard of ``options.input``; both outputs appear only if the whole shard succeeds.

    The input is opened and its columns checked before ``load`` runs, so a wrong file or
    column fails at once rather than after TensorFlow's import. Raises InputError (unreadable
    input, missing column), StrictModeError (``--strict``),
    OutputError or ModelError; on any exception, KeyboardInterrupt included, nothing is left
    under the final names.
    """
    out_path, rejects_path = options.output_path, options.rejects_path
    in_path = options.input.resolve()
    if out_path.resolve() == in_path or rejects_path.resolve() == in_path:
        raise OutputError(f"output {out_path} would overwrite the input")
    if out_path.resolve() == rejects_path.resolve():
        raise OutputError(f"--rejects {rejects_path} is the output file")
    coords = (options.x_col, options.y_col)
    # The run is timed from opening the input to the renamed outputs; only load() (TensorFlow
    # import, model load, warm-up) is left out, and reported as startup.
    opened, cpu_opened = time.perf_counter(), time.process_time()
    source = open_source(
        options.input, options.input_format, options.shard, options.chunk_size, coords
    )
    sinks: list[Sink] = []
    writer: Writer | None = None
    reader: Reader | None = None
    version = 0
    try:
        _check_columns(source, *coords)
        load_started, load_cpu_started = time.perf_counter(), time.process_time()
        predict, version, startup_seconds = load()
        load_seconds = time.perf_counter() - load_started
        load_cpu_seconds = time.process_time() - load_cpu_started
        schema = output_schema(
            source.schema, *coords, version, csv=options.output_format is Format.CSV
        )
        sinks.append(open_sink(out_path, options.output_format, schema))
        sinks.append(open_sink(rejects_path, options.output_format, REJECT_SCHEMA))
        writer = Writer()
        job = _Job(options, source, predict, version, sinks[0], sinks[1], writer)
        progress = Progress(source.total, enabled=options.progress)
        reader = Reader(source.batches())
        try:
            for batch in reader:
                job.run_batch(batch)
                progress.update(batch.done, job.scored)
            writer.finish()
        finally:
            progress.update(source.total, job.scored, force=True)
            progress.close()
        # Rejects first: a visible output always has its rejects beside it.
        for sink in reversed(sinks):
            sink.commit()
        seconds = time.perf_counter() - opened - load_seconds
        cpu_seconds = time.process_time() - cpu_opened - load_cpu_seconds
    except BaseException:
        if writer is not None:
            writer.stop()
        for sink in sinks:
            # The original error matters more than a failed cleanup.
            with contextlib.suppress(Exception):
                sink.abort()
        for final in (out_path, rejects_path):
            with contextlib.suppress(Exception):
                discard_temp_files(final)
        raise
    finally:
        if reader is not None:
            reader.stop()
        source.close()
    return Summary(
        status="ok",
        input=str(options.input),
        output=str(out_path),
        rejects=str(rejects_path),
        model_version=version,
        shard_index=options.shard.index,
        num_shards=options.shard.count,
        rows_read=job.read,
        rows_scored=job.scored,
        rows_rejected=job.rejected,
        seconds=round(seconds, 4),
        rows_per_second=round(job.scored / seconds, 1) if seconds else 0.0,
        startup_seconds=round(startup_seconds, 4),
        cpu_seconds=round(cpu_seconds, 4),
    )
