"""The model-version contract shared by training, serving and batch scoring: publish, list, load.

Layout (TensorFlow Serving's), in a local folder or under an ``s3://`` / ``gs://`` prefix::

    <model>/<N>/saved_model.pb      N = 1, 2, 3 ... ; any other name is ignored
    <model>/<N>/variables/...
    <model>/<N>/metadata.json
    <model>/<N>/history.json        optional: the training history (training/history.py),
                                    named by metadata.json's ``history_file``
    <model>/<N>/manifest.json       completion marker: every file's size and sha256, written last
    <model>/versions.json           object stores: the index pollers read (complete versions)

The SavedModel's ``serving_default`` signature takes ``points``: float32 ``[None, 2]`` (x, y)
and returns ``{"probability": float32 [None, 1]}``, the class-1 probability. It loads with
plain ``tf.saved_model.load`` and no project code.

**Local folders**: a version is built in a hidden temporary folder inside the model folder and
renamed to its number once complete, so a poller never sees half a version and two trainings
running at once each get their own number; readers scan the folder.

**Object stores** have no atomic folder rename, so a version is published in four steps:

1. *claim* the number with a create-only write of ``<N>/.claim`` (``If-None-Match: *``; a
   publisher that loses moves on to N+1, so two publishers never share a number);
2. upload every file under ``<N>/``;
3. write ``<N>/manifest.json`` (create-only) last: a version without it is incomplete and
   readers ignore it; a reader also checks every file it downloads against it;
4. add the version to ``versions.json`` with a compare-and-swap write (``If-Match`` on the
   ETag read), retried on a conflict, so concurrent publishers never drop each other's entry.

Readers poll only ``versions.json`` with a conditional GET (an unchanged index costs a 304 and
no body) and LIST nothing at steady state. When the index is missing or unreadable (a
repository written by hand or by an older publisher) they fall back to one LIST per poll and
take the versions whose ``manifest.json`` exists.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from xor_dnn.storage import (
    ObjectNotFound,
    Observer,
    PreconditionFailed,
    StorageError,
    atomic_write,
    name_of,
    open_store,
)

if TYPE_CHECKING:
    from numpy.typing import NDArray

    ProbeAnswer = tuple[NDArray[np.float32], NDArray[Any]]  # a probe batch, the public answer

log = logging.getLogger(__name__)

SIGNATURE_NAME = "serving_default"
INPUT_NAME = "points"
OUTPUT_NAME = "probability"
METADATA_FILE = "metadata.json"
HISTORY_FILE = "history.json"
SAVED_MODEL_FILE = "saved_model.pb"
MANIFEST_FILE = "manifest.json"
CLAIM_FILE = ".claim"
INDEX_FILE = "versions.json"
TMP_PREFIX = ".tmp-"
_CHUNK = 1 << 20
MODEL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
"""A model's name in a repository of models: its folder's name, and how URLs address it."""


class ModelStoreError(Exception):
    """A model folder or version is missing, unreadable or not a valid xor-dnn SavedModel."""


def _is_version_name(name: str) -> bool:
    return name.isdigit() and not name.startswith("0")


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def build_manifest(folder: Path, version: int) -> bytes:
    """The completion marker of the version in ``folder``: each file's size and sha256."""
    files = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel in (MANIFEST_FILE, CLAIM_FILE):
            continue
        files.append({"path": rel, "size": path.stat().st_size, "sha256": _sha256_file(path)})
    return json.dumps({"version": version, "files": files}, indent=1).encode() + b"\n"


