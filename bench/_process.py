"""Run ``python -m service`` (or any HTTP server, e.g. a benchmark's baseline app) as a child
process on a free loopback port and wait until its readiness path answers: the one
server-process helper of the test suite, the benchmarks and the deploy checks (the service
never starts itself this way, so it lives outside the runtime packages).

Usage::

    server = start_server(Path("models/xor"), Path("server.log"), "--workers", "2")
    try:
        httpx.post(f"{server.url}/predict", json={"points": [{"x": 1, "y": -1}]})
    finally:
        assert server.stop() == 0, server.log()

The readiness probe ignores ``*_proxy`` variables: the server is always on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess  # nosec B404
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil

HOST = "127.0.0.1"
STARTUP_TIMEOUT_S = 120.0
LOG_TAIL_CHARS = 3000
# The checkout holding the ``service`` package: the child imports this very copy of it.
_PACKAGE_PARENT = Path(__file__).resolve().parents[1]
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    """A TCP port nobody listens on right now (the kernel's pick for port 0)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class ServerProcess:
    """A real server process; its stdout and stderr go to ``log_path``."""

    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    own_group: bool = False
    """True when the process leads its own process group (:func:`start_process` starts it
    so): :meth:`kill` then kills the whole group, ``--workers N`` children included, which a
    SIGKILL of the supervisor alone would leave running (and holding the port)."""
    ready_path: str = "/readyz"
    """Answers 200 once the server is ready (:func:`wait_until_ready`)."""
    name: str = "service"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM (a graceful drain) and wait for the exit code; raises
        ``subprocess.TimeoutExpired`` if the process outlives ``timeout``."""
        self.proc.send_signal(signal.SIGTERM)  # a no-op once the process has exited
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout: float = 60.0) -> int:
        """:meth:`terminate`, then SIGKILL (group too) if the drain outlasts ``timeout``."""
        try:
            return self.terminate(timeout)
        except subprocess.TimeoutExpired:
            self._kill_group()
            self.proc.kill()
        return self.proc.wait(timeout=30)

    def kill(self) -> None:
        """SIGKILL and reap, if still running, with its workers (cleanup after a test or
        benchmark)."""
        self._kill_group()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def _kill_group(self) -> None:
        if self.own_group:
            # Also after the leader exited: its workers may still be alive in the group.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)


def start_server(
    model_dir: Path | str,
    log_path: Path,
    *args: str,
    env: dict[str, str] | None = None,
    wait: bool = True,
    timeout: float = STARTUP_TIMEOUT_S,
    source_flag: str = "--model-dir",
) -> ServerProcess:
    """Start ``python -m service --model-dir MODEL_DIR --port <free> --poll-interval-s 0.2
    ARGS...``; with ``wait``, return once ``/readyz`` answers 200. ``source_flag``
    ``--model-repository`` serves ``model_dir`` as a repository of models instead.

    Settings come from the flags: ``XOR_DNN_*`` variables inherited from the caller's shell are
    dropped, except those given in ``env`` (which is merged over the inherited environment).
    """
    port = free_port()
    extra = env or {}
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("XOR_DNN_") or k in extra}
    child_env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    child_env.update(extra)
    cmd = [
        sys.executable, "-m", "service",
        source_flag, _absolute(model_dir), "--port", str(port),
        "--poll-interval-s", "0.2", *args,
    ]  # fmt: skip
    return start_process(cmd, log_path, port, env=child_env, wait=wait, timeout=timeout)


def start_process(
    argv: list[str],
    log_path: Path,
    port: int,
    *,
    ready_path: str = "/readyz",
    name: str = "service",
    env: dict[str, str] | None = None,
    wait: bool = True,
    timeout: float = STARTUP_TIMEOUT_S,
    cwd: Path | None = None,
) -> ServerProcess:
    """Start ``argv`` (a server that will listen on ``port``) in ``cwd`` (default: the
    checkout holding the ``service`` package), in its own process group, with TensorFlow's
    log quieted; with ``wait``, return once ``ready_path`` answers 200."""
    child_env = dict(os.environ if env is None else env)
    child_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with log_path.open("wb") as log:
        # B404/B603: subprocess only starts servers of this checkout (sys.executable plus the
        # caller's flags) from an argv list: no shell, nothing parsed.
        proc = subprocess.Popen(  # nosec B603
            argv,
            cwd=cwd or _PACKAGE_PARENT,
            env=child_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: kill() reaches its workers
        )
    server = ServerProcess(proc, port, log_path, own_group=True, ready_path=ready_path, name=name)
    if wait:
        wait_until_ready(server, timeout)
    return server


def _absolute(model_dir: Path | str) -> str:
    # A folder is made absolute (the child runs elsewhere); an s3:// or gs:// URI is kept.
    from xor_dnn.storage import is_remote

    return str(model_dir) if is_remote(model_dir) else str(Path(model_dir).absolute())


def wait_until_ready(server: ServerProcess, timeout: float = STARTUP_TIMEOUT_S) -> None:
    """Poll the server's ``ready_path`` until it answers 200. Raises ``RuntimeError`` with the
    log's tail if the process exits first, or kills it and raises if it is not ready within
    ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(
                f"{server.name} exited {server.proc.returncode}:\n{server.log()[-LOG_TAIL_CHARS:]}"
            )
        if _ready(server.url + server.ready_path):
            return
        time.sleep(0.2)
    server.kill()
    raise RuntimeError(
        f"{server.name} not ready after {timeout} s:\n{server.log()[-LOG_TAIL_CHARS:]}"
    )


def _ready(url: str) -> bool:
    try:
        with _NO_PROXY.open(url, timeout=2) as response:
            return bool(response.status == 200)
    except (OSError, http.client.HTTPException):  # refused, reset, 503 (HTTPError), timeout
        return False


def worker_pids(pid: int) -> list[int]:
    """The worker processes of a ``--workers N`` supervisor: its children, not the resource
    tracker multiprocessing also starts."""
    found: list[int] = []
    for child in psutil.Process(pid).children():
        with contextlib.suppress(psutil.Error):  # gone between the listing and the look
            if not any("resource_tracker" in arg for arg in child.cmdline()):
                found.append(child.pid)
    return found
