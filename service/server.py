"""uvicorn's httptools connection protocol, hardened against slow and oversized request heads.

Stock uvicorn (0.54) arms its keep-alive timer only after a response and cancels it on any byte
received, so a client that connects and sends nothing, or sends its headers a byte at a time,
holds a connection (a file descriptor and a task) forever; it also buffers a request head of
any size (a 20 MB header line costs seconds of CPU in httptools' concatenation) and answers a
malformed request with ``text/plain``. :class:`HardenedHttpToolsProtocol` adds, per connection:

* **head timeout**: from the connection opening, or the end of the previous response, to the
  end of the next request's headers at most ``timeout_keep_alive`` seconds (our setting
  ``header_timeout_s``). A partial head gets ``408`` then close; an idle connection is closed.
  The same clock bounds the discarding of a body the app refused without reading (413), which
  uvicorn keeps reading so the client can still see the answer;
* **head size**: more than :data:`MAX_HEAD_BYTES` of request line plus headers gets ``431``;
* **JSON errors**: a request httptools cannot parse gets ``400`` with our JSON error shape;
* **one write per answer**: the writes of one event-loop turn (uvicorn writes a response's
  head and body separately) leave in one ``write`` syscall (:class:`_OneWritePerTurn`).

Slow *bodies* are bounded by the ASGI middleware (``body_timeout_s``), which knows the route.
uvicorn loads this class by its import string (``--http service.server:...``), in every worker.

**Private API.** This subclasses uvicorn's ``HttpToolsProtocol`` and overrides its parser
callbacks, none of which uvicorn documents or keeps stable, so ``pyproject.toml`` pins uvicorn
to the range these tests passed on (``>=0.54,<0.55``); moving the pin means re-running
``tests/hardening`` and ``tests/service/test_server.py`` on the new version first.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from service.deadlines import DeadlineSweeper
from service.security import API_HEADERS, NO_STORE

PROTOCOL = "service.server:HardenedHttpToolsProtocol"

MAX_HEAD_BYTES = 64 * 1024
"""Request line plus headers; nginx allows 32 KiB, Node.js 16 KiB. Counted per received
chunk, so the real cut-off lies within one socket read (<= 256 KiB) above it."""


class _HeadTooLarge(Exception):
    pass


def _head_too_large(size: int) -> str:
    return (
        f"request head: {size} bytes of request line and headers exceed the limit of "
        f"{MAX_HEAD_BYTES} bytes"
    )


def _error_body(code: str, message: str) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message}})


def _head_timed_out(protocol: HardenedHttpToolsProtocol) -> None:
    protocol._on_head_timeout()


# Every connection's head deadline on one timer per worker (the service's one deadline
# mechanism), created by the first connection, which knows the timeout.
_head_deadlines: DeadlineSweeper[HardenedHttpToolsProtocol] | None = None


class HardenedHttpToolsProtocol(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` plus a head timeout, a head size limit and JSON errors."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        global _head_deadlines
        super().__init__(*args, **kwargs)
        if _head_deadlines is None or _head_deadlines.tick > self._tick():
            _head_deadlines = DeadlineSweeper(self._tick(), _head_timed_out)
        self._deadlines = _head_deadlines
        self._in_head = False  # between the first byte of a request and its last header
        self._head_bytes = 0
        self._reject: tuple[int, str, str] | None = None

    # -- the head clock ------------------------------------------------------------------------

    def _tick(self) -> float:
        # The head deadline fires at most a tenth of the timeout late (and 1 s at most).
        return min(1.0, max(0.01, self.timeout_keep_alive / 10))

    def _arm_head_timer(self) -> None:
        self._deadlines.watch(self, time.monotonic() + self.timeout_keep_alive)

    def _cancel_head_timer(self) -> None:
        self._deadlines.unwatch(self)

    def _on_head_timeout(self) -> None:
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete and not self._in_head:
            return  # a request is being answered; its body has its own timeout
        if self._in_head:
            limit = self.timeout_keep_alive
            self._send_error(
                408,
                "request_timeout",
                f"request head not received within {limit:g} s (header_timeout_s)",
            )
        else:
            self.transport.close()

    # -- asyncio.Protocol / parser callbacks ---------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_OneWritePerTurn(transport, self.loop))  # type: ignore[arg-type]
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._send_error(
                    431, "request_header_fields_too_large", _head_too_large(self._head_bytes)
                )
                return
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = 0

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._cancel_head_timer()
        # Exact size of this head: data_received only sees it when it spans several reads.
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > MAX_HEAD_BYTES:
            self._reject = (431, "request_header_fields_too_large", _head_too_large(size))
            raise _HeadTooLarge  # httptools turns it into a parser error: send_400_response
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_timer()

    def send_400_response(self, msg: str) -> None:
        if self._reject is not None:
            self._send_error(*self._reject)
            return
        self._send_error(400, "bad_request", f"invalid HTTP request: {msg.rstrip('.')}")

    def _send_error(self, status: int, code: str, message: str) -> None:
        """Answer outside any request cycle (the head is incomplete or invalid), then close."""
        self._cancel_head_timer()
        if self.transport.is_closing():
            return
        body = _error_body(code, message)
        head = [STATUS_LINE[status]]
        for name, value in (*self.server_state.default_headers, *API_HEADERS, NO_STORE):
            head.extend([name, b": ", value, b"\r\n"])
        head.append(
            b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
            % len(body)
        )
        self.transport.write(b"".join(head) + body)
        self.transport.close()


class _OneWritePerTurn:
    """The connection's transport, with the writes of one event-loop turn sent as one.

    uvicorn writes a response's head and its body with two ``transport.write`` calls, and
    each goes straight to the socket: two ``send`` syscalls per answer, the largest single
    cost of a small response. Here they are joined and written once, at the end of the turn
    (``call_soon``). ``close`` sends what is pending first; everything else is the
    transport's own.
    """

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] | None = None

    def write(self, data: bytes) -> None:
        if self._pending is None:
            self._pending = [data]
            self._loop.call_soon(self._flush)
        else:
            self._pending.append(data)

    def _flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending = None
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
