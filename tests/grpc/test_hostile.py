"""Hostile and broken gRPC input: every case gets the right status code and a message naming
the field and limit, never UNKNOWN or INTERNAL, and the server stays healthy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from tests.grpc.conftest import MAX_MESSAGE_BYTES, GrpcProcess

pytestmark = pytest.mark.slow

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND


def v2(
    points: Any = ((1.0, -1.0),),
    *,
    name: str = "points",
    datatype: str = "FP32",
    shape: list[int] | None = None,
    raw: bytes | None = None,
    model: str = "xor",
    version: str = "",
    outputs: tuple[str, ...] = (),
) -> pb.ModelInferRequest:
    array = np.asarray(points, np.float32 if datatype != "FP64" else np.float64)
    request = pb.ModelInferRequest(model_name=model, model_version=version)
    tensor = request.inputs.add(
        name=name, datatype=datatype, shape=shape if shape is not None else list(array.shape)
    )
    request.raw_input_contents.append(raw if raw is not None else array.tobytes())
    for out in outputs:
        request.outputs.add(name=out)
    del tensor
    return request


def typed(values: list[float], shape: list[int]) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="xor")
    tensor = request.inputs.add(name="points", datatype="FP32", shape=shape)
    tensor.contents.fp32_contents.extend(values)
    return request


def two_inputs() -> pb.ModelInferRequest:
    request = v2()
    request.inputs.add(name="extra", datatype="FP32", shape=[1, 2])
    return request


V2_CASES: list[tuple[str, Callable[[], pb.ModelInferRequest], grpc.StatusCode, str]] = [
    ("empty request", pb.ModelInferRequest, INVALID, "model_name: required"),
    ("unknown model", lambda: v2(model="nope"), NOT_FOUND, "model 'nope'"),
    ("unknown version", lambda: v2(version="7"), NOT_FOUND, "version 7"),
    ("version not a number", lambda: v2(version="latest"), NOT_FOUND, "positive integers"),
    ("wrong input name", lambda: v2(name="x"), INVALID, "inputs[0].name"),
    ("wrong dtype", lambda: v2(datatype="INT32"), INVALID, "inputs[0].datatype"),
    ("shape [2, 3]", lambda: v2(np.zeros((2, 3))), INVALID, "inputs[0].shape: must be [N, 2]"),
    ("rank 1", lambda: v2(np.zeros(2)), INVALID, "inputs[0].shape"),
    ("raw bytes short", lambda: v2(shape=[2, 2]), INVALID, "needs 16 bytes, got 8"),
    ("raw bytes odd", lambda: v2(raw=b"\x00" * 7), INVALID, "raw_input_contents[0]"),
    ("NaN", lambda: v2([[np.nan, 1.0]]), INVALID, "finite"),
    ("inf", lambda: v2([[1.0, np.inf]]), INVALID, "finite"),
    ("FP64 beyond float32", lambda: v2([[1e300, 1.0]], datatype="FP64"), INVALID, "float32"),
    ("too many points", lambda: v2(np.zeros((1025, 2))), INVALID, "limit of 1024"),
    ("zero points", lambda: v2(np.zeros((0, 2))), INVALID, "at least 1 point"),
    ("negative count", lambda: v2(shape=[-1, 2]), INVALID, "at least 1 point"),
    ("huge shape", lambda: v2(shape=[2**62, 2]), INVALID, "limit of 1024"),
    ("two inputs", two_inputs, INVALID, "exactly 1 input"),
    ("unknown output", lambda: v2(outputs=("logits",)), INVALID, "outputs[0].name"),
    ("typed count", lambda: typed([1.0, 2.0, 3.0], [2, 2]), INVALID, "needs 4 values, got 3"),
]


def tfs(
    *, name: str = "xor", signature: str = "", key: str = "points", dims: tuple[int, ...] = (1, 2)
) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    tensor = request.inputs[key]
    tensor.dtype = 1  # DT_FLOAT
    for d in dims:
        tensor.tensor_shape.dim.add(size=d)
    tensor.float_val.extend([0.5] * max(0, int(np.prod(dims))))
    return request


def tfs_with(change: Callable[[predict_pb2.PredictRequest], None]) -> predict_pb2.PredictRequest:
    request = tfs()
    change(request)
    return request


TFS_CASES: list[tuple[str, Callable[[], predict_pb2.PredictRequest], grpc.StatusCode, str]] = [
    ("empty request", predict_pb2.PredictRequest, INVALID, "model_spec.name: required"),
    ("unknown model", lambda: tfs(name="nope"), NOT_FOUND, "model 'nope'"),
    ("unknown signature", lambda: tfs(signature="classify"), INVALID, "signature_name"),
    ("wrong input", lambda: tfs(key="x"), INVALID, "exactly 1 input"),
    ("shape [1, 3]", lambda: tfs(dims=(1, 3)), INVALID, "tensor_shape: must be [N, 2]"),
    (
        "version label",
        lambda: tfs_with(lambda r: setattr(r.model_spec, "version_label", "stable")),
        NOT_FOUND,
        "version_label",
    ),
    (
        "unknown version",
        lambda: tfs_with(lambda r: setattr(r.model_spec.version, "value", 9)),
        NOT_FOUND,
        "version 9",
    ),
    (
        "string tensor",
        lambda: tfs_with(lambda r: setattr(r.inputs["points"], "dtype", 7)),
        INVALID,
        "DT_STRING not supported",
    ),
    (
        "NaN",
        lambda: tfs_with(lambda r: r.inputs["points"].float_val.__setitem__(0, float("nan"))),
        INVALID,
        "finite",
    ),
    (
        "content size",
        lambda: tfs_with(lambda r: setattr(r.inputs["points"], "tensor_content", b"\0" * 5)),
        INVALID,
        "tensor_content",
    ),
    (
        "output filter",
        lambda: tfs_with(lambda r: r.output_filter.append("logits")),
        INVALID,
        "output_filter[0]",
    ),
]


# protocol -> (the stub method, a good request): after each refusal the server still answers.
PROTOCOLS: dict[str, tuple[Callable[[grpc.Channel], Any], Callable[[], Any]]] = {
    "v2": (lambda ch: service_pb2_grpc.GRPCInferenceServiceStub(ch).ModelInfer, v2),
    "tfserving": (lambda ch: prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict, tfs),
}
CASES = [("v2", *case) for case in V2_CASES] + [("tfserving", *case) for case in TFS_CASES]


@pytest.mark.parametrize(
    ("protocol", "request_factory", "code", "text"),
    [(protocol, *case[1:]) for protocol, *case in CASES],
    ids=[f"{protocol}-{case[0]}" for protocol, *case in CASES],
)
def test_refusals(
    channel: grpc.Channel,
    protocol: str,
    request_factory: Callable[[], Any],
    code: grpc.StatusCode,
    text: str,
) -> None:
    stub_method, good = PROTOCOLS[protocol]
    call = stub_method(channel)
    with pytest.raises(grpc.RpcError) as err:
        call(request_factory(), timeout=30)
    assert err.value.code() == code, err.value.details()
    assert text in err.value.details()
    assert call(good(), timeout=30).ByteSize() > 0  # still serving


def test_oversize_message_and_garbage(channel: grpc.Channel, served: GrpcProcess) -> None:
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    big = v2(raw=b"\0" * (MAX_MESSAGE_BYTES + 1), shape=[1, 2])
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(big, timeout=30)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.value.details()

    # Bytes that are no protobuf message at all.
    raw = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
    with pytest.raises(grpc.RpcError) as err:
        raw(b"\xff\xff\xff\xff", timeout=30)
    assert err.value.code() == INVALID, err.value.details()

    health = health_pb2_grpc.HealthStub(channel)
    answer = health.Check(health_pb2.HealthCheckRequest(), timeout=30)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    assert served.process.proc.poll() is None


def test_client_deadline_is_honoured(channel: grpc.Channel) -> None:
    # A deadline already past when the call starts: the client's own code, never a hang. (A
    # merely tiny one, 1 µs, races the answer: a quiet machine's loopback answer can win.)
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(v2(), timeout=-1.0)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
