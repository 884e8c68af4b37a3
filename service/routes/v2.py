"""The Open Inference Protocol (KServe V2, Triton's HTTP API), including the binary tensor
extension, so ``tritonclient.http`` works with its defaults (binary inputs and outputs).

Input: one tensor ``points``, shape ``[N, 2]``, FP32 or FP64, as JSON ``data`` (flat or
nested, row-major) or as raw little-endian bytes after the JSON header. Outputs:
``probability`` ``[N, 1]`` FP32 and ``class_id`` ``[N, 1]`` INT64.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter
from numpy.typing import NDArray
from starlette.responses import Response

from service.codec import parse_body, to_points
from service.dataplane import DataPlane
from service.dataroutes import DataCall, Reply, data_route
from service.errors import BadRequest, InvalidInput, Unavailable
from service.responses import json_response
from service.routes.common import DataPlaneDep, data_plane_errors, parse_version
from service.schemas import (
    ProtocolErrorResponse,
    V2InferenceRequest,
    V2InferenceResponse,
    V2ModelMetadata,
    V2ServerMetadata,
)
from xor_dnn import __version__
from xor_dnn.modelstore import INPUT_NAME, OUTPUT_NAME

router = APIRouter(prefix="/v2", tags=["open-inference-protocol-v2"])

HEADER_LENGTH = "inference-header-content-length"
CLASS_OUTPUT = "class_id"
OUTPUT_TYPES = {OUTPUT_NAME: "FP32", CLASS_OUTPUT: "INT64"}
_INPUT_DTYPES: dict[str, np.dtype[Any]] = {"FP32": np.dtype("<f4"), "FP64": np.dtype("<f8")}
_WIRE_DTYPES: dict[str, np.dtype[Any]] = {
    OUTPUT_NAME: np.dtype("<f4"),
    CLASS_OUTPUT: np.dtype("<i8"),
}
_BINARY_TYPES = frozenset({"application/octet-stream"})
_HEADER_LENGTH = HEADER_LENGTH.encode()
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ProtocolErrorResponse, "description": "Invalid request"},
    404: {"model": ProtocolErrorResponse, "description": "Unknown model or version"},
}
_PREDICT_ERRORS = {**_ERRORS, **data_plane_errors(ProtocolErrorResponse)}
_INFER_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/V2InferenceRequest"}}
        },
    }
}


@router.get("/health/live", responses=_ERRORS)
async def live() -> Response:
    return json_response({"live": True})


@router.get("/health/ready", responses=_ERRORS)
async def ready(dataplane: DataPlaneDep) -> Response:
    is_ready = dataplane.ready
    return json_response({"ready": is_ready}, 200 if is_ready else 503)


@router.get("", response_model=V2ServerMetadata)
async def server_metadata() -> Response:
    return json_response(
        {"name": "xor-dnn", "version": __version__, "extensions": ["binary_tensor_data"]}
    )


def _model_metadata(name: str, versions: list[int]) -> Response:
    return json_response(
        {
            "name": name,
            "versions": [str(v) for v in versions],
            "platform": "tensorflow_savedmodel",
            "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, 2]}],
            "outputs": [
                {"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1, 1]},
                {"name": CLASS_OUTPUT, "datatype": "INT64", "shape": [-1, 1]},
            ],
        }
    )


@router.get("/models/{model_name}", response_model=V2ModelMetadata, responses=_ERRORS)
async def model_metadata(model_name: str, dataplane: DataPlaneDep) -> Response:
    versions = dataplane.model(model_name).registry.versions
    if not versions:
        raise Unavailable(f"model '{model_name}' has no version loaded yet")
    return _model_metadata(model_name, versions)


@router.get(
    "/models/{model_name}/versions/{version}", response_model=V2ModelMetadata, responses=_ERRORS
)
async def version_metadata(model_name: str, version: str, dataplane: DataPlaneDep) -> Response:
    served = dataplane.model(model_name).registry.get(parse_version(version))
    return _model_metadata(model_name, [served.version])


@router.get("/models/{model_name}/ready", responses=_ERRORS)
async def model_ready(model_name: str, dataplane: DataPlaneDep) -> Response:
    is_ready = dataplane.model(model_name).ready and not dataplane.stopping
    return json_response({"name": model_name, "ready": is_ready}, 200 if is_ready else 503)


@router.get("/models/{model_name}/versions/{version}/ready", responses=_ERRORS)
async def version_ready(model_name: str, version: str, dataplane: DataPlaneDep) -> Response:
    model = dataplane.model(model_name)
    served = model.registry.get(parse_version(version))
    is_ready = model.ready and not dataplane.stopping
    return json_response(
        {"name": model_name, "version": str(served.version), "ready": is_ready},
        200 if is_ready else 503,
    )


@data_route(
    router,
    "/models/{model_name}/infer",
    response_model=V2InferenceResponse,
    responses=_PREDICT_ERRORS,
    openapi_extra=_INFER_BODY,
)
async def infer(call: DataCall) -> Reply:
    """Inference on the default version, or on a pinned one (``/versions/{version}``)."""
    dataplane = call.dataplane
    raw_version = call.params.get("version")
    version = None if raw_version is None else parse_version(raw_version)
    model_name = call.params["model_name"]
    model = dataplane.model(model_name)
    raw = await call.body(lenient=True, extra_types=_BINARY_TYPES)
    header, binary = _split_binary(raw, call.header(_HEADER_LENGTH))
    body = parse_body(V2InferenceRequest, header)
    points, finite = _input_points(body, binary, dataplane)
    wanted = _requested_outputs(body)
    result = await dataplane.infer(
        points, version=version, protocol="v2", model=model, finite=finite
    )
    n = int(points.shape[0])
    outputs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name, as_binary in wanted:
        probability = name == OUTPUT_NAME
        out: dict[str, Any] = {"name": name, "datatype": OUTPUT_TYPES[name], "shape": [n, 1]}
        if as_binary:  # little-endian, as the binary extension says, whatever this machine is
            tensor = result.probabilities if probability else result.class_ids
            data = tensor.astype(_WIRE_DTYPES[name], copy=False).tobytes()
            out["parameters"] = {"binary_data_size": len(data)}
            chunks.append(data)
        else:
            out["data"] = result.probabilities if probability else result.class_id_values()
        outputs.append(out)
    payload: dict[str, Any] = {
        "model_name": model_name,
        "model_version": str(result.version),
        "outputs": outputs,
    }
    if body.id is not None:
        payload["id"] = body.id
    encoded = orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return Reply(encoded)
    return Reply(
        encoded + b"".join(chunks),
        media_type="application/octet-stream",
        headers=(("Inference-Header-Content-Length", str(len(encoded))),),
    )


data_route(
    router,
    "/models/{model_name}/versions/{version}/infer",
    response_model=V2InferenceResponse,
    responses=_PREDICT_ERRORS,
    openapi_extra=_INFER_BODY,
    summary="Inference on a pinned version",
)(infer)


def _split_binary(raw: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return raw, b""
    if not header_length.strip().isdigit():
        raise BadRequest(
            f"Inference-Header-Content-Length: must be a byte count, got '{header_length[:40]}'"
        )
    size = int(header_length)
    if size > len(raw):
        raise BadRequest(
            f"Inference-Header-Content-Length: {size} exceeds the body's {len(raw)} bytes"
        )
    return raw[:size], raw[size:]


def _input_points(
    body: V2InferenceRequest, binary: bytes, dataplane: DataPlane
) -> tuple[NDArray[np.float32], bool]:
    """The input tensor as float32 points, and whether they are known finite and in float32
    range (JSON data: the schema checked every value; raw bytes: not yet)."""
    if len(body.inputs) != 1:
        raise InvalidInput(
            f"inputs: the model takes exactly 1 input ('{INPUT_NAME}'), got {len(body.inputs)}"
        )
    tensor = body.inputs[0]
    if tensor.name != INPUT_NAME:
        raise InvalidInput(
            f"inputs[0].name: unknown input '{tensor.name[:60]}'; the model's input is "
            f"'{INPUT_NAME}'"
        )
    dtype = _INPUT_DTYPES.get(tensor.datatype)
    if dtype is None:
        raise InvalidInput(
            f"inputs[0].datatype: '{tensor.datatype[:20]}' not supported; use FP32 or FP64"
        )
    if len(tensor.shape) != 2 or tensor.shape[1] != 2:
        raise InvalidInput(f"inputs[0].shape: must be [N, 2], got {tensor.shape}")
    n = tensor.shape[0]
    dataplane.check_points(n, "inputs[0].shape[0]")
    binary_size = (tensor.parameters or {}).get("binary_data_size")
    if binary_size is not None:
        if tensor.data is not None:
            raise InvalidInput("inputs[0]: has both 'data' and binary_data_size; send one")
        expected = n * 2 * dtype.itemsize
        if type(binary_size) is not int or binary_size != expected or len(binary) != expected:
            raise InvalidInput(
                f"inputs[0].parameters.binary_data_size: shape {tensor.shape} {tensor.datatype} "
                f"needs {expected} bytes; declared {binary_size!r}, body has {len(binary)}"
            )
        return to_points(np.frombuffer(binary, dtype=dtype)), False
    else:
        if binary:
            raise InvalidInput(
                "inputs[0]: binary data after the JSON header, but no binary_data_size"
            )
        if tensor.data is None:
            raise InvalidInput("inputs[0].data: required (or send binary data)")
        try:  # every value is a finite number within float32 range (FiniteFloat): no overflow
            values = np.array(tensor.data, dtype=np.float32)
        except ValueError:
            raise InvalidInput(
                "inputs[0].data: nested rows must all hold 2 numbers (row-major [N, 2])"
            ) from None
        if values.size != n * 2:
            raise InvalidInput(
                f"inputs[0].data: shape {tensor.shape} needs {n * 2} numbers, got {values.size}"
            )
        return values.reshape(n, 2), True


_EVERY_OUTPUT = {binary: tuple((name, binary) for name in OUTPUT_TYPES) for binary in (False, True)}
"""What a request that names no outputs gets: all of them, as JSON or as binary."""


def _requested_outputs(body: V2InferenceRequest) -> Sequence[tuple[str, bool]]:
    default_binary = body.parameters is not None and (
        body.parameters.get("binary_data_output") is True
    )
    if body.outputs is None:
        return _EVERY_OUTPUT[default_binary]
    wanted: list[tuple[str, bool]] = []
    for i, out in enumerate(body.outputs):
        if out.name not in OUTPUT_TYPES:
            raise InvalidInput(
                f"outputs[{i}].name: unknown output '{out.name[:60]}'; outputs are "
                f"{', '.join(OUTPUT_TYPES)}"
            )
        flag = (out.parameters or {}).get("binary_data", default_binary)
        if out.parameters and "classification" in out.parameters:
            raise InvalidInput(f"outputs[{i}].parameters.classification: not supported")
        wanted.append((out.name, flag is True))
    return wanted
