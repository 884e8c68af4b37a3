"""The score loop: read a shard in chunks, reject bad rows, call the SavedModel, write results.

:func:`score` runs one job: the files (or the shard of one file) that
:func:`scoring.datasets.plan` gives this shard, one after the other, the model loaded once.

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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import PurePath, PurePosixPath
from typing import Any

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from scoring.datasets import Dataset, Unit, open_dataset, plan
from scoring.errors import InputError, ModelError, OutputError, StrictModeError
from scoring.formats import Format, detect_format
from scoring.manifest import read_marker, write_manifest, write_marker
from scoring.model import Loader, Predict
from scoring.pipeline import Reader, Writer
from scoring.progress import Progress
from scoring.readers import Batch, Source, open_source
from scoring.shards import Shard
from scoring.validate import OK, describe, is_text, parse_coordinate, reject_reasons
from scoring.writers import REJECT_SCHEMA, Sink, discard_temp_files, open_sink
from xor_dnn.storage import StorageError, canonical, open_store, split_uri

PROBABILITY, CLASS_ID, MODEL_VERSION = "probability", "class_id", "model_version"
ADDED_COLUMNS = (PROBABILITY, CLASS_ID, MODEL_VERSION)


@dataclass(frozen=True)
class ScoreOptions:
    """What to score and where: paths or URIs as the user wrote them, before any shard
    suffix. ``input`` is a file, folder, glob or object-store prefix (then ``output`` and
    ``rejects`` are folders/prefixes); ``input_format`` None: from the extensions."""

    input: str | PurePath
    output: str | PurePath
    input_format: Format | None
    output_format: Format | None
    """None: the input's format (a dataset written to a folder)."""
    chunk_size: int = 65536
    x_col: str = "x"
    y_col: str = "y"
    rejects: str | PurePath | None = None
    strict: bool = False
    threshold: float = 0.5
    shard: Shard = field(default_factory=Shard)
    progress: bool | None = None
    """None: draw the bar only when stderr is a terminal."""
    resume: bool = False
    """Skip the units whose output already has a completion marker for the same input."""


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
    files: int = 0
    """Units (input files, or pieces of one) this shard had to score, skipped ones included."""
    files_skipped: int = 0
    """Units ``--resume`` found finished by an earlier run (not read again)."""
    rows_read: int = 0
    rows_scored: int = 0
    rows_rejected: int = 0
    bytes_read: int = 0
    """Bytes fetched from the input files (footers, headers and range cuts included)."""
    input_bytes: int = 0
    """Total size of every input file of the job (all shards)."""
    manifest: str | None = None
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


def _repeat(value: int | str, n: int) -> pa.Array:
    text = str(value).encode()
    offsets = np.arange(n + 1, dtype=np.int32) * len(text)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(text * n))


def output_schema(
    source: pa.Schema,
    x_col: str,
    y_col: str,
    version: int,
    *,
    csv: bool = False,
    partitions: tuple[tuple[str, pa.DataType], ...] = (),
) -> pa.Schema:
    """The input's columns (x, y as float64), hive partition columns (text) that the file
    does not hold itself, then the three added ones.

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
        pa.field(name, pa.string() if csv else t)
        for name, t in partitions
        if name not in source.names
    ]
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
                f"input {source.name}: no column {col!r} ({flag}); it has: {', '.join(names)}"
            )
    clash = [c for c in ADDED_COLUMNS if c in names]
    if clash:
        raise InputError(
            f"input {source.name}: already has column(s) {', '.join(clash)} that scoring adds;"
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


@dataclass(frozen=True)
class ScoredRows:
    """The rows of a batch whose x and y both parsed, and the model's answer for each."""

    data: pa.RecordBatch
    """Those rows as read (x and y still in their input type)."""
    x: NDArray[np.float64]
    y: NDArray[np.float64]
    probability: NDArray[np.float32]


