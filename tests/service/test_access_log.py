"""The access log's modes (``access_log``: errors, all, off), in-process.

Apart from test_api.py: each test builds its own app, and an app that stops unloads its
versions' gauges, which test_api's module-wide client would then read.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.config import Settings


def _access_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "service.access"]


@pytest.mark.parametrize(
    ("mode", "logged"),
    [("errors", ["422"]), ("all", ["200", "422"]), ("off", [])],
)
def test_access_log_modes(
    model_dir: Path, caplog: pytest.LogCaptureFixture, mode: str, logged: list[str]
) -> None:
    app = create_app(Settings(model_dir=model_dir, access_log=mode))  # type: ignore[arg-type]
    with TestClient(app) as c, caplog.at_level(logging.INFO, logger="service.access"):
        caplog.clear()
        ok = c.post(
            "/predict", json={"points": [{"x": 1, "y": -1}]}, headers={"X-Request-ID": "ok-1"}
        )
        bad = c.post(
            "/predict", json={"points": [{"x": "1", "y": -1}]}, headers={"X-Request-ID": "bad-1"}
        )
    assert (ok.status_code, bad.status_code) == (200, 422)
    lines = _access_lines(caplog)
    assert [str(r.status) for r in lines] == logged  # type: ignore[attr-defined]
    # Each line names the request, and the service's log filter stamps its request id.
    for r in lines:
        assert r.getMessage().startswith("POST /predict -> ")
    assert [r.request_id for r in lines] == [  # type: ignore[attr-defined]
        {"200": "ok-1", "422": "bad-1"}[status] for status in logged
    ]


def test_access_log_setting_is_validated() -> None:
    with pytest.raises(ValueError, match="access_log"):
        Settings(access_log="some")  # type: ignore[arg-type]
    assert Settings(access_log="ALL").access_log == "all"  # type: ignore[arg-type]
