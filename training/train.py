"""Fit N seeded runs on the lesson's split and publish them, never looking at the test split.

The split follows the lesson: 25% test with ``random_state=42``; the test split is only ever
used for reporting. By default every run learns from the whole training part, as in the
lesson. With ``ModelConfig.ensemble`` every usable run is published together, as one model
answering their mean probability; with ``ModelConfig.distill`` a student network fitted to that
mean probability is published instead (knowledge distillation; the default). Otherwise one
run is published: the one whose classes agree most with the majority vote of all runs on the
training points (the most typical run; no labels are used to choose) or, with
``ModelConfig.validation_size`` > 0 (a seeded validation cut held out of the training part),
the run with the best validation accuracy. Every run trains on the same fit part; run ``i``
uses seed ``config.seed + i``.
"""

from __future__ import annotations

import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from training import plots
from training.data import DataError, Dataset, generated_dataset, load_csv, true_rule
from training.history import HistoryPlan, RunRecording, build_history, history_callback
from training.model import DISTILL_EXTRA_FACTOR, ModelConfig, build_model, export_savedmodel
from xor_dnn.modelstore import (
    HISTORY_FILE,
    INPUT_NAME,
    METADATA_FILE,
    OUTPUT_NAME,
    SIGNATURE_NAME,
    ModelRepository,
    write_json_atomic,
)
from xor_dnn.storage import name_of

if TYPE_CHECKING:
    import keras

TEST_SIZE = 0.25
SPLIT_SEED = 42
SAMPLE_ROWS = 300
MIN_ROWS = 20
THRESHOLD = 0.5
# A SavedModel that differs from the Keras model by more than this is a broken export.
EXPORT_TOLERANCE = 1e-6
DEFAULT_MODEL_NAME = "xor"


class TrainingError(RuntimeError):
    """Training produced no usable model (for example every run diverged to NaN)."""


@dataclass(frozen=True)
class Split:
    """The lesson's train/test split; the validation part (maybe empty) comes from train."""

    fit_points: NDArray[np.float32]
    fit_labels: NDArray[np.int64]
    val_points: NDArray[np.float32]
    val_labels: NDArray[np.int64]
    test_points: NDArray[np.float32]
    test_labels: NDArray[np.int64]

    @property
    def train_points(self) -> NDArray[np.float32]:
        """Everything the model may learn from (fit + validation)."""
        return np.concatenate([self.fit_points, self.val_points])

    @property
    def train_labels(self) -> NDArray[np.int64]:
        return np.concatenate([self.fit_labels, self.val_labels])

    @property
    def has_validation(self) -> bool:
        return len(self.val_labels) > 0

    def sizes(self) -> dict[str, int]:
        return {
            "fit": len(self.fit_labels),
            "validation": len(self.val_labels),
            "test": len(self.test_labels),
        }


@dataclass
class RunResult:
    """One seeded training run; ``model`` is the trained Keras model (final weights).

    ``fit_loss`` is the binary cross-entropy on the points the run learned from, dropout off.
    Without a validation split ``val_accuracy`` and ``val_loss`` are NaN. ``agreement`` is
    set once all runs are done: the fraction of training points on which this run's class
    matches the runs' majority vote.
    """

    index: int
    seed: int
    test_accuracy: float
    fit_loss: float
    val_accuracy: float
    val_loss: float
    history: dict[str, list[float]]
    seconds: float
    model: keras.Model = field(repr=False)
    agreement: float = math.nan
    snapshots: list[list[NDArray[np.float32]]] = field(default_factory=list, repr=False)
    """The weights after each of the last ``keep_weights`` epochs (oldest first), if asked."""
    recording: RunRecording | None = field(default=None, repr=False)
    """What the history callback recorded (``train_runs(history=True)``), else None."""

    @property
    def usable(self) -> bool:
        """False for a run that diverged (a non-finite loss)."""
        has_val = not math.isnan(self.val_accuracy)
        return math.isfinite(self.fit_loss) and (not has_val or math.isfinite(self.val_loss))

    def summary(self) -> dict[str, Any]:
        return {
            "run": self.index + 1,
            "seed": self.seed,
            "test_accuracy": _finite(self.test_accuracy),
            "fit_loss": _finite(self.fit_loss),
            "agreement": _finite(self.agreement),
            "val_accuracy": _finite(self.val_accuracy),
            "val_loss": _finite(self.val_loss),
            "seconds": round(self.seconds, 2),
        }


