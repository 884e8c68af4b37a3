"""Data loading and validation: every bad case names file, row and column; generator is exact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.data import (
    COLUMNS,
    DataError,
    generate,
    generated_dataset,
    load_csv,
    save_csv,
    true_rule,
)


def write(tmp_path: Path, text: str, name: str = "d.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_loads_lesson_layout(tmp_path: Path) -> None:
    path = write(tmp_path, "x,y,class id\n0.5,-1.5,1\n-2,-3,0\n\n1e-3,4.0,0.0\n")
    ds = load_csv(path)
    assert ds.rows == 3
    assert ds.points.dtype == np.float32 and ds.points.shape == (3, 2)
    assert ds.labels.tolist() == [1, 0, 0]
    assert ds.path == path
    assert len(ds.sha256) == 64


def test_header_is_case_and_space_insensitive_and_extra_columns_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, "\ufeffid, X , Y ,Class ID,note\n7,1,2,0,hello\n")
    ds = load_csv(path)
    assert ds.points.tolist() == [[1.0, 2.0]] and ds.labels.tolist() == [0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "d.csv: empty file"),
        ("   \n\n", "d.csv: empty file"),
        ("x,y,class id\n", "d.csv: no data rows"),
        ("x,class id\n1,0\n", "d.csv: missing column(s) 'y'"),
        ("a,b,c\n1,2,0\n", "missing column(s) 'x', 'y', 'class id'"),
        (
            "x,y,class id\n1,2,0\n1,abc,1\n",
            "d.csv: row 2 (line 3): column 'y': 'abc' is not a number",
        ),
        (
            "x,y,class id\n1,2,0\nnan,1,1\n",
            "row 2 (line 3): column 'x': 'nan' is not a finite number",
        ),
        ("x,y,class id\n1,inf,0\n", "row 1 (line 2): column 'y': 'inf' is not a finite number"),
        (
            "x,y,class id\n1,1e39,0\n",
            "row 1 (line 2): column 'y': '1e39' is beyond float32's range",
        ),
        ("x,y,class id\n1,2,2\n", "row 1 (line 2): column 'class id': label '2' is not 0 or 1"),
        ("x,y,class id\n1,2,0.5\n", "column 'class id': label '0.5' is not 0 or 1"),
        ("x,y,class id\n1,2,-1\n", "column 'class id': label '-1' is not 0 or 1"),
        ("x,y,class id\n1,2,yes\n", "column 'class id': 'yes' is not a number"),
        ("x,y,class id\n1,2\n", "row 1 (line 2): column 'class id': row has 2 field(s)"),
        ("x,y,class id\n1,,0\n", "row 1 (line 2): column 'y': empty value"),
        ("x,y,class id\n\n1,2,0\n\n3,x4,1\n", "row 2 (line 5): column 'y': 'x4' is not a number"),
    ],
)
def test_bad_data_names_file_row_and_column(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(DataError) as info:
        load_csv(path)
    assert expected in str(info.value)
    assert str(path) in str(info.value)


def test_missing_file_and_directory_and_binary(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.csv: file not found"):
        load_csv(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="is a directory"):
        load_csv(tmp_path)
    binary = tmp_path / "b.csv"
    binary.write_bytes(b"x,y,class id\n\xff\xfe\x00\n")
    with pytest.raises(DataError, match="not UTF-8"):
        load_csv(binary)


def test_error_carries_structured_location(tmp_path: Path) -> None:
    path = write(tmp_path, "x,y,class id\n1,2,0\n1,2,7\n")
    with pytest.raises(DataError) as info:
        load_csv(path)
    assert (info.value.row, info.value.line, info.value.column) == (2, 3, "class id")


def test_generator_follows_the_rule_and_flips_exactly_the_noise_fraction() -> None:
    points, labels = generate(1000, seed=3)
    assert points.dtype == np.float32 and points.shape == (1000, 2)
    assert points.min() >= -5 and points.max() <= 5
    assert (labels == true_rule(points)).all()
    noisy_points, noisy = generate(1000, noise=0.08, seed=3)
    assert np.array_equal(noisy_points, points)
    assert int((noisy != true_rule(noisy_points)).sum()) == 80


def test_generator_is_reproducible_and_seed_dependent() -> None:
    a, la = generate(50, noise=0.1, seed=1)
    b, lb = generate(50, noise=0.1, seed=1)
    c, _ = generate(50, noise=0.1, seed=2)
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize(("n", "noise"), [(0, 0.0), (10, -0.1), (10, 1.5)])
def test_generator_rejects_bad_arguments(n: int, noise: float) -> None:
    with pytest.raises(ValueError):
        generate(n, noise=noise)


def test_save_then_load_round_trips_exactly(tmp_path: Path) -> None:
    points, labels = generate(200, noise=0.1, seed=5)
    path = save_csv(tmp_path / "sub" / "data.csv", points, labels)
    assert path.read_text().splitlines()[0] == ",".join(COLUMNS)
    ds = load_csv(path)
    assert np.array_equal(ds.points, points) and np.array_equal(ds.labels, labels)
    assert [p.name for p in path.parent.iterdir()] == ["data.csv"]  # no temp file left


def test_generated_dataset_hash_matches_the_saved_file(tmp_path: Path) -> None:
    ds = generated_dataset(100, noise=0.05, seed=9)
    saved = load_csv(save_csv(tmp_path / "g.csv", ds.points, ds.labels))
    assert saved.sha256 == ds.sha256
    assert ds.generated == {"n": 100, "noise": 0.05, "seed": 9}
    assert ds.describe()["rows"] == 100
