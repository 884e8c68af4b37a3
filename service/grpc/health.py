"""``grpc.health.v1.Health`` following the data plane: SERVING only while it is ready (a
model loaded, the batcher running), NOT_SERVING before and, for good, once draining starts.

Kubernetes' native ``grpc:`` probes and ``grpc_health_probe`` call ``Check``, which reads
readiness at the moment of the call. ``Watch`` streams hear of a change within one model poll
interval (readiness changes no faster than the registry polls), and end after telling
NOT_SERVING when the server drains, so an open stream never holds the drain up.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from grpc_health.v1 import health_pb2 as pb
from grpc_health.v1 import health_pb2_grpc

from service.dataplane import DataPlane

DESCRIPTOR = pb.DESCRIPTOR.services_by_name["Health"]
SERVING = pb.HealthCheckResponse.SERVING
NOT_SERVING = pb.HealthCheckResponse.NOT_SERVING


class HealthServicer(health_pb2_grpc.HealthServicer):  # type: ignore[misc]
    """One status for the server (service ``""``) and for every gRPC service it serves."""

    def __init__(self, dataplane: DataPlane, services: list[str]) -> None:
        self.dataplane = dataplane
        self.services = frozenset(["", *services])
        self.draining = False
        self._changed = asyncio.Event()

    def status(self) -> Any:
        return SERVING if self.dataplane.ready and not self.draining else NOT_SERVING

    async def Check(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        if request.service not in self.services:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"service '{request.service[:80]}' is not served here; "
                f"served: {', '.join(sorted(self.services - {''}))}",
            )
        return pb.HealthCheckResponse(status=self.status())

    async def Watch(self, request: Any, context: grpc.aio.ServicerContext) -> None:
        known = request.service in self.services
        last = None
        while True:
            changed = self._changed  # taken before reading, so no change is missed
            status = self.status() if known else pb.HealthCheckResponse.SERVICE_UNKNOWN
            if status != last:
                await context.write(pb.HealthCheckResponse(status=status))
                last = status
            if self.draining:
                return
            await changed.wait()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def follow(self, interval: float) -> None:
        """Wake ``Watch`` streams when readiness flips; runs until cancelled."""
        last = self.status()
        while True:
            await asyncio.sleep(interval)
            now = self.status()
            if now != last:
                last = now
                self._notify()

    def drain(self) -> None:
        """NOT_SERVING from now on; open ``Watch`` streams say so and end."""
        self.draining = True
        self._notify()
