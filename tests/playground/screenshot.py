"""Take the documentation's screenshots of the playground in headless Chromium against a
running service: ``--view probes`` (``docs/playground.png``: the drawn surface, three probes and
a hover read-out), ``--view history`` (``docs/playground-history.png``: the timeline at a
recorded epoch) and ``--view compare`` (``docs/playground-compare.png``: the side-by-side view
of a server serving several models).

    xor-dnn train --lesson --model-dir /tmp/shot/xor        # version 1 of the lesson's network
    xor-dnn serve --model-dir /tmp/shot/xor --port 8000 &
    python -m tests.playground.screenshot --url http://127.0.0.1:8000/ --out docs/playground.png
    python -m tests.playground.screenshot --view history --frame 8 \
        --out docs/playground-history.png

Not a test: it only waits for the page's own ready states (as the browser tests do) and saves
what Chromium shows. Uses the same Debian Chromium as the tests (``XOR_DNN_CHROMIUM``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tests.playground.conftest import CHROMIUM, CHROMIUM_ARGS

VIEWPORT: Any = {"width": 1040, "height": 860}
TALL_VIEWPORT: Any = {"width": 1040, "height": 1180}
# Plane points clicked, in order: one per class and one near the boundary.
PROBES = ((2.63, 2.39), (-2.39, 2.39), (0.46, -0.12))
HOVER = (-3.05, -1.37)


def _canvas_position(page: Any, x: float, y: float) -> Any:
    width, height = page.evaluate(
        "() => { const c = document.getElementById('surface');"
        " return [c.clientWidth, c.clientHeight]; }"
    )
    return {"x": (x + 5) / 10 * width, "y": (5 - y) / 10 * height}


def take(url: str, out: Path, view: str = "probes", frame: int = 8) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            size = VIEWPORT if view == "probes" else TALL_VIEWPORT
            page = browser.new_page(viewport=size, device_scale_factor=1)
            page.set_default_timeout(60_000)
            page.goto(url)
            page.wait_for_selector('#surface[data-state="ready"]')
            if view == "history":
                page.wait_for_selector("#timeline:not([hidden])")
                page.locator("#epoch").fill(str(frame))
                page.wait_for_selector(f'#surface[data-frame="{frame}"]')
                page.screenshot(path=str(out))
                return
            if view == "compare":
                page.click("#compare-toggle")
                page.wait_for_selector('#compare[data-state="ready"]')
                page.locator("#compare").scroll_into_view_if_needed()
                page.screenshot(path=str(out), full_page=True)
                return
            for n, (x, y) in enumerate(PROBES, start=1):
                page.click("#surface", position=_canvas_position(page, x, y))
                page.wait_for_function(
                    "n => document.querySelectorAll('#probes li').length === n"
                    " && document.getElementById('probe-result').dataset.state === 'ready'",
                    arg=n,
                )
            box = page.locator("#surface").bounding_box()
            assert box is not None
            at = _canvas_position(page, *HOVER)
            page.mouse.move(box["x"] + at["x"], box["y"] + at["y"])
            hovered = "() => document.getElementById('hover').textContent.includes('≈')"
            page.wait_for_function(hovered)
            page.screenshot(path=str(out))
        finally:
            browser.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000/")
    parser.add_argument("--out", type=Path, default=Path("docs/playground.png"))
    parser.add_argument("--view", choices=("probes", "history", "compare"), default="probes")
    parser.add_argument("--frame", type=int, default=8, help="recorded epoch index (history)")
    args = parser.parse_args(argv)
    take(args.url, args.out, args.view, args.frame)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
