"""Helpers shared by tests: a tiny real model published in the production layout, and POST
requests held in flight over a raw socket."""

from __future__ import annotations

import socket
from pathlib import Path

from training.data import generated_dataset
from training.model import ModelConfig
from training.train import PublishedVersion, train_and_publish

TINY_POINTS = 600


def tiny_config(*, epochs: int = 30, seed: int = 0) -> ModelConfig:
    """A (16, 8) net with a high learning rate: ~97% accurate after 30 quick epochs."""
    return ModelConfig(
        hidden_units=(16, 8), dropout=0.0, epochs=epochs, seed=seed, learning_rate=0.02
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
