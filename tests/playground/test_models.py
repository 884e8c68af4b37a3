"""The model selector and the side-by-side view against a real server serving several models,
and the page as it was against one model or a server that has no GET /models (before
multi-model serving)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.playground.conftest import LiveServer, PageOpener, run_server
from tests.playground.test_playground import quadrant, wait_drawn

pytestmark = pytest.mark.browser


def test_without_a_models_route_the_page_falls_back_to_one_model(
    open_page: PageOpener, server: LiveServer
) -> None:
    asked: list[str] = []

    def old_server(route: Any) -> None:
        # What a server from before multi-model serving answers: its catch-all 404.
        asked.append(route.request.url)
        route.fulfill(status=404, json={"error": {"code": "not_found", "message": "no route"}})

    route = (lambda url: urlsplit(url).path == "/models", old_server)
    with open_page(f"{server.url}/", route=route, models_route_missing_ok=True) as (page, watch):
        wait_drawn(page, 2, watch)
        assert asked, "the page must ask the server for its models"
        # ... once: polling on would only fill the server's log with 404s.
        page.wait_for_function("() => document.getElementById('version').options.length > 0")
        before = len(watch.requests)
        page.evaluate("() => document.dispatchEvent(new Event('visibilitychange'))")
        page.wait_for_function(
            "n => performance.getEntriesByType('resource')"
            ".filter(e => e.name.endsWith('/models/xor')).length >= n",
            arg=2,
        )
        assert len(asked) == 1, asked
        assert not [r for r in watch.requests[before:] if urlsplit(r.url).path == "/models"]
        assert quadrant(page, +1, -1)["class1"] >= 0.85 * 256
        assert page.is_hidden("#model-choice") and page.is_hidden("#compare")
        paths = {urlsplit(r.url).path for r in watch.predict_requests()}
        assert paths == {"/predict"}, paths
        assert page.get_attribute("#surface", "data-model") == "xor"
        watch.assert_clean()


# -- against a server serving several models (service/repository.py, CONTRACT.md) ------------

RED_IN_PANELS_JS = """
() => [...document.querySelectorAll(".compare-panel canvas")].map((c) => {
  const img = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let k = 0; k < img.length; k += 4)
    if (img[k] > 170 && img[k + 1] < 90 && img[k + 2] < 90) n++;
  return n;
})
"""


@pytest.fixture(scope="module")
def repository(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model repository: ``xor`` (the session's two tiny versions) and ``linear`` (no hidden
    layer, with history), as ``xor-dnn experiment --publish`` lays one out."""
    from dataclasses import replace

    from tests.support import TINY_POINTS, tiny_config
    from training.data import generated_dataset
    from training.train import train_and_publish

    root = tmp_path_factory.mktemp("repository")
    shutil.copytree(model_dir, root / "xor")
    config = replace(tiny_config(epochs=10), hidden_units=())
    train_and_publish(
        root / "linear", data=generated_dataset(TINY_POINTS, seed=0), runs=1, config=config
    )
    return root


@pytest.fixture(scope="module")
def multi_server(repository: Path) -> Iterator[LiveServer]:
    with run_server(None, model_repository=str(repository)) as live:
        yield live


def _sample_predictions(live: LiveServer, model: str, version: int, sample: list[Any]) -> Any:
    points = [{"x": r[0], "y": r[1]} for r in sample]
    with live.client() as client:
        r = client.post(
            f"/models/{model}/predict", params={"version": version}, json={"points": points}
        )
    assert r.status_code == 200, r.text
    return [p["class_id"] for p in r.json()["predictions"]]


def test_side_by_side_shows_each_models_surface_accuracy_and_disagreements(
    open_page: PageOpener, multi_server: LiveServer
) -> None:
    with open_page(f"{multi_server.url}/?model=xor", height=1400) as (page, watch):
        wait_drawn(page, 2, watch)
        assert page.get_attribute("#surface", "data-model") == "xor"
        assert page.is_visible("#model-choice")
        options = page.eval_on_selector_all("#model option", "os => os.map(o => o.value)")
        assert options == ["linear", "xor"]
        before = len(watch.requests)

        page.click("#compare-toggle")
        page.wait_for_selector('#compare[data-state="ready"]')
        panels = page.locator(".compare-panel")
        assert panels.count() == 2
        with multi_server.client() as client:
            listing = client.get("/models").json()
            sample = client.get("/models/xor/versions/2").json()["sample"]
        versions = {m["name"]: m["default_version"] for m in listing["models"]}
        classes = {}
        for k in range(2):
            panel = panels.nth(k)
            name = panel.get_attribute("data-model") or ""
            version = int(panel.get_attribute("data-version") or 0)
            assert version == versions[name]
            classes[name] = _sample_predictions(multi_server, name, version, sample)
            right = sum(c == row[2] for c, row in zip(classes[name], sample, strict=True))
            assert panel.get_attribute("data-correct") == str(right), name
            assert panel.get_attribute("data-total") == str(len(sample))
            assert f"{right} of {len(sample)}" in panel.locator("figcaption").inner_text()
        assert int(panels.nth(0).get_attribute("data-correct") or 0) != int(
            panels.nth(1).get_attribute("data-correct") or 0
        )
        differ = sum(a != b for a, b in zip(classes["linear"], classes["xor"], strict=True))
        assert differ > 10, "a straight line and XOR must disagree somewhere"
        assert page.get_attribute("#compare", "data-disagreements") == str(differ)
        # Every disagreement is ringed in red on both panels.
        assert all(n > 20 * differ for n in page.evaluate(RED_IN_PANELS_JS))

        calls = watch.predict_requests(before)
        by_path = {urlsplit(r.url).path for r in calls}
        assert by_path == {"/models/linear/predict", "/models/xor/predict"}, by_path
        for r in calls:
            name = urlsplit(r.url).path.split("/")[2]
            assert parse_qs(urlsplit(r.url).query) == {"version": [str(versions[name])]}
        watch.assert_clean()


def test_choosing_a_model_draws_it_through_its_own_route_with_its_history(
    open_page: PageOpener, multi_server: LiveServer
) -> None:
    with open_page(f"{multi_server.url}/?model=xor") as (page, watch):
        wait_drawn(page, 2, watch)
        before = len(watch.requests)
        page.select_option("#model", "linear")
        page.wait_for_selector('#surface[data-state="ready"][data-model="linear"]')
        assert "no hidden layer" in page.inner_text("#model-info")
        page.wait_for_selector("#timeline:not([hidden])")
        calls = watch.predict_requests(before)
        assert calls and {urlsplit(r.url).path for r in calls} == {"/models/linear/predict"}
        asked = [r.url for r in watch.requests[before:] if r.url.endswith("/history")]
        assert asked == [f"{multi_server.url}/models/linear/versions/1/history"]
        # A straight line cannot draw XOR: most of the plane is not coloured as the cross.
        right = (
            quadrant(page, +1, +1)["class0"]
            + quadrant(page, -1, -1)["class0"]
            + quadrant(page, +1, -1)["class1"]
            + quadrant(page, -1, +1)["class1"]
        )
        assert right < 0.6 * 4 * 256, right
        watch.assert_clean()


def test_a_single_model_server_lists_one_model_and_the_page_is_as_before(
    open_page: PageOpener, server: LiveServer
) -> None:
    with open_page(f"{server.url}/") as (page, watch):
        wait_drawn(page, 2, watch)
        assert page.is_hidden("#model-choice") and page.is_hidden("#compare")
        paths = {urlsplit(r.url).path for r in watch.predict_requests()}
        assert paths == {"/models/xor/predict"}, paths
        watch.assert_clean()