@dataclass
class TrainingReport:
    """All runs of one training and what is published (chosen without the test split).

    ``chosen_index`` is the run a single-model publish would take (closest to the majority
    vote, or best on validation); with ``config.ensemble`` every usable run is published.
    """

    dataset: Dataset
    split: Split
    config: ModelConfig
    runs: list[RunResult]
    chosen_index: int
    seconds: float
    history_plan: HistoryPlan | None = None
    """What each run recorded (``train_runs(history=True)``), else None."""
    student: RunResult | None = None
    """With ``config.distill``: the network distilled from the usable runs, which is what is
    published (its ``agreement`` and validation figures are NaN)."""

    def history(self) -> dict[str, Any] | None:
        """The published model's training history (:mod:`training.history`), or None."""
        runs = self.published_runs
        recordings = [r.recording for r in runs if r.recording is not None]
        if self.history_plan is None or len(recordings) != len(runs):
            return None
        return build_history(
            self.history_plan,
            recordings,
            self.split.fit_labels,
            self.split.test_labels,
            runs=[r.index + 1 for r in runs],
            epochs_trained=self.config.epochs,
            final_equals_published=self.config.swa_epochs == 0 and self.student is None,
        )

    @property
    def selection(self) -> str:
        """What is published: ``"ensemble"``, ``"distilled"`` (a student of the runs), or one
        run chosen by ``"validation"`` or ``"majority_vote"``."""
        if self.config.ensemble:
            return "ensemble"
        if self.student is not None:
            return "distilled"
        return "validation" if self.split.has_validation else "majority_vote"

    @property
    def chosen(self) -> RunResult:
        return self.runs[self.chosen_index]

    @property
    def published_runs(self) -> list[RunResult]:
        """The runs the published model comes from: every usable one (inside an ensemble, or
        the teachers of a student), or the chosen one."""
        if self.config.ensemble or self.student is not None:
            return [r for r in self.runs if r.usable]
        return [self.chosen]

    @property
    def published_models(self) -> list[keras.Model]:
        """The networks inside the published SavedModel (its answer is their mean)."""
        if self.student is not None:
            return [self.student.model]
        return [r.model for r in self.published_runs]

    def predict_proba(self, points: NDArray[Any]) -> NDArray[np.float32]:
        """The published model's class-1 probabilities (the mean over its networks)."""
        return ensemble_proba(self.published_models, points)

    @property
    def published_test_accuracy(self) -> float:
        """Test accuracy of what is published (the ensemble, or the chosen run)."""
        return accuracy(self.predict_proba(self.split.test_points), self.split.test_labels)

    @property
    def test_accuracies(self) -> list[float]:
        return [r.test_accuracy for r in self.runs]

    @property
    def test_accuracy_mean(self) -> float:
        return float(np.mean(self.test_accuracies))

    @property
    def test_accuracy_std(self) -> float:
        # Population std (ddof=0), like numpy's default and the lesson's printout.
        return float(np.std(self.test_accuracies))

    @property
    def test_accuracy_min(self) -> float:
        return float(np.min(self.test_accuracies))

    @property
    def true_rule_test_accuracy(self) -> float:
        """The noise ceiling: how often the exact rule x·y < 0 matches the test labels."""
        s = self.split
        return float((true_rule(s.test_points) == s.test_labels).mean())

    def table(self) -> str:
        """A plain-text table of the runs, the published one(s) marked."""
        if self.split.has_validation:
            head, why = "val_acc  val_loss", "best validation"
        else:
            head, why = "  agree  fit_loss", "closest to the runs' majority vote"
        published = {r.index for r in self.published_runs}
        lines = [f"run  seed  {head}  test_acc", "---  ----  -------  --------  --------"]
        for r in self.runs:
            if self.split.has_validation:
                a, b = r.val_accuracy, r.val_loss
            else:
                a, b = r.agreement, r.fit_loss
            if self.config.ensemble:
                mark = "  <- in the ensemble" if r.index in published else ""
            elif self.student is not None:
                mark = "  <- teacher" if r.index in published else ""
            else:
                mark = f"  <- chosen ({why})" if r.index == self.chosen_index else ""
            lines.append(
                f"{r.index + 1:>3}  {r.seed:>4}  {a:>7.4f}  {b:>8.4f}  "
                f"{r.test_accuracy:>8.4f}{mark}"
            )
        lines.append(
            f"test accuracy over {len(self.runs)} run(s): mean {self.test_accuracy_mean:.4f}  "
            f"std {self.test_accuracy_std:.4f}  min {self.test_accuracy_min:.4f}  "
            f"(true rule on this test split: {self.true_rule_test_accuracy:.4f})"
        )
        if self.config.ensemble:
            lines.append(
                f"published: ensemble of {len(published)} run(s), mean probability; "
                f"test accuracy {self.published_test_accuracy:.4f}"
            )
        if self.student is not None:
            lines.append(
                f"published: a student (seed {self.student.seed}) distilled from "
                f"{len(published)} run(s); test accuracy {self.student.test_accuracy:.4f}"
            )
        return "\n".join(lines)


