"""The front door: one pure-ASGI layer around everything the service answers, and the
extension points (:class:`Hooks`) that apply to every route, fast or framework-routed.

Pure ASGI rather than Starlette's BaseHTTPMiddleware: no task and no stream copy per request.
It imports no route: the app factory puts it outside the data-plane dispatcher
(``service.dataroutes``) and FastAPI's middleware stack, so what it does, every answer gets.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import metrics
from service.deadlines import DeadlineSweeper
from service.errors import (
    BadRequest,
    PayloadTooLarge,
    RequestTimeout,
    ServiceError,
    Unavailable,
)
from service.logging import request_id_var
from service.responses import (
    error_response,
    is_protocol_path,
    route_path,
    service_error_response,
    unexpected_error_response,
)

access_log = logging.getLogger("service.access")
# Access-log modes (Settings.access_log) -> the lowest status logged.
_ACCESS_LOG_MIN_STATUS = {"all": 0, "errors": 400, "off": 1000}

REQUEST_ID_HEADER = "x-request-id"
RETRY_AFTER_S = 1.0
"""Retry-After of every overload refusal (in-flight cap and full queue)."""
_CLIENT_CLOSED = 499
"""Status recorded (never sent) for a request whose client left before its body arrived."""
_random_bits = random.getrandbits


def accept_request_id(offered: str | None) -> str:
    """The caller's request id when it is well-formed, else a new one (every protocol).

    A new id is 32 random hex digits, as uuid4().hex but from the per-process Mersenne Twister
    (seeded from os.urandom, reseeded after fork): no syscall, which would release the GIL to
    the model thread mid-request. An id needs to be unique, not secret.
    """
    if offered and _VALID_REQUEST_ID.fullmatch(offered):
        return offered
    return f"{_random_bits(128):032x}"


# An incoming id is echoed only when it is short and plain, so it cannot inject log lines.
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")

_LENGTH, _REQUEST_ID, _ORIGIN, _PREFLIGHT = range(4)
_DOOR_HEADERS = {
    b"content-length": _LENGTH,
    b"x-request-id": _REQUEST_ID,
    b"origin": _ORIGIN,
    b"access-control-request-method": _PREFLIGHT,
}
"""The request headers the front door reads (lower case, as servers give them)."""

RequestHook = Callable[[Scope], Awaitable[None]]
ResponseHeadersHook = Callable[[Scope, list[tuple[bytes, bytes]]], None]


@dataclass
class Hooks:
    """The documented extension points; every request and every answer goes through them.

    * ``on_request``: awaited in order before the request reaches any route (after the
      in-flight cap, the declared-size check and CORS preflights): authentication, rate
      limits, tracing. Raise a :class:`~service.errors.ServiceError` to refuse; the answer
      is the protocol's JSON error, with CORS headers and the request id.
    * ``response_headers``: called with the scope and the header list of every answer
      (refusals and errors included) just before it is sent; append to add headers
      (security headers).

    Pass them to ``create_app(settings, hooks=Hooks(...))`` or append to
    ``app.state.hooks`` before the app serves.
    """

    on_request: list[RequestHook] = field(default_factory=list)
    response_headers: list[ResponseHeadersHook] = field(default_factory=list)


class Visit:
    """One request's state in the front door, from :meth:`ServiceMiddleware.enter` to
    :meth:`ServiceMiddleware.leave`."""

    __slots__ = (
        "counted",
        "declared",
        "extra",
        "method",
        "preflight",
        "request_id",
        "started",
        "status",
        "template",
        "token",
    )

    def __init__(
        self,
        started: float,
        method: str,
        request_id: str,
        extra: list[tuple[bytes, bytes]],
        declared: int | None,
        preflight: bool,
    ) -> None:
        self.started = started
        self.method = method
        self.request_id = request_id
        self.extra = extra
        """Headers every answer to this request carries (request id, CORS)."""
        self.declared = declared
        self.preflight = preflight
        self.status = 0
        """The answer's status once its head is sent; 0 before."""
        self.template: str | None = None
        """The metrics' route label when no route answered (a refusal)."""
        self.counted = False
        """True while the request holds an in-flight place."""
        self.token = request_id_var.set(request_id)


