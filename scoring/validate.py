"""Vectorised coordinate checks: parse a column to float64 and classify every bad value.

Each value gets a code: OK, MISSING (null, empty or blank), NOT_A_NUMBER (text that is not a
decimal number, a boolean, a nested value) or NOT_FINITE (nan, inf). Text is accepted with
surrounding whitespace, a sign, a decimal point and an exponent, like ``float()`` without its
underscores and hex. The common case (a clean numeric column) costs one Arrow cast.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

OK, MISSING, NOT_A_NUMBER, NOT_FINITE = 0, 1, 2, 3
REASONS = {MISSING: "missing value", NOT_A_NUMBER: "not a number", NOT_FINITE: "not finite"}
# RE2 syntax: a decimal with optional exponent, or nan/inf spelled any way Arrow accepts.
_NUMBER_RE = (
    r"^[+-]?(?:[0-9]+\.?[0-9]*(?:[eE][+-]?[0-9]+)?|\.[0-9]+(?:[eE][+-]?[0-9]+)?"
    r"|(?i:nan|inf|infinity))$"
)


def is_text(t: pa.DataType) -> bool:
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t))


def _is_number(t: pa.DataType) -> bool:
    return bool(pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t))


def _finish(
    values: pa.Array, codes: NDArray[np.int8]
) -> tuple[NDArray[np.float64], NDArray[np.int8]]:
    out = values.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    ok = codes == OK
    bad_float = ok & ~np.isfinite(out)
    if bad_float.any():
        codes = codes.copy()
        codes[bad_float] = NOT_FINITE
    return out, codes


def _null_codes(arr: pa.Array) -> NDArray[np.int8]:
    codes = np.zeros(len(arr), dtype=np.int8)
    if arr.null_count:
        codes[arr.is_null().to_numpy(zero_copy_only=False)] = MISSING
    return codes


def _text_slow(arr: pa.Array) -> tuple[NDArray[np.float64], NDArray[np.int8]]:
    trimmed = pc.utf8_trim_whitespace(arr)
    empty = pc.fill_null(pc.equal(pc.utf8_length(trimmed), 0), True).to_numpy(zero_copy_only=False)
    numeric = pc.fill_null(pc.match_substring_regex(trimmed, _NUMBER_RE), False)
    candidates = pc.if_else(numeric, trimmed, pa.scalar(None, arr.type))
    try:
        values = pc.cast(candidates, pa.float64())
    except pa.ArrowInvalid:
        # The pattern admitted something Arrow's parser refuses: settle value by value (rare).
        values = pa.array([_parse_one(v) for v in candidates.to_pylist()], pa.float64())
    numeric_np = pc.and_(numeric, pc.is_valid(values)).to_numpy(zero_copy_only=False)
    codes = np.where(empty, MISSING, np.where(numeric_np, OK, NOT_A_NUMBER)).astype(np.int8)
    return _finish(values, codes)


def _parse_one(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(pc.cast(pa.scalar(text), pa.float64()).as_py())
    except (pa.ArrowInvalid, TypeError):
        return None


def parse_coordinate(
    arr: pa.Array | pa.ChunkedArray,
) -> tuple[NDArray[np.float64], NDArray[np.int8]]:
    """``(values, codes)``: float64 values (nan where bad) and one code per row."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    t = arr.type
    if is_text(t):
        try:
            values = pc.cast(arr, pa.float64())
        except pa.ArrowInvalid:
            return _text_slow(arr)
        return _finish(values, _null_codes(arr))
    if _is_number(t):
        return _finish(pc.cast(arr, pa.float64()), _null_codes(arr))
    # null type, booleans, dates, nested values: none is a coordinate.
    codes = np.full(len(arr), NOT_A_NUMBER, dtype=np.int8)
    if arr.null_count or pa.types.is_null(t):
        codes[arr.is_null().to_numpy(zero_copy_only=False)] = MISSING
    return np.full(len(arr), np.nan), codes


def reject_reasons(
    x_codes: NDArray[np.int8], y_codes: NDArray[np.int8], rows: NDArray[np.intp]
) -> tuple[NDArray[np.bool_], list[str]]:
    """For the bad ``rows``: whether x is the column a reject names (x when both are bad), and
    the reason of the column named."""
    x_bad = x_codes[rows] != OK
    codes = np.where(x_bad, x_codes[rows], y_codes[rows])
    return x_bad, [REASONS[int(c)] for c in codes]


def describe(value: Any) -> str:
    """A value as shown in a reject: text as written, anything else as Python prints it."""
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)
