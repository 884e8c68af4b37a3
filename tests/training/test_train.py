"""The training job's API: split, run selection, the published version and its metadata."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from training import plots
from training.data import DataError, generated_dataset, save_csv
from training.model import ModelConfig
from training.train import (
    TEST_SIZE,
    PublishedVersion,
    accuracy,
    average_weights,
    classes,
    majority_vote_agreement,
    majority_vote_choice,
    split_dataset,
    train_and_publish,
    train_runs,
)
from xor_dnn.modelstore import list_versions, load_version

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EPOCHS = 3
# One published run: these tests are about choosing it; the ensemble has its own tests.
CONFIG = ModelConfig(
    hidden_units=(8, 4),
    dropout=0.1,
    epochs=EPOCHS,
    learning_rate=0.01,
    seed=4,
    ensemble=False,
    distill=False,
)
VALIDATED = replace(CONFIG, validation_size=0.2)


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> PublishedVersion:
    root = tmp_path_factory.mktemp("train") / "mymodel"
    return train_and_publish(
        root, data=generated_dataset(240, noise=0.05, seed=1), runs=2, config=CONFIG
    )


def test_default_split_is_the_lessons_and_fits_on_the_whole_training_part() -> None:
    from sklearn.model_selection import train_test_split

    ds = generated_dataset(400, seed=2)
    split = split_dataset(ds)
    lesson_train, lesson_test, lesson_train_labels, lesson_test_labels = train_test_split(
        ds.points, ds.labels, test_size=TEST_SIZE, random_state=42
    )
    assert np.array_equal(split.test_points, lesson_test)
    assert np.array_equal(split.test_labels, lesson_test_labels)
    assert np.array_equal(split.fit_points, lesson_train)
    assert np.array_equal(split.fit_labels, lesson_train_labels)
    assert split.sizes() == {"fit": 300, "validation": 0, "test": 100}
    assert not split.has_validation


def test_validation_cut_comes_from_train_only() -> None:
    ds = generated_dataset(400, seed=2)
    split = split_dataset(ds, validation_size=0.2)
    assert split.sizes() == {"fit": 240, "validation": 60, "test": 100}
    assert split.has_validation
    seen = {tuple(p) for p in split.train_points.tolist()}
    assert not seen & {tuple(p) for p in split.test_points.tolist()}
    assert seen == {tuple(p) for p in split_dataset(ds).fit_points.tolist()}
    assert np.array_equal(split_dataset(ds, validation_size=0.2).val_points, split.val_points)


def test_too_few_rows_is_a_data_error() -> None:
    with pytest.raises(DataError, match="only 10 data rows; training needs at least 20"):
        split_dataset(generated_dataset(10))


def test_version_folder_holds_model_metadata_and_pictures(published: PublishedVersion) -> None:
    assert published.version == 1
    assert published.path.name == "1"
    names = {p.name for p in published.path.iterdir()}
    assert {"saved_model.pb", "variables", "metadata.json"} <= names
    for picture in (plots.DATA_PNG, plots.SURFACE_PNG, plots.CURVES_PNG):
        data = (published.path / picture).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000, picture
    assert not [p for p in published.path.parent.iterdir() if p.name.startswith(".")]


def test_metadata_has_every_documented_field(published: PublishedVersion) -> None:
    meta: dict[str, Any] = json.loads((published.path / "metadata.json").read_text())
    assert meta == published.metadata
    assert meta["model_name"] == "mymodel"
    assert meta["version"] == 1
    assert datetime.fromisoformat(meta["created_at"]).tzinfo is not None
    assert meta["config"] == CONFIG.to_dict()
    assert meta["config"]["validation_size"] == 0.0
    assert meta["split"]["validation_size"] == 0.0
    assert meta["split"]["rows"] == {"fit": 180, "validation": 0, "test": 60}
    assert meta["selection"] == "majority_vote"
    assert meta["published_runs"] == [meta["chosen_run"]]
    # The class rule is the service's and the scorer's (probability >= 0.5), not metadata.
    assert "threshold" not in meta["signature"]
    ds = generated_dataset(240, noise=0.05, seed=1)
    assert meta["data"]["sha256"] == ds.sha256
    assert meta["data"]["rows"] == 240
    assert meta["data"]["path"] is None
    assert meta["data"]["generated"] == {"n": 240, "noise": 0.05, "seed": 1}

    split = split_dataset(ds)
    assert meta["feature_ranges"]["x"]["min"] == pytest.approx(
        float(split.train_points[:, 0].min())
    )
    assert meta["feature_ranges"]["y"]["max"] == pytest.approx(
        float(split.train_points[:, 1].max())
    )

    accs = meta["test_accuracy_runs"]
    assert len(accs) == 2 and all(0 <= a <= 1 for a in accs)
    assert meta["test_accuracy_mean"] == pytest.approx(np.mean(accs), abs=1e-6)
    assert meta["test_accuracy_std"] == pytest.approx(np.std(accs), abs=1e-6)
    assert meta["test_accuracy_min"] == pytest.approx(min(accs), abs=1e-6)
    for key in ("loss", "accuracy"):
        assert len(meta["history"][key]) == EPOCHS
    # Nothing is held out by default, so there is no validation curve.
    assert meta["history"]["val_loss"] == meta["history"]["val_accuracy"] == []
    assert "tensorflow" in meta["packages"] or "tensorflow-cpu" in meta["packages"]
    assert "keras" in meta["packages"] and "numpy" in meta["packages"]

    sample = meta["sample"]
    assert 0 < len(sample) <= 300
    assert {row[3] for row in sample} == {"train", "test"}
    for x, y, cls, part in sample:
        assert isinstance(x, float) and isinstance(y, float)
        assert cls in (0, 1) and part in ("train", "test")


def test_chosen_run_is_closest_to_the_majority_vote(published: PublishedVersion) -> None:
    meta = published.metadata
    runs = meta["runs"]
    assert [r["seed"] for r in runs] == [CONFIG.seed, CONFIG.seed + 1]
    assert all(0 < r["agreement"] <= 1 and r["fit_loss"] > 0 for r in runs)
    assert all(r["val_accuracy"] is None and r["val_loss"] is None for r in runs)
    best = max(runs, key=lambda r: (r["agreement"], -r["run"]))
    assert meta["chosen_run"] == best["run"]
    assert meta["chosen_seed"] == CONFIG.seed + best["run"] - 1


def test_majority_vote_agreement_and_choice() -> None:
    # Three runs on five points: run 1 is the outlier, runs 0 and 2 match the vote.
    probabilities = [
        np.array([0.9, 0.8, 0.1, 0.2, 0.7]),
        np.array([0.1, 0.2, 0.9, 0.8, 0.6]),
        np.array([0.8, 0.9, 0.2, 0.1, 0.9]),
    ]
    agreements = majority_vote_agreement(probabilities)
    assert agreements == pytest.approx([1.0, 0.2, 1.0])
    assert majority_vote_choice(agreements) == 0  # a tie goes to the earlier run
    assert majority_vote_choice([0.9, 0.95, 0.95]) == 1
    # The vote is the mean probability, so two runs that disagree do not tie.
    two = majority_vote_agreement([np.array([0.9, 0.45]), np.array([0.2, 0.4])])
    assert two == pytest.approx([1.0, 0.5])
    assert majority_vote_agreement([np.array([0.7, 0.2])]) == [1.0]


def test_with_a_validation_cut_the_best_validation_run_is_chosen() -> None:
    report = train_runs(generated_dataset(240, noise=0.05, seed=1), VALIDATED, runs=2)
    assert report.selection == "validation"
    assert report.split.sizes() == {"fit": 144, "validation": 36, "test": 60}
    runs = report.runs
    best = max(runs, key=lambda r: (r.val_accuracy, -r.val_loss, -r.index))
    assert report.chosen_index == best.index
    assert all(len(r.history["val_loss"]) == EPOCHS for r in runs)
    assert all(np.isnan(r.agreement) for r in runs)
    assert "<- chosen (best validation)" in report.table()


def test_published_model_matches_reported_accuracy(published: PublishedVersion) -> None:
    loaded = load_version(published.path.parent, published.version)
    split = split_dataset(generated_dataset(240, noise=0.05, seed=1))
    got = accuracy(loaded.predict(split.test_points), split.test_labels)
    assert got == pytest.approx(published.metadata["test_accuracy"], abs=1e-6)


def test_next_training_gets_the_next_version(tmp_path: Path) -> None:
    config = ModelConfig(epochs=1)
    data = generated_dataset(60, seed=3)
    first = train_and_publish(tmp_path / "xor", data=data, runs=1, config=config)
    second = train_and_publish(tmp_path / "xor", data=data, runs=1, config=config)
    assert (first.version, second.version) == (1, 2)
    assert second.metadata["version"] == 2
    assert list_versions(tmp_path / "xor") == [1, 2]


def test_bad_csv_fails_before_any_folder_appears(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y,class id\n1,2,0\n3,4,maybe\n")
    with pytest.raises(DataError, match=r"row 2 .*column 'class id'"):
        train_and_publish(tmp_path / "xor", data=bad, runs=1)
    assert not (tmp_path / "xor").exists()


def test_failure_while_writing_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> Path:
        raise OSError("disk full")

    monkeypatch.setattr(plots, "plot_learning_curves", broken)
    root = tmp_path / "xor"
    with pytest.raises(OSError, match="disk full"):
        train_and_publish(root, data=generated_dataset(60), runs=1, config=ModelConfig(epochs=1))
    assert list(root.iterdir()) == []


def test_csv_data_is_recorded_with_its_path(tmp_path: Path) -> None:
    ds = generated_dataset(80, seed=6)
    csv_path = save_csv(tmp_path / "lesson.csv", ds.points, ds.labels)
    out = train_and_publish(tmp_path / "m", data=csv_path, runs=1, config=ModelConfig(epochs=1))
    assert out.metadata["data"]["path"] == str(csv_path)
    assert out.metadata["data"]["sha256"] == ds.sha256
    assert out.metadata["data"]["generated"] is None


def test_shared_fixture_has_two_complete_versions(model_dir: Path) -> None:
    assert list_versions(model_dir) == [1, 2]
    for version in (1, 2):
        model = load_version(model_dir, version)
        meta = model.metadata
        assert meta["version"] == version and meta["model_name"] == "xor"
        assert meta["test_accuracy_mean"] >= 0.9
        assert len(meta["sample"]) == 300
        probs = model.predict(np.array([[2.5, 2.5], [-2.5, 2.5]], dtype=np.float32))
        assert probs[0] < 0.5 < probs[1]


def test_class_rule_is_probability_at_least_one_half() -> None:
    assert classes(np.array([0.5, np.nextafter(0.5, 0), 0.9, 0.0])).tolist() == [1, 0, 1, 0]
    assert accuracy(np.array([0.5, 0.2]), np.array([1, 1])) == 0.5


def test_ensemble_publishes_every_run_as_one_model(tmp_path: Path) -> None:
    ds = generated_dataset(240, noise=0.05, seed=1)
    config = replace(CONFIG, ensemble=True)
    assert not ModelConfig().ensemble  # an option, not the default
    out = train_and_publish(tmp_path / "xor", data=ds, runs=3, config=config)
    meta = out.metadata
    assert meta["config"]["ensemble"] is True
    assert meta["selection"] == "ensemble"
    assert meta["published_runs"] == [1, 2, 3]
    assert meta["chosen_run"] is None and meta["chosen_seed"] is None
    assert len(meta["history"]["loss"]) == EPOCHS

    split = split_dataset(ds)
    loaded = load_version(tmp_path / "xor", out.version)
    served = loaded.predict(split.test_points).reshape(-1)
    assert out.report is not None
    members = [r.model for r in out.report.runs]
    from training.train import predict_proba

    mean = np.mean([predict_proba(m, split.test_points) for m in members], axis=0)
    np.testing.assert_allclose(served, mean, atol=1e-6, rtol=0)
    assert meta["test_accuracy"] == pytest.approx(accuracy(served, split.test_labels), abs=1e-6)
    assert "published: ensemble of 3 run(s)" in out.report.table()
    assert out.report.table().count("<- in the ensemble") == 3


def test_distill_publishes_a_student_fitted_to_the_runs_mean(tmp_path: Path) -> None:
    ds = generated_dataset(240, noise=0.05, seed=1)
    config = replace(CONFIG, distill=True, epochs=8)
    assert ModelConfig().distill and not ModelConfig.lesson().distill  # the default's way
    out = train_and_publish(tmp_path / "xor", data=ds, runs=2, config=config)
    meta, report = out.metadata, out.report
    assert report is not None and report.student is not None
    assert meta["config"]["distill"] is True
    assert meta["selection"] == "distilled"
    assert meta["published_runs"] == [1, 2]  # its teachers
    assert meta["chosen_run"] is None
    assert meta["student"]["run"] == 3 and meta["student"]["seed"] == config.seed + 2

    split = split_dataset(ds)
    served = load_version(tmp_path / "xor", out.version).predict(split.test_points).reshape(-1)
    from training.train import distill_points, predict_proba

    # What is served is the student, one network, not the teachers' mean.
    student = predict_proba(report.student.model, split.test_points)
    np.testing.assert_allclose(served, student, atol=1e-6, rtol=0)
    teachers = np.mean([predict_proba(r.model, split.test_points) for r in report.runs], axis=0)
    assert np.max(np.abs(served - teachers)) > 1e-3
    assert len(report.published_models) == 1
    assert meta["test_accuracy"] == pytest.approx(accuracy(served, split.test_labels), abs=1e-6)
    assert "distilled from 2 run(s)" in report.table()
    # As many optimizer steps as one run: 180 fit points x 8 epochs at batch 32 -> 48 steps;
    # 720 points x 2 epochs -> 46 steps.
    points = distill_points(split.fit_points, config.seed + 2)
    assert len(points) == 4 * len(split.fit_points)
    assert np.array_equal(points[: len(split.fit_points)], split.fit_points)
    lo, hi = split.fit_points.min(0), split.fit_points.max(0)
    assert ((points >= lo) & (points <= hi)).all()
    assert len(report.student.history["loss"]) == 2
    # The runs minimise the config's loss; the student fits soft labels with cross-entropy.
    assert getattr(report.runs[0].model.loss, "q", 0.0) == config.gce_q
    assert report.student.model.loss == "binary_crossentropy"


def test_distill_learns_the_teachers_answer_not_the_labels() -> None:
    """A student fitted to its teachers agrees with their mean's classes on nearly every
    point: on the test points, and on the noisy training points it learned from."""
    ds = generated_dataset(400, noise=0.1, seed=3)
    config = replace(CONFIG, hidden_units=(16, 16), distill=True, epochs=40, dropout=0.0)
    report = train_runs(ds, config, runs=2)
    assert report.student is not None
    from training.train import ensemble_proba, predict_proba

    teachers_of = [r.model for r in report.runs]
    for pts in (report.split.test_points, report.split.fit_points):
        teachers = classes(ensemble_proba(teachers_of, pts))
        student = classes(predict_proba(report.student.model, pts))
        assert np.mean(teachers == student) >= 0.95


def test_a_diverged_student_is_refused_naming_the_way_out() -> None:
    from training.train import RunResult, TrainingError, require_usable_student

    diverged = RunResult(
        index=5, seed=5, test_accuracy=0.5, fit_loss=float("inf"), val_accuracy=float("nan"),
        val_loss=float("nan"), history={}, seconds=0.0, model=None,
    )  # fmt: skip
    with pytest.raises(TrainingError, match=r"student \(seed 5\) diverged.*--no-distill"):
        require_usable_student(diverged, CONFIG)
    require_usable_student(replace(diverged, fit_loss=0.1), CONFIG)  # a usable one passes


def test_distill_and_ensemble_exclude_each_other() -> None:
    with pytest.raises(ValueError, match="distill and ensemble exclude each other"):
        replace(CONFIG, distill=True, ensemble=True)


def test_kept_snapshots_and_swa_weights(tmp_path: Path) -> None:
    ds = generated_dataset(240, noise=0.05, seed=1)
    plain = train_runs(ds, CONFIG, runs=1, keep_weights=2)
    run = plain.runs[0]
    assert len(run.snapshots) == 2
    final = run.model.get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(run.snapshots[-1], final, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(run.snapshots[0], final, strict=True))

    averaged = train_runs(ds, replace(CONFIG, swa_epochs=2), runs=1).runs[0]
    want = average_weights(run.snapshots)
    got = averaged.model.get_weights()
    assert all(np.allclose(a, b, atol=1e-7) for a, b in zip(got, want, strict=True))
    assert averaged.snapshots == []  # kept only when asked


def test_average_weights_is_elementwise_and_refuses_nothing() -> None:
    a = [np.array([1.0, 2.0]), np.array([[0.0]])]
    b = [np.array([3.0, 6.0]), np.array([[1.0]])]
    got = average_weights([a, b])
    assert [x.tolist() for x in got] == [[2.0, 4.0], [[0.5]]]
    with pytest.raises(ValueError, match="at least one snapshot"):
        average_weights([])
