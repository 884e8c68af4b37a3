"""bench._bound: the reference learner's gaps on generated data, and what they make of a report."""

from __future__ import annotations

import pytest

from bench import _bound


def test_reference_gaps_are_the_reports_reference_gaps() -> None:
    # bench.quality's fresh7 report printed these reference gaps for the same two datasets.
    gaps = _bound.reference_gaps(0.08, [110019, 110001])
    assert gaps == pytest.approx([1.2, 0.0], abs=1e-9)


def test_chance_of_none_over_multiplies_independent_datasets() -> None:
    shares = {0.04: 0.5, 0.08: 0.0, 0.12: 0.1}
    assert _bound.chance_none_over(shares, {0.04: 2, 0.08: 7}) == pytest.approx(0.25)
    assert _bound.chance_none_over(shares, {0.12: 3}) == pytest.approx(0.9**3)
    assert _bound.chance_none_over(shares, {}) == 1.0


def test_prints_shares_per_noise_rate(capsys: pytest.CaptureFixture[str]) -> None:
    assert _bound.main(["--datasets", "3"]) == 0
    out = capsys.readouterr().out
    assert "3 generated datasets per noise rate" in out
    assert all(f"| {noise:.0%} |" in out for noise in _bound.NOISES)
    assert "in a report (12 at 4%, 24 at 8%, 12 at 12%)" in out


def test_refuses_no_datasets(capsys: pytest.CaptureFixture[str]) -> None:
    assert _bound.main(["--datasets", "0"]) == 2
    assert "--datasets must be >= 1" in capsys.readouterr().err
