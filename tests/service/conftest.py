"""Fixtures for the service tests: an in-process app over the session models, and real
``python -m service`` processes on free localhost ports (started with :mod:`bench._process`)."""

from __future__ import annotations

import contextlib
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from bench._process import ServerProcess
from service.app import create_app
from service.config import Settings
from service.server import PROTOCOL


@pytest.fixture(scope="module")
def client(model_dir: Path) -> Iterator[TestClient]:
    """The app with default settings over the session's two versions (read-only use)."""
    with TestClient(create_app(Settings(model_dir=model_dir))) as c:
        yield c


def copy_models(src: Path, dst: Path) -> Path:
    """A writable copy of a model folder, for tests that add or break versions."""
    shutil.copytree(src, dst)
    return dst


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[list[ServerProcess]]:
    """Collects started servers and makes sure none outlives its test."""
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.kill()


@contextlib.contextmanager
def served(app: Any, **config: Any) -> Iterator[httpx.Client]:
    """``app`` on a real uvicorn server in a thread, with the service's HTTP protocol (so its
    data lane runs), lifespan and all; an httpx client for it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    options: dict[str, Any] = {
        "log_level": "warning",
        "access_log": False,
        "proxy_headers": False,
        **config,
    }
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, http=PROTOCOL, **options)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            yield http
    finally:
        server.should_exit = True
        thread.join(30)


@contextlib.contextmanager
def app_client(app: Any, transport: str) -> Iterator[httpx.Client]:
    """A client of ``app``: in process (``asgi``: the ASGI path only) or over a real socket
    (``http``: the protocol's data lane where it applies)."""
    if transport == "asgi":
        with TestClient(app) as c:
            yield c
    else:
        with served(app) as c:
            yield c
