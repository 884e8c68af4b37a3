"""Deterministic splitting of one file: N shards together cover every row exactly once.

Text files (CSV, JSONL) are cut into N equal byte ranges of their data section; each cut is
moved forward to the next line start, so shard K scores exactly the lines that *start* in its
range, and reads nothing before it (finding a cut reads from the cut to the next newline).
Parquet files are cut into N equal row-index ranges (read through the row groups that overlap
them). Both depend only on the file and N, never on timing, so a retried Kubernetes pod
re-scores the same rows. (A dataset of many files is split by :mod:`scoring.datasets`.)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from scoring.errors import InputError
from xor_dnn.storage import RangeReader

INDEX_ENV = "JOB_COMPLETION_INDEX"
"""Set by Kubernetes in each pod of an Indexed Job (0 .. completions-1)."""
COUNT_ENV = "XOR_DNN_NUM_SHARDS"
"""The shard count; set it to the Job's ``completions`` in the pod template."""
_SCAN = 1 << 12


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based); ``Shard(0, 1)`` is the whole input."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1:
            raise InputError(f"--num-shards must be >= 1, got {self.count}")
        if not 0 <= self.index < self.count:
            raise InputError(
                f"--shard-index must be in [0, {self.count - 1}] for --num-shards {self.count},"
                f" got {self.index}"
            )


def _env_int(env: Mapping[str, str], name: str, flag: str) -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise InputError(f"${name}={raw!r} is not an integer (it sets {flag})") from None


def resolve_shard(
    index: int | None, count: int | None, env: Mapping[str, str] = os.environ
) -> Shard:
    """Flags win; else ``$JOB_COMPLETION_INDEX`` / ``$XOR_DNN_NUM_SHARDS``; else one shard."""
    if count is None:
        count = _env_int(env, COUNT_ENV, "--num-shards")
    if index is None:
        index = _env_int(env, INDEX_ENV, "--shard-index")
    if count is None and index not in (None, 0):
        raise InputError(
            f"shard index {index} given (flag or ${INDEX_ENV}) but no shard count:"
            f" pass --num-shards or set ${COUNT_ENV}"
        )
    return Shard(index or 0, count or 1)


def row_range(total: int, shard: Shard) -> tuple[int, int]:
    """Rows ``[start, stop)`` of ``total`` that ``shard`` scores."""
    return total * shard.index // shard.count, total * (shard.index + 1) // shard.count


def _next_line_start(blob: RangeReader, pos: int, data_start: int) -> int:
    """The first line start at or after ``pos`` (a line starts after a newline)."""
    size = blob.length
    if pos <= data_start:
        return data_start
    if pos >= size:
        return size
    at = pos - 1  # if the byte before pos is a newline, a line starts exactly at pos
    step = _SCAN  # small first (one line is usually far shorter), doubling for long lines
    while at < size:
        block = blob.read_range(at, at + step)
        if not block:
            break
        nl = block.find(b"\n")
        if nl >= 0:
            return at + nl + 1
        at += len(block)
        step = min(step * 2, 1 << 22)
    return size


def byte_range(blob: RangeReader, data_start: int, shard: Shard) -> tuple[int, int]:
    """Bytes ``[start, stop)`` of the text file ``blob`` holding the lines ``shard`` scores."""
    span = blob.length - data_start
    lo = data_start + span * shard.index // shard.count
    hi = data_start + span * (shard.index + 1) // shard.count
    return _next_line_start(blob, lo, data_start), _next_line_start(blob, hi, data_start)
