"""The model registry: find, load, warm and hot-swap SavedModel versions; imports TF, not FastAPI.

Versions come from a :class:`~xor_dnn.modelstore.ModelRepository`: a local folder (scanned
each poll) or an object store (one conditional GET of its index per poll; a new version is
downloaded into the cache folder and checked against its manifest before it is loaded). The
store failing or unreachable never unloads anything: the registry keeps serving what it has,
counts the failure, logs once per change of state, and the poller backs off
(:meth:`ModelRegistry.next_poll_delay`).

A version becomes servable only once it has loaded *and* answered a warm-up batch with sane
probabilities; only then does it become the default, so a request never meets a cold or
broken model. A version that fails is logged, counted
(``xor_dnn_model_load_failures_total``) and remembered by a fingerprint of its files, so it
is not retried every poll, but is retried if its files change (a copy that was still being
written). The newest ``keep_versions`` good versions stay loaded; older ones, and versions
removed from disk, are unloaded, except that the last loaded version is never dropped: an
emptied folder leaves the service answering with what it has.

``refresh()`` is synchronous and slow (TensorFlow); the app runs it in a thread on a timer.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import tempfile
import threading
import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from service import metrics
from service.errors import ModelFailure, NotFound
from xor_dnn.modelstore import LoadedModel, ModelRepository, ModelStoreError
from xor_dnn.storage import ObjectNotFound, StorageError

log = logging.getLogger(__name__)

# Corners and centre of the lesson's square: every sign pattern XOR cares about.
WARMUP_POINTS = np.array(
    [[0.5, 0.5], [-0.5, 0.5], [-0.5, -0.5], [0.5, -0.5], [0.0, 0.0], [4.0, -4.0], [-4.0, -4.0]],
    dtype=np.float32,
)
FEATURES = ("x", "y")
_FEW_POINTS = 8


def set_tf_threads(threads: int) -> bool:
    """Size TensorFlow's intra- and inter-op thread pools; 0 leaves TensorFlow's default.

    Only possible before TensorFlow's runtime starts: returns True if applied, False if the
    runtime was already running with other pools (a second app in one process, as in tests),
    which it keeps.
    """
    if threads <= 0:
        return False
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        log.info("TensorFlow already running; its thread pools stay as they are")
        return False
    return True


@dataclass(frozen=True)
class ServedVersion:
    """A loaded, warmed version plus what the request path needs precomputed."""

    model: LoadedModel
    loaded_at: float
    feature_min: NDArray[np.float32] | None = None
    feature_max: NDArray[np.float32] | None = None
    model_name: str = "xor"

    @property
    def version(self) -> int:
        return self.model.version

    @property
    def metadata(self) -> dict[str, Any]:
        return self.model.metadata

    @functools.cached_property
    def _bounds(self) -> tuple[float, float, float, float]:
        """The training range as Python floats: low x, low y, high x, high y."""
        assert self.feature_min is not None and self.feature_max is not None
        low_x, low_y = self.feature_min.tolist()
        high_x, high_y = self.feature_max.tolist()
        return low_x, low_y, high_x, high_y

    def count_drift(self, points: NDArray[np.float32]) -> None:
        """Add the points outside the training range to the drift metric, per feature.

        Called once per batch in the model thread (one vectorised check for all the merged
        requests, off the event loop), not once per request.
        """
        for feature, count in self.out_of_range(points).items():
            _drift_counter(self.model_name, self.version, feature).inc(count)

    def out_of_range(self, points: NDArray[np.float32]) -> dict[str, int]:
        """Per feature, how many points fall outside the training range (drift signal)."""
        low, high = self.feature_min, self.feature_max
        if low is None or high is None:
            return {}
        if points.shape[0] <= _FEW_POINTS:
            # Most batches hold a request or two, and numpy's four calls below cost more
            # than comparing a few Python floats.
            low_x, low_y, high_x, high_y = self._bounds
            count_x = count_y = 0
            for x, y in points.tolist():
                count_x += x < low_x or x > high_x
                count_y += y < low_y or y > high_y
            return {name: c for name, c in zip(FEATURES, (count_x, count_y), strict=True) if c}
        outside = (points < low) | (points > high)
        if not outside.any():  # the usual answer, and one cheap reduction instead of a sum
            return {}
        counts = outside.sum(axis=0)
        return {name: int(c) for name, c in zip(FEATURES, counts, strict=True) if c}


@dataclass
class RefreshResult:
    """What one scan changed; handy in logs and tests."""

    loaded: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    unloaded: list[int] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)
    """Unloaded versions whose grace period ended: no longer referenced, memory to reclaim."""
    store_error: str | None = None
    """Why the store could not be read this time (the registry kept serving what it had)."""


class ModelRegistry:
    """The versions of one model, loaded from ``model_dir``.

    Usage::

        registry = ModelRegistry("models/xor", keep_versions=3)   # or "s3://bucket/xor",
                                                                   # cache_dir=Path(...)
        registry.refresh()                 # load/warm new versions, unload old ones
        probs = registry.predict(None, np.array([[1, -1]], np.float32))   # default version

    Reads (``get``, ``predict``, ``versions``) are lock-free snapshots of an immutable dict,
    safe from any thread while ``refresh`` runs in another.
    """

    def __init__(
        self,
        model_dir: str | os.PathLike[str],
        *,
        model_name: str = "xor",
        keep_versions: int = 3,
        retire_grace_s: float = 60.0,
        cache_dir: Path | None = None,
        lite_max_points: int = 0,
    ) -> None:
        if keep_versions < 1:
            raise ValueError(f"keep_versions must be >= 1, got {keep_versions}")
        self.repository = ModelRepository(
            model_dir,
            cache_dir=cache_dir,
            observer=functools.partial(_count_request, model_name),
            lite_max_points=lite_max_points,
        )
        self._own_cache: tempfile.TemporaryDirectory[str] | None = None
        if self.repository.remote and cache_dir is None:
            self._own_cache = tempfile.TemporaryDirectory(prefix="xor-dnn-cache-")
            self.repository.cache_dir = Path(self._own_cache.name)
        self.model_name = model_name
        self.keep_versions = keep_versions
        self.retire_grace_s = retire_grace_s
        self._served: dict[int, ServedVersion] = {}
        # Unloaded versions stay callable for a grace period: a request routed to one just
        # before it was unloaded still finds it when its batch runs.
        self._retired: dict[int, tuple[ServedVersion, float]] = {}
        self._failed: dict[int, Any] = {}
        self._refresh_lock = threading.Lock()
        self.store_error: str | None = None
        """Why the last poll could not read the store; None when it could."""
        self._store_failures = 0
        metrics.MODEL_SOURCE.labels(source=self.source).set(1)

    @property
    def source(self) -> str:
        """Where versions come from: the URI of an object store, a local folder's name."""
        repo = self.repository
        return repo.uri if repo.local_root is None else f"{repo.local_root.name}/"

    def next_poll_delay(self, interval: float) -> float:
        """Seconds until the next poll: ``interval`` with +-20% jitter, so a fleet of pods
        does not poll in lockstep; doubled per consecutive store failure, up to 30 s (or
        ``interval`` when that is longer)."""
        backoff = min(2 ** min(self._store_failures, 16), max(1.0, 30.0 / interval))
        # B311: jitter that spreads a fleet's polls, not a secret.
        return float(interval * backoff * random.uniform(0.8, 1.2))  # nosec B311

    # -- reads (request path) ----------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return bool(self._served)

    @property
    def versions(self) -> list[int]:
        """Loaded versions, oldest first."""
        return sorted(self._served)

    @property
    def default_version(self) -> int | None:
        served = self._served
        return max(served) if served else None

    @property
    def failed_versions(self) -> list[int]:
        return sorted(self._failed)

    def get(self, version: int | None = None) -> ServedVersion:
        """The pinned version, or the default one; :class:`NotFound` if it is not loaded."""
        served = self._served
        if version is None:
            if not served:
                raise NotFound(f"model '{self.model_name}' has no version loaded yet")
            return served[max(served)]
        found = served.get(version)
        if found is None:
            available = ", ".join(map(str, sorted(served))) or "none"
            raise NotFound(
                f"model '{self.model_name}' version {version} is not loaded "
                f"(loaded versions: {available})",
                field="version",
            )
        return found

    def runs_inline(self, version: Hashable, points: int) -> bool:
        """True when a batch of ``points`` on ``version`` is known to be a short call (LiteRT,
        measured at load: ``LoadedModel.inline_max_points``): the batcher then calls
        :meth:`predict` on the event loop rather than paying its model thread's hand-off."""
        served = self._served.get(version) if isinstance(version, int) else None
        return served is not None and points <= served.model.inline_max_points

    def predict(self, version: Hashable, points: NDArray[np.float32]) -> NDArray[np.float32]:
        """One signature call on ``version``; the batcher's ``predict``, run in its thread."""
        if not (version is None or isinstance(version, int)):
            raise ModelFailure(f"batch key {version!r} is not a model version")
        if version is not None and version not in self._served and version in self._retired:
            served = self._retired[version][0]
        else:
            try:
                served = self.get(version)
            except NotFound as exc:
                raise ModelFailure(exc.message) from None
        served.count_drift(points)
        return served.model.predict(points)

    # -- refresh (poller thread) -------------------------------------------------------------

    def refresh(self) -> RefreshResult:
        """Scan the folder once: load and warm new versions, unload old or removed ones."""
        with self._refresh_lock:
            return self._refresh()

    def _refresh(self) -> RefreshResult:
        result = RefreshResult()
        try:
            on_disk = self.repository.list_versions()
        except StorageError as exc:
            self._store_failed(exc, result)
            self._drop_expired_retired(result)
            return result
        self._store_ok()
        if self.repository.listing == "list":
            metrics.MODEL_INDEX_FALLBACKS.labels(model=self.model_name).inc()
        on_disk_set = set(on_disk)
        # Forget failures of folders that vanished, so a re-published number is tried again.
        for version in list(self._failed):
            if version not in on_disk_set:
                del self._failed[version]
        # Newest first: only the newest keep_versions loadable versions are wanted, and a
        # broken newest version must not stop an older good one from loading.
        wanted: list[int] = []
        for version in sorted(on_disk, reverse=True):
            if len(wanted) >= self.keep_versions:
                break
            if version in self._served:
                wanted.append(version)
                continue
            if self._should_skip(version):
                continue
            try:
                served = self._load(version, result)
            except StorageError as exc:
                # The store failed mid-download: not the version's fault, try it next poll.
                self._store_failed(exc, result)
                wanted.extend(v for v in self._served if v not in wanted)
                break
            if served is not None:
                self._publish({**self._served, version: served})
                wanted.append(version)
        self._unload_unwanted(set(wanted), result)
        self._drop_expired_retired(result)
        self.repository.prune_cache(set(self._served))
        return result

    def _store_failed(self, exc: StorageError, result: RefreshResult) -> None:
        result.store_error = str(exc)
        self._store_failures += 1
        metrics.STORE_UP.labels(model=self.model_name).set(0)
        if self.store_error is None:
            log.error("model store unreachable, still serving %s: %s", self.versions or "none", exc)
        self.store_error = str(exc)

    def _store_ok(self) -> None:
        if self.store_error is not None:
            log.info("model store reachable again (%s)", self.source)
        self.store_error = None
        self._store_failures = 0
        metrics.STORE_UP.labels(model=self.model_name).set(1)

    def _should_skip(self, version: int) -> bool:
        previous = self._failed.get(version)
        if previous is None:
            return False
        if previous == self.repository.fingerprint(version):
            return True
        log.info("model version %d changed in the store since it failed; retrying", version)
        del self._failed[version]
        return False

    def _load(self, version: int, result: RefreshResult) -> ServedVersion | None:
        fingerprint = self.repository.fingerprint(version)
        started = time.perf_counter()
        try:
            model = self.repository.load(version)
            _warm_up(model)
        except Exception as exc:  # any failure means: skip it, keep serving what we have
            if isinstance(exc, StorageError) and not isinstance(exc, ObjectNotFound):
                raise  # the store failed, not the version: retried on the next poll
            self._failed[version] = fingerprint
            result.failed.append(version)
            metrics.MODEL_LOAD_FAILURES.labels(model=self.model_name, version=str(version)).inc()
            log.error(
                "model '%s' version %d skipped: %s",
                self.model_name,
                version,
                exc,
                extra={
                    "model_name": self.model_name,
                    "model_version": version,
                    "error_type": type(exc).__name__,
                },
            )
            return None
        seconds = time.perf_counter() - started
        metrics.MODEL_LOADS.labels(model=self.model_name).inc()
        metrics.MODEL_LOAD_SECONDS.labels(model=self.model_name).observe(seconds)
        result.loaded.append(version)
        log.info(
            "model '%s' version %d loaded and warmed in %.2f s (runs in %s)",
            self.model_name,
            version,
            seconds,
            model.runtime,
            extra={"model_name": self.model_name, "model_version": version},
        )
        low, high = _feature_bounds(model.metadata)
        return ServedVersion(model, time.time(), low, high, model_name=self.model_name)

    def _unload_unwanted(self, wanted: set[int], result: RefreshResult) -> None:
        served = dict(self._served)
        for version in sorted(served):
            if version in wanted:
                continue
            if len(served) == 1:
                log.warning(
                    "model version %d is gone from %s but is the only one loaded; still serving it",
                    version,
                    self.source,
                )
                break
            self._retired[version] = (served.pop(version), time.monotonic())
            result.unloaded.append(version)
            metrics.MODEL_LOADED.labels(model=self.model_name, version=str(version)).set(0)
            log.info(
                "model '%s' version %d unloaded",
                self.model_name,
                version,
                extra={"model_name": self.model_name, "model_version": version},
            )
        self._publish(served)

    def _publish(self, served: dict[int, ServedVersion]) -> None:
        # Swap in a new dict rather than mutate: readers in other threads see old or new.
        self._served = served
        for version in served:
            metrics.MODEL_LOADED.labels(model=self.model_name, version=str(version)).set(1)
        metrics.MODEL_DEFAULT_VERSION.labels(model=self.model_name).set(
            max(served) if served else 0
        )

    def _drop_expired_retired(self, result: RefreshResult) -> None:
        now = time.monotonic()
        for version, (_, since) in list(self._retired.items()):
            if now - since > self.retire_grace_s or version in self._served:
                del self._retired[version]
                result.dropped.append(version)

    def close(self) -> None:
        """Drop every model (tests build many registries in one process)."""
        with self._refresh_lock:
            for version in self._served:
                metrics.MODEL_LOADED.labels(model=self.model_name, version=str(version)).set(0)
            self._served = {}
            self._retired.clear()
            metrics.MODEL_DEFAULT_VERSION.labels(model=self.model_name).set(0)
            metrics.MODEL_SOURCE.labels(source=self.source).set(0)
            if self._own_cache is not None:
                self._own_cache.cleanup()


