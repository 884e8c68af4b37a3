"""The score loop: read a shard in chunks, reject bad rows, call the SavedModel, write results.

Three threads form a pipeline (Arrow and TensorFlow release the GIL): one reads and decodes
chunk k+1 while the calling thread validates and scores chunk k and another encodes and writes
chunk k-1. At most ``_QUEUE_DEPTH`` chunks wait on each side of the model, so memory stays flat
whatever the input size.

Output = every input column, in order, with x and y as float64, then ``probability``
(float32, class 1), ``class_id`` (int8, probability >= threshold) and ``model_version``
(int32); a Parquet output also records the version in its schema metadata.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from scoring.errors import InputError, ModelError, OutputError, StrictModeError
from scoring.formats import Format, default_rejects_path, part_path
from scoring.progress import Progress
from scoring.readers import Batch, Source, open_source
from scoring.shards import Shard
from scoring.validate import OK, REASONS, describe, parse_coordinate
from scoring.writers import REJECT_SCHEMA, Sink, open_sink

PROBABILITY, CLASS_ID, MODEL_VERSION = "probability", "class_id", "model_version"
ADDED_COLUMNS = (PROBABILITY, CLASS_ID, MODEL_VERSION)
_QUEUE_DEPTH = 2
WARM_UP_ROWS = 65536
"""The largest warm-up call: the default chunk size (a bigger chunk only faults in more)."""
Predict = Callable[[NDArray[np.float32]], NDArray[np.float32]]


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


class _Stopped(Exception):
    """Tells the writer thread to drop what is queued: the job is failing."""


class _Writer:
    """One background thread writing (sink, batch) pairs in order; errors surface on next use."""

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[Sink, pa.RecordBatch] | None] = queue.Queue(_QUEUE_DEPTH)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="xor-dnn-score-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is None:
                try:
                    item[0].write(item[1])
                except BaseException as exc:  # handed to the main thread, which re-raises
                    self._error = exc

    def _check(self) -> None:
        if self._error is not None and not isinstance(self._error, _Stopped):
            raise self._error

    def put(self, sink: Sink, batch: pa.RecordBatch) -> None:
        self._check()
        self._queue.put((sink, batch))

    def finish(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._check()

    def stop(self) -> None:
        if self._error is None:
            self._error = _Stopped()
        self._queue.put(None)
        self._thread.join()


class _Reader:
    """Iterates the source's batches on a background thread, at most ``_QUEUE_DEPTH`` ahead.

    Batches come out in order; an exception raised while reading (an ``InputError``) comes out
    in its place, with its traceback. ``stop()`` ends the thread early (a failing job) and must
    be called before the source is closed.
    """

    def __init__(self, batches: Iterator[Batch]) -> None:
        self._batches = batches
        self._queue: queue.Queue[Batch | BaseException | None] = queue.Queue(_QUEUE_DEPTH)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="xor-dnn-score-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        end: BaseException | None = None
        try:
            for batch in self._batches:
                self._queue.put(batch)
                if self._stopping:
                    return
        except BaseException as exc:  # handed to the main thread, which re-raises
            end = exc
        finally:
            close = getattr(self._batches, "close", None)
            # A generator stopped early runs its cleanup here, on its own thread; a failure
            # there must not keep the end marker below from reaching the main thread.
            if close is not None:
                with contextlib.suppress(Exception):
                    close()
        if not self._stopping:
            self._queue.put(end)

    def __iter__(self) -> Iterator[Batch]:
        while (item := self._queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item

    def stop(self) -> None:
        """End the thread (at once if it is done); call it before closing the source."""
        self._stopping = True
        while self._thread.is_alive():  # free the queue so a blocked put() returns
            with contextlib.suppress(queue.Empty):
                self._queue.get(timeout=0.05)
        self._thread.join()


def _is_text(t: pa.DataType) -> bool:
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t))


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
        if f.name in (x_col, y_col) and not (csv and _is_text(f.type)):
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
        writer: _Writer,
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
            if not _is_text(self.schema.field(i).type):
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


Loader = Callable[[], tuple[Predict, int, float]]
"""Returns (predict, model version, startup seconds); called once the input has been checked."""


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
    writer: _Writer | None = None
    reader: _Reader | None = None
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
        writer = _Writer()
        job = _Job(options, source, predict, version, sinks[0], sinks[1], writer)
        progress = Progress(source.total, enabled=options.progress)
        reader = _Reader(source.batches())
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


def _one_tf_thread() -> None:
    """Run the model on one TensorFlow thread: the net is tiny, and TF's spinning pool threads
    would otherwise fight the reader and writer for this machine's few cores."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TensorFlow already started in this process (tests): keep its pools
        pass


