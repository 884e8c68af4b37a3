"""``bench._process``: the server-process helper the tests, benchmarks and deploy checks share."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from bench._process import (
    ServerProcess,
    free_port,
    start_server,
    wait_until_ready,
    worker_pids,
)

pytestmark = pytest.mark.slow


def test_free_port_can_be_bound() -> None:
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_settings_come_from_flags_and_env_not_the_callers_shell(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Both would break the checks below if they reached the child.
    monkeypatch.setenv("XOR_DNN_MODEL_NAME", "leaked")
    monkeypatch.setenv("XOR_DNN_MAX_POINTS_PER_REQUEST", "1")
    server = start_server(
        model_dir, tmp_path / "server.log", "--max-batch-size", "8",
        env={"XOR_DNN_MODEL_NAME": "kept"},
    )  # fmt: skip
    try:
        assert server.url == f"http://127.0.0.1:{server.port}"
        assert httpx.get(f"{server.url}/readyz").status_code == 200
        assert httpx.get(f"{server.url}/models/kept").status_code == 200
        assert httpx.get(f"{server.url}/models/leaked").status_code == 404
        points = [{"x": 1.0, "y": -1.0}, {"x": 1.0, "y": 1.0}]
        r = httpx.post(f"{server.url}/predict", json={"points": points})
        assert r.status_code == 200, r.text
    finally:
        code = server.stop()
    assert code == 0, server.log()


def test_a_server_that_exits_raises_with_its_log(model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"(?s)service exited 2:.*--workers"):
        start_server(model_dir, tmp_path / "server.log", "--workers", "many")


def test_not_ready_in_time_kills_and_raises(tmp_path: Path) -> None:
    log = tmp_path / "sleeper.log"
    log.write_text("still starting\n")
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    server = ServerProcess(proc, free_port(), log)
    with pytest.raises(RuntimeError, match=r"(?s)not ready after 0.5 s:.*still starting"):
        wait_until_ready(server, 0.5)
    assert proc.poll() is not None


def test_stop_kills_a_process_that_ignores_sigterm(tmp_path: Path) -> None:
    code = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ignoring', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"ignoring\n"
    server = ServerProcess(proc, free_port(), tmp_path / "unused.log")
    with pytest.raises(subprocess.TimeoutExpired):
        server.terminate(timeout=0.5)
    assert server.stop(timeout=0.5) == -9


def _alive(pid: int) -> bool:
    # A zombie (exited, not yet reaped by init) counts as gone.
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := [p for p in pids if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


@pytest.mark.slow
def test_workers_exit_when_their_supervisor_is_killed(model_dir: Path, tmp_path: Path) -> None:
    server = start_server(model_dir, tmp_path / "server.log", "--workers", "2")
    try:
        workers = worker_pids(server.proc.pid)
        assert len(workers) == 2, workers
        os.kill(server.proc.pid, signal.SIGKILL)  # the supervisor only, as the OOM killer would
        server.proc.wait(timeout=30)
        assert _wait_gone(workers, 30) == [], server.log()[-3000:]
    finally:
        server.kill()


@pytest.mark.slow
def test_kill_reaps_the_workers_too(model_dir: Path, tmp_path: Path) -> None:
    server = start_server(model_dir, tmp_path / "server.log", "--workers", "2")
    workers = worker_pids(server.proc.pid)
    assert len(workers) == 2 and server.own_group
    server.kill()
    assert _wait_gone(workers, 5) == []
