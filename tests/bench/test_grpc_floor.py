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
