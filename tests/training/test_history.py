"""The training history: which epochs are recorded, that each recorded grid is the model's own
answer at that epoch (to the quantisation step), its size, and ``--no-history``."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from training.data import generated_dataset
from training.history import (
    LEVELS,
    HistoryPlan,
    RunRecording,
    frame_grid,
    grid_points,
    history_callback,
    history_epochs,
)
from training.model import ModelConfig, build_model
from training.train import split_dataset, train_and_publish
from xor_dnn.cli import main
from xor_dnn.modelstore import HISTORY_FILE, MANIFEST_FILE, METADATA_FILE, load_version

# Half a quantisation step, plus float32 rounding between two ways of running one network.
STEP = 0.5 / LEVELS + 1e-5
# A constant step: a run cut short at epoch k is then exactly epoch k of the full run, which
# the frame test below relies on (a cosine schedule's steps depend on the run's length).
CONFIG = ModelConfig(
    hidden_units=(8, 8),
    dropout=0.1,
    epochs=12,
    learning_rate=0.02,
    learning_rate_schedule="constant",
    seed=7,
    distill=False,
)
MAX_BYTES = 200_000


def test_epochs_are_log_spaced_from_the_first_to_the_last() -> None:
    epochs = history_epochs(100)
    assert len(epochs) == 20 and epochs == sorted(set(epochs))
    assert epochs[0] == 1 and epochs[-1] == 100
    # Dense early (where the surface changes most), sparse late.
    assert epochs[:5] == [1, 2, 3, 4, 5]
    assert epochs[-1] - epochs[-2] >= 5
    assert history_epochs(7) == [1, 2, 3, 4, 5, 6, 7]
    big = history_epochs(10_000, frames=20)
    assert len(big) == 20 and big[0] == 1 and big[-1] == 10_000
    with pytest.raises(ValueError, match="epochs and frames must be >= 1"):
        history_epochs(0)


def test_grid_is_row_major_from_the_top_left() -> None:
    pts = grid_points((-2.0, 2.0), (-1.0, 1.0), 3)
    assert pts.tolist() == [
        [-2, 1], [0, 1], [2, 1], [-2, 0], [0, 0], [2, 0], [-2, -1], [0, -1], [2, -1],
    ]  # fmt: skip


def test_the_callback_records_the_models_own_predictions_at_each_epoch() -> None:
    """A second callback asks the model itself, through Keras' predict(), at the same epochs."""
    import keras

    split = split_dataset(generated_dataset(400, seed=5))
    plan = HistoryPlan.for_training(
        CONFIG.epochs, split.train_points, split.fit_points, split.test_points, frames=6
    )
    recording = RunRecording()
    expected: dict[int, np.ndarray[Any, Any]] = {}

    class Ask(keras.callbacks.Callback):  # type: ignore[misc]
        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            if epoch + 1 in plan.epochs:
                expected[epoch + 1] = self.model.predict(plan.grid, verbose=0).reshape(-1)

    model = build_model(CONFIG)
    model.fit(
        split.fit_points,
        split.fit_labels,
        epochs=CONFIG.epochs,
        batch_size=CONFIG.batch_size,
        verbose=0,
        callbacks=[history_callback(plan, recording), Ask()],
    )
    assert recording.epochs == sorted(plan.epochs) == sorted(expected)
    assert len(recording.epochs) == 6
    moved = 0.0
    for i, epoch in enumerate(recording.epochs):
        assert np.max(np.abs(recording.grid[i] - expected[epoch])) <= 1e-5, epoch
        if i:
            moved = max(moved, float(np.max(np.abs(recording.grid[i] - recording.grid[0]))))
        assert set(recording.norms[i]) == {"hidden_1", "hidden_2", "output"}
    assert moved > 0.2, "the surface must change while training"


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("hist") / "xor"
    return train_and_publish(root, data=generated_dataset(400, seed=5), runs=2, config=CONFIG)


