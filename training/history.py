"""Training history: what the network drew at a few epochs, recorded as it trains.

A Keras callback (:func:`history_callback`) records, at a log-spaced set of epochs
(:func:`history_epochs`), the class-1 probability on a coarse grid over the training data's
range, on the fit points and on the test points, with dropout off, plus the norm of each
layer's weights. :func:`build_history` turns the published runs' recordings into the compact
document written beside the SavedModel (:data:`xor_dnn.modelstore.HISTORY_FILE`): the grid of
each recorded epoch quantised to 8 bits, the training and test loss and accuracy at that epoch,
and the weight norms. For an ensemble every quantity is the ensemble's: the mean probability of
its runs (so the loss and accuracy are the ensemble's own), and the mean norm over its runs.

Layout (``format`` 1), JSON::

    {"format": 1, "epochs_trained": 100, "runs": [3],
     "grid": {"size": 48, "x": [xmin, xmax], "y": [ymin, ymax], "encoding": "uint8",
              "order": "row-major; row 0 at y max, column 0 at x min"},
     "final_equals_published": true,
     "frames": [{"epoch": 1, "train_loss": .., "train_accuracy": .., "test_loss": ..,
                 "test_accuracy": .., "weight_norms": {"hidden_1": .., ...},
                 "grid": "<base64 of size*size bytes>"}, ...]}

A grid byte ``q`` stands for the probability ``q / 255`` (rounded to nearest, so the recorded
value is within half a step, 1/510, of the model's). ``final_equals_published`` is false when
the published weights are not those of the last epoch (stochastic weight averaging).
"""

from __future__ import annotations

import base64
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    import keras

FORMAT = 1
GRID_SIZE = 48
DEFAULT_FRAMES = 20
LEVELS = 255
"""A probability p is stored as round(p * LEVELS) in one byte."""
_EPS = 1e-7


def history_epochs(epochs: int, frames: int = DEFAULT_FRAMES) -> list[int]:
    """About ``frames`` epochs (1-based) between 1 and ``epochs``, log-spaced, both ends kept.

    Early epochs change the surface most, so they are sampled densely; rounding merges some
    log-spaced values, so the missing ones are filled in where the gaps are widest.
    """
    if epochs < 1 or frames < 1:
        raise ValueError(f"epochs and frames must be >= 1, got {epochs}, {frames}")
    if epochs <= frames:
        return list(range(1, epochs + 1))
    chosen = {round(e) for e in np.geomspace(1, epochs, frames)} | {1, epochs}
    while len(chosen) < frames:
        ordered = sorted(chosen)
        gaps = [(b - a, a, b) for a, b in itertools.pairwise(ordered)]
        _, a, b = max(gaps)
        chosen.add((a + b) // 2)
    return sorted(chosen)


def grid_points(x_range: Sequence[float], y_range: Sequence[float], size: int) -> NDArray[Any]:
    """The ``size * size`` grid points, row-major, row 0 at y max, column 0 at x min."""
    xs = np.linspace(x_range[0], x_range[1], size, dtype=np.float64)
    ys = np.linspace(y_range[1], y_range[0], size, dtype=np.float64)
    gx, gy = np.meshgrid(xs, ys)
    points: NDArray[Any] = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)
    return points


def quantise(prob: NDArray[Any]) -> NDArray[np.uint8]:
    """Probabilities in [0, 1] as bytes (``round(p * 255)``)."""
    q: NDArray[np.uint8] = np.rint(np.clip(prob, 0.0, 1.0) * LEVELS).astype(np.uint8)
    return q


def dequantise(data: NDArray[np.uint8]) -> NDArray[np.float64]:
    out: NDArray[np.float64] = data.astype(np.float64) / LEVELS
    return out


@dataclass
class RunRecording:
    """One run's raw recordings (float32, in memory): what :func:`build_history` combines."""

    epochs: list[int] = field(default_factory=list)
    grid: list[NDArray[np.float32]] = field(default_factory=list)
    fit: list[NDArray[np.float32]] = field(default_factory=list)
    test: list[NDArray[np.float32]] = field(default_factory=list)
    norms: list[dict[str, float]] = field(default_factory=list)


@dataclass(frozen=True)
class HistoryPlan:
    """What to record: at which epochs, and on which points."""

    epochs: frozenset[int]
    grid: NDArray[np.float32]
    fit_points: NDArray[np.float32]
    test_points: NDArray[np.float32]
    x_range: tuple[float, float]
    y_range: tuple[float, float]
    size: int = GRID_SIZE

    @classmethod
    def for_training(
        cls,
        total_epochs: int,
        train_points: NDArray[Any],
        fit_points: NDArray[Any],
        test_points: NDArray[Any],
        *,
        size: int = GRID_SIZE,
        frames: int = DEFAULT_FRAMES,
    ) -> HistoryPlan:
        """The grid spans the training points' range (as ``metadata.json``'s feature_ranges)."""
        x_range = (float(train_points[:, 0].min()), float(train_points[:, 0].max()))
        y_range = (float(train_points[:, 1].min()), float(train_points[:, 1].max()))
        return cls(
            epochs=frozenset(history_epochs(total_epochs, frames)),
            grid=grid_points(x_range, y_range, size),
            fit_points=np.asarray(fit_points, dtype=np.float32),
            test_points=np.asarray(test_points, dtype=np.float32),
            x_range=x_range,
            y_range=y_range,
            size=size,
        )


