"""Every endpoint, good and bad input, over HTTP against the session's two real versions."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from bench._metrics import metric
from service.app import create_app
from service.config import Settings
from service.routes.models import STATIC_DIR
from xor_dnn.modelstore import load_version

QUADRANTS = [(1.5, 2.0), (-2.0, 1.0), (-3.0, -1.5), (2.5, -3.5)]  # classes 0, 1, 0, 1


def expected(model_dir: Path, version: int, points: list[tuple[float, float]]) -> np.ndarray:
    return load_version(model_dir, version).predict(np.array(points, np.float32))


def assert_our_error(r: Any, status: int, *words: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert isinstance(err["code"], str) and isinstance(err["message"], str)
    for word in words:
        assert word in err["message"], err
    return dict(err)


def assert_protocol_error(r: Any, status: int, *words: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and isinstance(body["error"], str)
    for word in words:
        assert word in body["error"], body
    return str(body["error"])


# -- POST /predict ---------------------------------------------------------------------------


def test_predict_answers_in_input_order(client: TestClient, model_dir: Path) -> None:
    r = client.post("/predict", json={"points": [{"x": x, "y": y} for x, y in QUADRANTS]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_name"] == "xor" and body["model_version"] == 2
    probs = [p["probability"] for p in body["predictions"]]
    np.testing.assert_allclose(probs, expected(model_dir, 2, QUADRANTS), rtol=1e-5, atol=1e-7)
    assert [p["class_id"] for p in body["predictions"]] == [int(p >= 0.5) for p in probs]
    assert [p["class_id"] for p in body["predictions"]] == [0, 1, 0, 1]  # the model learnt XOR


def test_predict_pins_a_version(client: TestClient, model_dir: Path) -> None:
    r = client.post("/predict?version=1", json={"points": [{"x": 1, "y": -1}]})
    assert r.status_code == 200 and r.json()["model_version"] == 1
    want = expected(model_dir, 1, [(1, -1)])[0]
    assert r.json()["predictions"][0]["probability"] == pytest.approx(float(want), rel=1e-5)


def test_request_id_is_echoed_or_generated(client: TestClient) -> None:
    r = client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    generated = client.get("/healthz").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    # A header that could forge log lines is replaced, not echoed.
    forged = client.get("/healthz", headers={"X-Request-ID": "a b\tc"}).headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", forged)


JSON = {"content-type": "application/json"}
BAD_PREDICT_BODIES: list[tuple[str, bytes, int, str]] = [
    ("string number", b'{"points":[{"x":"1","y":2}]}', 422, "points[0].x"),
    ("boolean", b'{"points":[{"x":true,"y":2}]}', 422, "points[0].x"),
    ("null", b'{"points":[{"x":null,"y":2}]}', 422, "points[0].x"),
    ("missing y", b'{"points":[{"x":1}]}', 422, "points[0].y"),
    ("extra field", b'{"points":[{"x":1,"y":2,"z":3}]}', 422, "points[0].z"),
    ("extra top field", b'{"points":[{"x":1,"y":2}],"k":1}', 422, "k"),
    ("empty list", b'{"points":[]}', 422, "points"),
    ("no points", b"{}", 422, "points"),
    ("points not a list", b'{"points":{"x":1,"y":2}}', 422, "points"),
    ("top level list", b"[1,2]", 422, "body"),
    ("NaN", b'{"points":[{"x":NaN,"y":2}]}', 422, "finite"),
    ("Infinity", b'{"points":[{"x":1,"y":-Infinity}]}', 422, "finite"),
    ("overflow to inf", b'{"points":[{"x":1e400,"y":2}]}', 422, "finite"),
    ("beyond float32", b'{"points":[{"x":1e39,"y":2}]}', 422, "float32"),
    ("huge int", b'{"points":[{"x":' + b"9" * 400 + b',"y":2}]}', 422, "points[0].x"),
    ("invalid json", b'{"points":[{"x":1,', 400, "not valid JSON"),
    ("not json", b"hello", 400, "not valid JSON"),
    ("deep nesting", b"[" * 100_000, 400, "recursion"),
    ("deep objects", b'{"a":' * 50_000, 400, "not valid JSON"),
    ("utf-16 garbage", "{\"points\": []}".encode("utf-16"), 400, "not valid JSON"),
    ("empty body", b"", 400, "empty"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "status", "word"),
    [case[1:] for case in BAD_PREDICT_BODIES],
    ids=[case[0] for case in BAD_PREDICT_BODIES],
)
def test_predict_rejects_bad_bodies(
    client: TestClient, body: bytes, status: int, word: str
) -> None:
    r = client.post("/predict", content=body, headers=JSON)
    assert_our_error(r, status, word)


def test_predict_limits_name_the_limit(client: TestClient) -> None:
    r = client.post("/predict", json={"points": [{"x": 1, "y": 1}] * 1025})
    err = assert_our_error(r, 413, "1025", "1024", "max_points_per_request")
    assert err["field"] == "points"
    r = client.post("/predict", content=b" " * 2_000_000, headers=JSON)
    assert_our_error(r, 413, "1048576", "max_body_bytes")


def test_predict_needs_json_content_type(client: TestClient) -> None:
    body = b'{"points":[{"x":1,"y":2}]}'
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        r = client.post("/predict", content=body, headers={"content-type": ctype})
        assert_our_error(r, 415, "Content-Type", "application/json")
    r = client.post("/predict", content=body)  # no content type at all
    assert_our_error(r, 415, "Content-Type")
    r = client.post("/predict", content=body, headers={**JSON, "content-encoding": "gzip"})
    assert_our_error(r, 415, "Content-Encoding")
    r = client.post(
        "/predict", content=body, headers={"content-type": "application/json; charset=utf-8"}
    )
    assert r.status_code == 200


@pytest.mark.parametrize(
    ("query", "status", "word"),
    [("version=7", 404, "version 7"), ("version=abc", 422, "version"),
     ("version=0", 422, "version"), ("version=-1", 422, "version")],
)  # fmt: skip
def test_predict_bad_version(client: TestClient, query: str, status: int, word: str) -> None:
    r = client.post(f"/predict?{query}", json={"points": [{"x": 1, "y": 1}]})
    assert_our_error(r, status, word)


# -- health, metrics, models, pages ----------------------------------------------------------


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["default_version"] == 2 and ready.json()["versions"] == [1, 2]


def test_not_ready_without_a_model(tmp_path: Path) -> None:
    with TestClient(create_app(Settings(model_dir=tmp_path / "empty"))) as c:
        assert c.get("/healthz").status_code == 200
        assert_our_error(c.get("/readyz"), 503, "not ready")
        assert c.get("/v2/health/ready").status_code == 503
        assert c.get("/v2/health/live").status_code == 200
        assert_our_error(c.post("/predict", json={"points": [{"x": 1, "y": 1}]}), 503, "no version")
        assert_protocol_error(c.post("/v1/models/xor:predict", json={"instances": [[1, 1]]}), 503)
        assert_our_error(c.get("/models/xor"), 404, "no version")


def test_models_listing_and_metadata(client: TestClient) -> None:
    assert client.get("/models/xor").json() == {
        "name": "xor", "default_version": 2, "versions": [1, 2],
    }  # fmt: skip
    meta = client.get("/models/xor/versions/1").json()
    assert meta["version"] == 1 and meta["config"]["seed"] == 0
    assert {"sample", "feature_ranges", "test_accuracy_mean"} <= set(meta)
    assert_our_error(client.get("/models/xor/versions/9"), 404, "version 9")
    assert_our_error(client.get("/models/xor/versions/x"), 404, "positive integers")
    assert_our_error(client.get("/models/other"), 404, "other")


def test_metrics_exposition(client: TestClient) -> None:
    client.post("/predict", json={"points": [{"x": 99.0, "y": 1.0}]})  # x outside training range
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    for name in (
        "xor_dnn_http_requests_total", "xor_dnn_http_request_duration_seconds_bucket",
        "xor_dnn_batch_points_bucket", "xor_dnn_batch_requests_bucket",
        "xor_dnn_batch_queue_wait_seconds_bucket", "xor_dnn_model_call_seconds_bucket",
        "xor_dnn_queue_points", "xor_dnn_overload_refusals_total",
        "xor_dnn_model_version_loaded", "xor_dnn_model_load_failures_total",
        "xor_dnn_input_out_of_range_points_total",
    ):  # fmt: skip
        assert name in text, name
    assert 'xor_dnn_http_requests_total{method="POST",route="/predict",status="200"}' in text
    assert 'xor_dnn_model_version_loaded{model="xor",version="2"} 1.0' in text
    assert metric(text, "xor_dnn_input_out_of_range_points_total", feature="x", version="2") >= 1


def test_pages_and_static_files(client: TestClient) -> None:
    if not (STATIC_DIR / "index.html").is_file():
        assert_our_error(client.get("/"), 404, "playground")
        return
    for path in ("/", "/playground"):
        r = client.get(path)
        assert r.status_code == 200 and r.headers["content-type"] == "text/html; charset=utf-8"
        assert r.headers["cache-control"] == "no-cache"
    for asset in sorted(STATIC_DIR.iterdir())[:3]:
        r = client.get(f"/static/{asset.name}")
        assert r.status_code == 200 and r.headers["cache-control"] == "no-cache"
        assert (
            client.get(
                f"/static/{asset.name}", headers={"if-none-match": r.headers["etag"]}
            ).status_code
            == 304
        )
    assert_our_error(client.get("/static/missing.js"), 404)


def test_unknown_routes_and_methods_are_json(client: TestClient) -> None:
    assert_our_error(client.get("/nope"), 404, "/nope")
    assert_our_error(client.delete("/predict"), 405, "DELETE")
    assert_protocol_error(client.get("/v1/nope"), 404)
    assert_protocol_error(client.put("/v2/models/xor/infer"), 405)


def test_openapi_docs_show_request_schemas(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert {"PredictRequest", "Point", "TFPredictRequest", "V2InferenceRequest"} <= set(
        spec["components"]["schemas"]
    )
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["$ref"].endswith("/PredictRequest")
    assert client.get("/docs").status_code == 200


def test_docs_and_metrics_can_be_switched_off(model_dir: Path) -> None:
    settings = Settings(model_dir=model_dir, enable_docs=False, enable_metrics=False)
    with TestClient(create_app(settings)) as c:
        assert c.get("/docs").status_code == 404
        assert c.get("/metrics").status_code == 404


def test_root_path_and_cors(model_dir: Path) -> None:
    settings = Settings(model_dir=model_dir, root_path="/xor", cors_origins=["https://a.example"])
    with TestClient(create_app(settings)) as c:
        # Behind a proxy that keeps the prefix, and one that strips it.
        assert c.get("/xor/healthz").status_code == 200
        assert c.get("/healthz").status_code == 200
        assert c.get("/openapi.json").json()["servers"] == [{"url": "/xor"}]
        r = c.options(
            "/predict",
            headers={"Origin": "https://a.example", "Access-Control-Request-Method": "POST"},
        )
        assert r.headers["access-control-allow-origin"] == "https://a.example"
        r = c.get("/healthz", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers


# -- TensorFlow Serving REST (v1) ------------------------------------------------------------


def test_tfserving_status_and_metadata(client: TestClient) -> None:
    status = client.get("/v1/models/xor").json()["model_version_status"]
    assert [s["version"] for s in status] == ["2", "1"]
    assert all(s["state"] == "AVAILABLE" for s in status)
    assert (
        client.get("/v1/models/xor/versions/1").json()["model_version_status"][0]["version"] == "1"
    )
    meta = client.get("/v1/models/xor/metadata").json()
    assert meta["model_spec"] == {"name": "xor", "signature_name": "", "version": "2"}
    sig = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sig["inputs"]["points"]["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in sig["inputs"]["points"]["tensor_shape"]["dim"]] == ["-1", "2"]
    assert "probability" in sig["outputs"]
    assert_protocol_error(client.get("/v1/models/other"), 404, "other")
    assert_protocol_error(client.get("/v1/models/xor/versions/5"), 404, "version 5")


@pytest.mark.parametrize(
    ("path", "body", "key", "version"),
    [
        ("/v1/models/xor:predict", {"instances": [list(p) for p in QUADRANTS]}, "predictions", 2),
        ("/v1/models/xor:predict", {"instances": [{"points": list(p)} for p in QUADRANTS]},
         "predictions", 2),
        ("/v1/models/xor:predict", {"inputs": [list(p) for p in QUADRANTS]}, "outputs", 2),
        ("/v1/models/xor/versions/1:predict",
         {"signature_name": "serving_default", "inputs": {"points": [list(p) for p in QUADRANTS]}},
         "outputs", 1),
    ],
)  # fmt: skip
def test_tfserving_predict_row_and_columnar(
    client: TestClient, model_dir: Path, path: str, body: dict[str, Any], key: str, version: int
) -> None:
    r = client.post(path, json=body)
    assert r.status_code == 200, r.text
    assert list(r.json()) == [key]
    got = np.array(r.json()[key])
    assert got.shape == (4, 1)
    np.testing.assert_allclose(
        got[:, 0], expected(model_dir, version, QUADRANTS), rtol=1e-5, atol=1e-7
    )


def test_tfserving_accepts_plain_curl(client: TestClient) -> None:
    # curl -d sends application/x-www-form-urlencoded; TF Serving's docs rely on that working.
    r = client.post(
        "/v1/models/xor:predict",
        content=b'{"instances": [[1.0, -1.0]]}',
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200 and len(r.json()["predictions"]) == 1


BAD_V1_BODIES: list[tuple[str, Any, int, str]] = [
    ("neither", {}, 400, "instances"),
    ("both", {"instances": [[1, 2]], "inputs": [[1, 2]]}, 400, "exactly one"),
    ("three numbers", {"instances": [[1, 2, 3]]}, 400, "instances[0]"),
    ("string", {"instances": [[1, "2"]]}, 400, "instances[0][1]"),
    ("wrong input name", {"instances": [{"pts": [1, 2]}]}, 400, "pts"),
    ("mixed forms", {"instances": [[1, 2], {"points": [1, 2]}]}, 400, "instances[1]"),
    ("bad signature", {"signature_name": "other", "instances": [[1, 2]]}, 400, "signature_name"),
    ("too many", {"instances": [[1, 2]] * 1025}, 413, "1024"),
    ("columnar too many", {"inputs": {"points": [[1, 2]] * 1025}}, 413, "1024"),
    ("empty", {"instances": []}, 400, "at least 1"),
    ("unknown key", {"instances": [[1, 2]], "foo": 1}, 400, "foo"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "status", "word"), [c[1:] for c in BAD_V1_BODIES], ids=[c[0] for c in BAD_V1_BODIES]
)
def test_tfserving_errors(client: TestClient, body: Any, status: int, word: str) -> None:
    assert_protocol_error(client.post("/v1/models/xor:predict", json=body), status, word)


def test_tfserving_error_cases_beyond_the_body(client: TestClient) -> None:
    ok = {"instances": [[1, 2]]}
    assert_protocol_error(client.post("/v1/models/xor/versions/9:predict", json=ok), 404, "9")
    assert_protocol_error(client.post("/v1/models/other:predict", json=ok), 404, "other")
    assert_protocol_error(
        client.post("/v1/models/xor:predict", content=b"{", headers=JSON), 400, "JSON"
    )
    assert_protocol_error(
        client.post("/v1/models/xor:predict", content=b"[" * 5000, headers=JSON), 400
    )
    r = client.post("/v1/models/xor:predict", content=b"<x/>", headers={"content-type": "text/xml"})
    assert_protocol_error(r, 415, "Content-Type")
    assert_protocol_error(
        client.post("/v1/models/xor:predict", content=b"1" * 2_000_000, headers=JSON), 413
    )


# -- Open Inference Protocol (v2) ------------------------------------------------------------


def test_v2_server_and_model_metadata(client: TestClient) -> None:
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").json() == {"ready": True}
    server = client.get("/v2").json()
    assert server["name"] == "xor-dnn" and "binary_tensor_data" in server["extensions"]
    meta = client.get("/v2/models/xor").json()
    assert meta["versions"] == ["1", "2"]
    assert meta["inputs"] == [{"name": "points", "datatype": "FP32", "shape": [-1, 2]}]
    assert [o["name"] for o in meta["outputs"]] == ["probability", "class_id"]
    assert client.get("/v2/models/xor/versions/1").json()["versions"] == ["1"]
    assert client.get("/v2/models/xor/ready").status_code == 200
    assert client.get("/v2/models/xor/versions/1/ready").status_code == 200
    assert_protocol_error(client.get("/v2/models/other"), 404, "other")
    assert_protocol_error(client.get("/v2/models/xor/versions/3"), 404, "version 3")


@pytest.mark.parametrize("datatype", ["FP32", "FP64"])
@pytest.mark.parametrize("nested", [False, True])
def test_v2_infer_json(client: TestClient, model_dir: Path, datatype: str, nested: bool) -> None:
    data: Any = [list(p) for p in QUADRANTS] if nested else [v for p in QUADRANTS for v in p]
    body = {
        "id": "req-1",
        "inputs": [{"name": "points", "shape": [4, 2], "datatype": datatype, "data": data}],
    }
    r = client.post("/v2/models/xor/versions/1/infer", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["id"] == "req-1" and out["model_name"] == "xor" and out["model_version"] == "1"
    prob, cls = out["outputs"]
    assert (prob["name"], prob["datatype"], prob["shape"]) == ("probability", "FP32", [4, 1])
    assert (cls["name"], cls["datatype"], cls["shape"]) == ("class_id", "INT64", [4, 1])
    np.testing.assert_allclose(
        prob["data"], expected(model_dir, 1, QUADRANTS), rtol=1e-5, atol=1e-7
    )
    assert cls["data"] == [int(p >= 0.5) for p in prob["data"]]


def test_v2_infer_binary_extension(client: TestClient, model_dir: Path) -> None:
    points = np.array(QUADRANTS, dtype=np.float32)
    header = (
        b'{"inputs":[{"name":"points","shape":[4,2],"datatype":"FP32",'
        b'"parameters":{"binary_data_size":32}}],'
        b'"outputs":[{"name":"probability","parameters":{"binary_data":true}},{"name":"class_id"}]}'
    )
    r = client.post(
        "/v2/models/xor/infer",
        content=header + points.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert r.status_code == 200, r.text
    size = int(r.headers["inference-header-content-length"])
    meta = __import__("json").loads(r.content[:size])
    prob, cls = meta["outputs"]
    assert prob["parameters"]["binary_data_size"] == 16 and "data" not in prob
    got = np.frombuffer(r.content[size:], dtype="<f4")
    np.testing.assert_allclose(got, expected(model_dir, 2, QUADRANTS), rtol=1e-5, atol=1e-7)
    assert cls["data"] == [0, 1, 0, 1]


def _v2(shape: Any = (1, 2), datatype: str = "FP32", data: Any = (1.0, 2.0), **extra: Any) -> Any:
    tensor = {"name": "points", "shape": list(shape), "datatype": datatype, "data": list(data)}
    return {"inputs": [tensor], **extra}


BAD_V2_BODIES: list[tuple[str, Any, int, str]] = [
    ("no inputs", {"inputs": []}, 400, "inputs"),
    ("wrong name", {"inputs": [{**_v2()["inputs"][0], "name": "x"}]}, 400, "inputs[0].name"),
    ("two inputs", {"inputs": _v2()["inputs"] * 2}, 400, "exactly 1"),
    ("bytes type", _v2(datatype="BYTES"), 400, "datatype"),
    ("int type", _v2(datatype="INT32"), 400, "FP32 or FP64"),
    ("shape 3 cols", _v2(shape=(1, 3), data=(1, 2, 3)), 400, "[N, 2]"),
    ("shape 1d", _v2(shape=(2,)), 400, "[N, 2]"),
    ("count mismatch", _v2(shape=(2, 2)), 400, "needs 4 numbers"),
    ("ragged", _v2(shape=(2, 2), data=([1, 2], [3])), 400, "2 numbers"),
    ("string data", _v2(data=("1", 2)), 400, "inputs[0].data"),
    ("bool data", _v2(data=(True, 2)), 400, "inputs[0].data"),
    ("NaN via big", _v2(data=(1e39, 2)), 400, "finite"),
    ("unknown output", _v2(outputs=[{"name": "logits"}]), 400, "logits"),
    ("too many", _v2(shape=(1025, 2), data=[1.0] * 2050), 413, "1024"),
    ("negative shape", _v2(shape=(-1, 2)), 400, "shape"),
    ("no data", {"inputs": [{"name": "points", "shape": [1, 2], "datatype": "FP32"}]}, 400,
     "data"),
    ("extra key", {**_v2(), "foo": 1}, 400, "foo"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "status", "word"), [c[1:] for c in BAD_V2_BODIES], ids=[c[0] for c in BAD_V2_BODIES]
)
def test_v2_errors(client: TestClient, body: Any, status: int, word: str) -> None:
    assert_protocol_error(client.post("/v2/models/xor/infer", json=body), status, word)


def test_v2_binary_errors(client: TestClient) -> None:
    def post(header: bytes, data: bytes, length: str | None = None) -> Any:
        length = str(len(header)) if length is None else length
        return client.post(
            "/v2/models/xor/infer",
            content=header + data,
            headers={"Inference-Header-Content-Length": length},
        )

    header = (
        b'{"inputs":[{"name":"points","shape":[2,2],"datatype":"FP32",'
        b'"parameters":{"binary_data_size":16}}]}'
    )
    assert post(header, b"\0" * 16).status_code == 200
    assert_protocol_error(post(header, b"\0" * 8), 400, "needs 16 bytes")
    assert_protocol_error(post(header, b"", "99999"), 400, "Inference-Header-Content-Length")
    assert_protocol_error(post(header, b"", "abc"), 400, "Inference-Header-Content-Length")
    nan = np.array([[np.nan, 1], [1, 1]], np.float32).tobytes()
    assert_protocol_error(post(header, nan), 400, "finite")
    plain = b'{"inputs":[{"name":"points","shape":[2,2],"datatype":"FP32","data":[1,2,3,4]}]}'
    assert_protocol_error(post(plain, b"\0" * 16), 400, "binary_data_size")
    assert_protocol_error(
        client.post("/v2/models/xor/versions/9/infer", json=_v2()), 404, "version 9"
    )
    assert_protocol_error(client.post("/v2/models/nope/infer", json=_v2()), 404, "nope")


def test_service_survives_every_bad_body(client: TestClient) -> None:
    """After all of the above in one module, the service still answers correctly."""
    assert client.get("/readyz").status_code == 200
    r = client.post("/predict", json={"points": [{"x": 1, "y": -1}]})
    assert r.status_code == 200 and r.json()["predictions"][0]["class_id"] == 1


def test_metrics_pass_promtool(client: TestClient) -> None:
    """Prometheus' own linter accepts the exposition (Debian package ``prometheus``)."""
    import shutil
    import subprocess

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (apt-get install prometheus)")
    client.post("/predict", json={"points": [{"x": 1.0, "y": -1.0}]})
    text = client.get("/metrics").text
    done = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
