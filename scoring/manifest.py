"""Completion markers and job manifests: what ``--resume`` and ``--merge`` trust.

A marker ``.<name>.done.json`` is written beside each output and each rejects file once both
are published; it records the input (URI, size, the shard or row groups of it), the counts,
the model version and, for a text shard numbered from its own start, the lines in its byte
range (``--merge`` adds the earlier shards' lines to make its reject rows global). An output
without its marker is unfinished: ``--resume`` scores it again, ``--merge`` refuses it.

A dataset job also writes ``_xor_dnn_manifest[-part-KKKKK-of-NNNNN].json`` at the output root:
every input of the shard, its output and counts, the model version and the duration. Both
names start with ``.`` or ``_``, which pyarrow.dataset, Spark and this scorer's own input
listing skip.
"""

from __future__ import annotations

import json
from typing import Any

from scoring.shards import Shard
from xor_dnn.storage import ObjectNotFound, Store

MANIFEST = "_xor_dnn_manifest"


def marker_key(key: str) -> str:
    folder, _, name = key.rpartition("/")
    marker = f".{name}.done.json"
    return f"{folder}/{marker}" if folder else marker


def write_marker(store: Store, key: str, record: dict[str, Any]) -> None:
    store.write(marker_key(key), json.dumps(record, indent=1).encode())


def read_marker(store: Store, key: str) -> dict[str, Any] | None:
    """The marker of ``key``, or None when there is none (or it is not one of ours)."""
    try:
        data = json.loads(store.read(marker_key(key)))
    except (ObjectNotFound, ValueError):
        return None
    return data if isinstance(data, dict) else None


def manifest_key(shard: Shard) -> str:
    if shard.count == 1:
        return f"{MANIFEST}.json"
    return f"{MANIFEST}-part-{shard.index:05d}-of-{shard.count:05d}.json"


def write_manifest(store: Store, shard: Shard, record: dict[str, Any]) -> str:
    key = manifest_key(shard)
    store.write(key, json.dumps(record, indent=1).encode())
    return store.child(key)