class ServiceMiddleware:
    """The outer layer: in-flight cap, request id, CORS, hooks, metrics, access log, body
    size limit and body deadline, for every request whichever route answers it.

    One layer rather than a stack of them: each pure-ASGI layer costs a coroutine frame, a
    ``send`` wrapper and a scope walk per request.

    **In-flight cap.** At most ``max_inflight_requests`` POST requests (the inference calls)
    are inside the app at once; the next one is answered a pre-built ``503`` with
    ``Retry-After`` before a byte of its body is read, and counted in
    ``xor_dnn_overload_refusals_total``. Under a storm the excess then costs next to nothing
    instead of a body parse, a validation and a queue slot, so refusals stay fast and the
    accepted requests keep a bounded latency. GETs (probes, metrics, docs) are never capped:
    a liveness probe must not fail because predictions are busy.

    **Body limit.** 413 for bodies over ``max_body_bytes`` and 408 for bodies slower than
    ``body_timeout_s``. A declared ``Content-Length`` over the limit is answered at once,
    without reading a byte; a chunked body is cut off as soon as it crosses the limit. The
    connection stays open: uvicorn discards the unread rest (bounded by the head timeout, see
    ``service.server``), so a client that sends its whole body before reading still gets the
    413 instead of a reset. The body deadline runs from the request head to the last body
    chunk; once the body is complete, ``receive`` passes through untimed.

    **CORS.** With ``cors_origins`` set, preflights are answered here and every answer to an
    allowed origin, this layer's own refusals included, carries the CORS headers, so a
    browser can read a 413 or a 503 and its ``Retry-After``.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        body_timeout_s: float = 10.0,
        max_inflight_requests: int = 0,
        access_log: str = "errors",
        root_path: str = "",
        cors_origins: list[str] | None = None,
        hooks: Hooks | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.max_inflight_requests = max_inflight_requests  # 0: no cap
        if access_log not in _ACCESS_LOG_MIN_STATUS:
            raise ValueError(f"access_log must be one of {sorted(_ACCESS_LOG_MIN_STATUS)}")
        # Requests answered with at least this status get an access-log line.
        self.log_min_status = _ACCESS_LOG_MIN_STATUS[access_log]
        self.root_path = root_path
        self.hooks = hooks if hooks is not None else Hooks()
        self.cors = Cors(cors_origins) if cors_origins else None
        self.watchdog = BodyWatchdog(tick=min(1.0, max(0.01, body_timeout_s / 10)))
        self.inflight = 0
        error = Unavailable(
            f"overloaded: {max_inflight_requests} requests already in flight "
            "(max_inflight_requests); retry later",
            retry_after=RETRY_AFTER_S,
        )
        error.code = "overloaded"
        # Built once: a refusal under a storm must cost next to nothing.
        self._refusals = {
            protocol: _prebuilt(error_response(error, "/v1/" if protocol else "/predict"))
            for protocol in (False, True)
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        visit = self.enter(scope)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                visit.status = message["status"]
                headers = [*message.get("headers", ())]
                self.answer_headers(visit, scope, headers)
                message["headers"] = headers
            await send(message)

        try:
            try:
                if not self.admit(visit):
                    await self._refuse(scope, send_with_headers)
                    return
                if visit.preflight:
                    assert self.cors is not None
                    await self.cors.preflight(scope)(scope, receive, send_with_headers)
                    return
                for hook in self.hooks.on_request:
                    await hook(scope)
                await self.app(scope, self.limited(receive), send_with_headers)
            except ServiceError as exc:
                if visit.status:
                    raise
                await service_error_response(exc, scope)(scope, receive, send_with_headers)
            except ClientDisconnect:
                visit.status = visit.status or _CLIENT_CLOSED  # nobody to answer
            except Exception:
                if visit.status:
                    raise  # the answer is on its way; let the server log it
                await unexpected_error_response(scope)(scope, receive, send_with_headers)
        finally:
            self.leave(visit, scope)

    # -- the steps of a visit, shared with the data lane (service.dataroutes.DataLane) ---------

    def enter(self, scope: Scope) -> Visit:
        """Start a request's visit: root path, request id, CORS headers of its answer."""
        started = time.perf_counter()
        if self.root_path and not scope.get("root_path"):
            # Behind a proxy: routing strips the prefix, docs and the page's links keep it.
            scope["root_path"] = self.root_path
            path = scope["path"]
            root = self.root_path
            if path != root and not path.startswith(root + "/"):
                # The ingress stripped the prefix. Starlette's mounts (/static) only match a
                # path that carries root_path, so put it back; routes accept either form.
                raw = scope.get("raw_path") or path.encode()
                scope["path"] = root + path
                scope["raw_path"] = root.encode() + raw
        # One pass over the headers for everything this layer needs.
        request_id: str | None = None
        declared: int | None = None
        origin: bytes | None = None
        preflight = False
        for name, value in scope["headers"]:
            wanted = _DOOR_HEADERS.get(name)  # one lookup for most headers, which it skips
            if wanted is None:
                continue
            if wanted == _LENGTH:
                try:
                    declared = int(value)
                except ValueError:
                    declared = None
            elif wanted == _REQUEST_ID:
                request_id = value.decode("latin-1")
            elif wanted == _ORIGIN:
                origin = value
            else:
                preflight = True
        request_id = accept_request_id(request_id)
        extra = [(b"x-request-id", request_id.encode("ascii"))]
        cors = self.cors
        method = scope["method"]
        preflight = preflight and method == "OPTIONS" and cors is not None and origin is not None
        if cors is not None and origin is not None and not preflight:
            extra += cors.headers(origin)
        return Visit(started, method, request_id, extra, declared, preflight)

    def admit(self, visit: Visit) -> bool:
        """False when the in-flight cap refuses the request (answer :meth:`_refusal`);
        :class:`PayloadTooLarge` for a declared body over the limit."""
        if visit.method == "POST" and self.max_inflight_requests > 0:
            if self.inflight >= self.max_inflight_requests:
                visit.template = "overloaded"
                return False
            self.inflight += 1
            visit.counted = True
        declared, limit = visit.declared, self.max_body_bytes
        if declared is not None and declared > limit:
            raise PayloadTooLarge(
                f"body: {declared} bytes exceed the limit of {limit} bytes (max_body_bytes)",
                field="body",
            )
        return True

    def answer_headers(
        self, visit: Visit, scope: Scope, headers: list[tuple[bytes, bytes]]
    ) -> None:
        """Add this layer's headers (request id, CORS) and the hooks' to an answer's."""
        headers += visit.extra
        for hook in self.hooks.response_headers:
            hook(scope, headers)

    def leave(self, visit: Visit, scope: Scope) -> None:
        """End the visit: free its in-flight place, count it, log it if asked to."""
        if visit.counted:
            self.inflight -= 1
        elapsed = time.perf_counter() - visit.started
        status = visit.status or 500
        template = visit.template
        method = visit.method
        if template is None:
            route = scope.get("route")
            template = getattr(route, "path", None) or _unrouted_label(scope)
        count, latency = _http_metrics(template, method, status)
        count.inc()
        latency.observe(elapsed)
        if status >= self.log_min_status and access_log.isEnabledFor(logging.INFO):
            access_log.info(
                "%s %s -> %d in %.1f ms",
                method,
                scope.get("path", ""),
                status,
                elapsed * 1000,
                extra={
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 3),
                    "request_id": visit.request_id,
                },
            )
        request_id_var.reset(visit.token)

    def refusal(self, scope: Scope) -> tuple[Message, Message]:
        """The prebuilt answer of the in-flight cap, counted as a refusal."""
        metrics.OVERLOAD_REFUSALS.labels(model="").inc()
        return self._refusals[is_protocol_path(route_path(scope))]

    async def _refuse(self, scope: Scope, send: Send) -> None:
        start, body = self.refusal(scope)
        await send({**start, "headers": list(start["headers"])})
        await send(body)

    def limited(self, receive: Receive) -> Receive:
        """``receive`` under the body's size limit and deadline (from now)."""
        limit = self.max_body_bytes
        timeout = self.body_timeout_s
        deadline = time.monotonic() + timeout
        watchdog = self.watchdog
        received = 0
        body_done = False

        async def limited_receive() -> Message:
            nonlocal received, body_done
            if body_done:
                return await receive()
            task = asyncio.current_task()
            assert task is not None
            watchdog.watch(task, deadline)
            try:
                message = await receive()
            except asyncio.CancelledError:
                # Ours only if the watchdog expired it and nobody else cancelled it too.
                if not watchdog.unwatch(task) or task.uncancel() > 0:
                    raise
                raise RequestTimeout(
                    f"body: {received} bytes received, the rest not within {timeout:g} s "
                    "(body_timeout_s)",
                    field="body",
                ) from None
            except BaseException:
                watchdog.unwatch(task)
                raise
            watchdog.unwatch(task)
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLarge(
                        f"body: more than {limit} bytes (max_body_bytes)", field="body"
                    )
                body_done = not message.get("more_body", False)
            else:
                body_done = True
            return message

        return limited_receive


