"""The in-flight cap over real HTTP: slow uploads fill it, the excess is refused at once with a
JSON 503 and Retry-After before its body is read, probes still pass, and the service recovers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from bench._process import ServerProcess, start_server
from tests.support import finish_upload, slow_upload

CAP = 4
JSON = {"Content-Type": "application/json"}
BODY = orjson.dumps({"points": [{"x": 1.0, "y": -1.0}]})


@pytest.fixture(scope="module")
def capped_server(model_dir: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    server = start_server(model_dir, tmp_path / "server.log", "--max-inflight-requests", str(CAP))
    yield server
    if server.proc.poll() is None:
        assert server.terminate() == 0, server.log()


@pytest.fixture(scope="module")
def tmp_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("inflight")


def test_excess_over_the_cap_is_refused_fast_then_service_recovers(
    capped_server: ServerProcess,
) -> None:
    url = capped_server.url
    slow = [slow_upload(url, BODY) for _ in range(CAP)]
    try:
        with httpx.Client(base_url=url, timeout=10, headers=JSON) as client:
            deadline = time.monotonic() + 60
            refused = client.post("/predict", content=BODY)
            # The slow uploads reach the app asynchronously; wait until all of them hold a slot.
            while refused.status_code == 200 and time.monotonic() < deadline:
                time.sleep(0.05)
                refused = client.post("/predict", content=BODY)
            assert refused.status_code == 503, refused.text
            assert refused.headers["retry-after"] == "1"
            assert refused.headers["x-request-id"]
            error = refused.json()["error"]
            assert error["code"] == "overloaded"
            assert "max_inflight_requests" in error["message"]
            assert str(CAP) in error["message"]

            # Answered without waiting for anything: well under the body timeout (10 s).
            started = time.perf_counter()
            for _ in range(20):
                assert client.post("/predict", content=BODY).status_code == 503
            assert (time.perf_counter() - started) / 20 < 0.5

            # Protocol routes keep their own error shape; probes are never capped.
            v1 = client.post("/v1/models/xor:predict", json={"instances": [[1.0, -1.0]]})
            assert v1.status_code == 503
            assert "max_inflight_requests" in v1.json()["error"]
            assert client.get("/readyz").status_code == 200
            metrics = client.get("/metrics").text
            assert 'xor_dnn_overload_refusals_total{model=""} 22.0' in metrics

        # The held requests complete normally once their bodies arrive.
        assert [finish_upload(sock, BODY) for sock in slow] == [200] * CAP
    finally:
        for sock in slow:
            sock.close()

    with httpx.Client(base_url=url, timeout=10, headers=JSON) as client:
        assert client.post("/predict", content=BODY).status_code == 200
        # All slots are free again: CAP slow uploads plus one more all get in.
        slow = [slow_upload(url, BODY) for _ in range(CAP - 1)]
        try:
            time.sleep(0.2)
            assert client.post("/predict", content=BODY).status_code == 200
            assert [finish_upload(sock, BODY) for sock in slow] == [200] * (CAP - 1)
        finally:
            for sock in slow:
                sock.close()


def test_a_closed_slow_upload_frees_its_slot(capped_server: ServerProcess) -> None:
    url = capped_server.url
    for _ in range(3):  # each round fills the cap and abandons it; a leak would refuse forever
        for sock in [slow_upload(url, BODY) for _ in range(CAP)]:
            sock.close()
    with httpx.Client(base_url=url, timeout=10, headers=JSON) as client:
        deadline = time.monotonic() + 60
        status = client.post("/predict", content=BODY).status_code
        while status != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
            status = client.post("/predict", content=BODY).status_code
        assert status == 200
