"""File formats and file names: which format a path is, and how shard parts and rejects are named.

A sharded run writes ``OUT`` as ``<stem>-part-KKKKK-of-NNNNN<ext>`` (``scores.csv`` ->
``scores-part-00002-of-00007.csv``); the rejects go beside it as ``<stem>.rejects<ext>``
unless ``--rejects`` names a file (which gets the same part suffix when sharded).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from enum import StrEnum
from pathlib import PurePath
from typing import TypeVar

from scoring.errors import InputError


class Format(StrEnum):
    CSV = "csv"
    PARQUET = "parquet"
    JSONL = "jsonl"


EXTENSIONS: dict[str, Format] = {
    ".csv": Format.CSV,
    ".parquet": Format.PARQUET,
    ".pq": Format.PARQUET,
    ".jsonl": Format.JSONL,
    ".ndjson": Format.JSONL,
}
P = TypeVar("P", bound=PurePath)
PART_RE = re.compile(r"-part-(\d{5})-of-(\d{5})$")


def detect_format(path: PurePath, override: str | None, role: str) -> Format:
    """``override`` when given, else the format named by the file's extension."""
    if override:
        try:
            return Format(override)
        except ValueError:
            choices = ", ".join(f.value for f in Format)
            raise InputError(f"--{role}-format {override!r}: must be one of {choices}") from None
    fmt = EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        known = ", ".join(EXTENSIONS)
        raise InputError(
            f"{role} {path}: cannot tell the format from the extension {path.suffix or '(none)'!r}"
            f" (known: {known}); pass --format or --{role}-format"
        )
    return fmt


def _split(path: PurePath) -> tuple[str, str]:
    """(stem, extension) with the extension kept as written, '' when unknown."""
    if path.suffix.lower() in EXTENSIONS:
        return path.name[: -len(path.suffix)], path.suffix
    return path.name, ""


def part_path(path: P, index: int, count: int) -> P:
    """The file shard ``index`` of ``count`` writes for ``path``; ``path`` itself when unsharded."""
    if count == 1:
        return path
    stem, ext = _split(path)
    return path.with_name(f"{stem}-part-{index:05d}-of-{count:05d}{ext}")


def default_rejects_path(output: P, fmt: Format) -> P:
    """``scores.csv`` -> ``scores.rejects.csv``: beside the output, in the output's format."""
    stem, ext = _split(output)
    return output.with_name(f"{stem}.rejects{ext or '.' + fmt.value}")


def find_parts(path: P, names: Iterable[str]) -> tuple[list[P], int]:
    """The parts written for ``path`` by a sharded run, in shard order, and their count;
    ``names`` are the file names in ``path``'s folder.

    Every part ``0..N-1`` must be present with one ``N``; anything else is an error naming
    what is missing, so a merge never silently drops a shard.
    """
    stem, ext = _split(path)
    pattern = f"{stem}-part-*-of-*{ext}"
    found: dict[int, set[int]] = {}
    for candidate in names:
        if not fnmatch.fnmatchcase(candidate, pattern):
            continue
        name = candidate[: len(candidate) - len(ext)] if ext else candidate
        match = PART_RE.search(name)
        if match and name[: match.start()] == stem:
            found.setdefault(int(match.group(2)), set()).add(int(match.group(1)))
    if not found:
        raise InputError(f"no parts matching {path.parent / pattern}")
    if len(found) > 1:
        raise InputError(
            f"parts of different shard counts beside {path}: {sorted(found)}; remove the stale ones"
        )
    count, indexes = next(iter(found.items()))
    missing = sorted(set(range(count)) - indexes)
    if missing:
        shown = ", ".join(str(i) for i in missing[:10])
        raise InputError(f"{path}: {len(missing)} of {count} parts missing (shard {shown})")
    return [part_path(path, i, count) for i in range(count)], count
