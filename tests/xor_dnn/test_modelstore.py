"""The model-version store: numbering, atomic publication, loading and signature checks."""

from __future__ import annotations

import json
import multiprocessing
import shutil
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from xor_dnn import modelstore
from xor_dnn.modelstore import (
    LITE_MAX_POINTS,
    ModelStoreError,
    latest_version,
    list_versions,
    load_folder,
    load_version,
    publish_version,
    read_metadata,
)


def _fake_build(tmp: Path) -> None:
    (tmp / modelstore.SAVED_MODEL_FILE).write_bytes(b"not a real model")
    (tmp / modelstore.METADATA_FILE).write_text(json.dumps({"version": None, "x": 1}))


def test_list_versions_ignores_non_integer_and_incomplete(tmp_path: Path) -> None:
    for name in ["1", "3", "10", ".tmp-abc", "latest", "007", "2"]:
        (tmp_path / name).mkdir()
    for name in ["1", "3", "10", ".tmp-abc", "latest", "007"]:
        (tmp_path / name / "saved_model.pb").write_bytes(b"x")
    (tmp_path / "5").write_text("a file, not a folder")
    # "2" has no saved_model.pb: still being written by a copier, or broken.
    assert list_versions(tmp_path) == [1, 3, 10]
    assert latest_version(tmp_path) == 10


def test_missing_dir_has_no_versions(tmp_path: Path) -> None:
    assert list_versions(tmp_path / "nope") == []
    assert latest_version(tmp_path / "nope") is None


def test_publish_numbers_versions_and_sets_metadata(tmp_path: Path) -> None:
    root = tmp_path / "xor"
    assert publish_version(root, _fake_build)[0] == 1
    number, path = publish_version(root, _fake_build)
    assert number == 2 and path == root / "2"
    assert read_metadata(path)["version"] == 2
    assert not [p for p in root.iterdir() if p.name.startswith(".tmp-")]


def test_failed_build_leaves_nothing(tmp_path: Path) -> None:
    def broken(tmp: Path) -> None:
        (tmp / "saved_model.pb").write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        publish_version(tmp_path, broken)
    assert list(tmp_path.iterdir()) == []


def test_build_without_savedmodel_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelStoreError, match=r"saved_model\.pb"):
        publish_version(tmp_path, lambda tmp: None)
    assert list(tmp_path.iterdir()) == []


def _publish_many(root: str, count: int) -> list[int]:
    return [publish_version(root, _fake_build)[0] for _ in range(count)]


