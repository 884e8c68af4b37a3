"""The apps ``bench/serve.py`` compares the service with, each runnable on its own::

    python bench/_apps.py prepare --model-dir /tmp/b/models/xor --keras /tmp/b/xor.keras
    python bench/_apps.py floor --port 8101
    python bench/_apps.py bare --port 8104
    python bench/_apps.py unbatched --port 8102 --model-dir /tmp/b/models/xor
    python bench/_apps.py naive --port 8103 --keras /tmp/b/xor.keras

* ``floor``: FastAPI with no model behind it, for each protocol's prediction route
  (``/predict``, ``/v1/models/xor:predict``, ``/v2/models/xor/infer``): the same pydantic
  request model parsed the same way (``model_validate_json`` on the raw body), the same
  response shape encoded the same way (orjson), the same uvicorn. What FastAPI + pydantic +
  uvicorn cost per request here.
* ``bare``: the same three routes as one bare ASGI callable, no framework: read the body,
  ``model_validate_json``, ``orjson.dumps`` the same response shape. The transport's limit,
  the floor the service's lean data routes are held to.
* ``unbatched``: the floor plus one SavedModel signature call per request, run in
  Starlette's thread pool (what a careful author writes without a batcher).
* ``naive``: the tutorial way: load the ``.keras`` file and call ``model.predict`` per
  request in a plain ``def`` endpoint.
* ``model-calls``: the cost of one signature call by batch size (why batching pays).
* ``batcher-overhead``: requests/s and CPU per request through the Batcher alone.
* ``app-overhead``: CPU per request of the service's ASGI app against ``bare``, both called
  in-process (no sockets, no HTTP parsing, no client): the cost of our own request path.
* ``prepare``: trains a quick model with the training job's ``train_and_publish`` into a
  model dir (production layout) and saves the same network as a ``.keras`` file for
  ``naive``.

They bind 127.0.0.1 only. TensorFlow is imported only by the apps that need it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from service.schemas import PredictRequest, TFPredictRequest, V2InferenceRequest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

MODEL_NAME = "xor"


def _points(body: PredictRequest) -> np.ndarray[Any, np.dtype[np.float32]]:
    return np.array([(p.x, p.y) for p in body.points], dtype=np.float32)


def _response(version: int, probabilities: np.ndarray[Any, Any]) -> Response:
    payload = {
        "model_name": MODEL_NAME,
        "model_version": version,
        "predictions": [
            {"probability": p, "class_id": int(p >= 0.5)} for p in probabilities.tolist()
        ],
    }
    return Response(orjson.dumps(payload), media_type="application/json")


def _freeze_heap() -> None:
    """Keep TensorFlow's ~400k long-lived objects out of the cyclic GC's full collections.

    Without this a full collection walks them all, a pause of ~0.6 s on this machine that
    lands in some unlucky request's latency; ``gc.freeze()`` after loading moves them to a
    generation the collector never scans. The service does the same after loading a model.
    """
    import gc

    gc.collect()
    gc.freeze()


# The prediction route of each protocol, as bench.serve drives it (bench/wrk/predict.lua).
PROTOCOL_PATHS = {
    "predict": "/predict",
    "v1": f"/v1/models/{MODEL_NAME}:predict",
    "v2": f"/v2/models/{MODEL_NAME}/infer",
}
_HALF = 0.5  # the constant probability standing in for the model


def _shaped(path: str, body: bytes) -> bytes | None:
    """The no-model answer of one protocol's route, validated and encoded as the service does;
    None for an unknown path. Shared by the two floors, so they differ only in framework."""
    if path == PROTOCOL_PATHS["predict"]:
        n = len(PredictRequest.model_validate_json(body).points)
        predictions = [{"probability": _HALF, "class_id": 1}] * n
        payload: dict[str, Any] = {
            "model_name": MODEL_NAME,
            "model_version": 1,
            "predictions": predictions,
        }
    elif path == PROTOCOL_PATHS["v1"]:
        n = len(TFPredictRequest.model_validate_json(body).instances or ())
        payload = {"predictions": [[_HALF]] * n}
    elif path == PROTOCOL_PATHS["v2"]:
        request = V2InferenceRequest.model_validate_json(body)
        n = request.inputs[0].shape[0] if request.inputs[0].shape else 0
        payload = {
            "model_name": MODEL_NAME,
            "model_version": "1",
            "outputs": [
                {"name": "probability", "datatype": "FP32", "shape": [n, 1], "data": [_HALF] * n},
                {"name": "class_id", "datatype": "INT64", "shape": [n, 1], "data": [1] * n},
            ],
        }
    else:
        return None
    return orjson.dumps(payload)


def floor_app() -> FastAPI:
    app = FastAPI(title="xor-dnn floor (FastAPI, no model)")

    async def predict(request: Request) -> Response:
        content = _shaped(request.url.path, await request.body())
        return Response(content, media_type="application/json")

    for path in PROTOCOL_PATHS.values():
        app.add_api_route(path, predict, methods=["POST"])

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


async def bare_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The prediction routes as one ASGI callable: no framework, no middleware, no model."""
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": message["type"] + ".complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    status, content = 200, b'{"status": "ok"}'
    if scope["method"] == "POST":
        shaped = _shaped(scope["path"], body)
        status, content = (404, b"{}") if shaped is None else (200, shaped)
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(content))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": content})


