"""Many models in one server: addressed by name in every protocol, picked up by the poll or
loaded through the admin-only repository API (driven with the real ``tritonclient.http``),
bounded by max_loaded_models, and isolated from each other."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from bench._process import free_port, start_server
from service.app import create_app
from service.config import Settings
from tests.service.conftest import copy_models
from tests.support import hold_model_calls

TOKEN = "s3cret-admin-token-for-tests"
POINT = {"points": [{"x": 0.5, "y": -0.5}]}
WAIT_S = 120.0


def wait_for(condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def break_model(folder: Path) -> None:
    """Every version's graph cut short: the model's folder is there but nothing loads."""
    for pb in folder.glob("*/saved_model.pb"):
        pb.write_bytes(pb.read_bytes()[: pb.stat().st_size // 3])


@pytest.fixture(scope="module")
def repository(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two models, ``xor`` and ``lesson`` (read-only use)."""
    root = tmp_path_factory.mktemp("repository")
    copy_models(model_dir, root / "xor")
    copy_models(model_dir, root / "lesson")
    (root / ".tmp-half-published").mkdir()  # hidden: never a model
    return root


@pytest.fixture(scope="module")
def repo_client(repository: Path) -> Iterator[TestClient]:
    settings = Settings(model_repository=str(repository), admin_token=TOKEN)
    with TestClient(create_app(settings)) as c:
        yield c


def test_get_models_lists_every_model_and_the_default(repo_client: TestClient) -> None:
    body = repo_client.get("/models").json()
    assert body["default_model"] == "xor"
    assert [m["name"] for m in body["models"]] == ["lesson", "xor"]
    for model in body["models"]:
        assert model == {**model, "ready": True, "default_version": 2, "versions": [1, 2]}


def test_single_model_mode_lists_its_one_model(client: TestClient) -> None:
    assert client.get("/models").json() == {
        "default_model": "xor",
        "models": [{"name": "xor", "ready": True, "default_version": 2, "versions": [1, 2]}],
    }
    r = client.post("/models/xor/predict?version=1", json=POINT)
    assert r.status_code == 200 and r.json()["model_version"] == 1


def test_every_protocol_addresses_models_by_name(repo_client: TestClient) -> None:
    own = repo_client.post("/models/lesson/predict", json=POINT)
    assert own.status_code == 200 and own.json()["model_name"] == "lesson"
    default = repo_client.post("/predict", json=POINT).json()
    assert default["model_name"] == "xor"
    assert own.json()["predictions"] == default["predictions"]  # the same weights, copied
    pinned = repo_client.post("/models/lesson/predict?version=1", json=POINT).json()
    assert pinned["model_version"] == 1
    v1 = repo_client.post("/v1/models/lesson:predict", json={"instances": [[0.5, -0.5]]})
    assert v1.status_code == 200 and len(v1.json()["predictions"]) == 1
    assert repo_client.get("/v1/models/lesson").status_code == 200
    v2_body = {"inputs": [{"name": "points", "datatype": "FP32", "shape": [1, 2], "data": [1, 0]}]}
    v2 = repo_client.post("/v2/models/lesson/versions/1/infer", json=v2_body)
    assert v2.status_code == 200 and v2.json()["model_name"] == "lesson"
    meta = repo_client.get("/v2/models/lesson").json()
    assert meta["name"] == "lesson" and meta["versions"] == ["1", "2"]
    assert repo_client.get("/v2/models/lesson/ready").json() == {"name": "lesson", "ready": True}
    assert repo_client.get("/models/lesson/versions/2").json()["version"] == 2


def test_an_unknown_model_is_a_404_in_each_protocols_shape(repo_client: TestClient) -> None:
    ours = repo_client.post("/models/nope/predict", json=POINT)
    assert ours.status_code == 404
    error = ours.json()["error"]
    assert error["code"] == "not_found" and error["field"] == "model_name"
    assert "'nope' is not served here (served: 'lesson', 'xor')" in error["message"]
    for path, body in (
        ("/v1/models/nope:predict", {"instances": [[1, 1]]}),
        ("/v2/models/nope/infer", {"inputs": []}),
    ):
        r = repo_client.post(path, json=body)
        assert r.status_code == 404 and "'nope' is not served here" in r.json()["error"], path
    for path in ("/models/nope", "/v1/models/nope", "/v2/models/nope", "/v2/models/nope/ready"):
        assert repo_client.get(path).status_code == 404, path


