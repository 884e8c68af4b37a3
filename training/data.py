"""Lesson-style XOR data: generate it, and load/validate CSV files with x, y, class id."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

COLUMNS = ("x", "y", "class id")
LOW, HIGH = -5.0, 5.0


def generate(
    n: int = 1000, *, noise: float = 0.0, seed: int = 0
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """``n`` points uniform in [-5, 5]², class 1 exactly where x·y < 0.

    With ``noise`` > 0 that fraction of labels (chosen at random, exactly round(n*noise) of
    them) is flipped, the course's "noisy XOR".
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"noise must be in [0, 1], got {noise}")
    rng = np.random.default_rng(seed)
    xy = rng.uniform(LOW, HIGH, size=(n, 2))
    labels = (xy[:, 0] * xy[:, 1] < 0).astype(np.int64)
    flips = int(round(n * noise))
    if flips:
        idx = rng.choice(n, size=flips, replace=False)
        labels[idx] = 1 - labels[idx]
    return xy.astype(np.float32), labels


def true_rule(points: NDArray[Any]) -> NDArray[np.int64]:
    """The noiseless label: 1 where x·y < 0."""
    return (points[:, 0] * points[:, 1] < 0).astype(np.int64)