@dataclass(frozen=True)
class PublishedVersion:
    """A version that now exists in the repository, complete."""

    version: int
    path: Path | str
    """Its folder, or its URI in an object store."""
    metadata: dict[str, Any]
    report: TrainingReport | None = field(default=None, repr=False, compare=False)


def split_dataset(dataset: Dataset, *, validation_size: float = 0.0) -> Split:
    """The lesson's 25% test split (random_state 42), then a seeded validation cut if asked."""
    from sklearn.model_selection import train_test_split

    if dataset.rows < MIN_ROWS:
        raise DataError(
            dataset.path,
            f"only {dataset.rows} data rows; training needs at least {MIN_ROWS} (25% go to test)",
        )
    x_train, x_test, y_train, y_test = train_test_split(
        dataset.points, dataset.labels, test_size=TEST_SIZE, random_state=SPLIT_SEED
    )
    if validation_size <= 0:
        no_points = np.empty((0, 2), dtype=x_train.dtype)
        return Split(x_train, y_train, no_points, y_train[:0], x_test, y_test)
    x_fit, x_val, y_fit, y_val = train_test_split(
        x_train, y_train, test_size=validation_size, random_state=SPLIT_SEED
    )
    return Split(x_fit, y_fit, x_val, y_val, x_test, y_test)


def resolve_dataset(data: str | os.PathLike[str] | Dataset | None) -> Dataset:
    """A CSV path is loaded and validated; None means the embedded generated default."""
    if data is None:
        return generated_dataset()
    if isinstance(data, Dataset):
        return data
    return load_csv(data)


