"""Lesson-style XOR data: generate it, and load/validate CSV files with x, y, class id."""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from xor_dnn.storage import atomic_write

COLUMNS = ("x", "y", "class id")
LOW, HIGH = -5.0, 5.0
FLOAT32_MAX = float(np.finfo(np.float32).max)
DEFAULT_N = 1000
DEFAULT_SEED = 0


class DataError(ValueError):
    """A data file is unusable; the message names the file and, where it applies, row and column.

    ``row`` counts data rows from 1 (the header is not a row); ``line`` is the physical line
    in the file (the header is line 1), which is what an editor shows.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        problem: str,
        *,
        row: int | None = None,
        line: int | None = None,
        column: str | None = None,
    ) -> None:
        where = [str(path) if path is not None else "<data>"]
        if row is not None:
            where.append(f"row {row}" + (f" (line {line})" if line is not None else ""))
        if column is not None:
            where.append(f"column '{column}'")
        super().__init__(f"{': '.join(where)}: {problem}")
        self.path = path
        self.row = row
        self.line = line
        self.column = column
        self.problem = problem


@dataclass(frozen=True)
class Dataset:
    """Validated points ``(n, 2)`` float32 and labels ``(n,)`` int64, with where they came from."""

    points: NDArray[np.float32]
    labels: NDArray[np.int64]
    sha256: str
    """Hash of the file's bytes, or of the canonical CSV text for generated data."""
    path: Path | None = None
    """The CSV the data came from; None for generated data."""
    generated: dict[str, Any] | None = field(default=None)
    """For generated data, the generator's arguments (n, noise, seed), so it can be remade."""

    @property
    def rows(self) -> int:
        return int(self.labels.shape[0])

    def describe(self) -> dict[str, Any]:
        """The ``data`` block of a version's metadata."""
        return {
            "path": str(self.path.resolve()) if self.path is not None else None,
            "sha256": self.sha256,
            "rows": self.rows,
            "generated": self.generated,
            "class_1_fraction": round(float(self.labels.mean()), 6) if self.rows else None,
        }


def generate(
    n: int = DEFAULT_N, *, noise: float = 0.0, seed: int = DEFAULT_SEED
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """``n`` points uniform in [-5, 5]², class 1 exactly where x·y < 0.

    With ``noise`` > 0 that fraction of labels (chosen at random, exactly round(n*noise) of
    them) is flipped, the course's "noisy XOR".
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"noise must be in [0, 1], got {noise}")
    rng = np.random.default_rng(seed)
    xy = rng.uniform(LOW, HIGH, size=(n, 2))
    labels = (xy[:, 0] * xy[:, 1] < 0).astype(np.int64)
    flips = round(n * noise)
    if flips:
        idx = rng.choice(n, size=flips, replace=False)
        labels[idx] = 1 - labels[idx]
    return xy.astype(np.float32), labels


def generated_dataset(
    n: int = DEFAULT_N, *, noise: float = 0.0, seed: int = DEFAULT_SEED
) -> Dataset:
    """The embedded default data (or any generator setting) as a :class:`Dataset`."""
    points, labels = generate(n, noise=noise, seed=seed)
    text = to_csv_text(points, labels)
    return Dataset(
        points=points,
        labels=labels,
        sha256=hashlib.sha256(text.encode()).hexdigest(),
        generated={"n": n, "noise": noise, "seed": seed},
    )


def true_rule(points: NDArray[Any]) -> NDArray[np.int64]:
    """The noiseless label: 1 where x·y < 0."""
    labels: NDArray[np.int64] = (points[:, 0] * points[:, 1] < 0).astype(np.int64)
    return labels


def to_csv_text(points: NDArray[Any], labels: NDArray[Any]) -> str:
    """The lesson's CSV layout; floats written with repr precision so a reload is exact."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for (x, y), c in zip(points.tolist(), labels.tolist(), strict=True):
        writer.writerow((repr(float(x)), repr(float(y)), int(c)))
    return buf.getvalue()


def save_csv(path: str | os.PathLike[str], points: NDArray[Any], labels: NDArray[Any]) -> Path:
    """Write the CSV atomically (temp file + rename): a reader never sees half a file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, to_csv_text(points, labels))
    return target


def load_csv(path: str | os.PathLike[str]) -> Dataset:
    """Read and validate a CSV with columns ``x``, ``y``, ``class id`` (others are ignored).

    Column names match case-insensitively and ignore surrounding spaces; blank lines are
    skipped. Raises :class:`DataError` naming file, row and column for: a missing or
    unreadable file, an empty file or one with no data rows, a missing column, a short row,
    a non-numeric or non-finite value, and a label other than 0 or 1.
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise DataError(p, "file not found") from None
    except IsADirectoryError:
        raise DataError(p, "is a directory, not a CSV file") from None
    except OSError as exc:
        raise DataError(p, f"cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(p, f"not UTF-8 text (byte {exc.start})") from None
    if not text.strip():
        raise DataError(p, "empty file (expected a header 'x,y,class id' and data rows)")

    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    header_line = 0
    xs: list[float] = []
    ys: list[float] = []
    cs: list[int] = []
    index: dict[str, int] = {}
    try:
        for fields in reader:
            if not any(f.strip() for f in fields):
                continue
            if header is None:
                header = [f.strip().lower() for f in fields]
                header_line = reader.line_num
                missing = [c for c in COLUMNS if c not in header]
                if missing:
                    raise DataError(
                        p,
                        f"missing column(s) {', '.join(repr(m) for m in missing)} in header "
                        f"{fields!r} (line {header_line}); expected {', '.join(COLUMNS)}",
                    )
                index = {c: header.index(c) for c in COLUMNS}
                continue
            row, line = len(cs) + 1, reader.line_num
            values = [_cell(p, fields, index[c], c, row, line) for c in COLUMNS]
            label = values[2]
            if label not in (0.0, 1.0):
                raise DataError(
                    p,
                    f"label {fields[index['class id']].strip()!r} is not 0 or 1",
                    row=row,
                    line=line,
                    column="class id",
                )
            xs.append(values[0])
            ys.append(values[1])
            cs.append(int(label))
    except csv.Error as exc:
        raise DataError(p, f"malformed CSV near line {reader.line_num}: {exc}") from None
    if not cs:
        raise DataError(p, "no data rows after the header")
    points = np.column_stack([np.asarray(xs), np.asarray(ys)])
    return Dataset(
        points=points.astype(np.float32),
        labels=np.asarray(cs, dtype=np.int64),
        sha256=hashlib.sha256(raw).hexdigest(),
        path=p,
    )


def _cell(path: Path, fields: list[str], i: int, column: str, row: int, line: int) -> float:
    if i >= len(fields):
        raise DataError(
            path,
            f"row has {len(fields)} field(s), the header has more; value missing",
            row=row,
            line=line,
            column=column,
        )
    cell = fields[i].strip()
    if not cell:
        raise DataError(path, "empty value", row=row, line=line, column=column)
    try:
        value = float(cell)
    except ValueError:
        raise DataError(
            path, f"{cell!r} is not a number", row=row, line=line, column=column
        ) from None
    if not math.isfinite(value):
        raise DataError(path, f"{cell!r} is not a finite number", row=row, line=line, column=column)
    if abs(value) > FLOAT32_MAX:
        # Finite in Python but inf once the model casts it to float32.
        raise DataError(
            path,
            f"{cell!r} is beyond float32's range (±{FLOAT32_MAX:.3g})",
            row=row,
            line=line,
            column=column,
        )
    return value