def test_each_model_has_its_own_metrics(repo_client: TestClient) -> None:
    def points(model: str) -> float:
        labels = {"model": model, "protocol": "predict", "version": "2"}
        return REGISTRY.get_sample_value("xor_dnn_predicted_points_total", labels) or 0.0

    before = points("lesson"), points("xor")
    repo_client.post("/models/lesson/predict", json={"points": [POINT["points"][0]] * 3})
    assert (points("lesson"), points("xor")) == (before[0] + 3, before[1])
    text = repo_client.get("/metrics").text
    assert 'xor_dnn_queue_points{model="lesson"}' in text
    assert 'xor_dnn_model_default_version{model="lesson"} 2.0' in text
    assert "xor_dnn_repository_models_loaded" in text


def test_admin_routes_do_not_exist_without_a_token(client: TestClient) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    r = client.post("/v2/repository/index", headers=auth)
    assert r.status_code == 404
    assert client.post("/v2/repository/models/xor/load", headers=auth).status_code == 404
    assert not any(
        p.startswith("/v2/repository") for p in client.get("/openapi.json").json()["paths"]
    )


def test_admin_routes_answer_401_403_as_json_and_take_only_bearer(
    repo_client: TestClient,
) -> None:
    for headers, status in (
        ({}, 401),
        ({"Authorization": f"Basic {TOKEN}"}, 401),
        ({"Authorization": "Bearer"}, 401),
        ({"Authorization": f"Bearer {TOKEN}x"}, 403),
        ({"Authorization": "Bearer " + TOKEN[:-1]}, 403),
    ):
        r = repo_client.post("/v2/repository/index", headers=headers)
        assert r.status_code == status, headers
        assert r.headers["content-type"] == "application/json"
        assert "Authorization" in r.json()["error"]
        if status == 401:
            assert r.headers["www-authenticate"].startswith("Bearer")
    r = repo_client.post("/v2/repository/index", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200
    assert "/v2/repository/index" in repo_client.get("/openapi.json").json()["paths"]
    assert r.json() == [
        {"name": "lesson", "state": "READY", "reason": "", "version": "2"},
        {"name": "xor", "state": "READY", "reason": "", "version": "2"},
    ]


def test_poll_control_refuses_load_and_unload(repo_client: TestClient) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    r = repo_client.post("/v2/repository/models/xor/unload", headers=auth)
    assert r.status_code == 400 and "model_control is poll" in r.json()["error"]
    assert repo_client.post("/models/xor/predict", json=POINT).status_code == 200


def test_admin_calls_are_rate_limited_per_address_and_logged(
    repository: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(model_repository=str(repository), admin_token=TOKEN, admin_rate_limit=3)
    caplog.set_level("INFO", logger="service.admin")
    with TestClient(create_app(settings)) as c:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        statuses = [c.post("/v2/repository/index", headers=h).status_code for h in ({}, auth)]
        statuses += [c.post("/v2/repository/index", headers=auth).status_code for _ in range(2)]
        assert statuses == [401, 200, 200, 429]
        limited = c.post("/v2/repository/index", headers=auth)
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert "3 per minute (admin_rate_limit)" in limited.json()["error"]
        # The public routes share nothing with it.
        assert c.post("/predict", json=POINT).status_code == 200
    lines = [r.getMessage() for r in caplog.records if r.name == "service.admin"]
    assert any("refused: no credentials (401)" in line and "testclient" in line for line in lines)
    assert any(line.startswith("admin index '*' from testclient: 2 models") for line in lines)


def test_poll_picks_up_model_folders_added_and_removed(model_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "repo"
    copy_models(model_dir, root / "xor")
    settings = Settings(model_repository=str(root), poll_interval_s=0.2)
    with TestClient(create_app(settings)) as c:

        def names() -> list[str]:
            return [m["name"] for m in c.get("/models").json()["models"] if m["ready"]]

        assert names() == ["xor"]
        assert c.post("/models/fresh/predict", json=POINT).status_code == 404
        shutil.copytree(model_dir, root / ".tmp-fresh")
        (root / ".tmp-fresh").rename(root / "fresh")
        wait_for(lambda: names() == ["fresh", "xor"], "the new folder to be served")
        assert c.post("/models/fresh/predict", json=POINT).status_code == 200
        shutil.rmtree(root / "fresh")
        wait_for(lambda: names() == ["xor"], "the removed folder to be unloaded")
        assert c.post("/models/fresh/predict", json=POINT).status_code == 404


def test_poll_control_leaves_models_beyond_the_limit_unloaded(
    repository: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(model_repository=str(repository), max_loaded_models=1, admin_token=TOKEN)
    with TestClient(create_app(settings)) as c:
        assert [m["name"] for m in c.get("/models").json()["models"]] == ["lesson"]
        index = c.post("/v2/repository/index", headers={"Authorization": f"Bearer {TOKEN}"})
        entry = index.json()[1]
        assert entry["name"] == "xor" and entry["state"] == "UNAVAILABLE"
        assert "max_loaded_models (1) reached" in entry["reason"]
        # /predict falls back to the first loaded model when model_name is not loaded.
        assert c.post("/predict", json=POINT).json()["model_name"] == "lesson"
    assert any("max_loaded_models (1) reached" in r.getMessage() for r in caplog.records)


def test_explicit_control_unloads_the_least_recently_used_idle_model(
    model_dir: Path, tmp_path: Path
) -> None:
    root = tmp_path / "repo"
    for name in ("a", "b", "c"):
        copy_models(model_dir, root / name)
    settings = Settings(
        model_repository=str(root),
        model_control="explicit",
        load_model=["a", "b"],
        max_loaded_models=2,
        admin_token=TOKEN,
    )
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with TestClient(create_app(settings)) as c:

        def loaded() -> list[str]:
            return [m["name"] for m in c.get("/models").json()["models"]]

        assert loaded() == ["a", "b"]
        assert c.post("/models/a/predict", json=POINT).status_code == 200  # b is now the LRU
        r = c.post("/v2/repository/models/c/load", headers=auth)
        assert r.status_code == 200 and r.json()["state"] == "READY"
        assert loaded() == ["a", "c"]
        index = {e["name"]: e for e in c.post("/v2/repository/index", headers=auth).json()}
        assert (
            index["b"]["state"] == "UNAVAILABLE" and "least recently used" in index["b"]["reason"]
        )
        missing = c.post("/v2/repository/models/zzz/load", headers=auth)
        assert missing.status_code == 404 and "no such folder" in missing.json()["error"]


def test_explicit_load_of_a_broken_model_fails_clearly(model_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "repo"
    copy_models(model_dir, root / "xor")
    break_model(copy_models(model_dir, root / "broken"))
    settings = Settings(
        model_repository=str(root), model_control="explicit", load_model=["*"], admin_token=TOKEN
    )
    with TestClient(create_app(settings)) as c:
        assert [m["name"] for m in c.get("/models").json()["models"]] == ["xor"]
        r = c.post(
            "/v2/repository/models/broken/load", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert r.status_code == 400
        assert "'broken': load failed: version(s) 1, 2 failed to load" in r.json()["error"]
        assert c.post("/predict", json=POINT).status_code == 200


def test_tritonclient_drives_the_repository_api(
    repository: Path, tmp_path: Path, server_factory: list[Any]
) -> None:
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    server = start_server(
        repository,
        tmp_path / "server.log",
        "--model-control", "explicit", "--load-model", "xor",
        env={"XOR_DNN_ADMIN_TOKEN": TOKEN},
        source_flag="--model-repository",
    )  # fmt: skip
    server_factory.append(server)
    client = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for headers, status in ((None, "401"), ({"Authorization": "Bearer wrong-token"}, "403")):
        with pytest.raises(InferenceServerException) as refused:
            client.get_model_repository_index(headers=headers)
        assert refused.value.status() == status and "Authorization" in str(refused.value)
    index = client.get_model_repository_index(headers=auth)
    assert [(e["name"], e["state"]) for e in index] == [("lesson", "UNAVAILABLE"), ("xor", "READY")]
    assert not client.is_model_ready("lesson")
    client.load_model("lesson", headers=auth)
    assert client.is_model_ready("lesson")
    inp = triton.InferInput("points", [2, 2], "FP32")
    inp.set_data_from_numpy(np.array([[0.5, -0.5], [0.5, 0.5]], np.float32))
    result = client.infer("lesson", [inp])
    assert result.as_numpy("probability").shape == (2, 1)
    assert result.get_response()["model_name"] == "lesson"
    client.unload_model("lesson", headers=auth)
    with pytest.raises(InferenceServerException) as gone:
        client.infer("lesson", [inp])
    assert gone.value.status() == "404"
    assert client.is_model_ready("xor")
    assert server.stop() == 0, server.log()
    assert "admin load 'lesson' from 127.0.0.1: ready, version 2" in server.log()


# -- isolation -----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_config=None, lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    try:
        deadline = time.monotonic() + WAIT_S
        while not (server.started or task.done()):
            assert time.monotonic() < deadline, "uvicorn did not start"
            await asyncio.sleep(0.01)
        assert not task.done()
        url = f"http://127.0.0.1:{server.config.port}"
        async with httpx.AsyncClient(base_url=url, timeout=WAIT_S) as http:
            yield http
    finally:
        server.should_exit = True
        await task


async def test_a_stuck_overloaded_model_does_not_delay_or_fail_another(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``slow``'s model call hangs and its queue overflows; ``broken`` never loads; ``fast``
    answers every request meanwhile (before ``slow`` is released)."""
    root = tmp_path / "repo"
    for name in ("fast", "slow"):
        copy_models(model_dir, root / name)
    break_model(copy_models(model_dir, root / "broken"))
    held = hold_model_calls(monkeypatch, lambda registry, _: registry.model_name == "slow", WAIT_S)
    gate, stuck = held.gate, held.entered
    settings = Settings(
        model_repository=str(root), max_queue_points=4, max_batch_size=2, model_name="fast"
    )
    async with serving(settings) as http:
        try:
            listing = (await http.get("/models")).json()["models"]
            assert {m["name"]: m["ready"] for m in listing} == {
                "broken": False,
                "fast": True,
                "slow": True,
            }
            held = asyncio.ensure_future(http.post("/models/slow/predict", json=POINT))
            await asyncio.to_thread(stuck.wait, WAIT_S)
            # One batch waits for the model thread, max_queue_points queue behind it, the
            # rest are refused at once.
            flood = [
                asyncio.ensure_future(http.post("/models/slow/predict", json=POINT))
                for _ in range(12)
            ]
            refused = await next(asyncio.as_completed(flood))
            assert refused.status_code == 429, refused.text
            # One at a time: fast has the same small queue bound, and 20 at once on a busy
            # machine overflow fast's own queue (a 429 that says nothing about isolation).
            fast = [await http.post("/models/fast/predict", json=POINT) for _ in range(20)]
            assert [r.status_code for r in fast] == [200] * 20
            assert (await http.post("/predict", json=POINT)).json()["model_name"] == "fast"
            broken = await http.post("/models/broken/predict", json=POINT)
            assert broken.status_code == 503 and "no version loaded" in broken.text
            assert not held.done()  # all of that happened while slow was stuck
            assert (await http.get("/readyz")).status_code == 200
        finally:
            gate.set()
        answers = [r.status_code for r in await asyncio.gather(held, *flood)]
        assert answers[0] == 200 and sorted(set(answers)) == [200, 429]
        assert answers.count(200) == 1 + 4, answers  # the held one and a full queue


async def test_explicit_control_refuses_to_unload_a_busy_model_for_another(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "repo"
    for name in ("a", "b"):
        copy_models(model_dir, root / name)
    held = hold_model_calls(monkeypatch, lambda registry, _: True, WAIT_S)
    gate, stuck = held.gate, held.entered
    settings = Settings(
        model_repository=str(root),
        model_control="explicit",
        load_model=["a"],
        max_loaded_models=1,
        admin_token=TOKEN,
    )
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with serving(settings) as http:
        try:
            running = asyncio.ensure_future(http.post("/models/a/predict", json=POINT))
            await asyncio.to_thread(stuck.wait, WAIT_S)
            # a's batch runs: a is busy, so it is not unloaded to make room for b.
            refused = await http.post("/v2/repository/models/b/load", headers=auth)
            assert refused.status_code == 503
            assert "every loaded model is busy" in refused.json()["error"]
            assert refused.headers["retry-after"] == "1"
        finally:
            gate.set()
        assert (await running).status_code == 200
        loaded = await http.post("/v2/repository/models/b/load", headers=auth)
        assert loaded.status_code == 200  # a is idle now: unloaded for b
        assert [m["name"] for m in (await http.get("/models")).json()["models"]] == ["b"]
