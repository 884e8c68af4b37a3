"""A real S3 API on 127.0.0.1 for the storage tests and ``bench.storage``: moto's server
behind a counting proxy.

moto's standalone server (its own venv: ``tests/storage/s3-server.txt``) runs on a free port.
Clients reach it through :class:`CountingProxy`, which forwards every request and records its
kind (get/list/head/put/delete), conditional headers and status: the server-side request
count the polling tests and the benchmark report. Stopping the proxy makes the store
unreachable (connection refused, pooled connections reset) without losing moto's in-memory
buckets, which a killed moto would.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from bench._process import ServerProcess, free_port

ROOT = Path(__file__).resolve().parents[1]
MOTO_ENV = "XOR_DNN_MOTO_SERVER"
"""Path of a ``moto_server`` executable; default ``.venv-s3/bin/moto_server`` in the repo."""


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto_server exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/")
            conn.getresponse().read()
            conn.close()
            return
        except OSError:
            time.sleep(0.1)  # polling a condition (the port answers), not a timing guess
    raise RuntimeError(f"moto_server did not answer on port {port} within {timeout} s")


@dataclass(frozen=True)
class Seen:
    """One request the proxy forwarded."""

    method: str
    kind: str
    key: str
    status: int
    if_none_match: str | None
    if_match: str | None


def _kind(method: str, path: str, query: str) -> tuple[str, str]:
    parts = path.lstrip("/").split("/", 1)
    key = parts[1] if len(parts) > 1 else ""
    if method == "GET" and (not key or "list-type" in parse_qs(query)):
        return "list", key
    return {"GET": "get", "HEAD": "head", "PUT": "put", "DELETE": "delete"}.get(
        method, method.lower()
    ), key


class CountingProxy:
    """An HTTP proxy in front of moto that records each request; :meth:`stop`/:meth:`start`."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._open: set[socket.socket] = set()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return None

            def setup(self) -> None:
                super().setup()
                with proxy._lock:
                    proxy._open.add(self.connection)

            def finish(self) -> None:
                with proxy._lock:
                    proxy._open.discard(self.connection)
                super().finish()

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                headers["Host"] = f"127.0.0.1:{proxy.upstream_port}"
                conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=30)
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                conn.close()
                parts = urlsplit(self.path)
                kind, key = _kind(self.command, parts.path, parts.query)
                with proxy._lock:
                    proxy.seen.append(
                        Seen(
                            self.command,
                            kind,
                            key,
                            response.status,
                            self.headers.get("If-None-Match"),
                            self.headers.get("If-Match"),
                        )
                    )
                self.send_response(response.status)
                for name, value in response.getheaders():
                    if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(name, value)
                # A HEAD answer has no body but the object's length (clients read sizes
                # from it), so the upstream's header is passed on as it is.
                sent = response.getheader("Content-Length") or str(len(data))
                self.send_header(
                    "Content-Length", sent if self.command == "HEAD" else str(len(data))
                )
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Close the port and every open connection: clients get connection refused (or a
        reset on a pooled keep-alive connection) until :meth:`start`."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:
            conns, self._open = list(self._open), set()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def mark(self) -> int:
        with self._lock:
            return len(self.seen)

    def since(self, mark: int) -> list[Seen]:
        with self._lock:
            return list(self.seen[mark:])


@dataclass
class S3:
    """The running server: its proxy, and a helper to make buckets."""

    proxy: CountingProxy
    moto_port: int

    def make_bucket(self, name: str | None = None) -> str:
        bucket = name or f"b-{uuid.uuid4().hex[:12]}"
        conn = http.client.HTTPConnection("127.0.0.1", self.moto_port, timeout=30)
        conn.request("PUT", f"/{bucket}", body=b"")
        response = conn.getresponse()
        response.read()
        conn.close()
        assert response.status == 200, response.status
        return bucket

    def keys(self, bucket: str) -> list[str]:
        """Every key in ``bucket`` (read straight from moto, not counted by the proxy)."""
        from xml.etree import ElementTree

        conn = http.client.HTTPConnection("127.0.0.1", self.moto_port, timeout=30)
        conn.request("GET", f"/{bucket}?list-type=2&max-keys=1000")
        body = conn.getresponse().read()
        conn.close()
        root = ElementTree.fromstring(body)
        return sorted(el.text or "" for el in root.iter() if el.tag.endswith("Key"))


def moto_executable() -> Path:
    """The ``moto_server`` to run: ``$XOR_DNN_MOTO_SERVER`` or ``.venv-s3/bin/moto_server``."""
    exe = Path(os.environ.get(MOTO_ENV) or ROOT / ".venv-s3" / "bin" / "moto_server")
    if not exe.exists():
        raise FileNotFoundError(
            f"no S3 test server at {exe}: python3 -m venv .venv-s3 && "
            ".venv-s3/bin/pip install -r tests/storage/s3-server.txt (or set XOR_DNN_MOTO_SERVER)"
        )
    return exe


S3_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_SESSION_TOKEN",
)


@contextlib.contextmanager
def running_s3() -> Iterator[S3]:
    """moto on a free port behind a :class:`CountingProxy`; ``AWS_*`` point at the proxy for
    the duration (and are restored after), so every client in this process and its children
    uses it. The server is terminated at the end."""
    exe = moto_executable()
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="moto-", suffix=".log")[1])
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT
        )
    server = ServerProcess(proc, port, log)
    saved = {k: os.environ.get(k) for k in S3_ENV}
    proxy = CountingProxy(port)
    try:
        _wait_listening(port, proc)
        proxy.start()
        for key in S3_ENV:
            os.environ.pop(key, None)
        os.environ.update(
            {
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_REGION": "us-east-1",
                "AWS_ENDPOINT_URL": proxy.endpoint,
            }
        )
        yield S3(proxy, port)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        proxy.stop()
        server.stop(timeout=10)
        log.unlink(missing_ok=True)
