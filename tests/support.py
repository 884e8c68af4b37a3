"""Helpers shared by tests: a tiny real model published in the production layout."""

from __future__ import annotations

from pathlib import Path

from training.data import generate
from training.model import ModelConfig, build_model, export_savedmodel
from xor_dnn.modelstore import publish_version, write_json_atomic


def publish_tiny_model(model_dir: Path, *, epochs: int = 30, seed: int = 0) -> int:
    """Fit a (16, 8) net for a few epochs on 600 generated points and publish it."""
    points, labels = generate(600, seed=seed)
    config = ModelConfig(hidden_units=(16, 8), dropout=0.0, epochs=epochs, seed=seed,
                         learning_rate=0.02)
    model = build_model(config)
    model.fit(points, labels, epochs=epochs, batch_size=32, verbose=0)
    _, acc = model.evaluate(points, labels, verbose=0)

    def build(tmp: Path) -> None:
        export_savedmodel(model, tmp)
        write_json_atomic(
            tmp / "metadata.json",
            {
                "model_name": "xor",
                "version": None,
                "config": config.to_dict(),
                "feature_ranges": {
                    "x": {"min": float(points[:, 0].min()), "max": float(points[:, 0].max())},
                    "y": {"min": float(points[:, 1].min()), "max": float(points[:, 1].max())},
                },
                "test_accuracy_runs": [float(acc)],
                "test_accuracy_mean": float(acc),
                "sample": [[float(x), float(y), int(c), "train"]
                           for (x, y), c in zip(points[:100], labels[:100], strict=True)],
            },
        )

    version, _ = publish_version(model_dir, build)
    return version
