"""``service.server``'s HTTP protocol on a real socket, with small ASGI apps: the lean request
cycle frames every kind of answer as uvicorn does (Content-Length, chunked, HEAD, 204,
Connection: close, pipelining, a body that arrives late), refuses bad headers, and an idle
connection is still closed without uvicorn's keep-alive timer."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import uvicorn

from service.server import PROTOCOL

Scope = dict[str, Any]
App = Callable[[Scope, Any, Any], Awaitable[None]]
KEEP_ALIVE_S = 0.5


async def app(scope: Scope, receive: Any, send: Any) -> None:
    """``/echo`` answers the body; ``/stream`` two chunks, no length; ``/empty`` a 204;
    ``/close`` asks to close; ``/bad-header`` sends a header value with a newline;
    ``/short`` declares more bytes than it sends."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    path = scope["path"]
    start: dict[str, Any] = {"type": "http.response.start", "status": 200, "headers": []}
    if path == "/stream":
        await send(start)
        await send({"type": "http.response.body", "body": b"one,", "more_body": True})
        await send({"type": "http.response.body", "body": b"two"})
        return
    if path == "/empty":
        await send({**start, "status": 204})
        await send({"type": "http.response.body"})
        return
    headers = [(b"Content-Length", b"%d" % len(body)), (b"X-Echo", b"yes")]
    if path == "/close":
        headers.append((b"connection", b"close"))
    elif path == "/bad-header":
        headers.append((b"x-injected", b"a\r\nset-cookie: x=1"))
    elif path == "/short":
        headers[0] = (b"content-length", b"%d" % (len(body) + 5))
    await send({**start, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def address() -> Iterator[tuple[str, int]]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        http=PROTOCOL,
        lifespan="off",
        log_level="critical",
        access_log=False,
        timeout_keep_alive=KEEP_ALIVE_S,  # type: ignore[arg-type]
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.01)
    yield "127.0.0.1", port
    server.should_exit = True
    thread.join(10)


def request(method: str, path: str, body: bytes = b"") -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


def read_until_closed(sock: socket.socket, timeout: float = 5.0) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def read_answers(sock: socket.socket, n: int) -> list[tuple[str, dict[str, str], bytes]]:
    """``n`` answers with a Content-Length (or none: 204) off one keep-alive connection."""
    sock.settimeout(5.0)
    buffer = b""
    answers: list[tuple[str, dict[str, str], bytes]] = []
    while len(answers) < n:
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {len(answers)} answers: {buffer!r}"
            buffer += chunk
        head, buffer = buffer.split(b"\r\n\r\n", 1)
        status, *lines = head.decode().split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines)
        length = int(headers.get("content-length", 0))
        while len(buffer) < length:
            buffer += sock.recv(65536)
        answers.append((status, headers, buffer[:length]))
        buffer = buffer[length:]
    return answers


def test_answers_with_a_length_keep_the_connection(address: tuple[str, int]) -> None:
    with socket.create_connection(address) as sock:
        for body in (b"first", b"", b"x" * 100_000):
            sock.sendall(request("POST", "/echo", body))
            [(status, headers, got)] = read_answers(sock, 1)
            assert status == "HTTP/1.1 200 OK"
            assert got == body
            # Names are sent in lower case, as uvicorn does; the server's date comes first.
            assert headers["x-echo"] == "yes" and "date" in headers
            assert "transfer-encoding" not in headers and "connection" not in headers


def test_pipelined_requests_are_answered_in_order(address: tuple[str, int]) -> None:
    with socket.create_connection(address) as sock:
        sock.sendall(b"".join(request("POST", "/echo", b"%d" % i) for i in range(5)))
        answers = read_answers(sock, 5)
    assert [body for _, _, body in answers] == [b"0", b"1", b"2", b"3", b"4"]


def test_a_body_that_comes_late_is_waited_for(address: tuple[str, int]) -> None:
    head = b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n"
    with socket.create_connection(address) as sock:
        sock.sendall(head + b"hello")
        time.sleep(0.2)
        sock.sendall(b"world")
        [(status, _, body)] = read_answers(sock, 1)
    assert status == "HTTP/1.1 200 OK" and body == b"helloworld"


