"""The playground page in a real headless Chromium against a real uvicorn server.

The page follows the lesson's colours (those of the training pictures): class 0 blue, class 1
orange, for the surface, the sample points, the probe markers, the legend and the badges. So a
pixel counts as class 0 when blue clearly dominates red and as class 1 when red clearly
dominates blue. The canvas spans [-5, 5]² with +y up.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import pytest

from tests.playground.conftest import LiveServer, PageOpener, PageWatch, ServerFactory
from xor_dnn.modelstore import publish_version

pytestmark = pytest.mark.browser

STATIC = Path(__file__).resolve().parents[2] / "service" / "static"

# Counts surface pixels on an n x n lattice inside a rectangle of the plane.
QUADRANT_JS = """
([x0, x1, y0, y1, n]) => {
  const c = document.getElementById("surface");
  const img = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  const out = { class0: 0, class1: 0, other: 0 };
  for (let a = 0; a < n; a++) {
    for (let b = 0; b < n; b++) {
      const x = x0 + ((x1 - x0) * (a + 0.5)) / n;
      const y = y0 + ((y1 - y0) * (b + 0.5)) / n;
      const px = Math.floor(((x + 5) / 10) * c.width);
      const py = Math.floor(((5 - y) / 10) * c.height);
      const k = 4 * (py * c.width + px);
      const red = img[k], blue = img[k + 2];
      if (blue > red + 40) out.class0++;
      else if (red > blue + 40) out.class1++;
      else out.other++;
    }
  }
  return out;
}
"""

# The canvas pixel (RGB) under each plane point [x, y].
PIXELS_AT_JS = """
(points) => {
  const c = document.getElementById("surface");
  const img = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  return points.map(([x, y]) => {
    const px = Math.floor(((x + 5) / 10) * c.width);
    const py = Math.floor(((5 - y) / 10) * c.height);
    const k = 4 * (py * c.width + px);
    return [img[k], img[k + 1], img[k + 2]];
  });
}
"""

# Every 4th pixel of the canvas as a flat RGB list: enough to tell two drawings apart.
SNAPSHOT_JS = """
() => {
  const c = document.getElementById("surface");
  const img = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  const out = [];
  for (let y = 0; y < c.height; y += 4)
    for (let x = 0; x < c.width; x += 4) {
      const k = 4 * (y * c.width + x);
      out.push(img[k], img[k + 1], img[k + 2]);
    }
  return out;
}
"""

# Pixels in the page's "mistake" red (#d62728), which only the mistakes toggle draws.
RED_PIXELS_JS = """
() => {
  const c = document.getElementById("surface");
  const img = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let k = 0; k < img.length; k += 4)
    if (img[k] > 170 && img[k + 1] < 90 && img[k + 2] < 90) n++;
  return n;
}
"""


def wait_drawn(page: Any, version: int, watch: PageWatch) -> None:
    """Wait for the surface of ``version``; on timeout, say what the page saw instead."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_selector(f'#surface[data-state="ready"][data-version="{version}"]')
    except PlaywrightTimeout:
        state = page.evaluate(
            "() => [document.getElementById('surface').dataset.state,"
            " document.getElementById('surface').dataset.version,"
            " document.getElementById('status').textContent]"
        )
        pytest.fail(
            f"version {version} never drawn: canvas state/version/status {state}; "
            f"page problems {watch.problems()}"
        )


def quadrant(page: Any, sx: int, sy: int) -> dict[str, int]:
    """Pixel classes over the quadrant of signs (sx, sy), keeping off the axes by 0.75."""
    lo, hi = 0.75, 4.75
    xs = [lo, hi] if sx > 0 else [-hi, -lo]
    ys = [lo, hi] if sy > 0 else [-hi, -lo]
    result: dict[str, int] = page.evaluate(QUADRANT_JS, [*xs, *ys, 16])
    return result


