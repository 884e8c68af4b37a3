"""TensorFlow Serving's gRPC API through the ``tensorflow-serving-api`` stubs, unchanged."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from tests.grpc.conftest import QUADRANTS
from xor_dnn.modelstore import load_version

pytestmark = pytest.mark.slow


def _request(version: int | None = None, signature: str = "") -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "xor"
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    return request


def test_predict(channel: grpc.Channel, model_dir: Path) -> None:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    want = load_version(model_dir, 2).predict(QUADRANTS)

    request = _request()
    request.inputs["points"].CopyFrom(tf.make_tensor_proto(QUADRANTS))  # tensor_content
    response = stub.Predict(request, timeout=30)
    assert list(response.outputs) == ["probability"]
    out = tf.make_ndarray(response.outputs["probability"])
    assert out.shape == (4, 1)
    np.testing.assert_allclose(out[:, 0], want, rtol=1e-5)
    assert response.model_spec.version.value == 2
    assert response.model_spec.signature_name == "serving_default"

    # float64 in double_val, version 1 pinned, the signature named, output filtered.
    request = _request(version=1, signature="serving_default")
    tensor = request.inputs["points"]
    tensor.dtype = tf.float64.as_datatype_enum
    tensor.tensor_shape.dim.add(size=4)
    tensor.tensor_shape.dim.add(size=2)
    tensor.double_val.extend(QUADRANTS.ravel().tolist())
    request.output_filter.append("probability")
    response = stub.Predict(request, timeout=30)
    np.testing.assert_allclose(
        response.outputs["probability"].float_val, load_version(model_dir, 1).predict(QUADRANTS),
        rtol=1e-5,
    )  # fmt: skip
    assert response.model_spec.version.value == 1


def test_metadata_and_status(channel: grpc.Channel) -> None:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "xor"
    request.metadata_field.append("signature_def")
    response = stub.GetModelMetadata(request, timeout=30)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    signature = signatures.signature_def["serving_default"]
    assert signature.inputs["points"].dtype == tf.float32.as_datatype_enum
    assert [d.size for d in signature.inputs["points"].tensor_shape.dim] == [-1, 2]
    assert [d.size for d in signature.outputs["probability"].tensor_shape.dim] == [-1, 1]
    assert response.model_spec.version.value == 2

    models = model_service_pb2_grpc.ModelServiceStub(channel)
    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = "xor"
    answer = models.GetModelStatus(status, timeout=30)
    available = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert [(s.version, s.state) for s in answer.model_version_status] == [
        (2, available),
        (1, available),
    ]
    status.model_spec.version.value = 1
    answer = models.GetModelStatus(status, timeout=30)
    assert [s.version for s in answer.model_version_status] == [1]
