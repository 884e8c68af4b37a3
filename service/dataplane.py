"""The protocol-neutral core every route calls: parse, validate limits, batch, predict.

It knows no HTTP (no FastAPI, no status codes beyond the ServiceError tree), so the
``/predict``, TensorFlow Serving and Open Inference Protocol routes share one behaviour:
the same limits, the same version resolution, the same metrics and drift signal.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ValidationError

from service import metrics
from service.batcher import Batcher
from service.config import Settings
from service.errors import (
    BadRequest,
    DeadlineExceeded,
    InvalidInput,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    Unavailable,
)
from service.registry import ModelRegistry

M = TypeVar("M", bound=BaseModel)

_MAX_ERRORS_SHOWN = 3


@dataclass(frozen=True)
class Inference:
    """Probabilities for one request, with the version that produced them."""

    version: int
    probabilities: NDArray[np.float32]

    @property
    def class_ids(self) -> NDArray[np.int64]:
        return (self.probabilities >= 0.5).astype(np.int64)


class DataPlane:
    """Shared request path of all protocols; one per app, built in the lifespan."""

    def __init__(self, settings: Settings, registry: ModelRegistry, batcher: Batcher) -> None:
        self.settings = settings
        self.registry = registry
        self.batcher = batcher
        self.stopping = False

    @property
    def model_name(self) -> str:
        return self.settings.model_name

    @property
    def ready(self) -> bool:
        return self.registry.ready and self.batcher.running and not self.stopping

    def check_model(self, name: str) -> None:
        if name != self.settings.model_name:
            raise NotFound(
                f"model '{name}' is not served here (this server serves "
                f"'{self.settings.model_name}')",
                field="model_name",
            )

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
        self, points: NDArray[np.float32], *, version: int | None, protocol: str
    ) -> Inference:
        """Probabilities for ``points`` ``(n, 2)`` from ``version`` (None: the default)."""
        self.check_points(int(points.shape[0]))
        if not np.all(np.isfinite(points)):
            raise InvalidInput(
                "points: every coordinate must be finite and within float32 range (|v| < 3.4e38)",
                field="points",
            )
        if self.stopping:
            raise Unavailable("the service is shutting down and takes no new requests")
        if version is None and not self.registry.ready:
            raise Unavailable(
                f"model '{self.model_name}' has no version loaded yet; retry when "
                "/readyz answers 200"
            )
        served = self.registry.get(version)
        label = str(served.version)
        for feature, count in served.out_of_range(points).items():
            metrics.INPUT_OUT_OF_RANGE.labels(version=label, feature=feature).inc(count)
        deadline = time.monotonic() + self.settings.request_timeout_s
        try:
            probabilities = await self.batcher.submit(points, key=served.version, deadline=deadline)
        except Overloaded:
            metrics.OVERLOAD_REFUSALS.inc()
            raise
        except DeadlineExceeded:
            metrics.DEADLINE_EXCEEDED.inc()
            raise
        metrics.PREDICTED_POINTS.labels(protocol=protocol, version=label).inc(len(probabilities))
        return Inference(served.version, probabilities)


def to_points(values: Any) -> NDArray[np.float32]:
    """float32 ``(n, 2)``; values beyond float32 become inf, which ``infer`` then refuses."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.asarray(values, dtype=np.float32).reshape(-1, 2)


def parse_body(model: type[M], body: bytes | str) -> M:
    """Validate a JSON body against ``model``; raise errors that name the field and limit."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise validation_error(exc.errors(include_url=False)) from None


def validation_error(errors: list[Any], *, prefix: str = "") -> BadRequest | InvalidInput:
    """One ServiceError summarising pydantic-style errors (the deepest first, up to three)."""
    if not errors:
        return InvalidInput("invalid request")
    for err in errors:
        if err.get("type") == "json_invalid":
            reason = (err.get("ctx") or {}).get("error", err.get("msg", "invalid JSON"))
            return BadRequest(f"body: not valid JSON ({reason})", field="body")
    # Unions report one error per member; the deepest ones matched the shape best.
    depth = max(len(_clean_loc(e.get("loc", ()))) for e in errors)
    ordered = [e for e in errors if len(_clean_loc(e.get("loc", ()))) == depth]
    seen: set[str] = set()
    parts: list[str] = []
    first_field: str | None = None
    for err in ordered:
        field = prefix + format_loc(err.get("loc", ()))
        text = f"{field or 'body'}: {_describe(err)}"
        if text in seen:
            continue
        seen.add(text)
        parts.append(text)
        first_field = first_field or field or None
        if len(parts) == _MAX_ERRORS_SHOWN:
            break
    extra = len(ordered) - len(parts)
    message = "; ".join(parts) + (f" (and {extra} more errors)" if extra > 0 else "")
    return InvalidInput(message, field=first_field)


def format_loc(loc: Any) -> str:
    """``("points", 0, "x")`` -> ``points[0].x``; drops pydantic's union-member tags."""
    out = ""
    for part in _clean_loc(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _clean_loc(loc: Any) -> list[Any]:
    # Union members appear in loc as type names such as "list[constrained-float]".
    return [p for p in loc if isinstance(p, int) or "[" not in p]


def _describe(err: dict[str, Any]) -> str:
    kind = err.get("type", "")
    ctx = err.get("ctx") or {}
    if kind == "finite_number":
        return "must be a finite number (no NaN or Infinity)"
    if kind in ("float_type", "int_type", "float_parsing"):
        return f"must be a JSON number, got {_show(err.get('input'))}"
    if kind == "extra_forbidden":
        return "unknown field (not allowed)"
    if kind == "missing":
        return "field required"
    if kind == "too_short":
        return f"needs at least {ctx.get('min_length')} item(s), got {ctx.get('actual_length')}"
    if kind == "too_long":
        return f"allows at most {ctx.get('max_length')} items, got {ctx.get('actual_length')}"
    return f"{err.get('msg', 'invalid value')}, got {_show(err.get('input'))}"


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
