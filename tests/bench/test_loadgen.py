"""The shared load client (``bench/_loadgen.py``): each request's outcome, in both loops,
against a real HTTP/1.1 server on 127.0.0.1 whose answer each path decides."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bench._loadgen import Outcomes, build_requests, closed_loop, error_count, open_loop
from bench._metrics import metric


def _answer(status: int, body: bytes = b"{}") -> bytes:
    return (
        f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """/ok 200, /busy 503, /boom 500, /partial half an answer then close, /close closes
    without a byte, /never keeps the request unanswered."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            path = head.split(b" ", 2)[1]
            if path == b"/ok":
                writer.write(_answer(200))
            elif path == b"/busy":
                writer.write(_answer(503))
            elif path == b"/boom":
                writer.write(_answer(500))
            elif path == b"/partial":
                writer.write(_answer(200, b"{" * 100)[:-60])
                await writer.drain()
                break
            elif path == b"/close":
                break
            else:
                await reader.read()  # until the client gives up and closes
                break
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


@pytest.fixture
async def port() -> AsyncIterator[int]:
    server = await asyncio.start_server(_serve, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


def test_requests_are_distinct_and_carry_their_points() -> None:
    reqs = build_requests(8000, path="/predict", count=16, seed=1, points=3)
    assert len(set(reqs)) == 16
    head, body = reqs[0].split(b"\r\n\r\n")
    assert head.startswith(b"POST /predict HTTP/1.1") and f"{len(body)}".encode() in head
    assert body.count(b'"x"') == 3


@pytest.mark.parametrize(
    ("path", "outcome"),
    [("/ok", "ok"), ("/busy", "refused"), ("/boom", "failed"), ("/partial", "lost"),
     ("/close", "refused")],
)  # fmt: skip
async def test_closed_loop_outcomes(port: int, path: str, outcome: str) -> None:
    out, seconds = await closed_loop(port, 2, 0.3, path=path, timeout=5)
    summary = out.summary(seconds)
    assert summary["sent"] > 0
    assert summary[outcome] == summary["sent"], summary
    assert error_count(summary) == (0 if outcome == "ok" else summary["sent"]), summary


async def test_closed_loop_stops_on_its_event(port: int) -> None:
    stop = asyncio.Event()
    load = asyncio.create_task(closed_loop(port, 4, 600, path="/ok", stop=stop))
    await asyncio.sleep(0.2)  # some load first; the check is only that the loop ends
    stop.set()
    out, _ = await asyncio.wait_for(load, 30)
    assert out.failed == out.lost == 0


async def test_closed_loop_times_out_as_lost(port: int) -> None:
    out, _ = await closed_loop(port, 2, 0.1, path="/never", timeout=0.2)
    assert out.lost == out.sent == 2 and out.errors["TimeoutError"] == 2


@pytest.mark.parametrize(
    ("path", "outcome"),
    [("/ok", "ok"), ("/busy", "refused"), ("/boom", "failed"), ("/partial", "lost"),
     ("/close", "refused"), ("/never", "lost")],
)  # fmt: skip
async def test_open_loop_accounts_for_every_request(port: int, path: str, outcome: str) -> None:
    # 40 requests due over 0.2 s on 4 connections: each ends in exactly one outcome, the ones
    # whose connection was closed or timed out on a fresh connection.
    out, seconds = await open_loop(port, 200, 0.2, pool=4, path=path, timeout=0.5)
    summary = out.summary(seconds)
    assert summary["sent"] == 40, summary
    assert summary[outcome] == 40, summary
    assert len(out.send_lags) >= 4


def test_outcomes_classify_statuses() -> None:
    out = Outcomes()
    for status in (200, 200, 429, 503, 500, 504):
        out.answered(status, 0.01, 0.005)
    out.no_answer("closed", partial=False)
    out.no_answer("TimeoutError", partial=True)
    s = out.summary(1.0)
    assert (s["ok"], s["refused"], s["failed"], s["lost"], s["sent"]) == (2, 3, 2, 1, 8)
    assert s["statuses"] == {"200": 2, "429": 1, "500": 1, "503": 1, "504": 1}
    assert s["rps"] == 2.0 and s["p50_ms"] == pytest.approx(10.0)


def test_metric_sums_matching_samples_with_prometheus_parser() -> None:
    text = (
        "# HELP req_total Requests.\n# TYPE req_total counter\n"
        'req_total{route="/predict",status="200"} 3.0\n'
        'req_total{route="/predict",status="429"} 2.0\n'
        'req_total{route="/other",status="200"} 5.0\n'
        "# HELP q Queue.\n# TYPE q gauge\nq 7.0\n"
    )
    assert metric(text, "req_total", route="/predict") == 5.0
    assert metric(text, "req_total", status="200") == 8.0
    assert metric(text, "q") == 7.0
    assert metric(text, "missing_total") == 0.0
