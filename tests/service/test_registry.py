"""Hot reload: new versions are picked up after warm-up; broken ones are skipped and counted."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from service.app import create_app
from service.config import Settings
from service.errors import NotFound
from service.registry import ModelRegistry
from tests.service.conftest import copy_models

POINT = np.array([[1.0, -1.0]], np.float32)


def add_version(root: Path, number: int, source: int = 1, *, truncate: bool = False) -> None:
    """Publish a copy of ``source`` as ``number`` the atomic way (temp folder, then rename)."""
    tmp = root / f".tmp-{number}"
    shutil.copytree(root / str(source), tmp)
    if truncate:
        pb = tmp / "saved_model.pb"
        pb.write_bytes(pb.read_bytes()[: pb.stat().st_size // 3])
    tmp.rename(root / str(number))


def failures(version: int) -> float:
    value = REGISTRY.get_sample_value(
        "xor_dnn_model_load_failures_total", {"model": "xor", "version": str(version)}
    )
    return value or 0.0


def test_registry_loads_newest_and_keeps_k(model_dir: Path, tmp_path: Path) -> None:
    root = copy_models(model_dir, tmp_path / "xor")
    add_version(root, 3)
    registry = ModelRegistry(root, keep_versions=2)
    result = registry.refresh()
    assert result.loaded == [3, 2] and registry.versions == [2, 3]
    assert registry.default_version == 3
    with pytest.raises(NotFound, match="version 1 is not loaded"):
        registry.get(1)
    assert registry.predict(None, POINT).shape == (1,)
    # The folder loses its newest version: TF Serving's rule, the next newest takes over.
    shutil.rmtree(root / "3")
    result = registry.refresh()
    assert result.unloaded == [3] and result.loaded == [1]
    assert registry.default_version == 2
    # A batch already routed to the unloaded version still runs (grace period).
    assert registry.predict(3, POINT).shape == (1,)
    registry.close()


def test_broken_and_temp_versions_are_skipped(model_dir: Path, tmp_path: Path) -> None:
    root = copy_models(model_dir, tmp_path / "xor")
    add_version(root, 3, truncate=True)
    (root / ".tmp-half-written").mkdir()
    (root / "latest").mkdir()
    before = failures(3)
    registry = ModelRegistry(root, keep_versions=3)
    result = registry.refresh()
    assert result.failed == [3] and registry.default_version == 2
    assert failures(3) == before + 1
    # Not retried (nor counted again) while its files are unchanged...
    assert registry.refresh().failed == [] and failures(3) == before + 1
    # ...but retried once it is rewritten (a copy that was still in progress).
    shutil.rmtree(root / "3")
    add_version(root, 3)
    assert registry.refresh().loaded == [3] and registry.default_version == 3
    registry.close()


def test_only_version_is_kept_when_its_folder_vanishes(model_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "xor"
    root.mkdir()
    shutil.copytree(model_dir / "1", root / "1")
    registry = ModelRegistry(root)
    registry.refresh()
    shutil.rmtree(root / "1")
    registry.refresh()
    assert registry.versions == [1]  # still answering rather than going dark
    registry.close()


def wait_for(condition: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_hot_reload_over_http(model_dir: Path, tmp_path: Path) -> None:
    root = copy_models(model_dir, tmp_path / "xor")
    settings = Settings(model_dir=root, poll_interval_s=0.1)
    body = {"points": [{"x": 1.0, "y": -1.0}]}
    with TestClient(create_app(settings)) as c:
        assert c.post("/predict", json=body).json()["model_version"] == 2
        add_version(root, 3)
        wait_for(lambda: c.get("/models/xor").json()["default_version"] == 3)
        assert c.post("/predict", json=body).json()["model_version"] == 3
        before = failures(4)
        add_version(root, 4, truncate=True)
        wait_for(lambda: failures(4) == before + 1)
        time.sleep(0.5)  # several more polls: still skipped, counted once
        assert failures(4) == before + 1
        assert c.get("/readyz").status_code == 200
        r = c.post("/predict", json=body)
        assert r.status_code == 200 and r.json()["model_version"] == 3
        assert c.get("/models/xor").json()["versions"] == [1, 2, 3]
        metrics = c.get("/metrics").text
        assert 'xor_dnn_model_load_failures_total{model="xor",version="4"}' in metrics


def test_model_runtime_auto_runs_small_batches_in_litert_and_answers_like_tensorflow(
    model_dir: Path,
) -> None:
    body = {"points": [{"x": x, "y": y} for x, y in ((1.0, -1.0), (2.5, 2.0), (-0.3, 4.0))]}
    answers = {}
    for runtime, expected in (("auto", "litert"), ("tensorflow", None)):
        with TestClient(create_app(Settings(model_dir=model_dir, model_runtime=runtime))) as c:
            served = c.app.state.dataplane.default_model.registry.get()  # type: ignore[attr-defined]
            assert served.model.small_batch_path == expected, runtime
            r = c.post("/predict", json=body)
            assert r.status_code == 200
            answers[runtime] = [p["probability"] for p in r.json()["predictions"]]
    np.testing.assert_allclose(answers["auto"], answers["tensorflow"], rtol=1e-5, atol=1e-7)
