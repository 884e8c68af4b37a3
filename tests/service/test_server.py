"""Real ``python -m service`` processes: tritonclient and TF-Serving-style JSON over TCP,
multi-worker metrics, SIGTERM drain with requests in flight."""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from bench._metrics import metric
from bench._process import ServerProcess, start_server
from tests.support import finish_upload, slow_upload
from xor_dnn.modelstore import load_version

pytestmark = pytest.mark.slow

QUADRANTS = np.array([[1.5, 2.0], [-2.0, 1.0], [-3.0, -1.5], [2.5, -3.5]], np.float32)


def test_tritonclient_and_tfserving_json(
    model_dir: Path, tmp_path: Path, server_factory: list[ServerProcess]
) -> None:
    import tritonclient.http as triton

    server = start_server(model_dir, tmp_path / "server.log")
    server_factory.append(server)
    want = load_version(model_dir, 2).predict(QUADRANTS)

    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("xor")
    meta = client.get_model_metadata("xor")
    assert meta["inputs"][0]["name"] == "points"
    for binary in (True, False):  # tritonclient's default (binary) and plain JSON
        inp = triton.InferInput("points", list(QUADRANTS.shape), "FP32")
        inp.set_data_from_numpy(QUADRANTS, binary_data=binary)
        outputs = [triton.InferRequestedOutput("probability", binary_data=binary),
                   triton.InferRequestedOutput("class_id", binary_data=binary)]  # fmt: skip
        result = client.infer("xor", [inp], outputs=outputs)
        np.testing.assert_allclose(result.as_numpy("probability")[:, 0], want, rtol=1e-5)
        assert result.as_numpy("class_id")[:, 0].tolist() == [0, 1, 0, 1]
    # No outputs named: every output, binary (the client's default request).
    inp = triton.InferInput("points", [4, 2], "FP64")
    inp.set_data_from_numpy(QUADRANTS.astype(np.float64))
    result = client.infer("xor", [inp], model_version="1")
    assert result.get_response()["model_version"] == "1"
    assert result.as_numpy("probability").shape == (4, 1)
    with pytest.raises(triton.InferenceServerException, match="points"):
        bad = triton.InferInput("wrong", [1, 2], "FP32")
        bad.set_data_from_numpy(QUADRANTS[:1])
        client.infer("xor", [bad])
    client.close()

    # Plain TF Serving REST JSON, over a real socket.
    r = httpx.post(f"{server.url}/v1/models/xor:predict", json={"instances": QUADRANTS.tolist()})
    np.testing.assert_allclose(np.array(r.json()["predictions"])[:, 0], want, rtol=1e-5)

    # The default access log (errors): a failed request's id is in the log, a success's is not.
    good = {"points": [{"x": 1.0, "y": -1.0}]}
    r = httpx.post(f"{server.url}/predict", json=good, headers={"X-Request-ID": "quiet-200"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "quiet-200"
    bad = {"points": [{"x": 1.0}]}
    r = httpx.post(f"{server.url}/predict", json=bad, headers={"X-Request-ID": "traced-422"})
    assert r.status_code == 422 and r.headers["x-request-id"] == "traced-422"
    assert server.terminate() == 0
    log = server.log()
    assert re.search(r"\[traced-422\] service.access: POST /predict -> 422 in ", log), log[-3000:]
    assert "quiet-200" not in log


def _predict_200s(text: str) -> float:
    return metric(
        text, "xor_dnn_http_requests_total", method="POST", route="/predict", status="200"
    )


def test_two_workers_report_metrics_together(
    model_dir: Path, tmp_path: Path, server_factory: list[ServerProcess]
) -> None:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    prom_dir = tmp_path / "prom"
    server = start_server(
        model_dir, tmp_path / "server.log", "--workers", "2",
        env={"PROMETHEUS_MULTIPROC_DIR": str(prom_dir)},
    )  # fmt: skip
    server_factory.append(server)
    body = {"points": [{"x": 1.0, "y": -1.0}]}

    def per_worker() -> list[float]:
        """Each worker's own count, read from its own mmap file."""
        counts = []
        for db in sorted(prom_dir.glob("counter_*.db")):
            single = tmp_path / f"single-{db.stem}"
            single.mkdir(exist_ok=True)
            (single / db.name).write_bytes(db.read_bytes())
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=str(single))  # type: ignore[no-untyped-call]
            counts.append(_predict_200s(generate_latest(registry).decode()))
        return counts

    sent = 0
    for _ in range(20):  # new connections until the kernel has given work to both workers
        for _ in range(10):
            r = httpx.post(f"{server.url}/predict", json=body, headers={"Connection": "close"})
            assert r.status_code == 200
            sent += 1
        if sum(1 for c in per_worker() if c > 0) >= 2:
            break
    # A worker counts a request once its answer is sent, so the client can read the answer a
    # moment before the count lands: wait for it (each worker's count only ever grows).
    deadline = time.monotonic() + 30
    while sum(counts := per_worker()) < sent and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sum(1 for c in counts if c > 0) >= 2, f"one worker took every request: {counts}"
    assert sum(counts) == sent
    for _ in range(4):  # whichever worker answers the scrape reports everyone's requests
        scrape = httpx.get(f"{server.url}/metrics", headers={"Connection": "close"}).text
        assert _predict_200s(scrape) == sent
        assert "xor_dnn_model_version_loaded" in scrape
    assert server.terminate() == 0


def test_cli_multiproc_dir_is_created_and_removed(
    model_dir: Path, tmp_path: Path, server_factory: list[ServerProcess]
) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    server = start_server(
        model_dir, tmp_path / "server.log", "--workers", "2", env={"TMPDIR": str(scratch)}
    )
    server_factory.append(server)
    made = list(scratch.glob("xor-dnn-prometheus-*"))
    assert len(made) == 1 and any(made[0].iterdir())
    assert server.terminate() == 0
    assert not made[0].exists()


def test_sigterm_drains_requests_in_flight(
    model_dir: Path, tmp_path: Path, server_factory: list[ServerProcess]
) -> None:
    held_count = 8
    body = json.dumps({"points": [{"x": 1.0, "y": -1.0}] * 500}).encode()
    server = start_server(
        model_dir, tmp_path / "server.log",
        "--max-inflight-requests", str(held_count), "--body-timeout-s", "120",
    )  # fmt: skip
    server_factory.append(server)
    held = [slow_upload(server.url, body) for _ in range(held_count)]
    try:
        # Every held request is inside the service once the in-flight cap refuses one more:
        # SIGTERM then provably arrives with all of them in flight, however busy the machine.
        deadline = time.monotonic() + 60
        while httpx.post(f"{server.url}/predict", content=body, timeout=30).status_code != 503:
            assert time.monotonic() < deadline, "the held requests never filled the cap"
            time.sleep(0.02)
        server.proc.send_signal(signal.SIGTERM)
        statuses = [finish_upload(sock, body) for sock in held]
    finally:
        for sock in held:
            sock.close()
    assert server.proc.wait(timeout=60) == 0, server.log()
    assert statuses == [200] * held_count, statuses
    log = server.log()
    assert "Shutting down" in log or "stopped" in log
