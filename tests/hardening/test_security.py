"""Security settings, in-process: CORS closed by default and configurable, docs and metrics
disabled or moved by settings, and no stack trace or file path in any error body."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.config import Settings

BODY = {"points": [{"x": 1.0, "y": -1.0}]}
PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "content-type",
}


@pytest.fixture(scope="module")
def default_client(model_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(model_dir=model_dir))) as client:
        yield client


def test_cors_is_closed_by_default(default_client: TestClient) -> None:
    origin = {"Origin": "https://evil.example"}
    r = default_client.options("/predict", headers={**origin, **PREFLIGHT})
    assert r.status_code == 405 and "access-control-allow-origin" not in r.headers
    r = default_client.post("/predict", json=BODY, headers=origin)
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_cors_allows_only_the_configured_origins(model_dir: Path) -> None:
    settings = Settings(model_dir=model_dir, cors_origins="https://ok.example")  # type: ignore[arg-type]
    with TestClient(create_app(settings)) as client:
        ok = {"Origin": "https://ok.example"}
        r = client.options("/predict", headers={**ok, **PREFLIGHT})
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "https://ok.example"
        assert (
            client.post("/predict", json=BODY, headers=ok).headers["access-control-allow-origin"]
            == "https://ok.example"
        )
        evil = {"Origin": "https://evil.example"}
        r = client.options("/predict", headers={**evil, **PREFLIGHT})
        assert r.status_code == 400 and r.headers["content-type"] == "application/json"
        assert r.json()["error"]["field"] == "Origin"
        assert "access-control-allow-origin" not in r.headers
        r = client.post("/predict", json=BODY, headers=evil)
        assert "access-control-allow-origin" not in r.headers


def test_docs_and_metrics_can_be_disabled(model_dir: Path) -> None:
    settings = Settings(model_dir=model_dir, enable_docs=False, enable_metrics=False)
    with TestClient(create_app(settings)) as client:
        for path in ("/docs", "/openapi.json", "/metrics"):
            r = client.get(path)
            assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", path
        assert client.post("/predict", json=BODY).status_code == 200


def test_docs_and_metrics_can_be_moved(model_dir: Path) -> None:
    settings = Settings(
        model_dir=model_dir,
        docs_path="/_admin/docs",
        openapi_path="/_admin/openapi.json",
        metrics_path="/_admin/metrics",
    )
    with TestClient(create_app(settings)) as client:
        for old in ("/docs", "/openapi.json", "/metrics"):
            assert client.get(old).status_code == 404, old
        assert client.get("/_admin/docs").status_code == 200
        assert client.get("/_admin/openapi.json").json()["paths"]["/predict"]
        assert "xor_dnn_http_requests_total" in client.get("/_admin/metrics").text


@pytest.mark.parametrize("path", ["docs/x", "/docs/", "docs", "/a b", "/a?b"])
def test_admin_paths_are_validated(model_dir: Path, path: str) -> None:
    with pytest.raises(ValueError, match="metrics_path"):
        Settings(model_dir=model_dir, metrics_path=path)


@pytest.fixture(scope="module")
def tripwire_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid version whose graph fails on |x| >= 1000: TensorFlow's error text then holds
    the op's Python traceback, file paths included."""
    import tensorflow as tf

    class Tripwire(tf.Module):  # type: ignore[misc]
        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="points")])
        def serve(self, points: tf.Tensor) -> dict[str, tf.Tensor]:
            tf.debugging.assert_less(tf.abs(points), 1000.0, message="tripwire")
            product = points[:, 0:1] * points[:, 1:2]
            return {"probability": tf.sigmoid(-10.0 * product)}

    root = tmp_path_factory.mktemp("tripwire") / "xor"
    module = Tripwire()
    tf.saved_model.save(module, str(root / "1"), signatures={"serving_default": module.serve})
    return root


def test_errors_leak_no_trace_or_path(tripwire_dir: Path) -> None:
    with TestClient(create_app(Settings(model_dir=tripwire_dir))) as client:
        assert client.post("/predict", json=BODY).status_code == 200
        far = [5000.0, 1.0]
        for path, body in (
            ("/predict", {"points": [{"x": far[0], "y": far[1]}]}),
            ("/v1/models/xor:predict", {"instances": [far]}),
            ("/v2/models/xor/infer",
             {"inputs": [{"name": "points", "shape": [1, 2], "datatype": "FP32", "data": far}]}),
        ):  # fmt: skip
            r = client.post(path, json=body)
            assert r.status_code == 500, (path, r.text)
            assert r.headers["content-type"] == "application/json"
            for leak in ("Traceback", "tripwire", str(tripwire_dir), 'File "', ".py", "/tmp/"):
                assert leak not in r.text, (path, r.text)
            assert "x-request-id" in r.headers
        assert client.post("/predict", json=BODY).status_code == 200  # the service carries on
