"""The pictures a user looks at: data scatter, decision surface, learning curves, experiment grid.

Matplotlib runs headless (the Agg backend, chosen per figure), so training works without a
display; each picture is written atomically (temp file + rename) beside the version.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from training.data import HIGH, LOW
from xor_dnn.storage import atomic_writer

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DATA_PNG = "data.png"
SURFACE_PNG = "decision_surface.png"
CURVES_PNG = "learning_curves.png"
EXPERIMENT_PNG = "experiment.png"

# The lesson's colours: class 0 blue, class 1 orange; the surface uses the same two hues.
CLASS_COLOURS = ("#1f77b4", "#ff7f0e")
GRID_STEPS = 201

Predict = Callable[[NDArray[np.float32]], NDArray[np.float32]]


@dataclass(frozen=True)
class Panel:
    """One decision-surface panel of the experiment figure."""

    title: str
    predict: Predict
    points: NDArray[np.float32]
    labels: NDArray[np.int64]


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    # A bare Figure (no pyplot) needs no GUI backend and no global state: safe in threads.
    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def _save(fig: Figure, path: Path) -> Path:
    with atomic_writer(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def _scatter(
    ax: Axes,
    points: NDArray[Any],
    labels: NDArray[Any],
    *,
    marker: str = "o",
    label_suffix: str = "",
    size: float = 12,
    edge: str | None = None,
) -> None:
    for cls in (0, 1):
        sel = labels == cls
        ax.scatter(
            points[sel, 0],
            points[sel, 1],
            s=size,
            marker=marker,
            c=CLASS_COLOURS[cls],
            edgecolors=edge if edge else "none",
            linewidths=0.6,
            label=f"class {cls}{label_suffix}",
        )


def _square(ax: Axes) -> None:
    ax.set_xlim(LOW, HIGH)
    ax.set_ylim(LOW, HIGH)
    ax.set_aspect("equal")
    ax.set_xlabel("x")
    ax.set_ylabel("y")


def _legend_below(ax: Axes, ncol: int = 2) -> None:
    # Below the square, never over the points the user is trying to read.
    ax.legend(
        loc="upper center",
        bbox_to_anchor=(0.5, -0.13),
        ncol=ncol,
        fontsize=8,
        frameon=False,
        handletextpad=0.2,
        columnspacing=1.0,
    )


def plot_data(points: NDArray[Any], labels: NDArray[Any], path: Path, *, title: str) -> Path:
    """The lesson's scatter of the data coloured by class."""
    fig = _figure(5.0, 5.4)
    ax = fig.add_subplot()
    _scatter(ax, points, labels)
    _square(ax)
    ax.set_title(title)
    _legend_below(ax)
    return _save(fig, path)


def surface_grid(steps: int = GRID_STEPS) -> tuple[NDArray[Any], NDArray[Any], NDArray[np.float32]]:
    """Mesh over [-5, 5]² and the same points flattened to ``(steps², 2)`` float32."""
    axis = np.linspace(LOW, HIGH, steps)
    gx, gy = np.meshgrid(axis, axis)
    flat = np.column_stack([gx.ravel(), gy.ravel()]).astype(np.float32)
    return gx, gy, flat


def _surface(ax: Axes, predict: Predict, steps: int = GRID_STEPS) -> Any:
    gx, gy, flat = surface_grid(steps)
    prob = np.asarray(predict(flat), dtype=np.float64).reshape(gx.shape)
    mesh = ax.contourf(gx, gy, prob, levels=np.linspace(0, 1, 11), cmap=_class_cmap(), alpha=0.45)
    ax.contour(gx, gy, prob, levels=[0.5], colors="black", linewidths=1.2)
    return mesh


def _class_cmap() -> Any:
    from matplotlib.colors import LinearSegmentedColormap

    return LinearSegmentedColormap.from_list(
        "xor_classes", [CLASS_COLOURS[0], "#ffffff", CLASS_COLOURS[1]]
    )


def plot_decision_surface(
    predict: Predict,
    train: tuple[NDArray[Any], NDArray[Any]],
    test: tuple[NDArray[Any], NDArray[Any]],
    path: Path,
    *,
    title: str,
) -> Path:
    """Class-1 probability over [-5, 5]², the 0.5 boundary, train (dots) and test (crosses)."""
    fig = _figure(6.4, 5.6)
    ax = fig.add_subplot()
    mesh = _surface(ax, predict)
    _scatter(ax, train[0], train[1], size=9, label_suffix=" train")
    _scatter(ax, test[0], test[1], marker="X", size=28, label_suffix=" test", edge="black")
    _square(ax)
    ax.set_title(title)
    _legend_below(ax, ncol=4)
    fig.colorbar(mesh, ax=ax, label="P(class 1)", shrink=0.85)
    return _save(fig, path)


def plot_learning_curves(history: Mapping[str, Sequence[float]], path: Path, *, title: str) -> Path:
    """Loss and accuracy per epoch, train against validation."""
    fig = _figure(9.0, 3.8)
    for i, metric in enumerate(("loss", "accuracy")):
        ax = fig.add_subplot(1, 2, i + 1)
        for key, style, name in ((metric, "-", "train"), (f"val_{metric}", "--", "validation")):
            values = history.get(key)
            if values:
                ax.plot(range(1, len(values) + 1), values, style, label=name)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)


def plot_experiment(rows: Sequence[Sequence[Panel]], path: Path, *, title: str) -> Path:
    """A grid of decision surfaces: one row per dataset, one column per architecture."""
    n_rows = len(rows)
    n_cols = max(len(r) for r in rows)
    fig = _figure(3.2 * n_cols, 3.3 * n_rows)
    for r, row in enumerate(rows):
        for c, panel in enumerate(row):
            ax = fig.add_subplot(n_rows, n_cols, r * n_cols + c + 1)
            _surface(ax, panel.predict, steps=121)
            _scatter(ax, panel.points, panel.labels, size=5)
            _square(ax)
            ax.set_title(panel.title, fontsize=9)
    fig.suptitle(title)
    return _save(fig, path)