def _prebuilt(response: Response) -> tuple[Message, Message]:
    """A response as its two ASGI messages, to be sent again and again."""
    start: Message = {
        "type": "http.response.start",
        "status": response.status_code,
        "headers": response.raw_headers,
    }
    return start, {"type": "http.response.body", "body": bytes(response.body)}


@functools.lru_cache(maxsize=1024)  # bounded: the method is whatever a client sends
def _http_metrics(route: str, method: str, status: int) -> tuple[Any, Any]:
    """The labelled children for one (route, method, status), looked up once, not per request:
    ``labels()`` takes a lock and builds a tuple each call."""
    return (
        metrics.deferred_counter(
            metrics.HTTP_REQUESTS.labels(route=route, method=method, status=str(status))
        ),
        metrics.deferred_histogram(metrics.HTTP_LATENCY.labels(route=route, method=method)),
    )


def _unrouted_label(scope: Scope) -> str:
    # Mounted static files set no route; anything else unrouted gets one label, so a scanner
    # probing random URLs cannot blow up the metric's cardinality.
    return "/static" if route_path(scope).startswith("/static/") else "unmatched"


class BodyWatchdog:
    """The body deadlines of the requests waiting for their body, on one shared timer
    (:class:`~service.deadlines.DeadlineSweeper`).

    Almost every body has fully arrived by the time it is read, so ``receive`` returns at
    once and its deadline is merely registered and dropped. A read past its deadline has its
    task cancelled, then answers 408: at most ``tick`` late.
    """

    def __init__(self, tick: float) -> None:
        self._sweeper: DeadlineSweeper[asyncio.Task[Any]] = DeadlineSweeper(tick, self._expire)
        self._expired: set[asyncio.Task[Any]] = set()

    @property
    def tick(self) -> float:
        return self._sweeper.tick

    def watch(self, task: asyncio.Task[Any], deadline: float) -> None:
        self._sweeper.watch(task, deadline)

    def unwatch(self, task: asyncio.Task[Any]) -> bool:
        """Stop watching ``task``; True if its deadline passed and it was cancelled for it."""
        self._sweeper.unwatch(task)
        if task in self._expired:
            self._expired.discard(task)
            return True
        return False

    def _expire(self, task: asyncio.Task[Any]) -> None:
        self._expired.add(task)
        task.cancel()