@functools.cache
def _drift_counter(model: str, version: int, feature: str) -> Any:
    # The labelled child looked up once: labels() takes a lock and builds a key every call.
    return metrics.INPUT_OUT_OF_RANGE.labels(model=model, version=str(version), feature=feature)


def _warm_up(model: LoadedModel) -> None:
    """The first call traces and allocates; make it here and check the answers are sane."""
    for batch in (WARMUP_POINTS[:1], WARMUP_POINTS):
        probs = model.predict(batch)
        if probs.shape != (batch.shape[0],) or not np.all(np.isfinite(probs)):
            raise ModelStoreError(f"warm-up returned non-finite or misshapen output {probs!r}")
        if np.any(probs < 0.0) or np.any(probs > 1.0):
            raise ModelStoreError(f"warm-up returned probabilities outside [0, 1]: {probs!r}")


def _feature_bounds(
    metadata: dict[str, Any],
) -> tuple[NDArray[np.float32] | None, NDArray[np.float32] | None]:
    ranges = metadata.get("feature_ranges")
    if not isinstance(ranges, dict):
        return None, None
    try:
        low = [float(ranges[name]["min"]) for name in FEATURES]
        high = [float(ranges[name]["max"]) for name in FEATURES]
    except (KeyError, TypeError, ValueError):
        log.warning("metadata feature_ranges malformed; drift metric off for this version")
        return None, None
    return np.array(low, dtype=np.float32), np.array(high, dtype=np.float32)


def _count_request(model: str, kind: str, outcome: str, size: int) -> None:
    metrics.STORE_REQUESTS.labels(model=model, kind=kind, outcome=outcome).inc()
    if size:
        metrics.STORE_DOWNLOADED_BYTES.labels(model=model).inc(size)
