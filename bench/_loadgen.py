"""The one load-generation path of the benchmarks: ``wrk`` for closed-loop throughput, and one
Python HTTP/1.1 client for what wrk cannot do (a fixed arrival rate with each request timed
from its due instant, and per-request outcomes). Loopback targets only.

:func:`run` drives a server from a separate process (so the generator's CPU is never counted
as the server's) and returns one summary dict, whichever generator ran::

    run(port, duration=5, concurrency=32)          # wrk when installed, else this module
    run(port, duration=5, rate=800)                 # always this module (open loop)

The Python client is also used in-process, as coroutines (:func:`closed_loop`,
:func:`open_loop`), by scenarios that act on the server while the load runs. From a shell::

    python -m bench._loadgen --port 8000 --concurrency 32 --duration 5
    python -m bench._loadgen --port 8000 --rate 800 --duration 5

The target is always 127.0.0.1: this tool only loads servers on this machine. Requests are
pre-encoded ``POST /predict`` bodies (distinct points, so no cache can help the
server) over keep-alive connections. Each request ends in one outcome:

* **ok**: a 200;
* **refused**: a 429/503 answer, or the connection refused / closed before a single byte of
  answer (the server never took the request: a client may safely retry);
* **failed**: any other status (500, 504, ...);
* **lost**: the server started answering and the answer never completed, or the request
  timed out on the client (including waiting for a free connection past the timeout).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import shutil
import subprocess  # nosec B404
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

T = TypeVar("T")
HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parents[1]
WRK_SCRIPT = ROOT / "bench" / "wrk" / "predict.lua"
GENERATORS = {"wrk": "wrk (bench/wrk/predict.lua)", "python": "bench/_loadgen.py"}
REFUSED_STATUSES = (429, 503)


# -- outcomes ------------------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


@dataclass
class Outcomes:
    """Per-request results of one load phase (see the module doc for the four outcomes)."""

    ok_latencies: list[float] = field(default_factory=list)
    refused_latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    refused: int = 0
    failed: int = 0
    lost: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    # Open loop only: how late each request was written after its due time. A large p99 means
    # the generator (or its connection pool), not the server, set the pace.
    send_lags: list[float] = field(default_factory=list)
    # Open loop only: the same answers timed from the write instead (server + both event loops).
    ok_from_write: list[float] = field(default_factory=list)
    refused_from_write: list[float] = field(default_factory=list)

    @property
    def sent(self) -> int:
        return len(self.ok_latencies) + self.refused + self.failed + self.lost

    def answered(self, status: int, latency: float, from_write: float | None = None) -> None:
        self.statuses[status] += 1
        if status == 200:
            self.ok_latencies.append(latency)
            if from_write is not None:
                self.ok_from_write.append(from_write)
        elif status in REFUSED_STATUSES:
            self.refused += 1
            self.refused_latencies.append(latency)
            if from_write is not None:
                self.refused_from_write.append(from_write)
        else:
            self.failed += 1

    def no_answer(self, error: str, *, partial: bool) -> None:
        """A request that got no complete answer: lost once the server had started answering
        (or the client gave up), refused when nothing of an answer came back."""
        self.errors[error] += 1
        if partial:
            self.lost += 1
        else:
            self.refused += 1

    def summary(self, seconds: float) -> dict[str, Any]:
        """Outcome counts and latency percentiles; ``rps`` and ``p*_ms`` are those of the 200
        answers, in the shape ``bench/wrk/predict.lua`` prints too."""
        ok = sorted(self.ok_latencies)
        ref = sorted(self.refused_latencies)
        return {
            "sent": self.sent,
            "requests": sum(self.statuses.values()),
            "ok": len(ok),
            "refused": self.refused,
            "failed": self.failed,
            "lost": self.lost,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors": dict(self.errors),
            "seconds": round(seconds, 3),
            "rps": len(ok) / seconds if seconds > 0 else 0.0,
            "ok_per_s": len(ok) / seconds if seconds > 0 else 0.0,
            "p50_ms": percentile(ok, 50) * 1e3,
            "p90_ms": percentile(ok, 90) * 1e3,
            "p99_ms": percentile(ok, 99) * 1e3,
            "max_ms": (ok[-1] if ok else float("nan")) * 1e3,
            "ok_p50_ms": percentile(ok, 50) * 1e3,
            "ok_p99_ms": percentile(ok, 99) * 1e3,
            "refused_p50_ms": percentile(ref, 50) * 1e3,
            "refused_p99_ms": percentile(ref, 99) * 1e3,
            "send_lag_p99_ms": percentile(sorted(self.send_lags), 99) * 1e3,
            "ok_from_write_p99_ms": percentile(sorted(self.ok_from_write), 99) * 1e3,
            "refused_from_write_p50_ms": percentile(sorted(self.refused_from_write), 50) * 1e3,
            "refused_from_write_p99_ms": percentile(sorted(self.refused_from_write), 99) * 1e3,
        }


# -- requests and answers ------------------------------------------------------------------


def build_requests(
    port: int, *, path: str = "/predict", count: int = 256, seed: int = 0, points: int = 1
) -> list[bytes]:
    """``count`` distinct pre-encoded requests of ``points`` points each."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        batch = [
            {"x": round(rng.uniform(-1, 1), 6), "y": round(rng.uniform(-1, 1), 6)}
            for _ in range(points)
        ]
        body = json.dumps({"points": batch}).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        out.append(head + body)
    return out


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response; returns (status, keep_alive)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = 0
    chunked = False
    keep_alive = True
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif name == b"connection" and b"close" in value.lower():
            keep_alive = False
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status, keep_alive