def score_batch(
    data: pa.RecordBatch,
    xi: int,
    yi: int,
    model: Callable[[], Predict],
    chunk_size: int,
    on_bad: Callable[[NDArray[np.int8], NDArray[np.int8], NDArray[np.intp]], None] | None = None,
) -> ScoredRows | None:
    """Score the rows of ``data`` whose x (column ``xi``) and y (column ``yi``) are valid
    numbers, at most ``chunk_size`` rows per model call: the one rule of both engines.

    ``on_bad(x_codes, y_codes, bad_indexes)`` sees each batch's parse codes (the indexes may
    be empty) before the model runs, so ``--strict`` fails first; ``model()`` is called only
    when some row is valid (a Spark worker given only bad rows loads no model). None when no
    row is valid. Raises ModelError when the model call fails.
    """
    xs, xc = parse_coordinate(data.column(xi))
    ys, yc = parse_coordinate(data.column(yi))
    bad = (xc != OK) | (yc != OK)
    idx = np.flatnonzero(bad)
    if on_bad is not None:
        on_bad(xc, yc, idx)
    if len(idx):
        keep = ~bad
        data = data.filter(pa.array(keep))
        xs, ys = xs[keep], ys[keep]
    n = data.num_rows
    if n == 0:
        return None
    predict = model()
    points = np.empty((n, 2), dtype=np.float32)
    points[:, 0], points[:, 1] = xs, ys
    prob = np.empty(n, dtype=np.float32)
    try:
        for lo in range(0, n, chunk_size):
            prob[lo : lo + chunk_size] = predict(points[lo : lo + chunk_size])
    except Exception as exc:  # TensorFlow raises many types; the job reports one
        raise ModelError(f"model call failed: {type(exc).__name__}: {exc}") from exc
    return ScoredRows(data, xs, ys, prob)


def added_columns(
    probability: NDArray[np.float32], threshold: float, version: int, *, csv: bool = False
) -> list[pa.Array]:
    """``probability``, ``class_id`` and ``model_version`` of scored rows, in the types of
    :func:`output_schema` (the integers as text for a CSV output)."""
    n = len(probability)
    positive = probability >= threshold
    if csv:
        class_id = _text_column(positive.astype(np.uint8) + ord("0"))
        model_version = _repeat(version, n)
    else:
        class_id = pa.array(positive.astype(np.int8), pa.int8())
        model_version = pa.array(np.full(n, version, dtype=np.int32), pa.int32())
    return [pa.array(probability, pa.float32()), class_id, model_version]


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
        partitions: tuple[tuple[str, str], ...] = (),
        partition_types: tuple[tuple[str, pa.DataType], ...] = (),
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
        self.partitions = tuple((k, v) for k, v in partitions if k not in names)
        self.schema = output_schema(
            source.schema,
            options.x_col,
            options.y_col,
            version,
            csv=self.csv,
            partitions=partition_types,
        )
        self.version = version
        self.read = self.scored = self.rejected = 0

    def _bad_rows(
        self, batch: Batch, xc: NDArray[np.int8], yc: NDArray[np.int8], idx: NDArray[np.intp]
    ) -> None:
        rows: list[int] = [m.row for m in batch.malformed]
        cols: list[str | None] = [m.column for m in batch.malformed]
        reasons = [m.reason for m in batch.malformed]
        values = [m.text for m in batch.malformed]
        if len(idx):
            rows += batch.row_numbers(idx).tolist()
            x_bad, why = reject_reasons(xc, yc, idx)
            reasons += why
            raw_x = batch.data.column(self.xi).take(pa.array(idx)).to_pylist()
            raw_y = batch.data.column(self.yi).take(pa.array(idx)).to_pylist()
            for j, is_x in enumerate(x_bad.tolist()):
                cols.append(self.o.x_col if is_x else self.o.y_col)
                values.append(describe(raw_x[j] if is_x else raw_y[j]))
        if not rows:
            return
        if self.o.strict:
            first = int(np.argmin(rows))
            raise StrictModeError(rows[first], cols[first], reasons[first])
        self.rejected += len(rows)
        self.writer.put(self.rejects, _rejects_batch(rows, cols, reasons, values))

    def run_batch(self, batch: Batch) -> None:
        self.read += batch.data.num_rows + len(batch.malformed)
        rows = score_batch(
            batch.data,
            self.xi,
            self.yi,
            lambda: self.predict,
            self.o.chunk_size,
            on_bad=lambda xc, yc, bad: self._bad_rows(batch, xc, yc, bad),
        )
        if rows is None:
            return
        n = rows.data.num_rows
        columns = list(rows.data.columns)
        for i, values in ((self.xi, rows.x), (self.yi, rows.y)):
            if not is_text(self.schema.field(i).type):
                columns[i] = pa.array(values, pa.float64())
        for name, value in self.partitions:
            t = self.schema.field(name).type
            if pa.types.is_integer(t):
                columns.append(pa.array(np.full(n, int(value), dtype=np.int32), t))
            else:
                columns.append(_repeat(value, n))
        columns += added_columns(rows.probability, self.o.threshold, self.version, csv=self.csv)
        self.writer.put(self.out, pa.RecordBatch.from_arrays(columns, schema=self.schema))
        self.scored += n


class _BytesRead:
    """The input store's observer: bytes its reads fetched."""

    def __init__(self) -> None:
        self.total = 0

    def __call__(self, kind: str, outcome: str, size: int) -> None:
        if kind == "get":
            self.total += size


@dataclass
class _Done:
    """What one unit did (the marker's and the manifest's record)."""

    unit: Unit
    record: dict[str, Any]
    skipped: bool = False