def _parse_manifest(data: bytes, where: str) -> list[tuple[str, int, str]]:
    try:
        doc = json.loads(data)
        files = [(str(f["path"]), int(f["size"]), str(f["sha256"])) for f in doc["files"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelStoreError(f"{where}: malformed {MANIFEST_FILE}: {exc}") from None
    for rel, _, _ in files:
        pure = PurePosixPath(rel)
        if pure.is_absolute() or ".." in pure.parts or not pure.parts:
            raise ModelStoreError(f"{where}: {MANIFEST_FILE} names an unsafe path {rel!r}")
    if SAVED_MODEL_FILE not in {rel for rel, _, _ in files}:
        raise ModelStoreError(f"{where}: {MANIFEST_FILE} lists no {SAVED_MODEL_FILE}")
    return files


Listing = Literal["scan", "index", "list"]


class ModelRepository:
    """The versions of one model at a local path or URI (see the module docstring).

    Usage::

        repo = ModelRepository("s3://models/xor", cache_dir=Path("/cache"))
        repo.list_versions()              # [1, 2]: one conditional GET of versions.json
        folder = repo.fetch(2)            # downloaded into /cache/2, checked against manifest
        number, where = repo.publish(lambda tmp: build_into(tmp))

    ``observer`` sees every store request (see :mod:`xor_dnn.storage`). A remote repository
    needs ``cache_dir`` for :meth:`fetch`; :func:`load_version` makes a temporary one.
    """

    def __init__(
        self,
        uri: str | os.PathLike[str],
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        observer: Observer | None = None,
        lite_max_points: int = 0,
    ) -> None:
        self.store = open_store(uri, observer)
        self.lite_max_points = lite_max_points
        """Passed to :func:`load_folder` by :meth:`load`."""
        self.uri = self.store.uri
        self.local_root = self.store.local_root
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.listing: Listing = "scan" if self.local_root is not None else "index"
        """How the last :meth:`list_versions` found the versions: a folder ``scan``, the
        ``index`` (``versions.json``) or the ``list`` fallback."""
        self._index: dict[int, str] = {}
        self._index_etag: str | None = None

    @property
    def name(self) -> str:
        """The model's name: the last segment of its path (``s3://b/models/xor`` -> ``xor``)."""
        return name_of(self.uri)

    @property
    def remote(self) -> bool:
        return self.local_root is None

    # -- reading -----------------------------------------------------------------------------

    def list_versions(self) -> list[int]:
        """Complete version numbers, ascending; :class:`StorageError` if the store fails.

        A missing local folder has no versions; a missing bucket is an error.
        """
        if self.local_root is not None:
            return _scan(self.local_root)
        return sorted(self._remote_versions())

    def _remote_versions(self) -> dict[int, str]:
        try:
            body, etag = self.store.read_if_changed(INDEX_FILE, self._index_etag)
        except ObjectNotFound as exc:
            if exc.bucket_missing:
                raise
            return self._fallback("has no " + INDEX_FILE)
        if body is None:  # unchanged since the last poll: a 304, no body
            self.listing = "index"
            return self._index
        try:
            index = _parse_index(body)
        except ModelStoreError as exc:
            return self._fallback(str(exc))
        if self.listing != "index":
            log.info("%s: reading versions from %s again", self.uri, INDEX_FILE)
        self._index, self._index_etag, self.listing = index, etag, "index"
        return index

    def _fallback(self, why: str) -> dict[int, str]:
        if self.listing != "list":
            log.warning("%s %s; listing the repository on every poll instead", self.uri, why)
        self.listing = "list"
        self._index, self._index_etag = {}, None
        return dict.fromkeys(self._listed_complete(), "")

    def _listed_complete(self) -> list[int]:
        complete = set()
        for key in self.store.list():
            head, _, rest = key.partition("/")
            if rest == MANIFEST_FILE and _is_version_name(head):
                complete.add(int(head))
        return sorted(complete)

    def fingerprint(self, version: int) -> Any:
        """Changes whenever the version's files change (a failed version is retried then)."""
        if self.local_root is not None:
            return _fingerprint(self.local_root / str(version))
        known = self._index.get(version)
        if known:
            return known
        try:
            return hashlib.sha256(self.store.read(f"{version}/{MANIFEST_FILE}")).hexdigest()
        except StorageError:
            return None

    def fetch(self, version: int) -> Path:
        """A local folder holding ``version``: the folder itself locally, else the cache's copy.

        A remote version is downloaded into a temporary folder in ``cache_dir``, every file
        checked against the manifest (size and sha256; the manifest against the index), and
        renamed into ``cache_dir/<version>`` only when complete. Raises
        :class:`ModelStoreError` for a version that does not match, :class:`StorageError`
        when the store fails.
        """
        if self.local_root is not None:
            return self.local_root / str(version)
        if self.cache_dir is None:
            raise ModelStoreError(f"{self.uri}: a remote repository needs a cache folder")
        where = self.store.child(str(version))
        raw = self.store.read(f"{version}/{MANIFEST_FILE}")
        digest = hashlib.sha256(raw).hexdigest()
        expected = self._index.get(version)
        if expected and expected != digest:
            raise ModelStoreError(f"{where}: {MANIFEST_FILE} does not match {INDEX_FILE}")
        final = self.cache_dir / str(version)
        marker = final / MANIFEST_FILE
        if marker.is_file() and marker.read_bytes() == raw:
            return final
        files = _parse_manifest(raw, where)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{version}-", dir=self.cache_dir))
        try:
            for rel, size, sha in files:
                dest = tmp / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                got = self.store.download(f"{version}/{rel}", dest)
                if got != size or _sha256_file(dest) != sha:
                    raise ModelStoreError(f"{where}/{rel}: does not match {MANIFEST_FILE}")
            (tmp / MANIFEST_FILE).write_bytes(raw)
            shutil.rmtree(final, ignore_errors=True)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final

    def prune_cache(self, keep: set[int]) -> list[int]:
        """Remove cached versions not in ``keep`` (and stale temporary folders); returns them."""
        if self.cache_dir is None or self.remote is False or not self.cache_dir.is_dir():
            return []
        removed = []
        for entry in self.cache_dir.iterdir():
            stale = entry.name.startswith(TMP_PREFIX)
            unwanted = _is_version_name(entry.name) and int(entry.name) not in keep
            if stale or unwanted:
                shutil.rmtree(entry, ignore_errors=True)
                if unwanted:
                    removed.append(int(entry.name))
        return sorted(removed)

    def load(self, version: int) -> LoadedModel:
        """:meth:`fetch` then load and check the SavedModel (see :func:`load_folder`)."""
        return load_folder(self.fetch(version), version, lite_max_points=self.lite_max_points)

    # -- publishing --------------------------------------------------------------------------

    def check(self) -> None:
        """Fail fast, before minutes of training, if the repository cannot be written."""
        self.store.check()

    def publish(
        self, build: Callable[[Path], None], *, attempts: int = 50
    ) -> tuple[int, Path | str]:
        """Build a version with ``build(tmp_path)`` and publish it as the next number.

        ``build`` writes the complete version (SavedModel, metadata, pictures) into the empty
        folder it is given; the ``version`` field of its ``metadata.json`` is set to the number
        actually claimed. Returns the number and where the version is (its folder, or its
        URI in an object store). On any
        error nothing half-written is left for readers (a claimed number without a manifest is
        ignored by them and skipped by later publishers).
        """
        if self.local_root is not None:
            return _publish_local(self.local_root, build, attempts)
        with tempfile.TemporaryDirectory(prefix="xor-dnn-publish-") as tmp_name:
            tmp = Path(tmp_name)
            build(tmp)
            if not (tmp / SAVED_MODEL_FILE).is_file():
                raise ModelStoreError(f"build() wrote no {SAVED_MODEL_FILE}")
            number = self._claim(attempts)
            _set_metadata_version(tmp, number)
            manifest = build_manifest(tmp, number)
            for path in sorted(p for p in tmp.rglob("*") if p.is_file()):
                self.store.upload(path, f"{number}/{path.relative_to(tmp).as_posix()}")
            self.store.write(f"{number}/{MANIFEST_FILE}", manifest, if_none_match=True)
            self._add_to_index(number, hashlib.sha256(manifest).hexdigest(), attempts)
        return number, self.store.child(str(number))

    def _claim(self, attempts: int) -> int:
        taken = {
            int(head)
            for head, _, _ in (key.partition("/") for key in self.store.list())
            if _is_version_name(head)
        }
        number = max(taken, default=0) + 1
        for _ in range(attempts):
            try:
                self.store.write(f"{number}/{CLAIM_FILE}", b"", if_none_match=True)
            except PreconditionFailed:
                number += 1
                continue
            return number
        raise ModelStoreError(f"{self.uri}: could not claim a version number in {attempts} tries")

    def _add_to_index(self, number: int, manifest_sha: str, attempts: int) -> None:
        for _ in range(attempts):
            try:
                body, etag = self.store.read_if_changed(INDEX_FILE, None)
                assert body is not None
                index = _parse_index(body)
            except ObjectNotFound:
                etag = None
                # Versions published before the index existed must stay visible to readers.
                index = dict.fromkeys(self._listed_complete(), "")
            except ModelStoreError:
                log.warning("%s: unreadable %s; rebuilding it", self.uri, INDEX_FILE)
                index = dict.fromkeys(self._listed_complete(), "")
            index[number] = manifest_sha
            try:
                if etag is None:
                    self.store.write(INDEX_FILE, _index_bytes(index), if_none_match=True)
                else:
                    self.store.write(INDEX_FILE, _index_bytes(index), if_match=etag)
            except PreconditionFailed:
                continue  # another publisher updated it first: read it again
            return
        raise ModelStoreError(f"{self.uri}: could not update {INDEX_FILE} in {attempts} tries")


def _parse_index(body: bytes) -> dict[int, str]:
    try:
        doc = json.loads(body)
        return {
            int(number): str(entry.get("manifest_sha256") or "")
            for number, entry in doc["versions"].items()
            if _is_version_name(number)
        }
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelStoreError(f"unreadable {INDEX_FILE}: {exc}") from None


def _index_bytes(index: dict[int, str]) -> bytes:
    versions = {str(n): {"manifest_sha256": sha} for n, sha in sorted(index.items())}
    return json.dumps({"format": 1, "versions": versions}, indent=1).encode() + b"\n"


def _scan(root: Path) -> list[int]:
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return []
    versions = []
    for entry in entries:
        name = entry.name
        if _is_version_name(name) and entry.is_dir() and (root / name / SAVED_MODEL_FILE).is_file():
            versions.append(int(name))
    return sorted(versions)


def list_models(
    repository: str | os.PathLike[str], observer: Observer | None = None
) -> dict[str, str]:
    """The model folders of a repository (``<repository>/<name>/<N>/``): name -> the
    folder's path or URI, for :class:`ModelRepository`. Hidden folders (a publisher's
    ``.tmp-...``) and names that are not model names are skipped; a missing local folder
    has no models.
    """
    store = open_store(repository, observer)
    models: dict[str, str] = {}
    for name in store.folders():
        if not MODEL_NAME.match(name):
            continue
        if store.local_root is not None:
            models[name] = os.fspath(store.local_root / name)
        else:
            models[name] = store.child(name)
    return models


def list_versions(model_dir: str | os.PathLike[str]) -> list[int]:
    """Version numbers under ``model_dir`` (a path or URI), ascending.

    Locally: folders named as plain positive integers holding a ``saved_model.pb`` (temp
    folders, ``latest`` and files are ignored, as TensorFlow Serving does); a missing folder
    has no versions. Remotely: the complete versions (see the module docstring).
    """
    return ModelRepository(model_dir).list_versions()


def latest_version(model_dir: str | os.PathLike[str]) -> int | None:
    """The newest version number, or None when the repository holds no version."""
    versions = list_versions(model_dir)
    return versions[-1] if versions else None


def _next_free_number(root: Path) -> int:
    taken = [int(p.name) for p in root.iterdir() if p.name.isdigit()]
    return max(taken, default=0) + 1


def publish_version(
    model_dir: str | os.PathLike[str],
    build: Callable[[Path], None],
    *,
    attempts: int = 50,
) -> tuple[int, Path | str]:
    """Publish the version ``build(tmp_path)`` writes as the next number of ``model_dir``.

    ``model_dir`` is a path or URI; see :meth:`ModelRepository.publish`.
    """
    return ModelRepository(model_dir).publish(build, attempts=attempts)


def _publish_local(root: Path, build: Callable[[Path], None], attempts: int) -> tuple[int, Path]:
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=root))
    try:
        # mkdtemp makes the folder 0700; a version must be readable by a server running as
        # another user (the API pods read what the training Job wrote).
        tmp.chmod(0o755)
        build(tmp)
        if not (tmp / SAVED_MODEL_FILE).is_file():
            raise ModelStoreError(f"build() wrote no {SAVED_MODEL_FILE} into {tmp}")
        for _ in range(attempts):
            number = _next_free_number(root)
            _set_metadata_version(tmp, number)
            # The manifest makes a local folder a valid object-store version once copied
            # there (e.g. ``aws s3 sync``), read through the LIST fallback.
            (tmp / MANIFEST_FILE).write_bytes(build_manifest(tmp, number))
            final = root / str(number)
            try:
                # rename() onto an existing non-empty folder fails, so the first publisher to
                # rename wins the number and a concurrent one moves on to the next; readers
                # never see an empty or partial numbered folder.
                os.rename(tmp, final)
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY) or final.exists():
                    continue
                raise
            return number, final
        raise ModelStoreError(f"could not claim a version number in {root} after {attempts} tries")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _set_metadata_version(folder: Path, number: int) -> None:
    path = folder / METADATA_FILE
    if not path.exists():
        return
    meta = json.loads(path.read_text())
    if meta.get("version") != number:
        meta["version"] = number
        write_json_atomic(path, meta)