# -- closed loop ---------------------------------------------------------------------------


class _StreamClient:
    """One keep-alive connection that records each request's outcome."""

    def __init__(self, port: int, timeout: float) -> None:
        self.port = port
        self.timeout = timeout
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def send(self, raw: bytes, out: Outcomes) -> None:
        started = time.perf_counter()
        try:
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
            assert self.reader is not None
            self.writer.write(raw)
            async with asyncio.timeout(self.timeout):
                status, keep_alive = await read_response(self.reader)
        except (ConnectionRefusedError, ConnectionResetError, BrokenPipeError) as exc:
            self.close()
            out.no_answer(type(exc).__name__, partial=False)
            await asyncio.sleep(0.01)
            return
        except asyncio.IncompleteReadError as exc:
            self.close()
            # Nothing of an answer: the server closed an idle connection (not our request's).
            out.no_answer("partial_answer" if exc.partial else "closed", partial=bool(exc.partial))
            await asyncio.sleep(0.01)
            return
        except (TimeoutError, OSError) as exc:
            self.close()
            out.no_answer(type(exc).__name__, partial=True)
            return
        out.answered(status, time.perf_counter() - started)
        if not keep_alive:
            self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def closed_loop(
    port: int,
    concurrency: int,
    duration: float,
    *,
    timeout: float = 30.0,
    stop: asyncio.Event | None = None,
    path: str = "/predict",
    points: int = 1,
) -> tuple[Outcomes, float]:
    """``concurrency`` connections, each sending its next request when the last is answered,
    for ``duration`` seconds or until ``stop`` is set."""
    reqs = build_requests(port, path=path, seed=concurrency, points=points)
    out = Outcomes()
    started = time.perf_counter()
    end = started + duration

    async def worker(i: int) -> None:
        client = _StreamClient(port, timeout)
        n = i
        try:
            while time.perf_counter() < end and not (stop and stop.is_set()):
                await client.send(reqs[n % len(reqs)], out)
                n += concurrency
        finally:
            client.close()

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return out, time.perf_counter() - started


# -- open loop -----------------------------------------------------------------------------


class _ProtocolConn(asyncio.Protocol):
    """One keep-alive connection driven by callbacks, for the open loop: no task, stream or
    queue per request, which keeps the generator's own CPU (and so its share of a 2-core
    machine, and the scheduling delays it causes the server) small."""

    def __init__(self, on_done: Callable[[_ProtocolConn], None], out: Outcomes) -> None:
        self.on_done = on_done
        self.out = out
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.due = self.written = 0.0
        self.busy = False
        self.timed_out = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def send(self, raw: bytes, due: float) -> None:
        assert self.transport is not None
        self.written = time.perf_counter()
        self.out.send_lags.append(self.written - due)
        self.due, self.busy, self.timed_out = due, True, False
        self.buffer.clear()
        self.transport.write(raw)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        marker = head.find(b"\r\ncontent-length:")
        if marker < 0:  # chunked or close-delimited: not what the service sends
            self.close()
            return
        stop = head.find(b"\r\n", marker + 2)
        length = int(head[marker + 17 : stop if stop >= 0 else None])
        if len(self.buffer) < end + 4 + length:
            return
        del self.buffer[: end + 4 + length]
        answered = time.perf_counter()
        self.busy = False
        self.out.answered(int(head[9:12]), answered - self.due, answered - self.written)
        if b"\r\nconnection: close" in head:
            self.close()  # before the callback, which then replaces this connection
        self.on_done(self)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.busy:
            self.busy = False
            if self.timed_out:
                self.out.no_answer("TimeoutError", partial=True)
            elif self.buffer:
                self.out.no_answer("partial_answer", partial=True)
            else:
                self.out.no_answer("closed", partial=False)
            self.on_done(self)


