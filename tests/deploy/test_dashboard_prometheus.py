"""Debian's Prometheus scrapes a live ``xor-dnn serve`` with the repo's scrape config and rules;
under load, every PromQL expression of the Grafana dashboard and every recording rule returns
data, and the model-load-failure alert fires.

The load covers what the panels show: answered predictions, points outside the training range
(drift), 503 refusals past ``--max-inflight-requests`` (the 5xx and overload panels) and a
version folder that fails to load (the load-failure panel). Grafana's variables are
substituted as Grafana does with "All" selected: ``$instance`` by ``.*``, ``$__rate_interval``
by four scrape intervals at least.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from bench._process import ServerProcess, free_port, start_server
from tests.deploy.prometheus import RULES, Prometheus, local_config, run_prometheus, tool

pytestmark = pytest.mark.slow

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy/grafana/dashboards/xor-dnn.json"
SCRAPE_INTERVAL_S = 1
RATE_INTERVAL = "20s"
RESULT_TIMEOUT_S = 120.0
BROKEN_VERSION = 3


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel, variables substituted."""
    dash = json.loads(DASHBOARD.read_text())
    out = []
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$instance", ".*")
            expr = expr.replace("$__rate_interval", RATE_INTERVAL)
            assert "$" not in expr, f"unsubstituted variable in {panel['title']!r}: {expr}"
            out.append((panel["title"], expr))
    return out


def recording_rules() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [r["record"] for g in groups for r in g["rules"] if "record" in r]


@pytest.fixture(scope="session")  # session: instantiated before the session's models
def prometheus_exe() -> str:
    """First of all: skip (or fail where required) before paying for models and a server."""
    return tool("prometheus")


@pytest.fixture
def grpc_port() -> int:
    return free_port()


@pytest.fixture
def server(
    prometheus_exe: str, model_dir: Path, tmp_path: Path, grpc_port: int
) -> Iterator[ServerProcess]:
    """Versions 1 and 2 plus a version 3 whose SavedModel is garbage (it fails to load)."""
    models = tmp_path / "models" / "xor"
    shutil.copytree(model_dir, models)
    broken = models / str(BROKEN_VERSION)
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"not a SavedModel")
    proc = start_server(
        models, tmp_path / "server.log", "--max-inflight-requests", "2",
        "--grpc-port", str(grpc_port),
    )  # fmt: skip
    try:
        yield proc
    finally:
        proc.kill()


@pytest.fixture
def prometheus(server: ServerProcess, tmp_path: Path) -> Iterator[Prometheus]:
    port = free_port()
    targets = {"xor-dnn": f"127.0.0.1:{server.port}", "prometheus": f"127.0.0.1:{port}"}
    config = local_config(targets, f"{SCRAPE_INTERVAL_S}s")
    workdir = tmp_path / "prometheus"
    workdir.mkdir()
    with run_prometheus(config, workdir, port) as prom:
        yield prom


def drive(url: str, stop: threading.Event, seen: dict[int, int]) -> None:
    """Send predictions until ``stop``: one point in range, one far outside it."""
    body = {"points": [{"x": 0.5, "y": -0.5}, {"x": 50.0, "y": 0.25}]}
    with httpx.Client(base_url=url, timeout=30.0) as client:
        while not stop.is_set():
            status = client.post("/predict", json=body).status_code
            seen[status] = seen.get(status, 0) + 1


def drive_grpc(target: str, stop: threading.Event, seen: dict[str, int]) -> None:
    """Open Inference Protocol V2 ModelInfer calls over gRPC until ``stop`` (the gRPC panels)."""
    import numpy as np
    import tritonclient.grpc as triton
    from tritonclient.utils import InferenceServerException

    client = triton.InferenceServerClient(target)
    points = triton.InferInput("points", [1, 2], "FP32")
    points.set_data_from_numpy(np.array([[0.5, -0.5]], np.float32))
    try:
        while not stop.is_set():
            try:
                client.infer("xor", [points], client_timeout=30)
                outcome = "OK"
            except InferenceServerException as exc:  # refused by the in-flight cap, say
                outcome = str(exc.status())
            seen[outcome] = seen.get(outcome, 0) + 1
    finally:
        client.close()


def test_every_dashboard_query_returns_data(
    server: ServerProcess, prometheus: Prometheus, grpc_port: int
) -> None:
    queries = dashboard_queries()
    records = recording_rules()
    stop = threading.Event()
    seen: dict[int, int] = {}
    # More concurrent clients than --max-inflight-requests: some are refused with 503.
    threads = [
        threading.Thread(target=drive, args=(server.url, stop, seen), daemon=True) for _ in range(8)
    ]
    grpc_seen: dict[str, int] = {}
    grpc_target = f"127.0.0.1:{grpc_port}"
    threads.append(
        threading.Thread(target=drive_grpc, args=(grpc_target, stop, grpc_seen), daemon=True)
    )
    for t in threads:
        t.start()
    empty: list[str] = []
    firing: list[dict[str, str]] = []
    load_failed = False
    try:
        deadline = time.monotonic() + RESULT_TIMEOUT_S
        while True:
            empty = [f"{title}: {expr}" for title, expr in queries if not prometheus.query(expr)]
            empty += [f"recording rule {r}" for r in records if not prometheus.query(r)]
            alerts = prometheus.get("/api/v1/alerts")["alerts"]
            firing = [a["labels"] for a in alerts if a["state"] == "firing"]
            load_failed = any(
                a["alertname"] == "XorDnnModelLoadFailed" and a["version"] == str(BROKEN_VERSION)
                for a in firing
            )
            if (not empty and load_failed) or time.monotonic() > deadline:
                break
            time.sleep(SCRAPE_INTERVAL_S)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert seen.get(200) and seen.get(503), f"the load needs answers and refusals: {seen}"
    assert grpc_seen.get("OK"), f"the gRPC load needs answers: {grpc_seen}"
    assert not empty, "no data for:\n" + "\n".join(empty) + f"\nserver log:\n{server.log()[-2000:]}"
    assert load_failed, f"XorDnnModelLoadFailed not firing for version 3; firing: {firing}"
