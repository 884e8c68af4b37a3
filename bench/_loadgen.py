"""A small HTTP/1.1 load generator for 127.0.0.1: closed loop (concurrency) or open loop (rate).

Run it in its own process so its CPU use is not mistaken for the server's::

    python bench/_loadgen.py --port 8000 --concurrency 32 --duration 5
    python bench/_loadgen.py --port 8000 --rate 800 --duration 5

It prints one JSON object: requests, errors by status, req/s, latency p50/p90/p99/max in ms.
Requests are pre-encoded single-point ``POST /predict`` bodies over keep-alive connections;
the client does no JSON work per request, so it costs the machine far less than the server.

* **Closed loop** (``--concurrency C``): C connections, each sends its next request as soon
  as the previous answer arrives. Measures peak throughput at that concurrency.
* **Open loop** (``--rate R``): requests are due at fixed instants R per second whatever the
  server does, and latency counts from the due instant, so a stalled server cannot hide its
  stall by slowing the client down (no coordinated omission).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

T = TypeVar("T")
LOCALHOSTS = {"127.0.0.1", "localhost", "::1"}


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)


def build_requests(host: str, port: int, path: str, count: int, seed: int) -> list[bytes]:
    """Distinct single-point bodies, so nothing in the server can get away with a cache."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        x, y = rng.uniform(-1, 1), rng.uniform(-1, 1)
        body = json.dumps({"points": [{"x": round(x, 6), "y": round(y, 6)}]}).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
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


class Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def request(self, raw: bytes, timeout: float) -> int:
        if self.writer is None:
            await self.connect()
        assert self.reader is not None and self.writer is not None
        try:
            self.writer.write(raw)
            async with asyncio.timeout(timeout):
                status, keep_alive = await read_response(self.reader)
        except BaseException:
            self.close()
            raise
        if not keep_alive:
            self.close()
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def closed_loop(
    host: str, port: int, reqs: list[bytes], concurrency: int, duration: float, timeout: float
) -> tuple[Tally, float]:
    tally = Tally()
    t_start = time.perf_counter()
    t_end = t_start + duration

    async def worker(i: int) -> None:
        conn = Connection(host, port)
        n = i
        try:
            while time.perf_counter() < t_end:
                raw = reqs[n % len(reqs)]
                n += concurrency
                t0 = time.perf_counter()
                try:
                    status = await conn.request(raw, timeout)
                except Exception as exc:
                    tally.failures[type(exc).__name__] += 1
                    await asyncio.sleep(0.01)
                    continue
                tally.latencies.append(time.perf_counter() - t0)
                tally.statuses[status] += 1
        finally:
            conn.close()

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return tally, time.perf_counter() - t_start


class _ProtocolConn(asyncio.Protocol):
    """One keep-alive connection driven by callbacks, for the open loop: no task, stream or
    queue per request, which keeps the generator's own CPU (and so its share of a 2-core
    machine, and the scheduling delays it causes the server) small."""

    def __init__(self, on_answer: Callable[[_ProtocolConn, int | None], None]) -> None:
        self.on_answer = on_answer
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.due = 0.0
        self.busy = False
        self.timed_out = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def send(self, raw: bytes, due: float) -> None:
        assert self.transport is not None
        self.due, self.busy = due, True
        self.transport.write(raw)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        marker = head.find(b"\r\ncontent-length:")
        if marker < 0:  # chunked or close-delimited: not what the service sends
            self.fail("no Content-Length")
            return
        stop = head.find(b"\r\n", marker + 2)
        length = int(head[marker + 17 : stop if stop >= 0 else None])
        if len(self.buffer) < end + 4 + length:
            return
        del self.buffer[: end + 4 + length]
        self.busy = False
        if b"\r\nconnection: close" in head:
            self.fail(None)  # before the callback, which then replaces this connection
        self.on_answer(self, int(head[9:12]))

    def fail(self, _reason: str | None) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.busy:
            self.busy = False
            self.on_answer(self, None)