def write_json_atomic(path: Path, payload: Any, *, indent: int | None = 2) -> None:
    """Write JSON to ``path`` atomically (:func:`xor_dnn.storage.atomic_write`)."""
    separators = None if indent is not None else (",", ":")
    text = json.dumps(payload, indent=indent, separators=separators, allow_nan=False) + "\n"
    atomic_write(path, text)


def read_metadata(version_path: str | os.PathLike[str]) -> dict[str, Any]:
    """The version's ``metadata.json`` as a dict ({} when the file is absent)."""
    path = Path(version_path) / METADATA_FILE
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelStoreError(f"{path}: unreadable metadata: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelStoreError(f"{path}: metadata must be a JSON object")
    return data


@dataclass(frozen=True)
class VersionHistory:
    """A version's training history file as published: its bytes and their sha256."""

    body: bytes
    sha256: str


def read_history(version_path: Path, metadata: dict[str, Any]) -> VersionHistory | None:
    """The history file ``metadata.json`` names (``history_file``), or None when it names none.

    Raises :class:`ModelStoreError` when it names one that is missing or not a plain file
    name inside the version (a version must not point outside itself).
    """
    name = metadata.get("history_file")
    if name is None:
        return None
    if not isinstance(name, str) or PurePosixPath(name).name != name or name in ("", ".", ".."):
        raise ModelStoreError(f"{version_path}: history_file must be a file name, got {name!r}")
    path = version_path / name
    try:
        body = path.read_bytes()
    except OSError as exc:
        raise ModelStoreError(f"{path}: unreadable history: {exc.strerror or exc}") from exc
    return VersionHistory(body=body, sha256=hashlib.sha256(body).hexdigest())


def _fingerprint(path: Path) -> tuple[int, int, int]:
    """(files, bytes, newest mtime) of a version folder: changes when anything is rewritten."""
    files = size = newest = 0
    for entry in _walk(path):
        try:
            stat = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        files += 1
        size += stat.st_size
        newest = max(newest, stat.st_mtime_ns)
    return files, size, newest


def _walk(path: Path) -> Iterator[os.DirEntry[str]]:
    try:
        entries = list(os.scandir(path))
    except OSError:
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(Path(entry.path))
        else:
            yield entry


LITE_MAX_POINTS = 256
"""The service's ``lite_max_points``: its small batches run in LiteRT, on the event loop;
larger ones run in TensorFlow on the model thread, whose calls never wait on a LiteRT lock
that the event loop needs."""

INLINE_CALL_MAX_S = 100e-6
"""A LiteRT call of :data:`LITE_MAX_POINTS` points measured faster than this at load (the best
of several) makes the model's small batches cheap enough to run without a thread hand-off
(:attr:`LoadedModel.inline_max_points`): the lesson's networks take 5-20 µs."""

FAST_CALL_RTOL = 1e-5
FAST_CALL_ATOL = 1e-7
"""How close a faster way of running the signature must answer the probe points to be used:
float32 rounding, far below what a 0.5 threshold or a client printing 6 decimals can see."""


@dataclass
class LoadedModel:
    """A loaded SavedModel version; :meth:`predict` runs its signature (see ``call_path``),
    thread-safe."""

    version: int
    path: Path
    metadata: dict[str, Any] = field(default_factory=dict)
    history: VersionHistory | None = field(default=None, repr=False)
    """The training history published with the version, read once at load (the cache
    folder of a remote version may be pruned later)."""
    _fn: Any = field(default=None, repr=False)
    _keepalive: Any = field(default=None, repr=False)
    _call: Callable[[Any], Any] | None = field(default=None, repr=False)
    call_path: str = "signature"
    """How :meth:`predict` runs the signature: ``folded`` (its graph with the weights as
    constants), ``flat`` (its graph, variables read per call) or ``signature`` (the public
    call); the first two only when they answered the probe points like the last, to float32
    rounding (:data:`FAST_CALL_RTOL`, :data:`FAST_CALL_ATOL`)."""
    _lite: LiteRunner | None = field(default=None, repr=False)

    @property
    def small_batch_path(self) -> str | None:
        """``litert`` when batches of up to ``lite_max_points`` points run in LiteRT (see
        :func:`load_folder`), else None (every batch as ``call_path``)."""
        return None if self._lite is None else "litert"

    @functools.cached_property
    def inline_max_points(self) -> int:
        """Largest batch whose call is known to be short: up to :data:`LITE_MAX_POINTS` when LiteRT
        answered that many points in under :data:`INLINE_CALL_MAX_S` at load, else 0. The
        service runs such batches on its event loop (service/batcher.py) and asks on every
        request, so it is worked out once."""
        lite = self._lite
        if lite is None or lite.call_seconds > INLINE_CALL_MAX_S:
            return 0
        return lite.timed_points

    @property
    def runtime(self) -> str:
        """How batches run, for logs: e.g. ``LiteRT up to 256 points, TensorFlow (folded)``."""
        tensorflow = f"TensorFlow ({self.call_path})"
        if self._lite is None:
            return tensorflow
        lite = self._lite
        cost = f"{lite.call_seconds * 1e6:.0f} µs per {lite.timed_points} points"
        return f"LiteRT up to {lite.max_points} points ({cost}), {tensorflow} above"

    @property
    def signature(self) -> Any:
        """The ``serving_default`` concrete function, as ``tf.saved_model.load`` gives it.

        Its variables belong to the loaded object this model keeps: use it while the
        ``LoadedModel`` is alive."""
        return self._fn

    def predict(self, points: NDArray[Any]) -> NDArray[np.float32]:
        """Class-1 probabilities, shape ``(n,)`` float32, for an ``(n, 2)`` array of points."""
        import tensorflow as tf

        arr = np.ascontiguousarray(points, dtype=np.float32)
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise ValueError(f"points must have shape (n, 2), got {arr.shape}")
        if self._lite is not None and 0 < arr.shape[0] <= self._lite.max_points:
            return self._lite(arr)
        tensor = tf.constant(arr)
        if self._call is not None:
            output = self._call(tensor)
        else:
            output = self._fn(**{INPUT_NAME: tensor})[OUTPUT_NAME]
        result: NDArray[np.float32] = output.numpy().reshape(-1)
        if result.shape[0] != arr.shape[0]:
            raise ModelStoreError(
                f"version {self.version}: model returned {result.shape[0]} outputs "
                f"for {arr.shape[0]} points"
            )
        return result


def _flat_signature_call(fn: Any) -> Callable[[Any], Any] | None:
    """The signature's own graph call without re-binding keyword arguments, or None.

    Calling a loaded signature as ``fn(points=t)`` first binds the keyword through
    ``inspect.Signature`` and re-flattens it, a sizeable share of a call that a service makes
    thousands of times a second (docs/batching.md has the figures). ``_call_flat`` is the step
    that follows, with the same graph and captured variables. It is private API:
    :func:`_fast_call` uses it only if this TensorFlow has it and it answers like the public
    call.
    """
    call_flat = getattr(fn, "_call_flat", None)
    captured = getattr(fn, "captured_inputs", None)
    if call_flat is None or captured is None:
        return None

    def flat(tensor: Any) -> Any:
        return call_flat([tensor], captured)[OUTPUT_NAME]

    return flat


def _folded_call(fn: Any) -> Callable[[Any], Any] | None:
    """The signature's graph with its variables folded into constants, called flat; or None.

    Constants spare the variable reads and the captured-input plumbing of each call, so in a
    busy service the model thread holds the GIL that much less (figures in docs/batching.md).
    Same graph and kernels, but oneDNN may order a sum differently with constant weights, so
    results can differ from the public call in the last bits (seen: 1e-29 on a probability of
    3e-24). It is used only when it answers the probe points like the public call to float32
    rounding.
    """
    try:
        import tensorflow as tf
        from tensorflow.python.framework.convert_to_constants import (
            convert_variables_to_constants_v2,
        )

        folded = convert_variables_to_constants_v2(fn)
        # The folded function returns the signature's outputs as a flat list, in nest order.
        wanted = fn.structured_outputs[OUTPUT_NAME]
        flat_outputs = tf.nest.flatten(fn.structured_outputs)
        index = next(i for i, spec in enumerate(flat_outputs) if spec is wanted)
        call_flat = folded._call_flat
        captured = folded.captured_inputs
    except Exception:  # private API moved, or a graph TensorFlow cannot fold
        return None

    def call(tensor: Any) -> Any:
        return call_flat([tensor], captured)[index]

    return call


def _fast_call(
    fn: Any, answers: list[ProbeAnswer] | None = None
) -> tuple[Callable[[Any], Any] | None, str]:
    """The fastest way to run ``fn`` that answers like ``fn(points=...)``, and its name.

    Tries the folded graph, then the flat call; each must give the public call's outputs to
    float32 rounding (relative :data:`FAST_CALL_RTOL`, absolute :data:`FAST_CALL_ATOL`) on the
    probe batches (``answers``, :func:`_probe_answers` when None: 1, 8, 205 and 1,024 points,
    which take different oneDNN paths), else the public call is used (``None``).
    """
    import tensorflow as tf

    if answers is None:
        answers = _probe_answers(fn)
    tensors = [tf.constant(points) for points, _ in answers]
    expected = [answer for _, answer in answers]
    for name, make in (("folded", _folded_call), ("flat", _flat_signature_call)):
        call = make(fn)
        if call is None:
            continue
        try:
            same = all(
                np.allclose(call(t).numpy(), e, rtol=FAST_CALL_RTOL, atol=FAST_CALL_ATOL)
                for t, e in zip(tensors, expected, strict=True)
            )
        except Exception:  # the private path fails where the public one did not
            same = False
        if same:
            return call, name
    return None, "signature"


class LiteRunner:
    """The signature's graph converted by TensorFlow's own converter to a LiteRT flatbuffer,
    run by the LiteRT interpreter (``ai-edge-litert``) on batches of up to ``max_points``
    points.

    Why: a small batch is a few microseconds of arithmetic, and TensorFlow's eager call costs
    ~50-80 µs of Python-side dispatch around it (holding the GIL the event loop needs); the
    interpreter's call costs 2-7 µs (docs/batching.md has the figures). A large batch (the
    batch scorer's chunks) costs LiteRT's XNNPACK kernels 25-30% less CPU than TensorFlow's
    one-thread graph (docs/scoring.md). Used only when it answers the probe points like the
    public call to float32 rounding (:func:`_lite_runner`).

    An interpreter is sized for one batch shape: there is one per power-of-two batch size,
    those up to :data:`LITE_MAX_POINTS` allocated at load (:meth:`prepare`, in the loading
    thread, so no request pays for one), larger ones at their first call; a batch is padded
    with zero rows to its size and the padding's outputs dropped. An interpreter is not
    thread-safe, so calls hold a lock (uncontended in the service, whose small batches all
    run on the event loop).
    """

    def __init__(self, flatbuffer: bytes, output_name: str, max_points: int) -> None:
        if max_points < 1:
            raise ValueError(f"max_points must be >= 1, got {max_points}")
        self._flatbuffer = flatbuffer
        self._output_name = output_name
        self._lock = threading.Lock()
        self._slots: dict[int, tuple[Any, int, int, NDArray[np.float32]]] = {}
        self.max_points = max_points
        """The largest batch this runner answers."""
        self.timed_points = min(max_points, LITE_MAX_POINTS)
        """The batch size :meth:`prepare` times."""
        self.call_seconds = float("inf")
        """The best of several calls of ``timed_points`` points (:meth:`prepare`)."""

    def prepare(self, rounds: int = 7) -> None:
        """Allocate every batch size's interpreter up to ``timed_points``, then time a call
        of that many points: the best of ``rounds`` (the best is the call's cost; slower
        rounds are the machine's)."""
        size = 1
        while size <= self.timed_points:
            self(np.zeros((size, 2), np.float32))
            size *= 2
        points = np.zeros((self.timed_points, 2), np.float32)
        for _ in range(rounds):
            started = time.perf_counter()
            self(points)
            self.call_seconds = min(self.call_seconds, time.perf_counter() - started)

    def __call__(self, points: NDArray[np.float32]) -> NDArray[np.float32]:
        n = int(points.shape[0])
        size = 1 << (n - 1).bit_length()
        with self._lock:
            slot = self._slots.get(size)
            if slot is None:
                slot = self._slots[size] = self._interpreter(size)
            interpreter, input_index, output_index, buffer = slot
            if n == size:  # e.g. one point: no padding, so no copy into the buffer
                interpreter.set_tensor(input_index, np.ascontiguousarray(points))
            else:
                buffer[:n] = points
                interpreter.set_tensor(input_index, buffer)
            interpreter.invoke()
            out: NDArray[np.float32] = interpreter.get_tensor(output_index)  # a copy
            return out.reshape(-1) if n == size else out.reshape(-1)[:n]

    def _interpreter(self, size: int) -> tuple[Any, int, int, NDArray[np.float32]]:
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_content=self._flatbuffer, num_threads=1)
        runner = interpreter.get_signature_runner(SIGNATURE_NAME)
        input_index = runner.get_input_details()[INPUT_NAME]["index"]
        output_index = runner.get_output_details()[self._output_name]["index"]
        del runner  # it holds the interpreter's buffers, which a resize may not move
        interpreter.resize_tensor_input(input_index, [size, 2], strict=True)
        interpreter.allocate_tensors()
        return interpreter, input_index, output_index, np.zeros((size, 2), np.float32)


