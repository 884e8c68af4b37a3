"""``POST /predict``: our own JSON API, ``{"points": [{"x", "y"}, ...]}`` in, one prediction
per point out, in input order.

A data route (``service.dataroutes``): declared here for OpenAPI, answered by the handler
without FastAPI's per-request machinery. The optional ``version`` query parameter is checked
with the rule a ``Query(ge=1)`` would apply, before the body is read, and still appears in
OpenAPI.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
import orjson
from fastapi import APIRouter
from pydantic import Field, TypeAdapter, ValidationError
from starlette.datastructures import QueryParams

from service.codec import parse_body, to_points
from service.dataplane import FEW_POINTS
from service.dataroutes import DataCall, Reply, data_route
from service.errors import InvalidInput
from service.routes.common import data_plane_errors
from service.schemas import ErrorResponse, PredictRequest, PredictResponse

router = APIRouter(tags=["predict"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    **{
        code: {"model": ErrorResponse, "description": text}
        for code, text in {
            400: "Body is not valid JSON (or nested too deeply)",
            404: "Unknown model, or pinned version not loaded",
            422: "A field is invalid; the message names it and the limit",
        }.items()
    },
    **data_plane_errors(ErrorResponse),
}
_VERSION_DOC = "Pin a loaded version; default: the newest."
_VERSION = TypeAdapter(Annotated[int, Field(ge=1)])


def query_version(query_string: bytes) -> int | None:
    """``?version=N``: None when absent; 422 naming ``version`` when not an integer >= 1."""
    if not query_string:
        return None  # the common case: no parsing at all
    raw = QueryParams(query_string).get("version")
    if raw is None:
        return None
    try:
        return _VERSION.validate_python(raw, strict=False)
    except ValidationError:
        raise InvalidInput(
            f"version: must be an integer >= 1 (a loaded model version), got {raw[:40]!r}",
            field="version",
        ) from None


def predict_response(model_name: str, version: int, probabilities: np.ndarray[Any, Any]) -> bytes:
    """The response body; probabilities stay float32, so orjson prints their shortest text."""
    if len(probabilities) <= FEW_POINTS:
        predictions = [{"probability": p, "class_id": int(p >= 0.5)} for p in probabilities]
    else:  # one vectorised comparison beats a numpy scalar comparison per point
        class_ids = (probabilities >= 0.5).tolist()
        predictions = [
            {"probability": p, "class_id": int(c)}
            for p, c in zip(probabilities, class_ids, strict=True)
        ]
    return orjson.dumps(
        {"model_name": model_name, "model_version": version, "predictions": predictions},
        option=orjson.OPT_SERIALIZE_NUMPY,
    )


_PREDICT_OPENAPI: dict[str, Any] = {
    "parameters": [
        {
            "name": "version",
            "in": "query",
            "required": False,
            "description": _VERSION_DOC,
            "schema": {"type": "integer", "minimum": 1, "title": "Version"},
        }
    ],
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}}
        },
    },
}


@data_route(
    router,
    "/predict",
    response_model=PredictResponse,
    responses=_ERRORS,
    summary="Predict class-1 probabilities for a list of points (the default model)",
    openapi_extra=_PREDICT_OPENAPI,
)
async def predict(call: DataCall) -> Reply:
    # Both routes, one coroutine: /predict (the default model) and /models/{name}/predict.
    dataplane = call.dataplane
    name = call.params.get("model_name")
    # The name first: an unknown model is a 404 before the body is read.
    model = None if name is None else dataplane.model(name)
    version = query_version(call.query_string)
    request = parse_body(PredictRequest, await call.body())
    dataplane.check_points(len(request.points))
    flat: list[float] = []  # one flat list: numpy reads it faster than a list of pairs
    for point in request.points:
        flat += (point.x, point.y)
    result = await dataplane.infer(
        to_points(flat, validated=True),
        version=version,
        protocol="predict",
        model=model,
        finite=True,
    )
    name = dataplane.model_name if model is None else model.name
    return Reply(predict_response(name, result.version, result.probabilities))


data_route(
    router,
    "/models/{model_name}/predict",
    response_model=PredictResponse,
    responses=_ERRORS,
    summary="Predict with the model of that name (GET /models lists them)",
    openapi_extra=_PREDICT_OPENAPI,
)(predict)