def unbatched_app(model_dir: Path) -> FastAPI:
    from xor_dnn.modelstore import latest_version, load_version

    version = latest_version(model_dir)
    if version is None:
        raise SystemExit(f"no model version under {model_dir}")
    model = load_version(model_dir, version)
    model.predict(np.zeros((4, 2), np.float32))  # trace once before the first request
    _freeze_heap()
    app = FastAPI(title="xor-dnn unbatched (one signature call per request)")

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        body = PredictRequest.model_validate_json(await request.body())
        probabilities = await run_in_threadpool(model.predict, _points(body))
        return _response(version, probabilities)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def batched_app(model_dir: Path, *, max_batch_size: int, max_wait_ms: float) -> FastAPI:
    from collections.abc import AsyncIterator, Hashable
    from contextlib import asynccontextmanager

    from service.batcher import Batcher, BatchStats
    from xor_dnn.modelstore import latest_version, load_version

    version = latest_version(model_dir)
    if version is None:
        raise SystemExit(f"no model version under {model_dir}")
    model = load_version(model_dir, version)
    model.predict(np.zeros((4, 2), np.float32))
    _freeze_heap()

    def predict(_: Hashable, points: np.ndarray[Any, np.dtype[np.float32]]) -> Any:
        return model.predict(points)

    counts = {"batches": 0, "requests": 0, "model_seconds": 0.0}

    def on_batch(stats: BatchStats) -> None:
        counts["batches"] += 1
        counts["requests"] += stats.requests
        counts["model_seconds"] += stats.model_seconds

    batcher = Batcher(
        predict,
        max_batch_size=max_batch_size,
        max_wait_s=max_wait_ms / 1000,
        on_batch=on_batch,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        yield
        await batcher.stop(timeout=5)

    app = FastAPI(title="xor-dnn batched core (floor + Batcher, no middleware)", lifespan=lifespan)

    @app.post("/predict")
    async def predict_route(request: Request) -> Response:
        body = PredictRequest.model_validate_json(await request.body())
        probabilities = await batcher.submit(_points(body), key=version)
        return _response(version, probabilities)

    @app.get("/stats")
    async def stats() -> dict[str, float]:
        return counts

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def naive_app(keras_path: Path) -> FastAPI:
    import keras

    model = keras.models.load_model(keras_path, compile=False)  # predict only: no loss needed
    app = FastAPI(title="xor-dnn naive (Keras model.predict per request)")

    # Written as a tutorial writes it: a sync endpoint, FastAPI's body parsing, predict().
    @app.post("/predict")
    def predict(body: PredictRequest) -> dict[str, Any]:
        probabilities = model.predict(_points(body), verbose=0).reshape(-1)
        return {
            "model_name": MODEL_NAME,
            "model_version": 1,
            "predictions": [
                {"probability": float(p), "class_id": int(p >= 0.5)} for p in probabilities
            ],
        }

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def model_calls(model_dir: Path) -> None:
    """Median wall and CPU time of one model call, by batch size: TensorFlow (the folded
    signature) and LiteRT (what the service runs small batches in), alternated."""
    import time

    from xor_dnn.modelstore import LITE_MAX_POINTS, latest_version, load_version

    version = latest_version(model_dir)
    if version is None:
        raise SystemExit(f"no model version under {model_dir}")
    tensorflow = load_version(model_dir, version)
    lite = load_version(model_dir, version, lite_max_points=LITE_MAX_POINTS)
    if lite.small_batch_path is None:
        raise SystemExit("LiteRT did not load (see the log); only TensorFlow could be timed")
    rng = np.random.default_rng(0)
    print("| points per call | runtime | median µs | p90 µs | CPU µs per call |")
    print("|---:|---|---:|---:|---:|")
    for n in (1, 8, 32, 128, 256, 1024):
        x = rng.uniform(-5, 5, size=(n, 2)).astype(np.float32)
        runtimes = [("TensorFlow", tensorflow)]
        if n <= LITE_MAX_POINTS:
            runtimes.append(("LiteRT", lite))
        for name, model in runtimes:
            for _ in range(100):
                model.predict(x)
            walls = []
            c0 = time.thread_time()
            for _ in range(1000):
                t0 = time.perf_counter()
                model.predict(x)
                walls.append(time.perf_counter() - t0)
            cpu = (time.thread_time() - c0) / 1000
            walls.sort()
            print(
                f"| {n} | {name} | {walls[500] * 1e6:.1f} | {walls[900] * 1e6:.1f} "
                f"| {cpu * 1e6:.1f} |"
            )


def batcher_overhead(seconds: float = 2.0) -> None:
    """Requests/s and CPU per request through the Batcher alone, with a no-op model."""
    import asyncio
    import time
    from collections.abc import Hashable

    from service.batcher import Batcher

    def noop(_: Hashable, points: np.ndarray[Any, np.dtype[np.float32]]) -> Any:
        return np.zeros(points.shape[0], np.float32)

    async def one(concurrency: int) -> tuple[float, float]:
        batcher = Batcher(noop)
        await batcher.start()
        done = 0
        point = np.zeros((1, 2), np.float32)
        end = time.perf_counter() + seconds

        async def client() -> None:
            nonlocal done
            while time.perf_counter() < end:
                await batcher.submit(point, key=1, deadline=time.monotonic() + 10)
                done += 1

        t0, c0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        await batcher.stop(timeout=1)
        return done / wall, cpu / done

    print("| concurrent submitters | requests/s | CPU us per request |")
    print("|---:|---:|---:|")
    try:  # the loop uvicorn picks when it is installed, as in the service
        import uvloop

        factory: Any = uvloop.new_event_loop
    except ImportError:
        factory = None
    for concurrency in (1, 8, 32, 128):
        with asyncio.Runner(loop_factory=factory) as runner:
            rps, cpu = runner.run(one(concurrency))
        print(f"| {concurrency} | {rps:,.0f} | {cpu * 1e6:.1f} |")


def app_overhead(model_dir: Path, points: int = 1, repeats: int = 3) -> None:
    """CPU per ``/predict`` of ``points`` points, the service's ASGI app against the bare one,
    called in-process by 32 concurrent callers: no sockets, no HTTP parsing, no client, so
    what is left is each app's own code (and, for the service, its model thread)."""
    import asyncio
    import time

    from service.app import create_app
    from service.config import Settings

    requests = max(320, 20000 // points)
    rng = np.random.default_rng(0)
    body = orjson.dumps(
        {"points": [{"x": float(x), "y": float(y)} for x, y in rng.uniform(-1, 1, (points, 2))]}
    )
    scope_base: dict[str, Any] = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/predict", "raw_path": b"/predict", "query_string": b"",
        "root_path": "", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2),
        "headers": [(b"content-type", b"application/json")],
    }  # fmt: skip

    async def call(app: Any) -> None:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app(dict(scope_base), receive, send)
        if sent[0]["status"] != 200:
            raise SystemExit(f"/predict answered {sent[0]['status']}: {sent[1:]}")

    async def measure(app: Any) -> tuple[float, float]:
        for _ in range(500):  # warm-up
            await call(app)

        async def caller() -> None:
            for _ in range(requests // 32):
                await call(app)

        c0, t0 = time.process_time(), time.thread_time()
        await asyncio.gather(*(caller() for _ in range(32)))
        n = requests // 32 * 32
        return (time.process_time() - c0) / n * 1e6, (time.thread_time() - t0) / n * 1e6

    async def run() -> list[tuple[str, float, float]]:
        service = create_app(Settings(model_dir=str(model_dir), log_level="warning"))
        rows: list[tuple[str, float, float]] = []
        async with _lifespan(service):
            for _ in range(repeats):  # interleaved, so machine noise lands on both
                rows.append(("bare", *await measure(bare_app)))
                rows.append(("service", *await measure(service)))
        return rows

    import uvloop

    rows = uvloop.run(run())
    print(f"/predict of {points} point(s), {requests // 32 * 32} requests per run")
    print("| app | CPU µs/request, process (median) | event-loop thread | points/s of CPU | runs |")
    print("|---|---:|---:|---:|---:|")
    for name in ("bare", "service"):
        mine = sorted(r for r in rows if r[0] == name)
        mid = mine[len(mine) // 2]
        rate = points / mid[1] * 1e6
        print(f"| {name} | {mid[1]:.1f} | {mid[2]:.1f} | {rate:,.0f} | {len(mine)} |")


@contextlib.asynccontextmanager
async def _lifespan(app: Any) -> Any:
    """Run an ASGI app's lifespan startup and shutdown around the block."""
    import asyncio

    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    task = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, inbox.get, outbox.put)
    )
    await inbox.put({"type": "lifespan.startup"})
    started = await outbox.get()
    if started["type"] != "lifespan.startup.complete":
        raise SystemExit(f"startup failed: {started}")
    try:
        yield
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await outbox.get()
        await task


