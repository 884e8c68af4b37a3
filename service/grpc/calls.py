"""What every gRPC method shares: the data-plane call, request ids, status codes, metrics,
the access log and the in-flight cap, applied by the :func:`rpc` decorator.

Errors are the data plane's :class:`~service.errors.ServiceError` tree, mapped to gRPC
status codes in one table (:data:`STATUS_BY_HTTP`); a bad input never leaves as UNKNOWN.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import numpy as np
from google.protobuf import message_factory
from google.protobuf.message import DecodeError
from numpy.typing import NDArray

from service import metrics
from service.dataplane import DataPlane, Inference
from service.errors import BadRequest, InvalidInput, ServiceError
from service.logging import request_id_var
from service.middleware import REQUEST_ID_HEADER, accept_request_id
from service.repository import ServedModel
from service.routes.common import parse_version

log = logging.getLogger("service.access")
errors_log = logging.getLogger(__name__)

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Servicer = TypeVar("Servicer", bound="DataPlaneServicer")
Handler = Callable[[Servicer, Req, grpc.aio.ServicerContext], Awaitable[Resp]]

STATUS_BY_HTTP: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    # Too many points or bytes is a property of this one request, not of the server's load:
    # the client must change it, so INVALID_ARGUMENT (as Triton answers), not
    # RESOURCE_EXHAUSTED, which clients retry.
    413: grpc.StatusCode.INVALID_ARGUMENT,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def status_of(exc: ServiceError) -> grpc.StatusCode:
    if exc.code == "overloaded":  # the in-flight cap: a 503 in HTTP, load shedding in gRPC
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    return STATUS_BY_HTTP.get(exc.status_code, grpc.StatusCode.INTERNAL)


class Undecodable:
    """What a lenient deserializer hands over for bytes that are not the expected message, so
    the call answers INVALID_ARGUMENT (grpc's own deserializer failure would be UNKNOWN)."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


def lenient(message_class: Any) -> Callable[[bytes], Any]:
    def decode(data: bytes) -> Any:
        try:
            return message_class.FromString(data)
        except DecodeError as exc:
            return Undecodable(
                f"request: not a valid {message_class.DESCRIPTOR.full_name} message ({exc})"
            )

    return decode


def register(server: grpc.aio.Server, service: Any, servicer: object) -> None:
    """Serve the unary methods of ``service`` (a protobuf ServiceDescriptor) that
    ``servicer`` implements, with lenient request decoding; the others answer UNIMPLEMENTED.

    Registered from the descriptor rather than the generated ``add_*_to_server``, whose
    deserializers cannot be replaced.
    """
    handlers = {}
    for method in service.methods:
        implementation = getattr(servicer, method.name, None)
        if getattr(implementation, "__wrapped__", None) is None:  # not an @rpc method of ours
            continue
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            implementation,
            request_deserializer=lenient(message_factory.GetMessageClass(method.input_type)),
            response_serializer=message_factory.GetMessageClass(
                method.output_type
            ).SerializeToString,
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
    server.add_registered_method_handlers(service.full_name, handlers)


class DataPlaneServicer:
    """Base of our servicers: the data plane, the access-log mode and the in-flight cap."""

    DESCRIPTOR: Any
    """The protobuf ServiceDescriptor the subclass serves."""

    def __init__(self, dataplane: DataPlane) -> None:
        self.dataplane = dataplane
        settings = dataplane.settings
        self.log_all = settings.access_log == "all"
        self.log_errors = settings.access_log != "off"
        self.inflight_cap = settings.inflight_cap  # 0: no cap
        self.inflight = 0


async def infer(
    dataplane: DataPlane,
    points: NDArray[np.float32],
    *,
    version: int | None,
    protocol: str,
    context: grpc.aio.ServicerContext,
    model: ServedModel,
) -> Inference:
    """The one call from a gRPC adapter into the data plane, with the client's deadline and
    gRPC's batch wait (``grpc_max_batch_wait_ms``: grpc.aio hands over one call per loop
    turn, so concurrent calls share a model call only if they wait for each other)."""
    await dataplane.admit(model.name)
    remaining = context.time_remaining()
    deadline = None if remaining is None else time.monotonic() + remaining
    return await dataplane.infer(
        points,
        version=version,
        protocol=protocol,
        deadline=deadline,
        model=model,
        max_wait_s=dataplane.settings.grpc_max_batch_wait_s,
    )


def version_of(raw: str, field: str) -> int | None:
    """A version given as text (V2 ``model_version``): empty for the default one."""
    if not raw:
        return None
    try:
        return parse_version(raw)
    except ServiceError as exc:
        exc.field = field
        raise


def require_name(name: str, field: str) -> str:
    if not name:
        raise InvalidInput(f"{field}: required (the model's name)", field=field)
    return name


def _request_id(context: grpc.aio.ServicerContext) -> str:
    offered = next(
        (v for k, v in context.invocation_metadata() or () if k == REQUEST_ID_HEADER), None
    )
    return accept_request_id(offered if isinstance(offered, str) else None)


def rpc(
    method: str, *, capped: bool = False
) -> Callable[[Handler[Servicer, Req, Resp]], Handler[Servicer, Req, Resp]]:
    """Wrap a servicer method: request id (metadata ``x-request-id``, echoed in the trailing
    metadata), the in-flight cap (``capped``: inference calls, as HTTP caps POSTs), errors
    mapped to status codes, per-method metrics and the access log."""
    counters: dict[grpc.StatusCode, metrics.Count] = {}
    latency = metrics.deferred_histogram(metrics.GRPC_LATENCY.labels(method=method))

    def count(code: grpc.StatusCode) -> metrics.Count:
        if code not in counters:
            counters[code] = metrics.deferred_counter(
                metrics.GRPC_REQUESTS.labels(method=method, code=code.name)
            )
        return counters[code]

    def wrap(handler: Handler[Servicer, Req, Resp]) -> Handler[Servicer, Req, Resp]:
        @functools.wraps(handler)
        async def call(self: Servicer, request: Req, context: grpc.aio.ServicerContext) -> Resp:
            started = time.perf_counter()
            request_id = _request_id(context)
            token = request_id_var.set(request_id)
            trailer = ((REQUEST_ID_HEADER, request_id),)
            code = grpc.StatusCode.OK
            message = ""
            counted = capped and self.inflight_cap > 0
            try:
                if counted:
                    if self.inflight >= self.inflight_cap:
                        code = grpc.StatusCode.RESOURCE_EXHAUSTED
                        message = (
                            f"overloaded: {self.inflight_cap} requests already in flight "
                            "(max_inflight_requests); retry later"
                        )
                        counted = False
                        metrics.OVERLOAD_REFUSALS.labels(model="").inc()
                        await context.abort(code, message, trailer)
                    self.inflight += 1
                try:
                    if isinstance(request, Undecodable):
                        raise BadRequest(request.message)
                    response = await handler(self, request, context)
                except ServiceError as exc:
                    code, message = status_of(exc), exc.message
                    await context.abort(code, message, trailer)
                except asyncio.CancelledError:
                    remaining = context.time_remaining()
                    expired = remaining is not None and remaining <= 0
                    code = (
                        grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
                    )
                    raise
                except Exception:
                    code, message = grpc.StatusCode.INTERNAL, "internal error"
                    errors_log.exception("%s failed", method)
                    await context.abort(code, message, trailer)
                context.set_trailing_metadata(trailer)
                return response
            finally:
                if counted:
                    self.inflight -= 1
                elapsed = time.perf_counter() - started
                count(code).inc()
                latency.observe(elapsed)
                if self.log_all or (self.log_errors and code is not grpc.StatusCode.OK):
                    log.info(
                        "gRPC %s -> %s in %.1f ms%s",
                        method,
                        code.name,
                        elapsed * 1000,
                        f": {message}" if message else "",
                        extra={
                            "status": code.name,
                            "duration_ms": round(elapsed * 1000, 3),
                            "request_id": request_id,
                        },
                    )
                request_id_var.reset(token)

        return call

    return wrap
