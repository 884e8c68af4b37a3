"""The model selector and the side-by-side view: the page keeps working as it did against a
server that has no GET /models (single-model, before multi-model serving)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.playground.conftest import LiveServer, PageWatch
from tests.playground.test_playground import TIMEOUT_MS, quadrant, wait_drawn

pytestmark = pytest.mark.browser


def test_without_a_models_route_the_page_falls_back_to_one_model(
    browser: Any, server: LiveServer
) -> None:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    asked: list[str] = []

    def old_server(route: Any) -> None:
        # What a server from before multi-model serving answers: its catch-all 404.
        asked.append(route.request.url)
        route.fulfill(status=404, json={"error": {"code": "not_found", "message": "no route"}})

    try:
        context.route(lambda url: urlsplit(url).path == "/models", old_server)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        watch = PageWatch(origin=server.url, models_route_missing_ok=True)
        watch.attach(page)
        page.goto(f"{server.url}/")
        wait_drawn(page, 2, watch)
        assert asked, "the page must ask the server for its models"
        assert quadrant(page, +1, -1)["class1"] >= 0.85 * 256
        assert page.is_hidden("#model-choice") and page.is_hidden("#compare")
        paths = {urlsplit(r.url).path for r in watch.predict_requests()}
        assert paths == {"/predict"}, paths
        assert page.get_attribute("#surface", "data-model") == "xor"
        watch.assert_clean()
    finally:
        context.close()
