"""The front door's extension points reach every route: whatever is added the documented way
(a hook, a FastAPI dependency, a middleware) runs on every data-plane path, lean or not, and
every answer carries the outer layer's headers (request id, CORS, hook headers)."""

from __future__ import annotations

import ast
import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import Depends, Request
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.app import create_app
from service.config import Settings
from service.errors import ServiceError
from service.middleware import Hooks, ServiceMiddleware
from tests.service.conftest import app_client, served

ROOT = Path(__file__).resolve().parents[2]
V1 = b'{"instances": [[1, -1]]}'
V2 = b'{"inputs": [{"name": "points", "shape": [1, 2], "datatype": "FP32", "data": [1, -1]}]}'
PREDICT = b'{"points": [{"x": 1, "y": -1}]}'
# Every data-plane path of every protocol, with a body it answers 200.
DATA_PATHS: list[tuple[str, bytes]] = [
    ("/predict", PREDICT),
    ("/predict?version=1", PREDICT),
    ("/models/xor/predict", PREDICT),
    ("/models/xor/predict?version=1", PREDICT),
    ("/v1/models/xor:predict", V1),
    ("/v1/models/xor/versions/1:predict", V1),
    ("/v2/models/xor/infer", V2),
    ("/v2/models/xor/versions/1/infer", V2),
]
JSON_TYPE = {"content-type": "application/json"}


class Unauthorized(ServiceError):
    status_code = 401
    code = "unauthorized"


def _post_routes(app: object) -> set[str]:
    routes = iter_route_contexts(getattr(app, "routes", []))
    return {r.path for r in routes if "POST" in (r.methods or ())}


def test_the_outer_layer_imports_no_route_module() -> None:
    for module in ("service/middleware.py", "service/dataroutes.py"):
        tree = ast.parse((ROOT / module).read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n.startswith("service.routes") for n in names), (module, names)


def test_every_data_path_is_covered_and_answered_lean(client: TestClient) -> None:
    # Each POST route is a data route, answered by the dispatcher; the cases above cover all.
    assert set(client.app.state.fast_paths) == _post_routes(client.app)  # type: ignore[attr-defined]
    templates = {
        "/predict",
        "/models/{model_name}/predict",
        "/v1/models/{model_name}:predict",
        "/v1/models/{model_name}/versions/{version}:predict",
        "/v2/models/{model_name}/infer",
        "/v2/models/{model_name}/versions/{version}/infer",
    }
    assert _post_routes(client.app) == templates


TRANSPORTS = pytest.mark.parametrize("transport", ["asgi", "http"])
"""In process (the ASGI path) and over a socket with the service's protocol (the data lane)."""


@TRANSPORTS
def test_request_and_header_hooks_run_on_every_path(model_dir: Path, transport: str) -> None:
    seen: list[str] = []

    async def record(scope: Scope) -> None:
        seen.append(scope["path"])

    def stamp(scope: Scope, headers: list[tuple[bytes, bytes]]) -> None:
        headers.append((b"x-hooked", b"1"))

    hooks = Hooks(on_request=[record], response_headers=[stamp])
    with app_client(create_app(Settings(model_dir=model_dir), hooks=hooks), transport) as c:
        for url, body in DATA_PATHS:
            r = c.post(url, content=body, headers=JSON_TYPE)
            assert r.status_code == 200 and r.headers["x-hooked"] == "1", (url, r.text)
        assert c.get("/healthz").headers["x-hooked"] == "1"
        r = c.post("/predict", content=b"x" * 2_000_000, headers=JSON_TYPE)  # the outer 413
        assert r.status_code == 413 and r.headers["x-hooked"] == "1"
    assert seen == [url.split("?")[0] for url, _ in DATA_PATHS] + ["/healthz"]


@TRANSPORTS
def test_a_refusing_hook_refuses_every_path(model_dir: Path, transport: str) -> None:
    async def deny(scope: Scope) -> None:
        raise Unauthorized("credentials required")

    app = create_app(Settings(model_dir=model_dir), hooks=Hooks(on_request=[deny]))
    with app_client(app, transport) as c:
        for url, body in DATA_PATHS:
            r = c.post(url, content=body, headers=JSON_TYPE)
            assert r.status_code == 401, (url, r.text)
            assert "credentials required" in r.text and len(r.headers["x-request-id"]) == 32


