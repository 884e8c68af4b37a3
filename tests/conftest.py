"""Session fixtures: tiny real models trained once and shared by every test module."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def train_tiny_version(model_dir: Path, *, epochs: int = 30, seed: int = 0) -> int:
    """Train a small real model on generated data and publish it; returns its version."""
    from tests.support import publish_tiny_model

    return publish_tiny_model(model_dir, epochs=epochs, seed=seed)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A model folder with two trained versions (1 and 2); treat it as read-only."""
    root = tmp_path_factory.mktemp("models") / "xor"
    train_tiny_version(root, epochs=30, seed=0)
    train_tiny_version(root, epochs=30, seed=1)
    yield root
