"""Shard splitting and naming: N shards cover every line or row exactly once."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from scoring.errors import InputError
from scoring.formats import Format, default_rejects_path, detect_format, find_parts, part_path
from scoring.shards import Shard, byte_range, resolve_shard, row_range
from xor_dnn.storage import RangeReader, open_store


def _blob(path: Path) -> RangeReader:
    return open_store(path.parent).open_input(path.name)


@pytest.mark.parametrize("count", [1, 2, 3, 7, 40])
def test_byte_ranges_cover_each_line_once(tmp_path: Path, count: int) -> None:
    lines = [f"{i},{'x' * (i % 13)}\n".encode() for i in range(30)]
    path = tmp_path / "f.csv"
    header = b"id,pad\n"
    path.write_bytes(header + b"".join(lines))
    seen: list[bytes] = []
    previous_stop = len(header)
    for k in range(count):
        start, stop = byte_range(_blob(path), len(header), Shard(k, count))
        assert start == previous_stop  # contiguous, no gap, no overlap
        previous_stop = stop
        seen += path.read_bytes()[start:stop].splitlines(keepends=True)
    assert previous_stop == path.stat().st_size
    assert seen == lines


def test_byte_range_without_final_newline(tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    path.write_bytes(b'{"x":1}\n{"x":2}\n{"x":3}')
    parts = [path.read_bytes()[slice(*byte_range(_blob(path), 0, Shard(k, 2)))] for k in range(2)]
    assert b"".join(parts) == path.read_bytes()


@pytest.mark.parametrize("count", [1, 3, 7])
def test_row_ranges_partition(count: int) -> None:
    ranges = [row_range(100, Shard(k, count)) for k in range(count)]
    assert ranges[0][0] == 0 and ranges[-1][1] == 100
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))


def test_resolve_shard_from_kubernetes_env() -> None:
    env = {"JOB_COMPLETION_INDEX": "2", "XOR_DNN_NUM_SHARDS": "5"}
    assert resolve_shard(None, None, env) == Shard(2, 5)
    assert resolve_shard(0, 3, env) == Shard(0, 3)  # flags win
    assert resolve_shard(None, None, {}) == Shard(0, 1)


@pytest.mark.parametrize(
    ("index", "count", "env", "message"),
    [
        (5, 5, {}, "--shard-index must be in [0, 4]"),
        (None, None, {"JOB_COMPLETION_INDEX": "1"}, "no shard count"),
        (None, None, {"JOB_COMPLETION_INDEX": "one", "XOR_DNN_NUM_SHARDS": "2"}, "not an integer"),
    ],
)
def test_resolve_shard_errors(
    index: int | None, count: int | None, env: dict[str, str], message: str
) -> None:
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        resolve_shard(index, count, env)


def test_names() -> None:
    out = Path("/data/scores.csv")
    assert part_path(out, 2, 7) == Path("/data/scores-part-00002-of-00007.csv")
    assert part_path(out, 0, 1) == out
    assert default_rejects_path(out, Format.CSV) == Path("/data/scores.rejects.csv")
    assert detect_format(Path("a.NDJSON"), None, "input") is Format.JSONL
    assert detect_format(Path("a.txt"), "parquet", "input") is Format.PARQUET
    with pytest.raises(InputError, match="cannot tell the format"):
        detect_format(Path("a.txt"), None, "input")


def test_find_parts(tmp_path: Path) -> None:
    out = tmp_path / "s.csv"
    for k in (0, 2):
        part_path(out, k, 3).write_text("x\n")
    part_path(tmp_path / "s.rejects.csv", 0, 3).write_text("row\n")  # not a part of s.csv
    with pytest.raises(InputError, match="1 of 3 parts missing"):
        find_parts(out, [p.name for p in tmp_path.iterdir()])
    part_path(out, 1, 3).write_text("x\n")
    parts, count = find_parts(out, [p.name for p in tmp_path.iterdir()])
    assert count == 3 and parts == [part_path(out, k, 3) for k in range(3)]