@TRANSPORTS
def test_fastapi_dependencies_run_on_every_path(model_dir: Path, transport: str) -> None:
    calls: list[str] = []

    async def dependency(request: Request) -> None:
        calls.append(request.url.path)

    app = create_app(Settings(model_dir=model_dir), dependencies=[Depends(dependency)])
    with app_client(app, transport) as c:
        for url, body in DATA_PATHS:
            assert c.post(url, content=body, headers=JSON_TYPE).status_code == 200, url
    assert calls == [url.split("?")[0] for url, _ in DATA_PATHS]


@TRANSPORTS
def test_added_middleware_wraps_every_path(model_dir: Path, transport: str) -> None:
    calls: list[str] = []

    class Recorder:
        def __init__(self, app: ASGIApp) -> None:
            self.app = app

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                calls.append(scope["path"])
            await self.app(scope, receive, send)

    app = create_app(Settings(model_dir=model_dir))
    app.add_middleware(Recorder)
    with app_client(app, transport) as c:
        for url, body in DATA_PATHS:
            assert c.post(url, content=body, headers=JSON_TYPE).status_code == 200, url
        assert app.state.fast_paths  # the data routes stay lean inside it
    assert calls == [url.split("?")[0] for url, _ in DATA_PATHS]


ALLOWED = "https://ok.example"


@TRANSPORTS
def test_cors_headers_on_the_outer_layers_own_413(model_dir: Path, transport: str) -> None:
    settings = Settings(model_dir=model_dir, max_body_bytes=100_000, cors_origins=[ALLOWED])
    with app_client(create_app(settings), transport) as c:
        for url, _ in DATA_PATHS:
            r = c.post(url, content=b"{" * 200_000, headers={**JSON_TYPE, "origin": ALLOWED})
            assert r.status_code == 413, url
            assert r.headers["access-control-allow-origin"] == ALLOWED
            assert "x-request-id" in r.headers["access-control-expose-headers"].lower()
        r = c.post("/predict", content=b"{" * 200_000, headers={"origin": "https://evil.example"})
        assert r.status_code == 413 and "access-control-allow-origin" not in r.headers


async def test_cors_headers_on_the_inflight_refusal() -> None:
    entered, release = asyncio.Event(), asyncio.Event()

    async def held(scope: Scope, receive: Receive, send: Send) -> None:
        entered.set()
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    door = ServiceMiddleware(
        held, max_body_bytes=1024, max_inflight_requests=1, cors_origins=[ALLOWED]
    )
    scope: Scope = {
        "type": "http",
        "method": "POST",
        "path": "/predict",
        "query_string": b"",
        "headers": [(b"origin", ALLOWED.encode())],
    }

    async def receive() -> Message:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    first: list[Message] = []
    second: list[Message] = []

    async def into(box: list[Message], message: Message) -> None:
        box.append(message)

    running = asyncio.create_task(door(dict(scope), receive, lambda m: into(first, m)))
    await entered.wait()
    await door(dict(scope), receive, lambda m: into(second, m))
    release.set()
    await running
    start = second[0]
    headers = dict(start["headers"])
    assert start["status"] == 503 and headers[b"retry-after"] == b"1"
    assert headers[b"access-control-allow-origin"] == ALLOWED.encode()
    assert json.loads(second[1]["body"])["error"]["code"] == "overloaded"
    assert first[0]["status"] == 200


@pytest.mark.parametrize("path", ["/v1/models/xor:predict", "/v1/models/xor/versions/1:predict"])
def test_options_on_a_predict_route_allows_post(client: TestClient, path: str) -> None:
    r = client.options(path)
    assert r.status_code == 405 and r.headers["allow"] == "POST"


def _count_lane_answers(app: Any) -> list[str]:
    """Record the paths the app's data lane answers (a wrapper of our own code)."""
    answered: list[str] = []
    lane = app.data_lane
    original = lane.answer

    async def answer(scope: Scope, *args: Any) -> Any:
        answered.append(scope["path"])
        return await original(scope, *args)

    lane.answer = answer
    return answered


