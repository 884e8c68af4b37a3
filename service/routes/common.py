"""What every router shares: the data-plane dependency, path versions, and the exception
handlers that render every error through ``service.responses`` (one JSON shape per protocol).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from service.codec import validation_error
from service.dataplane import DataPlane
from service.dataroutes import dataplane_of
from service.errors import (
    BadRequest,
    NotFound,
    PayloadTooLarge,
    ServiceError,
    Unavailable,
    UnsupportedMediaType,
)
from service.responses import (
    error_response,
    route_path,
    service_error_response,
    unexpected_error_response,
)


async def get_dataplane(request: Request) -> DataPlane:
    # async although it never awaits: FastAPI runs a plain-def dependency in its thread pool.
    return dataplane_of(request.app)


DataPlaneDep = Annotated[DataPlane, Depends(get_dataplane)]


def data_plane_errors(model: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    """The answers every prediction route can give besides its own, for OpenAPI."""
    return {
        code: {"model": model, "description": text}
        for code, text in {
            413: "Body or point count over the configured limit",
            415: "Content-Type or Content-Encoding the route cannot read",
            429: "Batch queue full; retry after Retry-After seconds",
            503: "No model loaded yet, shutting down, or too many requests in flight",
            504: "Deadline passed before the batch ran",
        }.items()
    }


def parse_version(raw: str) -> int:
    """A version from the URL path: a positive integer, else 404 (no such resource)."""
    if not raw.isdigit() or raw.startswith("0") or len(raw) > 18:
        raise NotFound(
            f"version '{raw[:40]}' not found: versions are positive integers", field="version"
        )
    return int(raw)


def _http_error(status: int, message: str) -> ServiceError:
    kinds: dict[int, type[ServiceError]] = {
        400: BadRequest,
        404: NotFound,
        413: PayloadTooLarge,
        415: UnsupportedMediaType,
        503: Unavailable,
    }
    error = kinds.get(status, ServiceError)(message)
    error.status_code = status
    if status == 405:
        error.code = "method_not_allowed"
    elif status not in kinds:
        error.code = "http_error"
    return error


def install_error_handlers(app: FastAPI) -> None:
    """Every error any layer raises leaves as JSON in the protocol's shape; never a 500 page."""

    async def on_service_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ServiceError)
        return service_error_response(exc, request.scope)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = [dict(e, loc=tuple(e.get("loc", ()))[1:]) for e in exc.errors()]
        return error_response(validation_error(errors), route_path(request.scope))

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        path = route_path(request.scope)
        shown = request.url.path[:200]
        if exc.status_code == 404:
            message = f"no route {request.method} {shown}; see /docs"
        elif exc.status_code == 405:
            message = f"method {request.method} not allowed on {shown}"
        else:
            message = str(exc.detail)
        response = error_response(_http_error(exc.status_code, message), path)
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        return unexpected_error_response(request.scope)

    handlers: dict[Any, Any] = {
        ServiceError: on_service_error,
        RequestValidationError: on_validation_error,
        StarletteHTTPException: on_http_error,
        Exception: on_unexpected,
    }
    for kind, handler in handlers.items():
        app.add_exception_handler(kind, handler)
