"""Property-based fuzzing of every route in the service's own OpenAPI schema (schemathesis)
with every check: no 5xx, every response conforms to the schema (status code, content type,
headers, body), schema-valid requests are accepted and invalid ones refused, ``Allow`` on 405.
The one documented exception is in ``schemathesis.toml`` next to this file.

Runs the ``schemathesis`` CLI against one real server (its pytest plugin does not support
pytest 9 yet). Examples per operation are bounded (``XOR_DNN_FUZZ_EXAMPLES``, default 25,
with a fixed seed), so the run takes about 20 s.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from bench._process import ServerProcess

EXAMPLES = os.environ.get("XOR_DNN_FUZZ_EXAMPLES", "25")
CONFIG = Path(__file__).with_name("schemathesis.toml")


def _cli() -> str:
    found = Path(sys.executable).with_name("schemathesis")
    if found.exists():
        return str(found)
    return shutil.which("schemathesis") or pytest.skip("schemathesis is not installed")


def test_fuzz_every_operation(hardened_server: ServerProcess, tmp_path: Path) -> None:
    cmd = [
        _cli(), "--config-file", str(CONFIG), "run", f"{hardened_server.url}/openapi.json",
        "--checks", "all",
        "--max-examples", EXAMPLES, "--seed", "1", "--no-color",
        "--report", "junit", "--report-dir", str(tmp_path),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    selected = re.search(r"Operations:\s+(\d+) selected / (\d+) total", output)
    assert selected and selected.group(1) == selected.group(2), output[-3000:]  # every route
    assert int(selected.group(1)) >= 15, selected.group(0)
    assert httpx.get(f"{hardened_server.url}/readyz").status_code == 200
