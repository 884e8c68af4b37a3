"""bench.grpc's open loop from h2load: HTTP/2 alone cannot tell a failed gRPC call (its
status travels in trailers), so the service's own per-code counters must."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb

from bench.grpc import h2load_open_loop
from tests.grpc.conftest import GrpcProcess

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("h2load") is None, reason="needs nghttp2-client's h2load"),
]


def test_open_loop_calls_are_answered_ok_and_timed(served: GrpcProcess) -> None:
    r = h2load_open_loop(
        served.target, rate=200, duration=2, clients=2, metrics_url=served.process.url
    )
    assert r["statuses"] == {"200": r["calls"]}
    assert 300 <= r["calls"] <= 500  # 400 due in 2 s; h2load's clock is its own
    assert 0 < r["p50_ms"] <= r["p99_ms"]


def test_failed_calls_are_counted_from_the_service_metrics(served: GrpcProcess) -> None:
    request = pb.ModelInferRequest(model_name="no-such-model")
    request.inputs.add(name="points", datatype="FP32", shape=[1, 2])
    request.raw_input_contents.append(np.zeros((1, 2), np.float32).tobytes())
    r = h2load_open_loop(
        served.target,
        rate=100,
        duration=1.0,
        clients=1,
        body=request.SerializeToString(),
        metrics_url=served.process.url,
    )
    # Every call got HTTP 200 from h2load's point of view, and NOT_FOUND from the service's.
    assert r["calls"] == 0
    assert set(r["statuses"]) == {"NOT_FOUND"} and r["statuses"]["NOT_FOUND"] >= 50
