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
``app.add_middleware``. A route that FastAPI gives dependencies (``create_app(dependencies=
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
from starlette.types import ASGIApp, Receive, Scope, Send

from service.dataplane import DataPlane
from service.errors import BadRequest, Unavailable
from service.responses import check_content_headers, receive_body, route_path

log = logging.getLogger(__name__)

_JSON = b"application/json"


class DataCall:
    """One data-plane request as a handler sees it, whichever way it was routed."""

    __slots__ = ("dataplane", "params", "receive", "scope")

    def __init__(
        self, scope: Scope, receive: Receive, dataplane: DataPlane, params: dict[str, str]
    ) -> None:
        self.scope = scope
        self.receive = receive
        self.dataplane = dataplane
        self.params = params
        """Path parameters by name, as the route template declares them."""

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
        check_content_headers(
            content_type.decode("latin-1"),
            content_encoding.decode("latin-1"),
            lenient=lenient,
            extra_types=extra_types,
        )
        return require_body(await receive_body(self.receive))


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
    dataplane: DataPlane | None = getattr(app.state, "dataplane", None)
    if dataplane is None:
        raise Unavailable("the service is starting up")
    return dataplane


async def _admitted_call(
    scope: Scope, receive: Receive, app: Any, params: dict[str, str]
) -> DataCall:
    """The handler's call, once its model's fair share of this loop turn is granted
    (``DataPlane.admit``), whichever way the request was routed."""
    dataplane = dataplane_of(app)
    await dataplane.admit(params.get("model_name"))
    return DataCall(scope, receive, dataplane, params)


def data_route(
    router: APIRouter, path: str, **route_args: Any
) -> Callable[[DataHandler], DataHandler]:
    """Declare ``POST path`` answered by the decorated handler; ``route_args`` go to
    ``router.add_api_route`` (responses, summary, openapi_extra, ...)."""

    def register(handler: DataHandler) -> DataHandler:
        async def endpoint(request: Request, **params: str) -> Response:
            call = await _admitted_call(request.scope, request.receive, request.app, params)
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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path = route_path(scope)
            found = self._exact.get(path)
            params: dict[str, str] = {}
            if found is None:
                for pattern, route, handler in self._templated:
                    match = pattern.match(path)
                    if match:
                        found, params = (route, handler), match.groupdict()
                        break
            if found is not None:
                scope["route"] = found[0]
                await self._answer(found[1], params, scope, receive, send)
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
            reply = await handler(await _admitted_call(scope, receive, app, params))
        except ClientDisconnect:
            raise  # nobody to answer; the outer layer records it
        except Exception as exc:
            response = await _handled(app, exc, scope, receive)
            await response(scope, receive, send)
            return
        media = _JSON if reply.media_type == "application/json" else reply.media_type.encode()
        headers = [(b"content-type", media), (b"content-length", b"%d" % len(reply.body))]
        headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})


async def _handled(app: Any, exc: Exception, scope: Scope, receive: Receive) -> Response:
    """The app's own exception handler's answer (as FastAPI's middleware would pick it)."""
    handlers: dict[Any, Any] = app.exception_handlers
    for kind in type(exc).__mro__:
        handler = handlers.get(kind)
        if handler is not None:
            response: Response = await handler(Request(scope, receive), exc)
            return response
    raise exc
