"""Fixtures for the hardening suite: real ``python -m service`` processes on free 127.0.0.1
ports (the HTTP server's own behaviour is under test, so no in-process client), and a raw
socket client for requests httpx refuses to send."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench._process import ServerProcess, start_server

# Short so the slow-client checks stay fast; production defaults are 5 s and 10 s.
HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 1.5


@pytest.fixture(scope="session")
def hardened_server(
    model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """One shared server with default limits and short client timeouts (read-only use)."""
    log = tmp_path_factory.mktemp("hardened") / "server.log"
    server = start_server(
        model_dir, log,
        "--header-timeout-s", str(HEADER_TIMEOUT_S), "--body-timeout-s", str(BODY_TIMEOUT_S),
    )  # fmt: skip
    yield server
    if server.proc.poll() is None:
        assert server.terminate() == 0, server.log()


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float


def raw_request(
    url: str,
    payload: bytes,
    *,
    chunks: list[bytes] | None = None,
    pause_s: float = 0.0,
    timeout: float = 20.0,
) -> RawResponse | None:
    """Send bytes as they are (optionally in timed pieces) and read one response.

    Returns None when the server closed the connection without answering.
    """
    host, port = url.removeprefix("http://").split(":")
    started = time.perf_counter()
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        try:
            if chunks is None:
                sock.sendall(payload)
            else:
                for piece in chunks:
                    sock.sendall(piece)
                    time.sleep(pause_s)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer and close before we finish sending
        data = b""
        while True:
            try:
                part = sock.recv(65536)
            except ConnectionResetError:
                break
            if not part:
                break
            data += part
            head, sep, body = data.partition(b"\r\n\r\n")
            length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            if sep and length and len(body) >= int(length.group(1)):
                break
    seconds = time.perf_counter() - started
    if not data:
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawResponse(int(lines[0].split()[1]), headers, body, seconds)