def test_an_answer_without_a_length_is_chunked(address: tuple[str, int]) -> None:
    with socket.create_connection(address) as sock:
        sock.sendall(request("POST", "/stream") + b"GET /stream HTTP/1.0\r\n\r\n")
        data = read_until_closed(sock)
    first, second = data.split(b"HTTP/1.1 200 OK")[1:]
    assert b"transfer-encoding: chunked" in first
    assert first.endswith(b"\r\n\r\n4\r\none,\r\n3\r\ntwo\r\n0\r\n\r\n")
    # HTTP/1.0 cannot keep the connection: it is closed after the answer, as uvicorn does.
    assert b"connection: close" in second


def test_head_and_204_answers_carry_no_body(address: tuple[str, int]) -> None:
    with socket.create_connection(address) as sock:
        sock.sendall(request("HEAD", "/echo") + request("POST", "/empty"))
        (status, headers, body), (status2, headers2, body2) = read_answers(sock, 2)
    assert status == "HTTP/1.1 200 OK" and headers["content-length"] == "0" and body == b""
    assert status2 == "HTTP/1.1 204 No Content" and "transfer-encoding" not in headers2
    assert body2 == b""


def test_connection_close_from_the_app_closes_after_the_answer(address: tuple[str, int]) -> None:
    with socket.create_connection(address) as sock:
        sock.sendall(request("POST", "/close", b"bye"))
        data = read_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 200 OK") and data.endswith(b"\r\n\r\nbye")
    assert data.count(b"connection: close") == 1


@pytest.mark.parametrize("path", ["/bad-header", "/short"])
def test_a_broken_answer_is_never_sent(address: tuple[str, int], path: str) -> None:
    """A header value with a line break, or a body shorter than its Content-Length: the
    connection is closed and nothing injected reaches the client."""
    with socket.create_connection(address) as sock:
        sock.sendall(request("POST", path, b"body"))
        data = read_until_closed(sock)
    assert b"set-cookie" not in data
    if path == "/bad-header":
        assert data == b""  # the head is checked before anything is written
    # The server is still fine.
    with socket.create_connection(address) as sock:
        sock.sendall(request("POST", "/echo", b"ok"))
        assert read_answers(sock, 1)[0][2] == b"ok"


def test_an_idle_connection_is_closed_after_the_keep_alive_timeout(
    address: tuple[str, int],
) -> None:
    with socket.create_connection(address) as sock:
        sock.sendall(request("POST", "/echo", b"once"))
        assert read_answers(sock, 1)[0][2] == b"once"
        started = time.monotonic()
        assert read_until_closed(sock, timeout=10 * KEEP_ALIVE_S) == b""
        assert time.monotonic() - started < 5 * KEEP_ALIVE_S


async def test_the_writes_of_a_turn_leave_as_one_per_connection() -> None:
    """uvicorn-style separate writes of head and body, on two connections: each connection's
    socket sees one write, both at the end of the turn; a close sends what is pending."""
    from service.server import _OneWritePerTurn

    loop = asyncio.get_running_loop()
    inner = [_RecordingTransport(), _RecordingTransport()]
    outer = [_OneWritePerTurn(t, loop) for t in inner]  # type: ignore[arg-type]
    for i, transport in enumerate(outer):
        transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
        transport.write(b"%d" % i)
    assert inner[0].writes == inner[1].writes == []
    flushed = loop.create_future()
    loop.call_soon(flushed.set_result, None)  # runs after the flush queued by the first write
    await flushed
    assert inner[0].writes == [b"HTTP/1.1 200 OK\r\n\r\n0"]
    assert inner[1].writes == [b"HTTP/1.1 200 OK\r\n\r\n1"]
    outer[0].write(b"last")
    outer[0].close()
    assert inner[0].writes[-1] == b"last" and inner[0].closed
    assert outer[0].get_extra_info("peername") == "info:peername"


class _RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"
