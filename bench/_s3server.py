"""A real S3 API on 127.0.0.1 for the storage tests and ``bench.storage``: moto's server
behind a counting proxy.

moto's standalone server (its own venv: ``tests/storage/s3-server.txt``) runs as a real process
on a free port (:class:`MotoServer`). Clients reach it through :class:`CountingProxy`, which
forwards every request and records its kind (get/list/head/put/delete), conditional headers and
status: the server-side request count the polling tests and the benchmark report. Stopping the
proxy cuts the network path (connection refused, pooled connections reset) and keeps moto's
in-memory buckets; :meth:`MotoServer.kill` kills the server itself, and :meth:`S3.snapshot` /
:meth:`S3.restore` re-seed the new one started on the same port. Tests that sign requests
against an authenticating moto (:meth:`S3.enforce_auth`) or kill it use ``running_s3(direct=
True)``: the proxy rewrites the ``Host`` header a SigV4 signature covers.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from bench._process import ServerProcess, free_port, start_process

ROOT = Path(__file__).resolve().parents[1]
MOTO_ENV = "XOR_DNN_MOTO_SERVER"
"""Path of a ``moto_server`` executable; default ``.venv-s3/bin/moto_server`` in the repo."""


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


class MotoServer:
    """moto's standalone server as a real process on a fixed loopback port.

    :meth:`kill` SIGKILLs the process (the store dies, with every bucket it held in memory);
    :meth:`start` runs a new one on the same port (empty: re-seed it, e.g. with
    :meth:`S3.restore`).
    """

    def __init__(self, exe: Path, port: int | None = None) -> None:
        self.exe = exe
        self.port = port or free_port()
        self.log = Path(tempfile.mkstemp(prefix="moto-", suffix=".log")[1])
        self._process: ServerProcess | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.proc.pid if self._process is not None else None

    def start(self, timeout: float = 60.0) -> None:
        # A fresh log per life: a restart's log says why it did not come up.
        self._process = start_process(
            [str(self.exe), "-H", "127.0.0.1", "-p", str(self.port)],
            self.log,
            self.port,
            ready_path="/",
            name="moto_server",
            timeout=timeout,
        )

    def kill(self) -> None:
        """SIGKILL the server process and reap it: connections refused until :meth:`start`."""
        if self._process is not None:
            self._process.kill()
            self._process = None

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop(timeout=10)
            self._process = None


def _unsigned(service: str) -> dict[str, str]:
    """An ``Authorization`` header moto routes by (its credential scope names the service) and,
    while authentication is off, does not check: a request without one is anonymous, which
    the object ACLs refuse."""
    return {
        "Authorization": f"AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/{service}/"
        "aws4_request, SignedHeaders=host, Signature=0"
    }


def _request(
    port: int, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or _unsigned("s3"))
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


S3_USER_POLICY = (
    '{"Version": "2012-10-17", "Statement": '
    '[{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}'
)


@dataclass
class S3:
    """The running server: its proxy, its process, and helpers that talk to moto directly
    (unsigned and uncounted, so only while authentication is off): make buckets, list keys,
    snapshot and restore, turn IAM on."""

    proxy: CountingProxy
    moto: MotoServer

    @property
    def moto_port(self) -> int:
        return self.moto.port

    def make_bucket(self, name: str | None = None) -> str:
        bucket = name or f"b-{uuid.uuid4().hex[:12]}"
        status, _ = _request(self.moto_port, "PUT", f"/{bucket}")
        assert status == 200, status
        return bucket

    def keys(self, bucket: str) -> list[str]:
        """Every key in ``bucket`` (read straight from moto, not counted by the proxy)."""
        from xml.etree import ElementTree

        _, body = _request(self.moto_port, "GET", f"/{bucket}?list-type=2&max-keys=1000")
        root = ElementTree.fromstring(body)
        return sorted(el.text or "" for el in root.iter() if el.tag.endswith("Key"))

    def snapshot(self, bucket: str) -> dict[str, bytes]:
        """Every object of ``bucket``: what :meth:`restore` puts back after a restart."""
        objects = {}
        for key in self.keys(bucket):
            status, body = _request(self.moto_port, "GET", f"/{bucket}/{quote(key)}")
            assert status == 200, (key, status)
            objects[key] = body
        return objects

    def restore(self, bucket: str, objects: dict[str, bytes]) -> None:
        """Create ``bucket`` and put ``objects`` back (same bytes, so the same ETags)."""
        self.make_bucket(bucket)
        for key, body in objects.items():
            status, _ = _request(self.moto_port, "PUT", f"/{bucket}/{quote(key)}", body)
            assert status == 200, (key, status)

    def enforce_auth(self, user: str = "xor-dnn") -> tuple[str, str]:
        """Create an IAM user allowed ``s3:*`` and its access key, then make moto check every
        later request's signature and policy (``/moto-api/reset-auth 0``: no more requests
        without authentication). Returns ``(access_key_id, secret_access_key)``; make the
        buckets first (this helper's requests are unsigned)."""
        from xml.etree import ElementTree

        iam = {**_unsigned("iam"), "Content-Type": "application/x-www-form-urlencoded"}

        def call(**params: str) -> bytes:
            form = urlencode({**params, "Version": "2010-05-08"}).encode()
            status, body = _request(self.moto_port, "POST", "/", form, iam)
            assert status == 200, (params["Action"], status, body[:300])
            return body

        call(Action="CreateUser", UserName=user)
        call(
            Action="PutUserPolicy",
            UserName=user,
            PolicyName="s3-all",
            PolicyDocument=S3_USER_POLICY,
        )
        root = ElementTree.fromstring(call(Action="CreateAccessKey", UserName=user))
        found = {el.tag.rsplit("}", 1)[-1]: el.text or "" for el in root.iter()}
        status, _ = _request(self.moto_port, "POST", "/moto-api/reset-auth", b"0")
        assert status == 200, status
        return found["AccessKeyId"], found["SecretAccessKey"]


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
def running_s3(*, direct: bool = False) -> Iterator[S3]:
    """moto on a free port behind a :class:`CountingProxy`; ``AWS_*`` point at the proxy (at
    moto itself with ``direct``: signed requests, a server that is killed) for the duration
    (and are restored after), so every client in this process and its children uses it. The
    server is terminated at the end."""
    moto = MotoServer(moto_executable())
    saved = {k: os.environ.get(k) for k in S3_ENV}
    proxy = CountingProxy(moto.port)
    try:
        moto.start()
        proxy.start()
        for key in S3_ENV:
            os.environ.pop(key, None)
        os.environ.update(
            {
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_REGION": "us-east-1",
                "AWS_ENDPOINT_URL": moto.endpoint if direct else proxy.endpoint,
            }
        )
        yield S3(proxy, moto)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        proxy.stop()
        moto.stop()
        moto.log.unlink(missing_ok=True)
