"""gRPC benchmark: single-point V2 ``ModelInfer`` on the service against a gRPC floor.

    python -m bench.grpc                        # the full run, a few minutes; exit 1 on a miss
    python -m bench.grpc --duration 2 --repeats 1 --concurrency 1,32   # a quick look

What runs, each in its own process on 127.0.0.1:

=======  ===============================================================================
service  ``xor-dnn serve --grpc-port N`` on a model trained for the run (one worker)
floor    the service's own gRPC stack with no model: the same ``grpc.aio`` server, options,
         registration, request decoding, ``@rpc`` wrapper (metrics, request ids, access log)
         and response encoding, on the same event loop (uvloop, as uvicorn picks it), over
         a data plane whose ``infer`` answers a constant (``python -m bench.grpc floor
         --port N``)
=======  ===============================================================================

The load generator is this module's ``client`` mode, in ``--clients`` separate processes
(default: up to 4, never more than the concurrency); each opens one ``grpc.aio`` channel,
makes one call, and once every process is connected they all start on one signal, running
their share of the concurrency as closed-loop callers that send one pre-serialized request
(no protobuf work per call on the client). Targets alternate per repeat and the median
of the repeats is reported, each run starting once both servers are idle
(``bench.serve.settle``). Then the service is driven open loop at half of its peak for the
p99 target, by h2load (:func:`h2load_open_loop`; ``--open-loop grpc``: this module's client
processes calling at fixed instants, latency counted from the instant due), and HTTP
``POST /predict`` is measured on the same service process at c = 32 with
``bench/_loadgen.py`` for an HTTP vs gRPC row.

Targets (exit status 1 if one is missed): the service >= 85% of the gRPC floor's
throughput at c = 32; p99 <= 20 ms at half of the service's peak (open loop).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import struct
import subprocess  # nosec B404
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from bench._loadgen import percentile
from bench._metrics import metric, scrape
from bench._process import ServerProcess as Server
from bench._process import free_port, start_process
from bench._resources import cpu_seconds
from bench.serve import ROOT, Cell, child_env, fmt, prepare_model, running, settle
from bench.serve import load as http_load

FLOOR_RATIO_MIN = 0.85
P99_MAX_MS = 20.0
TARGET_CONCURRENCY = 32
MAX_CLIENTS = 4
METHOD = "/inference.GRPCInferenceService/ModelInfer"


# -- the floor ---------------------------------------------------------------------------------


def run_on_service_loop(main: Any, loop: str = "auto") -> None:
    """Run coroutine ``main`` on the event loop uvicorn builds for ``loop`` (its own factory,
    so ``auto`` is exactly the service's: uvloop when installed)."""
    import uvicorn

    factory = uvicorn.Config(app=_no_app, loop=loop).get_loop_factory()
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main)


async def _no_app(scope: Any, receive: Any, send: Any) -> None:  # only the loop is used
    raise RuntimeError("not served")


def floor(port: int, loop: str = "auto") -> None:
    """Serve the service's gRPC stack on ``port`` over a data plane without a model, on the
    event loop the service runs (``loop``)."""
    from service.config import Settings
    from service.dataplane import DataPlane, Inference
    from service.grpc import server as grpc_server

    class FloorDataPlane(DataPlane):
        # Limits and checks run as in the service; only the batcher and model are missing.
        @property
        def ready(self) -> bool:
            return True

        def model(self, name: str) -> Any:
            return SimpleNamespace(name=name)  # every name is served; infer needs no model

        async def admit(self, name: str | None) -> None:
            return None  # one model, as the service serves it here: never held

        async def infer(self, points: Any, **_: Any) -> Inference:
            self.check_points(int(points.shape[0]))
            return Inference(0, np.full(points.shape[0], 0.5, np.float32))

    async def serve() -> None:
        settings = Settings(model_dir=tempfile.gettempdir(), grpc_port=port)
        dataplane = FloorDataPlane(settings, None)  # type: ignore[arg-type]
        server = await grpc_server.start(settings, dataplane)  # held: grpc stops it when freed
        await server.server.wait_for_termination()

    run_on_service_loop(serve(), loop)


