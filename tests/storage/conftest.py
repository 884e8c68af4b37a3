"""The storage tests' S3 API: moto's server behind a counting proxy (bench/_s3server.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench._s3server import S3, running_s3


@pytest.fixture(scope="session")
def s3() -> Iterator[S3]:
    """moto's S3 server on a free port for the session; ``AWS_*`` point at its proxy."""
    try:
        with running_s3() as server:
            yield server
    except FileNotFoundError as exc:  # not installed: a failure, never a silent skip
        pytest.fail(str(exc))


@pytest.fixture
def bucket(s3: S3) -> str:
    """A fresh empty bucket."""
    return s3.make_bucket()