def train_runs(
    dataset: Dataset,
    config: ModelConfig | None = None,
    runs: int = 5,
    *,
    progress: bool = False,
    progress_stream: IO[str] | None = None,
    on_run: Callable[[RunResult], None] | None = None,
    keep_weights: int = 0,
    history: bool = False,
) -> TrainingReport:
    """Train ``runs`` models (seeds ``config.seed + i``) and choose one without the test split.

    Without a validation split (the default) the chosen run is the one that agrees most with
    the majority vote of all runs on the training points (:func:`majority_vote_choice`). With
    one, it has the best validation accuracy, ties broken by lower validation loss, then by
    the earlier run. (With ``config.ensemble`` the chosen run is only the one whose pictures a
    report draws; every usable run is published.) ``progress`` draws a per-epoch status line
    on ``progress_stream`` (stderr by default); ``on_run`` is called after each run.
    ``keep_weights`` > 0 keeps each run's weights after its last that many epochs in
    ``RunResult.snapshots``, so averaging schemes can be compared on the same runs.
    ``history`` records each run's surface, losses and weight norms at a log-spaced set of
    epochs (:mod:`training.history`; :meth:`TrainingReport.history` combines them).
    With ``config.distill`` a student is then fitted to the usable runs' mean probability
    (:func:`distill_student`; seed ``config.seed + runs``) and is what the report publishes.
    """
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    config = config or ModelConfig()
    split = split_dataset(dataset, validation_size=config.validation_size)
    plan = (
        HistoryPlan.for_training(
            config.epochs, split.train_points, split.fit_points, split.test_points
        )
        if history
        else None
    )
    started = time.monotonic()
    results: list[RunResult] = []
    for i in range(runs):
        run_config = replace(config, seed=config.seed + i)
        callbacks = []
        if progress:
            callbacks.append(_progress_callback(i, runs, run_config, progress_stream or sys.stderr))
        recording = None
        if plan is not None:
            recording = RunRecording()
            callbacks.append(history_callback(plan, recording))
        result = _train_one(i, run_config, split, callbacks, keep_weights)
        result.recording = recording
        results.append(result)
        if on_run is not None:
            on_run(result)
    usable = [r for r in results if r.usable]
    if not usable:
        raise TrainingError(
            f"all {runs} run(s) diverged (the loss is not finite); "
            f"lower the learning rate (now {config.learning_rate})"
        )
    if split.has_validation:
        chosen = min(usable, key=lambda r: (-r.val_accuracy, r.val_loss, r.index)).index
    else:
        probabilities = [predict_proba(r.model, split.fit_points) for r in usable]
        agreements = majority_vote_agreement(probabilities)
        for r, agreement in zip(usable, agreements, strict=True):
            r.agreement = agreement
        chosen = usable[majority_vote_choice(agreements)].index
    student = None
    if config.distill:
        student = distill_student(usable, split, replace(config, seed=config.seed + runs), runs)
        if progress:
            (progress_stream or sys.stderr).write(
                f"  student (seed {student.seed}): test accuracy {student.test_accuracy:.4f}\n"
            )
    return TrainingReport(
        dataset=dataset,
        split=split,
        config=config,
        runs=results,
        chosen_index=chosen,
        seconds=time.monotonic() - started,
        history_plan=plan,
        student=student,
    )


def distill_points(fit_points: NDArray[Any], seed: int) -> NDArray[np.float32]:
    """What a student learns from: the fit points, then ``DISTILL_EXTRA_FACTOR`` times as many
    drawn uniformly (seeded) in their bounding box, where the teachers' answer is known too."""
    rng = np.random.default_rng(seed)
    fit = np.asarray(fit_points, dtype=np.float32)
    extra = rng.uniform(fit.min(0), fit.max(0), (DISTILL_EXTRA_FACTOR * len(fit), 2))
    return np.concatenate([fit, extra.astype(np.float32)])


def distill_student(
    teachers: Sequence[RunResult], split: Split, config: ModelConfig, index: int
) -> RunResult:
    """A network of ``config``'s shape fitted to the ``teachers``' mean probability (soft
    labels, binary cross-entropy whatever the runs' ``gce_q``) at :func:`distill_points`, for
    as many optimizer steps as one run takes on the fit points (so fewer epochs over more
    points); no test labels used.

    On ``tuning2`` (bench._sweep, tanh default) such a student landed 0.443 point below the
    ceiling against 0.505 for one run and 0.44 for the ensemble of 5 (docs/training.md).
    """
    t0 = time.monotonic()
    points = distill_points(split.fit_points, config.seed)
    soft = ensemble_proba([t.model for t in teachers], points)
    epochs = max(1, round(config.epochs * len(split.fit_points) / len(points)))
    student_config = replace(config, epochs=epochs, swa_epochs=0, gce_q=0.0)
    model = build_model(student_config, fit_size=len(points))
    fit = model.fit(
        points, soft, epochs=epochs, batch_size=config.batch_size, shuffle=True, verbose=0
    )
    fit_prob = predict_proba(model, split.fit_points)
    student = RunResult(
        index=index,
        seed=config.seed,
        test_accuracy=accuracy(predict_proba(model, split.test_points), split.test_labels),
        fit_loss=_bce(fit_prob, split.fit_labels),
        val_accuracy=math.nan,
        val_loss=math.nan,
        # Keras' accuracy is meaningless against soft labels; only the loss is kept.
        history={"loss": [float(v) for v in fit.history["loss"]]},
        seconds=time.monotonic() - t0,
        model=model,
    )
    require_usable_student(student, config)
    return student


