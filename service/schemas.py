"""Pydantic v2 request and response models for every protocol the service speaks.

Requests are strict: numbers must be JSON numbers (no ``"1.5"``, no ``true``), finite, and
unknown fields are refused, so a typo fails loudly instead of being ignored. Point-count
limits are configurable and checked by the data plane, not baked into these classes.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

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


class HistoryGrid(BaseModel):
    size: int = Field(description="Samples per side of the square grid (48).")
    x: list[float] = Field(description="[min, max] of x: the training points' range.")
    y: list[float] = Field(description="[min, max] of y: the training points' range.")
    encoding: str = Field(description="'uint8': byte q stands for P(class 1) = q / 255.")
    order: str = Field(description="Row-major; row 0 at y max, column 0 at x min.")


class HistoryFrame(BaseModel):
    epoch: int = Field(description="1-based epoch after which this frame was recorded.")
    train_loss: float | None = Field(description="Binary cross-entropy on the fit points.")
    train_accuracy: float | None
    test_loss: float | None = Field(description="Binary cross-entropy on the test split.")
    test_accuracy: float | None
    weight_norms: dict[str, float] = Field(description="L2 norm of each layer's weights.")
    grid: str = Field(description="Base64 of size*size bytes: P(class 1) on the grid.")


class TrainingHistory(BaseModel):
    """The history training recorded beside a version (``history.json``, training/history.py):
    all quantities with dropout off, for the published model (an ensemble's mean)."""

    format: int = Field(description="Layout version (1).")
    epochs_trained: int
    runs: list[int] = Field(description="The training runs (1-based) the model is made of.")
    grid: HistoryGrid
    final_equals_published: bool = Field(
        description="Whether the last frame's weights are the served ones (false with SWA)."
    )
    frames: list[HistoryFrame] = Field(description="About 20 log-spaced epochs, ascending.")


class ModelSummary(BaseModel):
    name: str
    ready: bool = Field(description="A version is loaded and answering.")
    default_version: int | None = Field(description="The version used when none is pinned.")
    versions: list[int] = Field(description="Loaded versions, newest last.")


class ModelsListing(BaseModel):
    """``GET /models``: every model served, and the one ``POST /predict`` uses."""

    default_model: str
    models: list[ModelSummary]


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


def _integral(value: Any) -> Any:
    # JSON Schema counts 2.0 as an integer, and so do generated clients: accept it as 2.
    return int(value) if isinstance(value, float) and value.is_integer() else value


class V2RequestInput(BaseModel):
    model_config = _STRICT

    name: str
    shape: list[Annotated[int, BeforeValidator(_integral), Field(strict=True, ge=0)]]
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


def exact_request_schemas(components: dict[str, Any], max_points: int) -> None:
    """Tighten the generated request schemas to exactly what the routes accept.

    Pydantic's schemas are looser than the routes, which check what a field type cannot say
    (one of ``instances``/``inputs``, the input's name, shape ``[N, 2]``, the point limit,
    a setting). A client generated from the schema, or a fuzzer, then sends bodies the
    schema allows and the route refuses. What JSON Schema can express is stated here; what it
    cannot (a V2 ``data`` length equal to ``shape[0] * 2``, ``binary_data_size`` matching the
    binary part) stays in the route's own check.
    """
    number = {"type": "number", "minimum": -FLOAT32_MAX, "maximum": FLOAT32_MAX}
    pair = {"type": "array", "items": number, "minItems": 2, "maxItems": 2}
    rows = {"type": "array", "items": pair, "minItems": 1, "maxItems": max_points}
    named_pair = _only_points(pair)

    components["PredictRequest"]["properties"]["points"]["maxItems"] = max_points

    tf = components["TFPredictRequest"]
    tf["properties"]["signature_name"]["enum"] = ["serving_default"]
    tf["properties"]["instances"] = {
        "description": 'Rows: all [x, y] or all {"points": [x, y]}.',
        "oneOf": [
            {**rows},
            {"type": "array", "items": named_pair, "minItems": 1, "maxItems": max_points},
        ],
    }
    tf["properties"]["inputs"] = {
        "description": 'Columns: [[x, y], ...] or {"points": [[x, y], ...]}.',
        "oneOf": [rows, _only_points(rows)],
    }
    tf["oneOf"] = [{"required": ["instances"]}, {"required": ["inputs"]}]

    v2 = components["V2InferenceRequest"]
    v2["properties"]["inputs"]["maxItems"] = 1
    v2["properties"]["outputs"] = {
        "anyOf": [{"type": "array", "items": {"$ref": "#/components/schemas/V2RequestOutput"}},
                  {"type": "null"}],
    }  # fmt: skip
    v2_input = components["V2RequestInput"]
    props = v2_input["properties"]
    props["name"] = {"const": "points", "type": "string"}
    props["datatype"] = {"enum": ["FP32", "FP64"], "type": "string"}
    props["shape"] = {
        "type": "array",
        "prefixItems": [
            {"type": "integer", "minimum": 1, "maximum": max_points},
            {"const": 2, "type": "integer"},
        ],
        "minItems": 2,
        "maxItems": 2,
    }
    props["data"] = {
        "description": "shape[0] * 2 numbers, flat or as [x, y] rows (row-major).",
        "oneOf": [
            {"type": "array", "items": number, "minItems": 2, "maxItems": 2 * max_points},
            rows,
        ],
    }
    # JSON bodies carry their data inline: binary_data_size belongs to binary requests.
    props["parameters"] = {"type": "object", "not": {"required": ["binary_data_size"]}}
    v2_input["required"] = ["name", "shape", "datatype", "data"]
    output = components["V2RequestOutput"]["properties"]
    output["name"] = {"enum": ["probability", "class_id"], "type": "string"}
    output["parameters"] = {
        "type": "object",
        "properties": {"binary_data": {"type": "boolean"}},
        "not": {"required": ["classification"]},
    }


def _only_points(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"points": schema},
        "required": ["points"],
        "additionalProperties": False,
    }