def layer_norms(model: keras.Model) -> dict[str, float]:
    """The L2 norm of each weighted layer's weights (kernel and bias together)."""
    out = {}
    for layer in model.layers:
        weights = layer.get_weights()
        if weights:
            out[layer.name] = float(math.sqrt(sum(float(np.sum(np.square(w))) for w in weights)))
    return out


def history_callback(plan: HistoryPlan, into: RunRecording) -> Any:
    """A Keras callback appending to ``into`` at the end of each epoch of ``plan``."""
    import keras

    # One forward pass over grid, fit and test points together: a single call is cheaper
    # than three on so few points.
    stacked = np.concatenate([plan.grid, plan.fit_points, plan.test_points]).astype(np.float32)
    n_grid, n_fit = len(plan.grid), len(plan.fit_points)

    class TrainingHistory(keras.callbacks.Callback):  # type: ignore[misc]
        """Records the surface, the fit/test probabilities and the weight norms."""

        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            if epoch + 1 not in plan.epochs:
                return
            out = self.model(stacked, training=False)
            prob = np.asarray(out, dtype=np.float32).reshape(-1)
            into.epochs.append(epoch + 1)
            into.grid.append(prob[:n_grid])
            into.fit.append(prob[n_grid : n_grid + n_fit])
            into.test.append(prob[n_grid + n_fit :])
            into.norms.append(layer_norms(self.model))

    return TrainingHistory()


def _bce(prob: NDArray[Any], labels: NDArray[Any]) -> float | None:
    if len(labels) == 0:
        return None
    p = np.clip(prob.astype(np.float64), _EPS, 1 - _EPS)
    value = float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))
    return round(value, 6) if math.isfinite(value) else None


def _accuracy(prob: NDArray[Any], labels: NDArray[Any]) -> float | None:
    if len(labels) == 0:
        return None
    return round(float(((prob >= 0.5).astype(np.int64) == labels).mean()), 6)


def build_history(
    plan: HistoryPlan,
    recordings: Sequence[RunRecording],
    fit_labels: NDArray[Any],
    test_labels: NDArray[Any],
    *,
    runs: Sequence[int],
    epochs_trained: int,
    final_equals_published: bool,
) -> dict[str, Any]:
    """The history document of the published model (one run, or the mean of an ensemble's)."""
    if not recordings:
        raise ValueError("build_history needs at least one run's recording")
    epochs = recordings[0].epochs
    if any(r.epochs != epochs for r in recordings):
        raise ValueError("the runs recorded different epochs")
    frames = []
    for i, epoch in enumerate(epochs):
        grid = np.mean([r.grid[i] for r in recordings], axis=0)
        fit = np.mean([r.fit[i] for r in recordings], axis=0)
        test = np.mean([r.test[i] for r in recordings], axis=0)
        names = recordings[0].norms[i].keys()
        norms = {n: round(float(np.mean([r.norms[i][n] for r in recordings])), 6) for n in names}
        frames.append(
            {
                "epoch": epoch,
                "train_loss": _bce(fit, fit_labels),
                "train_accuracy": _accuracy(fit, fit_labels),
                "test_loss": _bce(test, test_labels),
                "test_accuracy": _accuracy(test, test_labels),
                "weight_norms": norms,
                "grid": base64.b64encode(quantise(grid).tobytes()).decode("ascii"),
            }
        )
    return {
        "format": FORMAT,
        "epochs_trained": epochs_trained,
        "runs": list(runs),
        "grid": {
            "size": plan.size,
            "x": [round(v, 6) for v in plan.x_range],
            "y": [round(v, 6) for v in plan.y_range],
            "encoding": "uint8",
            "order": "row-major; row 0 at y max, column 0 at x min",
        },
        "final_equals_published": final_equals_published,
        "frames": frames,
    }


def frame_grid(history: dict[str, Any], index: int) -> NDArray[np.float64]:
    """Frame ``index``'s probabilities as a ``size x size`` array (row 0 at y max)."""
    size = int(history["grid"]["size"])
    raw = np.frombuffer(base64.b64decode(history["frames"][index]["grid"]), dtype=np.uint8)
    return dequantise(raw).reshape(size, size)