def test_concurrent_publishers_never_share_a_number(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        results = pool.starmap(_publish_many, [(str(tmp_path), 10)] * 4)
    numbers = sorted(n for chunk in results for n in chunk)
    assert numbers == list(range(1, 41))
    assert list_versions(tmp_path) == numbers
    for n in numbers:
        assert read_metadata(tmp_path / str(n))["version"] == n


def test_load_version_round_trip(model_dir: Path) -> None:
    model = load_version(model_dir, 1)
    assert model.version == 1 and model.metadata["version"] == 1
    points = np.array([[2.0, 2.0], [2.0, -2.0], [-3.0, 3.0], [-4.0, -1.0]], dtype=np.float32)
    probs = model.predict(points)
    assert probs.shape == (4,) and probs.dtype == np.float32
    assert ((probs > 0.5).astype(int) == [0, 1, 1, 0]).all()
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        model.predict(np.zeros((3, 3)))


def test_fast_call_equals_the_public_call(model_dir: Path) -> None:
    import tensorflow as tf

    model = load_version(model_dir, 1)
    # This TensorFlow folds the weights, and the folded graph answers to float32 rounding.
    assert model.call_path == "folded" and model._call is not None
    assert model.signature is model._fn
    rng = np.random.default_rng(7)
    for n in (1, 7, 33, 1024, 5000):
        points = rng.uniform(-8, 8, size=(n, 2)).astype(np.float32)
        public = model.signature(points=tf.constant(points))["probability"].numpy().reshape(-1)
        got = model.predict(points)
        np.testing.assert_allclose(got, public, rtol=modelstore.FAST_CALL_RTOL, atol=1e-7)
        assert ((got > 0.5) == (public > 0.5)).all()


def test_each_fast_path_alone_equals_the_public_call(model_dir: Path) -> None:
    import tensorflow as tf

    model = load_version(model_dir, 1)  # keeps the variables alive while fn is used
    fn = model.signature
    points = tf.constant(np.random.default_rng(3).uniform(-6, 6, (64, 2)).astype(np.float32))
    public = fn(points=points)["probability"].numpy()
    for make in (modelstore._folded_call, modelstore._flat_signature_call):
        call = make(fn)
        assert call is not None, make.__name__
        np.testing.assert_allclose(call(points).numpy(), public, rtol=1e-5, atol=1e-7)


class _PublicOnly:
    """A signature as a TensorFlow without the private entry points would give."""

    def __init__(self, fn: object) -> None:
        self._fn = fn
        self.structured_outputs = fn.structured_outputs  # type: ignore[attr-defined]

    def __call__(self, **kwargs: object) -> object:
        return self._fn(**kwargs)  # type: ignore[operator]


def test_without_private_entry_points_the_public_call_serves(model_dir: Path) -> None:
    loaded = load_version(model_dir, 1)
    public_only = _PublicOnly(loaded.signature)
    assert modelstore._flat_signature_call(public_only) is None
    assert modelstore._folded_call(public_only) is None
    call, path = modelstore._fast_call(public_only)
    assert (call, path) == (None, "signature")
    public = modelstore.LoadedModel(1, loaded.path, _fn=public_only)
    points = np.array([[2.0, 2.0], [2.0, -2.0]], np.float32)
    np.testing.assert_allclose(
        public.predict(points),
        loaded.predict(points),
        rtol=modelstore.FAST_CALL_RTOL,
        atol=modelstore.FAST_CALL_ATOL,
    )


def test_a_fast_path_that_disagrees_is_not_used(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = load_version(model_dir, 1)
    fn = model.signature
    folded = modelstore._folded_call(fn)
    assert folded is not None

    def skewed_folded(f: object) -> object:  # answers differently from the public call
        return lambda t: folded(t) * 0.5

    monkeypatch.setattr(modelstore, "_folded_call", skewed_folded)
    call, path = modelstore._fast_call(fn)
    assert path == "flat" and call is not None

    def failing_flat(f: object) -> object:  # raises where the public call does not
        def call(t: object) -> object:
            raise RuntimeError("private API changed")

        return call

    monkeypatch.setattr(modelstore, "_flat_signature_call", failing_flat)
    assert modelstore._fast_call(fn) == (None, "signature")


def test_load_missing_and_corrupt_versions(model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelStoreError, match="version 99 not found"):
        load_version(model_dir, 99)
    shutil.copytree(model_dir / "1", tmp_path / "1")
    pb = tmp_path / "1" / "saved_model.pb"
    pb.write_bytes(pb.read_bytes()[:100])
    with pytest.raises(ModelStoreError, match="failed to load"):
        load_version(tmp_path, 1)


def test_load_rejects_wrong_signature(tmp_path: Path) -> None:
    import tensorflow as tf

    class Wrong(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="points")])
        def serve(self, points: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"probability": tf.reduce_sum(points, axis=1, keepdims=True)}

    module = Wrong()
    tf.saved_model.save(module, str(tmp_path / "1"), signatures={"serving_default": module.serve})
    with pytest.raises(ModelStoreError, match=r"float32 \[None, 2\]"):
        load_version(tmp_path, 1)


def test_published_version_is_world_readable(tmp_path: Path) -> None:
    _, path = publish_version(tmp_path, _fake_build)
    assert path.stat().st_mode & 0o755 == 0o755


