"""The gRPC server: built and started by the app's lifespan, on uvicorn's event loop.

Every service shares the app's :class:`~service.dataplane.DataPlane` (registry, batcher,
limits, metrics). Shutdown (``stop``) first turns health to NOT_SERVING, then lets calls in
flight finish within the drain timeout while new ones get UNAVAILABLE, before the lifespan
stops the batcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from service.config import Settings
from service.dataplane import DataPlane
from service.grpc import tfserving, v2
from service.grpc.calls import register
from service.grpc.health import DESCRIPTOR as HEALTH
from service.grpc.health import HealthServicer

log = logging.getLogger(__name__)


@dataclass
class GrpcServer:
    server: grpc.aio.Server
    health: HealthServicer
    follower: asyncio.Task[None]
    port: int

    async def stop(self, grace: float) -> None:
        """NOT_SERVING at once, then drain: calls in flight get ``grace`` seconds."""
        self.health.drain()
        self.follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.follower
        await self.server.stop(grace)


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS from the same files as HTTP; mutual TLS when a client CA is given."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    ca = settings.tls_client_ca_file
    return grpc.ssl_server_credentials(
        [(Path(settings.tls_key_file).read_bytes(), Path(settings.tls_cert_file).read_bytes())],
        root_certificates=Path(ca).read_bytes() if ca is not None else None,
        require_client_auth=ca is not None,
    )


def address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def start(settings: Settings, dataplane: DataPlane) -> GrpcServer:
    """Bind ``settings.grpc_port`` and serve; raises ``RuntimeError`` if it cannot bind."""
    size = settings.grpc_max_message_bytes
    options = [
        ("grpc.max_receive_message_length", size),
        ("grpc.max_send_message_length", size),
        # Several workers share the port through SO_REUSEPORT (the kernel spreads
        # connections); one worker binds it alone, so a port already in use fails loudly.
        ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
    ]
    server = grpc.aio.server(options=options)
    servicers = [
        v2.InferenceServicer(dataplane),
        tfserving.PredictionServicer(dataplane),
        tfserving.ModelServicer(dataplane),
    ]
    for servicer in servicers:
        register(server, servicer.DESCRIPTOR, servicer)
    served = [servicer.DESCRIPTOR.full_name for servicer in servicers]
    health = HealthServicer(dataplane, served)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        [*served, HEALTH.full_name, reflection.SERVICE_NAME], server
    )
    where = address(settings.host, settings.grpc_port)
    credentials = server_credentials(settings)
    try:
        if credentials is None:
            port = server.add_insecure_port(where)
        else:
            port = server.add_secure_port(where, credentials)
    except RuntimeError as exc:
        raise RuntimeError(f"gRPC: cannot listen on {where} (grpc_port): {exc}") from None
    await server.start()
    follower = asyncio.create_task(
        health.follow(min(settings.poll_interval, 1.0)), name="grpc-health-follower"
    )
    log.info("gRPC listening on %s (%s)", where, "TLS" if credentials is not None else "plaintext")
    return GrpcServer(server, health, follower, port)
