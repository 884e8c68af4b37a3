"""``xor-dnn train / experiment / data`` end to end, including two trainings at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from training.data import load_csv, true_rule
from xor_dnn.cli import main
from xor_dnn.modelstore import SAVED_MODEL_FILE, list_versions

REPO = Path(__file__).resolve().parents[2]
FAST = ["--gen-n", "120", "--epochs", "2", "--no-progress"]


def run_cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [sys.executable, "-m", "xor_dnn", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=env,
    )


def test_help_does_not_import_tensorflow() -> None:
    code = (
        "import sys\n"
        "from xor_dnn.cli import build_parser\n"
        "build_parser()\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=60)


def test_data_writes_lesson_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "noisy.csv"
    assert main(["data", "--n", "50", "--noise", "0.1", "--seed", "3", "--out", str(out)]) == 0
    ds = load_csv(out)
    assert ds.rows == 50
    assert int((ds.labels != true_rule(ds.points)).sum()) == 5
    assert "wrote" in capsys.readouterr().out


def test_data_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "--n", "3", "--out", "-"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "x,y,class id" and len(lines) == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["data", "--n", "0", "--out", "-"], "--n must be in [1, 10000000]"),
        (["data", "--noise", "2", "--out", "-"], "--noise must be in [0.0, 1.0]"),
        (["train", "--hidden", "6,x"], "--hidden must be comma-separated positive integers"),
        (["train", "--dropout", "1"], "--dropout must be in [0.0, 0.95]"),
        (["train", "--epochs", "0"], "--epochs must be in [1, 100000]"),
        (["train", "--learning-rate", "abc"], "--learning-rate must be a float"),
        (["train", "--runs", "0"], "--runs must be in [1, 1000]"),
        (["train", "--validation-size", "0.9"], "--validation-size must be in [0.0, 0.5]"),
        (["train", "--swa-epochs", "-1"], "--swa-epochs must be in [0, 100000]"),
        (["train", "--gce-q", "2"], "--gce-q must be in [0.0, 1.0]"),
        (["train", "--activation", "sigmoid"], "--activation: invalid choice: 'sigmoid'"),
        (["train", "--learning-rate-schedule", "step"], "--learning-rate-schedule: invalid choice"),
    ],
)
def test_bad_options_exit_2_naming_the_option(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_train_bad_csv_exits_2_naming_row_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y,class id\n1,2,0\n1,oops,1\n")
    code = main(["train", "--data", str(bad), "--model-dir", str(tmp_path / "m"), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert f"{bad}: row 2 (line 3): column 'y': 'oops' is not a number" in err
    assert not (tmp_path / "m").exists()


def test_train_reports_runs_and_publishes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_dir = tmp_path / "xor"
    code = main(["train", "--model-dir", str(model_dir), "--runs", "2", "--hidden", "4", *FAST])
    assert code == 0
    out = capsys.readouterr().out
    assert "run 1/2 seed 0: test accuracy" in out and "run 2/2 seed 1" in out
    assert "publish a student distilled from the runs" in out  # the default
    assert "fit loss" in out and out.count("<- teacher") == 2
    assert "published: a student (seed 2) distilled from 2 run(s)" in out
    assert "test accuracy over 2 run(s): mean" in out
    assert f"published version 1: {model_dir / '1'}" in out
    meta = json.loads((model_dir / "1" / "metadata.json").read_text())
    assert meta["config"]["hidden_units"] == [4]
    assert meta["data"]["generated"] == {"n": 120, "noise": 0.0, "seed": 0}
    assert meta["selection"] == "distilled" and meta["config"]["ensemble"] is False
    assert meta["student"]["seed"] == 2
    assert meta["split"]["rows"] == {"fit": 90, "validation": 0, "test": 30}

    assert main(["train", "--model-dir", str(model_dir), "--runs", "2", "--hidden", "4",
                 "--no-distill", *FAST]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "publish one run" in out and "<- chosen (closest to the runs' majority vote)" in out
    meta = json.loads((model_dir / "2" / "metadata.json").read_text())
    assert meta["selection"] == "majority_vote" and meta["config"]["distill"] is False
    assert meta["student"] is None


def test_train_with_a_validation_cut_chooses_on_validation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_dir = tmp_path / "xor"
    args = ["train", "--model-dir", str(model_dir), "--runs", "2", "--hidden", "4"]
    assert main([*args, "--validation-size", "0.2", "--no-distill", *FAST]) == 0
    out = capsys.readouterr().out
    assert "(validation " in out and "<- chosen (best validation)" in out
    meta = json.loads((model_dir / "1" / "metadata.json").read_text())
    assert meta["config"]["validation_size"] == 0.2
    assert meta["split"]["validation_size"] == 0.2
    assert meta["split"]["rows"] == {"fit": 72, "validation": 18, "test": 30}
    assert meta["selection"] == "validation"


def test_train_publishes_the_ensemble_or_one_run_as_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_dir = tmp_path / "xor"
    args = ["train", "--model-dir", str(model_dir), "--runs", "2", "--hidden", "4", *FAST]
    assert main([*args, "--ensemble", "--swa-epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "publish the ensemble of the runs" in out and "swa epochs 2" in out
    assert out.count("<- in the ensemble") == 2 and "published: ensemble of 2 run(s)" in out
    meta = json.loads((model_dir / "1" / "metadata.json").read_text())
    assert (meta["config"]["ensemble"], meta["config"]["swa_epochs"]) == (True, 2)
    assert meta["selection"] == "ensemble" and meta["published_runs"] == [1, 2]

    assert main([*args, "--no-ensemble", "--no-distill", "--activation", "tanh",
                 "--learning-rate-schedule", "constant"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "<- chosen (closest to the runs' majority vote)" in out
    assert "hidden [4] tanh" in out and "(constant)" in out
    meta = json.loads((model_dir / "2" / "metadata.json").read_text())
    assert meta["config"]["ensemble"] is False and meta["selection"] == "majority_vote"
    config = meta["config"]
    assert (config["activation"], config["learning_rate_schedule"]) == ("tanh", "constant")

    assert main([*args, "--ensemble", "--distill"]) == 2
    assert "distill and ensemble exclude each other" in capsys.readouterr().err
    assert not (model_dir / "3").exists()


def test_lesson_publishes_one_run_of_the_lessons_network(tmp_path: Path) -> None:
    model_dir = tmp_path / "xor"
    assert main(["train", "--lesson", "--model-dir", str(model_dir), "--runs", "2", *FAST]) == 0
    meta = json.loads((model_dir / "1" / "metadata.json").read_text())
    assert meta["config"]["hidden_units"] == [6, 4]
    assert (meta["config"]["ensemble"], meta["config"]["swa_epochs"]) == (False, 0)
    assert (meta["config"]["activation"], meta["config"]["learning_rate_schedule"]) == (
        "relu",
        "constant",
    )
    assert len(meta["published_runs"]) == 1


def test_swa_epochs_beyond_the_epochs_exits_2_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_dir = tmp_path / "xor"
    assert main(["train", "--model-dir", str(model_dir), *FAST, "--swa-epochs", "3"]) == 2
    assert "swa_epochs must be in [0, epochs=2], got 3" in capsys.readouterr().err
    assert not model_dir.exists()


def test_progress_line_per_epoch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["train", "--model-dir", str(tmp_path / "m"), "--runs", "1", "--gen-n", "60"]
    assert main([*args, "--epochs", "3", "--progress"]) == 0
    err = capsys.readouterr().err
    assert "run 1/1 (seed 0)  epoch 1/3" in err and "epoch 3/3" in err


def test_experiment_writes_table_json_and_figure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "exp"
    args = ["experiment", "--out", str(out), "--runs", "1", "--epochs", "2", "--n", "80"]
    assert main([*args, "--no-progress"]) == 0
    table = (out / "experiment.md").read_text()
    assert table.count("| clean |") == 5 and table.count("| noisy (8% labels flipped) |") == 5
    assert (
        "no hidden layer (linear)" in table
        and "16,16 tanh + dropout 0.2, lr 0.1 cosine (default)" in table
    )
    rows = json.loads((out / "experiment.json").read_text())["rows"]
    assert len(rows) == 10 and all(len(r["test_accuracy_runs"]) == 1 for r in rows)
    assert (out / "experiment.png").read_bytes().startswith(b"\x89PNG")
    assert (
        "| dataset | architecture | mean | std | min | published model | noise ceiling |"
        in capsys.readouterr().out
    )


@pytest.mark.slow
def test_two_trainings_at_once_get_distinct_complete_versions(tmp_path: Path) -> None:
    model_dir = tmp_path / "xor"
    model_dir.mkdir()
    seen_incomplete: list[str] = []
    stop = threading.Event()

    def poll() -> None:
        # What a serving process does: every version the store lists must be whole.
        needed = [SAVED_MODEL_FILE, "variables", "metadata.json", "decision_surface.png"]
        while not stop.is_set():
            for version in list_versions(model_dir):
                if not all((model_dir / str(version) / n).exists() for n in needed):
                    seen_incomplete.append(str(version))
            time.sleep(0.002)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    cmd = [sys.executable, "-m", "xor_dnn", "train", "--model-dir", str(model_dir), "--runs", "1"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    procs = [
        subprocess.Popen(
            [*cmd, *FAST, "--seed", str(s)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for s in (0, 1)
    ]
    outputs = [p.communicate(timeout=240) for p in procs]
    stop.set()
    poller.join()
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert seen_incomplete == []
    assert list_versions(model_dir) == [1, 2]
    seeds = set()
    for version in (1, 2):
        meta = json.loads((model_dir / str(version) / "metadata.json").read_text())
        assert meta["version"] == version
        seeds.add(meta["config"]["seed"])
    assert seeds == {0, 1}
    assert not [p for p in model_dir.iterdir() if p.name.startswith(".tmp-")]
    published = sorted(
        line for out, _ in outputs for line in out.splitlines() if "published version" in line
    )
    assert len(published) == 2 and np.unique([line[-1] for line in published]).size == 2