def require_usable_student(student: RunResult, config: ModelConfig) -> None:
    """:class:`TrainingError` for a student whose loss diverged: nothing broken is published."""
    if not student.usable:
        raise TrainingError(
            f"the distilled student (seed {student.seed}) diverged (its loss is not finite); "
            f"lower the learning rate (now {config.learning_rate}) or train with --no-distill"
        )


def majority_vote_agreement(probabilities: Sequence[NDArray[Any]]) -> list[float]:
    """For each run, the fraction of points where its class matches the runs' majority vote.

    ``probabilities`` holds each run's class-1 probabilities on the same points. The vote is
    the mean probability over the runs (a soft vote: when an even number of runs splits, the
    more confident side wins).
    """
    stacked = np.stack([np.asarray(p, dtype=np.float64) for p in probabilities])
    majority = classes(stacked.mean(axis=0))
    return [float((classes(p) == majority).mean()) for p in stacked]


def majority_vote_choice(agreements: Sequence[float]) -> int:
    """Index of the run closest to the majority vote; ties go to the earlier run.

    Choosing the most typical run needs neither the test split nor held-out labels, and it
    steers clear of an outlier seed (a dead unit, a boundary bent by a few noisy labels).
    """
    return min(range(len(agreements)), key=lambda i: (-agreements[i], i))


def ensemble_proba(models: Sequence[keras.Model], points: NDArray[Any]) -> NDArray[np.float32]:
    """The mean class-1 probability of ``models`` (what an exported ensemble answers)."""
    if len(models) == 1:
        return predict_proba(models[0], points)
    stacked = np.stack([predict_proba(m, points) for m in models])
    mean: NDArray[np.float32] = stacked.mean(axis=0, dtype=np.float32)
    return mean


def average_weights(snapshots: Sequence[Sequence[NDArray[Any]]]) -> list[NDArray[np.float32]]:
    """The element-wise mean of several weight lists of one architecture."""
    if not snapshots:
        raise ValueError("average_weights needs at least one snapshot")
    return [
        np.mean(np.stack(tensors), axis=0).astype(np.float32)
        for tensors in zip(*snapshots, strict=True)
    ]


def _train_one(
    index: int, config: ModelConfig, split: Split, callbacks: list[Any], keep_weights: int = 0
) -> RunResult:
    t0 = time.monotonic()
    model = build_model(config, fit_size=len(split.fit_labels))
    validation = (split.val_points, split.val_labels) if split.has_validation else None
    snapshots: list[list[NDArray[np.float32]]] = []
    keep = max(keep_weights, config.swa_epochs)
    if keep:
        callbacks = [*callbacks, _snapshot_callback(keep, snapshots)]
    fit = model.fit(
        split.fit_points,
        split.fit_labels,
        validation_data=validation,
        epochs=config.epochs,
        batch_size=config.batch_size,
        shuffle=True,
        verbose=0,
        callbacks=callbacks,
    )
    if config.swa_epochs:
        model.set_weights(average_weights(snapshots[-config.swa_epochs :]))
    history = {k: [float(v) for v in vals] for k, vals in fit.history.items()}
    fit_prob = predict_proba(model, split.fit_points)
    test_prob = predict_proba(model, split.test_points)
    val_accuracy = val_loss = math.nan
    if split.has_validation:
        val_prob = predict_proba(model, split.val_points)
        val_accuracy = accuracy(val_prob, split.val_labels)
        val_loss = _bce(val_prob, split.val_labels)
    return RunResult(
        index=index,
        seed=config.seed,
        test_accuracy=accuracy(test_prob, split.test_labels),
        fit_loss=_bce(fit_prob, split.fit_labels),
        val_accuracy=val_accuracy,
        val_loss=val_loss,
        history=history,
        seconds=time.monotonic() - t0,
        model=model,
        snapshots=snapshots[-keep_weights:] if keep_weights else [],
    )