def prepare(model_dir: Path, keras_path: Path, epochs: int) -> None:
    from training.model import ModelConfig
    from training.train import train_and_publish

    published = train_and_publish(model_dir, runs=1, config=ModelConfig(epochs=epochs))
    if published.report is None:
        raise SystemExit("train_and_publish returned no training report (no Keras model)")
    published.report.chosen.model.save(keras_path)
    print(f"published version {published.version} at {published.path}; saved {keras_path}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "kind",
        choices=[
            "floor", "bare", "unbatched", "batched", "naive", "prepare", "model-calls",
            "batcher-overhead", "app-overhead",
        ],
    )  # fmt: skip
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--model-dir", type=Path)
    p.add_argument("--keras", type=Path)
    p.add_argument("--epochs", type=int, default=20, help="prepare: training epochs")
    p.add_argument("--max-batch-size", type=int, default=1024, help="batched: points per call")
    p.add_argument("--max-batch-wait-ms", type=float, default=0.0, help="batched: linger, ms")
    p.add_argument("--points", type=int, default=1, help="app-overhead: points per request")
    args = p.parse_args(argv)

    if args.kind == "model-calls":
        if args.model_dir is None:
            p.error("model-calls needs --model-dir")
        model_calls(args.model_dir)
        return 0
    if args.kind == "batcher-overhead":
        batcher_overhead()
        return 0
    if args.kind == "app-overhead":
        if args.model_dir is None:
            p.error("app-overhead needs --model-dir")
        app_overhead(args.model_dir, points=args.points)
        return 0
    if args.kind == "prepare":
        if args.model_dir is None or args.keras is None:
            p.error("prepare needs --model-dir and --keras")
        prepare(args.model_dir, args.keras, args.epochs)
        return 0
    app: Any
    if args.kind == "floor":
        app = floor_app()
    elif args.kind == "bare":
        app = bare_app
    elif args.kind == "unbatched":
        if args.model_dir is None:
            p.error("unbatched needs --model-dir")
        app = unbatched_app(args.model_dir)
    elif args.kind == "batched":
        if args.model_dir is None:
            p.error("batched needs --model-dir")
        app = batched_app(
            args.model_dir,
            max_batch_size=args.max_batch_size,
            max_wait_ms=args.max_batch_wait_ms,
        )
    else:
        if args.keras is None:
            p.error("naive needs --keras")
        app = naive_app(args.keras)

    import uvicorn

    # The uvicorn settings of `xor-dnn serve`: auto loop (uvloop), http (httptools), no proxy
    # headers layer, no Server header.
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        proxy_headers=False,
        server_header=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
