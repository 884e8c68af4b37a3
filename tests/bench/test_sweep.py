"""bench._sweep: the batched candidate trainer learns, and scores gaps as bench.quality does."""

from __future__ import annotations

import json
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
