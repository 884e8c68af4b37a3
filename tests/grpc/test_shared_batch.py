"""One data plane for both protocols: a gRPC call and an HTTP request land in one model batch.

uvicorn and the gRPC server run in this test's event loop (as ``xor-dnn serve`` runs them).
The model thread is held on its first batch by a gate (the real model runs after it), so the
next two requests, one per protocol, can only queue; the test opens the gate once both are
queued, and the next model call must carry both.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import uvicorn
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from service.app import create_app
from service.config import Settings
from service.process import free_port
from service.registry import ModelRegistry

pytestmark = pytest.mark.slow

WAIT_S = 120.0


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait for ``condition`` (checked every few ms), failing after a generous bound."""
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


async def test_grpc_and_http_requests_share_a_batch(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches: list[int] = []
    gate = threading.Event()
    predict = ModelRegistry.predict

    def gated(self: ModelRegistry, version: Any, points: np.ndarray) -> np.ndarray:
        batches.append(len(points))
        if len(batches) == 1:
            gate.wait(WAIT_S)
        return predict(self, version, points)

    monkeypatch.setattr(ModelRegistry, "predict", gated)
    grpc_port = free_port()
    app = create_app(Settings(model_dir=model_dir, grpc_port=grpc_port, max_batch_size=64))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_config=None, lifespan="on")
    )
    serving = asyncio.create_task(server.serve())
    try:
        await until(lambda: server.started or serving.done(), "uvicorn to start")
        assert not serving.done()
        base = f"http://127.0.0.1:{server.config.port}"
        batcher = app.state.dataplane.batcher
        async with (
            httpx.AsyncClient(base_url=base, timeout=WAIT_S) as http,
            grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel,
        ):
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)

            def post(x: float, y: float) -> Awaitable[httpx.Response]:
                return http.post("/predict", json={"points": [{"x": x, "y": y}]})

            first = asyncio.create_task(post(1.0, 1.0))
            await until(lambda: len(batches) == 1, "the first batch to hold the model")
            request = pb.ModelInferRequest(model_name="xor")
            request.inputs.add(name="points", datatype="FP32", shape=[1, 2])
            request.raw_input_contents.append(np.array([[-2.0, 1.5]], np.float32).tobytes())
            via_grpc = asyncio.ensure_future(stub.ModelInfer(request, timeout=WAIT_S))
            via_http = asyncio.create_task(post(2.0, -1.5))
            await until(lambda: batcher.queued_requests == 2, "both requests to queue")
            gate.set()
            answers = await asyncio.gather(first, via_grpc, via_http)
    finally:
        gate.set()
        server.should_exit = True
        await serving

    assert batches[:2] == [1, 2], "the gRPC and the HTTP request ran in one model call"
    first_answer, grpc_answer, http_answer = answers
    assert first_answer.status_code == http_answer.status_code == 200
    prob = np.frombuffer(grpc_answer.raw_output_contents[0], "<f4")
    assert prob.shape == (1,) and grpc_answer.model_version == "2"
    assert http_answer.json()["predictions"][0]["probability"] >= 0.0
