"""The Open Inference Protocol V2 over gRPC, through ``tritonclient.grpc`` (sync and asyncio)
and the raw generated stub (typed ``contents``), against a real server process."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
import tritonclient.grpc.aio as triton_aio
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from tests.grpc.conftest import QUADRANTS, GrpcProcess
from xor_dnn.modelstore import load_version

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def expected(model_dir: Path) -> dict[int, np.ndarray]:
    return {v: load_version(model_dir, v).predict(QUADRANTS) for v in (1, 2)}


def test_tritonclient_sync(served: GrpcProcess, expected: dict[int, np.ndarray]) -> None:
    client = triton.InferenceServerClient(served.target)
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("xor") and client.is_model_ready("xor", "1")
        server = client.get_server_metadata()
        assert server.name == "xor-dnn"
        meta = client.get_model_metadata("xor")
        assert list(meta.versions) == ["1", "2"]
        assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
            ("points", "FP32", [-1, 2])
        ]
        assert [t.name for t in meta.outputs] == ["probability", "class_id"]
        assert list(client.get_model_metadata("xor", "1").versions) == ["1"]

        inp = triton.InferInput("points", [4, 2], "FP32")
        inp.set_data_from_numpy(QUADRANTS)
        result = client.infer("xor", [inp], request_id="req-7")
        np.testing.assert_allclose(result.as_numpy("probability")[:, 0], expected[2], rtol=1e-5)
        assert result.as_numpy("class_id")[:, 0].tolist() == [0, 1, 0, 1]
        response = result.get_response()
        assert (response.id, response.model_version) == ("req-7", "2")

        # FP64, version pinned, one output selected.
        inp = triton.InferInput("points", [4, 2], "FP64")
        inp.set_data_from_numpy(QUADRANTS.astype(np.float64))
        only = [triton.InferRequestedOutput("class_id")]
        result = client.infer("xor", [inp], model_version="1", outputs=only)
        assert result.get_response().model_version == "1"
        assert [o.name for o in result.get_response().outputs] == ["class_id"]
        assert result.as_numpy("probability") is None
        assert result.as_numpy("class_id")[:, 0].tolist() == (expected[1] >= 0.5).tolist()

        with pytest.raises(triton.InferenceServerException) as err:
            bad = triton.InferInput("points", [2, 3], "FP32")
            bad.set_data_from_numpy(np.zeros((2, 3), np.float32))
            client.infer("xor", [bad])
        assert err.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert "inputs[0].shape" in err.value.message()
    finally:
        client.close()


async def test_tritonclient_asyncio(served: GrpcProcess, expected: dict[int, np.ndarray]) -> None:
    client = triton_aio.InferenceServerClient(served.target)
    try:
        assert await client.is_server_live() and await client.is_model_ready("xor")
        inp = triton_aio.InferInput("points", [4, 2], "FP32")
        inp.set_data_from_numpy(QUADRANTS)
        result = await client.infer("xor", [inp])
        np.testing.assert_allclose(result.as_numpy("probability")[:, 0], expected[2], rtol=1e-5)
    finally:
        await client.close()


@pytest.mark.parametrize("datatype", ["FP32", "FP64"])
def test_typed_contents_answer_typed_outputs(
    channel: grpc.Channel, expected: dict[int, np.ndarray], datatype: str
) -> None:
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    request = pb.ModelInferRequest(model_name="xor", model_version="2", id="typed")
    tensor = request.inputs.add(name="points", datatype=datatype, shape=[4, 2])
    values = QUADRANTS.ravel().tolist()
    if datatype == "FP32":
        tensor.contents.fp32_contents.extend(values)
    else:
        tensor.contents.fp64_contents.extend(values)
    response = stub.ModelInfer(request, timeout=30)
    assert response.id == "typed" and not response.raw_output_contents
    prob, cls = response.outputs
    assert (prob.name, prob.datatype, list(prob.shape)) == ("probability", "FP32", [4, 1])
    np.testing.assert_allclose(prob.contents.fp32_contents, expected[2], rtol=1e-5)
    assert (cls.name, cls.datatype, list(cls.contents.int64_contents)) == (
        "class_id",
        "INT64",
        [0, 1, 0, 1],
    )