def test_the_data_lane_answers_every_data_path_over_http(model_dir: Path) -> None:
    """What the http cases above run through: every data path's POST is answered in the
    lane, a body sent in pieces too (read under the front door's limits, which answer 408
    and 413 there as on the ASGI way); other requests take the ASGI way."""
    settings = Settings(model_dir=model_dir, max_body_bytes=100_000, body_timeout_s=1.0)
    app = create_app(settings)
    with served(app) as c:
        answered = _count_lane_answers(app)
        for url, body in DATA_PATHS:
            r = c.post(url, content=body, headers=JSON_TYPE)
            assert r.status_code == 200 and len(r.headers["x-request-id"]) == 32, url
        assert answered == [url.split("?")[0] for url, _ in DATA_PATHS]

        def pieces(*chunks: bytes, pause: float = 0.05) -> Iterator[bytes]:
            for chunk in chunks:
                yield chunk
                time.sleep(pause)

        r = c.post("/predict", content=pieces(PREDICT[:5], PREDICT[5:]), headers=JSON_TYPE)
        assert r.status_code == 200 and r.json()["predictions"][0]["class_id"] == 1
        r = c.post("/predict", content=pieces(b"{" * 60_000, b"{" * 60_000), headers=JSON_TYPE)
        assert r.status_code == 413 and "max_body_bytes" in r.text
        r = c.post("/predict", content=pieces(b"{", b"{", pause=2.5), headers=JSON_TYPE)
        assert r.status_code == 408 and "body_timeout_s" in r.text
        r = c.post("/predict", content=b"{" * 200_000, headers=JSON_TYPE)  # declared: at once
        assert r.status_code == 413 and "200000 bytes" in r.text
        assert len(answered) == len(DATA_PATHS) + 4
        assert c.get("/healthz").status_code == 200 and len(answered) == len(DATA_PATHS) + 4


def test_no_lane_when_anything_wraps_the_dispatcher_or_a_route_has_dependencies(
    model_dir: Path,
) -> None:
    wrapped = create_app(Settings(model_dir=model_dir))
    wrapped.add_middleware(_PassThrough)
    with served(wrapped) as c:
        assert c.post("/predict", content=PREDICT, headers=JSON_TYPE).status_code == 200
        assert wrapped.data_lane is None  # type: ignore[attr-defined]

    async def dependency() -> None:
        pass

    app = create_app(Settings(model_dir=model_dir), dependencies=[Depends(dependency)])
    with served(app) as c:
        answered = _count_lane_answers(app)
        for url, body in DATA_PATHS:
            assert c.post(url, content=body, headers=JSON_TYPE).status_code == 200, url
    assert answered == []


def test_the_lane_under_a_root_path_takes_either_form(model_dir: Path) -> None:
    app = create_app(Settings(model_dir=model_dir, root_path="/xor"))
    with served(app) as c:
        answered = _count_lane_answers(app)
        for url in ("/xor/predict", "/predict"):
            r = c.post(url, content=PREDICT, headers=JSON_TYPE)
            assert r.status_code == 200, (url, r.text)
        # The metrics' route label is the template, whichever form came in.
        text = c.get("/metrics").text
    assert len(answered) == 2
    assert 'route="/predict",status="200"' in text.replace('method="POST",', "")


class _PassThrough:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def test_the_lanes_header_lines_are_checked_once_and_kept_per_value(model_dir: Path) -> None:
    """The lane writes the header lines answers repeat from a cache: each (name, value) pair
    is checked before it is kept, a value that changes is written as it is each time, a
    pair given as a list is fine, and a bad value never reaches the wire."""
    answers = 0

    def stamp(scope: Scope, headers: list[Any]) -> None:
        nonlocal answers
        answers += 1
        headers.append((b"x-static", b"same"))
        headers.append((b"x-changing", b"%d" % answers))
        headers.append([b"x-listed", b"%d" % answers])
        if scope["query_string"] == b"bad=1":
            headers.append((b"x-bad", b"a\r\nset-cookie: x=1"))

    app = create_app(Settings(model_dir=model_dir), hooks=Hooks(response_headers=[stamp]))
    with served(app) as c:
        for n in range(1, 4):
            r = c.post("/predict", content=PREDICT, headers=JSON_TYPE)
            assert r.status_code == 200
            assert r.headers["x-static"] == "same"
            assert r.headers["x-changing"] == r.headers["x-listed"] == str(n)
        for _ in range(2):  # the bad value is refused each time: it was never kept
            try:
                r = c.post("/predict?bad=1", content=PREDICT, headers=JSON_TYPE)
            except httpx.HTTPError:
                pass  # the head was refused mid-answer: the connection is closed, nothing sent
            else:
                assert "set-cookie" not in r.headers and r.status_code == 500
        r = c.post("/predict", content=PREDICT, headers=JSON_TYPE)
        assert r.status_code == 200 and r.headers["x-changing"] == str(answers)
