"""Model versions published the way the training job does, some of them damaged: what the
reliability scenarios hot-reload a running service with."""

from __future__ import annotations

import os
import shutil
import subprocess  # nosec B404
import sys
from collections.abc import Callable
from pathlib import Path


def publish_copy(src: Path, root: Path, version: int, damage: Callable[[Path], None]) -> None:
    """Write a version the way the training job does: a temp folder renamed into place."""
    tmp = root / f".tmp-{version}"
    shutil.copytree(src, tmp)
    damage(tmp)
    tmp.rename(root / str(version))


def _truncate_graph(path: Path) -> None:
    pb = path / "saved_model.pb"
    pb.write_bytes(pb.read_bytes()[:200])


def _drop_variables(path: Path) -> None:
    shutil.rmtree(path / "variables")


def _wrong_signature(path: Path) -> None:
    """Replace the SavedModel by one whose serving_default takes [None, 3]."""
    code = (
        "import sys, tensorflow as tf\n"
        "class M(tf.Module):\n"
        "    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name='points')])\n"
        "    def serve(self, points):\n"
        "        return {'probability': tf.reduce_sum(points, axis=1, keepdims=True)}\n"
        "m = M()\n"
        "tf.saved_model.save(m, sys.argv[1], signatures={'serving_default': m.serve})\n"
    )
    for item in ("saved_model.pb", "variables", "fingerprint.pb"):
        target = path / item
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, env=env)


CORRUPTIONS: dict[str, Callable[[Path], None]] = {
    "truncated saved_model.pb": _truncate_graph,
    "missing variables/": _drop_variables,
    "wrong signature shape": _wrong_signature,
}