# Ops the LiteRT converter drops rather than converts: a graph's assertions and numeric checks
# would silently stop failing, and its prints stop printing. A graph with any of them stays in
# TensorFlow.
_CONVERTER_DROPS = frozenset(
    {"Assert", "CheckNumerics", "CheckNumericsV2", "EnsureShape", "Print", "PrintV2"}
)


def _op_types(fn: Any) -> set[str]:
    """Every op type in ``fn``'s graph, the functions it calls included."""
    graph_def = fn.graph.as_graph_def()
    types = {node.op for node in graph_def.node}
    for function in graph_def.library.function:
        types.update(node.op for node in function.node_def)
    return types


def _lite_runner(
    path: Path, fn: Any, keepalive: Any, answers: list[ProbeAnswer], max_points: int
) -> LiteRunner | None:
    """A :class:`LiteRunner` for batches of up to ``max_points`` points of ``fn`` (the
    signature of the SavedModel in ``path``, whose variables ``keepalive`` holds), or None
    when LiteRT is not installed, the graph holds ops the converter drops
    (:data:`_CONVERTER_DROPS`), it does not convert, or it answers unlike the public call
    (beyond float32 rounding) on any probe batch (``answers``) of up to ``max_points``
    points, or on one of ``max_points`` points when that is larger than every probe."""
    try:
        dropped = _op_types(fn) & _CONVERTER_DROPS
    except Exception:  # a graph TensorFlow cannot show us: do not guess
        dropped = {"(unreadable graph)"}
    if dropped:
        log.info("%s: LiteRT not used (the graph has %s)", path, ", ".join(sorted(dropped)))
        return None
    try:
        import ai_edge_litert.interpreter  # noqa: F401  (installed?)
        import tensorflow as tf

        # From the function already loaded: no second read of the SavedModel from disk.
        converter = tf.lite.TFLiteConverter.from_concrete_functions([fn], keepalive)
        runner = LiteRunner(converter.convert(), OUTPUT_NAME, max_points)
        if max_points > max(points.shape[0] for points, _ in answers):
            answers = [*answers, _probe_answer(fn, _probe_batch(max_points))]
        for points, expected in answers:
            if points.shape[0] > max_points:
                continue
            if not np.allclose(
                runner(points), expected.reshape(-1), rtol=FAST_CALL_RTOL, atol=FAST_CALL_ATOL
            ):
                log.warning("%s: LiteRT answers unlike TensorFlow; not used", path)
                return None
        runner.prepare()
    except Exception as exc:  # not installed, or a graph the converter or runtime refuses
        log.info("%s: LiteRT not used (%s: %s)", path, type(exc).__name__, exc)
        return None
    return runner