def colour_class(rgb: list[int] | tuple[int, ...]) -> int | None:
    """0 for the blue family, 1 for the orange family, None for neither (as QUADRANT_JS)."""
    red, blue = rgb[0], rgb[2]
    return 0 if blue > red + 40 else 1 if red > blue + 40 else None


def css_colours(value: str) -> list[tuple[int, ...]]:
    """Every ``rgb(r, g, b)`` in a computed CSS value, in order."""
    return [tuple(map(int, m)) for m in re.findall(r"rgba?\((\d+), (\d+), (\d+)", value)]


def click_at(page: Any, x: float, y: float) -> None:
    """Click the canvas where the plane point (x, y) is drawn."""
    box = page.evaluate(
        "() => { const c = document.getElementById('surface');"
        " return [c.clientWidth, c.clientHeight]; }"
    )
    page.click("#surface", position={"x": (x + 5) / 10 * box[0], "y": (5 - y) / 10 * box[1]})


def direct_predict(live: LiveServer, points: list[dict[str, float]], version: int) -> Any:
    with live.client() as client:
        r = client.post("/predict", params={"version": version}, json={"points": points})
    assert r.status_code == 200, r.text
    return r.json()


def predict_body(request: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(request.post_data)
    return body


def test_page_and_assets_are_served_with_their_content_types(server: LiveServer) -> None:
    expected = {
        "/": "text/html",
        "/playground": "text/html",
        "/static/app.js": "javascript",
        "/static/style.css": "text/css",
        "/static/favicon.svg": "image/svg+xml",
    }
    with server.client() as client:
        for path, kind in expected.items():
            r = client.get(path)
            assert r.status_code == 200, (path, r.status_code)
            assert kind in r.headers["content-type"], (path, r.headers["content-type"])
            # Fixed file names, so browsers must revalidate, never run a stale app.js.
            assert r.headers["cache-control"] == "no-cache", (path, r.headers)
            assert r.headers.get("etag"), path
            if path.startswith("/static/"):
                again = client.get(path, headers={"If-None-Match": r.headers["etag"]})
                assert again.status_code == 304, (path, again.status_code)
        page = client.get("/").text
    assert 'src="static/app.js"' in page and 'href="static/style.css"' in page


def test_static_files_reference_nothing_outside_the_service() -> None:
    """No CDN, font or absolute URL anywhere: the page must work offline and under a prefix."""
    for path in sorted(STATIC.iterdir()):
        text = path.read_text()
        if path.suffix == ".svg":
            text = text.replace('xmlns="http://www.w3.org/2000/svg"', "")
        assert not re.search(r"https?://|@import|url\(", text), path.name
        assert not re.search(r"""(?:src|href)=["']/""", text), f"{path.name}: absolute URL"
        assert not re.search(r"""fetch\(\s*["'`]/|api\(\s*["'`]/""", text), path.name


def test_page_draws_the_surface_through_the_batch_api_without_errors(
    open_page: PageOpener, server: LiveServer
) -> None:
    with open_page(f"{server.url}/") as (page, watch):
        wait_drawn(page, 2, watch)
        plus_plus, plus_minus = quadrant(page, +1, +1), quadrant(page, +1, -1)
        minus_plus, minus_minus = quadrant(page, -1, +1), quadrant(page, -1, -1)
        # (+,+) and (-,-) are class 0 (x*y > 0); the adjacent quadrants are class 1.
        assert plus_plus["class0"] >= 0.85 * 256, plus_plus
        assert minus_minus["class0"] >= 0.85 * 256, minus_minus
        assert plus_minus["class1"] >= 0.85 * 256, plus_minus
        assert minus_plus["class1"] >= 0.85 * 256, minus_plus

        grid_points = int(page.get_attribute("#surface", "data-points") or 0)
        calls = watch.predict_requests()
        assert grid_points >= 64 * 64
        sizes = []
        for request in calls:
            assert request.method == "POST"
            assert parse_qs(urlsplit(request.url).query) == {"version": ["2"]}, request.url
            sizes.append(len(predict_body(request)["points"]))
        assert max(sizes) <= 1024, sizes
        # The grid plus the metadata sample, nothing else, and in a few calls.
        with server.client() as client:
            sample = client.get("/models/xor/versions/2").json()["sample"]
        assert sum(sizes) == grid_points + len(sample), sizes
        assert len(calls) <= grid_points // 1024 + 2, sizes

        # Each sample dot is filled with its label's colour (a later dot may cover a few).
        dots = page.evaluate(PIXELS_AT_JS, [row[:2] for row in sample])
        same = sum(colour_class(rgb) == row[2] for rgb, row in zip(dots, sample, strict=True))
        assert same >= 0.95 * len(sample), (same, len(sample))
        # The legend: class 0 on the blue end of the colour bar, class 1 on the orange end.
        assert page.inner_text(".legend").split() == ["class", "0", "class", "1"]
        bar = css_colours(
            page.eval_on_selector(".colorbar", "e => getComputedStyle(e).backgroundImage")
        )
        assert [colour_class(bar[0]), colour_class(bar[-1])] == [0, 1], bar

        info = page.inner_text("#model-info")
        assert "xor" in info and "2 → 16 → 8 → 1" in info and "none" in info
        assert re.search(r"Test accuracy\s+\d+\.\d %", info), info
        assert "learning rate 0.02, cosine to 0" in info, info  # the fixture's schedule
        assert "binary cross-entropy" in info, info  # and its loss (gce_q 0)
        assert page.input_value("#version") == "2"
        watch.assert_clean()


def test_playground_path_serves_the_same_page(open_page: PageOpener, server: LiveServer) -> None:
    with open_page(f"{server.url}/playground") as (page, watch):
        wait_drawn(page, 2, watch)
        assert quadrant(page, +1, -1)["class1"] >= 0.85 * 256
        watch.assert_clean()


@pytest.mark.parametrize(("x", "y"), [(2.5, 2.5), (2.5, -2.5), (-2.5, 2.5), (-2.5, -2.5)])
def test_a_click_shows_the_probability_a_direct_predict_call_gives(
    open_page: PageOpener, server: LiveServer, x: float, y: float
) -> None:
    with open_page(f"{server.url}/") as (page, watch):
        wait_drawn(page, 2, watch)
        before = len(watch.requests)
        click_at(page, x, y)
        page.wait_for_selector('#probe-result[data-state="ready"]')
        shown_x = float(page.get_attribute("#probe-result", "data-x") or "nan")
        shown_y = float(page.get_attribute("#probe-result", "data-y") or "nan")
        shown_p = float(page.get_attribute("#probe-result", "data-probability") or "nan")
        shown_text = page.inner_text("#probe-result .probability")
        shown_class = int(page.get_attribute("#probe-result", "data-class-id") or -1)
        assert abs(shown_x - x) < 0.05 and abs(shown_y - y) < 0.05, (shown_x, shown_y)

        clicks = watch.predict_requests(before)
        assert len(clicks) == 1, "one click must make exactly one predict call"
        assert predict_body(clicks[0]) == {"points": [{"x": shown_x, "y": shown_y}]}
        assert "version=2" in clicks[0].url

        answer = direct_predict(server, [{"x": shown_x, "y": shown_y}], 2)["predictions"][0]
        assert shown_p == pytest.approx(answer["probability"], abs=1e-6)
        assert shown_text == f"{answer['probability']:.4f}"
        assert shown_class == answer["class_id"] == (1 if x * y < 0 else 0)
        assert page.locator("#probes li").count() == 1
        # The probe's marker and badge wear its class's colour.
        (marker,) = page.evaluate(PIXELS_AT_JS, [[shown_x, shown_y]])
        assert colour_class(marker) == shown_class, marker
        badge = page.locator(f"#probe-result .badge.c{shown_class}")
        assert badge.inner_text() == f"class {shown_class}"
        fill = css_colours(badge.evaluate("e => getComputedStyle(e).backgroundColor"))
        assert [colour_class(c) for c in fill] == [shown_class], fill
        watch.assert_clean()


def test_the_probe_form_validates_and_probes(open_page: PageOpener, server: LiveServer) -> None:
    with open_page(f"{server.url}/") as (page, watch):
        wait_drawn(page, 2, watch)
        before = len(watch.requests)
        page.fill("#probe-x", "")
        page.fill("#probe-y", "1")
        page.click("#probe-form button")
        assert "x: enter a number" in page.inner_text("#probe-result")
        assert watch.predict_requests(before) == [], "invalid input must not reach the service"

        page.fill("#probe-x", "-3.25")
        page.fill("#probe-y", "4")
        page.click("#probe-form button")
        page.wait_for_selector('#probe-result[data-state="ready"]')
        answer = direct_predict(server, [{"x": -3.25, "y": 4.0}], 2)["predictions"][0]
        shown = float(page.get_attribute("#probe-result", "data-probability") or "nan")
        assert shown == pytest.approx(answer["probability"], abs=1e-6)
        watch.assert_clean()


def test_switching_version_redraws_with_pinned_requests(
    open_page: PageOpener, server: LiveServer
) -> None:
    with open_page(f"{server.url}/") as (page, watch):
        wait_drawn(page, 2, watch)
        click_at(page, 1.0, -1.0)
        page.wait_for_selector('#probe-result[data-state="ready"]')
        drawn_v2 = page.evaluate(SNAPSHOT_JS)
        before = len(watch.requests)

        page.select_option("#version", "1")
        wait_drawn(page, 1, watch)
        drawn_v1 = page.evaluate(SNAPSHOT_JS)
        changed = sum(a != b for a, b in zip(drawn_v1, drawn_v2, strict=True))
        assert changed > 100, f"only {changed} sampled channel values changed"

        calls = watch.predict_requests(before)
        assert calls and all("version=1" in r.url for r in calls), [r.url for r in calls]
        assert sum(len(predict_body(r)["points"]) for r in calls) >= 64 * 64
        assert page.is_checked("#follow") is False, "choosing a version pins it"
        assert "1" in page.inner_text('#model-info dd[data-field="version"]')
        assert quadrant(page, -1, -1)["class0"] >= 0.85 * 256
        # The probe is re-evaluated on the new version.
        probe = page.locator("#probes li").first
        assert probe.get_attribute("data-version") == "1"
        point = {
            "x": float(probe.get_attribute("data-x") or "nan"),
            "y": float(probe.get_attribute("data-y") or "nan"),
        }
        answer = direct_predict(server, [point], 1)["predictions"][0]
        assert float(probe.get_attribute("data-probability") or "nan") == pytest.approx(
            answer["probability"], abs=1e-6
        )
        watch.assert_clean()


def test_mistakes_toggle_rings_the_points_the_model_gets_wrong(
    open_page: PageOpener, server: LiveServer
) -> None:
    """Serve a sample with deliberately wrong labels; the page must find exactly those the
    model disagrees with (checked against the service) and ring them only when asked."""
    sample: list[list[Any]] = []

    def relabel(route: Any) -> None:
        response = route.fetch()
        meta = response.json()
        rows = meta["sample"]
        for row in rows[:5]:
            row[2] = 1 - row[2]
        for row in rows[::3]:
            row[3] = "test"
        sample.extend(rows)
        route.fulfill(response=response, json=meta)

    route = ("**/models/xor/versions/*", relabel)
    with open_page(f"{server.url}/", route=route) as (page, watch):
        wait_drawn(page, 2, watch)

        points = [{"x": row[0], "y": row[1]} for row in sample]
        predictions = direct_predict(server, points, 2)["predictions"]
        wrong = sum(p["class_id"] != row[2] for p, row in zip(predictions, sample, strict=True))
        assert wrong >= 3, "the relabelled points should mostly disagree with the model"
        assert page.get_attribute("#mistakes-summary", "data-wrong") == str(wrong)
        assert f"{wrong} of {len(sample)}" in page.inner_text("#mistakes-summary")

        assert page.evaluate(RED_PIXELS_JS) == 0
        page.check("#show-mistakes")
        assert page.evaluate(RED_PIXELS_JS) > 20 * wrong
        page.uncheck("#show-mistakes")
        assert page.evaluate(RED_PIXELS_JS) == 0
        watch.assert_clean()


def _publish_copy_of(model_dir: Path, version: int) -> int:
    def build(tmp: Path) -> None:
        shutil.copytree(model_dir / str(version), tmp, dirs_exist_ok=True)

    number, _ = publish_version(model_dir, build)
    return number


def test_a_hot_loaded_version_appears_while_the_page_is_open(
    open_page: PageOpener, model_copy: Path, start_server: ServerFactory
) -> None:
    with start_server(model_copy, poll_interval_s=0.2) as live:
        url = f"{live.url}/?poll_ms=300"
        with open_page(url) as (following, watch), open_page(url) as (pinned, pinned_watch):
            wait_drawn(following, 2, watch)
            wait_drawn(pinned, 2, pinned_watch)
            pinned.select_option("#version", "1")
            wait_drawn(pinned, 1, pinned_watch)
            assert following.locator('#version option[value="3"]').count() == 0

            assert _publish_copy_of(model_copy, 1) == 3
            following.wait_for_selector('#version option[value="3"]', state="attached")
            wait_drawn(following, 3, watch)
            assert "Version 3 hot-loaded" in following.inner_text("#status")
            assert following.input_value("#version") == "3"

            pinned.wait_for_selector('#version option[value="3"]', state="attached")
            assert pinned.get_attribute("#surface", "data-version") == "1"
            assert pinned.input_value("#version") == "1", "a pinned page stays on its version"
            watch.assert_clean()
            pinned_watch.assert_clean()


PREFIX = "/ml/xor-dnn"


@pytest.mark.parametrize(
    "strip", [True, False], ids=["ingress-strips-prefix", "ingress-keeps-prefix"]
)
def test_the_page_works_behind_a_path_prefix(
    open_page: PageOpener, model_copy: Path, start_server: ServerFactory, strip: bool
) -> None:
    """An ingress serves the app under PREFIX (root_path) and routes nothing else; the page
    must only ever ask for URLs under PREFIX, whichever of / and /playground it was opened at.
    Ingresses either strip the prefix before forwarding or keep it: both must work."""
    with start_server(model_copy, root_path=PREFIX) as live:
        outside: list[str] = []

        def ingress(route: Any) -> None:
            parts = urlsplit(route.request.url)
            if parts.path == PREFIX or parts.path.startswith(PREFIX + "/"):
                inner = (parts.path[len(PREFIX) :] or "/") if strip else parts.path
                route.fulfill(response=route.fetch(url=urlunsplit(parts._replace(path=inner))))
            else:
                outside.append(route.request.url)
                route.fulfill(status=404, body="not routed by the ingress")

        for entry in (f"{PREFIX}/", f"{PREFIX}/playground"):
            with open_page(live.url + entry, route=("**/*", ingress)) as (page, watch):
                wait_drawn(page, 2, watch)
                assert quadrant(page, +1, +1)["class0"] >= 0.85 * 256
                click_at(page, 2.0, -3.0)
                page.wait_for_selector('#probe-result[data-state="ready"]')
                assert page.get_attribute("#probe-result", "data-class-id") == "1"
                assert outside == []
                assert all(urlsplit(r.url).path.startswith(PREFIX + "/") for r in watch.requests)
                watch.assert_clean()
