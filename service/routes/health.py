"""Liveness, readiness and the Prometheus scrape endpoint."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from service import metrics
from service.responses import json_response
from service.routes.common import DataPlaneDep
from service.schemas import ErrorResponse

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> Response:
    return json_response({"status": "ok"})


@router.get(
    "/readyz",
    summary="Readiness: a model version is loaded and warm",
    responses={503: {"model": ErrorResponse, "description": "Not ready"}},
)
async def readyz(dataplane: DataPlaneDep) -> Response:
    registry = dataplane.registry
    if not dataplane.ready:
        reason = (
            "shutting down"
            if dataplane.stopping
            else f"no model version loaded yet from {registry.source}"
        )
        if registry.store_error and not dataplane.stopping:
            reason += f" ({registry.store_error})"
        return json_response(
            {"error": {"code": "not_ready", "message": f"not ready: {reason}"}}, 503
        )
    return json_response(
        {
            "status": "ready",
            "model_name": dataplane.model_name,
            "default_version": registry.default_version,
            "versions": registry.versions,
            "source": registry.source,
            "store": "ok" if registry.store_error is None else "unreachable",
        }
    )


def metrics_endpoint(request: Request) -> Response:
    """Prometheus text format; every worker's samples in multiprocess mode."""
    dataplane = getattr(request.app.state, "dataplane", None)
    if dataplane is not None:
        # Queue depth is sampled at scrape time: exact, and free on the request path.
        metrics.QUEUE_POINTS.set(dataplane.batcher.queued_points)
        metrics.QUEUE_REQUESTS.set(dataplane.batcher.queued_requests)
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
