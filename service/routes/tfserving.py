"""TensorFlow Serving's REST API (v1): status, metadata and ``:predict``, row or columnar.

A client written for ``tensorflow/serving`` serving this SavedModel works unchanged: the same
URLs, bodies, answers (``predictions`` / ``outputs`` holding ``probability`` ``[N, 1]``) and
``{"error": "..."}`` errors.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter
from numpy.typing import NDArray
from starlette.responses import Response

from service.codec import parse_body, to_points
from service.dataplane import DataPlane
from service.dataroutes import DataCall, Reply, data_route
from service.errors import InvalidInput
from service.responses import json_response
from service.routes.common import DataPlaneDep, data_plane_errors, parse_version
from service.schemas import ProtocolErrorResponse, TFModelStatusResponse, TFPredictRequest
from xor_dnn.modelstore import INPUT_NAME, OUTPUT_NAME, SIGNATURE_NAME

router = APIRouter(prefix="/v1/models", tags=["tensorflow-serving"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ProtocolErrorResponse, "description": "Invalid body"},
    404: {"model": ProtocolErrorResponse, "description": "Unknown model or version"},
}
_PREDICT_ERRORS = {**_ERRORS, **data_plane_errors(ProtocolErrorResponse)}
_PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/TFPredictRequest"}}
        },
    }
}


# The predict routes come first: for a method they do not allow (OPTIONS), the router answers
# 405 with the Allow of the first route whose path matches, and the status route's
# /{model_name} matches "xor:predict" too.
@data_route(router, "/{model_name}:predict", responses=_PREDICT_ERRORS, openapi_extra=_PREDICT_BODY)
async def predict(call: DataCall) -> Reply:
    """TF Serving predict on the default version, or on a pinned one (``/versions/{version}``)."""
    dataplane = call.dataplane
    raw = call.params.get("version")
    version = None if raw is None else parse_version(raw)
    model = dataplane.model(call.params["model_name"])
    body = parse_body(TFPredictRequest, await call.body(lenient=True))
    if body.signature_name != SIGNATURE_NAME:
        raise InvalidInput(
            f"signature_name: '{body.signature_name[:60]}' not found; the only signature is "
            f"'{SIGNATURE_NAME}'",
            field="signature_name",
        )
    if (body.instances is None) == (body.inputs is None):
        raise InvalidInput(
            "body: exactly one of 'instances' (row format) or 'inputs' (columnar format) "
            "is required",
            field="instances",
        )
    if body.instances is not None:
        dataplane.check_points(len(body.instances), "instances")
        points, key = _rows_to_points(body.instances), "predictions"
    else:
        points, key = _columns_to_points(body.inputs, dataplane), "outputs"
    result = await dataplane.infer(points, version=version, protocol="tfserving", model=model)
    payload = {key: result.probabilities.reshape(-1, 1)}
    return Reply(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY))


data_route(
    router,
    "/{model_name}/versions/{version}:predict",
    responses=_PREDICT_ERRORS,
    openapi_extra=_PREDICT_BODY,
    summary="TF Serving predict on a pinned version",
)(predict)


def _status(versions: list[int]) -> dict[str, Any]:
    return {
        "model_version_status": [
            {
                "version": str(v),
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
            for v in sorted(versions, reverse=True)
        ]
    }


@router.get("/{model_name}", response_model=TFModelStatusResponse, responses=_ERRORS)
async def model_status(model_name: str, dataplane: DataPlaneDep) -> Response:
    """Every loaded version and its state, newest first."""
    return json_response(_status(dataplane.model(model_name).registry.versions))


@router.get(
    "/{model_name}/versions/{version}", response_model=TFModelStatusResponse, responses=_ERRORS
)
async def version_status(model_name: str, version: str, dataplane: DataPlaneDep) -> Response:
    served = dataplane.model(model_name).registry.get(parse_version(version))
    return json_response(_status([served.version]))


def _signature_def() -> dict[str, Any]:
    def tensor(name: str, dims: list[int], tensor_name: str) -> dict[str, Any]:
        return {
            "dtype": "DT_FLOAT",
            "tensor_shape": {
                "dim": [{"size": str(d), "name": ""} for d in dims],
                "unknown_rank": False,
            },
            "name": tensor_name,
        }

    return {
        SIGNATURE_NAME: {
            "inputs": {INPUT_NAME: tensor(INPUT_NAME, [-1, 2], f"serving_default_{INPUT_NAME}:0")},
            "outputs": {OUTPUT_NAME: tensor(OUTPUT_NAME, [-1, 1], "StatefulPartitionedCall:0")},
            "method_name": "tensorflow/serving/predict",
            "defaults": {},
        }
    }


async def _metadata(dataplane: DataPlane, model_name: str, version: int | None) -> Response:
    served = dataplane.model(model_name).registry.get(version)
    return json_response(
        {
            "model_spec": {
                "name": model_name,
                "signature_name": "",
                "version": str(served.version),
            },
            "metadata": {"signature_def": {"signature_def": _signature_def()}},
        }
    )


@router.get("/{model_name}/metadata", responses=_ERRORS)
async def model_metadata(model_name: str, dataplane: DataPlaneDep) -> Response:
    """The ``serving_default`` signature of the default version, as TF Serving shows it."""
    return await _metadata(dataplane, model_name, None)


@router.get("/{model_name}/versions/{version}/metadata", responses=_ERRORS)
async def version_metadata(model_name: str, version: str, dataplane: DataPlaneDep) -> Response:
    return await _metadata(dataplane, model_name, parse_version(version))


def _rows_to_points(instances: list[Any]) -> NDArray[np.float32]:
    rows: list[list[float]] = []
    named = isinstance(instances[0], dict) if instances else False
    for i, instance in enumerate(instances):
        if isinstance(instance, dict) != named:
            raise InvalidInput(
                f'instances[{i}]: mixes named ({{"{INPUT_NAME}": ...}}) and plain list '
                "instances; use one form",
                field=f"instances[{i}]",
            )
        value = _named(instance, f"instances[{i}]") if isinstance(instance, dict) else instance
        if len(value) != 2:
            raise InvalidInput(
                f"instances[{i}]: expected [x, y] (2 numbers), got {len(value)} numbers",
                field=f"instances[{i}]",
            )
        rows.append(value)
    return to_points(rows, validated=True)


def _columns_to_points(inputs: Any, dataplane: DataPlane) -> NDArray[np.float32]:
    field = "inputs"
    if isinstance(inputs, dict):
        inputs = _named(inputs, field)
        field = f"inputs.{INPUT_NAME}"
    dataplane.check_points(len(inputs), field)
    for i, row in enumerate(inputs):
        if len(row) != 2:
            raise InvalidInput(
                f"{field}[{i}]: expected [x, y] (2 numbers), got {len(row)} numbers",
                field=f"{field}[{i}]",
            )
    return to_points(inputs, validated=True)


def _named(mapping: dict[str, Any], field: str) -> Any:
    unknown = sorted(set(mapping) - {INPUT_NAME})
    if unknown:
        raise InvalidInput(
            f"{field}: unknown input '{unknown[0]}'; the signature's only input is '{INPUT_NAME}'",
            field=field,
        )
    if INPUT_NAME not in mapping:
        raise InvalidInput(f"{field}: missing input '{INPUT_NAME}'", field=field)
    return mapping[INPUT_NAME]
