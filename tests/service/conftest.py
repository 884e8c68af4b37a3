"""Fixtures for the service tests: an in-process app over the session models, and real
``xor-dnn serve`` processes on free localhost ports."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.config import Settings

REPO = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
def client(model_dir: Path) -> Iterator[TestClient]:
    """The app with default settings over the session's two versions (read-only use)."""
    with TestClient(create_app(Settings(model_dir=model_dir))) as c:
        yield c


def copy_models(src: Path, dst: Path) -> Path:
    """A writable copy of a model folder, for tests that add or break versions."""
    shutil.copytree(src, dst)
    return dst


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class ServerProcess:
    """A real ``python -m service`` process; ``url`` is its base URL."""

    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 60.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)


def start_server(
    model_dir: Path,
    log_path: Path,
    *args: str,
    env: dict[str, str] | None = None,
    wait_ready: bool = True,
) -> ServerProcess:
    port = free_port()
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    # Settings come from flags here; stray XOR_DNN_* from the caller's shell must not leak in.
    for key in list(full_env):
        if key.startswith("XOR_DNN_") and key not in (env or {}):
            del full_env[key]
    cmd = [
        sys.executable, "-m", "service",
        "--model-dir", str(model_dir), "--port", str(port), "--poll-interval-s", "0.2",
        *args,
    ]  # fmt: skip
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=full_env, stdout=log, stderr=subprocess.STDOUT)
    server = ServerProcess(proc, f"http://127.0.0.1:{port}", log_path)
    if wait_ready:
        wait_until_ready(server)
    return server


def wait_until_ready(server: ServerProcess) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise AssertionError(f"server exited {server.proc.returncode}:\n{server.log()}")
        try:
            if httpx.get(server.url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.proc.kill()
    raise AssertionError(f"server not ready after {STARTUP_TIMEOUT_S} s:\n{server.log()}")


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[list[ServerProcess]]:
    """Collects started servers and makes sure none outlives its test."""
    started: list[ServerProcess] = []
    yield started
    for server in started:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait(timeout=30)
