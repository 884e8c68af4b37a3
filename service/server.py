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
* **a lean request cycle** (:class:`_LeanCycle`): uvicorn's ``RequestResponseCycle`` with the
  answer's head held back and written with its body in one ``write``, its headers checked
  for uvicorn's forbidden bytes in one pass over all names and one over all values instead
  of two regular-expression searches per header, and no ``asyncio.Event`` per request;
  every request runs through it, the ASGI app sees no difference;
* **the data lane**: a POST to a data route is answered through the app's
  :class:`~service.dataroutes.DataLane` (the front door's steps and the route's handler,
  no ASGI cycle), written whole by :meth:`_LeanCycle.run_lane`; everything else, and
  every request while anything wraps the app's dispatcher, goes through the ASGI app;
* **one write per answer, at the end of the turn**: what a connection writes in one
  event-loop turn leaves in one ``write`` syscall when the turn ends, one callback per turn
  for all connections (:class:`_OneWritePerTurn`);
* **no keep-alive timer per answer**: the head timeout above also closes an idle
  connection after ``timeout_keep_alive``, so uvicorn's own timer (a ``call_later`` and a
  cancel per request) is not armed.

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
import urllib.parse
from typing import Any

import httptools
import orjson
from uvicorn._types import ASGI3Application, ASGIReceiveEvent, ASGISendEvent
from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

from service.dataroutes import DataLane, Found
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
        self._head_bound = 0
        self._chunk = 0  # size of the read being parsed
        self._reject: tuple[int, str, str] | None = None

    # -- the head clock ------------------------------------------------------------------------

    def _tick(self) -> float:
        # The head deadline fires at most a tenth of the timeout late (and 1 s at most).
        return min(1.0, max(0.01, self.timeout_keep_alive / 10))

    def _arm_head_timer(self) -> None:
        self._deadlines.watch(self, time.monotonic() + self.timeout_keep_alive, self.loop)

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
        self._chunk = len(data)
        if self._in_head:
            self._head_bound += len(data)
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._send_error(
                    431, "request_header_fields_too_large", _head_too_large(self._head_bytes)
                )
                return
        # uvicorn's data_received, without cancelling its keep-alive timer: that timer is
        # never armed here (see on_response_complete).
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = 0
        # At least this head's size: the read it begins in, and every read until it ends.
        self._head_bound = self._chunk

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._cancel_head_timer()
        # Exact size of this head, when the reads it came in could hold a head too large
        # (data_received only counts it when it spans several reads).
        if self._head_bound <= MAX_HEAD_BYTES:
            size = 0
        else:
            size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
        if size > MAX_HEAD_BYTES:
            self._reject = (431, "request_header_fields_too_large", _head_too_large(size))
            raise _HeadTooLarge  # httptools turns it into a parser error: send_400_response
        self._start_cycle()

    def _start_cycle(self) -> None:
        """uvicorn's ``on_headers_complete`` (0.54), with a :class:`_LeanCycle` as the cycle."""
        parser = self.parser
        http_version = parser.get_http_version()
        scope: Any = self.scope
        scope["method"] = parser.get_method().decode("ascii")
        if http_version != "1.1":
            scope["http_version"] = http_version
        if parser.should_upgrade() and self._should_upgrade():
            return
        parsed_url = httptools.parse_url(self.url)
        raw_path = parsed_url.path
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        scope["path"] = self.root_path + path
        scope["raw_path"] = self.root_path.encode("ascii") + raw_path
        scope["query_string"] = parsed_url.query or b""
        app: ASGI3Application = self.app
        limit = self.limit_concurrency
        if limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit):
            app = service_unavailable
            self.logger.warning("Exceeded concurrency limit.")
        existing = self.cycle
        self.cycle = _LeanCycle(
            scope,
            self,
            keep_alive=http_version != "1.0" and parser.should_keep_alive(),
            expect_100_continue=self.expect_100_continue,
        )
        if existing is None or existing.response_complete:
            lane: DataLane | None = getattr(app, "data_lane", None)
            found = lane.find(scope) if lane is not None and scope["method"] == "POST" else None
            if found is not None:
                assert lane is not None
                task = self.loop.create_task(self.cycle.run_lane(lane, found))
                task.add_done_callback(self.tasks.discard)
                self.tasks.add(task)
            else:
                self._start_asgi_task(self.cycle, app)
        else:  # pipelined: queued until the answer in progress is complete
            self.flow.pause_reading()
            self.pipeline.appendleft((self.cycle, app))

    def on_response_complete(self) -> None:
        """uvicorn's, without its keep-alive timer: the head timer armed here closes an idle
        connection after the same ``timeout_keep_alive``."""
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
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


