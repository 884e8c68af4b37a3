"""``POST /predict``: our own JSON API, ``{"points": [{"x", "y"}, ...]}`` in, one prediction
per point out, in input order."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from service.dataplane import parse_body, to_points
from service.routes.common import DataPlaneDep, json_response, read_body
from service.schemas import ErrorResponse, PredictRequest, PredictResponse

router = APIRouter(tags=["predict"])

_ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        400: "Body is not valid JSON (or nested too deeply)",
        404: "Pinned version not loaded",
        413: "Body or point count over the configured limit",
        415: "Content-Type is not application/json",
        422: "A field is invalid; the message names it and the limit",
        429: "Batch queue full; retry after Retry-After seconds",
        503: "No model loaded yet, or shutting down",
        504: "Deadline passed before the batch ran",
    }.items()
}


@router.post(
    "/predict",
    response_model=PredictResponse,
    responses=_ERRORS,
    summary="Predict class-1 probabilities for a list of points",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}}
            },
        }
    },
)
async def predict(
    request: Request,
    dataplane: DataPlaneDep,
    version: Annotated[
        int | None, Query(ge=1, description="Pin a loaded version; default: the newest.")
    ] = None,
) -> Response:
    body = parse_body(PredictRequest, await read_body(request))
    dataplane.check_points(len(body.points))
    points = to_points([(p.x, p.y) for p in body.points])
    result = await dataplane.infer(points, version=version, protocol="predict")
    predictions = [
        {"probability": p, "class_id": int(c)}
        for p, c in zip(result.probabilities, result.class_ids, strict=True)
    ]
    return json_response(
        {
            "model_name": dataplane.model_name,
            "model_version": result.version,
            "predictions": predictions,
        }
    )
