"""Every Prometheus metric of the service, defined once at module level.

With ``--workers > 1`` the CLI points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh folder *before*
any worker imports prometheus-client, so each worker writes its samples to mmap files there
and :func:`render` merges them: one scrape reports every worker. Gauges then need a
``multiprocess_mode`` saying how to merge (queue depth sums over live workers; loaded
versions take the max, every worker loads the same versions).
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
from typing import Any, Protocol, cast

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class _FlushFirst:
    """Collected before every metric below (registered first): the values recorded on the
    request path (:func:`deferred_counter`, :func:`deferred_histogram`) reach the metrics
    before any of them is read."""

    def describe(self) -> list[Any]:
        return []  # no metric of its own

    def collect(self) -> list[Any]:
        flush()
        return []


REGISTRY.register(_FlushFirst())

# Every metric about one model carries a ``model`` label (its name; a server of one model has
# one value), so dashboards and alerts can split or sum a repository's models.

_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
_FAST_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
)  # fmt: skip
_POINT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 16384)
_REQUEST_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

HTTP_REQUESTS = Counter(
    "xor_dnn_http_requests_total",
    "HTTP requests answered, by route template, method and status code.",
    ["route", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "xor_dnn_http_request_duration_seconds",
    "Time from request received to response sent, by route template and method.",
    ["route", "method"],
    buckets=_LATENCY_BUCKETS,
)
GRPC_REQUESTS = Counter(
    "xor_dnn_grpc_requests_total",
    "gRPC calls answered, by full method name and status code.",
    ["method", "code"],
)
GRPC_LATENCY = Histogram(
    "xor_dnn_grpc_request_duration_seconds",
    "Time from a gRPC call's start to its answer, by full method name.",
    ["method"],
    buckets=_LATENCY_BUCKETS,
)
PREDICTED_POINTS = Counter(
    "xor_dnn_predicted_points_total",
    "Points answered with a prediction, by protocol and model version.",
    ["model", "protocol", "version"],
)
BATCH_POINTS = Histogram(
    "xor_dnn_batch_points",
    "Points per model call (dynamic batching merges requests up to max_batch_size).",
    ["model"],
    buckets=_POINT_BUCKETS,
)
BATCH_REQUESTS = Histogram(
    "xor_dnn_batch_requests",
    "Requests merged into one model call.",
    ["model"],
    buckets=_REQUEST_BUCKETS,
)
QUEUE_WAIT = Histogram(
    "xor_dnn_batch_queue_wait_seconds",
    "Time a request waited in the batch queue before its batch started.",
    ["model"],
    buckets=_FAST_BUCKETS,
)
MODEL_CALL = Histogram(
    "xor_dnn_model_call_seconds",
    "Duration of one SavedModel signature call (one batch).",
    ["model"],
    buckets=_FAST_BUCKETS,
)
BATCH_FAILURES = Counter(
    "xor_dnn_batch_failures_total",
    "Model calls that raised; every request of that batch got a 500.",
    ["model", "version"],
)
QUEUE_POINTS = Gauge(
    "xor_dnn_queue_points",
    "Points waiting in the batch queue.",
    ["model"],
    multiprocess_mode="livesum",
)
QUEUE_REQUESTS = Gauge(
    "xor_dnn_queue_requests",
    "Requests waiting in the batch queue.",
    ["model"],
    multiprocess_mode="livesum",
)
OVERLOAD_REFUSALS = Counter(
    "xor_dnn_overload_refusals_total",
    "Requests refused at once: 429 (a model's batch queue full) or 503 (max_inflight_requests "
    "reached, counted with an empty model label: the cap is the server's, not a model's).",
    ["model"],
)
DEADLINE_EXCEEDED = Counter(
    "xor_dnn_deadline_exceeded_total",
    "Requests whose deadline passed before their batch ran (answered 504).",
    ["model"],
)
MODEL_LOADED = Gauge(
    "xor_dnn_model_version_loaded",
    "1 for each model version loaded, warmed and servable; 0 once unloaded.",
    ["model", "version"],
    multiprocess_mode="livemax",
)
MODEL_DEFAULT_VERSION = Gauge(
    "xor_dnn_model_default_version",
    "The version answering requests that do not pin one (0 while none is loaded).",
    ["model"],
    multiprocess_mode="livemax",
)
MODEL_LOADS = Counter(
    "xor_dnn_model_loads_total",
    "Model versions loaded and warmed successfully.",
    ["model"],
)
MODEL_LOAD_FAILURES = Counter(
    "xor_dnn_model_load_failures_total",
    "Model versions that failed to load or to answer their warm-up batch (skipped).",
    ["model", "version"],
)
MODEL_LOAD_SECONDS = Histogram(
    "xor_dnn_model_load_seconds",
    "Time to load and warm one model version.",
    ["model"],
    buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
MODEL_SOURCE = Gauge(
    "xor_dnn_model_source_info",
    "1 for the model repository versions are served from (a folder, s3:// or gs:// URI).",
    ["source"],
    multiprocess_mode="livemax",
)
MODEL_INDEX_FALLBACKS = Counter(
    "xor_dnn_model_index_fallbacks_total",
    "Polls of an object store that found no readable versions.json and listed the repository.",
    ["model"],
)
STORE_REQUESTS = Counter(
    "xor_dnn_store_requests_total",
    "Requests to the model store, by kind (get, list, head, put) and outcome "
    "(ok, not_modified, not_found, precondition_failed, error).",
    ["model", "kind", "outcome"],
)
STORE_DOWNLOADED_BYTES = Counter(
    "xor_dnn_store_downloaded_bytes_total",
    "Bytes downloaded from the model store (index, manifests and model files).",
    ["model"],
)
STORE_UP = Gauge(
    "xor_dnn_store_up",
    "1 when the last poll reached the model store, 0 when it failed (serving continues).",
    ["model"],
    multiprocess_mode="livemin",
)
MODELS_LOADED = Gauge(
    "xor_dnn_repository_models_loaded",
    "Models loaded from the model repository (1 when serving --model-dir).",
    multiprocess_mode="livemax",
)
INPUT_OUT_OF_RANGE = Counter(
    "xor_dnn_input_out_of_range_points_total",
    "Drift signal: points with a feature outside the range seen in training "
    "(metadata.json feature_ranges), by model version and feature.",
    ["model", "version", "feature"],
)


# -- recording on the request path -----------------------------------------------------------
#
# prometheus-client's observe() takes a lock, walks the bucket bounds in Python and locks two
# more values: about 2-3 µs per call, five to seven calls per request. The request path instead
# appends to a list (no lock: list appends are atomic) and :func:`flush` moves what was
# recorded into the metrics in bulk, whenever the default registry is collected (a scrape,
# ``REGISTRY.get_sample_value``: what they read is exact) and every FLUSH_INTERVAL_S (so the
# lists stay short when nobody scrapes). In multiprocess mode (--workers > 1) values are
# recorded at once: a scrape answered by one worker reads the others' files, which must be
# current.

FLUSH_INTERVAL_S = 1.0
"""How often values recorded on the request path reach the metrics between scrapes."""

_counters: dict[Any, DeferredCounter] = {}
_histograms: dict[Any, DeferredHistogram] = {}
_deferred_lock = threading.Lock()


class Count(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class Observe(Protocol):
    def observe(self, value: float) -> None: ...


def deferred_counter(child: Any) -> Count:
    """The request path's recorder of a counter child (one per child, kept for the process,
    as prometheus-client keeps the child). In multiprocess mode the child itself: a scrape
    answered by one worker reads the other workers' files, which must be current."""
    return cast(Count, _recorder(child, _counters, DeferredCounter))


