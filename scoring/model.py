"""The SavedModel as the batch scorer calls it: load a version, set the process up for a run
(TensorFlow on one thread, Arrow on the system allocator) and warm the model up."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from scoring.errors import ModelError

WARM_UP_ROWS = 65536
"""The largest warm-up call: the default chunk size (a bigger chunk only faults in more)."""
Predict = Callable[[NDArray[np.float32]], NDArray[np.float32]]
Loader = Callable[[], tuple[Predict, int, float]]
"""Returns (predict, model version, startup seconds); called once the input has been checked."""


def _one_tf_thread() -> None:
    """Run the model on one TensorFlow thread: the net is tiny, and TF's spinning pool threads
    would otherwise fight the reader and writer for this machine's few cores."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TensorFlow already started in this process (tests): keep its pools
        pass


def _system_allocator() -> None:
    """Allocate Arrow buffers with the C library's malloc instead of Arrow's bundled mimalloc.

    Every chunk allocates and frees the same few buffers. glibc hands them back to the next
    chunk; mimalloc returns freed pages to the OS and faults fresh ones in, zeroed as huge
    pages (``clear_page`` showed up under ``perf``). What it changed, measured, is in
    docs/scoring.md.
    """
    pa.set_memory_pool(pa.system_memory_pool())


def _warm_up(predict: Predict, version: int, rows: int) -> None:
    """Make the first signature calls here, as part of startup, and check their answers.

    The first call instantiates the graph, and the first call at a new size faults in that
    size's activation memory; neither depends on the input, so a run should not pay them inside
    its timed loop. The service does the same.
    """
    rng = np.random.default_rng(0)
    for n in sorted({1, max(rows, 1)}):
        points = rng.uniform(-5.0, 5.0, size=(n, 2)).astype(np.float32)
        try:
            probs = predict(points)
        except Exception as exc:  # TensorFlow raises many types; the job reports one
            raise ModelError(
                f"version {version}: warm-up call failed: {type(exc).__name__}: {exc}"
            ) from exc
        if probs.shape != (n,) or not np.all((probs >= 0.0) & (probs <= 1.0)):
            raise ModelError(
                f"version {version}: warm-up returned misshapen, non-finite or out-of-range"
                f" probabilities (shape {probs.shape})"
            )


def resolve_version(model_dir: str | os.PathLike[str], version: int | None) -> int:
    """``version`` checked to exist under ``model_dir``, or the newest one when None.

    Lists the repository only (no TensorFlow): a Spark driver resolves the version once so
    that every executor loads the same one.
    """
    from xor_dnn.modelstore import list_versions
    from xor_dnn.storage import StorageError

    try:
        have = list_versions(model_dir)
    except StorageError as exc:
        raise ModelError(str(exc)) from None
    if version is None:
        if not have:
            raise ModelError(
                f"no model version under {model_dir} (train one with `xor-dnn train`,"
                " or pass --model-dir / set XOR_DNN_MODEL_DIR)"
            )
        return have[-1]
    if version not in have:
        raise ModelError(f"version {version} not found under {model_dir} (have: {have or 'none'})")
    return version


def load_model(
    model_dir: str | os.PathLike[str], version: int | None, *, warm_up_rows: int = WARM_UP_ROWS
) -> tuple[Predict, int, float]:
    """``(predict, version, seconds)`` for ``version`` (newest when None), TF import included.

    ``model_dir`` is a folder or a model-repository URI (``s3://…``, ``gs://…``). Also sets the
    process up for a run: TensorFlow on one thread, Arrow on the system allocator.

    ``seconds`` also covers warm-up calls of one point and of ``warm_up_rows`` points (pass
    the chunk size), so the scoring loop starts with a model already at full speed. Chunks of
    up to ``warm_up_rows`` points (at most :data:`WARM_UP_ROWS`) run in LiteRT, larger ones in
    the signature with the weights folded into constants, each only when it answers like the
    signature to float32 rounding (``xor_dnn.modelstore``; the savings are in docs/scoring.md).
    """
    from xor_dnn.modelstore import ModelStoreError, load_version
    from xor_dnn.storage import StorageError

    started = time.perf_counter()
    rows = max(1, min(warm_up_rows, WARM_UP_ROWS))
    version = resolve_version(model_dir, version)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _one_tf_thread()
    _system_allocator()
    try:
        model = load_version(model_dir, version, lite_max_points=rows)
    except (ModelStoreError, StorageError) as exc:
        raise ModelError(str(exc)) from exc
    _warm_up(model.predict, model.version, rows)
    return model.predict, model.version, time.perf_counter() - started
