"""Time the playground in headless Chromium against a running service, as the page times it.

    xor-dnn serve --model-dir models/xor &
    python -m tests.playground.measure --url http://127.0.0.1:8000/ --loads 10 --probes 20

Prints medians and exits 1 when a target is missed: the surface (9,216 grid points plus the
sample, through POST /predict) drawn within 1 s of the page's first request, and a click's
probe answered within 100 ms. Not a test: the numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from typing import Any

from tests.playground.conftest import CHROMIUM, CHROMIUM_ARGS

SURFACE_TARGET_MS = 1000.0
PROBE_TARGET_MS = 100.0


def measure(url: str, loads: int, probes: int, seed: int) -> dict[str, list[float]]:
    from playwright.sync_api import sync_playwright

    rng = random.Random(seed)
    out: dict[str, list[float]] = {"surface": [], "ready": [], "calls": [], "probe": []}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            for _ in range(loads):
                page.goto(url)
                page.wait_for_selector('#surface[data-state="ready"]', timeout=60_000)
                out["surface"].append(float(page.get_attribute("#surface", "data-ms") or "nan"))
                out["calls"].append(float(page.get_attribute("#surface", "data-calls") or "nan"))
                out["ready"].append(float(page.evaluate("performance.now()")))
            size: Any = page.evaluate(
                "() => { const c = document.getElementById('surface');"
                " return [c.clientWidth, c.clientHeight]; }"
            )
            for n in range(1, probes + 1):
                page.click(
                    "#surface",
                    position={"x": rng.uniform(0, size[0]), "y": rng.uniform(0, size[1])},
                )
                page.wait_for_function(
                    "n => document.querySelectorAll('#probes li').length >= Math.min(n, 20)"
                    " && document.getElementById('probe-result').dataset.state === 'ready'",
                    arg=n,
                )
                out["probe"].append(float(page.get_attribute("#probe-result", "data-ms") or "nan"))
        finally:
            browser.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000/")
    parser.add_argument("--loads", type=int, default=10, help="page loads to time")
    parser.add_argument("--probes", type=int, default=20, help="clicks to time")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.loads < 1 or args.probes < 1:
        parser.error("--loads and --probes must be >= 1")
    got = measure(args.url, args.loads, args.probes, args.seed)
    rows = [
        ("surface: grid predict calls per draw", statistics.median(got["calls"]), None, ""),
        (
            "surface: grid + sample computed (ms)",
            statistics.median(got["surface"]),
            SURFACE_TARGET_MS,
            f"{len(got['surface'])} loads",
        ),
        ("page ready from navigation (ms)", statistics.median(got["ready"]), None, ""),
        (
            "probe: click to answer (ms)",
            statistics.median(got["probe"]),
            PROBE_TARGET_MS,
            f"{len(got['probe'])} clicks",
        ),
    ]
    missed = False
    print(f"{'measure (median)':40} {'value':>9} {'target':>8}  note")
    for name, value, target, note in rows:
        ok = target is None or value <= target
        missed |= not ok
        shown_target = "" if target is None else f"<= {target:g}"
        print(f"{name:40} {value:9.1f} {shown_target:>8}  {note}{'' if ok else '  MISSED'}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
