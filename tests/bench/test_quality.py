"""bench.quality's datasets and its verdict on the issue-18 targets (no training here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench import quality


def test_fresh_datasets_are_the_announced_ones_and_never_tuned_on() -> None:
    for name in ("fresh", "fresh2", "fresh3", "fresh4", "fresh5", "fresh6", "fresh7"):
        fresh = quality.datasets(name, None)
        counts = {noise: sum(d.noise == noise for d in fresh) for noise in (0.04, 0.08, 0.12)}
        assert counts == {0.04: 12, 0.08: 24, 0.12: 12}
    assert quality.REPORT_SET == "fresh7"
    # No generator seed is in two sets, so no report dataset was ever tuned on.
    seeds = [d.seed for name in quality.SETS for d in quality.datasets(name, None)]
    assert len(seeds) == len(set(seeds)) == 18 + 48 + 70 + 48 + 48 + 48 + 48 + 48 + 48


def test_reference_learner_finds_the_true_lines_and_pays_for_noisy_labels() -> None:
    from sklearn.model_selection import train_test_split

    from training.data import generate, true_rule

    points, labels = generate(1000, seed=3)
    fit, test, fit_labels, test_labels = train_test_split(points, labels, random_state=42)
    assert quality.reference_accuracy(fit, fit_labels, test, test_labels) == pytest.approx(1.0)
    # Shifted data: the best lines move with it (the learner is told the shape, not where).
    shift = np.array([0.3, -0.2], np.float32)
    assert quality.reference_accuracy(
        fit + shift, fit_labels, test + shift, test_labels
    ) == pytest.approx(1.0)
    noisy, noisy_labels = generate(1000, noise=0.12, seed=51203)
    fit, test, fit_labels, test_labels = train_test_split(noisy, noisy_labels, random_state=42)
    ceiling = float(np.mean(true_rule(test) == test_labels))
    reference = quality.reference_accuracy(fit, fit_labels, test, test_labels)
    assert ceiling - 0.02 <= reference <= ceiling + 0.02


def test_lesson_csv_comes_first_and_limit_caps_each_noise_rate(tmp_path: Path) -> None:
    csv = tmp_path / "xor.csv"
    got = quality.datasets("fresh", csv, limit=2)
    assert got[0].path == str(csv) and got[0].noise is None
    assert [(d.noise, d.seed) for d in got[1:]] == [
        (0.08, 8001),
        (0.08, 8002),
        (0.04, 4001),
        (0.04, 4002),
        (0.12, 12001),
        (0.12, 12002),
    ]


def row(noise: float | None, served: float, ceiling: float) -> dict[str, object]:
    return {"noise": noise, "served": served, "gap": ceiling - served, "reference_gap": 0.0}


def test_targets_pass_at_the_limits() -> None:
    rows = [row(None, 0.995, 1.0), row(0.08, 0.91, 0.92), row(0.08, 0.92, 0.92)]
    summary = quality.summarise(rows)
    assert summary["datasets"] == 2 and summary["lesson_csv"] == 0.995
    assert summary["mean_gap"] == pytest.approx(0.005) and summary["over_worst"] == 0
    assert summary["reference_mean_gap"] == 0.0 and summary["reference_over_worst"] == 0
    assert quality.misses(summary) == []


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([row(0.08, 0.904, 0.92), row(0.08, 0.92, 0.92)], "more than 1.0 pt"),
        ([row(0.08, 0.912, 0.92), row(0.04, 0.952, 0.96)], "mean gap 0.80 pt > 0.5"),
        ([row(None, 0.992, 1.0)], "lesson CSV 0.9920 < 0.995"),
    ],
)
def test_each_target_miss_is_named(rows: list[dict[str, object]], message: str) -> None:
    failed = quality.misses(quality.summarise(rows))
    assert any(message in f for f in failed), failed


def test_mean_gap_is_reported_per_noise_rate() -> None:
    summary = quality.summarise([row(0.04, 0.95, 0.96), row(0.12, 0.88, 0.88)])
    assert summary["mean_gap_4%"] == pytest.approx(0.01)
    assert summary["mean_gap_12%"] == pytest.approx(0.0)


def test_nothing_to_measure_is_not_a_pass(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--sets", "tuning", "--limit", "0", "--data", str(tmp_path / "missing.csv")]
    assert quality.main([*args, "--json", str(tmp_path / "out.json")]) == 2
    assert "no dataset to measure" in capsys.readouterr().err


def test_a_report_without_the_default_gives_no_verdict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def scored(config_name: str, data: quality.Data, runs: int) -> dict[str, object]:
        return {
            "config": config_name,
            "dataset": data.name,
            "runs_mean": 0.9,
            "ceiling": 0.9,
            **row(data.noise, 0.9, 0.9),
        }

    class Inline:  # the pool, in this process: the scoring above needs no training
        def __init__(self, *args: object, **kwargs: object) -> None: ...
        def __enter__(self) -> Inline:
            return self

        def __exit__(self, *exc: object) -> None: ...
        def map(self, fn: object, *iterables: object) -> object:
            return map(scored, *iterables)  # type: ignore[call-overload]

    monkeypatch.setattr(quality, "ProcessPoolExecutor", Inline)
    args = ["--configs", "lesson", "--limit", "1", "--data", str(tmp_path / "missing.csv")]
    assert quality.main([*args, "--json", str(tmp_path / "out.json")]) == 0
    out = capsys.readouterr().out
    assert "no verdict" in out and "targets met" not in out


def test_the_single_run_on_the_same_runs_is_summarised_beside_what_is_served() -> None:
    rows = [
        {**row(0.08, 0.92, 0.93), "ceiling": 0.93, "chosen": 0.91},
        {**row(0.04, 0.96, 0.96), "ceiling": 0.96, "chosen": 0.96},
    ]
    summary = quality.summarise(rows)
    assert summary["mean_gap"] == pytest.approx(0.005)
    assert summary["chosen_mean_gap"] == pytest.approx(0.01)
    assert "chosen_mean_gap" not in quality.summarise([row(0.08, 0.92, 0.93)])  # older rows
