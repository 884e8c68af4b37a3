"""The app factory: ``create_app(settings)`` wires the models, routers and middleware.

Nothing is built at import time. The lifespan loads every wanted model (their versions in a
thread: TensorFlow is slow to import and load) before the app takes traffic, each with its
batcher and folder poller (:mod:`service.repository`), and on shutdown drains the batchers
within ``drain_timeout_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.params import Depends
from pydantic.json_schema import models_json_schema
from starlette.types import ASGIApp, Receive, Scope, Send

from service import apidocs, metrics
from service.config import SUPERVISOR_PID_ENV, Settings
from service.dataplane import DataPlane
from service.dataroutes import DataLane, Dispatcher
from service.middleware import Hooks, ServiceMiddleware
from service.registry import set_tf_threads
from service.repository import Repository
from service.routes import health, models, predict, repository, tfserving, v2
from service.routes.common import install_error_handlers
from service.schemas import REQUEST_MODELS, exact_request_schemas
from service.security import SecurityHeaders
from xor_dnn import __version__

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    set_tf_threads(settings.tf_threads)
    models = Repository(settings)
    await models.start()
    if not models.ready:
        log.warning(
            "no model can answer yet (source %s); not ready, polling every %.1f s",
            settings.model_repository or settings.model_dir,
            settings.poll_interval,
        )
    dataplane = DataPlane(settings, models)
    app.state.dataplane = dataplane
    grpc_server = None
    flusher = asyncio.create_task(metrics.flush_every(), name="metrics-flush")
    try:
        if settings.grpc_port:
            from service.grpc import server as grpc_server_module  # grpc only when asked for

            grpc_server = await grpc_server_module.start(settings, dataplane)
        app.state.grpc_port = grpc_server.port if grpc_server else None
        yield
    finally:
        # uvicorn gets here after it stopped accepting and in-flight requests finished (or
        # its graceful timeout passed); gRPC calls in flight get the drain timeout too, then
        # whatever is still queued gets it.
        if grpc_server is not None:
            await grpc_server.stop(settings.drain_timeout_s)
        dataplane.stopping = True
        await models.stop()
        flusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flusher
        metrics.flush()
        gc.unfreeze()  # a process that builds many apps (tests) frees each one's models
        metrics.mark_worker_dead(os.getpid())
        log.info("stopped")


class ServiceApp(FastAPI):
    """FastAPI with the service's front door around its middleware stack.

    Outside in: :class:`ServiceMiddleware` (limits, request ids, CORS, :class:`Hooks`,
    metrics, access log), then any middleware added with ``app.add_middleware``, then the
    :class:`~service.dataroutes.Dispatcher`, which answers the data-plane POSTs itself and
    hands everything else to FastAPI's own stack (error handling, routing, dependencies).
    With no added middleware, the service's HTTP protocol answers a data route's POST whose
    body came whole through :attr:`data_lane`: the same steps, without the ASGI cycle.
    """

    data_lane: DataLane | None = None
    """Set with the middleware stack: how the service's HTTP protocol answers the data routes'
    POSTs whose body came whole (``service.server``); None while anything wraps the
    dispatcher."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stack = self.middleware_stack
        if stack is not None and scope["type"] == "http":
            # What FastAPI's and Starlette's __call__ do for a request once the stack is built
            # (root_path is the front door's, telemetry is off), without their checks.
            scope["app"] = self
            await stack(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    def build_middleware_stack(self) -> ASGIApp:
        user, self.user_middleware = self.user_middleware, []
        try:
            framework = super().build_middleware_stack()
        finally:
            self.user_middleware = user
        dispatcher = Dispatcher(self.routes, framework)
        app: ASGIApp = dispatcher
        self.state.fast_paths = dispatcher.paths
        for cls, args, kwargs in reversed(user):
            app = cls(app, *args, **kwargs)
        settings: Settings = self.state.settings
        door = ServiceMiddleware(
            app,
            max_body_bytes=settings.max_body_bytes,
            body_timeout_s=settings.body_timeout_s,
            max_inflight_requests=settings.inflight_cap,
            root_path=settings.root_path,
            access_log=settings.access_log,
            cors_origins=settings.cors_origins,
            hooks=self.state.hooks,
        )
        # Only when the door opens straight onto the dispatcher: an added middleware must see
        # every request, so then every request takes the ASGI way.
        self.data_lane = None if user else DataLane(self, door, dispatcher)
        return door


def create_app(
    settings: Settings | None = None,
    *,
    hooks: Hooks | None = None,
    dependencies: Sequence[Depends] | None = None,
) -> FastAPI:
    """A new app; the lifespan (``with TestClient(app)`` or a server) loads the models.

    ``hooks`` run on every request and answer (:class:`~service.middleware.Hooks`);
    ``dependencies`` are FastAPI dependencies of every route (a route that has any is
    answered through FastAPI, so they run on it).
    """
    settings = settings or Settings()
    app = ServiceApp(
        title="xor-dnn inference service",
        version=__version__,
        description=(
            "Serves the XOR lesson's Keras DNN: `POST /predict`, TensorFlow Serving's REST API "
            "(`/v1`) and the Open Inference Protocol (`/v2`), with dynamic batching."
        ),
        lifespan=lifespan,
        # FastAPI's built-in OpenTelemetry bridge looks up the global providers (environment
        # reads) on every request; this service reports through Prometheus and its logs.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        docs_url=None,  # served from the installed package instead (service.apidocs)
        redoc_url=None,
        openapi_url=settings.openapi_path if settings.enable_docs else None,
        dependencies=dependencies,
    )
    app.state.settings = settings
    app.state.dataplane = None
    given = hooks if hooks is not None else Hooks()
    security = SecurityHeaders(
        frame_ancestors=settings.frame_ancestors, tls=settings.tls_cert_file is not None
    )
    # A copy (the caller's Hooks may serve several apps); the security headers first, so the
    # caller's header hooks see them.
    app.state.hooks = Hooks(
        on_request=list(given.on_request),
        response_headers=[security, *given.response_headers],
    )
    install_error_handlers(app)
    for router in (predict.router, tfserving.router, v2.router, health.router, models.router):
        app.include_router(router)
    secret = settings.admin_secret
    if secret is not None:
        # Off unless a token is configured: without one the routes do not exist (404).
        repository.install(app, secret, rate_per_minute=settings.admin_rate_limit)
    if settings.enable_metrics:
        app.add_route(
            settings.metrics_path, health.metrics_endpoint, methods=["GET"], include_in_schema=False
        )
    if settings.enable_docs:
        apidocs.install(app, settings.docs_path, settings.openapi_path)
    app.mount("/static", models.static_files(), name="static")
    _publish_request_schemas(app)

    return app


def _publish_request_schemas(app: FastAPI) -> None:
    """Routes read raw bodies (for speed and exact errors); OpenAPI still shows their schema."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        _, defs = models_json_schema(
            [(model, "validation") for model in REQUEST_MODELS],
            ref_template="#/components/schemas/{model}",
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for name, definition in defs.get("$defs", {}).items():
            components.setdefault(name, definition)
        settings: Settings = app.state.settings
        exact_request_schemas(components, settings.max_points_per_request)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app_from_env() -> FastAPI:
    """uvicorn's factory for ``--workers > 1``: each worker rebuilds Settings from XOR_DNN_*."""
    exit_with_supervisor()
    return create_app(Settings())


def exit_with_supervisor() -> bool:
    """Have Linux send this worker SIGTERM when its supervisor dies; True if arranged.

    uvicorn's supervisor stops its workers on SIGTERM, but a supervisor that is killed outright
    (SIGKILL, the OOM killer) cannot: its workers would go on serving the port, unsupervised,
    invisible to ``/metrics`` aggregation's cleanup. ``prctl(PR_SET_PDEATHSIG)`` asks the
    kernel to SIGTERM the worker then, which drains it like any shutdown. uvicorn starts and
    restarts workers from its main thread, whose end is the process's end, as the flag needs.
    If the supervisor died before the flag was set, the worker stops itself at once.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):  # no libc or no prctl: nothing to arrange
        return False
    supervisor = os.environ.get(SUPERVISOR_PID_ENV)
    if supervisor and supervisor != str(os.getppid()):
        log.warning(
            "the supervisor (pid %s) is gone before this worker started; exiting", supervisor
        )
        os.kill(os.getpid(), signal.SIGTERM)
    return True


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