def _identity(dataset: Dataset, unit: Unit) -> dict[str, Any]:
    """What must match for a marker to say this unit is done."""
    return {
        "input": dataset.store.child(unit.file.key),
        "input_size": unit.file.size,
        "shard": [unit.shard.index, unit.shard.count],
        "row_groups": list(unit.row_groups) if unit.row_groups else None,
    }


def _finished(dataset: Dataset, unit: Unit) -> dict[str, Any] | None:
    marker = read_marker(unit.output.store, unit.output.key)
    if marker is None or any(marker.get(k) != v for k, v in _identity(dataset, unit).items()):
        return None
    try:  # the marker is written after the outputs: check they are still there
        unit.output.store.size(unit.output.key)
        unit.rejects.store.size(unit.rejects.key)
    except StorageError:
        return None
    return marker


def _outside(dataset: Dataset, options: ScoreOptions) -> Dataset:
    """The dataset without the files under the output (or rejects) folder, when that folder
    is inside the input folder: a re-run must not score the last run's results."""
    if dataset.single:
        return dataset
    roots = [canonical(str(options.output)).rstrip("/") + "/"]
    if options.rejects is not None:
        roots.append(canonical(str(options.rejects)).rstrip("/") + "/")
    files = tuple(
        f
        for f in dataset.files
        if not canonical(dataset.store.child(f.key)).startswith(tuple(roots))
    )
    if not files:
        raise InputError(f"input {dataset.uri}: no input file outside the output folder")
    return replace(dataset, files=files)


def _check_targets(dataset: Dataset, units: list[Unit]) -> None:
    inputs = {canonical(dataset.store.child(f.key)) for f in dataset.files}
    for unit in units:
        out, rej = canonical(unit.output.uri), canonical(unit.rejects.uri)
        if out in inputs or rej in inputs:
            raise OutputError(f"output {unit.output.uri} would overwrite an input")
        if out == rej:
            raise OutputError(f"--rejects {unit.rejects.uri} is the output file")


class _Model:
    """The model, loaded on first use (after the first input was checked), timed apart."""

    def __init__(self, load: Loader) -> None:
        self._load = load
        self.predict: Predict | None = None
        self.version = 0
        self.startup = self.seconds = self.cpu = 0.0

    def get(self) -> tuple[Predict, int]:
        if self.predict is None:
            started, cpu = time.perf_counter(), time.process_time()
            self.predict, self.version, self.startup = self._load()
            self.seconds = time.perf_counter() - started
            self.cpu = time.process_time() - cpu
        return self.predict, self.version


def _score_unit(
    options: ScoreOptions,
    dataset: Dataset,
    unit: Unit,
    model: _Model,
    progress: Progress,
    rows_before: int,
) -> dict[str, Any]:
    """Score one unit; both its outputs appear only if all of it succeeded."""
    coords = (options.x_col, options.y_col)
    out_fmt = options.output_format or dataset.format
    name = dataset.store.child(unit.file.key)
    blob = dataset.store.open_input(unit.file.key, unit.file.size)
    source = open_source(
        blob, name, dataset.format, unit.shard, options.chunk_size, coords, unit.row_groups
    )
    sinks: list[Sink] = []
    writer: Writer | None = None
    reader: Reader | None = None
    try:
        _check_columns(source, *coords)
        predict, version = model.get()
        csv = out_fmt is Format.CSV
        job_sinks = (unit.output, unit.rejects)
        partitions = unit.file.partitions
        types = dataset.partition_types
        schema = output_schema(source.schema, *coords, version, csv=csv, partitions=types)
        sinks.append(open_sink(job_sinks[0].store, job_sinks[0].key, out_fmt, schema))
        sinks.append(open_sink(job_sinks[1].store, job_sinks[1].key, out_fmt, REJECT_SCHEMA))
        writer = Writer()
        job = _Job(options, source, predict, version, sinks[0], sinks[1], writer, partitions, types)
        reader = Reader(source.batches())
        total = max(source.total, 1)
        for batch in reader:
            job.run_batch(batch)
            progress.update(batch.done / total, rows_before + job.scored)
        writer.finish()
        # Rejects first: a visible output always has its rejects beside it.
        for sink in reversed(sinks):
            sink.commit()
    except BaseException:
        if writer is not None:
            writer.stop()
        for sink in sinks:
            # The original error matters more than a failed cleanup.
            with contextlib.suppress(Exception):
                sink.abort()
        for target in (unit.output, unit.rejects):
            if target.store.local_root is not None:
                with contextlib.suppress(Exception):
                    discard_temp_files(target.store.local_root / target.key)
        raise
    finally:
        if reader is not None:
            reader.stop()
        source.close()
    return {
        **_identity(dataset, unit),
        "output": unit.output.uri,
        "rejects": unit.rejects.uri,
        "rows_read": job.read,
        "rows_scored": job.scored,
        "rows_rejected": job.rejected,
        "model_version": version,
        "relative_rows": source.relative_rows,
        "row_base": source.row_base,
        "lines": source.lines(),
    }


