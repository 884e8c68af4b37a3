"""Wrong credentials against an S3 API that checks them: moto with IAM authentication on.

moto accepts any key unless told otherwise; this module's own server gets an IAM user allowed
``s3:*``, then authenticates every request (``S3.enforce_auth``), so a wrong secret is refused
with ``SignatureDoesNotMatch`` and an unknown key with ``InvalidAccessKeyId``, as AWS does.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bench._s3server import running_s3
from service.app import create_app
from service.config import Settings
from tests.storage.test_serving_remote import copy_of, metric, wait_for
from xor_dnn.cli import main
from xor_dnn.modelstore import ModelRepository, publish_version

pytestmark = pytest.mark.slow

TINY = ["--runs", "1", "--epochs", "3", "--hidden", "8", "--gen-n", "200"]


@dataclass(frozen=True)
class AuthStore:
    uri: str
    key_id: str
    secret: str


@pytest.fixture(scope="module")
def auth_store(model_dir: Path) -> Iterator[AuthStore]:
    """A bucket on an authenticating moto holding version 1; ``AWS_*`` hold the right keys."""
    with running_s3(direct=True) as s3:  # the proxy rewrites Host, which SigV4 signs
        bucket = s3.make_bucket()
        key_id, secret = s3.enforce_auth()
        os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"] = key_id, secret
        uri = f"s3://{bucket}/models/xor"
        publish_version(uri, copy_of(model_dir / "1"))  # signed with the right keys
        yield AuthStore(uri, key_id, secret)


def score(uri: str, tmp_path: Path) -> tuple[int, Path]:
    """``xor-dnn score`` of two points with the model at ``uri``: (exit code, output path)."""
    src, out = tmp_path / "points.csv", tmp_path / "scored.csv"
    src.write_text("x,y\n1,1\n1,-1\n")
    return main(["score", "-i", str(src), "-o", str(out), "--model-dir", uri]), out


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    return err


def test_the_right_keys_read_and_write(
    auth_store: AuthStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The control: with these keys the same commands succeed, so the failures below come
    # from the credentials and nothing else.
    assert ModelRepository(auth_store.uri).list_versions() == [1]
    code, out = score(auth_store.uri, tmp_path)
    assert code == 0, capsys.readouterr().err
    assert len(out.read_text().splitlines()) == 3


def test_a_wrong_secret_fails_train_and_score_with_one_line(
    auth_store: AuthStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-" + auth_store.secret)
    assert main(["train", "--model-dir", auth_store.uri, *TINY]) != 0
    err = one_line_error(capsys)
    assert err.startswith(f"xor-dnn train: failed: {auth_store.uri}")
    assert "access denied (SignatureDoesNotMatch)" in err and "check the credentials" in err

    code, out = score(auth_store.uri, tmp_path)
    assert code != 0
    err = one_line_error(capsys)
    assert auth_store.uri in err and "SignatureDoesNotMatch" in err
    assert not out.exists()

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", auth_store.secret)
    assert ModelRepository(auth_store.uri).list_versions() == [1]  # nothing was published


def test_an_unknown_key_fails_score_with_one_line(
    auth_store: AuthStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIA" + "X" * 16)
    code, out = score(auth_store.uri, tmp_path)
    assert code != 0 and not out.exists()
    err = one_line_error(capsys)
    assert auth_store.uri in err and "access denied (InvalidAccessKeyId)" in err


def test_a_wrong_secret_keeps_serve_unready_with_the_cause(
    auth_store: AuthStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-" + auth_store.secret)
    settings = Settings(
        model_dir=auth_store.uri,
        cache_dir=tmp_path / "cache",
        poll_interval_s=0.2,
        log_level="warning",
    )
    with TestClient(create_app(settings)) as client:
        errors = metric(client, "xor_dnn_store_requests_total", outcome="error")
        # several polls refused, and the service still unready (never a crash, never ready)
        wait_for(
            lambda: metric(client, "xor_dnn_store_requests_total", outcome="error") >= errors + 2,
            60,
            "two more refused polls",
        )
        response = client.get("/readyz")
        assert response.status_code == 503
        message = response.json()["error"]["message"]
        assert auth_store.uri in message and "access denied (SignatureDoesNotMatch)" in message
        assert client.get("/healthz").status_code == 200
        assert client.post("/predict", json={"points": [{"x": 1, "y": 1}]}).status_code == 503
