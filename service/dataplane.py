"""The protocol-neutral core every adapter calls: limits, version resolution, deadline, batch.

It knows no transport (no HTTP, no gRPC, no status codes beyond the ServiceError tree): an
adapter decodes its request into float32 points (``service.codec``), calls
:meth:`DataPlane.infer` and encodes the :class:`Inference`, so every protocol shares one
behaviour: the same limits, the same version resolution, the same metrics and drift signal.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Awaitable
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from service import metrics
from service.batcher import Batcher
from service.config import Settings
from service.errors import (
    DeadlineExceeded,
    InvalidInput,
    Overloaded,
    PayloadTooLarge,
    Unavailable,
)
from service.registry import ModelRegistry
from service.repository import Repository, ServedModel

FEW_POINTS = 8
"""Up to this many points, an answer is built point by point in Python: numpy's vectorised
calls cost more than they save (measured for /predict: 1.1 against 2.2 µs for one point;
1,024 points: 340 against 230 µs the vectorised way)."""


class Inference(NamedTuple):
    """Probabilities for one request, with the version that produced them (a named tuple:
    made once per request, it costs a tuple, not a frozen dataclass's setattr calls)."""

    version: int
    probabilities: NDArray[np.float32]

    @property
    def class_ids(self) -> NDArray[np.int64]:
        return (self.probabilities >= 0.5).astype(np.int64)

    def class_id_values(self) -> list[int] | NDArray[np.int64]:
        """:attr:`class_ids` for a JSON encoder: a plain list for a few points (numpy's two
        calls cost more than comparing a few floats), the array otherwise."""
        if len(self.probabilities) > FEW_POINTS:
            return self.class_ids
        return [1 if p >= 0.5 else 0 for p in self.probabilities.tolist()]


class DataPlane:
    """Shared request path of all protocols; one per app, built in the lifespan.

    Adapters address a model by name (:meth:`model`, one dict lookup) and pass it to
    :meth:`infer`; without one, :meth:`infer` uses the default model (``POST /predict``).
    """

    def __init__(self, settings: Settings, models: Repository) -> None:
        self.settings = settings
        self.models = models
        self.stopping = False

    @property
    def default_model(self) -> ServedModel:
        """The model ``POST /predict`` answers with; 503 while none is loaded."""
        served = self.models.default
        if served is None:
            raise Unavailable("no model is loaded yet; retry when /readyz answers 200")
        return served

    @property
    def model_name(self) -> str:
        """The default model's name."""
        served = self.models.default
        return self.settings.model_name if served is None else served.name

    @property
    def registry(self) -> ModelRegistry:
        """The default model's versions."""
        return self.default_model.registry

    @property
    def batcher(self) -> Batcher:
        """The default model's batch queue."""
        return self.default_model.batcher

    @property
    def ready(self) -> bool:
        return self.models.ready and not self.stopping

    async def admit(self, name: str | None) -> None:
        """Wait for model ``name``'s fair share of this event-loop turn (None: the default
        model); at once unless several models are busy (``service.repository.FairShare``).
        Every adapter calls it (or awaits :meth:`admission`) before its request's real work."""
        waiting = self.admission(name)
        if waiting is not None:
            await waiting

    def admission(self, name: str | None) -> Awaitable[None] | None:
        """What :meth:`admit` awaits; None when nothing is to be waited for (the usual case)."""
        return self.models.admission(name)

    def model(self, name: str) -> ServedModel:
        """The model served as ``name``; :class:`NotFound` (404 in every protocol) if none."""
        return self.models.get(name)

    def check_points(self, n: int, field: str = "points") -> None:
        limit = self.settings.max_points_per_request
        if n < 1:
            raise InvalidInput(f"{field}: at least 1 point is required, got 0", field=field)
        if n > limit:
            raise PayloadTooLarge(
                f"{field}: {n} points exceed the limit of {limit} per request "
                f"(max_points_per_request)",
                field=field,
            )

    async def infer(
        self,
        points: NDArray[np.float32],
        *,
        version: int | None,
        protocol: str,
        deadline: float | None = None,
        model: ServedModel | None = None,
        finite: bool = False,
        max_wait_s: float | None = None,
    ) -> Inference:
        """Probabilities for ``points`` ``(n, 2)`` from ``model`` (None: the default model)
        at ``version`` (None: its default version).

        ``deadline`` is a ``time.monotonic()`` instant, e.g. a gRPC client's own; it applies
        when it comes before ``request_timeout_s`` from now. ``protocol`` labels the
        predicted-points metric. ``finite``: the adapter's validation already refused every
        value that is not finite or not within float32 range (``schemas.FiniteFloat``).
        ``max_wait_s``: how long the request's batch may linger for others (None:
        ``max_batch_wait_ms``; gRPC passes ``grpc_max_batch_wait_ms``).
        """
        n: int = points.shape[0]
        if not 0 < n <= self.settings.max_points_per_request:
            self.check_points(n)  # raises, naming the limit
        if not finite and not _all_finite(points):
            raise InvalidInput(
                "points: every coordinate must be finite and within float32 range (|v| < 3.4e38)",
                field="points",
            )
        if self.stopping:
            raise Unavailable("the service is shutting down and takes no new requests")
        if model is None:
            model = self.models.default
            if model is None:
                raise Unavailable("no model is loaded yet; retry when /readyz answers 200")
        registry = model.registry
        if version is None and not registry.ready:
            raise Unavailable(
                f"model '{model.name}' has no version loaded yet; retry when /readyz answers 200"
            )
        key = registry.get(version).model.version
        now = time.monotonic()
        model.last_used = now
        limit = now + self.settings.request_timeout_s
        if deadline is None or deadline > limit:
            deadline = limit
        try:
            probabilities = await model.batcher.submit(
                points, key=key, deadline=deadline, max_wait_s=max_wait_s
            )
        except Overloaded:
            model.overload_refusals.inc()
            raise
        except DeadlineExceeded:
            model.deadline_misses.inc()
            raise
        if not _all_finite(probabilities):
            raise _overflow(points, probabilities)
        _points_counter(model.name, protocol, key).inc(n)
        return Inference(key, probabilities)


def _all_finite(values: NDArray[np.float32]) -> bool:
    # A numpy reduction costs microseconds of call overhead; a request's few values are
    # checked faster as Python floats.
    if values.size <= 64:
        return all(map(math.isfinite, values.ravel().tolist()))
    return bool(np.isfinite(values).all())


def _overflow(points: NDArray[np.float32], probabilities: NDArray[np.float32]) -> InvalidInput:
    # Huge but finite coordinates can overflow the network's float32 arithmetic (inf - inf):
    # a NaN probability must never leave as a 200 (JSON would carry it as null).
    undefined = ~np.isfinite(probabilities)
    i = int(np.flatnonzero(undefined)[0])
    return InvalidInput(
        f"points[{i}]: the model's float32 arithmetic overflows on ({points[i, 0]:.3g}, "
        f"{points[i, 1]:.3g}): {int(undefined.sum())} point(s) have no defined probability; "
        "use smaller coordinates",
        field=f"points[{i}]",
    )


# Labelled children looked up once: ``labels()`` costs a lock and a dict build per call, on
# every request. Prometheus keeps each child for the life of the process anyway.
@functools.cache
def _points_counter(model: str, protocol: str, version: int) -> Any:
    return metrics.deferred_counter(
        metrics.PREDICTED_POINTS.labels(model=model, protocol=protocol, version=str(version))
    )
