"""Pure-ASGI middleware: in-flight cap, request id, metrics, access log and body limits in one
layer, and the JSON CORS middleware.

Pure ASGI rather than Starlette's BaseHTTPMiddleware: it costs a few microseconds per request
instead of a task and a stream copy, which matters at thousands of requests per second.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import re
import time
from typing import Any

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import metrics
from service.errors import (
    BadRequest,
    PayloadTooLarge,
    RequestTimeout,
    ServiceError,
    Unavailable,
)
from service.logging import request_id_var
from service.routes.common import (
    check_content_headers,
    error_response,
    is_protocol_path,
    receive_body,
    route_path,
    service_error_response,
    unexpected_error_response,
)
from service.routes.predict import predict_body, query_version

access_log = logging.getLogger("service.access")
# Access-log modes (Settings.access_log) -> the lowest status logged.
_ACCESS_LOG_MIN_STATUS = {"all": 0, "errors": 400, "off": 1000}

REQUEST_ID_HEADER = "x-request-id"
RETRY_AFTER_S = 1.0
"""Retry-After of every overload refusal (in-flight cap and full queue)."""
_CLIENT_CLOSED = 499
"""Status recorded (never sent) for a request whose client left before its body arrived."""
_random_bits = random.getrandbits
# An incoming id is echoed only when it is short and plain, so it cannot inject log lines.
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


class ServiceMiddleware:
    """The one pure-ASGI layer around the app: in-flight cap, request id, metrics, access log,
    body size limit and body deadline.

    One layer rather than a stack of them: each pure-ASGI layer costs a coroutine frame, a
    ``send`` wrapper and a scope walk per request, 15-25 µs each measured here, a large share
    of a whole ``/predict``.

    **In-flight cap.** At most ``max_inflight_requests`` POST requests (the inference calls)
    are inside the app at once; the next one is answered a pre-built ``503`` with
    ``Retry-After`` before a byte of its body is read, and counted in
    ``xor_dnn_overload_refusals_total``. Under a storm the excess then costs a few
    microseconds each instead of a body parse, a validation and a queue slot, so refusals
    stay fast and the accepted requests keep a bounded latency. GETs (probes, metrics, docs)
    are never capped: a liveness probe must not fail because predictions are busy.

    **Body limit.** 413 for bodies over ``max_body_bytes`` and 408 for bodies slower than
    ``body_timeout_s``. A declared ``Content-Length`` over the limit is answered at once,
    without reading a byte; a chunked body is cut off as soon as it crosses the limit. The
    connection stays open: uvicorn discards the unread rest (bounded by the head timeout, see
    ``service.server``), so a client that sends its whole body before reading still gets the
    413 instead of a reset. The body deadline runs from the request head to the last body
    chunk; once the body is complete, ``receive`` passes through untimed.
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
        content_type = content_encoding = b""
        cross_origin = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = None
            elif name == b"content-type" and not content_type:  # the first, as Starlette
                content_type = value
            elif name == b"x-request-id":
                text = value.decode("latin-1")
                if _VALID_REQUEST_ID.fullmatch(text):
                    request_id = text
            elif name == b"content-encoding":
                content_encoding = value
            elif name == b"origin":
                cross_origin = True
        # 32 random hex digits, as uuid4().hex but from the per-process Mersenne Twister
        # (seeded from os.urandom, reseeded after fork): no syscall, which would release the
        # GIL to the model thread mid-request. An id needs to be unique, not secret.
        request_id = request_id or f"{_random_bits(128):032x}"
        header = (b"x-request-id", request_id.encode("ascii"))
        method = scope.get("method", "")
        capped = method == "POST" and self.max_inflight_requests > 0
        if capped and self.inflight >= self.max_inflight_requests:
            await self._refuse(scope, send, header, started)
            return
        token = request_id_var.set(request_id)
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        if capped:
            self.inflight += 1
        template: str | None = None
        try:
            limit = self.max_body_bytes
            if declared is not None and declared > limit:
                error = PayloadTooLarge(
                    f"body: {declared} bytes exceed the limit of {limit} bytes (max_body_bytes)",
                    field="body",
                )
                await error_response(error, route_path(scope))(scope, receive, send_with_id)
            elif method == "POST" and not cross_origin and route_path(scope) == "/predict":
                # Cross-origin requests take the routed path, through the CORS middleware.
                template = "/predict"
                status = await self._predict(
                    scope, self._limited(receive), send, header, content_type, content_encoding
                )
            else:
                await self.app(scope, self._limited(receive), send_with_id)
        finally:
            if capped:
                self.inflight -= 1
            elapsed = time.perf_counter() - started
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
                        "request_id": request_id,
                    },
                )
            request_id_var.reset(token)

    async def _predict(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        header: tuple[bytes, bytes],
        content_type: bytes,
        content_encoding: bytes,
    ) -> int:
        """``POST /predict`` straight from this layer; returns the status sent.

        The hot path skips Starlette's exception middleware, the router and the route's
        wrappers (their frames and ``send`` wrappers cost ~25 µs of a ~170 µs request here)
        and sends its two messages itself. It runs the same code as the documented route
        (:func:`service.routes.predict.predict_body`) and renders errors with the app's own
        renderers, so the answers are byte-for-byte those of the routed path.
        """
        try:
            dataplane = getattr(scope["app"].state, "dataplane", None)
            if dataplane is None:  # between app creation and the end of the startup
                raise Unavailable("the service is starting up")
            version = query_version(scope["query_string"])
            check_content_headers(
                content_type.decode("latin-1"), content_encoding.decode("latin-1")
            )
            content = await predict_body(dataplane, await receive_body(receive), version)
        except ServiceError as exc:
            response = service_error_response(exc, scope)
        except ClientDisconnect:
            return _CLIENT_CLOSED  # nobody to answer
        except Exception:
            response = unexpected_error_response(scope)
        else:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", b"%d" % len(content)),
                        header,
                    ],
                }
            )
            await send({"type": "http.response.body", "body": content})
            return 200
        response.raw_headers.append(header)
        await response(scope, receive, send)
        return response.status_code

    async def _refuse(
        self, scope: Scope, send: Send, header: tuple[bytes, bytes], started: float
    ) -> None:
        start, body = self._refusals[is_protocol_path(route_path(scope))]
        await send({**start, "headers": [*start["headers"], header]})
        await send(body)
        metrics.OVERLOAD_REFUSALS.inc()
        count, latency = _http_metrics("overloaded", "POST", 503)
        count.inc()
        latency.observe(time.perf_counter() - started)

    def _limited(self, receive: Receive) -> Receive:
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
        metrics.HTTP_REQUESTS.labels(route=route, method=method, status=str(status)),
        metrics.HTTP_LATENCY.labels(route=route, method=method),
    )