async def open_loop(
    host: str, port: int, reqs: list[bytes], rate: float, duration: float, timeout: float, pool: int
) -> tuple[Tally, float]:
    """Requests due at ``t0 + i / rate``; each goes out on an idle connection at its due time
    (or, if all ``pool`` are busy, on the first that frees up) and its latency counts from the
    due time, so a stalled server cannot hide its stall by slowing the client down."""
    loop = asyncio.get_running_loop()
    tally = Tally()
    total = int(rate * duration)
    idle: deque[_ProtocolConn] = deque()
    backlog: deque[tuple[int, float]] = deque()  # (index, due) of requests waiting for a conn
    finished = loop.create_future()
    reconnects: set[asyncio.Task[None]] = set()
    conns: list[_ProtocolConn] = []
    answered = 0
    sent = 0

    def on_answer(conn: _ProtocolConn, status: int | None) -> None:
        nonlocal answered
        answered += 1
        if status is None:
            tally.failures["TimeoutError" if conn.timed_out else "ConnectionLost"] += 1
        else:
            tally.latencies.append(time.perf_counter() - conn.due)
            tally.statuses[status] += 1
        if conn.transport is None:  # lost: replace it, keeping the pool's size
            task = loop.create_task(reconnect())
            reconnects.add(task)
            task.add_done_callback(reconnects.discard)
        elif backlog:
            index, due = backlog.popleft()
            conn.send(reqs[index % len(reqs)], due)
        else:
            idle.append(conn)
        if answered >= total and not finished.done():
            finished.set_result(None)

    async def connect() -> _ProtocolConn:
        _, conn = await loop.create_connection(lambda: _ProtocolConn(on_answer), host, port)
        return conn

    async def reconnect() -> None:
        try:
            conn = await connect()
        except OSError:
            tally.failures["ConnectError"] += 1
            return
        conns.append(conn)
        if backlog:
            index, due = backlog.popleft()
            conn.send(reqs[index % len(reqs)], due)
        else:
            idle.append(conn)

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
            due = t_start + sent / rate
            if idle:
                idle.popleft().send(reqs[sent % len(reqs)], due)
            else:
                backlog.append((sent, due))
            sent += 1
        if sent < total:
            loop.call_later(max(0.0, t_start + sent / rate - time.perf_counter()), tick)

    def sweep() -> None:  # requests past their timeout: count them and drop the connection
        now = time.perf_counter()
        for conn in conns:
            if conn.busy and now - conn.due > timeout and conn.transport is not None:
                conn.timed_out = True
                conn.transport.abort()
        if not finished.done():
            loop.call_later(0.1, sweep)

    tick()
    sweep()
    await finished
    elapsed = time.perf_counter() - t_start
    for conn in conns:
        conn.fail(None)
    return tally, elapsed


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


def summarize(tally: Tally, elapsed: float, mode: dict[str, Any]) -> dict[str, Any]:
    lat = sorted(tally.latencies)
    ok = tally.statuses.get(200, 0)
    return {
        **mode,
        "requests": len(lat),
        "ok": ok,
        "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
        "failures": dict(tally.failures),
        "seconds": round(elapsed, 3),
        "rps": ok / elapsed if elapsed > 0 else 0.0,
        "p50_ms": percentile(lat, 50) * 1e3,
        "p90_ms": percentile(lat, 90) * 1e3,
        "p99_ms": percentile(lat, 99) * 1e3,
        "max_ms": (lat[-1] if lat else float("nan")) * 1e3,
    }


def run(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on uvloop when it is installed: the client then costs the machine less."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    with contextlib.suppress(ImportError):
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="/predict")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--concurrency", type=int, help="closed loop with this many connections")
    mode.add_argument("--rate", type=float, help="open loop at this many requests per second")
    p.add_argument("--duration", type=float, default=5.0, help="seconds of load (default 5)")
    p.add_argument("--timeout", type=float, default=30.0, help="per-request timeout, s")
    p.add_argument("--pool", type=int, default=128, help="open loop: connections (default 128)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.host not in LOCALHOSTS:
        p.error("--host must be a loopback address: this tool only loads servers on this machine")
    if not 0 < args.duration <= 600:
        p.error("--duration must be in (0, 600] seconds")

    reqs = build_requests(args.host, args.port, args.path, 256, args.seed)
    if args.concurrency is not None:
        if not 1 <= args.concurrency <= 4096:
            p.error("--concurrency must be in [1, 4096]")
        tally, elapsed = run(
            closed_loop(args.host, args.port, reqs, args.concurrency, args.duration, args.timeout)
        )
        info: dict[str, Any] = {"concurrency": args.concurrency}
    else:
        if not 0 < args.rate <= 100_000:
            p.error("--rate must be in (0, 100000] requests per second")
        tally, elapsed = run(
            open_loop(args.host, args.port, reqs, args.rate, args.duration, args.timeout, args.pool)
        )
        info = {"rate": args.rate}
    json.dump(summarize(tally, elapsed, info), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
