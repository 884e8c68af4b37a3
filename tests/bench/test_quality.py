"""bench.quality's datasets and its verdict on the issue-18 targets (no training here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import quality


def test_fresh_datasets_are_the_announced_ones_and_never_tuned_on() -> None:
    fresh = quality.datasets("fresh", None)
    counts = {noise: sum(d.noise == noise for d in fresh) for noise in (0.04, 0.08, 0.12)}
    assert counts == {0.04: 12, 0.08: 24, 0.12: 12}
    tuning = {(d.noise, d.seed) for d in quality.datasets("tuning", None)}
    assert not tuning & {(d.noise, d.seed) for d in fresh}
    assert not {d.seed for d in fresh} & {d.seed for d in quality.datasets("tuning", None)}


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
    return {"noise": noise, "served": served, "gap": ceiling - served}


def test_targets_pass_at_the_limits() -> None:
    rows = [row(None, 0.995, 1.0), row(0.08, 0.91, 0.92), row(0.08, 0.92, 0.92)]
    summary = quality.summarise(rows)
    assert summary["datasets"] == 2 and summary["lesson_csv"] == 0.995
    assert summary["mean_gap"] == pytest.approx(0.005) and summary["over_worst"] == 0
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
