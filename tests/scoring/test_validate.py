"""Coordinate parsing: every kind of bad value gets its code, clean columns take the fast path."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from scoring.validate import MISSING, NOT_A_NUMBER, NOT_FINITE, OK, parse_coordinate


@pytest.mark.parametrize(
    ("text", "code", "value"),
    [
        ("1.5", OK, 1.5),
        ("  -2e3 ", OK, -2000.0),
        ("+.5", OK, 0.5),
        ("7.", OK, 7.0),
        ("", MISSING, None),
        ("   ", MISSING, None),
        (None, MISSING, None),
        ("abc", NOT_A_NUMBER, None),
        ("1,5", NOT_A_NUMBER, None),
        ("0x10", NOT_A_NUMBER, None),
        ("1_000", NOT_A_NUMBER, None),
        ("nan", NOT_FINITE, None),
        ("-Infinity", NOT_FINITE, None),
        ("inf", NOT_FINITE, None),
    ],
)
def test_text_values(text: str | None, code: int, value: float | None) -> None:
    # Surrounded by clean values so the slow path must keep their results too.
    values, codes = parse_coordinate(pa.array(["0.25", text, "3"], pa.string()))
    assert codes.tolist() == [OK, code, OK]
    assert values[0] == 0.25 and values[2] == 3.0
    if value is not None:
        assert values[1] == value


def test_clean_text_column() -> None:
    values, codes = parse_coordinate(pa.array(["1", "-2.5", "3e-1"]))
    assert values.tolist() == [1.0, -2.5, 0.3]
    assert not codes.any()


def test_numeric_columns() -> None:
    values, codes = parse_coordinate(pa.array([1.0, None, float("nan"), float("-inf"), 2.0]))
    assert codes.tolist() == [OK, MISSING, NOT_FINITE, NOT_FINITE, OK]
    assert values[4] == 2.0
    values, codes = parse_coordinate(pa.array([1, None, 3], pa.int16()))
    assert codes.tolist() == [OK, MISSING, OK] and values[2] == 3.0


def test_non_numeric_types() -> None:
    _, codes = parse_coordinate(pa.array([True, None]))
    assert codes.tolist() == [NOT_A_NUMBER, MISSING]
    _, codes = parse_coordinate(pa.nulls(2))
    assert codes.tolist() == [MISSING, MISSING]


def test_chunked_array() -> None:
    values, codes = parse_coordinate(pa.chunked_array([["1"], ["x", "2"]]))
    assert codes.tolist() == [OK, NOT_A_NUMBER, OK]
    assert np.isnan(values[1])
