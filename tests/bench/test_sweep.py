"""bench._sweep: the batched candidate trainer learns, and scores gaps as bench.quality does."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from bench import _sweep


def test_trained_networks_close_the_gap_that_untrained_ones_leave() -> None:
    data = _sweep.prepare("tuning", limit=1)  # one dataset per noise rate
    assert len(data) == 3 and all(0.8 < d.ceiling <= 1.0 for d in data)
    small = {"hidden_units": (16, 16), "runs": 2}
    barely = _sweep.Candidate(**small, epochs=1, learning_rate=1e-5)
    untrained = _sweep.summary(_sweep.train(data, barely))
    trained = _sweep.train(data, _sweep.Candidate(**small, epochs=40, learning_rate=0.03))
    assert [len(r["single"]) for r in trained] == [2, 2, 2]
    assert all(np.isfinite(r["ensemble"]) for r in trained)
    summary = _sweep.summary(trained)
    assert summary["datasets"] == 3
    assert summary["single"] < 3.0 and untrained["single"] > 20.0, (summary, untrained)


def test_candidates_are_checked_and_results_appended(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sweep.jsonl"
    assert _sweep.main(['{"activation": "sigmoid"}', "--out", str(out)]) == 2
    assert _sweep.main(['{"distill": true, "distill_seeds": 0}', "--out", str(out)]) == 2
    assert _sweep.main(['{"epochs": 1, "hidden_units": [4], "runs": 1}', "--set", "tuning",
                        "--limit", "1", "--out", str(out)]) == 0  # fmt: skip
    line = json.loads(out.read_text())
    assert line["datasets"] == 3 and len(line["rows"]) == 3
    assert line["candidate"]["hidden_units"] == [4]
    err = capsys.readouterr().err
    assert "bad candidate" in err and "distill_seeds must be >= 1, got 0" in err


def test_students_learn_the_runs_mean_probability() -> None:
    data = _sweep.prepare("tuning", limit=1)
    small = {"hidden_units": (16, 16), "runs": 2, "learning_rate": 0.03}
    c = _sweep.Candidate(**small, epochs=40, distill=True, distill_extra=250, distill_seeds=3)
    rows = _sweep.train(data, c)
    assert [len(r["student"]) for r in rows] == [3, 3, 3]
    summary = _sweep.summary(rows)
    assert summary["student"] < 6.0, summary  # untrained networks are 20+ points off (above)
    assert "student" not in _sweep.summary(_sweep.train(data, _sweep.Candidate(**small, epochs=2)))


def test_grid_disagreement_is_the_area_between_the_boundary_and_the_axes() -> None:
    def shifted(a: float) -> Callable[[np.ndarray], np.ndarray]:  # a trained predict's double
        def predict(points: np.ndarray) -> np.ndarray:
            return ((points[..., 0] - a) * points[..., 1] < 0).astype(np.float32)

        return predict

    each, mean = _sweep.disagreement(shifted(0.0), copies=2, count=3)
    assert each.shape == (3, 2) and mean.shape == (3,)
    assert np.all(each == 0) and np.all(mean == 0)
    # A vertical line 0.05 off the axis: a strip 0.05 x 10 of the 10 x 10 square.
    each, mean = _sweep.disagreement(shifted(0.05), copies=1, count=1)
    assert each[0, 0] == pytest.approx(0.005) and mean[0] == pytest.approx(0.005)

    # Weights pick the group's mean: all weight on a run that is right leaves nothing.
    def mixed(points: np.ndarray) -> np.ndarray:
        right = shifted(0.0)(points[:1])
        wrong = shifted(0.3)(points[1:])
        return np.concatenate([right, wrong])

    each, mean = _sweep.disagreement(mixed, copies=2, count=1, weights=np.array([[1.0, 0.0]]))
    assert each[0] == pytest.approx([0.0, 0.03]) and mean[0] == 0
    assert _sweep.expected_gap(0.005, 0.1) == pytest.approx(0.005 * 0.8 * 100)


def test_chance_over_matches_counting_every_outcome() -> None:
    import itertools
    from math import comb

    area, noise, n = 0.2, 0.1, 8
    # Limit 20 points of 8 test points: over when lost - gained > 1.6, i.e. >= 2.
    brute = 0.0
    for k, lost in itertools.product(range(n + 1), repeat=2):
        if lost <= k and 2 * lost - k >= 2:
            p_k = comb(n, k) * area**k * (1 - area) ** (n - k)
            brute += p_k * comb(k, lost) * (1 - noise) ** lost * noise ** (k - lost)
    assert _sweep.chance_over(area, noise, n, limit=20) == pytest.approx(brute, rel=1e-9)
    assert _sweep.chance_over(0.0, 0.08, 250) == 0.0
    # The learner told the answer's shape: a few percent of datasets over 1.0 point.
    data = _sweep.prepare("tuning", limit=1)
    overs = [_sweep.chance_over(_sweep.reference_area(d), d.noise, len(d.test)) for d in data]
    assert all(0 <= p < 0.5 for p in overs)


def test_select_best_keeps_the_runs_that_fit_the_training_labels_best() -> None:
    data = _sweep.prepare("tuning", limit=1)
    c = _sweep.Candidate(hidden_units=(8,), runs=3, epochs=3, select_best=1, learning_rate=0.03)
    rows = _sweep.train(data, c)
    summary = _sweep.summary(rows)
    assert {"single_grid", "ensemble_grid", "reference_grid", "ensemble_over"} <= set(summary)
    # With one run kept, the "ensemble" is one of the runs: its area is one of theirs.
    for r in rows:
        assert any(r["ensemble_area"] == pytest.approx(a) for a in r["single_area"])
