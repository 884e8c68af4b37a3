"""The training-history timeline in a real headless Chromium against a real uvicorn server:
the slider redraws the surface from the recorded grids, play advances, a version trained with
``--no-history`` shows no timeline, and switching versions switches histories."""

from __future__ import annotations

import base64
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.playground.conftest import LiveServer, PageOpener, run_server
from tests.playground.test_playground import (
    PIXELS_AT_JS,
    SNAPSHOT_JS,
    quadrant,
    wait_drawn,
)
from tests.support import TINY_POINTS, tiny_config
from training.data import generated_dataset
from training.train import train_and_publish

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def history_server(
    model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """Versions 1 and 2 (with history) and 3 (trained with history off, the default)."""
    root = tmp_path_factory.mktemp("hist-served") / "xor"
    shutil.copytree(model_dir, root)
    train_and_publish(
        root,
        data=generated_dataset(TINY_POINTS, seed=3),
        runs=1,
        config=tiny_config(epochs=3, seed=3),
        history=False,
    )
    with run_server(root) as live:
        yield live


def history_of(live: LiveServer, version: int) -> dict[str, Any]:
    with live.client() as client:
        r = client.get(f"/models/xor/versions/{version}/history")
    assert r.status_code == 200, r.text
    doc: dict[str, Any] = r.json()
    return doc


def frame_array(doc: dict[str, Any], index: int) -> np.ndarray[Any, Any]:
    size = doc["grid"]["size"]
    raw = np.frombuffer(base64.b64decode(doc["frames"][index]["grid"]), dtype=np.uint8)
    return raw.reshape(size, size).astype(np.float64) / 255


def flipped_point(doc: dict[str, Any]) -> tuple[float, float, int, int]:
    """A plane point whose class differs between the first and last recorded epochs, with its
    3x3 neighbourhood of grid samples on the same side in each (so interpolation and the
    canvas's smoothing cannot blur it), away from the plot's edges and the axes."""
    first, last = frame_array(doc, 0), frame_array(doc, -1)
    size = doc["grid"]["size"]
    (x0, x1), (y0, y1) = doc["grid"]["x"], doc["grid"]["y"]
    best: tuple[float, float, float, int, int] | None = None
    for j in range(3, size - 3):
        for i in range(3, size - 3):
            a, b = first[j - 1 : j + 2, i - 1 : i + 2], last[j - 1 : j + 2, i - 1 : i + 2]
            ca, cb = int(a[1, 1] >= 0.5), int(b[1, 1] >= 0.5)
            if ca == cb or not ((a >= 0.5) == ca).all() or not ((b >= 0.5) == cb).all():
                continue
            x = x0 + (x1 - x0) * i / (size - 1)
            y = y1 - (y1 - y0) * j / (size - 1)
            if min(abs(x), abs(y)) < 0.4 or min(abs(x - round(x)), abs(y - round(y))) < 0.1:
                continue
            # Prefer points far from 0.5 in both frames: the colour is unmistakable.
            margin = min(abs(a[1, 1] - 0.5), abs(b[1, 1] - 0.5))
            if best is None or margin > best[0]:
                best = (margin, x, y, ca, cb)
    assert best is not None, "no point changes class during training"
    assert best[0] > 0.04, f"the flip is too faint to see: {best}"
    return best[1], best[2], best[3], best[4]


def side_of(rgb: list[int]) -> int | None:
    """Which side of 0.5 a surface pixel is: the colour ramp leaves the grey midpoint
    (240, 241, 242) towards blue for class 0 and orange for class 1; an early, near-flat
    surface is only faintly tinted, so this reads the tint, not a saturated colour."""
    red, blue = rgb[0], rgb[2]
    return 0 if blue > red + 6 else 1 if red > blue + 6 else None


def set_frame(page: Any, index: int) -> None:
    page.locator("#epoch").fill(str(index))
    page.wait_for_selector(f'#surface[data-source="history"][data-frame="{index}"]')


def hide_points(page: Any) -> None:
    page.uncheck("#show-train")
    page.uncheck("#show-test")


def test_the_slider_redraws_the_surface_from_the_recorded_epochs(
    open_page: PageOpener, history_server: LiveServer
) -> None:
    doc = history_of(history_server, 2)
    x, y, first_class, last_class = flipped_point(doc)
    with open_page(f"{history_server.url}/") as (page, watch):
        page.select_option("#version", "2")
        wait_drawn(page, 2, watch)
        page.wait_for_selector("#timeline:not([hidden])")
        assert page.get_attribute("#timeline", "data-frames") == str(len(doc["frames"]))
        assert page.get_attribute("#surface", "data-source") == "model"
        hide_points(page)

        set_frame(page, 0)
        assert page.get_attribute("#surface", "data-epoch") == "1"
        assert "Epoch 1 of 30" in page.inner_text("#epoch-label")
        (early,) = page.evaluate(PIXELS_AT_JS, [[x, y]])
        early_snapshot = page.evaluate(SNAPSHOT_JS)

        last = len(doc["frames"]) - 1
        set_frame(page, last)
        (late,) = page.evaluate(PIXELS_AT_JS, [[x, y]])
        assert side_of(early) == first_class, (early, x, y)
        assert side_of(late) == last_class, (late, x, y)
        late_snapshot = page.evaluate(SNAPSHOT_JS)
        changed = sum(a != b for a, b in zip(early_snapshot, late_snapshot, strict=True))
        assert changed > 1000, changed
        # The last epoch is the XOR cross.
        assert quadrant(page, +1, -1)["class1"] >= 0.85 * 256
        assert quadrant(page, +1, +1)["class0"] >= 0.85 * 256
        stats = page.inner_text("#frame-stats")
        test_acc = doc["frames"][last]["test_accuracy"]
        assert f"test {test_acc:.3f}" in stats and "hidden_1" in stats, stats

        # Back to the served model: its own (predict-computed) surface again.
        page.click("#live")
        page.wait_for_selector('#surface[data-source="model"]')
        assert page.get_attribute("#surface", "data-frame") is None
        watch.assert_clean()


def test_play_advances_through_the_epochs_and_stops_at_the_last(
    open_page: PageOpener, history_server: LiveServer
) -> None:
    frames = len(history_of(history_server, 1)["frames"])
    with open_page(f"{history_server.url}/") as (page, watch):
        page.select_option("#version", "1")
        wait_drawn(page, 1, watch)
        page.wait_for_selector("#timeline:not([hidden])")
        page.click("#play")
        assert page.get_attribute("#play", "aria-pressed") == "true"
        page.wait_for_function(
            "() => Number(document.getElementById('surface').dataset.frame) >= 2"
        )
        page.wait_for_function(
            "n => document.getElementById('surface').dataset.frame === String(n - 1)"
            " && document.getElementById('play').getAttribute('aria-pressed') === 'false'",
            arg=frames,
        )
        assert page.input_value("#epoch") == str(frames - 1)
        # Play again starts over from the first epoch; a second click pauses.
        page.click("#play")
        page.wait_for_function(
            "() => Number(document.getElementById('surface').dataset.frame) >= 1"
        )
        page.click("#play")
        assert page.get_attribute("#play", "aria-pressed") == "false"
        assert page.inner_text("#play") == "Play"
        watch.assert_clean()


def test_no_history_hides_the_timeline_and_versions_switch_histories(
    open_page: PageOpener, history_server: LiveServer
) -> None:
    with open_page(f"{history_server.url}/") as (page, watch):
        wait_drawn(page, 3, watch)  # the default, trained with history off
        assert page.is_hidden("#timeline")
        assert not [r for r in watch.requests if r.url.endswith("/history")]

        page.select_option("#version", "2")
        wait_drawn(page, 2, watch)
        page.wait_for_selector("#timeline:not([hidden])")
        set_frame(page, 0)
        v2_first = page.evaluate(SNAPSHOT_JS)

        page.select_option("#version", "1")
        wait_drawn(page, 1, watch)
        assert page.get_attribute("#surface", "data-source") == "model", "a new version is live"
        set_frame(page, 0)
        v1_first = page.evaluate(SNAPSHOT_JS)
        assert sum(a != b for a, b in zip(v1_first, v2_first, strict=True)) > 100
        asked = [r.url for r in watch.requests if r.url.endswith("/history")]
        assert asked == [
            f"{history_server.url}/models/xor/versions/2/history",
            f"{history_server.url}/models/xor/versions/1/history",
        ]

        page.select_option("#version", "3")
        wait_drawn(page, 3, watch)
        assert page.is_hidden("#timeline")
        assert page.get_attribute("#surface", "data-source") == "model"
        watch.assert_clean()
