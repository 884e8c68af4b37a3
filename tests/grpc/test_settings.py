"""gRPC and TLS settings: refused combinations name the settings; the CLI exits 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.config import Settings
from xor_dnn.cli import main


def test_defaults_keep_grpc_and_tls_off() -> None:
    s = Settings()
    assert s.grpc_port == 0 and s.grpc_max_message_bytes == 4 * 1024 * 1024
    assert s.tls_cert_file is None and s.tls_key_file is None and s.tls_client_ca_file is None


@pytest.mark.parametrize(
    ("fields", "text"),
    [
        ({"port": 9000, "grpc_port": 9000}, "is the HTTP port too"),
        ({"tls_key_file": "KEY"}, "give both or neither"),
        ({"tls_cert_file": "CERT"}, "give both or neither"),
        ({"tls_client_ca_file": "CA"}, "needs tls_cert_file"),
        ({"tls_cert_file": "missing.pem", "tls_key_file": "KEY"}, "tls_cert_file"),
        ({"grpc_max_message_bytes": 10}, "grpc_max_message_bytes"),
        ({"grpc_port": 70000}, "grpc_port"),
    ],
)
def test_refused(tmp_path: Path, fields: dict[str, object], text: str) -> None:
    pem = tmp_path / "file.pem"
    pem.write_text("not checked here: the servers read it")
    names = {"KEY": pem, "CERT": pem, "CA": pem}
    values = {k: names.get(v, v) if isinstance(v, str) else v for k, v in fields.items()}
    with pytest.raises(ValidationError, match=text):
        Settings(**values)


def test_cli_names_the_rule(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--port", "9000", "--grpc-port", "9000"]) == 2
    err = capsys.readouterr().err
    assert "xor-dnn serve: grpc_port: 9000 is the HTTP port too" in err
