"""Fixtures for the browser tests: a real uvicorn server and Debian's headless Chromium.

Chromium comes from Debian (``apt-get install chromium``), never from Playwright's download.
Without it the tests skip, unless ``XOR_DNN_REQUIRE_BROWSER=1`` (set by ``.ci/run``) makes a
missing browser a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

CHROMIUM = os.environ.get("XOR_DNN_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
STARTUP_TIMEOUT_S = 90.0
TIMEOUT_MS = 30_000
"""Playwright's wait for any one thing on a page."""


def _browser_unavailable(reason: str) -> None:
    if os.environ.get("XOR_DNN_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (XOR_DNN_REQUIRE_BROWSER=1 forbids skipping the browser tests)")
    pytest.skip(reason)


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    """One headless Chromium for the playground tests; each test opens its own context."""
    # Package scope, not session: Playwright's sync API keeps an asyncio loop running in the
    # main thread until it exits, which breaks every later asyncio test in the same run.
    if not Path(CHROMIUM).is_file():
        _browser_unavailable(f"{CHROMIUM} not found: apt-get install -y chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _browser_unavailable("playwright is not installed: pip install playwright")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class LiveServer:
    """A real uvicorn serving ``create_app(settings)`` on a free port, in a thread."""

    url: str
    model_dir: Path | None
    root_path: str

    def client(self) -> httpx.Client:
        """An HTTP client talking to the app directly (no prefix: as the ingress forwards)."""
        return httpx.Client(base_url=self.url, timeout=30.0)


@contextmanager
def run_server(model_dir: Path | None, **overrides: Any) -> Iterator[LiveServer]:
    """Serve ``model_dir`` (None: what ``overrides`` name, e.g. a model repository) until the
    block ends; waits until /readyz says the model is warm."""
    import uvicorn

    from service.app import create_app
    from service.config import Settings

    where = {"model_dir": model_dir} if model_dir is not None else {}
    settings = Settings(**where, log_level="warning", **overrides)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # Configured as `xor-dnn serve` does it: root_path lives in the app (create_app), not in
    # uvicorn, so the app answers with the prefix stripped by the ingress or still in place.
    config = uvicorn.Config(create_app(settings), log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, thread)
        yield LiveServer(url=url, model_dir=model_dir, root_path=settings.root_path)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def _wait_ready(url: str, thread: threading.Thread) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    last = ""
    while time.monotonic() < deadline:
        if not thread.is_alive():
            raise RuntimeError("the server thread exited during startup")
        try:
            r = httpx.get(f"{url}/readyz", timeout=2.0)
            if r.status_code == 200:
                return
            last = f"/readyz answered {r.status_code}: {r.text[:200]}"
        except httpx.TransportError as exc:
            last = repr(exc)
        time.sleep(0.1)
    raise RuntimeError(f"server at {url} not ready after {STARTUP_TIMEOUT_S} s: {last}")


@pytest.fixture
def model_copy(model_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the session's two trained versions, safe to publish into."""
    target = tmp_path / "models" / "xor"
    shutil.copytree(model_dir, target)
    return target


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server shared by the read-only tests of a module (versions 1 and 2, 2 the default)."""
    target = tmp_path_factory.mktemp("served") / "xor"
    shutil.copytree(model_dir, target)
    with run_server(target) as live:
        yield live


ServerFactory = Callable[..., AbstractContextManager[LiveServer]]


@pytest.fixture
def start_server() -> ServerFactory:
    """``with start_server(model_dir, root_path=...) as live:`` for tests needing their own."""
    return run_server


CSP_LISTENER_JS = """
document.addEventListener("securitypolicyviolation", (e) => {
  window.__reportCspViolation(`${e.effectiveDirective} blocked ${e.blockedURI || "inline"}`);
});
"""


@dataclass
class PageWatch:
    """Everything a page did that a clean page must not: console errors, uncaught exceptions,
    failed or 4xx/5xx requests, and requests leaving the service's origin."""

    origin: str
    models_route_missing_ok: bool = False
    """A server from before multi-model serving answers GET /models with 404: the page's cue
    to fall back to one model (versions.js), so that 404 (and Chromium's console line about
    it) is expected, not a problem."""
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    bad_responses: list[str] = field(default_factory=list)
    foreign_requests: list[str] = field(default_factory=list)
    csp_violations: list[str] = field(default_factory=list)
    requests: list[Any] = field(default_factory=list)

    def attach(self, page: Any) -> None:
        """Watch ``page`` (before its first navigation); requests outside the service's
        origin are aborted, as in an air-gapped cluster, and recorded."""
        page.route("**/*", self._only_the_service)
        # Bindings and init scripts come from the browser itself, so the page's CSP allows
        # them: the listener sees every violation, the blocked ones of the page's own code too.
        page.expose_function("__reportCspViolation", self._on_csp_violation)
        page.add_init_script(CSP_LISTENER_JS)
        page.on("console", self._on_console)
        page.on("pageerror", lambda exc: self.page_errors.append(str(exc)))
        page.on("request", self._on_request)
        page.on("requestfailed", self._on_failed)
        page.on("response", self._on_response)

    def _on_csp_violation(self, text: str) -> None:
        self.csp_violations.append(text)

    def _only_the_service(self, route: Any) -> None:
        parts = urlsplit(route.request.url)
        if parts.scheme in ("data", "blob") or f"{parts.scheme}://{parts.netloc}" == self.origin:
            route.fallback()  # on to a test's own context routes, if any, then the network
        else:
            route.abort("blockedbyclient")

    def _expected_404(self, url: str) -> bool:
        return self.models_route_missing_ok and urlsplit(url).path.endswith("/models")

    def _on_console(self, msg: Any) -> None:
        if msg.type == "error":
            where = (msg.location or {}).get("url", "")
            if "404" in msg.text and self._expected_404(where):
                return
            self.console_errors.append(f"{msg.text} @ {msg.location}")

    def _on_request(self, request: Any) -> None:
        self.requests.append(request)
        parts = urlsplit(request.url)
        if (
            parts.scheme not in ("data", "blob")
            and f"{parts.scheme}://{parts.netloc}" != self.origin
        ):
            self.foreign_requests.append(request.url)

    def _on_failed(self, request: Any) -> None:
        # A fetch the page itself aborts (switching version mid-draw) is not a failure.
        if request.failure != "net::ERR_ABORTED":
            self.failed_requests.append(f"{request.url}: {request.failure}")

    def _on_response(self, response: Any) -> None:
        if response.status == 404 and self._expected_404(response.url):
            return
        if response.status >= 400:
            self.bad_responses.append(f"{response.status} {response.url}")

    def problems(self) -> dict[str, list[str]]:
        found = {
            "console errors": self.console_errors,
            "page errors": self.page_errors,
            "failed requests": self.failed_requests,
            "4xx/5xx responses": self.bad_responses,
            "requests outside the service": self.foreign_requests,
            "Content-Security-Policy violations": self.csp_violations,
        }
        return {k: v for k, v in found.items() if v}

    def predict_requests(self, since: int = 0) -> list[Any]:
        return [r for r in self.requests[since:] if urlsplit(r.url).path.endswith("/predict")]

    def assert_clean(self) -> None:
        found = self.problems()
        assert not found, f"the page was not clean: {found}"


PageOpener = Callable[..., AbstractContextManager[tuple[Any, PageWatch]]]


@pytest.fixture
def open_page(browser: Any) -> PageOpener:
    """``with open_page(url) as (page, watch):`` ``url`` in a fresh browser context (1200 wide,
    ``height`` high), watched by a :class:`PageWatch` for the url's origin from before the
    first request; the context closes when the block ends (before a server the test started
    itself stops). ``route=(pattern, handler)`` is a context route set up before the page
    opens; ``models_route_missing_ok`` as in :class:`PageWatch`."""

    @contextmanager
    def opened(
        url: str,
        *,
        height: int = 900,
        route: tuple[Any, Callable[[Any], None]] | None = None,
        models_route_missing_ok: bool = False,
    ) -> Iterator[tuple[Any, PageWatch]]:
        parts = urlsplit(url)
        context = browser.new_context(viewport={"width": 1200, "height": height})
        try:
            if route is not None:
                context.route(*route)
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            watch = PageWatch(
                origin=f"{parts.scheme}://{parts.netloc}",
                models_route_missing_ok=models_route_missing_ok,
            )
            watch.attach(page)
            page.goto(url)
            yield page, watch
        finally:
            context.close()

    return opened