# One point per quadrant, the origin and points beyond the training square.
_PROBE_POINTS = np.array(
    [[1, 1], [-1, 1], [-1, -1], [1, -1], [0, 0], [4.5, -3], [-20, 7], [0.25, 9]], np.float32
)


def _probe_answers(fn: Any) -> list[ProbeAnswer]:
    """Probe batches of 1, 8, 205 and 1,024 points (sizes that take different kernel paths),
    each with ``fn(points=...)``'s answer: what every faster way of running ``fn`` must match."""
    square = _probe_batch(1024)
    batches = [_PROBE_POINTS[:1], _PROBE_POINTS, square[::5].copy(), square]
    return [_probe_answer(fn, b) for b in batches]


def _probe_batch(n: int) -> NDArray[np.float32]:
    """``n`` points: a 32 x 32 grid over [-6, 6]², repeated as often as needed."""
    grid = np.linspace(-6, 6, 32, dtype=np.float32)
    square = np.stack(np.meshgrid(grid, grid), -1).reshape(-1, 2)
    return np.resize(square, (n, 2))


def _probe_answer(fn: Any, points: NDArray[np.float32]) -> ProbeAnswer:
    import tensorflow as tf

    return points, fn(**{INPUT_NAME: tf.constant(points)})[OUTPUT_NAME].numpy()