class Cors:
    """CORS for the allowed origins: the headers of a simple answer, and preflight answers.

    Preflights are checked by Starlette's CORS middleware; a refused one answers our JSON
    error instead of plain text.
    """

    EXPOSED = "X-Request-ID, Retry-After"

    def __init__(self, origins: list[str]) -> None:
        self.allow_all = "*" in origins
        self.origins = frozenset(origins)
        self._checker = _JsonCORS(
            app=_no_app,
            allow_origins=origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", "X-Request-ID"],
            expose_headers=[self.EXPOSED],
        )

    def headers(self, origin: bytes) -> list[tuple[bytes, bytes]]:
        """What an answer to ``origin`` carries: nothing unless the origin is allowed."""
        if self.allow_all:
            allowed = b"*"
        elif origin.decode("latin-1") in self.origins:
            allowed = origin
        else:
            return []
        out = [
            (b"access-control-allow-origin", allowed),
            (b"access-control-expose-headers", self.EXPOSED.encode()),
        ]
        if not self.allow_all:
            out.append((b"vary", b"Origin"))
        return out

    def preflight(self, scope: Scope) -> Response:
        """The answer to a preflight (it carries its own CORS headers)."""
        return self._checker.preflight_response(Headers(scope=scope))


async def _no_app(scope: Scope, receive: Receive, send: Send) -> None:
    raise AssertionError("only the preflight check of this CORS middleware is used")


class _JsonCORS(CORSMiddleware):
    """Starlette's CORS checks whose refused preflight is our JSON error, not plain text."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        reason = bytes(response.body).decode("utf-8", "replace")  # "Disallowed CORS origin"
        error = BadRequest(
            f"CORS preflight refused: {reason.removeprefix('Disallowed CORS ').strip()} not "
            "allowed (cors_origins)",
            field="Origin",
        )
        return error_response(error, "")
