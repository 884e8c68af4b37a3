"""The on-disk contract for model versions, shared by training, serving and batch scoring.

Layout (TensorFlow Serving's)::

    <model_dir>/<N>/saved_model.pb      N = 1, 2, 3 ... ; any other name is ignored
    <model_dir>/<N>/variables/...
    <model_dir>/<N>/metadata.json

The SavedModel's ``serving_default`` signature takes ``points``: float32 ``[None, 2]`` (x, y)
and returns ``{"probability": float32 [None, 1]}``, the class-1 probability. It loads with
plain ``tf.saved_model.load`` and no project code.

A version appears atomically: it is built in a hidden temporary folder inside ``model_dir``
and renamed to its number only once complete, so a poller never sees half a version and two
trainings running at once each get their own number.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import NDArray

SIGNATURE_NAME = "serving_default"
INPUT_NAME = "points"
OUTPUT_NAME = "probability"
METADATA_FILE = "metadata.json"
SAVED_MODEL_FILE = "saved_model.pb"
TMP_PREFIX = ".tmp-"


class ModelStoreError(Exception):
    """A model folder or version is missing, unreadable or not a valid xor-dnn SavedModel."""


def list_versions(model_dir: str | os.PathLike[str]) -> list[int]:
    """Version numbers under ``model_dir`` holding a ``saved_model.pb``, ascending.

    Names that are not plain positive integers (temp folders, ``latest``, files) are ignored,
    as TensorFlow Serving does. A missing folder has no versions.
    """
    root = Path(model_dir)
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return []
    versions = []
    for entry in entries:
        name = entry.name
        is_number = name.isdigit() and not name.startswith("0")
        if is_number and entry.is_dir() and (root / name / SAVED_MODEL_FILE).is_file():
            versions.append(int(name))
    return sorted(versions)


def latest_version(model_dir: str | os.PathLike[str]) -> int | None:
    """The newest version number, or None when the folder holds no version."""
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
) -> tuple[int, Path]:
    """Build a version with ``build(tmp_path)`` and rename it into place as the next number.

    ``build`` writes the complete version (SavedModel, metadata, pictures) into the empty
    folder it is given; the ``version`` field of its ``metadata.json`` is set to the number
    actually claimed. A number is claimed by the atomic rename itself, so concurrent
    trainings never share or overwrite a version. On any error the temporary folder is removed.
    """
    root = Path(model_dir)
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


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON to ``path`` via a temp file and rename, so readers never see half a file."""
    fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(payload, fh, indent=2, sort_keys=False, allow_nan=False)
            fh.write("\n")
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


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
    _fn: Any = field(default=None, repr=False)
    _keepalive: Any = field(default=None, repr=False)
    _call: Callable[[Any], Any] | None = field(default=None, repr=False)
    call_path: str = "signature"
    """How :meth:`predict` runs the signature: ``folded`` (its graph with the weights as
    constants), ``flat`` (its graph, variables read per call) or ``signature`` (the public
    call); the first two only when they answered the probe points like the last, to float32
    rounding (:data:`FAST_CALL_RTOL`, :data:`FAST_CALL_ATOL`)."""

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
    ``inspect.Signature`` and re-flattens it, about a third of a ~115 µs call here (a service
    makes thousands a second). ``_call_flat`` is the step that follows, with the same graph and
    captured variables. It is private API: :func:`_fast_call` uses it only if this TensorFlow
    has it and it answers like the public call.
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

    Constants spare the variable reads and the captured-input plumbing of each call: 45 µs
    instead of 77 µs per call of 16 points here (isolated), and in a busy service the model
    thread holds the GIL that much less (docs/service.md). Same graph and kernels, but oneDNN
    may order a sum differently with constant weights, so results can differ from the
    public call in the last bits (seen: 1e-29 on a probability of 3e-24). It is used only when
    it answers the probe points like the public call to float32 rounding.
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


def _fast_call(fn: Any) -> tuple[Callable[[Any], Any] | None, str]:
    """The fastest way to run ``fn`` that answers like ``fn(points=...)``, and its name.

    Tries the folded graph, then the flat call; each must give the public call's outputs to
    float32 rounding (relative :data:`FAST_CALL_RTOL`, absolute :data:`FAST_CALL_ATOL`) on the
    probe points at three batch sizes (1, 8 and 1024 points, which take different oneDNN
    paths), else the public call is used (``None``).
    """
    import tensorflow as tf

    grid = np.linspace(-6, 6, 32, dtype=np.float32)
    probes = [
        _PROBE_POINTS[:1],
        _PROBE_POINTS,
        np.stack(np.meshgrid(grid, grid), -1).reshape(-1, 2),
    ]
    tensors = [tf.constant(p) for p in probes]
    expected = [fn(**{INPUT_NAME: t})[OUTPUT_NAME].numpy() for t in tensors]
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


# One point per quadrant, the origin and points beyond the training square.
_PROBE_POINTS = np.array(
    [[1, 1], [-1, 1], [-1, -1], [1, -1], [0, 0], [4.5, -3], [-20, 7], [0.25, 9]], np.float32
)


def load_version(model_dir: str | os.PathLike[str], version: int) -> LoadedModel:
    """Load ``model_dir/<version>`` and check its signature matches the contract above.

    Raises :class:`ModelStoreError` naming the path when the folder is missing, the
    SavedModel does not load, or its ``serving_default`` signature has the wrong shape.
    """
    path = Path(model_dir) / str(version)
    if not (path / SAVED_MODEL_FILE).is_file():
        raise ModelStoreError(f"{path}: no {SAVED_MODEL_FILE} (version {version} not found)")
    metadata = read_metadata(path)
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
    call, call_path = _fast_call(fn)
    return LoadedModel(
        version=version,
        path=path,
        metadata=metadata,
        _fn=fn,
        _keepalive=obj,
        _call=call,
        call_path=call_path,
    )
