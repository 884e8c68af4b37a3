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
    """Ready when a model answers (with a repository: any of its models, so one broken model
    folder does not take the others out of the load balancer); the body describes the
    default model and lists every model's readiness."""
    default = dataplane.models.default
    if not dataplane.ready or default is None:
        if dataplane.stopping:
            reason = "shutting down"
        elif default is None:
            source = dataplane.models.source or dataplane.settings.model_dir
            reason = f"no model loaded yet from {source}"
            if dataplane.models.store_error:
                reason += f" ({dataplane.models.store_error})"
        else:
            registry = default.registry
            reason = f"no model version loaded yet from {registry.source}"
            if registry.store_error:
                reason += f" ({registry.store_error})"
        return json_response(
            {"error": {"code": "not_ready", "message": f"not ready: {reason}"}}, 503
        )
    registry = default.registry
    return json_response(
        {
            "status": "ready",
            "model_name": default.name,
            "default_version": registry.default_version,
            "versions": registry.versions,
            "source": registry.source,
            "store": "ok" if registry.store_error is None else "unreachable",
            "models": {m.name: m.ready for m in dataplane.models.models},
        }
    )


def metrics_endpoint(request: Request) -> Response:
    """Prometheus text format; every worker's samples in multiprocess mode."""
    dataplane = getattr(request.app.state, "dataplane", None)
    if dataplane is not None:
        for model in dataplane.models.models:
            model.sample_queue()
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