# -- the load generator ------------------------------------------------------------------------


def _request_bytes() -> bytes:
    from tritonclient.grpc import service_pb2 as pb

    request = pb.ModelInferRequest(model_name="xor")
    request.inputs.add(name="points", datatype="FP32", shape=[1, 2])
    request.raw_input_contents.append(np.array([[0.5, -0.5]], np.float32).tobytes())
    return bytes(request.SerializeToString())


async def _client(target: str, concurrency: int, rate: float, duration: float) -> dict[str, Any]:
    import grpc

    body = _request_bytes()
    latencies: list[float] = []
    errors: dict[str, int] = {}
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(METHOD)  # bytes in, bytes out: no client-side protobuf
        await call(body, timeout=30)  # connected and warm before the clock starts
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)  # every client starts on the same "go"
        end = time.perf_counter() + duration

        async def once(started: float) -> None:
            try:
                await call(body, timeout=30)
                latencies.append(time.perf_counter() - started)
            except grpc.RpcError as exc:
                errors[exc.code().name] = errors.get(exc.code().name, 0) + 1

        async def closed_loop() -> None:
            while time.perf_counter() < end:
                await once(time.perf_counter())

        began = time.perf_counter()
        if rate > 0:  # open loop: calls due at fixed instants, latency from the instant due
            pending: set[asyncio.Task[None]] = set()
            i = 0
            while (due := began + i / rate) < end:
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                task = asyncio.create_task(once(due))
                pending.add(task)
                task.add_done_callback(pending.discard)
                i += 1
            await asyncio.gather(*pending)
        else:
            await asyncio.gather(*(closed_loop() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    return {"latencies": latencies, "errors": errors, "seconds": elapsed}


def load(
    target: str, *, clients: int, duration: float, concurrency: int = 0, rate: float = 0.0
) -> dict[str, Any]:
    """One run from ``clients`` processes; merged req/s and latency percentiles."""
    n = max(1, min(clients, concurrency or clients))
    shares = [concurrency // n + (1 if i < concurrency % n else 0) for i in range(n)]
    procs = [
        subprocess.Popen(  # nosec B603: this module, fixed arguments
            [
                sys.executable,
                "-m",
                "bench.grpc",
                "client",
                "--target",
                target,
                "--concurrency",
                str(share),
                "--rate",
                str(rate / n),
                "--duration",
                str(duration),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=child_env(),
            cwd=ROOT,
        )
        for share in shares
    ]
    for proc in procs:  # each has connected and made one call
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != b"ready":
            raise SystemExit(f"a client process failed ({proc.wait()})")
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
    runs = []
    for proc in procs:
        out, _ = proc.communicate(timeout=duration + 120)
        if proc.returncode != 0:
            raise SystemExit(f"a client process failed ({proc.returncode})")
        runs.append(json.loads(out))
    latencies = sorted(x for r in runs for x in r["latencies"])
    errors: dict[str, int] = {}
    for r in runs:
        for code, count in r["errors"].items():
            errors[code] = errors.get(code, 0) + count
    seconds = max(r["seconds"] for r in runs)
    return {
        "calls": len(latencies),
        "rps": len(latencies) / seconds,
        "p50_ms": percentile(latencies, 50) * 1e3,
        "p99_ms": percentile(latencies, 99) * 1e3,
        "statuses": {"200": len(latencies), **errors},
        "errors": {},  # the gRPC status codes are counted under "statuses"
        "clients": n,
    }


def h2load_open_loop(
    target: str,
    *,
    rate: float,
    duration: float,
    clients: int = MAX_CLIENTS,
    body: bytes | None = None,
    metrics_url: str | None = None,
) -> dict[str, Any]:
    """An open loop from h2load (nghttp2's C load generator; Debian ``nghttp2-client``):
    ``rate`` calls/s over ``clients`` HTTP/2 connections for ``duration`` s (rounded up to
    whole seconds), each call the
    gRPC framing of ``body`` (default: the closed loop's single-point request), latency per
    call from h2load's log. Why not this module's clients: at a few thousand calls/s, grpc.aio
    clients take enough of 2 cores that the floor itself, which does no work, misses a 20 ms
    p99 (docs/grpc.md), so their tail would be the generator's.

    h2load sees HTTP statuses only (gRPC's status travels in trailers): with ``metrics_url``
    (the service's HTTP side), each call's gRPC code is counted from the service's
    ``xor_dnn_grpc_requests_total`` before and after, and calls not OK are errors.
    """
    exe = shutil.which("h2load")
    if exe is None:
        raise SystemExit("h2load not found: apt-get install nghttp2-client")
    message = _request_bytes() if body is None else body
    clients = max(1, clients)
    seconds = max(1, math.ceil(duration))  # h2load's -D takes whole seconds

    def codes() -> dict[str, float]:
        if metrics_url is None:
            return {}
        text = scrape(metrics_url)
        names = ("OK", "INVALID_ARGUMENT", "NOT_FOUND", "RESOURCE_EXHAUSTED", "UNAVAILABLE",
                 "DEADLINE_EXCEEDED", "CANCELLED", "INTERNAL", "UNKNOWN")  # fmt: skip
        return {
            c: metric(text, "xor_dnn_grpc_requests_total", method=METHOD, code=c) for c in names
        }

    with tempfile.TemporaryDirectory(prefix="bench-h2load-") as tmp:
        frame = Path(tmp) / "request.bin"
        frame.write_bytes(b"\0" + struct.pack(">I", len(message)) + message)  # not compressed
        log = Path(tmp) / "calls.tsv"
        before = codes()
        done = subprocess.run(  # nosec B603: h2load from PATH, fixed arguments
            [exe, "-c", str(clients), "-m", "1024", "--rps", f"{rate / clients:g}",
             "-D", str(seconds), "-d", str(frame), "-H", "content-type: application/grpc",
             "-H", "te: trailers", "--log-file", str(log), f"http://{target}{METHOD}"],
            capture_output=True, text=True, timeout=seconds + 120,
        )  # fmt: skip
        if done.returncode != 0:
            raise SystemExit(f"h2load failed ({done.returncode}): {done.stderr[-2000:]}")
        rows = [line.split("\t") for line in log.read_text().splitlines() if line]
    after = codes()
    latencies = sorted(int(row[2]) / 1e6 for row in rows)
    statuses: dict[str, int] = {}
    for row in rows:
        statuses[row[1]] = statuses.get(row[1], 0) + 1
    if metrics_url is not None:  # the gRPC codes, OK counted as "200" as load() does
        statuses = {
            "200" if name == "OK" else name: round(after[name] - before.get(name, 0.0))
            for name in after
            if after[name] > before.get(name, 0.0)
        }
    return {
        "calls": statuses.get("200", 0),
        "rps": len(latencies) / seconds,
        "p50_ms": percentile(latencies, 50) * 1e3,
        "p99_ms": percentile(latencies, 99) * 1e3,
        "statuses": statuses,
        "errors": {},
        "clients": clients,
    }


# -- the run -----------------------------------------------------------------------------------


def _wait_serving(server: Server, target: str, timeout: float = 180.0) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                raise SystemExit(f"{server.name} exited:\n{server.log()[-2000:]}")
            try:
                answer = stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.25)
    raise SystemExit(f"{server.name}: gRPC not SERVING after {timeout:.0f} s")


def _start(name: str, argv: list[str], workdir: Path) -> tuple[Server, str]:
    grpc_port, http_port = free_port(), free_port()
    log = workdir / f"{name}.log"
    argv = [a.replace("{grpc}", str(grpc_port)).replace("{http}", str(http_port)) for a in argv]
    server = start_process(argv, log, http_port, name=name, env=child_env(), wait=False)
    return server, f"127.0.0.1:{grpc_port}"


def run(args: argparse.Namespace, workdir: Path) -> int:
    t0 = time.monotonic()
    model_dir = args.model_dir or workdir / "models" / "xor"
    if args.model_dir is None:
        prepare_model(model_dir, workdir / "xor.keras", args.epochs, workdir / "prepare.log")
    commands = {
        "service": [sys.executable, "-m", "xor_dnn", "serve", "--model-dir", str(model_dir),
                    "--port", "{http}", "--grpc-port", "{grpc}", "--log-level", "warning"],
        "floor": [sys.executable, "-m", "bench.grpc", "floor", "--port", "{grpc}"],
    }  # fmt: skip
    servers: list[Server] = []
    targets: dict[str, str] = {}
    with running(servers):
        for name, argv in commands.items():
            server, target = _start(name, argv, workdir)
            servers.append(server)
            targets[name] = target
        for server in servers:
            _wait_serving(server, targets[server.name])
        print(f"servers ready after {time.monotonic() - t0:.0f} s; warming up ...", flush=True)
        for server in servers:
            load(targets[server.name], clients=args.clients, duration=1.0, concurrency=8)

        cells: dict[tuple[str, int], Cell] = {}
        for c in args.concurrency:
            for rep in range(args.repeats):
                for server in servers[rep % 2 :] + servers[: rep % 2]:
                    settle(servers)
                    cpu = cpu_seconds(server.proc.pid)
                    r = load(
                        targets[server.name], clients=args.clients, duration=args.duration,
                        concurrency=c,
                    )  # fmt: skip
                    r["cpu_ms"] = (cpu_seconds(server.proc.pid) - cpu) / max(r["calls"], 1) * 1e3
                    cells.setdefault((server.name, c), Cell()).runs.append(r)
                    print(
                        f"  c={c:<4} {server.name:<8} {r['rps']:8.1f} calls/s  "
                        f"p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:8.2f} ms  "
                        f"cpu {r['cpu_ms']:.3f} ms/call ({r['clients']} client processes)",
                        flush=True,
                    )
        service = servers[0]
        peak = max(cells[("service", c)].median("rps") for c in args.concurrency)
        half = peak / 2
        open_loop = Cell()
        http = Cell()
        for _ in range(args.repeats):
            settle(servers)
            if args.open_loop == "h2load":
                r = h2load_open_loop(
                    targets["service"], rate=half, duration=args.duration * 2,
                    clients=args.clients, metrics_url=service.url,
                )  # fmt: skip
            else:
                r = load(targets["service"], clients=args.clients, duration=args.duration * 2,
                         rate=half)  # fmt: skip
            open_loop.runs.append(r)
            print(f"  open loop ({args.open_loop}) {half:.0f} calls/s: p50 {r['p50_ms']:.2f} ms  "
                  f"p99 {r['p99_ms']:.2f} ms", flush=True)  # fmt: skip
            settle(servers)
            http.runs.append(
                http_load(service.port, duration=args.duration, concurrency=TARGET_CONCURRENCY)
            )
    return report(args, cells, open_loop, http, half, time.monotonic() - t0)


def report(
    args: argparse.Namespace,
    cells: dict[tuple[str, int], Cell],
    open_loop: Cell,
    http: Cell,
    half: float,
    seconds: float,
) -> int:
    clients = f"up to {args.clients} client processes (bench.grpc client, grpc.aio)"
    print()
    print(
        f"Single-point V2 ModelInfer over gRPC, closed loop, median of {args.repeats} "
        f"interleaved runs of {args.duration:g} s (nproc={os.cpu_count()}, shared machine, "
        f"one worker per server; {clients})"
    )
    print()
    print("| target | concurrency | calls/s | p50 ms | p99 ms | server CPU ms/call | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in ("service", "floor"):
        for c in args.concurrency:
            cell = cells[(name, c)]
            print(
                f"| {name} | {c} | {fmt(cell.median('rps'))} | {fmt(cell.median('p50_ms'), 2)} "
                f"| {fmt(cell.median('p99_ms'), 2)} | {fmt(cell.median('cpu_ms'), 3)} "
                f"| {cell.errors} |"
            )
    print()
    grpc32 = cells.get(("service", TARGET_CONCURRENCY))
    print("| protocol (service, c=32, single point) | req/s | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|")
    print(
        f"| HTTP POST /predict (bench/_loadgen.py) | {fmt(http.median('rps'))} "
        f"| {fmt(http.median('p50_ms'), 2)} | {fmt(http.median('p99_ms'), 2)} |"
    )
    if grpc32:
        print(
            f"| gRPC V2 ModelInfer | {fmt(grpc32.median('rps'))} "
            f"| {fmt(grpc32.median('p50_ms'), 2)} | {fmt(grpc32.median('p99_ms'), 2)} |"
        )
    print()
    missed = 0
    if grpc32:
        ratio = grpc32.median("rps") / cells[("floor", TARGET_CONCURRENCY)].median("rps")
        ok = ratio >= FLOOR_RATIO_MIN
        missed += not ok
        print(f"{'PASS' if ok else 'MISS'}  service / floor at c=32: {ratio:.2f} "
              f"(target >= {FLOOR_RATIO_MIN})")  # fmt: skip
    p99 = open_loop.median("p99_ms")
    ok = p99 <= P99_MAX_MS and not open_loop.errors  # a failed call was not answered in time
    missed += not ok
    if open_loop.errors:
        print(f"note: {open_loop.errors} open-loop calls failed: "
              f"{[r['statuses'] for r in open_loop.runs]}")  # fmt: skip
    print(f"{'PASS' if ok else 'MISS'}  p99 at half of peak ({half:.0f} calls/s, open loop, "
          f"{args.open_loop}): {p99:.2f} ms (target <= {P99_MAX_MS:g} ms)")  # fmt: skip
    print(f"({seconds:.0f} s)")
    return 1 if missed else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="mode")
    f = sub.add_parser("floor", help="serve the gRPC floor")
    f.add_argument("--port", type=int, required=True)
    f.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="event loop; auto, as the service's uvicorn: uvloop when installed",
    )
    c = sub.add_parser("client", help="one load-generating process (prints JSON)")
    c.add_argument("--target", required=True)
    c.add_argument("--concurrency", type=int, default=1)
    c.add_argument("--rate", type=float, default=0.0)
    c.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--duration", type=float, default=5.0, help="seconds per closed-loop run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--concurrency", default="1,8,32,128", help="comma-separated levels")
    p.add_argument("--clients", type=int, default=MAX_CLIENTS, help="load processes")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--model-dir", type=Path, default=None, help="serve this model (no training)")
    p.add_argument(
        "--open-loop",
        choices=("auto", "h2load", "grpc"),
        default="auto",
        help="the open loop's generator: h2load (C; nghttp2-client), grpc (this module's "
        "grpc.aio clients), auto: h2load when installed",
    )
    p.add_argument("--workdir", type=Path, default=None)
    args = p.parse_args(argv)
    if args.mode == "floor":
        floor(args.port, args.loop)
        return 0
    if args.mode == "client":
        result = asyncio.run(_client(args.target, args.concurrency, args.rate, args.duration))
        print(json.dumps(result))
        return 0
    args.concurrency = [int(x) for x in str(args.concurrency).split(",") if x]
    if args.open_loop == "auto":
        args.open_loop = "h2load" if shutil.which("h2load") else "grpc"
        if args.open_loop == "grpc":
            print(
                "note: h2load not installed (apt-get install nghttp2-client); the open loop "
                "runs on grpc.aio clients, whose CPU shapes the tail on a small machine"
            )
    if TARGET_CONCURRENCY not in args.concurrency:
        print(f"note: c={TARGET_CONCURRENCY} not measured; the floor target is skipped")
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        return run(args, args.workdir)
    with tempfile.TemporaryDirectory(prefix="bench-grpc-") as tmp:
        return run(args, Path(tmp))


if __name__ == "__main__":
    sys.exit(main())
