"""Triton's model-repository extension (which MLServer implements too), behind an admin token:
``POST /v2/repository/index``, ``/v2/repository/models/{name}/load`` and ``.../unload``.

These routes exist only when an admin token is configured (``admin_token`` or
``admin_token_file``; :func:`install`), have no switch in common with the public prediction
routes, and every call goes through :class:`AdminGate` first: a per-address rate limit (it
counts failed attempts too), then ``Authorization: Bearer <token>`` compared in constant time
(401 without or with malformed credentials, 403 with a wrong token, both as the V2 JSON error
shape), and a log line with the caller's address. ``tritonclient.http``'s
``get_model_repository_index``, ``load_model`` and ``unload_model`` work unchanged with the
header passed as ``headers=``. docs/hardening.md holds the threat model.
"""

from __future__ import annotations

import hmac
import logging
import time
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, FastAPI, Request
from starlette.responses import Response

from service.errors import (
    BadRequest,
    Forbidden,
    InvalidInput,
    Overloaded,
    ServiceError,
    Unauthorized,
)
from service.repository import IndexEntry
from service.responses import check_content_headers, json_response, receive_body
from service.routes.common import DataPlaneDep
from service.schemas import ProtocolErrorResponse

log = logging.getLogger("service.admin")

router = APIRouter(prefix="/v2/repository", tags=["model repository (admin)"])

_MAX_TRACKED_ADDRESSES = 10_000
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ProtocolErrorResponse, "description": text}
    for code, text in {
        400: "Invalid body, or the model control does not allow it",
        401: "No credentials, or not Authorization: Bearer <token>",
        403: "Wrong admin token",
        404: "No such model",
        429: "Too many admin requests from this address; retry after Retry-After seconds",
    }.items()
}


class AdminGate:
    """Rate limit, then Bearer-token check, of one admin request; the caller's address out.

    The limit is a token bucket per client address (``rate_per_minute``, refilled
    continuously), so a token cannot be guessed at line rate and one caller cannot keep the
    server loading models; it runs before the token check so failures count.
    """

    def __init__(self, secret: bytes, rate_per_minute: int) -> None:
        self._secret = secret
        self._capacity = float(rate_per_minute)
        self._refill_per_s = rate_per_minute / 60.0
        self._buckets: dict[str, tuple[float, float]] = {}

    def check(self, request: Request) -> str:
        address = request.client.host if request.client else "unknown"
        where = f"{request.method} {request.url.path[:200]}"
        self._take(address, where)
        header = request.headers.get("authorization")
        if header is None:
            log.warning("admin %s from %s refused: no credentials (401)", where, address)
            raise Unauthorized("Authorization: required, as 'Bearer <admin token>'")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            log.warning("admin %s from %s refused: malformed credentials (401)", where, address)
            raise Unauthorized("Authorization: expected 'Bearer <admin token>'")
        if not hmac.compare_digest(token.encode(), self._secret):
            log.warning("admin %s from %s refused: wrong token (403)", where, address)
            raise Forbidden("Authorization: the token is not this server's admin token")
        return address

    def _take(self, address: str, where: str) -> None:
        now = time.monotonic()
        tokens, since = self._buckets.get(address, (self._capacity, now))
        tokens = min(self._capacity, tokens + (now - since) * self._refill_per_s)
        if tokens < 1.0:
            self._buckets[address] = (tokens, now)
            log.warning("admin %s from %s refused: rate limit (429)", where, address)
            raise Overloaded(
                f"too many admin requests from {address}: the limit is "
                f"{self._capacity:g} per minute (admin_rate_limit)",
                retry_after=(1.0 - tokens) / self._refill_per_s,
            )
        self._buckets[address] = (tokens - 1.0, now)
        if len(self._buckets) > _MAX_TRACKED_ADDRESSES:
            self._forget_full(now)

    def _forget_full(self, now: float) -> None:
        # A bucket refilled to capacity says nothing a fresh one would not.
        for address, (tokens, since) in list(self._buckets.items()):
            if tokens + (now - since) * self._refill_per_s >= self._capacity:
                del self._buckets[address]


async def admin_caller(request: Request) -> str:
    gate: AdminGate = request.app.state.admin_gate
    return gate.check(request)


AdminCaller = Annotated[str, Depends(admin_caller)]


async def _json_object(request: Request) -> dict[str, Any]:
    """The optional JSON object body (tritonclient sends an empty one for the index)."""
    check_content_headers(
        request.headers.get("content-type", ""),
        request.headers.get("content-encoding", ""),
        lenient=True,
    )
    raw = await receive_body(request.receive)
    if not raw.strip():
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"body: not valid JSON ({exc})", field="body") from None
    if not isinstance(body, dict):
        raise InvalidInput("body: must be a JSON object", field="body")
    return body


def _audit(caller: str, action: str, name: str, outcome: str) -> None:
    log.info(
        "admin %s '%s' from %s: %s",
        action,
        name[:80],
        caller,
        outcome,
        extra={"client": caller, "admin_action": action, "model_name": name[:80]},
    )


@router.post("/index", responses=_ERRORS, summary="Every model in the repository and its state")
async def repository_index(
    request: Request, caller: AdminCaller, dataplane: DataPlaneDep
) -> Response:
    body = await _json_object(request)
    ready_only = body.get("ready", False)
    if not isinstance(ready_only, bool):
        raise InvalidInput("ready: must be true or false", field="ready")
    entries: list[IndexEntry] = await dataplane.models.index()
    if ready_only:
        entries = [e for e in entries if e.state == "READY"]
    _audit(caller, "index", "*", f"{len(entries)} models")
    return json_response([e.as_json() for e in entries])


@router.post("/models/{model_name}/load", responses=_ERRORS, summary="Load or reload a model")
async def load_model(
    model_name: str, request: Request, caller: AdminCaller, dataplane: DataPlaneDep
) -> Response:
    body = await _json_object(request)
    parameters = body.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidInput("parameters: must be a JSON object", field="parameters")
    if parameters:
        unsupported = sorted(parameters)[0]
        raise InvalidInput(
            f"parameters.{unsupported[:60]}: not supported; models are loaded from the "
            "repository's folders only (no config override or uploaded files)",
            field=f"parameters.{unsupported[:60]}",
        )
    try:
        served = await dataplane.models.load(model_name)
    except ServiceError as exc:
        _audit(caller, "load", model_name, f"refused ({exc.status_code}): {exc.message}")
        raise
    version = served.registry.default_version
    _audit(caller, "load", model_name, f"ready, version {version}")
    return json_response(IndexEntry(model_name, "READY", version=version).as_json())


@router.post("/models/{model_name}/unload", responses=_ERRORS, summary="Unload a model")
async def unload_model(
    model_name: str, request: Request, caller: AdminCaller, dataplane: DataPlaneDep
) -> Response:
    await _json_object(request)  # {"parameters": {"unload_dependents": ...}}: nothing depends
    try:
        await dataplane.models.unload(model_name)
    except ServiceError as exc:
        _audit(caller, "unload", model_name, f"refused ({exc.status_code}): {exc.message}")
        raise
    _audit(caller, "unload", model_name, "unloaded")
    return json_response(IndexEntry(model_name, "UNAVAILABLE", reason="unloaded").as_json())


def install(app: FastAPI, secret: bytes, *, rate_per_minute: int) -> None:
    """Add the repository routes to ``app``, guarded by ``secret``."""
    app.state.admin_gate = AdminGate(secret, rate_per_minute)
    app.include_router(router)
