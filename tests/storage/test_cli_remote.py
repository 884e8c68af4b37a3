"""``xor-dnn train`` and ``score`` with ``--model-dir s3://...`` against a real S3 API."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench._process import free_port
from bench._s3server import S3
from xor_dnn.cli import main
from xor_dnn.modelstore import ModelRepository

pytestmark = pytest.mark.slow

TINY = ["--runs", "1", "--epochs", "3", "--hidden", "8", "--gen-n", "200"]


def test_train_publishes_to_the_bucket_and_nothing_local_then_score_reads_it(
    s3: S3,
    bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    uri = f"s3://{bucket}/models/xor"
    assert main(["train", "--model-dir", uri, *TINY]) == 0
    assert f"published version 1: {uri}/1" in capsys.readouterr().out
    assert list(work.iterdir()) == []  # nothing written locally
    keys = s3.keys(bucket)
    assert {"models/xor/versions.json", "models/xor/1/manifest.json"} <= set(keys)
    assert "models/xor/1/saved_model.pb" in keys
    assert ModelRepository(uri).list_versions() == [1]

    src = tmp_path / "points.csv"
    src.write_text("x,y\n1,1\n1,-1\n-1,-1\n")
    out = tmp_path / "scored.csv"
    assert main(["score", "-i", str(src), "-o", str(out), "--model-dir", uri]) == 0
    assert len(out.read_text().splitlines()) == 4


def test_missing_bucket_is_one_line_naming_the_uri(
    s3: S3, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = "s3://no-such-bucket-cli/models/xor"
    assert main(["train", "--model-dir", uri, *TINY]) != 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert uri in err and "NoSuchBucket" in err

    src = tmp_path / "points.csv"
    src.write_text("x,y\n1,1\n")
    code = main(["score", "-i", str(src), "-o", str(tmp_path / "o.csv"), "--model-dir", uri])
    assert code != 0
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and uri in err and "NoSuchBucket" in err
    assert not (tmp_path / "o.csv").exists()


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m xor_dnn ARGS`` as a new process, without the suite's TensorFlow quieting."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run(
        [sys.executable, "-m", "xor_dnn", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_installed_command_prints_only_the_one_line(s3: S3, tmp_path: Path) -> None:
    # New processes, as a user runs them: stderr holds the one line and nothing else (nothing
    # TensorFlow prints if it were imported before the check; the in-process tests cannot see
    # that).
    uri = "s3://no-such-bucket-proc/models/xor"
    done = run_cli("train", "--model-dir", uri, *TINY, cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"xor-dnn train: failed: {uri}: bucket 'no-such-bucket-proc' does not exist (NoSuchBucket)"
    ]
    (tmp_path / "points.csv").write_text("x,y\n1,1\n")
    done = run_cli("score", "-i", "points.csv", "-o", "o.csv", "--model-dir", uri, cwd=tmp_path)
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"xor-dnn score: error: {uri}") and "NoSuchBucket" in line


def test_unreachable_endpoint_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()  # nobody listens there
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    assert os.environ["AWS_ENDPOINT_URL"].endswith(str(port))
    assert main(["train", "--model-dir", "s3://bucket/xor", *TINY]) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("xor-dnn train: failed: s3://bucket/xor")
    assert err.count("\n") == 0 and "Traceback" not in err