def predict_proba(model: keras.Model, points: NDArray[Any]) -> NDArray[np.float32]:
    """Class-1 probabilities ``(n,)`` with dropout off; a direct call, not ``predict()``."""
    out = model(np.asarray(points, dtype=np.float32), training=False)
    result: NDArray[np.float32] = np.asarray(out, dtype=np.float32).reshape(-1)
    return result


def classes(prob: NDArray[Any]) -> NDArray[np.int64]:
    """Class ids from class-1 probabilities, with the rule the service and scorer use."""
    result: NDArray[np.int64] = (np.asarray(prob) >= THRESHOLD).astype(np.int64)
    return result


def accuracy(prob: NDArray[Any], labels: NDArray[Any]) -> float:
    """Fraction of ``labels`` matched by :func:`classes` of ``prob``."""
    return float((classes(prob) == labels).mean())


def _bce(prob: NDArray[Any], labels: NDArray[Any]) -> float:
    p = np.clip(prob.astype(np.float64), 1e-7, 1 - 1e-7)
    if not np.isfinite(p).all():
        return math.inf
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


def _finite(value: float, digits: int = 6) -> float | None:
    return round(value, digits) if math.isfinite(value) else None


def _snapshot_callback(keep: int, into: list[list[NDArray[np.float32]]]) -> Any:
    import keras

    class WeightSnapshots(keras.callbacks.Callback):  # type: ignore[misc]
        """Keeps the weights after each of the last ``keep`` epochs."""

        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            into.append([np.array(w, dtype=np.float32) for w in self.model.get_weights()])
            del into[:-keep]

    return WeightSnapshots()


def _progress_callback(index: int, runs: int, config: ModelConfig, stream: IO[str]) -> Any:
    import keras

    class EpochProgress(keras.callbacks.Callback):  # type: ignore[misc]
        """One status line per run, rewritten in place each epoch."""

        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            logs = logs or {}
            stream.write(
                f"\r  run {index + 1}/{runs} (seed {config.seed})  epoch "
                f"{epoch + 1:>{len(str(config.epochs))}}/{config.epochs}  "
                f"loss {logs.get('loss', math.nan):.4f}  acc {logs.get('accuracy', math.nan):.4f}"
                + (
                    f"  val_loss {logs['val_loss']:.4f}  val_acc {logs['val_accuracy']:.4f}"
                    if "val_loss" in logs and "val_accuracy" in logs
                    else ""
                )
            )
            stream.flush()

        def on_train_end(self, logs: dict[str, float] | None = None) -> None:
            stream.write("\r\033[K")
            stream.flush()

    return EpochProgress()


def model_name_for(model_dir: str | os.PathLike[str]) -> str:
    """The model's name is its folder's name (``models/xor``, ``s3://b/models/xor`` -> ``xor``)."""
    return name_of(model_dir) or DEFAULT_MODEL_NAME


