"""Pydantic v2 request and response models for every protocol the service speaks.

Requests are strict: numbers must be JSON numbers (no ``"1.5"``, no ``true``), finite, and
unknown fields are refused, so a typo fails loudly instead of being ignored. Point-count
limits are configurable and checked by the data plane, not baked into these classes.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

FLOAT32_MAX = 3.4028234663852886e38
"""The model computes in float32: a larger magnitude would become infinity."""

FiniteFloat = Annotated[
    float, Field(strict=True, allow_inf_nan=False, ge=-FLOAT32_MAX, le=FLOAT32_MAX)
]
"""A JSON number (int or float literal) in float32 range, never a string, a boolean, NaN/inf."""

_STRICT = ConfigDict(strict=True, extra="forbid")


# -- POST /predict -------------------------------------------------------------------------


class Point(BaseModel):
    """One input point of the XOR plane."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    x: FiniteFloat
    y: FiniteFloat


class PredictRequest(BaseModel):
    """``{"points": [{"x": 1.0, "y": -2.0}, ...]}``: 1..max_points_per_request points."""

    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        json_schema_extra={"examples": [{"points": [{"x": 1.5, "y": -2.0}, {"x": 3, "y": 4}]}]},
    )

    points: list[Point] = Field(min_length=1)


class Prediction(BaseModel):
    probability: float = Field(description="Probability of class 1 (x·y < 0), in [0, 1].")
    class_id: Literal[0, 1] = Field(description="1 when probability >= 0.5, else 0.")


class PredictResponse(BaseModel):
    """One prediction per input point, in input order."""

    model_name: str
    model_version: int
    predictions: list[Prediction]


# -- errors ----------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable kind, e.g. invalid_input, not_found.")
    message: str = Field(description="What is wrong, naming the field and the limit.")
    field: str | None = Field(default=None, description="The offending field, e.g. points[2].x.")


class ErrorResponse(BaseModel):
    """The error shape of /predict, /models and the health routes."""

    error: ErrorDetail


class ProtocolErrorResponse(BaseModel):
    """The error shape of the TensorFlow Serving (v1) and Open Inference Protocol (v2) routes."""

    error: str


# -- GET /models/{name} (the playground) ----------------------------------------------------


class ModelListing(BaseModel):
    name: str
    default_version: int
    versions: list[int] = Field(description="Loaded versions, newest last.")


# -- TensorFlow Serving REST API (v1) ---------------------------------------------------------

RowInstance = list[FiniteFloat] | dict[str, list[FiniteFloat]]
ColumnarInputs = list[list[FiniteFloat]] | dict[str, list[list[FiniteFloat]]]


class TFPredictRequest(BaseModel):
    """TF Serving's predict body: row form ``instances`` or columnar form ``inputs``.

    Rows: ``{"instances": [[x, y], ...]}`` or ``{"instances": [{"points": [x, y]}, ...]}``.
    Columns: ``{"inputs": [[x, y], ...]}`` or ``{"inputs": {"points": [[x, y], ...]}}``.
    """

    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        json_schema_extra={"examples": [{"instances": [[1.0, -1.0], [2.0, 3.0]]}]},
    )

    signature_name: str = "serving_default"
    instances: list[RowInstance] | None = None
    inputs: ColumnarInputs | None = None


class TFVersionStatus(BaseModel):
    version: str
    state: str
    status: dict[str, str]


class TFModelStatusResponse(BaseModel):
    model_version_status: list[TFVersionStatus]


# -- Open Inference Protocol (KServe V2) ------------------------------------------------------

V2Data = list[FiniteFloat] | list[list[FiniteFloat]]


class V2RequestInput(BaseModel):
    model_config = _STRICT

    name: str
    shape: list[Annotated[int, Field(strict=True, ge=0)]]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: V2Data | None = None


class V2RequestOutput(BaseModel):
    model_config = _STRICT

    name: str
    parameters: dict[str, Any] | None = None


class V2InferenceRequest(BaseModel):
    """``{"inputs": [{"name": "points", "shape": [N, 2], "datatype": "FP32", "data": [...]}]}``."""

    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "inputs": [
                        {
                            "name": "points",
                            "shape": [2, 2],
                            "datatype": "FP32",
                            "data": [1.0, -1.0, 2.0, 3.0],
                        }
                    ]
                }
            ]
        },
    )

    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[V2RequestInput] = Field(min_length=1)
    outputs: list[V2RequestOutput] | None = None


class V2ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[float] | list[int] | None = None


class V2InferenceResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[V2ResponseOutput]


class V2TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class V2ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[V2TensorMetadata]
    outputs: list[V2TensorMetadata]


class V2ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


# Models whose JSON schema the app publishes in OpenAPI although the routes read raw bodies.
REQUEST_MODELS: tuple[type[BaseModel], ...] = (
    PredictRequest,
    TFPredictRequest,
    V2InferenceRequest,
)
