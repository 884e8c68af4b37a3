"""Helpers shared by tests: a tiny real model published in the production layout, POST
requests held in flight over a raw socket, and model calls held at a gate."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from training.data import generated_dataset
from training.model import ModelConfig
from training.train import PublishedVersion, train_and_publish

TINY_POINTS = 600


def tiny_config(*, epochs: int = 30, seed: int = 0) -> ModelConfig:
    """A (16, 8) ReLU net with a high learning rate: ~97% accurate after 30 quick epochs."""
    return ModelConfig(
        hidden_units=(16, 8),
        activation="relu",
        dropout=0.0,
        epochs=epochs,
        seed=seed,
        learning_rate=0.02,
        gce_q=0.0,  # binary cross-entropy: the fixtures' figures predate the default's loss
        distill=False,  # one plain run: the session's models stay quick to train
    )


def publish_tiny(model_dir: Path, *, epochs: int = 30, seed: int = 0) -> PublishedVersion:
    """Train one run on 600 generated points with the real training job and publish it."""
    return train_and_publish(
        model_dir,
        data=generated_dataset(TINY_POINTS, seed=seed),
        runs=1,
        config=tiny_config(epochs=epochs, seed=seed),
    )


def publish_tiny_model(model_dir: Path, *, epochs: int = 30, seed: int = 0) -> int:
    """As :func:`publish_tiny`, returning only the version number."""
    return publish_tiny(model_dir, epochs=epochs, seed=seed).version


def slow_upload(url: str, body: bytes, path: str = "/predict") -> socket.socket:
    """A POST whose head and first body byte are sent, the rest held back: it stays in flight."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock.sendall(head + body[:1])
    return sock


def finish_upload(sock: socket.socket, body: bytes) -> int:
    """Send the rest of a :func:`slow_upload`'s body; its answer's status code."""
    sock.sendall(body[1:])
    status_line = sock.recv(65536).split(b"\r\n", 1)[0]
    sock.close()
    return int(status_line.split()[1])


@dataclass
class HeldModelCalls:
    """What :func:`hold_model_calls` gives a test."""

    gate: threading.Event = field(default_factory=threading.Event)
    """Set it to release every held call (and the ones still to come)."""
    entered: threading.Event = field(default_factory=threading.Event)
    """Set once a call is held at the gate."""
    batches: list[int] = field(default_factory=list)
    """The points of every model call, in order."""


def hold_model_calls(
    monkeypatch: pytest.MonkeyPatch,
    hold: Callable[[Any, int], bool],
    wait_s: float,
) -> HeldModelCalls:
    """Make ``ModelRegistry.predict`` wait at a gate (at most ``wait_s``) in the calls that
    ``hold(registry, call_number)`` picks (numbered from 1): a model call that hangs. A held
    call is a slow one, so no batch runs inline on the event loop (``runs_inline``)."""
    from service.registry import ModelRegistry

    held = HeldModelCalls()
    predict = ModelRegistry.predict

    def gated(self: ModelRegistry, version: Any, points: np.ndarray) -> np.ndarray:
        held.batches.append(len(points))
        if hold(self, len(held.batches)):
            held.entered.set()
            held.gate.wait(wait_s)
        return predict(self, version, points)

    monkeypatch.setattr(ModelRegistry, "predict", gated)
    monkeypatch.setattr(ModelRegistry, "runs_inline", lambda self, version, points: False)
    return held
