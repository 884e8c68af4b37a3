"""Fixtures for the service tests: an in-process app over the session models, and real
``python -m service`` processes on free localhost ports (started with :mod:`bench._process`)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bench._process import ServerProcess
from service.app import create_app
from service.config import Settings


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