def deferred_histogram(child: Any) -> Observe:
    """The request path's recorder of a histogram child (one per child); the child itself in
    multiprocess mode."""
    return cast(Observe, _recorder(child, _histograms, DeferredHistogram))


def _recorder(child: Any, recorders: dict[Any, Any], kind: type) -> Any:
    if multiprocess_enabled():
        return child
    with _deferred_lock:
        recorder = recorders.get(child)
        if recorder is None:
            recorder = recorders[child] = kind(child)
    return recorder


class DeferredCounter:
    """A labelled counter child, incremented without a lock; :func:`flush` adds up.

    >>> points = deferred_counter(PREDICTED_POINTS.labels(model="m", protocol="p", version="1"))
    >>> points.inc(3)   # recorded; in the exposition after the next flush()
    """

    __slots__ = ("_child", "_pending")

    def __init__(self, child: Any) -> None:
        self._child = child
        self._pending: list[float] = []

    def inc(self, amount: float = 1) -> None:
        self._pending.append(amount)

    def _flush(self) -> None:
        pending = self._pending
        n = len(pending)  # appends racing with this land after n and wait for the next flush
        if n:
            total = sum(pending[:n])
            del pending[:n]
            self._child.inc(total)


class DeferredHistogram:
    """A labelled histogram child observed without a lock; :func:`flush` bins the recorded
    values with numpy and adds them to the child's buckets and sum in one step per bucket.

    The bulk step uses the child's bucket values (prometheus-client's ``_buckets``, ``_sum``,
    ``_upper_bounds``, stable since 0.4; the version is pinned in requirements.lock and
    tests/service/test_metrics.py checks the exposition against plain ``observe``).
    """

    __slots__ = ("_bounds", "_child", "_pending")

    def __init__(self, child: Any) -> None:
        self._child = child
        self._bounds = np.asarray(child._upper_bounds, dtype=np.float64)
        self._pending: list[float] = []

    def observe(self, value: float) -> None:
        self._pending.append(value)

    def _flush(self) -> None:
        pending = self._pending
        n = len(pending)
        if not n:
            return
        values = pending[:n]
        del pending[:n]
        child = self._child
        array = np.asarray(values, dtype=np.float64)
        # The first bound >= value, as observe() picks it; NaN (past +Inf) is in no bucket.
        slots = np.searchsorted(self._bounds, array, side="left")
        counts = np.bincount(slots, minlength=len(self._bounds))[: len(self._bounds)]
        for i in np.flatnonzero(counts):
            child._buckets[i].inc(float(counts[i]))
        child._sum.inc(float(array.sum()))