def build_metadata(report: TrainingReport, *, model_name: str) -> dict[str, Any]:
    """Everything a reader needs to trust and reproduce the version (``version`` set later)."""
    split = report.split
    train_points = split.train_points
    single = None if report.config.ensemble or report.student else report.chosen
    published = report.published_runs
    return {
        "model_name": model_name,
        "version": None,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "signature": {
            "name": SIGNATURE_NAME,
            "input": {"name": INPUT_NAME, "dtype": "float32", "shape": [None, 2]},
            "output": {"name": OUTPUT_NAME, "dtype": "float32", "shape": [None, 1]},
        },
        "config": report.config.to_dict(),
        "data": report.dataset.describe(),
        "split": {
            "test_size": TEST_SIZE,
            "random_state": SPLIT_SEED,
            "validation_size": report.config.validation_size,
            "rows": split.sizes(),
        },
        "selection": report.selection,
        "feature_ranges": {
            name: {"min": float(train_points[:, i].min()), "max": float(train_points[:, i].max())}
            for i, name in enumerate(("x", "y"))
        },
        "runs": [r.summary() for r in report.runs],
        "student": report.student.summary() if report.student else None,
        "published_runs": [r.index + 1 for r in published],
        "chosen_run": single.index + 1 if single else None,
        "chosen_seed": single.seed if single else None,
        "test_accuracy": _finite(report.published_test_accuracy),
        "test_accuracy_runs": [_finite(a) for a in report.test_accuracies],
        "test_accuracy_mean": _finite(report.test_accuracy_mean),
        "test_accuracy_std": _finite(report.test_accuracy_std),
        "test_accuracy_min": _finite(report.test_accuracy_min),
        "true_rule_test_accuracy": _finite(report.true_rule_test_accuracy),
        "history": _mean_history(published),
        "history_file": None,
        "training_seconds": round(report.seconds, 2),
        "pictures": {
            "data": plots.DATA_PNG,
            "decision_surface": plots.SURFACE_PNG,
            "learning_curves": plots.CURVES_PNG,
        },
        "packages": package_versions(),
        "sample": _sample(split),
    }


def _mean_history(runs: Sequence[RunResult]) -> dict[str, list[float | None]]:
    """Per-epoch curves of the published run, or their mean over the ensemble's runs."""
    out: dict[str, list[float | None]] = {}
    for key in ("loss", "val_loss", "accuracy", "val_accuracy"):
        curves = [r.history.get(key, []) for r in runs]
        out[key] = [_finite(float(np.mean(v))) for v in zip(*curves, strict=True)]
    return out


def _sample(split: Split, rows: int = SAMPLE_ROWS) -> list[list[Any]]:
    """Up to ``rows`` points for the playground, train and test in their true proportion."""
    train_x, train_y = split.train_points, split.train_labels
    n_train, n_test = len(train_y), len(split.test_labels)
    total = n_train + n_test
    take_test = min(n_test, round(rows * n_test / total))
    take_train = min(n_train, rows - take_test)
    rng = np.random.default_rng(0)
    out: list[list[Any]] = []
    for pts, lab, part, k in (
        (train_x, train_y, "train", take_train),
        (split.test_points, split.test_labels, "test", take_test),
    ):
        for i in np.sort(rng.choice(len(lab), size=k, replace=False)):
            out.append([round(float(pts[i, 0]), 4), round(float(pts[i, 1]), 4), int(lab[i]), part])
    return out


def package_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for dist in (
        "xor-dnn",
        "tensorflow-cpu",
        "tensorflow",
        "keras",
        "numpy",
        "scikit-learn",
        "matplotlib",
    ):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            continue
    return out


