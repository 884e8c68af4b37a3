"""The HTML pages under their Content-Security-Policy in a real Chromium, with every request
outside the service aborted (``PageWatch``): Swagger UI from the installed package, the
playground with no violation, and model metadata shown as text, never run."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.playground.conftest import LiveServer, PageOpener, ServerFactory
from tests.playground.test_playground import wait_drawn

pytestmark = pytest.mark.browser

# No "/": the page shows the file name after the last one.
INJECTED = '<img src=x onerror="window.__pwned=1"><svg onload="window.__pwned=2">.csv'


def test_docs_render_and_try_it_out_predicts_offline(
    open_page: PageOpener, server: LiveServer
) -> None:
    with open_page(f"{server.url}/docs") as (page, watch):
        page.wait_for_selector(".opblock")
        paths = page.locator(".opblock-summary-path").all_inner_texts()
        assert "/predict" in [p.strip() for p in paths], paths
        operation = page.locator("#operations-predict-predict_predict_post")
        operation.locator(".opblock-summary").click()
        operation.get_by_role("button", name="Try it out").click()
        body = operation.locator("textarea.body-param__text")
        body.fill(json.dumps({"points": [{"x": 2.5, "y": -2.5}]}))
        with page.expect_response(lambda r: r.url.endswith("/predict")) as answer:
            operation.get_by_role("button", name="Execute").click()
        assert answer.value.status == 200
        shown = operation.locator(".live-responses-table tbody .response-col_status").first
        assert shown.inner_text().strip() == "200"
        assert '"probability"' in operation.locator(".live-responses-table pre").first.inner_text()
        watch.assert_clean()


def test_the_policy_blocks_inline_script_and_the_watch_sees_it(
    open_page: PageOpener, server: LiveServer
) -> None:
    """The control for every clean-page check: an injected inline script is refused by the
    page's CSP, and the refusal is what the watch reports."""
    with open_page(f"{server.url}/") as (page, watch):
        wait_drawn(page, 2, watch)
        assert watch.problems() == {}
        # Resolves when the page sees its policy refuse the script.
        directive = page.evaluate(
            """() => new Promise((resolve) => {
              document.addEventListener(
                "securitypolicyviolation", (e) => resolve(e.effectiveDirective), { once: true });
              const s = document.createElement("script");
              s.textContent = "window.__inline = 1";
              document.body.append(s);
            })"""
        )
        assert directive.startswith("script-src")
        assert page.evaluate("() => window.__inline") is None
        # The watch's report travels back through a binding: wait for it, bounded.
        deadline = time.monotonic() + 10
        while not watch.csp_violations and time.monotonic() < deadline:
            page.wait_for_timeout(20)
        assert any(v.startswith("script-src") for v in watch.csp_violations), watch.problems()


def test_script_in_model_metadata_is_shown_as_text(
    open_page: PageOpener, model_copy: Path, start_server: ServerFactory
) -> None:
    meta_file = model_copy / "2" / "metadata.json"
    meta = json.loads(meta_file.read_text())
    meta["data"] = {"rows": 400, "path": INJECTED}
    meta_file.write_text(json.dumps(meta))
    with start_server(model_copy) as live, open_page(f"{live.url}/") as (page, watch):
        wait_drawn(page, 2, watch)
        shown = page.inner_text('#model-info dd[data-field="data"]')
        assert shown == f"400 rows from {INJECTED}", shown
        assert page.locator("#model-info img, #model-info svg").count() == 0
        assert page.evaluate("() => window.__pwned") is None
        watch.assert_clean()


def test_the_panel_says_when_a_distilled_student_is_served(
    open_page: PageOpener, model_copy: Path, start_server: ServerFactory
) -> None:
    meta_file = model_copy / "2" / "metadata.json"
    meta = json.loads(meta_file.read_text())
    meta["config"]["distill"] = True
    meta["published_runs"] = [1, 2, 3, 4, 5]
    meta_file.write_text(json.dumps(meta))
    with start_server(model_copy) as live, open_page(f"{live.url}/") as (page, watch):
        wait_drawn(page, 2, watch)
        shown = page.inner_text('#model-info dd[data-field="training"]')
        assert "served: one network distilled from 5 runs" in shown, shown
        watch.assert_clean()
