"""A real ``python -m service --grpc-port N`` process shared by a test module, and the
helpers the gRPC tests share (channels, test certificates)."""

from __future__ import annotations

import subprocess  # nosec B404
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest

from bench._process import ServerProcess, free_port, start_server

QUADRANTS = np.array([[1.5, 2.0], [-2.0, 1.0], [-3.0, -1.5], [2.5, -3.5]], np.float32)
MAX_MESSAGE_BYTES = 64 * 1024


@dataclass
class GrpcProcess:
    process: ServerProcess
    grpc_port: int

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.target)


def start_grpc_server(model_dir: Path, log: Path, *args: str, wait: bool = True) -> GrpcProcess:
    port = free_port()
    server = start_server(model_dir, log, "--grpc-port", str(port), *args, wait=wait)
    return GrpcProcess(server, port)


@pytest.fixture(scope="module")
def served(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcProcess]:
    """One server for the module: versions 1 and 2, a small gRPC message limit, every call in
    the access log."""
    log = tmp_path_factory.mktemp("grpc") / "server.log"
    server = start_grpc_server(
        model_dir,
        log,
        "--grpc-max-message-bytes",
        str(MAX_MESSAGE_BYTES),
        "--access-log",
        "errors",
    )
    try:
        yield server
    finally:
        server.process.kill()


@pytest.fixture
def channel(served: GrpcProcess) -> Iterator[grpc.Channel]:
    with served.channel() as ch:
        yield ch


@dataclass(frozen=True)
class Certificates:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    # B603/B607: a fixed openssl command line on files this test created.
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)  # nosec


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A throwaway CA, a server certificate for 127.0.0.1/localhost and a client certificate,
    generated with the openssl command (valid one day)."""
    d = tmp_path_factory.mktemp("tls")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
             "-subj", "/CN=xor-dnn test CA", cwd=d)  # fmt: skip
    for name, san in (("server", "IP:127.0.0.1,DNS:localhost"), ("client", "DNS:client")):
        _openssl("req", "-new", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={name}", cwd=d)  # fmt: skip
        (d / f"{name}.ext").write_text(f"subjectAltName={san}\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "1", "-out", f"{name}.pem",
                 "-extfile", f"{name}.ext", cwd=d)  # fmt: skip
    return Certificates(
        d / "ca.pem", d / "server.pem", d / "server.key", d / "client.pem", d / "client.key"
    )
