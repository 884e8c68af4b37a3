"""bench.serve waits for every server to go idle before a run (a baseline's backlog must not
land on the next target)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import serve
from bench.serve import Server, settle


def _server(tmp_path: Path, code: str) -> Server:
    proc = subprocess.Popen([sys.executable, "-c", code])
    return Server("x", 0, proc, tmp_path / "unused.log", "/")


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for s in started:
        s.proc.kill()
        s.proc.wait()


def test_settle_waits_for_a_busy_server(tmp_path: Path, servers: list[Server]) -> None:
    # Busy for about 1.5 s of CPU, then idle (sleeping) until killed.
    code = (
        "import time\nt = time.process_time()\n"
        "while time.process_time() - t < 1.5: pass\ntime.sleep(60)"
    )
    servers += [_server(tmp_path, "import time; time.sleep(60)"), _server(tmp_path, code)]
    waited = settle(servers)
    assert 1.0 < waited < 10.0, waited
    assert settle(servers) < 1.0  # now both are idle: one window


def test_settle_gives_up_after_its_timeout(
    tmp_path: Path, servers: list[Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(serve, "SETTLE_TIMEOUT_S", 0.5)
    servers.append(_server(tmp_path, "while True: pass"))
    assert 0.4 < settle(servers, window=0.1) < 2.0