def _frames(version_path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((version_path / HISTORY_FILE).read_text())
    return doc


def test_the_last_frame_is_the_published_model_to_the_quantisation_step(published: Any) -> None:
    doc = _frames(published.path)
    assert published.metadata["history_file"] == HISTORY_FILE
    assert doc["final_equals_published"] is True
    assert doc["runs"] == [published.metadata["chosen_run"]]
    g = doc["grid"]
    ranges = published.metadata["feature_ranges"]
    assert g["x"] == pytest.approx([ranges["x"]["min"], ranges["x"]["max"]], abs=1e-6)
    assert g["y"] == pytest.approx([ranges["y"]["min"], ranges["y"]["max"]], abs=1e-6)
    model = load_version(published.path.parent, published.version)
    served = model.predict(grid_points(g["x"], g["y"], g["size"])).reshape(g["size"], g["size"])
    assert np.max(np.abs(frame_grid(doc, -1) - served)) <= STEP
    last = doc["frames"][-1]
    assert last["epoch"] == CONFIG.epochs
    assert last["test_accuracy"] == pytest.approx(published.metadata["test_accuracy"], abs=1e-6)


def test_an_earlier_frame_is_what_training_only_that_far_publishes(
    published: Any, tmp_path: Path
) -> None:
    """Training is deterministic per seed, so the model trained for k epochs is epoch k's."""
    doc = _frames(published.path)
    frame = next(i for i, f in enumerate(doc["frames"]) if f["epoch"] == 5)
    seed = published.metadata["chosen_seed"]
    short = replace(CONFIG, epochs=5, seed=seed)
    early = train_and_publish(
        tmp_path / "xor", data=generated_dataset(400, seed=5), runs=1, config=short, history=False
    )
    g = doc["grid"]
    model = load_version(early.path.parent, early.version)
    answer = model.predict(grid_points(g["x"], g["y"], g["size"])).reshape(g["size"], g["size"])
    assert np.max(np.abs(frame_grid(doc, frame) - answer)) <= STEP
    assert doc["frames"][frame]["test_accuracy"] == pytest.approx(
        early.metadata["test_accuracy"], abs=1e-6
    )
    # And it is not simply the final surface.
    assert np.max(np.abs(frame_grid(doc, frame) - frame_grid(doc, -1))) > 0.05


def _two_runs_published(tmp_path: Path, **changes: Any) -> Any:
    """Two runs of 6 epochs on the same data, published with ``changes`` to CONFIG."""
    config = replace(CONFIG, epochs=6, **changes)
    return train_and_publish(
        tmp_path / "xor", data=generated_dataset(300, seed=2), runs=2, config=config
    )


def test_an_ensembles_history_is_the_mean_of_its_runs(tmp_path: Path) -> None:
    pub = _two_runs_published(tmp_path, ensemble=True)
    doc = _frames(pub.path)
    assert doc["runs"] == [1, 2]
    g = doc["grid"]
    model = load_version(pub.path.parent, pub.version)
    answer = model.predict(grid_points(g["x"], g["y"], g["size"])).reshape(g["size"], g["size"])
    assert np.max(np.abs(frame_grid(doc, -1) - answer)) <= STEP
    assert doc["frames"][-1]["test_accuracy"] == pytest.approx(
        pub.metadata["test_accuracy"], abs=1e-6
    )


def test_a_students_history_is_its_teachers_and_says_so(tmp_path: Path) -> None:
    pub = _two_runs_published(tmp_path, distill=True)
    doc = _frames(pub.path)
    assert doc["runs"] == [1, 2]
    assert doc["final_equals_published"] is False  # the student is not in the replay


def test_the_history_file_is_in_the_manifest_and_within_budget(tmp_path: Path) -> None:
    """The default epoch count (100) gives the most frames (20); the budget is 200 KB."""
    config = replace(CONFIG, epochs=100, hidden_units=(4,), batch_size=256)
    pub = train_and_publish(
        tmp_path / "xor", data=generated_dataset(200, seed=1), runs=1, config=config
    )
    path = pub.path / HISTORY_FILE
    doc = _frames(pub.path)
    assert len(doc["frames"]) == 20
    assert path.stat().st_size <= MAX_BYTES, path.stat().st_size
    for frame in doc["frames"]:
        assert len(base64.b64decode(frame["grid"])) == 48 * 48
    manifest = json.loads((pub.path / MANIFEST_FILE).read_text())
    assert HISTORY_FILE in {f["path"] for f in manifest["files"]}


def test_no_history_writes_no_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "xor"
    fast = ["--gen-n", "120", "--epochs", "2", "--no-progress", "--runs", "1"]
    assert main(["train", "--model-dir", str(root), *fast, "--no-history"]) == 0
    assert main(["train", "--model-dir", str(root), *fast]) == 0
    capsys.readouterr()
    without, with_ = root / "1", root / "2"
    assert not (without / HISTORY_FILE).exists()
    assert json.loads((without / METADATA_FILE).read_text())["history_file"] is None
    manifest = json.loads((without / MANIFEST_FILE).read_text())
    assert HISTORY_FILE not in {f["path"] for f in manifest["files"]}
    assert (with_ / HISTORY_FILE).is_file()
    assert json.loads((with_ / METADATA_FILE).read_text())["history_file"] == HISTORY_FILE