async def open_loop(
    port: int,
    rate: float,
    duration: float,
    *,
    timeout: float = 30.0,
    pool: int = 64,
    path: str = "/predict",
    points: int = 1,
) -> tuple[Outcomes, float]:
    """Requests due at ``t0 + i / rate``; each goes out on an idle connection at its due time
    (or, if all ``pool`` are busy, on the first that frees up) and its latency counts from the
    due time, so a stalled server cannot hide its stall by slowing the client down (no
    coordinated omission)."""
    loop = asyncio.get_running_loop()
    reqs = build_requests(port, path=path, seed=7, points=points)
    out = Outcomes()
    total = int(rate * duration)
    idle: deque[_ProtocolConn] = deque()
    backlog: deque[tuple[int, float]] = deque()  # (index, due) of requests waiting for a conn
    finished = loop.create_future()
    reconnects: set[asyncio.Task[None]] = set()
    conns: list[_ProtocolConn] = []
    sent = 0

    def check_finished() -> None:
        if out.sent >= total and not finished.done():
            finished.set_result(None)

    def dispatch(index: int, due: float) -> None:
        while idle:
            conn = idle.popleft()
            if conn.transport is not None:
                conn.send(reqs[index % len(reqs)], due)
                return
            replace(conn)  # the server closed it while idle
        backlog.append((index, due))

    def on_done(conn: _ProtocolConn) -> None:
        if conn.transport is None:
            replace(conn)
        elif backlog:
            conn.send(reqs[backlog[0][0] % len(reqs)], backlog.popleft()[1])
        else:
            idle.append(conn)
        check_finished()

    def replace(conn: _ProtocolConn) -> None:
        conns.remove(conn)
        task = loop.create_task(reconnect())
        reconnects.add(task)
        task.add_done_callback(reconnects.discard)

    async def connect() -> _ProtocolConn:
        _, conn = await loop.create_connection(lambda: _ProtocolConn(on_done, out), HOST, port)
        return conn

    async def reconnect() -> None:
        while not finished.done():
            try:
                conn = await connect()
            except OSError as exc:
                # The request next in line cannot be sent: the server is not taking any.
                if backlog:
                    backlog.popleft()
                    out.no_answer(type(exc).__name__, partial=False)
                    check_finished()
                await asyncio.sleep(0.01)
                continue
            conns.append(conn)
            on_done(conn)
            return

    # Connect the whole pool before the clock starts, as wrk does: connections opened on
    # demand would put `pool` TCP handshakes into the first requests' latency.
    conns.extend(await asyncio.gather(*(connect() for _ in range(pool))))
    idle.extend(conns)
    t_start = time.perf_counter()

    def tick() -> None:
        nonlocal sent
        now = time.perf_counter()
        due_count = min(total, int((now - t_start) * rate) + 1)
        while sent < due_count:
            dispatch(sent, t_start + sent / rate)
            sent += 1
        if sent < total:
            loop.call_later(max(0.0, t_start + sent / rate - time.perf_counter()), tick)

    def sweep() -> None:  # requests past their timeout: count them and drop the connection
        now = time.perf_counter()
        for conn in list(conns):
            if conn.busy and now - conn.due > timeout and conn.transport is not None:
                conn.timed_out = True
                conn.transport.abort()
        while backlog and now - backlog[0][1] > timeout:
            backlog.popleft()
            out.no_answer("TimeoutError", partial=True)
        check_finished()
        if not finished.done():
            loop.call_later(0.1, sweep)

    if total == 0:
        finished.set_result(None)
    tick()
    sweep()
    await finished
    elapsed = time.perf_counter() - t_start
    for task in list(reconnects):
        task.cancel()
    for conn in conns:
        conn.close()
    return out, elapsed


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on uvloop when it is installed: the client then costs the machine less."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    with contextlib.suppress(ImportError):
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


# -- from another process ------------------------------------------------------------------


def pick_generator(choice: str) -> str:
    """``wrk`` (C, epoll) when asked or, for ``auto``, when it is on PATH; else ``python``."""
    if choice == "python" or (choice == "auto" and shutil.which("wrk") is None):
        return "python"
    if shutil.which("wrk") is None:
        raise SystemExit("--loadgen wrk: wrk is not on PATH (Debian: apt-get install wrk)")
    return "wrk"