def _system_allocator() -> None:
    """Allocate Arrow buffers with the C library's malloc instead of Arrow's bundled mimalloc.

    Every chunk allocates and frees the same few buffers. glibc hands them back to the next
    chunk; mimalloc returns freed pages to the OS and faults fresh ones in, zeroed as 2 MB huge
    pages (``clear_page`` took up to a quarter of a 1M-row run's CPU under ``perf``). Faster in
    four of five interleaved comparisons (3.28M -> 3.60M rows/s on 1M Parquet rows), peak RSS
    the same; see docs/scoring.md.
    """
    pa.set_memory_pool(pa.system_memory_pool())


def _warm_up(predict: Predict, version: int, rows: int) -> None:
    """Make the first signature calls here, as part of startup, and check their answers.

    The first call instantiates the graph (about 0.1 s), and the first call at a new size
    faults in that size's activation memory (about 15 ms for 65,536 points); neither depends
    on the input, so a run should not pay them inside its timed loop. The service does the same.
    """
    rng = np.random.default_rng(0)
    for n in sorted({1, max(rows, 1)}):
        points = rng.uniform(-5.0, 5.0, size=(n, 2)).astype(np.float32)
        try:
            probs = predict(points)
        except Exception as exc:  # TensorFlow raises many types; the job reports one
            raise ModelError(
                f"version {version}: warm-up call failed: {type(exc).__name__}: {exc}"
            ) from exc
        if probs.shape != (n,) or not np.all((probs >= 0.0) & (probs <= 1.0)):
            raise ModelError(
                f"version {version}: warm-up returned misshapen, non-finite or out-of-range"
                f" probabilities (shape {probs.shape})"
            )


def load_model(
    model_dir: str | os.PathLike[str], version: int | None, *, warm_up_rows: int = WARM_UP_ROWS
) -> tuple[Predict, int, float]:
    """``(predict, version, seconds)`` for ``version`` (newest when None), TF import included.

    Also sets the process up for a run: TensorFlow on one thread, Arrow on the system allocator.

    ``seconds`` also covers warm-up calls of one point and of ``warm_up_rows`` points (pass
    the chunk size), so the scoring loop starts with a model already at full speed. The model
    runs its signature with the weights folded into constants when that answers like the
    signature to float32 rounding (``xor_dnn.modelstore``: 8% less model CPU per 2**20 points,
    measured).
    """
    from xor_dnn.modelstore import ModelStoreError, load_version
    from xor_dnn.modelstore import list_versions as listed
    from xor_dnn.storage import StorageError

    started = time.perf_counter()
    try:
        have = listed(model_dir)
    except StorageError as exc:
        raise ModelError(str(exc)) from None
    if version is None:
        version = have[-1] if have else None
        if version is None:
            raise ModelError(
                f"no model version under {model_dir} (train one with `xor-dnn train`,"
                " or pass --model-dir / set XOR_DNN_MODEL_DIR)"
            )
    elif version not in have:
        raise ModelError(f"version {version} not found under {model_dir} (have: {have or 'none'})")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _one_tf_thread()
    _system_allocator()
    try:
        model = load_version(model_dir, version)
    except (ModelStoreError, StorageError) as exc:
        raise ModelError(str(exc)) from exc
    rows = min(warm_up_rows, WARM_UP_ROWS)
    _warm_up(model.predict, model.version, rows)
    return model.predict, model.version, time.perf_counter() - started