# The bytes uvicorn's two header checks refuse (each is one character class), for a check
# of all names (values) at once: deleting them must leave the joined bytes as they were.
_BAD_NAME_BYTES = bytes(b for b in range(256) if HEADER_RE.fullmatch(bytes([b])))
_BAD_VALUE_BYTES = bytes(b for b in range(256) if HEADER_VALUE_RE.fullmatch(bytes([b])))


_HEADER_PREFIXES: dict[bytes, bytes] = {}
"""``name: `` of every header name seen in an answer, as sent (lower case), once checked."""
_CONNECTION = b"connection: "
_CONTENT_LENGTH = b"content-length: "
_HEADER_LINES: dict[tuple[bytes, bytes], bytes] = {}
"""``name: value\r\n`` of the (name, value) pairs answers repeat (the content type, the
security headers), once checked: written without being checked again. Bounded; the headers
whose value changes from answer to answer are never kept (:data:`_UNCACHED_PREFIXES`)."""
_UNCACHED_PREFIXES = {_CONNECTION, _CONTENT_LENGTH, b"x-request-id: "}


def _header_prefix(name: bytes) -> bytes:
    if len(name.translate(None, _BAD_NAME_BYTES)) != len(name) or not name:
        raise RuntimeError("Invalid HTTP header name.")
    prefix = name.lower() + b": "
    for known in (_CONNECTION, _CONTENT_LENGTH):
        if prefix == known:
            prefix = known  # the one object, compared by identity
    if len(_HEADER_PREFIXES) < 1024:  # names come from the app's code, not from clients
        _HEADER_PREFIXES[name] = prefix
    return prefix


_defaults: tuple[object, bytes] = (None, b"")


def _default_lines(headers: list[tuple[bytes, bytes]]) -> bytes:
    """uvicorn's default headers (``date``, ``server``) as lines; uvicorn replaces the list
    once a second, so they are joined once per list, not once per answer."""
    global _defaults
    if _defaults[0] is not headers:
        _defaults = (headers, b"".join([name + b": " + value + b"\r\n" for name, value in headers]))
    return _defaults[1]


def _nothing() -> None:
    pass


