"""Helpers shared by tests: a tiny real model published in the production layout."""

from __future__ import annotations

from pathlib import Path

from training.data import generated_dataset
from training.model import ModelConfig
from training.train import PublishedVersion, train_and_publish

TINY_POINTS = 600


def tiny_config(*, epochs: int = 30, seed: int = 0) -> ModelConfig:
    """A (16, 8) net with a high learning rate: ~97% accurate after 30 quick epochs."""
    return ModelConfig(
        hidden_units=(16, 8), dropout=0.0, epochs=epochs, seed=seed, learning_rate=0.02
    )


def publish_tiny(model_dir: Path, *, epochs: int = 30, seed: int = 0) -> PublishedVersion:
    """Train one run on 600 generated points with the real training job and publish it."""
    return train_and_publish(
        model_dir,
        data=generated_dataset(TINY_POINTS, seed=seed),
        runs=1,
        config=tiny_config(epochs=epochs, seed=seed),
    )


def publish_tiny_model(model_dir: Path, *, epochs: int = 30, seed: int = 0) -> int:
    """As :func:`publish_tiny`, returning only the version number."""
    return publish_tiny(model_dir, epochs=epochs, seed=seed).version
