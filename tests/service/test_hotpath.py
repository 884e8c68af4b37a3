"""The request path's speed measures keep behaviour: the body watchdog, data routes answered
by their lean handlers exactly as FastAPI would answer them, drift counted per batch, the GC
freeze around model loads."""

from __future__ import annotations

import asyncio
import gc
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi import Depends
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from starlette.types import Message, Receive, Scope, Send

from service.app import create_app
from service.config import Settings
from service.middleware import ServiceMiddleware
from service.registry import ModelRegistry
from service.repository import refresh_registry
from tests.service.conftest import copy_models

SCOPE: Scope = {"type": "http", "method": "POST", "path": "/echo", "headers": []}


async def read_body(scope: Scope, receive: Receive, send: Send) -> None:
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def test_stalled_body_times_out_within_a_tick() -> None:
    middleware = ServiceMiddleware(read_body, max_body_bytes=1024, body_timeout_s=0.3)
    never = asyncio.Event()

    async def stalled() -> Message:
        await never.wait()
        raise AssertionError("unreachable")

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    started = time.monotonic()
    await middleware(SCOPE, stalled, send)
    # The upper bound only says the timeout fired (the body never comes), with room for a
    # busy machine.
    assert 0.3 <= time.monotonic() - started < 0.3 + middleware.watchdog.tick + 10.0
    assert sent[0]["status"] == 408
    assert b"0 bytes received, the rest not within 0.3 s (body_timeout_s)" in sent[1]["body"]


async def test_trickled_body_counts_from_the_head_and_fast_bodies_pass() -> None:
    middleware = ServiceMiddleware(read_body, max_body_bytes=1024, body_timeout_s=0.3)
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def trickle() -> Message:  # every read is quick, the whole is too slow
        await asyncio.sleep(0.05)
        return {"type": "http.request", "body": b"x", "more_body": True}

    await middleware(SCOPE, trickle, send)
    assert sent.pop(0)["status"] == 408 and b"bytes received" in sent.pop(0)["body"]

    async def at_once() -> Message:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    for _ in range(100):  # many requests share the watchdog's single timer
        await middleware(SCOPE, at_once, send)
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [200] * 100
    await asyncio.sleep(middleware.watchdog.tick * 2)  # a leftover entry would fire here
    await middleware(SCOPE, at_once, send)


async def test_other_cancellation_is_not_a_timeout() -> None:
    middleware = ServiceMiddleware(read_body, max_body_bytes=1024, body_timeout_s=5.0)
    never = asyncio.Event()

    async def stalled() -> Message:
        await never.wait()
        raise AssertionError("unreachable")

    async def send(_: Message) -> None:
        pass

    task = asyncio.create_task(middleware(SCOPE, stalled, send))
    await asyncio.sleep(0.05)
    task.cancel()  # the client left, or the server shuts down: not a 408
    with pytest.raises(asyncio.CancelledError):
        await task


