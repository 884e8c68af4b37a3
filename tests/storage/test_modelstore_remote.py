"""The model-version contract on a real S3 API: publish, index, polling cost, verification."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from bench._s3server import S3
from xor_dnn.modelstore import (
    INDEX_FILE,
    MANIFEST_FILE,
    ModelRepository,
    ModelStoreError,
    publish_version,
)
from xor_dnn.storage import ObjectNotFound, open_store


def _fake_build(folder: Path) -> None:
    (folder / "saved_model.pb").write_bytes(b"graph")
    (folder / "variables").mkdir()
    (folder / "variables" / "variables.data-00000-of-00001").write_bytes(b"weights" * 100)
    (folder / "metadata.json").write_text(json.dumps({"version": None}))


def test_publish_writes_files_then_marker_then_index(s3: S3, bucket: str) -> None:
    uri = f"s3://{bucket}/models/xor"
    mark = s3.proxy.mark()
    number, where = publish_version(uri, _fake_build)
    assert (number, where) == (1, f"{uri}/1")
    puts = [r.key for r in s3.proxy.since(mark) if r.kind == "put"]
    # the claim first, the manifest after every file, the index last
    assert puts[0] == "models/xor/1/.claim"
    assert puts[-2:] == ["models/xor/1/manifest.json", "models/xor/versions.json"]
    assert set(s3.keys(bucket)) == {
        "models/xor/1/.claim",
        "models/xor/1/saved_model.pb",
        "models/xor/1/metadata.json",
        "models/xor/1/variables/variables.data-00000-of-00001",
        "models/xor/1/manifest.json",
        "models/xor/versions.json",
    }
    store = open_store(uri)
    meta = json.loads(store.read("1/metadata.json"))
    assert meta["version"] == 1
    index = json.loads(store.read(INDEX_FILE))
    assert list(index["versions"]) == ["1"]
    assert ModelRepository(uri).list_versions() == [1]


def test_readers_poll_only_the_index_with_a_conditional_get(s3: S3, bucket: str) -> None:
    uri = f"s3://{bucket}/xor"
    publish_version(uri, _fake_build)
    repo = ModelRepository(uri)
    mark = s3.proxy.mark()
    for _ in range(5):
        assert repo.list_versions() == [1]
    seen = s3.proxy.since(mark)
    assert [(r.kind, r.status) for r in seen] == [("get", 200)] + [("get", 304)] * 4
    assert all(r.key == "xor/versions.json" for r in seen)
    assert repo.listing == "index"
    publish_version(uri, _fake_build)
    assert repo.list_versions() == [1, 2]


def test_two_concurrent_publishers_get_distinct_numbers_and_both_are_indexed(
    s3: S3, bucket: str
) -> None:
    uri = f"s3://{bucket}/xor"
    start = threading.Barrier(4)
    numbers: list[int] = []
    errors: list[BaseException] = []

    def publish() -> None:
        try:
            start.wait()
            numbers.append(publish_version(uri, _fake_build)[0])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=publish) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(numbers) == [1, 2, 3, 4]
    assert ModelRepository(uri).list_versions() == [1, 2, 3, 4]


def test_version_without_marker_is_ignored_and_its_number_skipped(s3: S3, bucket: str) -> None:
    uri = f"s3://{bucket}/xor"
    publish_version(uri, _fake_build)
    store = open_store(uri)
    store.write("2/saved_model.pb", b"graph only, no manifest")  # a crashed or hand copy
    repo = ModelRepository(uri)
    assert repo.list_versions() == [1]
    assert publish_version(uri, _fake_build)[0] == 3
    assert repo.list_versions() == [1, 3]


def test_fetch_checks_files_against_the_manifest(s3: S3, bucket: str, tmp_path: Path) -> None:
    uri = f"s3://{bucket}/xor"
    publish_version(uri, _fake_build)
    repo = ModelRepository(uri, cache_dir=tmp_path / "cache")
    repo.list_versions()
    folder = repo.fetch(1)
    assert folder == tmp_path / "cache" / "1"
    assert (folder / "variables" / "variables.data-00000-of-00001").read_bytes() == b"weights" * 100
    publish_version(uri, _fake_build)
    open_store(uri).write("2/variables/variables.data-00000-of-00001", b"tampered")
    repo.list_versions()
    with pytest.raises(ModelStoreError, match=r"does not match manifest\.json"):
        repo.fetch(2)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["1"]  # nothing half-made
    assert repo.prune_cache(set()) == [1]
    assert list((tmp_path / "cache").iterdir()) == []


def test_manifest_must_match_the_index(s3: S3, bucket: str, tmp_path: Path) -> None:
    uri = f"s3://{bucket}/xor"
    publish_version(uri, _fake_build)
    store = open_store(uri)
    manifest = json.loads(store.read(f"1/{MANIFEST_FILE}"))
    manifest["files"] = manifest["files"][:1]
    store.write(f"1/{MANIFEST_FILE}", json.dumps(manifest).encode())
    repo = ModelRepository(uri, cache_dir=tmp_path)
    repo.list_versions()
    with pytest.raises(ModelStoreError, match=r"does not match versions\.json"):
        repo.fetch(1)


def test_repository_without_index_works_through_the_list_fallback(
    s3: S3, bucket: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A repository copied by hand (e.g. ``aws s3 sync`` of a local model folder)."""
    local = tmp_path / "xor"
    publish_version(local, _fake_build)
    publish_version(local, _fake_build)
    uri = f"s3://{bucket}/synced/xor"
    store = open_store(uri)
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        store.upload(path, path.relative_to(local).as_posix())
    repo = ModelRepository(uri, cache_dir=tmp_path / "cache")
    mark = s3.proxy.mark()
    assert repo.list_versions() == [1, 2]
    assert repo.listing == "list"
    kinds = [(r.kind, r.status) for r in s3.proxy.since(mark)]
    assert kinds == [("get", 404), ("list", 200)]
    assert "listing the repository on every poll" in caplog.text
    assert repo.fetch(2).joinpath("saved_model.pb").read_bytes() == b"graph"
    # A new publisher seeds the index with the versions already there.
    assert publish_version(uri, _fake_build)[0] == 3
    assert repo.list_versions() == [1, 2, 3]
    assert repo.listing == "index"


def test_missing_bucket(s3: S3) -> None:
    repo = ModelRepository("s3://no-such-bucket-abc/xor")
    with pytest.raises(ObjectNotFound, match="no-such-bucket-abc"):
        repo.list_versions()
    with pytest.raises(ObjectNotFound, match="no-such-bucket-abc"):
        repo.check()