def _unrouted_label(scope: Scope) -> str:
    # Mounted static files set no route; anything else unrouted gets one label, so a scanner
    # probing random URLs cannot blow up the metric's cardinality.
    return "/static" if route_path(scope).startswith("/static/") else "unmatched"


class BodyWatchdog:
    """The body deadlines of every request waiting for its body, checked by one shared timer.

    A timer per read (``asyncio.timeout``) measured 10-20 µs per request here, a large share
    of a whole ``/predict``. Almost every body has fully arrived by the time it is read, so
    ``receive`` returns at once and its deadline is merely registered and dropped (two dict
    operations). One timer, armed only while some request is waiting on its body, wakes every
    ``tick`` seconds and cancels the reads past their deadline, which then answer 408: at
    most ``tick`` late.
    """

    def __init__(self, tick: float) -> None:
        self.tick = tick
        self._waiting: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None

    def watch(self, task: asyncio.Task[Any], deadline: float) -> None:
        self._waiting[task] = deadline
        loop = task.get_loop()
        # A timer of another (closed) loop never fires: tests run one app on several loops.
        if self._timer is None or self._timer_loop is not loop:
            self._timer_loop = loop
            self._timer = loop.call_later(self.tick, self._sweep)

    def unwatch(self, task: asyncio.Task[Any]) -> bool:
        """Stop watching ``task``; True if its deadline passed and it was cancelled for it."""
        self._waiting.pop(task, None)
        if task in self._expired:
            self._expired.discard(task)
            return True
        return False

    def _sweep(self) -> None:
        self._timer = None
        now = time.monotonic()
        for task, deadline in list(self._waiting.items()):
            if now >= deadline:
                del self._waiting[task]
                self._expired.add(task)
                task.cancel()
        if self._waiting and self._timer_loop is not None:
            self._timer = self._timer_loop.call_later(self.tick, self._sweep)


class JsonCORSMiddleware(CORSMiddleware):
    """Starlette's CORS middleware whose refused preflight is our JSON error, not plain text."""

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
