"""Inputs of many files, and how a job's files are split between the shards of an Indexed Job.

``--input`` names one file, a folder, a glob (``points/*.parquet``, ``s3://b/p/**/*.csv``) or an
object-store prefix (``s3://bucket/points/``); everything goes through
:mod:`xor_dnn.storage`, so a local folder and a bucket list and read the same way. Files whose
name starts with ``.`` or ``_`` (markers, manifests, Spark's ``_SUCCESS``) and the ``.rejects``
files of an earlier run are skipped, as pyarrow.dataset and Spark skip them. ``key=value``
folders (hive partitioning) become columns of every row below them.

One output per input file: the input's path below the dataset root, with the output format's
extension (``day=1/a.csv`` -> ``OUT/day=1/a.parquet``), rejects beside it
(``OUT/day=1/a.rejects.parquet``). A re-run maps every input to the same output.

**Shards** (``--num-shards N``): a dataset is split by whole files, balanced by size (largest
first, each to the shard with the fewest bytes so far, ties to the lower index), so a shard
reads only its own files. A Parquet file larger than a shard's share (total / N) is first cut
into pieces of consecutive row groups of about that share; a piece writes its own output,
``a-rg00003-00005.parquet`` (row groups 3 to 5). A single input file keeps the finer split of
:mod:`scoring.shards` (byte ranges of a text file, row ranges of a Parquet file). The plan
depends only on the listing (names and sizes) and N, so every pod computes the same one.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import pyarrow as pa
import pyarrow.parquet as pq

from scoring.errors import InputError
from scoring.formats import EXTENSIONS, Format, default_rejects_path, detect_format, part_path
from scoring.shards import Shard
from xor_dnn.storage import (
    ObjectNotFound,
    Observer,
    StorageError,
    Store,
    open_store,
    split_uri,
)

_GLOB_CHARS = "*?["


@dataclass(frozen=True)
class InputFile:
    """One file of the input: its key under the dataset's store, size and hive partitions."""

    key: str
    size: int
    partitions: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Dataset:
    """What ``--input`` named: the store the files are in and the files, sorted by key."""

    uri: str
    store: Store
    files: tuple[InputFile, ...]
    format: Format
    single: bool
    """True when ``--input`` named one file (its output is then a file, not a folder)."""
    partition_types: tuple[tuple[str, pa.DataType], ...] = ()
    """Each hive partition column and its type: int32 when every value in the listing is an
    integer, else string (as pyarrow.dataset infers them, so the output reads back alike)."""

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


@dataclass(frozen=True)
class Target:
    """Where one output goes: a store and a key in it."""

    store: Store
    key: str

    @property
    def uri(self) -> str:
        return self.store.child(self.key)


@dataclass(frozen=True)
class Unit:
    """One input file (or a shard or row groups of it) and the two files it produces."""

    file: InputFile
    output: Target
    rejects: Target
    shard: Shard = field(default_factory=Shard)
    """A shard of the single input file (byte or row ranges); ``Shard()`` for a whole file."""
    row_groups: tuple[int, int] | None = None
    """Parquet row groups ``[a, b)`` of a file too large for one shard."""

    @property
    def cost(self) -> int:
        return self.file.size


def _partitions(key: str) -> tuple[tuple[str, str], ...]:
    found = []
    for segment in key.split("/")[:-1]:
        name, eq, value = segment.partition("=")
        if eq and name:
            found.append((name, value))
    return tuple(found)


def _wanted(key: str) -> bool:
    name = key.rsplit("/", 1)[-1]
    if name.startswith((".", "_")):
        return False
    stem = name.rsplit(".", 1)[0]
    return not (stem.endswith(".rejects") or ".rejects-part-" in stem)


def _glob_root(uri: str) -> tuple[str, str]:
    """``s3://b/p/*/x*.csv`` -> (``s3://b/p``, ``*/x*.csv``): the folder before the first
    segment with a wildcard, and the pattern below it."""
    head, pattern = uri, ""
    while any(c in head for c in _GLOB_CHARS):
        head, name = split_uri(head)
        pattern = f"{name}/{pattern}" if pattern else name
    return head, pattern


def _match(key: str, pattern: str) -> bool:
    """fnmatch per path segment, with ``**`` matching any number of folders."""
    parts, pats = key.split("/"), pattern.split("/")

    def go(i: int, j: int) -> bool:
        if j == len(pats):
            return i == len(parts)
        if pats[j] == "**":
            return any(go(k, j + 1) for k in range(i, len(parts) + 1))
        return i < len(parts) and fnmatch.fnmatchcase(parts[i], pats[j]) and go(i + 1, j + 1)

    return go(0, 0)


def open_dataset(uri: str, fmt: str | None, obs: Observer | None = None) -> Dataset:
    """List the files ``uri`` names; raises InputError when there are none or the format
    cannot be told. ``obs`` sees the store's requests (it counts the bytes read)."""
    text = str(uri)
    try:
        if any(c in text for c in _GLOB_CHARS):
            root, pattern = _glob_root(text)
            store = open_store(root, obs)
            listed = [(k, n) for k, n in store.entries() if _match(k, pattern)]
            return _dataset(text, store, listed, fmt)
        if not text.endswith("/"):
            parent, name = split_uri(text)
            if name:
                store = open_store(parent, obs)
                try:
                    size = store.size(name)
                except ObjectNotFound:
                    pass
                else:
                    in_fmt = detect_format(PurePosixPath(name), fmt, "input")
                    return Dataset(text, store, (InputFile(name, size),), in_fmt, True)
        store = open_store(text, obs)
        return _dataset(text, store, store.entries(), fmt)
    except StorageError as exc:
        raise InputError(f"input {exc}") from None


