"""HTTP answers shared by every layer: JSON bodies, the checks on a body's headers, and the ONE
place that turns an error into JSON.

Two error shapes, chosen by the URL, never by the handler:

* ``/v1/...`` (TensorFlow Serving) and ``/v2...`` (Open Inference Protocol) answer
  ``{"error": "message"}``, as those servers do, so their off-the-shelf clients read it;
* every other route answers ``{"error": {"code": ..., "message": ..., "field": ...}}``.

Invalid input is 422 on our own routes (FastAPI's convention) and 400 on the v1/v2 routes
(what TensorFlow Serving and Triton send). The front door (``service.middleware``), the lean
data-plane handlers and FastAPI's exception handlers all render through here, so an error
reads the same whichever layer raised it.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

import orjson
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import Receive

from service.errors import InvalidInput, ServiceError, UnsupportedMediaType

log = logging.getLogger("service.api")

JSON = "application/json"
# curl -d sends form-urlencoded by default and TF Serving's docs use plain curl -d; Triton's
# client sends no Content-Type at all. The protocol routes accept those, /predict does not.
_LENIENT_TYPES = frozenset({"", JSON, "application/x-www-form-urlencoded", "text/plain"})


def json_response(
    payload: Any, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """orjson-encoded JSON; numpy scalars and arrays encode as their shortest float32 text."""
    body = orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(body, status_code=status_code, media_type=JSON, headers=headers)


def check_content_headers(
    content_type: str,
    content_encoding: str,
    *,
    lenient: bool = False,
    extra_types: frozenset[str] = frozenset(),
) -> None:
    """415 naming the header unless the body is declared JSON (or, ``lenient``, untyped) and
    not compressed."""
    kind = content_type.split(";", 1)[0].strip().lower()
    allowed = kind == JSON or kind.endswith("+json") or kind in extra_types
    if lenient:
        allowed = allowed or kind in _LENIENT_TYPES
    if not allowed:
        shown = kind or "none"
        raise UnsupportedMediaType(
            f"Content-Type: expected application/json, got {shown}"
            + ("" if lenient else " (add -H 'Content-Type: application/json')"),
            field="Content-Type",
        )
    encoding = content_encoding.strip().lower()
    if encoding not in ("", "identity"):
        raise UnsupportedMediaType(
            f"Content-Encoding: only identity is accepted, got {encoding}",
            field="Content-Encoding",
        )


async def receive_body(receive: Receive) -> bytes:
    """The whole body from ASGI ``receive`` (one message, the usual case, costs no join);
    :class:`ClientDisconnect` if the client goes away first."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnect()
        chunk: bytes = message.get("body", b"")
        if not message.get("more_body", False):
            return b"".join([*chunks, chunk]) if chunks else chunk
        chunks.append(chunk)


# -- the one error renderer ----------------------------------------------------------------


def is_protocol_path(path: str) -> bool:
    return path.startswith("/v1/") or path == "/v2" or path.startswith("/v2/")


def route_path(scope: MutableMapping[str, Any]) -> str:
    path: str = scope.get("path", "")
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    return path


def error_response(exc: ServiceError, path: str) -> Response:
    headers: dict[str, str] = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    if exc.status_code == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="xor-dnn admin"'
    if exc.status_code == 408:
        # The client is too slow to keep: whatever of its body is still coming is not waited for.
        headers["Connection"] = "close"
    status = exc.status_code
    if is_protocol_path(path):
        if isinstance(exc, InvalidInput):
            status = 400
        return json_response({"error": exc.message}, status, headers)
    detail: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if exc.field:
        detail["field"] = exc.field
    return json_response({"error": detail}, status, headers)


def service_error_response(exc: ServiceError, scope: MutableMapping[str, Any]) -> Response:
    """A raised ServiceError as its JSON answer; server-side failures are logged."""
    if exc.status_code >= 500:
        log.warning(
            "%s %s -> %d: %s", scope.get("method"), scope.get("path"), exc.status_code, exc.message
        )
    return error_response(exc, route_path(scope))


def unexpected_error_response(scope: MutableMapping[str, Any]) -> Response:
    """Call inside ``except``: logs the traceback, answers a 500 that shows none of it."""
    log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
    error = ServiceError("internal error; see the server log for this request id")
    return error_response(error, route_path(scope))