def test_small_batches_run_in_litert_and_answer_like_tensorflow(model_dir: Path) -> None:
    import tensorflow as tf

    model = load_folder(model_dir / "1", 1, lite_max_points=LITE_MAX_POINTS)
    assert model.small_batch_path == "litert"
    assert "LiteRT up to 256 points" in model.runtime
    rng = np.random.default_rng(11)
    for n in (1, 2, 7, 64, 200, 256, 257, 1000):
        points = rng.uniform(-8, 8, size=(n, 2)).astype(np.float32)
        public = model.signature(points=tf.constant(points))["probability"].numpy().reshape(-1)
        got = model.predict(points)
        assert got.shape == (n,) and got.dtype == np.float32
        np.testing.assert_allclose(got, public, rtol=modelstore.FAST_CALL_RTOL, atol=1e-7)
        assert ((got > 0.5) == (public > 0.5)).all()


def test_large_batches_run_in_litert_up_to_lite_max_points(model_dir: Path) -> None:
    # The batch scorer's chunks: one interpreter per power-of-two size, made at first use.
    import tensorflow as tf

    model = load_folder(model_dir / "1", 1, lite_max_points=5000)
    assert model.small_batch_path == "litert"
    assert "LiteRT up to 5000 points" in model.runtime
    assert model.inline_max_points == LITE_MAX_POINTS  # the event loop's share stays small
    rng = np.random.default_rng(12)
    for n in (1, 300, 4096, 4097, 5000, 5001):  # 5001: past the runner, in TensorFlow
        points = rng.uniform(-8, 8, size=(n, 2)).astype(np.float32)
        public = model.signature(points=tf.constant(points))["probability"].numpy().reshape(-1)
        got = model.predict(points)
        assert got.shape == (n,) and got.dtype == np.float32
        np.testing.assert_allclose(got, public, rtol=modelstore.FAST_CALL_RTOL, atol=1e-7)
    assert model._lite is not None and max(model._lite._slots) == 8192


def test_litert_answers_threads_calling_at_once(model_dir: Path) -> None:
    model = load_folder(model_dir / "1", 1, lite_max_points=LITE_MAX_POINTS)
    plain = load_folder(model_dir / "1", 1)
    assert plain.small_batch_path is None
    rng = np.random.default_rng(5)
    batches = [rng.uniform(-6, 6, size=(n, 2)).astype(np.float32) for n in (1, 3, 9, 30, 100)]
    expected = [plain.predict(b) for b in batches]
    errors: list[str] = []

    def work(offset: int) -> None:
        for i in range(300):  # sizes interleave, so the threads share every interpreter
            k = (i + offset) % len(batches)
            got = model.predict(batches[k])
            if not np.allclose(got, expected[k], rtol=modelstore.FAST_CALL_RTOL, atol=1e-7):
                errors.append(f"thread {offset}, batch of {len(batches[k])}")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_small_batches_fall_back_to_tensorflow_without_litert(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An environment without the ai-edge-litert package: the import fails, TensorFlow answers.
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    model = load_folder(model_dir / "1", 1, lite_max_points=LITE_MAX_POINTS)
    assert model.small_batch_path is None and model.runtime == "TensorFlow (folded)"
    assert model.predict(np.array([[1, -1]], np.float32)).shape == (1,)


def test_a_graph_with_assertions_stays_in_tensorflow(tmp_path: Path) -> None:
    # LiteRT's converter drops Assert ops: the converted graph would answer where the
    # SavedModel fails. Such a graph must not run in LiteRT.
    import tensorflow as tf

    class Guarded(tf.Module):  # type: ignore[misc]
        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="points")])
        def serve(self, points: tf.Tensor) -> dict[str, tf.Tensor]:
            tf.debugging.assert_less(tf.abs(points), 1000.0, message="guard")
            return {"probability": tf.sigmoid(-points[:, 0:1] * points[:, 1:2])}

    module = Guarded()
    tf.saved_model.save(module, str(tmp_path / "1"), signatures={"serving_default": module.serve})
    model = load_folder(tmp_path / "1", 1, lite_max_points=LITE_MAX_POINTS)
    assert model.small_batch_path is None and model.inline_max_points == 0
    assert model.predict(np.array([[1.0, -1.0]], np.float32))[0] > 0.5
    with pytest.raises(tf.errors.InvalidArgumentError, match="guard"):
        model.predict(np.array([[5000.0, 1.0]], np.float32))