class _LeanEvent:
    """What uvicorn's cycle uses of an ``asyncio.Event`` (set, clear, wait), with the waiter
    future made only when ``wait`` must actually wait, which a request whose body came with
    its head never does."""

    __slots__ = ("_loop", "_set", "_waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._set = False
        self._waiter: asyncio.Future[None] | None = None

    def set(self) -> None:
        self._set = True
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        if not self._set:
            if self._waiter is None:
                self._waiter = self._loop.create_future()
            await self._waiter
        return True


class _LeanCycle(RequestResponseCycle):
    """uvicorn's request cycle (its ``run_asgi``, ``receive`` and 500 fallback), with a
    cheaper answer path.

    ``send`` holds the response head until the first body message and writes both in one
    ``write``; the headers are refused for the same bytes as uvicorn's two checks refuse,
    looked for once in all names and once in all values (``bytes.translate``) rather than
    with two regular-expression searches per header. Behaviour is uvicorn's: ``Content-Length`` is
    enforced, a head without it is sent chunked, ``Connection: close`` ends the keep-alive,
    a ``HEAD`` answer carries no body.
    """

    def __init__(
        self,
        scope: Any,
        protocol: HardenedHttpToolsProtocol,
        *,
        keep_alive: bool,
        expect_100_continue: bool,
    ) -> None:
        # RequestResponseCycle.__init__'s attributes, set directly (no asyncio.Event).
        self.scope = scope
        self.transport = protocol.transport
        self.flow = protocol.flow
        self.logger = protocol.logger
        self.access_logger = protocol.access_logger
        self.access_log = protocol.access_log
        self.default_headers = protocol.server_state.default_headers
        self.message_event = _LeanEvent(protocol.loop)  # type: ignore[assignment]
        self.on_response = protocol.on_response_complete
        self.keep_alive = keep_alive
        self.waiting_for_100_continue = expect_100_continue
        self.body = bytearray()
        # disconnected, more_body, response_started, response_complete, chunked_encoding,
        # expected_content_length and _start start as the class's values (below).

    disconnected = False
    more_body = True
    response_started = False
    response_complete = False
    chunked_encoding: bool | None = None
    expected_content_length = 0
    _start: ASGISendEvent | None = None

    async def send(self, message: ASGISendEvent) -> None:
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected:
            return
        kind = message["type"]
        if not self.response_started:
            if kind != "http.response.start":
                raise RuntimeError(f"Expected ASGI message 'http.response.start', got '{kind}'.")
            self.response_started = True
            self.waiting_for_100_continue = False
            self._start = message  # written with the first body message
            return
        if self.response_complete or kind != "http.response.body":
            raise RuntimeError(f"Unexpected ASGI message '{kind}' sent at this point.")
        body: bytes = message.get("body", b"")  # type: ignore[assignment]
        more_body = message.get("more_body", False)
        out = self._head() if self._start is not None else []
        if self.scope["method"] == "HEAD":
            self.expected_content_length = 0
        elif self.chunked_encoding:
            if body:
                out += [b"%x\r\n" % len(body), body, b"\r\n"]
            if not more_body:
                out.append(b"0\r\n\r\n")
        else:
            if len(body) > self.expected_content_length:
                raise RuntimeError("Response content longer than Content-Length")
            self.expected_content_length -= len(body)
            out.append(body)
        self.transport.write(out[0] if len(out) == 1 else b"".join(out))
        if not more_body:
            if self.expected_content_length != 0:
                raise RuntimeError("Response content shorter than Content-Length")
            self.response_complete = True
            self.message_event.set()
            if not self.keep_alive:
                self.transport.close()
            self.on_response()

    async def run_lane(self, lane: DataLane, found: Found) -> None:
        """Answer a data route's POST in the lane (``DataLane``), the answer written whole in
        one ``write``: the counterpart of ``run_asgi``, with its error handling. A body that
        is all here by now (the usual case: it came with the head) is handed over as it is;
        otherwise the handler reads it through ``receive``, under the front door's limits."""
        try:
            scope: Any = self.scope
            receive: Any = self.receive
            body = None
            if not self.more_body and not self.disconnected:
                body = bytes(self.body)
                self.body = bytearray()
                self.message_event.clear()  # what is left for receive: the client leaving
            status, headers, out = await lane.answer(scope, found, receive, body)
            self._write_whole(status, headers, out)
        except BaseException as exc:
            self.logger.error("Exception in the data lane\n", exc_info=exc)
            if not self.response_started:
                await self.send_500_response()
            else:
                self.transport.close()
        finally:
            self.on_response = _nothing

    def _write_whole(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        """Write a whole answer at once (the lane's): :meth:`send`'s work for the one case of
        a complete body, without its two calls, message dicts and per-header lowercasing
        (measured: sending the lane's answers through :meth:`send` cost /predict 7% of its
        throughput). A missing ``Content-Length`` is added."""
        if self.disconnected:
            return
        self.response_started = True
        out = [STATUS_LINE[status], _default_lines(self.default_headers)]
        has_length = has_close = False
        for header in headers:
            try:
                line = _HEADER_LINES.get(header)
            except TypeError:  # a [name, value] list: fine, but never kept
                line = None
            if line is not None:  # a header every answer carries, checked before
                out.append(line)
                continue
            name, value = header
            prefix = _HEADER_PREFIXES.get(name) or _header_prefix(name)
            if prefix is _CONTENT_LENGTH:
                has_length = True
            elif prefix is _CONNECTION and b"close" in [
                token.lower().strip() for token in value.split(b",")
            ]:
                self.keep_alive = False
                has_close = True
            if len(value.translate(None, _BAD_VALUE_BYTES)) != len(value):
                raise RuntimeError("Invalid HTTP header value.")
            line = prefix + value + b"\r\n"
            out.append(line)
            if (
                prefix not in _UNCACHED_PREFIXES
                and type(header) is tuple
                and len(_HEADER_LINES) < 1024
            ):
                _HEADER_LINES[header] = line
        if not has_length:
            out.append(b"content-length: %d\r\n" % len(body))
        if not self.keep_alive and not has_close:
            out.append(b"connection: close\r\n")
        out += (b"\r\n", body)
        self.transport.write(b"".join(out))
        self.response_complete = True
        self.message_event.set()
        if not self.keep_alive:
            self.transport.close()
        self.on_response()

    def _head(self) -> list[bytes]:
        start = self._start
        assert start is not None
        self._start = None
        status: int = start["status"]  # type: ignore[typeddict-item]
        headers: list[tuple[bytes, bytes]] = list(start.get("headers", ()))  # type: ignore[call-overload]
        if self.access_log:
            self.access_logger.info(
                '%s - "%s %s HTTP/%s" %d',
                self.scope.get("client"),
                self.scope["method"],
                self.scope["path"],
                self.scope["http_version"],
                status,
            )
        names = b"".join([name for name, _ in headers])
        if len(names.translate(None, _BAD_NAME_BYTES)) != len(names):
            raise RuntimeError("Invalid HTTP header name.")
        values = b"".join([value for _, value in headers])
        if len(values.translate(None, _BAD_VALUE_BYTES)) != len(values):
            raise RuntimeError("Invalid HTTP header value.")
        content = [STATUS_LINE[status]]
        for name, value in self.default_headers:
            content += (name, b": ", value, b"\r\n")
        has_connection_close = False
        for name, value in headers:
            name = name.lower()
            if name == b"content-length" and self.chunked_encoding is None:
                self.expected_content_length = int(value.decode())
                self.chunked_encoding = False
            elif name == b"transfer-encoding" and value.lower() == b"chunked":
                self.expected_content_length = 0
                self.chunked_encoding = True
            elif name == b"connection" and b"close" in [
                token.lower().strip() for token in value.split(b",")
            ]:
                self.keep_alive = False
                has_connection_close = True
            content += (name, b": ", value, b"\r\n")
        if not self.keep_alive and not has_connection_close:
            content.append(b"connection: close\r\n")
        if (
            self.chunked_encoding is None
            and self.scope["method"] != "HEAD"
            and status not in (204, 304)
        ):
            self.chunked_encoding = True
            content.append(b"transfer-encoding: chunked\r\n")
        content.append(b"\r\n")
        return [b"".join(content)]

    async def receive(self) -> ASGIReceiveEvent:
        if self.waiting_for_100_continue and not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.waiting_for_100_continue = False
        if not self.disconnected and not self.response_complete:
            self.flow.resume_reading()
            await self.message_event.wait()
            self.message_event.clear()
        if self.disconnected or self.response_complete:
            return {"type": "http.disconnect"}
        message: ASGIReceiveEvent = {
            "type": "http.request",
            "body": bytes(self.body),
            "more_body": self.more_body,
        }
        self.body = bytearray()
        return message


class _OneWritePerTurn:
    """The connection's transport, with the writes of one event-loop turn sent as one, when
    the turn ends.

    Writing an answer the moment it is ready wakes its client while the server still
    answers the rest of the turn's batch, and the loop then handles the next requests in
    more, smaller turns (measured: 13 us of server CPU per request more; docs/batching.md).
    So a write is held and sent at the end of the turn, joined with any other write of the
    same turn, by one callback per turn for every connection of the loop (:class:`_Flusher`).
    ``close`` sends what is pending first; everything else is the transport's own.
    """

    __slots__ = ("_flusher", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._flusher = _Flusher.of(loop)
        self._pending: list[bytes] | None = None

    def write(self, data: bytes) -> None:
        if self._pending is None:
            self._pending = [data]
            self._flusher.add(self)
        else:
            self._pending.append(data)

    def flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def is_closing(self) -> bool:  # asked several times per request: no __getattr__ detour
        return self._transport.is_closing()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending = None
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _Flusher:
    """The connections with writes pending in this turn of one loop, flushed by one
    ``call_soon`` callback, which runs after everything the turn has already scheduled."""

    __slots__ = ("_loop", "_pending")

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> _Flusher:
        flusher = _flushers.get(loop)
        if flusher is None:
            for old in [other for other in _flushers if other.is_closed()]:
                del _flushers[old]  # tests run servers on many loops
            flusher = _flushers[loop] = cls(loop)
        return flusher

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._pending: list[_OneWritePerTurn] = []

    def add(self, connection: _OneWritePerTurn) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(connection)

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        for connection in pending:
            connection.flush()


_flushers: dict[asyncio.AbstractEventLoop, _Flusher] = {}
