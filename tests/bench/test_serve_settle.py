"""bench.serve waits for every server to go idle before a run (a baseline's backlog must not
land on the next target)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import serve
from bench._resources import cpu_seconds
from bench.serve import Server, settle


def _server(tmp_path: Path, code: str) -> Server:
    proc = subprocess.Popen([sys.executable, "-c", code])
    return Server(proc, 0, tmp_path / "unused.log", name="x")


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for s in started:
        s.proc.kill()
        s.proc.wait()


def test_settle_waits_for_a_busy_server(tmp_path: Path, servers: list[Server]) -> None:
    # Busy for about 1.5 s of CPU, then idle (sleeping) until killed; it says when it starts.
    busy = tmp_path / "busy"
    code = (
        f"import pathlib, time\npathlib.Path({str(busy)!r}).touch()\nt = time.process_time()\n"
        "while time.process_time() - t < 1.5: pass\ntime.sleep(60)"
    )
    servers += [_server(tmp_path, "import time; time.sleep(60)"), _server(tmp_path, code)]
    while not busy.exists():
        assert servers[1].proc.poll() is None
        time.sleep(0.01)
    waited = settle(servers)
    # It returned because the busy one finished its work, not because it gave up; how long
    # that took in wall time depends on how busy the machine is.
    assert waited < serve.SETTLE_TIMEOUT_S, waited
    assert cpu_seconds(servers[1].proc.pid) >= 1.5
    assert settle(servers, window=0.2) < serve.SETTLE_TIMEOUT_S / 2  # both idle: it returns


def test_settle_gives_up_after_its_timeout(
    tmp_path: Path, servers: list[Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(serve, "SETTLE_TIMEOUT_S", 0.5)
    servers.append(_server(tmp_path, "while True: pass"))
    assert 0.4 < settle(servers, window=0.1) < 10.0