def load_version(
    model_dir: str | os.PathLike[str],
    version: int,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    lite_max_points: int = 0,
) -> LoadedModel:
    """Load version ``version`` of ``model_dir`` (a path or URI); see :func:`load_folder`
    (``lite_max_points`` too).

    A remote version is downloaded into ``cache_dir``, or into a temporary folder removed
    once loaded (TensorFlow holds the variables in memory; the files are not read again).
    """
    repo = ModelRepository(model_dir, cache_dir=cache_dir, lite_max_points=lite_max_points)
    if repo.remote and cache_dir is None:
        with tempfile.TemporaryDirectory(prefix="xor-dnn-cache-") as tmp:
            repo.cache_dir = Path(tmp)
            return repo.load(version)
    return repo.load(version)


def load_folder(path: Path, version: int, *, lite_max_points: int = 0) -> LoadedModel:
    """Load the SavedModel in ``path`` as ``version`` and check its signature (contract above).

    ``lite_max_points``: also convert the signature for LiteRT and run batches of up to that
    many points there (:class:`LiteRunner`), when it answers like TensorFlow; 0 runs every
    batch in TensorFlow. The service passes :data:`LITE_MAX_POINTS` (its many small
    batches), the batch scorer its chunk size. The conversion costs 0.2-0.4 s per load.

    Raises :class:`ModelStoreError` naming the path when the folder is missing, the
    SavedModel does not load, or its ``serving_default`` signature has the wrong shape.
    """
    if not (path / SAVED_MODEL_FILE).is_file():
        raise ModelStoreError(f"{path}: no {SAVED_MODEL_FILE} (version {version} not found)")
    metadata = read_metadata(path)
    try:
        history = read_history(path, metadata)
    except ModelStoreError as exc:
        # The history is for people looking at the page; a model without it still serves.
        log.warning("%s; serving version %s without its history", exc, version)
        history = None
    import tensorflow as tf

    try:
        obj = tf.saved_model.load(str(path))
    except Exception as exc:  # TF raises many unrelated types for corrupt files
        raise ModelStoreError(f"{path}: SavedModel failed to load: {type(exc).__name__}") from exc
    fn = getattr(obj, "signatures", {}).get(SIGNATURE_NAME)
    if fn is None:
        raise ModelStoreError(f"{path}: no '{SIGNATURE_NAME}' signature")
    _, kwargs = fn.structured_input_signature
    spec = kwargs.get(INPUT_NAME)
    if spec is None or spec.dtype != tf.float32 or spec.shape.as_list() != [None, 2]:
        raise ModelStoreError(
            f"{path}: signature input '{INPUT_NAME}' must be float32 [None, 2], got {spec}"
        )
    out_spec = fn.structured_outputs.get(OUTPUT_NAME)
    if out_spec is None or out_spec.shape.as_list() != [None, 1]:
        raise ModelStoreError(
            f"{path}: signature output '{OUTPUT_NAME}' must be [None, 1], got {out_spec}"
        )
    answers = _probe_answers(fn)
    call, call_path = _fast_call(fn, answers)
    lite = _lite_runner(path, fn, obj, answers, lite_max_points) if lite_max_points else None
    return LoadedModel(
        version=version,
        path=path,
        metadata=metadata,
        history=history,
        _fn=fn,
        _keepalive=obj,
        _call=call,
        call_path=call_path,
        _lite=lite,
    )
