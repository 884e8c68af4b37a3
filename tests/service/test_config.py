"""Settings: defaults, env vars, validation messages, and flags over env in the CLI."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.cli import build_settings, flag_name, register
from service.config import Settings


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser.parse_args(["serve", *argv])


def test_defaults_match_the_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(__import__("os").environ):
        if key.startswith("XOR_DNN_"):
            monkeypatch.delenv(key)
    s = Settings()
    assert s.model_dir == "models/xor" and s.cache_dir is None
    assert (s.model_name, s.host, s.port, s.workers) == ("xor", "127.0.0.1", 8000, 1)
    assert s.max_batch_size == 1024 and s.max_points_per_request == 1024
    assert s.poll_interval == 1.0 and s.keep_versions == 3 and s.drain_timeout_s == 20
    remote = Settings(model_dir="s3://bucket/models/xor")
    assert remote.poll_interval == 10.0  # cost table in docs/storage.md
    assert Settings(model_dir="s3://b/x", poll_interval_s=1).poll_interval == 1.0
    assert s.cors_origins == [] and s.enable_docs and s.enable_metrics
    assert not s.train_if_missing and s.log_format == "text" and s.root_path == ""
    assert s.tf_threads == 1


def test_env_vars_use_the_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XOR_DNN_MAX_BATCH_SIZE", "64")
    monkeypatch.setenv("XOR_DNN_CORS_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("XOR_DNN_LOG_LEVEL", "WARNING")
    monkeypatch.setenv("XOR_DNN_ENABLE_DOCS", "false")
    s = Settings()
    assert s.max_batch_size == 64
    assert s.cors_origins == ["https://a.example", "https://b.example"]
    assert s.log_level == "warning" and s.enable_docs is False


@pytest.mark.parametrize(
    ("field", "value"),
    [("port", 70000), ("workers", 0), ("max_batch_size", 0), ("log_format", "xml"),
     ("root_path", "xor/"), ("poll_interval_s", 0), ("keep_versions", 0), ("tf_threads", -1)],
)  # fmt: skip
def test_invalid_values_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationError, match=field):
        Settings(**{field: value})


def test_flags_override_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XOR_DNN_PORT", "9000")
    monkeypatch.setenv("XOR_DNN_MAX_BATCH_WAIT_MS", "5")
    s = build_settings(parse(["--port", "9100", "--no-docs", "--train-if-missing"]))
    assert s.port == 9100  # flag wins
    assert s.max_batch_wait_ms == 5.0  # env still applies where no flag is given
    assert s.enable_docs is False and s.train_if_missing is True


def test_bad_flag_value_exits_2_naming_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse(["--max-batch-size", "0"])
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert "--max-batch-size" in err and "XOR_DNN_MAX_BATCH_SIZE" in err
    args = parse(["--admin-token", "tooshort-secret"])
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert "--admin-token" in err and "got (hidden)" in err and "tooshort" not in err


def test_inflight_cap_is_sized_from_the_queue_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XOR_DNN_MAX_INFLIGHT_REQUESTS", raising=False)
    monkeypatch.delenv("XOR_DNN_MAX_QUEUE_POINTS", raising=False)
    assert Settings().inflight_cap == 65536 // 8
    assert Settings(max_queue_points=64).inflight_cap == 64  # never below 64
    assert Settings(max_queue_points=4096, max_inflight_requests=10).inflight_cap == 10
    assert Settings(max_inflight_requests=0).inflight_cap == 0  # no cap
    monkeypatch.setenv("XOR_DNN_MAX_INFLIGHT_REQUESTS", "32")
    assert build_settings(parse([])).inflight_cap == 32
    assert build_settings(parse(["--max-inflight-requests", "16"])).inflight_cap == 16
    with pytest.raises(ValidationError, match="max_inflight_requests"):
        Settings(max_inflight_requests=-2)


TF_POOLS = """
import json, sys
import tensorflow as tf
from fastapi.testclient import TestClient
from service.app import create_app
from service.config import Settings
with TestClient(create_app(Settings(model_dir=sys.argv[1], tf_threads=int(sys.argv[2])))) as c:
    assert c.post("/predict", json={"points": [{"x": 1, "y": 1}]}).status_code == 200
    t = tf.config.threading
    print(json.dumps([t.get_intra_op_parallelism_threads(), t.get_inter_op_parallelism_threads()]))
