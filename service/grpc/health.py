"""``grpc.health.v1.Health`` following the data plane: SERVING only while it is ready (a
model loaded, the batcher running), NOT_SERVING before and, for good, once draining starts.

Kubernetes' native ``grpc:`` probes and ``grpc_health_probe`` call ``Check``; ``Check``
reads readiness at the moment of the call. ``Watch`` streams follow it within one model
poll interval (the registry changes readiness no faster than it polls).
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from grpc_health.v1 import health
from grpc_health.v1 import health_pb2 as pb

from service.dataplane import DataPlane

SERVICE = "grpc.health.v1.Health"


class HealthServicer(health.aio.HealthServicer):  # type: ignore[misc]
    """The overall status (service ``""``) and one per served gRPC service, all equal."""

    def __init__(self, dataplane: DataPlane, services: list[str]) -> None:
        super().__init__()
        self.dataplane = dataplane
        self.services = ["", *services]

    async def sync(self) -> None:
        status = (
            pb.HealthCheckResponse.SERVING
            if self.dataplane.ready
            else (pb.HealthCheckResponse.NOT_SERVING)
        )
        for service in self.services:
            await self.set(service, status)

    async def follow(self, interval: float) -> None:
        """Keep ``Watch`` streams current until cancelled."""
        while True:
            await self.sync()
            await asyncio.sleep(interval)

    async def Check(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self.sync()
        return await super().Check(request, context)
