"""One storage layer for local folders, ``file://``, ``s3://`` and ``gs://``: the only module that
looks at a URI's scheme.

Exceptions::

    StorageError                 the store refused or could not be reached; names the URI
    ├── ObjectNotFound           no such object (or no such bucket: see ``bucket_missing``)
    └── PreconditionFailed       a conditional write lost (the object exists / changed)

A :class:`Store` is a flat namespace of keys (``"3/saved_model.pb"``) under one root: a local
folder, or an object store through obstore (Rust's object_store: S3 and GCS behind one API;
docs/storage.md says why not pyarrow.fs, fsspec or boto3). Besides plain reads, writes and
listings it offers what the model-store contract needs and pyarrow.fs does not: a
**create-only** write (``If-None-Match: *`` on S3, generation 0 on GCS, ``O_EXCL``
locally), a **compare-and-swap** write on an ETag (``If-Match`` / a generation match), and
a **conditional read** that costs a 304 and no body when the object is unchanged. Every
request is reported to ``observer(kind, outcome, body_bytes)`` so the service can count
requests by kind (``get``, ``list``, ``put``) and outcome, and bytes downloaded.

Usage::

    store = open_store("s3://models/xor")            # or "models/xor", "file:///srv/xor"
    etag = store.write("versions.json", b"{}", if_none_match=True)
    body, etag = store.read_if_changed("versions.json", etag)   # (None, etag): unchanged
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import io
import os
import re
import secrets
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

Observer = Callable[[str, str, int], None]
"""``observer(kind, outcome, body_bytes)``: kind is get/list/head/put/delete, outcome is
ok/not_modified/not_found/precondition_failed/error."""


class StorageError(Exception):
    """The store refused a request or could not be reached; the message names the URI."""

    def __init__(self, uri: str, cause: str) -> None:
        super().__init__(f"{uri}: {cause}")
        self.uri = uri
        self.cause = cause


class ObjectNotFound(StorageError):
    """The object does not exist (``bucket_missing`` when the whole bucket does not)."""

    def __init__(self, uri: str, cause: str = "not found", *, bucket_missing: bool = False):
        super().__init__(uri, cause)
        self.bucket_missing = bucket_missing


class PreconditionFailed(StorageError):
    """A conditional write found the object already there, or changed since it was read."""


def _ignore(kind: str, outcome: str, size: int) -> None:
    return None


def atomic_write(path: str | os.PathLike[str], data: bytes | str) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder and a rename.

    Readers see the old file or the new one, never half of one; on any error the temp file is
    removed and ``path`` is untouched. The file gets the usual 0644 (``mkstemp`` makes 0600).
    """
    with atomic_writer(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temp path beside ``path`` to write in any way; renamed onto ``path`` on success.

    For writers that need a file name (matplotlib, Arrow, CSV writers): write to the yielded
    path; it replaces ``path`` only if the block completes, and is removed otherwise.
    """
    target = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", suffix=target.suffix, dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        tmp.chmod(0o644 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class Store:
    """Keys under one root of one store; see the module docstring."""

    uri: str
    """The root, as the user wrote it (without credentials: none are ever in a URI)."""
    local_root: Path | None = None
    """The folder itself when the store is a local one (atomic renames and scans work there)."""

    def __init__(self, uri: str, observer: Observer | None = None) -> None:
        self.uri = uri.rstrip("/")
        self.observer: Observer = observer or _ignore

    def child(self, key: str) -> str:
        """The URI of ``key`` (for messages)."""
        return f"{self.uri}/{key}" if self.uri else key

    # Each backend implements these.
    def read(self, key: str) -> bytes:
        """The object's bytes; :class:`ObjectNotFound` when absent."""
        raise NotImplementedError

    def read_if_changed(self, key: str, etag: str | None) -> tuple[bytes | None, str]:
        """``(body, etag)``, or ``(None, etag)`` when the object still has ``etag``."""
        raise NotImplementedError

    def write(
        self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None
    ) -> str:
        """Store ``data`` at ``key``; returns the new ETag.

        ``if_none_match``: only if no object is there; ``if_match``: only if the object still
        has this ETag. Either raises :class:`PreconditionFailed` when the condition fails.
        """
        raise NotImplementedError

    def list(self, prefix: str = "") -> list[str]:
        """Every key under ``prefix`` (recursive), sorted."""
        raise NotImplementedError

    def folders(self) -> builtins.list[str]:
        """The names of the top-level folders (key prefixes up to the first ``/``), sorted:
        one delimited LIST on an object store, one directory scan locally."""
        raise NotImplementedError

    def download(self, key: str, dest: Path) -> int:
        """Copy the object into the local file ``dest``; returns its size."""
        dest.write_bytes(self.read(key))
        return dest.stat().st_size

    def upload(self, src: Path, key: str) -> None:
        """Copy the local file ``src`` to ``key`` (unconditionally)."""
        self.write(key, src.read_bytes())

    def check(self) -> None:
        """Fail now, with a clear :class:`StorageError`, if the root cannot be listed."""
        self.list(".xor-dnn-check/")

    # Datasets (batch scoring): sizes, byte ranges, streamed atomic outputs.
    def entries(self, prefix: str = "") -> builtins.list[tuple[str, int]]:
        """``(key, size)`` of every object under ``prefix`` (recursive), sorted by key."""
        raise NotImplementedError

    def size(self, key: str) -> int:
        """The object's size; :class:`ObjectNotFound` when there is no such object or file."""
        raise NotImplementedError

    def read_range(self, key: str, start: int, stop: int) -> bytes:
        """Bytes ``[start, stop)`` of the object (fewer at its end); counted as a ``get``."""
        raise NotImplementedError

    def open_input(self, key: str, size: int | None = None) -> RangeReader:
        """A seekable read-only file over the object, each read one ranged request."""
        return RangeReader(self, key, self.size(key) if size is None else size)

    def open_output(self, key: str) -> Output:
        """A streamed write that appears under ``key`` only on ``commit()``; ``abort()``
        leaves nothing under that name (a local temp file is removed, an object store's
        multipart upload is aborted)."""
        raise NotImplementedError

    def delete(self, key: str) -> None:
        """Remove the object if it exists."""
        raise NotImplementedError


class LocalStore(Store):
    """A local folder; ETags are content hashes, conditional writes use ``O_EXCL``/rename."""

    def __init__(self, root: Path, uri: str, observer: Observer | None = None) -> None:
        super().__init__(uri, observer)
        self.local_root = root

    def _path(self, key: str) -> Path:
        assert self.local_root is not None
        return self.local_root / key

    def read(self, key: str) -> bytes:
        try:
            data = self._path(key).read_bytes()
        except FileNotFoundError:
            self.observer("get", "not_found", 0)
            raise ObjectNotFound(self.child(key)) from None
        except OSError as exc:
            self.observer("get", "error", 0)
            raise StorageError(self.child(key), exc.strerror or str(exc)) from None
        self.observer("get", "ok", len(data))
        return data

    def read_if_changed(self, key: str, etag: str | None) -> tuple[bytes | None, str]:
        data = self.read(key)
        new = _etag(data)
        return (None, new) if new == etag else (data, new)

    def write(
        self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None
    ) -> str:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        if if_none_match:
            try:
                # O_EXCL creates atomically or fails: the same guarantee as If-None-Match: *.
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                self.observer("put", "precondition_failed", 0)
                raise PreconditionFailed(self.child(key), "already exists") from None
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
        else:
            if if_match is not None:
                try:
                    current = _etag(path.read_bytes())
                except FileNotFoundError:
                    current = None
                # Not atomic against another local writer between read and rename; local
                # folders publish by rename (modelstore), this serves tests and tools.
                if current != if_match:
                    self.observer("put", "precondition_failed", 0)
                    raise PreconditionFailed(self.child(key), "changed since read")
            atomic_write(path, data)
        self.observer("put", "ok", 0)
        return _etag(data)

    def list(self, prefix: str = "") -> list[str]:
        assert self.local_root is not None
        root = self.local_root
        keys = []
        for dirpath, _, files in os.walk(root):
            for name in files:
                key = Path(dirpath, name).relative_to(root).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        self.observer("list", "ok", 0)
        return sorted(keys)

    def folders(self) -> builtins.list[str]:
        assert self.local_root is not None
        try:
            with os.scandir(self.local_root) as entries:
                names = [e.name for e in entries if e.is_dir()]
        except FileNotFoundError:
            names = []  # a missing local folder is an empty one, as in list_versions
        except OSError as exc:
            self.observer("list", "error", 0)
            raise StorageError(self.uri, exc.strerror or str(exc)) from None
        self.observer("list", "ok", 0)
        return sorted(names)

    def upload(self, src: Path, key: str) -> None:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with atomic_writer(dest) as tmp:
            tmp.write_bytes(src.read_bytes())
        self.observer("put", "ok", 0)

    def entries(self, prefix: str = "") -> builtins.list[tuple[str, int]]:
        assert self.local_root is not None
        root = self.local_root
        found = []
        for dirpath, _, files in os.walk(root):
            for name in files:
                path = Path(dirpath, name)
                key = path.relative_to(root).as_posix()
                if key.startswith(prefix):
                    with contextlib.suppress(FileNotFoundError):  # removed while listed
                        found.append((key, path.stat().st_size))
        self.observer("list", "ok", 0)
        return sorted(found)

    def size(self, key: str) -> int:
        path = self._path(key)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise ObjectNotFound(self.child(key)) from None
        except OSError as exc:
            raise StorageError(self.child(key), exc.strerror or str(exc)) from None
        if path.is_dir():
            raise ObjectNotFound(self.child(key), "is a folder, not a file")
        return st.st_size

    def read_range(self, key: str, start: int, stop: int) -> bytes:
        try:
            fd = os.open(self._path(key), os.O_RDONLY)
        except FileNotFoundError:
            self.observer("get", "not_found", 0)
            raise ObjectNotFound(self.child(key)) from None
        try:
            data = os.pread(fd, max(stop - start, 0), start)
        finally:
            os.close(fd)
        self.observer("get", "ok", len(data))
        return data

    def open_output(self, key: str) -> Output:
        return _LocalOutput(self._path(key), self.child(key))

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def check(self) -> None:
        assert self.local_root is not None
        root = self.local_root
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(self.uri, exc.strerror or str(exc)) from None
        if not os.access(root, os.W_OK | os.X_OK):
            raise StorageError(self.uri, "model folder is not writable")


def _etag(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


class ObjectStore(Store):
    """``s3://bucket/prefix`` or ``gs://bucket/prefix`` through obstore (Rust object_store).

    Configuration comes from the standard environment: for S3 ``AWS_ACCESS_KEY_ID``,
    ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION``/``AWS_DEFAULT_REGION``,
    ``AWS_ENDPOINT_URL``/``AWS_ENDPOINT_URL_S3`` (MinIO, Ceph RGW; plain http allowed for an
    http:// endpoint), web identity (IRSA) and instance metadata; for GCS
    ``GOOGLE_APPLICATION_CREDENTIALS`` / ``GOOGLE_SERVICE_ACCOUNT`` and workload identity.
    Short timeouts and two retries: a poll that cannot reach the store fails within seconds
    and is tried again on the next poll, rather than holding a thread for minutes.
    """

    def __init__(self, uri: str, observer: Observer | None = None) -> None:
        super().__init__(uri, observer)
        self._store: Any = None

    @property
    def store(self) -> Any:
        if self._store is None:
            self._store = _connect(self.uri)
        return self._store

    def _fail(self, kind: str, key: str, exc: Exception) -> StorageError:
        """The exception for a failed request, after counting it."""
        from obstore import exceptions as oe

        uri = self.child(key) if key else self.uri
        text = _one_line(exc)
        # obstore cuts the server's XML short ("<Code>NoSuchBucke..."); a LIST answered 404
        # can only mean a missing bucket.
        if "NoSuchBuck" in text or (kind == "list" and "404 Not Found" in text):
            self.observer(kind, "not_found", 0)
            bucket = urlsplit(self.uri).netloc
            return ObjectNotFound(
                uri, f"bucket '{bucket}' does not exist (NoSuchBucket)", bucket_missing=True
            )
        # obstore raises the builtin OSError subclasses for some of its errors.
        if isinstance(exc, oe.NotFoundError | FileNotFoundError):
            self.observer(kind, "not_found", 0)
            return ObjectNotFound(uri)
        if isinstance(exc, oe.AlreadyExistsError | oe.PreconditionError | FileExistsError):
            self.observer(kind, "precondition_failed", 0)
            return PreconditionFailed(uri, "the object exists or changed since read")
        self.observer(kind, "error", 0)
        # obstore reports an S3 403 as a generic error carrying the server's XML: its <Code>
        # says which credential is wrong, which is what the user needs to hear.
        full = str(exc)  # not the shortened line: a long URL can push <Code> past its end
        code = match.group(1) if (match := _ERROR_CODE.search(full)) else None
        denied = isinstance(exc, oe.PermissionDeniedError | oe.UnauthenticatedError)
        if denied or isinstance(exc, PermissionError) or _DENIED_STATUS.search(full):
            if why := _DENIED_CAUSES.get(code or ""):
                return StorageError(uri, f"access denied ({code}): {why}; check the credentials")
            # an answer we have no words for (GCS's JSON errors): the server's own, shortened
            return StorageError(
                uri, f"access denied ({code or 'forbidden'}; check the credentials): {text}"
            )
        return StorageError(uri, text)

    def read(self, key: str) -> bytes:
        body, _ = self._get(key, None)
        assert body is not None
        return body

    def read_if_changed(self, key: str, etag: str | None) -> tuple[bytes | None, str]:
        return self._get(key, etag)

    def _get(self, key: str, etag: str | None) -> tuple[bytes | None, str]:
        import obstore
        from obstore import exceptions as oe

        try:
            options: Any = {"if_none_match": etag} if etag is not None else {}
            result = obstore.get(self.store, key, options=options)
            data = bytes(result.bytes())
        except oe.NotModifiedError:
            self.observer("get", "not_modified", 0)
            return None, str(etag)
        except Exception as exc:
            raise self._fail("get", key, exc) from None
        self.observer("get", "ok", len(data))
        return data, str(result.meta.get("e_tag") or "")

    def write(
        self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None
    ) -> str:
        import obstore

        mode: Any = "overwrite"
        if if_none_match:
            mode = "create"
        elif if_match is not None:
            mode = {"e_tag": if_match}
        try:
            result = obstore.put(self.store, key, data, mode=mode)
        except Exception as exc:
            raise self._fail("put", key, exc) from None
        self.observer("put", "ok", 0)
        return str(result.get("e_tag") or "")

    def list(self, prefix: str = "") -> list[str]:
        import obstore

        keys: list[str] = []
        try:
            for batch in obstore.list(self.store, prefix=prefix or None):
                self.observer("list", "ok", 0)
                keys.extend(str(meta["path"]) for meta in batch)
        except Exception as exc:
            raise self._fail("list", "", exc) from None
        return sorted(keys)

    def folders(self) -> builtins.list[str]:
        import obstore

        try:
            result = obstore.list_with_delimiter(self.store)
        except Exception as exc:
            raise self._fail("list", "", exc) from None
        self.observer("list", "ok", 0)
        return sorted(str(p).rstrip("/").rsplit("/", 1)[-1] for p in result["common_prefixes"])

    def check(self) -> None:
        # One LIST of a key that cannot exist: proves the bucket, credentials and endpoint.
        self.list(".xor-dnn-check/")

    def entries(self, prefix: str = "") -> builtins.list[tuple[str, int]]:
        import obstore

        found: list[tuple[str, int]] = []
        try:
            for batch in obstore.list(self.store, prefix=prefix or None):
                self.observer("list", "ok", 0)
                found.extend((str(meta["path"]), int(meta["size"])) for meta in batch)
        except Exception as exc:
            raise self._fail("list", "", exc) from None
        return sorted(found)

    def size(self, key: str) -> int:
        import obstore

        try:
            meta = obstore.head(self.store, key)
        except Exception as exc:
            raise self._fail("head", key, exc) from None
        self.observer("head", "ok", 0)
        return int(meta["size"])

    def read_range(self, key: str, start: int, stop: int) -> bytes:
        import obstore

        if stop <= start:
            return b""
        try:
            data = bytes(obstore.get_range(self.store, key, start=start, end=stop))
        except Exception as exc:
            raise self._fail("get", key, exc) from None
        self.observer("get", "ok", len(data))
        return data

    def open_output(self, key: str) -> Output:
        import obstore

        try:
            writer = obstore.open_writer(self.store, key, buffer_size=_PART_BYTES)
        except Exception as exc:
            raise self._fail("put", key, exc) from None
        return _ObjectOutput(self, key, writer)

    def delete(self, key: str) -> None:
        import obstore

        try:
            obstore.delete(self.store, key)
        except Exception as exc:
            error = self._fail("delete", key, exc)
            if not isinstance(error, ObjectNotFound):
                raise error from None


_PART_BYTES = 8 << 20
"""Bytes buffered before an object-store output becomes a multipart upload (one part each)."""


class RangeReader(io.RawIOBase):
    """A seekable read-only view of one object; every read is one ranged request, so the
    bytes a job reads are exactly what the store's observer counts (Arrow's Parquet reader
    asks only for the footer and the column chunks it decodes)."""

    _KEEP = 1 << 20
    """The last read is kept when at most this long: Arrow reads a Parquet file's last 64 KiB
    for its footer, and a text reader a file's first KiBs for its header; for a small file
    those hold the data asked for next, which is then not fetched twice."""

    def __init__(self, store: Store, key: str, size: int) -> None:
        super().__init__()
        self.store, self.key, self.length = store, key, size
        self._pos = 0
        self._kept_at, self._kept = 0, b""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.length}[whence]
        self._pos = max(base + offset, 0)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        stop = min(self._pos + len(view), self.length)
        if stop <= self._pos:
            return 0
        data = self.read_range(self._pos, stop)
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def read(self, size: int = -1) -> bytes:
        # Arrow's Python-file adapter calls read() and wraps the bytes it gets without a copy;
        # RawIOBase's read() would copy them twice (into a bytearray, then into bytes).
        stop = self.length if size is None or size < 0 else min(self._pos + size, self.length)
        data = self.read_range(self._pos, stop)
        self._pos += len(data)
        return data

    def read_range(self, start: int, stop: int) -> bytes:
        """Bytes ``[start, stop)`` without moving the position (from the kept last read when
        it holds them)."""
        stop = min(stop, self.length)
        if stop <= start:
            return b""
        if self._kept_at <= start and stop <= self._kept_at + len(self._kept):
            return self._kept[start - self._kept_at : stop - self._kept_at]
        data = self.store.read_range(self.key, start, stop)
        if len(data) <= self._KEEP:
            self._kept_at, self._kept = start, data
        return data


class Output:
    """A write in progress: ``write`` bytes, then ``commit()`` (the object appears, whole) or
    ``abort()`` (nothing appears). ``close`` is a no-op, so a library that closes what it was
    handed (Arrow's writers) cannot publish a half-written file."""

    uri: str

    @property
    def file(self) -> Any:
        """What a writer should write to: this object, or (local) Arrow's native file for the
        temporary file, whose writes run without Python's lock while the model computes."""
        return self

    def write(self, data: Any) -> int:
        raise NotImplementedError

    def commit(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None

    @property
    def closed(self) -> bool:
        return False

    def tell(self) -> int:
        raise NotImplementedError


def local_temp_path(final: Path) -> Path:
    """A hidden name beside ``final`` (same folder, so the rename is atomic); globs skip it."""
    return final.with_name(f".{final.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


def discard_local_temp_files(final: Path) -> None:
    """Remove every temporary file this process made for ``final`` (one whose output object
    was never handed back: Ctrl-C or SIGTERM while it was being opened)."""
    for tmp in final.parent.glob(f".{final.name}.tmp-{os.getpid()}-*"):
        tmp.unlink(missing_ok=True)


class _LocalOutput(Output):
    """A hidden temp file beside the target, renamed onto it on commit."""

    def __init__(self, path: Path, uri: str) -> None:
        self.uri = uri
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = local_temp_path(path)
        import pyarrow as pa

        self._file = pa.OSFile(str(self.tmp), "wb")
        self._committed = False

    @property
    def file(self) -> Any:
        return self._file

    def write(self, data: Any) -> int:
        return int(self._file.write(data))

    def tell(self) -> int:
        return int(self._file.tell())

    def commit(self) -> None:
        self._file.close()
        os.chmod(self.tmp, 0o644 & ~_umask())
        try:
            os.replace(self.tmp, self.path)
        except OSError:
            self.tmp.unlink(missing_ok=True)
            raise
        self._committed = True

    def abort(self) -> None:
        self._file.close()
        self.tmp.unlink(missing_ok=True)
        # Aborted after its own commit (the job failed publishing a sibling output): outputs
        # appear together or not at all.
        if self._committed:
            self.path.unlink(missing_ok=True)


class _ObjectOutput(Output):
    """obstore's buffered writer: one PUT when small, else a multipart upload, which is
    completed on commit and aborted (``DELETE ?uploadId``) on abort."""

    def __init__(self, store: ObjectStore, key: str, writer: Any) -> None:
        self.uri = store.child(key)
        self._store, self._key, self._writer = store, key, writer
        self._written = 0
        self._committed = False

    def write(self, data: Any) -> int:
        try:
            # Unsigned bytes whatever the source: obstore refuses Arrow's signed-char buffers.
            n = int(self._writer.write(memoryview(data).cast("B")))
        except Exception as exc:
            raise self._store._fail("put", self._key, exc) from None
        self._written += n
        return n

    def tell(self) -> int:
        return self._written

    def commit(self) -> None:
        try:
            self._writer.close()
        except Exception as exc:
            raise self._store._fail("put", self._key, exc) from None
        self._store.observer("put", "ok", 0)
        self._committed = True

    def abort(self) -> None:
        if self._committed:
            self._store.delete(self._key)
            return
        # Leaving the writer's context with an exception aborts the multipart upload.
        with contextlib.suppress(Exception):
            self._writer.__exit__(RuntimeError, RuntimeError("aborted"), None)


def split_uri(uri: str) -> tuple[str, str]:
    """``(parent, name)``: ``s3://b/p/a.csv`` -> ``("s3://b/p", "a.csv")``, ``a.csv`` ->
    ``("", "a.csv")``."""
    text = os.fspath(uri).rstrip("/")
    if "://" in text:
        rest = text.split("://", 1)[1]
        if "/" not in rest.lstrip("/"):
            return text, ""
        head, _, name = text.rpartition("/")
        return head, name
    head, name = os.path.split(text)
    return head, name


def canonical(uri: str | os.PathLike[str]) -> str:
    """One spelling per file or object, to tell whether two names are the same thing."""
    store = open_store(uri)
    if store.local_root is not None:
        return os.path.realpath(store.local_root)
    return store.uri


_ERROR_CODE = re.compile(r"<Code>([A-Za-z]+)")
_DENIED_STATUS = re.compile(r"\b(401 Unauthorized|403 Forbidden)\b")
_DENIED_CAUSES = {
    "SignatureDoesNotMatch": "the secret key does not match the access key ID",
    "InvalidAccessKeyId": "the store knows no such access key ID",
    "AccessDenied": "these credentials may not access this bucket or prefix",
    "ExpiredToken": "the session token has expired",
    "InvalidToken": "the session token is invalid",
}


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = " ".join(lines) if lines else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


CREDENTIALS_DIR_ENV = "XOR_DNN_STORE_CREDENTIALS_DIR"
"""A folder of files named like the variables the store reads (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION``, ``AWS_ENDPOINT_URL``,
``GOOGLE_SERVICE_ACCOUNT_KEY``), each holding the value: a Kubernetes Secret mounted as files,
so credentials stay out of the process environment. A variable that is set wins."""


def _setting(name: str) -> str | None:
    value = os.environ.get(name)
    if value:
        return value
    folder = os.environ.get(CREDENTIALS_DIR_ENV)
    if not folder:
        return None
    try:
        return (Path(folder) / name).read_text().strip() or None
    except OSError:  # absent: the Secret does not set it
        return None


def _connect(uri: str) -> Any:
    """An obstore store for ``uri``, configured from the environment (see ObjectStore)."""
    from datetime import timedelta

    from obstore.store import from_url

    retry = {
        "max_retries": 2,
        "retry_timeout": timedelta(seconds=10),
        "backoff": {
            "init_backoff": timedelta(milliseconds=100),
            "max_backoff": timedelta(seconds=1),
            "base": 2,
        },
    }
    client: dict[str, Any] = {"connect_timeout": "3s", "timeout": "10s"}
    config: dict[str, Any] = {}
    if uri.startswith("s3://"):
        endpoint = _setting("AWS_ENDPOINT_URL_S3") or _setting("AWS_ENDPOINT_URL")
        if endpoint:
            config["endpoint"] = endpoint
            if endpoint.startswith("http://"):
                client["allow_http"] = True
        config["region"] = _setting("AWS_REGION") or _setting("AWS_DEFAULT_REGION") or "us-east-1"
        for key, name in (
            ("access_key_id", "AWS_ACCESS_KEY_ID"),
            ("secret_access_key", "AWS_SECRET_ACCESS_KEY"),
            ("session_token", "AWS_SESSION_TOKEN"),
        ):
            if value := _setting(name):
                config[key] = value
    elif key_json := _setting("GOOGLE_SERVICE_ACCOUNT_KEY"):
        config["service_account_key"] = key_json
    connect: Any = from_url  # its overloads want literal TypedDicts; ours are built at run time
    return connect(uri, config=config or None, client_options=client, retry_config=retry)


def open_store(uri: str | os.PathLike[str], observer: Observer | None = None) -> Store:
    """The store for a local path, ``file://`` URI, ``s3://bucket/prefix`` or ``gs://...``."""
    text = os.fspath(uri)
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme in ("s3", "gs"):
        if not parts.netloc:
            raise StorageError(text, f"no bucket in the URI (expected {scheme}://bucket/prefix)")
        return ObjectStore(text, observer)
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise StorageError(text, "file:// URIs name a local path (file:///path)")
        path = Path(unquote(parts.path))
        return LocalStore(path, text, observer)
    if scheme and len(scheme) > 1:  # one letter is a Windows drive, not a scheme
        raise StorageError(text, f"unsupported scheme '{scheme}://' (use a path, s3:// or gs://)")
    return LocalStore(Path(text), text, observer)


def is_remote(uri: str | os.PathLike[str]) -> bool:
    """True when ``uri`` names an object store rather than a local folder."""
    return open_store(uri).local_root is None


def name_of(uri: str | os.PathLike[str]) -> str:
    """The last path segment: ``s3://b/models/xor`` and ``models/xor`` are both ``xor``."""
    store = open_store(uri)
    if store.local_root is not None:
        return Path(os.path.abspath(store.local_root)).name
    return store.uri.rsplit("/", 1)[-1] if "/" in store.uri.split("://", 1)[1] else ""