"""


@pytest.mark.parametrize(("threads", "expected"), [(1, [1, 1]), (2, [2, 2]), (0, [0, 0])])
def test_tf_threads_sizes_tensorflows_pools_in_a_fresh_process(
    model_dir: Path, threads: int, expected: list[int]
) -> None:
    """Set before the first model loads (0 keeps TensorFlow's default, reported as 0)."""
    out = subprocess.run(
        [sys.executable, "-c", TF_POOLS, str(model_dir), str(threads)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == expected


def test_every_setting_is_in_the_documented_tables() -> None:
    root = Path(__file__).resolve().parents[2]
    for doc in (root / "README.md", root / "docs" / "service.md"):
        text = doc.read_text()
        missing = [f for f in Settings.model_fields if f"`XOR_DNN_{f.upper()}`" not in text]
        assert not missing, f"{doc.name} does not document {missing}"


def test_every_flag_is_generated_from_settings_and_documented() -> None:
    """A setting gets its flag by existing; a flag missing from the docs table fails here."""
    commands = argparse.ArgumentParser().add_subparsers()
    register(commands)
    help_text = commands.choices["serve"].format_help()
    flags = set(re.findall(r"(--[a-z-]+)", help_text)) - {"--help"}
    expected = {flag_name(f) for f in Settings.model_fields}
    assert expected <= flags
    table = (Path(__file__).resolve().parents[2] / "docs" / "service.md").read_text()
    undocumented = [f for f in sorted(expected) if f"`{f}" not in table]
    assert not undocumented, f"docs/service.md has no row for {undocumented}"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"model_repository": "m", "model_dir": "m/xor"}, "model_dir and model_repository"),
        ({"model_control": "explicit"}, "model_control: only with model_repository"),
        ({"max_loaded_models": 2}, "max_loaded_models: only with model_repository"),
        ({"model_repository": "m", "load_model": "a"}, "load_model: only with model_control"),
        ({"model_repository": "m", "model_control": "explicit", "load_model": "a,.x"},
         "'.x' is not a model name"),
        ({"model_repository": "m", "model_control": "explicit", "workers": 2},
         "model_control explicit: needs workers 1"),
        ({"admin_token": "short"}, "the token must be 16 to 4096 characters, got 5"),
        ({"max_loaded_models": -1, "model_repository": "m"}, "max_loaded_models"),
        ({"admin_rate_limit": 0}, "admin_rate_limit"),
    ],
)  # fmt: skip
def test_repository_settings_are_checked(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        Settings(**settings)


def test_the_admin_token_comes_from_a_file_and_reaches_workers_unmasked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.cli import _export_settings

    token_file = tmp_path / "token"
    token_file.write_text("  a-token-of-20-chars\n")
    s = Settings(model_repository="m", admin_token_file=token_file)
    assert s.admin_secret == b"a-token-of-20-chars" and s.admin_token is None
    token_file.write_text("short")
    with pytest.raises(ValidationError, match="admin_token_file: the token must be 16 to 4096"):
        Settings(admin_token_file=token_file)
    with pytest.raises(ValidationError, match="admin_token and admin_token_file: give one"):
        Settings(admin_token="x" * 16, admin_token_file=token_file)
    explicit = Settings(
        model_repository="m", model_control="explicit", load_model="a, b", admin_token="t" * 20
    )
    assert explicit.load_model == ["a", "b"] and Settings().admin_secret is None
    for name in Settings.model_fields:  # monkeypatch then restores every one after the test
        monkeypatch.setenv(f"XOR_DNN_{name.upper()}", "")
    _export_settings(explicit)
    assert os.environ["XOR_DNN_ADMIN_TOKEN"] == "t" * 20
    assert os.environ["XOR_DNN_LOAD_MODEL"] == "a,b"