def flush() -> None:
    """Move every value recorded on the request path into the metrics (safe from any thread)."""
    with _deferred_lock:
        for counter in _counters.values():
            counter._flush()
        for histogram in _histograms.values():
            histogram._flush()


async def flush_every(seconds: float = FLUSH_INTERVAL_S) -> None:
    """Flush forever, every ``seconds`` (a task of the app's lifespan)."""
    while True:
        await asyncio.sleep(seconds)
        flush()


def multiprocess_enabled() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def render() -> tuple[bytes, str]:
    """The exposition text and its content type; merges every worker in multiprocess mode."""
    if multiprocess_enabled():
        reap_dead_workers()
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def mark_worker_dead(pid: int) -> None:
    """Drop a finished worker's live gauges so queue depth does not count ghosts."""
    if multiprocess_enabled():
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


_LIVE_GAUGE = re.compile(r"^gauge_live\w+?_(\d+)\.db$")


def reap_dead_workers() -> list[int]:
    """Drop the live gauges of workers that died without a clean shutdown (SIGKILL, OOM).

    Such a worker never ran :func:`mark_worker_dead`; the supervisor restarts it under a new
    pid, and its last queue depth would be summed into every scrape forever. Counters and
    histograms of the dead worker are kept: what it answered was answered.
    """
    folder = os.environ.get(MULTIPROC_ENV)
    if not folder:
        return []
    reaped = []
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    for name in names:
        match = _LIVE_GAUGE.match(name)
        if match and not _alive(int(match.group(1))):
            pid = int(match.group(1))
            multiprocess.mark_process_dead(pid, folder)  # type: ignore[no-untyped-call]
            reaped.append(pid)
    return reaped


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: existence check only
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