def write_version(
    folder: Path,
    report: TrainingReport,
    *,
    model_name: str,
    extra_metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the published model, its pictures, history and metadata into ``folder`` (a
    temp dir); ``extra_metadata`` is added to ``metadata.json`` (e.g. an experiment's row)."""
    models = report.published_models
    export_savedmodel(models, folder)
    _check_export(folder, models, report.split.test_points)
    split = report.split
    if report.config.ensemble:
        label = f"{model_name} (ensemble of {len(models)} runs)"
    elif report.student is not None:
        label = f"{model_name} (student of {len(report.published_runs)} runs)"
    else:
        label = f"{model_name} (run {report.chosen.index + 1}, seed {report.chosen.seed})"
    metadata = {**build_metadata(report, model_name=model_name), **(extra_metadata or {})}
    plots.plot_data(
        report.dataset.points,
        report.dataset.labels,
        folder / plots.DATA_PNG,
        title=f"{_data_label(report.dataset)}: {report.dataset.rows} points by class",
    )
    plots.plot_decision_surface(
        report.predict_proba,
        (split.train_points, split.train_labels),
        (split.test_points, split.test_labels),
        folder / plots.SURFACE_PNG,
        title=f"{label}: test accuracy {metadata['test_accuracy']:.3f}",
    )
    plots.plot_learning_curves(
        {k: [v for v in vals if v is not None] for k, vals in metadata["history"].items()},
        folder / plots.CURVES_PNG,
        title=f"{label}: learning curves"
        + (" (mean of the runs)" if len(report.published_runs) > 1 else ""),
    )
    recorded = report.history()
    if recorded is not None:
        write_json_atomic(folder / HISTORY_FILE, recorded, indent=None)
        metadata["history_file"] = HISTORY_FILE
    write_json_atomic(folder / METADATA_FILE, metadata)
    return metadata


def _data_label(dataset: Dataset) -> str:
    if dataset.path is not None:
        return dataset.path.name
    g = dataset.generated or {}
    return f"generated (noise {g.get('noise', 0)}, seed {g.get('seed', 0)})"


def _check_export(folder: Path, models: Sequence[keras.Model], points: NDArray[np.float32]) -> None:
    """Reload the SavedModel with plain TensorFlow and compare it with the Keras model(s)."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(folder))
    fn = loaded.signatures[SIGNATURE_NAME]
    got = fn(**{INPUT_NAME: tf.constant(points)})[OUTPUT_NAME].numpy().reshape(-1)
    want = ensemble_proba(models, points)
    diff = float(np.max(np.abs(got - want))) if len(points) else 0.0
    if not diff <= EXPORT_TOLERANCE:
        raise TrainingError(f"exported SavedModel differs from the Keras model by {diff:.3g}")


def train_and_publish(
    model_dir: str | os.PathLike[str],
    *,
    data: str | os.PathLike[str] | Dataset | None = None,
    runs: int = 5,
    config: ModelConfig | None = None,
    progress: bool = False,
    on_run: Callable[[RunResult], None] | None = None,
    history: bool = True,
) -> PublishedVersion:
    """Train ``runs`` seeded models and publish them (ensemble) or one of them as a new version.

    ``data`` is a CSV path (validated; :class:`~training.data.DataError` names file, row and
    column) or None for the embedded generated data. ``model_dir`` is a folder or an object
    store URI (``s3://``, ``gs://``): the version ``<N>/`` appears there complete, or not at
    all, with the SavedModel, ``metadata.json`` and three PNG pictures
    (:mod:`xor_dnn.modelstore`), and, unless ``history`` is False, the training history
    (``history.json``, :mod:`training.history`). A repository that cannot be written raises
    :class:`~xor_dnn.storage.StorageError` before training starts.
    """
    dataset = resolve_dataset(data)
    repo = ModelRepository(model_dir)
    # Fail on an unusable folder or bucket now, not after minutes of training.
    repo.check()
    report = train_runs(dataset, config, runs, progress=progress, on_run=on_run, history=history)
    return publish_report(repo, report)


def publish_report(
    repo: ModelRepository, report: TrainingReport, *, extra_metadata: dict[str, Any] | None = None
) -> PublishedVersion:
    """Publish what ``report`` chose as the next version of ``repo`` (see
    :func:`train_and_publish`); the model is named after the repository's last segment."""
    name = model_name_for(repo.uri)
    written: dict[str, Any] = {}

    def build(folder: Path) -> None:
        written.update(
            write_version(folder, report, model_name=name, extra_metadata=extra_metadata)
        )

    version, path = repo.publish(build)
    metadata = {**written, "version": version}
    return PublishedVersion(version=version, path=path, metadata=metadata, report=report)
