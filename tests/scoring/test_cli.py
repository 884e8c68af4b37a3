"""``xor-dnn score`` as users and Kubernetes run it: exit codes, JSON summary, env defaults,
merge, signals. In-process through ``xor_dnn.cli.main`` where possible; real processes for
the Indexed-Job simulation and the kills."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from scoring.formats import Format, part_path
from scoring.progress import Progress
from tests.scoring.conftest import points_table, read_result, write_points
from xor_dnn.cli import main


def summary(capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    lines = capsys.readouterr().out.strip().splitlines()
    result: dict[str, object] = json.loads(lines[-1])
    return result


def test_score_prints_one_json_summary(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write_points(points_table(300), tmp_path / "in.csv", Format.CSV)
    code = main(
        [
            "score",
            "-i",
            str(src),
            "-o",
            str(tmp_path / "o.parquet"),
            "--model-dir",
            str(model_dir),
            "--version",
            "1",
        ]
    )
    assert code == 0
    s = summary(capsys)
    assert s["status"] == "ok" and s["rows_scored"] == 300 and s["model_version"] == 1
    assert s["output"] == str(tmp_path / "o.parquet")
    assert {"seconds", "rows_per_second", "rows_rejected", "startup_seconds"} <= set(s)


def test_env_defaults(
    model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    src = write_points(points_table(90), tmp_path / "in.jsonl", Format.JSONL)
    monkeypatch.setenv("XOR_DNN_MODEL_DIR", str(model_dir))
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "1")
    monkeypatch.setenv("XOR_DNN_NUM_SHARDS", "2")
    assert main(["score", "-i", str(src), "-o", str(tmp_path / "o.jsonl")]) == 0
    s = summary(capsys)
    assert (s["shard_index"], s["num_shards"], s["model_version"]) == (1, 2, 2)
    assert s["output"] == str(tmp_path / "o-part-00001-of-00002.jsonl")


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--x-col", "nope"], 1, "no column 'nope'"),
        (["--version", "7"], 1, "version 7 not found"),
        (["--strict"], 3, "row 3, column 'x': not a number"),
        (["--num-shards", "2", "--shard-index", "2"], 1, "--shard-index must be in [0, 1]"),
    ],
)
def test_failures_exit_non_zero_with_a_message(
    model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    code: int,
    message: str,
) -> None:
    src = tmp_path / "in.csv"
    src.write_text("x,y\n1,2\noops,3\n")
    out = tmp_path / "o.csv"
    assert (
        main(["score", "-i", str(src), "-o", str(out), "--model-dir", str(model_dir), *args])
        == code
    )
    s = summary(capsys)
    assert s["status"] == "error" and s["exit_code"] == code and message in str(s["error"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--chunk-size", "0"], "--chunk-size must be in [1, 4194304], got '0'"),
        (["--threshold", "2"], "--threshold must be in [0.0, 1.0], got '2'"),
        (["--format", "xls"], "--format: invalid choice: 'xls'"),
        (["--shard-index", "-1"], "--shard-index must be >= 0, got '-1'"),
        (["--version", "0"], "--version must be in [1, 1000000000], got '0'"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag_and_limit(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as err:
        main(["score", "-i", "a.csv", "-o", "b.csv", *args])
    assert err.value.code == 2
    assert message in capsys.readouterr().err


def test_merge_mode(model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_points(points_table(200), tmp_path / "in.parquet", Format.PARQUET)
    out = tmp_path / "o.csv"
    for k in range(3):
        assert (
            main(
                [
                    "score",
                    "-i",
                    str(src),
                    "-o",
                    str(out),
                    "--model-dir",
                    str(model_dir),
                    "--num-shards",
                    "3",
                    "--shard-index",
                    str(k),
                ]
            )
            == 0
        )
    capsys.readouterr()
    assert main(["score", "--merge", "-o", str(out)]) == 0
    s = summary(capsys)
    assert s["parts"] == 3 and s["rows"] == 200
    assert read_result(out, Format.CSV).column("id").to_pylist() == list(range(200))
    part_path(out, 1, 3).unlink()
    assert main(["score", "--merge", "-o", str(out)]) == 1
    assert "1 of 3 parts missing (shard 1)" in str(summary(capsys)["error"])


def test_progress_only_on_a_terminal() -> None:
    quiet = io.StringIO()
    Progress(4, stream=quiet).update(0.5, 1000, force=True)
    assert quiet.getvalue() == ""  # a StringIO is not a TTY
    shown = io.StringIO()
    bar = Progress(4, enabled=True, stream=shown)
    bar.start_file(1)
    bar.update(0.5, 1000, force=True)
    bar.close()
    line = shown.getvalue().rsplit("\r", 1)[-1]
    assert "37.5%" in line and "files 1/4" in line and "1.0k rows" in line and "rows/s" in line


def test_help_does_not_import_tensorflow() -> None:
    code = (
        "import sys\nfrom xor_dnn.cli import build_parser\n"
        "build_parser().parse_args(['score', '-o', 'x.csv'])\n"
        "assert 'tensorflow' not in sys.modules, 'TF imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def _ctrl_c_as_in_a_terminal() -> None:
    # A command started in the background by a shell without job control (CI runners, nohup,
    # `cmd &` in a script) inherits SIGINT ignored, and Python then keeps it ignored, as POSIX
    # asks. The job under test is the one a person runs in a terminal, where Ctrl-C is live.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    full = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "xor_dnn.cli", "score", *args],
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_ctrl_c_as_in_a_terminal,
    )


@pytest.mark.slow
def test_indexed_job_processes_union_equals_one_run(model_dir: Path, tmp_path: Path) -> None:
    src = write_points(points_table(5000, seed=9), tmp_path / "in.csv", Format.CSV)
    whole = tmp_path / "whole.csv"
    out = tmp_path / "parts" / "out.csv"
    env = {"XOR_DNN_MODEL_DIR": str(model_dir), "XOR_DNN_NUM_SHARDS": "3"}
    procs = [
        _cli("-i", str(src), "-o", str(out), env={**env, "JOB_COMPLETION_INDEX": str(k)})
        for k in range(3)
    ]
    procs.append(_cli("-i", str(src), "-o", str(whole), env={"XOR_DNN_MODEL_DIR": str(model_dir)}))
    for p in procs:
        stdout, stderr = p.communicate(timeout=240)
        assert p.returncode == 0, stderr
        assert json.loads(stdout.strip().splitlines()[-1])["status"] == "ok"
    merge = _cli("--merge", "-o", str(out))
    assert merge.wait(timeout=120) == 0
    assert out.read_bytes() == whole.read_bytes()


def _frozen_mid_run(proc: subprocess.Popen[str], out: Path, rows: int) -> bool:
    """Stop the job (SIGSTOP) as soon as its temporary output appears; True if it is then
    provably in the middle of its run: alive, nothing under the final name, and fewer than
    half of its rows written (what is left takes far longer than delivering a signal)."""
    deadline = time.monotonic() + 180
    while (tmp := next(out.parent.glob(f".{out.name}.tmp-*"), None)) is None:
        if proc.poll() is not None:
            assert proc.returncode == 0, proc.communicate()
            return False  # finished between two looks
        assert time.monotonic() < deadline, "no temporary output appeared"
        time.sleep(0.001)
    os.kill(proc.pid, signal.SIGSTOP)
    job = psutil.Process(proc.pid)
    stopped = (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP, psutil.STATUS_ZOMBIE)
    while (state := job.status()) not in stopped:
        time.sleep(0.001)
    if state == psutil.STATUS_ZOMBIE or out.exists():
        return False
    try:
        with tmp.open("rb") as fh:
            written = sum(block.count(b"\n") for block in iter(lambda: fh.read(1 << 20), b""))
    except FileNotFoundError:  # renamed into place just before the stop
        return False
    return written - 1 < rows // 2


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "code"), [(signal.SIGKILL, -9), (signal.SIGTERM, 143), (signal.SIGINT, 130)]
)
def test_kill_mid_run_leaves_no_output(
    model_dir: Path, tmp_path: Path, sig: signal.Signals, code: int
) -> None:
    out = tmp_path / "out" / "o.csv"
    # The job is frozen mid-run before the signal is sent, so how fast it runs on this
    # machine cannot decide the outcome; a job too quick to catch gets a larger input.
    for rows in (200_000, 1_000_000):
        src = write_points(points_table(rows), tmp_path / f"in-{rows}.parquet", Format.PARQUET)
        # PYTHONFAULTHANDLER: if the job ever hangs after the signal, SIGABRT prints its threads.
        proc = _cli(
            "-i", str(src), "-o", str(out), "--model-dir", str(model_dir), "--chunk-size", "50",
            env={"PYTHONFAULTHANDLER": "1"},
        )  # fmt: skip
        if _frozen_mid_run(proc, out, rows):
            break
        proc.kill()
        proc.communicate()
        shutil.rmtree(out.parent)
    else:
        pytest.fail("the job finished every time before it could be stopped mid-run")
    proc.send_signal(sig)  # pending while stopped, delivered on SIGCONT (SIGKILL at once)
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGCONT)
    try:
        _, stderr = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        _, stderr = proc.communicate(timeout=60)
        pytest.fail(f"no exit 60 s after {sig.name}; the job's threads:\n{stderr[-8000:]}")
    assert proc.returncode == code, stderr[-8000:]
    assert not out.exists() and not (out.parent / "o.rejects.csv").exists()
    if sig != signal.SIGKILL:  # a handled signal also removes the temporary files
        assert list(out.parent.iterdir()) == []


def test_dataset_through_the_cli_reports_files_rows_rejects_and_bytes(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "in").mkdir()
    for i in range(3):
        write_points(points_table(100, seed=i), tmp_path / "in" / f"p{i}.csv", Format.CSV)
    (tmp_path / "in" / "p1.csv").write_text("id,x,y,label\n1,abc,2,z\n")  # one bad row
    args = ["score", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out")]
    args += ["--model-dir", str(model_dir), "--output-format", "parquet", "--progress"]
    assert main(args) == 0
    captured = capsys.readouterr()
    s = json.loads(captured.out.strip().splitlines()[-1])
    size = sum(p.stat().st_size for p in (tmp_path / "in").iterdir())
    assert (s["files"], s["rows_scored"], s["rows_rejected"]) == (3, 200, 1)
    assert s["bytes_read"] == s["input_bytes"] == size
    assert s["manifest"] == str(tmp_path / "out" / "_xor_dnn_manifest.json")
    assert "files 3/3" in captured.err and "rows/s" in captured.err
    assert (tmp_path / "out" / "p1.rejects.parquet").exists()
    assert main([*args, "--resume"]) == 0
    s = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (s["files_skipped"], s["rows_scored"]) == (3, 0)
