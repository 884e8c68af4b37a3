"""``xor-dnn experiment --publish REPO``: the lesson's architectures as models of one repository."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from training.experiment import ARCHITECTURES, run_experiment
from xor_dnn.cli import main
from xor_dnn.modelstore import HISTORY_FILE, METADATA_FILE, list_versions

FAST = ["--runs", "1", "--epochs", "2", "--n", "80", "--no-progress"]
EXPECTED = {"linear": [], "lesson": [6, 4], "default": [16, 16]}


def test_publish_writes_one_model_per_architecture_with_its_accuracy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "repo"
    out = tmp_path / "out"
    assert main(["experiment", "--out", str(out), *FAST, "--publish", str(repo)]) == 0
    printed = capsys.readouterr().out
    assert sorted(p.name for p in repo.iterdir()) == sorted(EXPECTED)
    rows = json.loads((out / "experiment.json").read_text())["rows"]
    clean = {r["architecture"]: r for r in rows if r["dataset"].startswith("clean")}
    for name, hidden in EXPECTED.items():
        assert list_versions(repo / name) == [1], name
        meta = json.loads((repo / name / "1" / METADATA_FILE).read_text())
        assert meta["model_name"] == name and meta["version"] == 1
        assert meta["config"]["hidden_units"] == hidden
        row = meta["experiment"]
        assert row == clean[row["architecture"]], name
        assert row["dataset"].startswith("clean")
        assert meta["test_accuracy"] == pytest.approx(row["published"], abs=1e-6)
        assert meta["history_file"] == HISTORY_FILE
        assert (repo / name / "1" / HISTORY_FILE).is_file()
        assert f"published model '{name}' version 1" in printed

    # Publishing again adds the next version of the model (one architecture, to be quick).
    linear = next(a for a in ARCHITECTURES if a.model_name == "linear")
    again = run_experiment(out, runs=1, epochs=2, n=80, architectures=(linear,), publish=str(repo))
    assert [(name, version) for name, version, _ in again.published] == [("linear", 2)]
    assert list_versions(repo / "linear") == [1, 2]
    assert list_versions(repo / "lesson") == [1]


def test_an_unwritable_repository_fails_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    started = time.monotonic()
    code = main(["experiment", "--out", str(tmp_path / "out"), *FAST, "--publish", str(blocker)])
    assert code == 1
    err = capsys.readouterr().err
    assert "xor-dnn experiment: failed:" in err and "a-file" in err, err
    assert not (tmp_path / "out" / "experiment.md").exists()
    assert time.monotonic() - started < 30