def run(
    port: int,
    *,
    duration: float,
    concurrency: int | None = None,
    rate: float | None = None,
    timeout: float = 60.0,
    generator: str = "python",
    points: int = 1,
    env: dict[str, str] | None = None,
    path: str = "/predict",
    protocol: str = "predict",
) -> dict[str, Any]:
    """One load run against ``127.0.0.1:port`` from a child process: closed loop at
    ``concurrency`` (by wrk when ``generator`` is ``"wrk"``) or open loop at ``rate``.

    ``protocol`` shapes the bodies sent to ``path``: ``predict`` (our JSON), or, by wrk only,
    ``v1`` (TF Serving rows) and ``v2`` (Open Inference JSON)."""
    if concurrency and generator == "wrk":
        return _run_wrk(port, duration, concurrency, timeout, points, path, protocol)
    if protocol != "predict":
        raise SystemExit(f"protocol {protocol}: only wrk sends it (apt-get install wrk)")
    argv = [
        sys.executable, "-m", "bench._loadgen", "--port", str(port), "--duration", str(duration),
        "--timeout", str(timeout), "--points", str(points),
    ]  # fmt: skip
    argv += ["--concurrency", str(concurrency)] if concurrency else ["--rate", str(rate)]
    # B603: this package's own generator, from an argv list: no shell.
    done = subprocess.run(  # nosec B603
        argv, capture_output=True, text=True, env=env, cwd=ROOT, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"loadgen failed ({done.returncode}): {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def error_count(summary: dict[str, Any]) -> int:
    """Requests of a :func:`run` summary that did not end in a 200, whichever generator ran."""
    bad = sum(v for k, v in summary["statuses"].items() if k != "200")
    return int(bad + sum(summary["errors"].values()))


def _run_wrk(
    port: int,
    duration: float,
    concurrency: int,
    timeout: float,
    points: int,
    path: str = "/predict",
    protocol: str = "predict",
) -> dict[str, Any]:
    """One closed-loop run with wrk: one client thread, ``concurrency`` connections. It costs
    the machine less CPU per request than the Python client (docs/batching.md), which leaves
    more of a small machine to the server."""
    argv = wrk_argv(port, duration, concurrency, timeout, points, path, protocol)
    done = subprocess.run(argv, capture_output=True, text=True, check=False)  # nosec B603
    result = wrk_summary(done.returncode, done.stdout, done.stderr)
    result["concurrency"] = concurrency
    return result


def wrk_argv(
    port: int,
    duration: float,
    concurrency: int,
    timeout: float = 60.0,
    points: int = 1,
    path: str = "/predict",
    protocol: str = "predict",
) -> list[str]:
    """wrk's command line for a closed-loop run (whole seconds, as wrk takes them)."""
    return [
        "wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(duration))}s",
        f"--timeout={max(1, round(timeout))}s", "-s", str(WRK_SCRIPT),
        f"http://{HOST}:{port}{path}", "--", protocol, str(points),
    ]  # fmt: skip


def wrk_summary(returncode: int, stdout: str, stderr: str) -> dict[str, Any]:
    """The JSON summary ``bench/wrk/predict.lua`` prints; SystemExit when wrk failed."""
    lines = [line for line in stdout.splitlines() if line.startswith("JSON ")]
    if returncode != 0 or not lines:
        raise SystemExit(f"wrk failed ({returncode}): {(stderr or stdout)[-2000:]}")
    result: dict[str, Any] = json.loads(lines[-1].removeprefix("JSON "))
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="/predict")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--concurrency", type=int, help="closed loop with this many connections")
    mode.add_argument("--rate", type=float, help="open loop at this many requests per second")
    p.add_argument("--duration", type=float, default=5.0, help="seconds of load (default 5)")
    p.add_argument("--timeout", type=float, default=30.0, help="per-request timeout, s")
    p.add_argument("--pool", type=int, default=128, help="open loop: connections (default 128)")
    p.add_argument("--points", type=int, default=1, help="points per request (default 1)")
    args = p.parse_args(argv)
    if not 0 < args.duration <= 600:
        p.error("--duration must be in (0, 600] seconds")
    if not 1 <= args.points <= 10_000:
        p.error("--points must be in [1, 10000]")
    if args.concurrency is not None:
        if not 1 <= args.concurrency <= 4096:
            p.error("--concurrency must be in [1, 4096]")
        out, elapsed = run_async(
            closed_loop(
                args.port, args.concurrency, args.duration, timeout=args.timeout,
                path=args.path, points=args.points,
            )
        )  # fmt: skip
        info: dict[str, Any] = {"concurrency": args.concurrency}
    else:
        if not 0 < args.rate <= 100_000:
            p.error("--rate must be in (0, 100000] requests per second")
        if not 1 <= args.pool <= 4096:
            p.error("--pool must be in [1, 4096]")
        out, elapsed = run_async(
            open_loop(
                args.port, args.rate, args.duration, timeout=args.timeout, pool=args.pool,
                path=args.path, points=args.points,
            )
        )  # fmt: skip
        info = {"rate": args.rate}
    json.dump(info | out.summary(elapsed), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
