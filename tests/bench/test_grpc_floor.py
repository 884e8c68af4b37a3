"""The gRPC benchmark's floor answers the load generator's own request (it once crashed with
INTERNAL on every call when the data plane learned to look models up by name)."""

from __future__ import annotations

import subprocess  # nosec B404
import sys

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb

from bench._process import free_port
from bench.grpc import METHOD, ROOT, _request_bytes

pytestmark = pytest.mark.slow


def test_floor_answers_the_load_generators_request() -> None:
    port = free_port()
    floor = subprocess.Popen(  # nosec B603
        [sys.executable, "-m", "bench.grpc", "floor", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=60)
            call = channel.unary_unary(METHOD)
            reply = pb.ModelInferResponse.FromString(call(_request_bytes(), timeout=30))
        assert [out.name for out in reply.outputs] == ["probability", "class_id"]
        assert np.frombuffer(reply.raw_output_contents[0], "<f4").tolist() == [0.5]
    finally:
        floor.terminate()
        _, stderr = floor.communicate(timeout=30)
    assert b"Traceback" not in stderr, stderr.decode(errors="replace")


def test_the_floor_runs_on_the_event_loop_uvicorn_gives_the_service() -> None:
    import asyncio

    import uvicorn

    from bench.grpc import run_on_service_loop

    def kind(loop: str) -> type:
        got: list[type] = []

        async def record() -> None:
            got.append(type(asyncio.get_running_loop()))

        run_on_service_loop(record(), loop)
        return got[0]

    service_factory = uvicorn.Config(app=None, loop="auto").get_loop_factory()  # type: ignore[arg-type]
    assert service_factory is not None
    service_loop = service_factory()
    try:
        assert kind("auto") is type(service_loop)  # uvloop's loop where it is installed
    finally:
        service_loop.close()
    assert kind("asyncio") is not kind("uvloop")