def score(options: ScoreOptions, load: Loader) -> Summary:
    """Score this shard's part of ``options.input``: every unit's two outputs appear only if
    the whole unit succeeded, then its completion markers; a dataset job ends with its manifest.

    Each input is opened and its columns checked before ``load`` runs (once, for the first
    unit that needs the model), so a wrong file or column fails at once rather than after
    TensorFlow's import. Raises InputError (unreadable input, missing column),
    StrictModeError (``--strict``), OutputError or ModelError; on any exception, Ctrl-C
    included, nothing is left under the unit's final names (units finished before it keep
    their outputs and markers, which ``--resume`` skips).
    """
    counter = _BytesRead()
    opened, cpu_opened = time.perf_counter(), time.process_time()
    fmt_in = options.input_format.value if options.input_format else None
    dataset = _outside(open_dataset(str(options.input), fmt_in, counter), options)
    rejects = str(options.rejects) if options.rejects is not None else None
    if options.output_format is None:
        if dataset.single:  # a one-file input writes a file: its name must say the format
            detect_format(PurePosixPath(split_uri(str(options.output))[1]), None, "output")
        options = replace(options, output_format=dataset.format)
    assert options.output_format is not None
    try:
        units = plan(dataset, str(options.output), options.output_format, options.shard, rejects)
        _check_targets(dataset, units)
    except StorageError as exc:
        raise OutputError(f"output {exc}") from None
    model = _Model(load)
    progress = Progress(max(len(units), 1), enabled=options.progress, unit="files")
    done: list[_Done] = []
    try:
        for i, unit in enumerate(units):
            progress.start_file(i)
            if options.resume and (marker := _finished(dataset, unit)) is not None:
                done.append(_Done(unit, marker, skipped=True))
                continue
            if unit.file.size == 0 and not dataset.single:
                # No header, no schema: nothing to write. Recorded so a resume skips it too.
                record = {**_identity(dataset, unit), "empty": True, "rows_read": 0}
                done.append(_Done(unit, record))
                continue
            before = counter.total
            unit_started = time.perf_counter()
            rows_before = sum(int(d.record.get("rows_scored", 0)) for d in done if not d.skipped)
            record = _score_unit(options, dataset, unit, model, progress, rows_before)
            record["bytes_read"] = counter.total - before
            record["seconds"] = round(time.perf_counter() - unit_started, 4)
            write_marker(unit.rejects.store, unit.rejects.key, record)
            write_marker(unit.output.store, unit.output.key, record)
            done.append(_Done(unit, record))
    finally:
        progress.start_file(len(units))
        progress.update(0.0, sum(int(d.record.get("rows_scored", 0)) for d in done), force=True)
        progress.close()
    seconds = time.perf_counter() - opened - model.seconds
    cpu_seconds = time.process_time() - cpu_opened - model.cpu
    scored = [d.record for d in done if not d.skipped]
    versions = sorted({int(r["model_version"]) for r in scored if "model_version" in r})
    summary = Summary(
        status="ok",
        input=str(options.input),
        output=units[0].output.uri if dataset.single else str(options.output),
        rejects=units[0].rejects.uri if dataset.single else str(options.rejects or options.output),
        model_version=versions[-1] if versions else model.version,
        shard_index=options.shard.index,
        num_shards=options.shard.count,
        files=len(units),
        files_skipped=sum(d.skipped for d in done),
        rows_read=sum(int(r.get("rows_read", 0)) for r in scored),
        rows_scored=sum(int(r.get("rows_scored", 0)) for r in scored),
        rows_rejected=sum(int(r.get("rows_rejected", 0)) for r in scored),
        bytes_read=counter.total,
        input_bytes=dataset.size,
        seconds=round(seconds, 4),
        startup_seconds=round(model.startup, 4),
        cpu_seconds=round(cpu_seconds, 4),
    )
    summary.rows_per_second = round(summary.rows_scored / seconds, 1) if seconds else 0.0
    if not dataset.single:
        record = {
            **summary.to_dict(),
            "model_versions": versions,
            "inputs": [{**d.record, "skipped": d.skipped} for d in done],
        }
        try:
            root = open_store(str(options.output))
            summary.manifest = write_manifest(root, options.shard, record)
        except StorageError as exc:
            raise OutputError(f"manifest: {exc}") from None
    return summary
