"""GET /models/{name}/history and /models/{name}/versions/{v}/history: the training history
published beside a version, with caching headers, 304 on a matching ETag and 404 without one."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.config import Settings
from tests.support import TINY_POINTS, tiny_config
from training.data import generated_dataset
from training.train import train_and_publish
from xor_dnn.modelstore import HISTORY_FILE


@pytest.fixture(scope="module")
def served(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """Versions 1 and 2 (with history) and 3, trained with history off (the default)."""
    root = tmp_path_factory.mktemp("history") / "xor"
    shutil.copytree(model_dir, root)
    published = train_and_publish(
        root,
        data=generated_dataset(TINY_POINTS, seed=3),
        runs=1,
        config=tiny_config(epochs=3, seed=3),
        history=False,
    )
    assert published.version == 3
    with TestClient(create_app(Settings(model_dir=root))) as client:
        yield client


def test_a_version_history_is_the_published_file_with_immutable_caching(
    served: TestClient, model_dir: Path
) -> None:
    r = served.get("/models/xor/versions/1/history")
    assert r.status_code == 200, r.text
    on_disk = (model_dir / "1" / HISTORY_FILE).read_bytes()
    assert r.content == on_disk
    assert r.headers["content-type"] == "application/json"
    assert r.headers["etag"] == f'"{hashlib.sha256(on_disk).hexdigest()}"'
    cache = r.headers["cache-control"]
    assert "immutable" in cache and "max-age=86400" in cache, cache
    doc = r.json()
    assert doc["format"] == 1 and doc["grid"]["size"] == 48
    assert [f["epoch"] for f in doc["frames"]][-1] == doc["epochs_trained"] == 30
    # Versions 1 and 2 have different histories, hence different tags.
    other = served.get("/models/xor/versions/2/history")
    assert other.status_code == 200 and other.headers["etag"] != r.headers["etag"]


@pytest.mark.parametrize(
    "path", ["/models/xor/versions/1/history", "/models/xor/versions/2/history"]
)
def test_a_matching_if_none_match_is_a_304_without_body(served: TestClient, path: str) -> None:
    first = served.get(path)
    etag = first.headers["etag"]
    for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        again = served.get(path, headers={"If-None-Match": header})
        assert again.status_code == 304, header
        assert again.content == b""
        assert again.headers["etag"] == etag
        assert again.headers["cache-control"] == first.headers["cache-control"]
    changed = served.get(path, headers={"If-None-Match": '"not-it"'})
    assert changed.status_code == 200 and changed.content == first.content


def test_the_default_version_without_history_is_a_404(served: TestClient) -> None:
    # Version 3, the default, was trained with history off.
    assert served.get("/models/xor").json()["default_version"] == 3
    meta = served.get("/models/xor/versions/3").json()
    assert meta["history_file"] is None
    for path in ("/models/xor/history", "/models/xor/versions/3/history"):
        r = served.get(path)
        assert r.status_code == 404, path
        error = r.json()["error"]
        assert error["code"] == "not_found" and "no training history" in error["message"]
        assert error["field"] == "version"


def test_unknown_model_or_version_is_a_404(served: TestClient) -> None:
    for path, word in (
        ("/models/other/history", "other"),
        ("/models/other/versions/1/history", "other"),
        ("/models/xor/versions/9/history", "version 9"),
        ("/models/xor/versions/x/history", "positive integers"),
    ):
        r = served.get(path)
        assert r.status_code == 404, path
        assert word in r.json()["error"]["message"], (path, r.json())


def test_the_default_history_follows_the_default_version_and_revalidates(
    model_dir: Path, tmp_path: Path
) -> None:
    root = tmp_path / "xor"
    shutil.copytree(model_dir, root)
    with TestClient(create_app(Settings(model_dir=root))) as client:
        r = client.get("/models/xor/history")
        assert r.status_code == 200
        assert r.content == (root / "2" / HISTORY_FILE).read_bytes()
        assert r.headers["cache-control"] == "no-cache"
        again = client.get("/models/xor/history", headers={"If-None-Match": r.headers["etag"]})
        assert again.status_code == 304


def test_history_routes_are_documented_in_openapi(served: TestClient) -> None:
    spec = served.get("/openapi.json").json()
    for path in ("/models/{model_name}/history", "/models/{model_name}/versions/{version}/history"):
        answers = spec["paths"][path]["get"]["responses"]
        assert {"200", "304", "404"} <= set(answers), (path, answers)
        schema = answers["200"]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/TrainingHistory"}
    frame = spec["components"]["schemas"]["HistoryFrame"]["properties"]
    assert {"epoch", "train_loss", "test_accuracy", "weight_norms", "grid"} <= set(frame)


def test_a_history_file_that_is_missing_does_not_stop_the_version_serving(
    model_dir: Path, tmp_path: Path
) -> None:
    root = tmp_path / "xor"
    shutil.copytree(model_dir, root)
    (root / "2" / HISTORY_FILE).unlink()
    with TestClient(create_app(Settings(model_dir=root))) as client:
        assert client.get("/models/xor").json()["versions"] == [1, 2]
        assert client.get("/models/xor/versions/2/history").status_code == 404
        assert client.get("/models/xor/versions/1/history").status_code == 200
        body = {"points": [{"x": 1, "y": -1}]}
        assert client.post("/predict", params={"version": 2}, json=body).status_code == 200
        assert json.loads(client.get("/models/xor/versions/2").text)["history_file"] == HISTORY_FILE


def test_each_model_of_a_repository_serves_its_own_history(model_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "repo"
    shutil.copytree(model_dir, root / "xor")
    shutil.copytree(model_dir / "1", root / "other" / "1")
    with TestClient(create_app(Settings(model_repository=str(root)))) as client:
        assert {m["name"] for m in client.get("/models").json()["models"]} == {"other", "xor"}
        mine = client.get("/models/other/history")
        assert mine.status_code == 200
        assert mine.content == (root / "other" / "1" / HISTORY_FILE).read_bytes()
        xor = client.get("/models/xor/versions/2/history")
        assert xor.content == (root / "xor" / "2" / HISTORY_FILE).read_bytes()
        missing = client.get("/models/nope/versions/1/history")
        assert missing.status_code == 404 and "nope" in missing.json()["error"]["message"]
