"""gRPC services address the models of a repository by name; an unknown one is NOT_FOUND."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
import tritonclient.grpc as triton
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from tritonclient.utils import InferenceServerException

from bench._process import free_port, start_server
from tests.grpc.conftest import QUADRANTS
from tests.service.conftest import copy_models

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def target(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("grpc-repository")
    copy_models(model_dir, root / "xor")
    copy_models(model_dir, root / "lesson")
    port = free_port()
    server = start_server(
        root, root / "server.log", "--grpc-port", str(port), source_flag="--model-repository"
    )
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.kill()


def test_v2_infers_and_describes_each_model_by_name(target: str) -> None:
    client = triton.InferenceServerClient(target)
    inp = triton.InferInput("points", [4, 2], "FP32")
    inp.set_data_from_numpy(QUADRANTS)
    result = client.infer("lesson", [inp], model_version="1")
    assert result.get_response().model_name == "lesson"
    assert result.as_numpy("probability").shape == (4, 1)
    assert client.get_model_metadata("lesson").name == "lesson"
    assert client.is_model_ready("lesson") and client.is_model_ready("xor")
    with pytest.raises(InferenceServerException) as missing:
        client.infer("nope", [inp])
    assert missing.value.status() == "StatusCode.NOT_FOUND"
    assert "'nope' is not served here (served: 'lesson', 'xor')" in missing.value.message()


def test_tfserving_predicts_and_reports_status_by_name(target: str) -> None:
    with grpc.insecure_channel(target) as channel:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "lesson"
        request.inputs["points"].CopyFrom(tf.make_tensor_proto(QUADRANTS))
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
            request, timeout=30
        )
        assert response.model_spec.name == "lesson"
        assert np.asarray(tf.make_ndarray(response.outputs["probability"])).shape == (4, 1)
        status = get_model_status_pb2.GetModelStatusRequest()
        status.model_spec.name = "lesson"
        answer = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(status, timeout=30)
        assert [v.version for v in answer.model_version_status] == [2, 1]
        request.model_spec.name = "nope"
        with pytest.raises(grpc.RpcError) as missing:
            prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