def _dataset(uri: str, store: Store, listed: list[tuple[str, int]], fmt: str | None) -> Dataset:
    keys = [(k, n) for k, n in listed if _wanted(k)]
    if fmt is None:
        known = [(k, n) for k, n in keys if _suffix(k) in EXTENSIONS]
        formats = sorted({EXTENSIONS[_suffix(k)] for k, _ in known})
        if len(formats) > 1:
            shown = ", ".join(f.value for f in formats)
            raise InputError(
                f"input {uri}: files of several formats ({shown}); pass --input-format"
                " (or a glob such as '*.parquet')"
            )
        keys = known
        if not formats:
            raise InputError(
                f"input {uri}: no such file, and no {', '.join(EXTENSIONS)} file below it"
            )
        in_fmt = formats[0]
    else:
        in_fmt = detect_format(PurePosixPath("x"), fmt, "input")
    if not keys:
        raise InputError(f"input {uri}: no input file there")
    files = tuple(InputFile(k, n, _partitions(k)) for k, n in sorted(keys))
    values: dict[str, list[str]] = {}
    for f in files:
        for name, value in f.partitions:
            values.setdefault(name, []).append(value)
    types = tuple(
        (name, pa.int32() if all(_is_int32(v) for v in vs) else pa.string())
        for name, vs in values.items()
    )
    return Dataset(uri, store, files, in_fmt, False, types)


def _is_int32(text: str) -> bool:
    try:
        return -(2**31) <= int(text) < 2**31 and text.strip() == text
    except ValueError:
        return False


def _suffix(key: str) -> str:
    name = key.rsplit("/", 1)[-1]
    return "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""


def output_key(key: str, fmt: Format, suffix: str = "") -> str:
    """``day=1/a.csv`` -> ``day=1/a<suffix>.parquet``: the input's path, the output's format."""
    folder, _, name = key.rpartition("/")
    stem = name[: -len(_suffix(name))] if _suffix(name) in EXTENSIONS else name
    out = f"{stem}{suffix}.{fmt.value}"
    return f"{folder}/{out}" if folder else out


def rejects_key(key: str, fmt: Format) -> str:
    """``day=1/a.parquet`` -> ``day=1/a.rejects.parquet``."""
    folder, _, name = key.rpartition("/")
    out = default_rejects_path(PurePosixPath(name), fmt).name
    return f"{folder}/{out}" if folder else out


def _row_group_pieces(dataset: Dataset, f: InputFile, share: int) -> list[tuple[int, int]]:
    """Consecutive row groups of ``f`` in pieces of about ``share`` bytes (one piece when the
    file has one row group); reads the file's footer only."""
    try:
        meta = pq.ParquetFile(dataset.store.open_input(f.key, f.size)).metadata
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"input {dataset.store.child(f.key)}: cannot read: {exc}") from exc
    pieces: list[tuple[int, int]] = []
    start, acc = 0, 0
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        acc += sum(group.column(c).total_compressed_size for c in range(group.num_columns))
        if acc >= share and g + 1 < meta.num_row_groups:
            pieces.append((start, g + 1))
            start, acc = g + 1, 0
    pieces.append((start, meta.num_row_groups))
    return pieces


def plan(
    dataset: Dataset,
    output: str,
    out_fmt: Format,
    shard: Shard,
    rejects: str | None = None,
) -> list[Unit]:
    """The units shard ``shard`` scores, in key order (see the module docstring)."""
    if dataset.single:
        f = dataset.files[0]
        parent, name = split_uri(output)
        if not name:
            raise InputError(f"--output {output}: name a file for a one-file input")
        store = open_store(parent)
        key = part_path(PurePosixPath(name), shard.index, shard.count).name
        if rejects:
            rparent, rname = split_uri(rejects)
            rstore = open_store(rparent)
        else:
            rstore, rname = store, default_rejects_path(PurePosixPath(name), out_fmt).name
        rkey = part_path(PurePosixPath(rname), shard.index, shard.count).name
        return [Unit(f, Target(store, key), Target(rstore, rkey), shard)]
    out_store = open_store(output)
    rej_store = open_store(rejects) if rejects else out_store
    share = max(dataset.size // shard.count, 1)
    candidates: list[tuple[InputFile, tuple[int, int] | None, int]] = []
    for f in dataset.files:
        if shard.count > 1 and dataset.format is Format.PARQUET and f.size > share:
            pieces = _row_group_pieces(dataset, f, share)
            if len(pieces) > 1:
                per = f.size // len(pieces)
                candidates += [(f, p, per) for p in pieces]
                continue
        candidates.append((f, None, f.size))
    # Largest first onto the least-loaded shard: deterministic (ties by key, then index).
    order = sorted(range(len(candidates)), key=lambda i: (-candidates[i][2], i))
    load = [0] * shard.count
    mine: list[int] = []
    for i in order:
        k = min(range(shard.count), key=lambda s: (load[s], s))
        load[k] += max(candidates[i][2], 1)
        if k == shard.index:
            mine.append(i)
    units = []
    for i in sorted(mine):
        f, groups, _ = candidates[i]
        suffix = f"-rg{groups[0]:05d}-{groups[1] - 1:05d}" if groups else ""
        key = output_key(f.key, out_fmt, suffix)
        units.append(
            Unit(
                f,
                Target(out_store, key),
                Target(rej_store, rejects_key(key, out_fmt)),
                Shard(),
                groups,
            )
        )
    return units