def test_predict_version_query(client: TestClient) -> None:
    body = {"points": [{"x": 1, "y": -1}]}
    assert client.post("/predict?version=1", json=body).json()["model_version"] == 1
    assert client.post("/predict?other=1", json=body).json()["model_version"] == 2
    r = client.post("/predict?version=abc", json=body)
    assert r.status_code == 422 and r.json()["error"]["field"] == "version"
    assert "abc" in r.json()["error"]["message"]
    # A bad version is reported before the body is even read, as a Query parameter would be.
    r = client.post("/predict?version=0", content=b"not json", headers={"content-type": "x/y"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "version"
    (param,) = client.get("/openapi.json").json()["paths"]["/predict"]["post"]["parameters"]
    assert param["name"] == "version" and param["schema"]["minimum"] == 1


def test_predict_response_is_the_documented_shape(client: TestClient) -> None:
    r = client.post("/predict", json={"points": [{"x": 1, "y": -1}, {"x": 2, "y": 2}]})
    assert r.headers["content-type"] == "application/json"
    payload = r.json()
    assert payload["model_name"] == "xor" and payload["model_version"] == 2
    assert [p["class_id"] for p in payload["predictions"]] == [1, 0]
    for p in payload["predictions"]:
        assert set(p) == {"probability", "class_id"} and 0.0 <= p["probability"] <= 1.0


DATA_CASES: list[tuple[str, dict[str, str], bytes]] = [
    ("/predict", {"content-type": "application/json"}, b'{"points": [{"x": 1, "y": -1}]}'),
    ("/predict?version=1", {"content-type": "application/json"}, b'{"points":[{"x":2,"y":2}]}'),
    ("/predict?version=9", {"content-type": "application/json"}, b'{"points":[{"x":2,"y":2}]}'),
    ("/predict?version=x", {"content-type": "application/json"}, b"{}"),
    ("/predict", {"content-type": "text/plain"}, b'{"points": [{"x": 1, "y": -1}]}'),
    ("/predict", {"content-type": "application/json", "content-encoding": "gzip"}, b"{}"),
    ("/predict", {"content-type": "application/json"}, b""),
    ("/predict", {"content-type": "application/json"}, b'{"points": [{"x": "1", "y": 0}]}'),
    ("/predict", {"content-type": "application/json"}, b'{"points": []}'),
    ("/predict", {"content-type": "application/json"}, b'{"points": [{"x": 1, "x": 2, "y": 0}]}'),
    ("/predict", {"content-type": "application/json"}, b'{"points": [{"x": 1e39, "y": 0}]}'),
    ("/predict", {"content-type": "application/json; charset=utf-8"}, b"[" * 5000),
    ("/v1/models/xor:predict", {}, b'{"instances": [[1, -1], [2, 2]]}'),
    ("/v1/models/xor/versions/1:predict", {}, b'{"inputs": {"points": [[1, -1]]}}'),
    ("/v1/models/xor/versions/0:predict", {}, b'{"inputs": [[1, -1]]}'),
    ("/v1/models/other:predict", {}, b'{"instances": [[1, -1]]}'),
    ("/v1/models/xor:predict", {}, b'{"instances": [[1, -1]], "inputs": [[1, 2]]}'),
    (
        "/v2/models/xor/infer",
        {},
        b'{"id": "a", "inputs": [{"name": "points", "shape": [1, 2], "datatype": "FP32", '
        b'"data": [1, -1]}]}',
    ),
    (
        "/v2/models/xor/versions/1/infer",
        {},
        b'{"inputs": [{"name": "points", "shape": [1, 2], "datatype": "FP64", "data": [1, -1]}],'
        b' "parameters": {"binary_data_output": true}}',
    ),
    ("/v2/models/xor/infer", {}, b'{"inputs": [{"name": "nope", "shape": [1, 2]}]}'),
    ("/v2/models/xor/infer", {"content-type": "image/png"}, b"{}"),
]


async def _noop() -> None:
    pass


@pytest.fixture(scope="module")
def routed_client(model_dir: Path) -> Iterator[TestClient]:
    """The same service with a FastAPI dependency on every route: FastAPI answers them all."""
    app = create_app(Settings(model_dir=model_dir), dependencies=[Depends(_noop)])
    with TestClient(app) as c:
        assert c.app.state.fast_paths == []  # type: ignore[attr-defined]
        yield c


@pytest.mark.parametrize(("url", "headers", "body"), DATA_CASES)
def test_lean_handlers_answer_as_fastapi_does(
    client: TestClient, routed_client: TestClient, url: str, headers: dict[str, str], body: bytes
) -> None:
    """A data route answered by the dispatcher and the same route answered through FastAPI
    give the same status, headers that matter and body, good input or bad."""
    fast = client.post(url, content=body, headers=headers)
    routed = routed_client.post(url, content=body, headers=headers)
    assert fast.status_code == routed.status_code
    assert fast.content == routed.content
    for name in ("content-type", "retry-after", "inference-header-content-length"):
        assert fast.headers.get(name) == routed.headers.get(name)
    assert (
        len(fast.headers["x-request-id"]) == 32
        and fast.headers["x-request-id"] != (routed.headers["x-request-id"])
    )


def test_lean_predict_is_counted_under_its_route(client: TestClient) -> None:
    labels = {"route": "/predict", "method": "POST", "status": "200"}
    before = REGISTRY.get_sample_value("xor_dnn_http_requests_total", labels) or 0.0
    for _ in range(3):
        client.post("/predict", json={"points": [{"x": 1, "y": 1}]})
    after = REGISTRY.get_sample_value("xor_dnn_http_requests_total", labels)
    assert after == before + 3


def drift(version: int, feature: str) -> float:
    labels = {"model": "xor", "version": str(version), "feature": feature}
    return REGISTRY.get_sample_value("xor_dnn_input_out_of_range_points_total", labels) or 0.0


def test_drift_is_counted_once_per_batch_with_every_point(model_dir: Path) -> None:
    registry = ModelRegistry(model_dir, keep_versions=1)
    registry.refresh()
    before_x, before_y = drift(2, "x"), drift(2, "y")
    points = np.array([[1e6, 0.1], [0.1, 0.2], [-1e6, -1e6]], np.float32)
    registry.predict(2, points)
    assert drift(2, "x") - before_x == 2 and drift(2, "y") - before_y == 1
    registry.close()


def test_model_loads_freeze_the_heap_and_dropped_versions_are_collected(
    model_dir: Path, tmp_path: Path
) -> None:
    root = copy_models(model_dir, tmp_path / "xor")
    registry = ModelRegistry(root, keep_versions=1, retire_grace_s=0.3)
    gc.unfreeze()
    try:
        assert refresh_registry(registry).loaded == [2]
        assert gc.get_freeze_count() > 0  # the loaded model is out of the collector's sight
        shutil.copytree(root / "2", root / ".tmp-3")
        (root / ".tmp-3").rename(root / "3")
        result = refresh_registry(registry)
        assert result.loaded == [3] and result.unloaded == [2] and result.dropped == []
        time.sleep(0.4)
        result = refresh_registry(registry)  # its grace period is over: let go
        assert result.dropped == [2] and gc.get_freeze_count() > 0
    finally:
        registry.close()
        gc.unfreeze()


def test_app_unfreezes_at_shutdown(model_dir: Path) -> None:
    with TestClient(create_app(Settings(model_dir=model_dir))) as c:
        assert c.get("/readyz").status_code == 200
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0
