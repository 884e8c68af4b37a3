"""The storage layer's contract, the same for a local folder and a real S3 API (moto)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from bench._s3server import S3
from xor_dnn.storage import (
    CREDENTIALS_DIR_ENV,
    ObjectNotFound,
    PreconditionFailed,
    StorageError,
    Store,
    atomic_write,
    atomic_writer,
    is_remote,
    name_of,
    open_store,
)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "local":
        return open_store(tmp_path / "repo")
    s3: S3 = request.getfixturevalue("s3")
    return open_store(f"s3://{s3.make_bucket()}/models/xor")


def test_read_write_list(store: Store) -> None:
    store.write("1/a.bin", b"one")
    store.write("1/sub/b.bin", b"two")
    store.write("top.json", b"{}")
    assert store.read("1/a.bin") == b"one"
    assert store.list() == ["1/a.bin", "1/sub/b.bin", "top.json"]
    assert store.list("1/") == ["1/a.bin", "1/sub/b.bin"]
    with pytest.raises(ObjectNotFound) as info:
        store.read("missing.json")
    assert info.value.uri.endswith("/missing.json")
    assert not info.value.bucket_missing


def test_create_only_write_refuses_an_existing_object(store: Store) -> None:
    store.write("1/.claim", b"", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        store.write("1/.claim", b"again", if_none_match=True)
    assert store.read("1/.claim") == b""


def test_compare_and_swap_write(store: Store) -> None:
    first = store.write("versions.json", b"v1", if_none_match=True)
    second = store.write("versions.json", b"v2", if_match=first)
    assert second != first
    with pytest.raises(PreconditionFailed):  # a writer still holding the first ETag loses
        store.write("versions.json", b"stale", if_match=first)
    assert store.read("versions.json") == b"v2"


def test_conditional_read(store: Store) -> None:
    etag = store.write("versions.json", b"index")
    body, same = store.read_if_changed("versions.json", None)
    assert body == b"index"
    assert store.read_if_changed("versions.json", same) == (None, same)
    store.write("versions.json", b"index 2")
    body, new = store.read_if_changed("versions.json", same)
    assert body == b"index 2" and new != same
    assert etag  # every backend returns an ETag for a write


def test_observer_counts_every_request(tmp_path: Path, s3: S3) -> None:
    seen: list[tuple[str, str, int]] = []
    store = open_store(f"s3://{s3.make_bucket()}/m", lambda *a: seen.append(a))
    etag = store.write("k", b"12345")
    store.read_if_changed("k", None)
    store.read_if_changed("k", etag)
    with pytest.raises(ObjectNotFound):
        store.read("nope")
    store.list()
    assert seen == [
        ("put", "ok", 0),
        ("get", "ok", 5),
        ("get", "not_modified", 0),
        ("get", "not_found", 0),
        ("list", "ok", 0),
    ]


def test_the_s3_server_sees_conditional_headers_and_answers_304(s3: S3) -> None:
    """What the client sends, counted server-side: If-None-Match on create, If-Match on
    swap, If-None-Match on the poll; and moto honours them (412 and 304)."""
    bucket = s3.make_bucket()
    store = open_store(f"s3://{bucket}/m")
    mark = s3.proxy.mark()
    etag = store.write("versions.json", b"a", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        store.write("versions.json", b"b", if_none_match=True)
    store.write("versions.json", b"c", if_match=etag)  # stale ETag: refused below
    with pytest.raises(PreconditionFailed):
        store.write("versions.json", b"d", if_match=etag)
    _, current = store.read_if_changed("versions.json", None)
    store.read_if_changed("versions.json", current)
    seen = [(r.kind, r.status, r.if_none_match, r.if_match) for r in s3.proxy.since(mark)]
    assert seen == [
        ("put", 200, "*", None),
        ("put", 412, "*", None),
        ("put", 200, None, etag),
        ("put", 412, None, etag),
        ("get", 200, None, None),
        ("get", 304, current, None),
    ]


def test_missing_bucket_is_one_clear_error(s3: S3) -> None:
    store = open_store("s3://no-such-bucket-xyz/models/xor")
    with pytest.raises(ObjectNotFound) as info:
        store.check()
    message = str(info.value)
    assert info.value.bucket_missing
    assert message.startswith("s3://no-such-bucket-xyz/models/xor")
    assert "no-such-bucket-xyz" in message and "\n" not in message


def test_unreachable_store_is_a_storage_error(s3: S3) -> None:
    store = open_store(f"s3://{s3.make_bucket()}/m")
    s3.proxy.stop()
    try:
        with pytest.raises(StorageError) as info:
            store.read("versions.json")
    finally:
        s3.proxy.start()
    assert not isinstance(info.value, ObjectNotFound)
    assert str(info.value).startswith(store.uri)


@pytest.mark.parametrize(
    ("uri", "remote", "name"),
    [
        ("models/xor", False, "xor"),
        ("file:///srv/models/xor", False, "xor"),
        ("s3://bucket/models/xor", True, "xor"),
        ("gs://bucket/deep/prefix/iris", True, "iris"),
    ],
)
def test_uris(uri: str, remote: bool, name: str) -> None:
    assert is_remote(uri) is remote
    assert name_of(uri) == name


@pytest.mark.parametrize(
    ("uri", "message"),
    [("s3://", "no bucket"), ("ftp://host/x", "unsupported scheme 'ftp://'")],
)
def test_bad_uris(uri: str, message: str) -> None:
    with pytest.raises(StorageError, match=message):
        open_store(uri)


def test_atomic_write_leaves_nothing_behind_on_error(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    atomic_write(target, "old")

    def fail(path: Path) -> None:
        path.write_text("half")
        raise RuntimeError("disk full")

    writer: Callable[[Path], None] = fail
    with pytest.raises(RuntimeError), atomic_writer(target) as tmp:
        writer(tmp)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]
    atomic_write(target, b"new")
    assert target.read_bytes() == b"new"
    assert target.stat().st_mode & 0o777 == 0o644 & ~_umask()


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_credentials_and_endpoint_from_a_mounted_secret_folder(
    s3: S3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Kubernetes Secret mounted as files (XOR_DNN_STORE_CREDENTIALS_DIR), no variables."""
    bucket = s3.make_bucket()
    secret = tmp_path / "secret"
    secret.mkdir()
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
        (secret / name).write_text(os.environ[name] + "\n")
        monkeypatch.delenv(name)
    monkeypatch.setenv(CREDENTIALS_DIR_ENV, str(secret))
    mark = s3.proxy.mark()
    store = open_store(f"s3://{bucket}/m")
    store.write("k", b"v")
    assert store.read("k") == b"v"
    assert [r.kind for r in s3.proxy.since(mark)] == ["put", "get"]  # reached the endpoint
