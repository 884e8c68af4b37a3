"""One data plane for both protocols, and its limits seen from gRPC.

uvicorn and the gRPC server run in this test's event loop (as ``xor-dnn serve`` runs them).
The model thread is held on its first batch by a gate (the real model runs after it), so
later requests can only queue; each test opens the gate once the queue holds what it needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import uvicorn
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from bench._process import free_port
from service.app import create_app
from service.batcher import Batcher
from service.config import Settings
from tests.support import hold_model_calls

pytestmark = pytest.mark.slow

WAIT_S = 120.0


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait for ``condition`` (checked every few ms), failing after a generous bound."""
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


@dataclass
class Gated:
    batches: list[int]
    """Points per model call, in order."""
    gate: threading.Event
    batcher: Batcher
    http: httpx.AsyncClient
    stub: Any

    def infer(self, n: int) -> asyncio.Future[Any]:
        request = pb.ModelInferRequest(model_name="xor")
        request.inputs.add(name="points", datatype="FP32", shape=[n, 2])
        request.raw_input_contents.append(np.full((n, 2), 0.5, np.float32).tobytes())
        return asyncio.ensure_future(self.stub.ModelInfer(request, timeout=WAIT_S))


@contextlib.asynccontextmanager
async def in_process_service(
    model_dir: Path, **settings: Any
) -> AsyncIterator[tuple[Any, uvicorn.Server, grpc.aio.Channel]]:
    """The app served by uvicorn and its gRPC server in this event loop: (app, server, a
    channel to the gRPC port)."""
    grpc_port = free_port()
    app = create_app(Settings(model_dir=model_dir, grpc_port=grpc_port, **settings))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_config=None, lifespan="on")
    )
    serving = asyncio.create_task(server.serve())
    try:
        await until(lambda: server.started or serving.done(), "uvicorn to start")
        assert not serving.done()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            yield app, server, channel
    finally:
        server.should_exit = True
        await serving


@contextlib.asynccontextmanager
async def gated_service(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch, **settings: Any
) -> AsyncIterator[Gated]:
    held = hold_model_calls(monkeypatch, lambda _, call: call == 1, WAIT_S)
    try:
        async with (
            in_process_service(model_dir, **settings) as (app, server, channel),
            httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{server.config.port}", timeout=WAIT_S
            ) as http,
        ):
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            yield Gated(held.batches, held.gate, app.state.dataplane.batcher, http, stub)
    finally:
        held.gate.set()  # before the server stops: a held model call would hold its drain


async def test_grpc_and_http_requests_share_a_batch(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with gated_service(model_dir, monkeypatch) as s:
        first = asyncio.ensure_future(s.http.post("/predict", json={"points": [{"x": 1, "y": 1}]}))
        await until(lambda: len(s.batches) == 1, "the first batch to hold the model")
        via_grpc = s.infer(1)
        via_http = asyncio.ensure_future(
            s.http.post("/predict", json={"points": [{"x": 2.0, "y": -1.5}]})
        )
        await until(lambda: s.batcher.queued_requests == 2, "both requests to queue")
        s.gate.set()
        first_answer, grpc_answer, http_answer = await asyncio.gather(first, via_grpc, via_http)
        assert s.batches[:2] == [1, 2], "the gRPC and the HTTP request ran in one model call"
    assert first_answer.status_code == http_answer.status_code == 200
    assert grpc_answer.model_version == "2"
    assert np.frombuffer(grpc_answer.raw_output_contents[0], "<f4").shape == (1,)


async def test_full_queue_and_inflight_cap_are_resource_exhausted(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with gated_service(
        model_dir, monkeypatch, max_queue_points=4, max_inflight_requests=3
    ) as s:
        held = s.infer(1)
        await until(lambda: len(s.batches) == 1, "the first batch to hold the model")
        queued = [s.infer(3)]
        await until(lambda: s.batcher.queued_points == 3, "3 points to queue")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await s.infer(2)  # 3 + 2 > max_queue_points
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "batch queue is full" in (err.value.details() or "")
        queued.append(s.infer(1))
        await until(lambda: s.batcher.queued_points == 4, "4 points to queue")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await s.infer(1)  # 3 inference calls in flight already
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_inflight_requests" in (err.value.details() or "")
        s.gate.set()
        answers = await asyncio.gather(held, *queued)
    assert [len(a.raw_output_contents[0]) // 4 for a in answers] == [1, 3, 1]


async def test_client_deadline_ends_the_call_in_the_queue(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call whose deadline passes while queued leaves the queue: its points never reach the
    model, and the client sees DEADLINE_EXCEEDED."""
    async with gated_service(model_dir, monkeypatch) as s:
        held = s.infer(1)
        await until(lambda: len(s.batches) == 1, "the first batch to hold the model")
        request = pb.ModelInferRequest(model_name="xor")
        request.inputs.add(name="points", datatype="FP32", shape=[3, 2])
        request.raw_input_contents.append(np.zeros((3, 2), np.float32).tobytes())
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await s.stub.ModelInfer(request, timeout=0.5)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        await until(lambda: s.batcher.queued_requests == 0, "the expired call to leave the queue")
        s.gate.set()
        await held
        await s.infer(2)
    assert s.batches == [1, 2], "the expired call's 3 points never reached the model"


async def test_concurrent_grpc_calls_share_model_calls(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """grpc.aio hands the server one call per loop turn, so calls answered at once would never
    merge; with ``grpc_max_batch_wait_ms`` the batcher's probe sees concurrent callers and
    their calls then share model calls, each still getting its own answer."""
    from service import batcher as batcher_mod
    from service.registry import ModelRegistry

    monkeypatch.setattr(batcher_mod, "PROBE_EVERY", 16)
    sizes: list[int] = []
    predict = ModelRegistry.predict

    def counted(self: ModelRegistry, version: Any, points: np.ndarray) -> np.ndarray:
        sizes.append(len(points))
        return predict(self, version, points)

    monkeypatch.setattr(ModelRegistry, "predict", counted)
    # A batch of 8 points is full and runs at once; only a last, partial one waits 1 s.
    async with in_process_service(model_dir, grpc_max_batch_wait_ms=1000, max_batch_size=8) as (
        app,
        _,
        channel,
    ):
        registry = app.state.dataplane.models.default.registry
        assert registry.runs_inline(registry.get(None).version, 8), "calls run on the loop"
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)

        async def infer(point: np.ndarray) -> float:
            request = pb.ModelInferRequest(model_name="xor")
            request.inputs.add(name="points", datatype="FP32", shape=[1, 2])
            request.raw_input_contents.append(point.astype(np.float32).tobytes())
            answer = await stub.ModelInfer(request, timeout=WAIT_S)
            return float(np.frombuffer(answer.raw_output_contents[0], "<f4")[0])

        points = np.array([[1.5, 2.0], [-2.0, 1.0], [-3.0, -1.5], [2.5, -3.5]], np.float32)
        alone = [await infer(p) for p in points]
        before = len(sizes)

        async def caller(i: int) -> list[tuple[int, float]]:
            return [(k % 4, await infer(points[k % 4])) for k in range(i, i + 40)]

        answers = await asyncio.gather(*(caller(i) for i in range(8)))
    for k, probability in (pair for per_caller in answers for pair in per_caller):
        assert probability == pytest.approx(alone[k], rel=1e-5, abs=1e-6)
    merged = sizes[before:]
    assert sum(merged) == 8 * 40
    assert max(merged) == 8 and len(merged) < 8 * 40 / 3, merged
