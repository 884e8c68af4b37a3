"""Data-plane routes: declared in FastAPI like every route, answered without its per-request
machinery.

A protocol adapter writes one handler, ``async (DataCall) -> Reply``, and declares it with
:func:`data_route` on its ``APIRouter``, with the usual OpenAPI arguments::

    @data_route(router, "/{model_name}:predict", responses=_ERRORS, openapi_extra=_BODY)
    async def predict(call: DataCall) -> Reply:
        body = await call.body(lenient=True)
        ...
        return Reply(orjson.dumps(payload))

That registers an ordinary FastAPI route (it documents the route in OpenAPI and answers it
when FastAPI routes the request) whose endpoint carries the handler. The app factory puts a
:class:`Dispatcher` in front of FastAPI's own middleware stack: it answers the POSTs of
those routes by calling the handler directly, skipping FastAPI's error, telemetry, body-limit
and exit-stack layers, the router's linear scan and dependency solving; everything else goes
to FastAPI. Both ways run inside the same outer layer (``service.middleware``: limits,
request ids, metrics, access log, CORS, hooks) and inside any middleware added with
``app.add_middleware``. With no such middleware, the service's HTTP protocol answers these
POSTs through :class:`DataLane` instead: the same outer layer's steps and the same handlers,
without the ASGI cycle. A route that FastAPI gives dependencies (``create_app(dependencies=
...)``, ``include_router(dependencies=...)``) is left to FastAPI, so they always run; errors
are rendered by the app's exception handlers either way.
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.routing import iter_route_contexts
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.dataplane import DataPlane
from service.errors import BadRequest, ServiceError, Unavailable
from service.middleware import ServiceMiddleware, Visit
from service.responses import (
    check_content_headers,
    receive_body,
    route_path,
    service_error_response,
    unexpected_error_response,
)

log = logging.getLogger(__name__)

_JSON = b"application/json"


class DataCall:
    """One data-plane request as a handler sees it, whichever way it was routed."""

    __slots__ = ("_body", "dataplane", "params", "receive", "scope")

    def __init__(
        self,
        scope: Scope,
        receive: Receive,
        dataplane: DataPlane,
        params: dict[str, str],
        body: bytes | None = None,
    ) -> None:
        self.scope = scope
        self.receive = receive
        self.dataplane = dataplane
        self.params = params
        """Path parameters by name, as the route template declares them."""
        self._body = body  # the whole body, when it came with the head (the lane)

    @property
    def query_string(self) -> bytes:
        query: bytes = self.scope["query_string"]
        return query

    def header(self, name: bytes) -> str | None:
        """The first value of a request header (``name`` in lower case), as Starlette does."""
        for key, value in self.scope["headers"]:
            if key == name:
                text: str = value.decode("latin-1")
                return text
        return None

    async def body(
        self, *, lenient: bool = False, extra_types: frozenset[str] = frozenset()
    ) -> bytes:
        """The whole non-empty body, after checking Content-Type and Content-Encoding (415).

        The size limit and the body deadline are enforced while reading, by the outer layer.
        """
        content_type = content_encoding = b""
        for key, value in self.scope["headers"]:
            if key == b"content-type":
                content_type = content_type or value  # the first, as Starlette
            elif key == b"content-encoding":
                content_encoding = value
        _check_content(content_type, content_encoding, lenient, extra_types)
        body = self._body
        return require_body(await receive_body(self.receive) if body is None else body)


@functools.lru_cache(maxsize=256)  # bounded: the values are whatever clients send
def _check_content(
    content_type: bytes, content_encoding: bytes, lenient: bool, extra_types: frozenset[str]
) -> None:
    """``check_content_headers`` on the raw values, remembered for the values seen (the
    same few on every request); a refusal raises, so it is never remembered."""
    check_content_headers(
        content_type.decode("latin-1"),
        content_encoding.decode("latin-1"),
        lenient=lenient,
        extra_types=extra_types,
    )


def require_body(body: bytes) -> bytes:
    if not body:
        raise BadRequest("body: empty; a JSON object is required", field="body")
    return body


class Reply:
    """A 200 answer: the encoded body, its media type and any extra headers."""

    __slots__ = ("body", "headers", "media_type")

    def __init__(
        self,
        body: bytes,
        media_type: str = "application/json",
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.body = body
        self.media_type = media_type
        self.headers = headers


DataHandler = Callable[[DataCall], Awaitable[Reply]]
_MARK = "__data_handler__"
_PARAM = re.compile(r"{(\w+)(?::\w+)?}")
_NAMES = ("__name__", "__qualname__", "__doc__")


def dataplane_of(app: Any) -> DataPlane:
    """The app's data plane; 503 between app creation and the end of the lifespan's startup."""
    # app.state's own dict: State's __getattr__ costs ten times a dict lookup, per request.
    dataplane: DataPlane | None = app.state._state.get("dataplane")
    if dataplane is None:
        raise Unavailable("the service is starting up")
    return dataplane


def _data_call(
    scope: Scope, receive: Receive, app: Any, params: dict[str, str], body: bytes | None = None
) -> tuple[DataCall, Awaitable[None] | None]:
    """The handler's call, whichever way the request was routed, and what to await before
    making it: its model's fair share of this loop turn (``DataPlane.admission``; None, the
    usual case, when nothing is to be waited for)."""
    dataplane = dataplane_of(app)
    waiting = dataplane.admission(params.get("model_name"))
    return DataCall(scope, receive, dataplane, params, body), waiting


def data_route(
    router: APIRouter, path: str, **route_args: Any
) -> Callable[[DataHandler], DataHandler]:
    """Declare ``POST path`` answered by the decorated handler; ``route_args`` go to
    ``router.add_api_route`` (responses, summary, openapi_extra, ...)."""

    def register(handler: DataHandler) -> DataHandler:
        async def endpoint(request: Request, **params: str) -> Response:
            call, waiting = _data_call(request.scope, request.receive, request.app, params)
            if waiting is not None:
                await waiting
            reply = await handler(call)
            return Response(reply.body, media_type=reply.media_type, headers=dict(reply.headers))

        # FastAPI reads the path parameters (for OpenAPI and routing) from the signature.
        kind = inspect.Parameter
        parameters = [kind("request", kind.POSITIONAL_OR_KEYWORD, annotation=Request)]
        for name in _PARAM.findall(router.prefix + path):
            parameters.append(kind(name, kind.KEYWORD_ONLY, annotation=str))
        endpoint.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        functools.update_wrapper(endpoint, handler, assigned=_NAMES)
        setattr(endpoint, _MARK, handler)
        router.add_api_route(path, endpoint, methods=["POST"], **route_args)
        return handler

    return register


class Dispatcher:
    """POSTs to data routes straight to their handlers; everything else to ``fallback``."""

    def __init__(self, routes: Iterable[BaseRoute], fallback: ASGIApp) -> None:
        self.fallback = fallback
        self._exact: dict[str, tuple[Any, DataHandler]] = {}
        self._templated: list[tuple[re.Pattern[str], Any, DataHandler]] = []
        # Templated paths already matched (path -> route, handler, parameters): the same few
        # model paths come again and again, and a dict lookup beats trying each pattern.
        self._matched: dict[str, Found] = {}
        # FastAPI's own view of every route as included (prefixes and dependencies applied).
        for route in iter_route_contexts(list(routes)):
            handler = getattr(route.endpoint, _MARK, None)
            if handler is None:
                continue
            if route.dependant.dependencies:
                log.info("%s has FastAPI dependencies: answered through FastAPI", route.path)
                continue
            if route.param_convertors:
                self._templated.append((route.path_regex, route, handler))
            else:
                self._exact[str(route.path)] = (route, handler)

    @property
    def paths(self) -> list[str]:
        """The route templates answered directly (the rest go through FastAPI)."""
        return [*self._exact, *(route.path for _, route, _ in self._templated)]

    def find(self, path: str) -> Found | None:
        """The data route answering ``POST path`` directly: its route, handler and path
        parameters; None when FastAPI answers it."""
        exact = self._exact.get(path)
        if exact is not None:
            return exact[0], exact[1], {}
        matched = self._matched.get(path)
        if matched is not None:
            route, handler, params = matched
            return route, handler, {**params}  # a copy: a handler may change its own
        for pattern, route, handler in self._templated:
            match = pattern.match(path)
            if match:
                params = match.groupdict()
                if len(self._matched) < MATCHED_PATHS:  # bounded: paths come from clients
                    self._matched[path] = (route, handler, {**params})
                return route, handler, params
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            found = self.find(route_path(scope))
            if found is not None:
                route, handler, params = found
                scope["route"] = route
                await self._answer(handler, params, scope, receive, send)
                return
        await self.fallback(scope, receive, send)

    async def _answer(
        self,
        handler: DataHandler,
        params: dict[str, str],
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        app = scope["app"]
        try:
            call, waiting = _data_call(scope, receive, app, params)
            if waiting is not None:
                await waiting
            reply = await handler(call)
        except ClientDisconnect:
            raise  # nobody to answer; the outer layer records it
        except Exception as exc:
            response = await _handled(app, exc, scope, receive)
            await response(scope, receive, send)
            return
        headers = _reply_headers(reply)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})


Found = tuple[Any, DataHandler, dict[str, str]]
MATCHED_PATHS = 1024
"""How many templated paths (model names and versions in them) the dispatcher remembers."""
Headers = list[tuple[bytes, bytes]]
Answer = tuple[int, Headers, bytes]


def _reply_headers(reply: Reply) -> Headers:
    media = _JSON if reply.media_type == "application/json" else reply.media_type.encode()
    headers = [(b"content-type", media), (b"content-length", b"%d" % len(reply.body))]
    if reply.headers:
        headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers]
    return headers


class DataLane:
    """The data routes' POSTs, answered with no ASGI cycle around them: the service's HTTP
    protocol (``service.server``) finds the route (:meth:`find`), has the answer made
    (:meth:`answer`) and writes it whole.

    It is the same request path, step for step: the front door's steps
    (:class:`~service.middleware.ServiceMiddleware`: in-flight cap, request id, CORS,
    ``Hooks``, metrics, access log, and the body's size and time limits on a body still
    coming), the dispatcher's route table and admission, the handler, and the app's
    exception handlers for its errors. What it leaves out is the layers in between, and the
    limits' wrapper around a body that is all here and within ``max_body_bytes``. The app
    builds one only when nothing else wraps the dispatcher (no ``app.add_middleware``);
    routes with FastAPI dependencies are not in the dispatcher's table, so they never take
    it.
    """

    def __init__(self, app: Any, door: ServiceMiddleware, dispatcher: Dispatcher) -> None:
        self.app = app
        self.door = door
        self.dispatcher = dispatcher

    def find(self, scope: Scope) -> Found | None:
        """The data route for this request's path (as received: with or without the root
        path), or None."""
        path: str = scope["path"]
        root = self.door.root_path
        if root and (path == root or path.startswith(root + "/")):
            path = path[len(root) :] or "/"
        return self.dispatcher.find(path)

    async def answer(
        self, scope: Scope, found: Found, receive: Receive, body: bytes | None
    ) -> Answer:
        """Status, headers and body of the answer to one request. ``body``: the whole body
        when it is already here, else None and the handler reads it from ``receive`` under
        the front door's size and time limits, as on the ASGI way; after the body, ``receive``
        waits for the client to leave."""
        scope["app"] = app = self.app
        door = self.door
        visit = door.enter(scope)
        route, handler, params = found
        scope["route"] = route
        if body is None or len(body) > door.max_body_bytes:
            # Still coming, or too large: read (again) under the limits, which answer 408/413.
            receive = door.limited(_receive_of(body, receive))
            body = None
        try:
            try:
                if not door.admit(visit):
                    start, refusal = door.refusal(scope)
                    return self._done(
                        visit, scope, start["status"], [*start["headers"]], refusal["body"]
                    )
                for hook in door.hooks.on_request:
                    await hook(scope)
                try:
                    call, waiting = _data_call(scope, receive, app, params, body)
                    if waiting is not None:
                        await waiting
                    reply = await handler(call)
                except Exception as exc:
                    response = await _handled(app, exc, scope, _receive_of(body, receive))
                else:
                    return self._done(visit, scope, 200, _reply_headers(reply), reply.body)
            except ServiceError as exc:
                response = service_error_response(exc, scope)
            except Exception:
                response = unexpected_error_response(scope)
            status, headers, out = await _materialized(response, scope, _receive_of(body, receive))
            return self._done(visit, scope, status, headers, out)
        finally:
            door.leave(visit, scope)

    def _done(
        self,
        visit: Visit,
        scope: Scope,
        status: int,
        headers: list[tuple[bytes, bytes]],
        out: bytes,
    ) -> Answer:
        visit.status = status
        self.door.answer_headers(visit, scope, headers)
        return status, headers, out


class _WholeBody:
    """``receive`` of a request whose body is already here: the body, then the real one."""

    __slots__ = ("_message", "_receive")

    def __init__(self, body: bytes, receive: Receive) -> None:
        self._message: Message | None = {"type": "http.request", "body": body, "more_body": False}
        self._receive = receive

    async def __call__(self) -> Message:
        message = self._message
        if message is None:
            return await self._receive()
        self._message = None
        return message


def _receive_of(body: bytes | None, receive: Receive) -> Receive:
    return receive if body is None else _WholeBody(body, receive)


async def _materialized(response: Response, scope: Scope, receive: Receive) -> Answer:
    """A Starlette response as status, headers and body (a streamed one is run to get them)."""
    body = getattr(response, "body", None)
    if isinstance(body, bytes | memoryview):
        return response.status_code, [*response.raw_headers], bytes(body)
    sent: list[Message] = []

    async def collect(message: Message) -> None:
        sent.append(message)

    await response(scope, receive, collect)
    start, chunks = sent[0], [m.get("body", b"") for m in sent[1:]]
    return start["status"], [*start.get("headers", ())], b"".join(chunks)


async def _handled(app: Any, exc: Exception, scope: Scope, receive: Receive) -> Response:
    """The app's own exception handler's answer (as FastAPI's middleware would pick it)."""
    handlers: dict[Any, Any] = app.exception_handlers
    for kind in type(exc).__mro__:
        handler = handlers.get(kind)
        if handler is not None:
            response: Response = await handler(Request(scope, receive), exc)
            return response
    raise exc
