"""Debian's ``prometheus`` and ``promtool`` for the deploy tests: found, or skipped with the
reason, unless ``XOR_DNN_REQUIRE_PROMETHEUS=1`` (set by ``.ci/run``) makes their absence a
failure; and a real Prometheus server on a free loopback port."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench._process import ServerProcess
from tests.deploy.manifests import ROOT

DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus-rules.yml"
RULE_TESTS = DEPLOY / "prometheus-rules.test.yml"
SCRAPE_CONFIG = DEPLOY / "prometheus.yml"
STARTUP_TIMEOUT_S = 60.0
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def tool(name: str) -> str:
    """The path of ``prometheus`` or ``promtool``; skips (or fails where required) without."""
    found = shutil.which(name)
    if found is None:
        reason = f"{name} not found: apt-get install -y prometheus"
        if os.environ.get("XOR_DNN_REQUIRE_PROMETHEUS") == "1":
            pytest.fail(f"{reason} (XOR_DNN_REQUIRE_PROMETHEUS=1 forbids skipping)")
        pytest.skip(reason)
    return found


def local_config(targets: dict[str, str], scrape_interval: str) -> dict[str, Any]:
    """The repo's scrape config with each job's targets replaced (job name -> host:port) and
    every interval set to ``scrape_interval``; the rules file is loaded from the repo."""
    config: dict[str, Any] = yaml.safe_load(SCRAPE_CONFIG.read_text())
    config["global"]["scrape_interval"] = scrape_interval
    config["global"]["evaluation_interval"] = scrape_interval
    config["rule_files"] = [str(SCRAPE_CONFIG.parent / f) for f in config["rule_files"]]
    for job in config["scrape_configs"]:
        job["scrape_interval"] = scrape_interval
        for group in job["static_configs"]:
            group["targets"] = [targets[job["job_name"]]]
    return config


class Prometheus:
    """A running Prometheus and its HTTP API."""

    def __init__(self, url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.url = url
        self.proc = proc
        self.log = log

    def get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with _NO_PROXY.open(f"{self.url}{path}{query}", timeout=10) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.get("/api/v1/query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        return result


@contextmanager
def run_prometheus(config: dict[str, Any], workdir: Path, port: int) -> Iterator[Prometheus]:
    """Start Debian's Prometheus on 127.0.0.1:``port`` with ``config``; wait until ready."""
    exe = tool("prometheus")
    config_file = workdir / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))
    log = workdir / "prometheus.log"
    argv = [
        exe,
        f"--config.file={config_file}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"prometheus exited {proc.returncode}:\n{log.read_text()}")
            try:
                with _NO_PROXY.open(f"{url}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"prometheus not ready after {STARTUP_TIMEOUT_S} s")
            time.sleep(0.2)
        yield Prometheus(url, proc, log)
    finally:
        ServerProcess(proc, port, log).stop(timeout=30)
