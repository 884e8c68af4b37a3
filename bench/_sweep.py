"""Candidate sweeps for issue 18: every network of a candidate trained at once, in one graph.

``bench.quality`` trains through ``xor-dnn train`` (Keras), about 45 s per dataset for 5 runs
here; a sweep of 25 candidates on 70 datasets would take days. This trainer builds all
``datasets x runs`` networks of one candidate as a single batch of matrix products and trains
them together in one ``tf.function``, with what Keras' ``fit`` does for the default network:
Glorot-uniform kernels and zero biases, Adam (epsilon 1e-7), binary cross-entropy on logits
(with ``gce_q`` the generalized cross-entropy instead), a fresh shuffle per epoch and network,
a last batch of the remainder (masked), inverted dropout after each hidden layer. About 70 s
per candidate on 70 datasets x 5 runs.

It is for *choosing*: its figures are close to, not equal to, ``xor-dnn train``'s (other
random streams). What is chosen is then reported once through ``bench.quality``.

    python -m bench._sweep --set tuning2 '{"schedule": "cosine", "learning_rate": 0.01}' ...

Each candidate is a JSON object of :class:`Candidate` fields; one JSON line per candidate is
appended to ``--out``. Gaps are to each dataset's ceiling (the true rule on its test split),
in points: ``single`` is the mean over the runs, ``ensemble`` their mean probability, and with
``"distill": true`` ``student`` the mean over networks of one run's size and training steps
fitted to that mean probability (knowledge distillation: the ensemble's accuracy at one
network's serving cost).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from bench.quality import SETS, Data, datasets

ACTIVATIONS = ("relu", "tanh", "elu", "gelu")


@dataclass(frozen=True)
class Candidate:
    hidden_units: tuple[int, ...] = (64, 64)
    dropout: float = 0.1
    learning_rate: float = 0.01
    schedule: str = "cosine"
    """``constant`` or ``cosine`` (to 0 at the last step)."""
    epochs: int = 100
    batch_size: int = 32
    activation: str = "relu"
    input_noise: float = 0.0
    """Standard deviation of Gaussian noise added to the inputs while training."""
    l1_first: float = 0.0
    """L1 penalty on the first layer's kernel."""
    l2: float = 0.0
    """L2 penalty on every kernel (teachers and students)."""
    label_smoothing: float = 0.0
    """Teachers' hard labels y become y (1 - s) + s / 2."""
    gce_q: float = 0.0
    """With q > 0, teachers minimise the generalized cross-entropy (1 - p_y^q) / q (Zhang &
    Sabuncu 2018, robust to label noise) instead of binary cross-entropy."""
    bootstrap: bool = False
    """Each teacher fits a resample with replacement of the fit points (bagging)."""
    select_best: int = 0
    """With k > 0, the ensemble (and the students' soft labels) is the mean of the k runs with
    the lowest binary cross-entropy on the fit points (dropout off): training data only."""
    runs: int = 5
    distill: bool = False
    """Also train students: networks of the same shape fitted to the runs' mean probability
    (soft labels) on the training points plus ``distill_extra`` points drawn uniformly in
    their bounding box, for as many steps as one run; scored as ``student``."""
    distill_extra: int = 2250
    distill_dropout: float = 0.2
    distill_seeds: int = 2
    """Students per dataset (their gaps are averaged)."""

    def __post_init__(self) -> None:
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"schedule must be constant or cosine, got {self.schedule!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.distill_extra < 0:
            raise ValueError(f"distill_extra must be >= 0, got {self.distill_extra}")
        if not 0 <= self.distill_dropout < 1:
            raise ValueError(f"distill_dropout must be in [0, 1), got {self.distill_dropout}")
        if self.distill_seeds < 1:
            raise ValueError(f"distill_seeds must be >= 1, got {self.distill_seeds}")


class Split(NamedTuple):
    """One dataset, split as ``xor-dnn train`` splits it, with its ceiling."""

    name: str
    noise: float
    fit: Any
    fit_labels: Any
    test: Any
    test_labels: Any
    ceiling: float


def prepare(set_name: str, limit: int | None = None) -> list[Split]:
    """The set's datasets (``bench.quality.datasets``), each :func:`split`."""
    return [split(data) for data in datasets(set_name, None, limit)]


def split(data: Data) -> Split:
    """``data`` split as ``xor-dnn train`` splits it (``training.train.split_dataset``), with
    its ceiling."""
    from training.data import true_rule
    from training.train import split_dataset

    parts = split_dataset(data.load())
    test, test_labels = parts.test_points, parts.test_labels
    ceiling = float(np.mean(true_rule(test) == test_labels))
    fit_labels = parts.fit_labels.astype(np.float32)
    return Split(data.name, data.noise or 0.0, parts.fit_points, fit_labels, test, test_labels,
                 ceiling)  # fmt: skip


# Where the sweep measures a boundary against the true rule without a test split's luck: a grid
# over the generator's square [-5, 5]², cells 0.01 wide within a unit of the axes (where every
# disagreement of a trained network lies, docs/training.md) and 0.1 beyond. Each cell is weighted
# by its share of the square, so a sum of weights is an area fraction.
_EDGES = np.unique(
    np.concatenate([np.linspace(-5, -1, 41), np.linspace(-1, 1, 201), np.linspace(1, 5, 41)])
)
_CENTRES = (_EDGES[:-1] + _EDGES[1:]) / 2
GRID = np.stack(np.meshgrid(_CENTRES, _CENTRES, indexing="ij"), -1).reshape(-1, 2)
GRID_WEIGHTS = np.outer(np.diff(_EDGES), np.diff(_EDGES)).ravel() / 100.0
_GRID_TRUTH = GRID[:, 0] * GRID[:, 1] < 0
GRID_CHUNK = 8192


def disagreement(predict: Any, copies: int, count: int, weights: Any = None) -> tuple[Any, Any]:
    """Area fraction of the square where a class differs from the true rule, for each of the
    ``count * copies`` networks of ``predict`` (``(count, copies)``) and for each group of
    ``copies``' mean probability (``(count,)``; weighted by ``weights`` ``(count, copies)``)."""
    groups = np.full((count, copies), 1 / copies) if weights is None else weights
    each = np.zeros((count, copies))
    mean = np.zeros(count)
    for start in range(0, len(GRID), GRID_CHUNK):
        cells = GRID[start : start + GRID_CHUNK]
        truth = _GRID_TRUTH[start : start + GRID_CHUNK]
        cell = GRID_WEIGHTS[start : start + GRID_CHUNK]
        prob = predict(np.repeat(cells[None], count * copies, axis=0))
        prob = prob.reshape(count, copies, len(cells))
        each += ((prob > 0.5) != truth) @ cell
        mean += ((np.einsum("dc,dcp->dp", groups, prob) > 0.5) != truth) @ cell
    return each, mean


def expected_gap(area: float, noise: float) -> float:
    """Gap to the ceiling in points, expected over test points drawn like the data: a test point
    in the disagreement area costs a point of accuracy when its label is clean and gains one
    when it is flipped."""
    return area * (1 - 2 * noise) * 100


def chance_over(area: float, noise: float, test_points: int, limit: float = 1.0) -> float:
    """Chance that a test split of ``test_points`` drawn like the data puts a boundary with this
    disagreement area more than ``limit`` points below the ceiling: of the k test points in the
    area (binomial), clean ones are lost and flipped ones gained, and the gap is
    (lost - gained) / test_points."""
    from scipy.stats import binom

    k = np.arange(test_points + 1)
    in_area = binom.pmf(k, test_points, area)
    # lost - gained = 2 * lost - k > limit points of test_points
    need = np.floor((limit / 100 * test_points + k) / 2).astype(np.int64)
    return float(np.sum(in_area * binom.sf(need, k, 1 - noise)))


def reference_area(d: Split) -> float:
    """Disagreement area of the reference learner (``bench.quality``) on ``d``."""
    from bench.quality import reference_lines

    a, b = reference_lines(d.fit, d.fit_labels)
    return float((((GRID[:, 0] - a) * (GRID[:, 1] - b) < 0) != _GRID_TRUTH) @ GRID_WEIGHTS)


def train(data: Sequence[Split], c: Candidate, seed: int = 0) -> list[dict[str, Any]]:
    """Train every (dataset, run) network of ``c`` (and its students, with ``distill``); each
    dataset's gaps in points."""
    runs = c.runs
    x = np.stack([d.fit for d in data for _ in range(runs)])
    y = np.stack([d.fit_labels for d in data for _ in range(runs)])
    if c.bootstrap:
        resample = np.random.default_rng(seed + 3).integers(0, x.shape[1], x.shape[:2])
        x = np.take_along_axis(x, resample[:, :, None], 1)
        y = np.take_along_axis(y, resample, 1)
    if c.label_smoothing:
        y = y * (1 - c.label_smoothing) + c.label_smoothing / 2
    teachers = _fit(x, y, c, c.dropout, c.epochs, seed, c.gce_q)
    test = np.stack([d.test for d in data])
    prob = teachers(np.repeat(test, runs, axis=0)).reshape(len(data), runs, -1)
    keep = np.ones((len(data), runs))
    if c.select_best:
        fitted = np.clip(teachers(x).reshape(len(data), runs, -1), 1e-7, 1 - 1e-7)
        labels = y.reshape(len(data), runs, -1)
        loss = -np.mean(labels * np.log(fitted) + (1 - labels) * np.log(1 - fitted), axis=2)
        keep = (np.argsort(np.argsort(loss, 1), 1) < c.select_best).astype(float)
    weights = keep / keep.sum(1, keepdims=True)
    each, mean = disagreement(teachers, runs, len(data), weights)
    rows = []
    for d, p, w, areas, area in zip(data, prob, weights, each, mean, strict=True):
        rows.append({"dataset": d.name, "noise": d.noise, "test_points": len(d.test),
                     "single": [_gap(d, q) for q in p], "ensemble": _gap(d, w @ p),
                     "single_area": areas.tolist(), "ensemble_area": float(area),
                     "reference_area": reference_area(d)})  # fmt: skip
    if c.distill:
        rng = np.random.default_rng(seed + 1)
        points = np.stack([
            np.concatenate([d.fit, rng.uniform(d.fit.min(0), d.fit.max(0), (c.distill_extra, 2))])
            for d in data
        ])  # fmt: skip
        soft = teachers(np.repeat(points, runs, axis=0)).reshape(len(data), runs, -1)
        soft = np.einsum("dr,drp->dp", weights, soft)
        k = c.distill_seeds
        epochs = max(1, round(c.epochs * len(data[0].fit) / points.shape[1]))  # one run's steps
        students = _fit(
            np.repeat(points, k, axis=0), np.repeat(soft, k, axis=0), c, c.distill_dropout,
            epochs, seed + 2,
        )  # fmt: skip
        student = students(np.repeat(test, k, axis=0)).reshape(len(data), k, -1)
        areas, _ = disagreement(students, k, len(data))
        for row, d, p, a in zip(rows, data, student, areas, strict=True):
            row["student"] = [_gap(d, q) for q in p]
            row["student_area"] = a.tolist()
    return rows


def _gap(d: Split, probability: Any) -> float:
    return (d.ceiling - float(np.mean((probability > 0.5) == d.test_labels))) * 100


def _fit(
    inputs: Any, labels: Any, c: Candidate, dropout: float, epochs: int, seed: int, gce_q: float = 0
) -> Any:
    """Train one network of ``c``'s shape per row of ``inputs`` ``(m, n, 2)`` on ``labels``
    ``(m, n)`` (hard or soft); returns ``points (m, k, 2) -> probabilities (m, k)``."""
    import tensorflow as tf

    m, n = labels.shape
    rng = np.random.default_rng(seed)
    x = tf.constant(inputs.astype(np.float32))
    y = tf.constant(labels.astype(np.float32))
    sizes = (2, *c.hidden_units, 1)
    kernels = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        limit = math.sqrt(6 / (fan_in + fan_out))
        kernels.append(
            tf.Variable(rng.uniform(-limit, limit, (m, fan_in, fan_out)), dtype=tf.float32)
        )
    biases = [tf.Variable(tf.zeros((m, 1, size))) for size in sizes[1:]]
    params = kernels + biases
    first = [tf.Variable(tf.zeros_like(p)) for p in params]
    second = [tf.Variable(tf.zeros_like(p)) for p in params]
    steps_per_epoch = math.ceil(n / c.batch_size)
    padded = steps_per_epoch * c.batch_size
    total = steps_per_epoch * epochs
    order = np.zeros((epochs, m, padded), np.int64)
    for epoch in range(epochs):
        for k in range(m):
            order[epoch, k, :n] = rng.permutation(n)
    batches = order.reshape(epochs, m, steps_per_epoch, c.batch_size).transpose(0, 2, 1, 3)
    index = tf.constant(batches.reshape(total, m, c.batch_size))
    mask = np.concatenate([np.ones(n), np.zeros(padded - n)]).reshape(steps_per_epoch, -1)
    masks = tf.constant(np.tile(mask, (epochs, 1)).astype(np.float32))
    act = {"relu": tf.nn.relu, "tanh": tf.nn.tanh, "elu": tf.nn.elu, "gelu": tf.nn.gelu}[
        c.activation
    ]

    def forward(h: Any, key: Any = None) -> Any:
        for i in range(len(c.hidden_units)):
            h = act(tf.matmul(h, kernels[i]) + biases[i])
            if key is not None and dropout > 0:
                u = tf.random.stateless_uniform(tf.shape(h), seed=key + i)
                h = h * tf.cast(u >= dropout, tf.float32) / (1 - dropout)
        return tf.matmul(h, kernels[-1]) + biases[-1]

    @tf.function  # type: ignore[untyped-decorator]
    def loop() -> None:
        for t in tf.range(total):
            step = tf.cast(t, tf.float32)
            rate = tf.constant(c.learning_rate)
            if c.schedule == "cosine":
                rate = c.learning_rate * 0.5 * (1 + tf.cos(math.pi * step / total))
            xb = tf.gather(x, index[t], batch_dims=1)
            yb = tf.gather(y, index[t], batch_dims=1)
            if c.input_noise:
                noise = tf.random.stateless_normal(tf.shape(xb), seed=tf.stack([t, 99]))
                xb = xb + noise * c.input_noise
            with tf.GradientTape() as tape:
                logits = forward(xb, tf.stack([t, 1]))[:, :, 0]
                if gce_q:
                    p = tf.sigmoid(logits)
                    p_label = yb * p + (1 - yb) * (1 - p)
                    point = (1 - tf.pow(p_label + 1e-7, gce_q)) / gce_q
                else:
                    point = tf.nn.sigmoid_cross_entropy_with_logits(labels=yb, logits=logits)
                loss = tf.reduce_sum(tf.reduce_sum(point * masks[t], 1) / tf.reduce_sum(masks[t]))
                if c.l2:
                    loss += c.l2 * tf.add_n([tf.reduce_sum(k * k) for k in kernels])
                if c.l1_first:
                    loss += c.l1_first * tf.reduce_sum(tf.abs(kernels[0]))
            grads = tape.gradient(loss, params)
            for p, g, m1, m2 in zip(params, grads, first, second, strict=True):
                m1.assign(0.9 * m1 + 0.1 * g)
                m2.assign(0.999 * m2 + 0.001 * g * g)
                unbiased = m1 / (1 - 0.9 ** (step + 1))
                scale = tf.sqrt(m2 / (1 - 0.999 ** (step + 1))) + 1e-7
                p.assign_sub(rate * unbiased / scale)

    loop()

    def predict(points: Any) -> Any:
        return tf.sigmoid(forward(tf.constant(points.astype(np.float32)))).numpy()[:, :, 0]

    return predict


def summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Test-split gaps (``single``, ``ensemble``, ``student``) and, free of a test split's luck,
    grid figures for the same models and the reference learner: ``*_grid``, the mean expected
    gap in points, and ``*_over``, the mean chance of a dataset more than 1.0 point below its
    ceiling (issue 18's per-dataset bound), per dataset drawn like these."""
    single = np.array([np.mean(r["single"]) for r in rows])
    ensemble = np.array([r["ensemble"] for r in rows])
    out: dict[str, Any] = {
        "datasets": len(rows),
        "single": round(float(single.mean()), 3),
        "ensemble": round(float(ensemble.mean()), 3),
        "ensemble_worst": round(float(ensemble.max()), 2),
        "ensemble_over_1": int((ensemble > 1.0 + 1e-9).sum()),
    }
    if rows and "student" in rows[0]:
        student = np.array([np.mean(r["student"]) for r in rows])
        every = np.concatenate([r["student"] for r in rows])
        out |= {
            "student": round(float(student.mean()), 3),
            "student_over_1": round(float((every > 1.0 + 1e-9).mean() * len(rows)), 1),
        }
    if rows and "single_area" in rows[0]:
        models = [("single", "single_area"), ("ensemble", "ensemble_area"),
                  ("student", "student_area"), ("reference", "reference_area")]  # fmt: skip
        for name, key in models:
            if key not in rows[0]:
                continue
            gaps, overs = [], []
            for r in rows:
                for area in np.atleast_1d(r[key]):
                    gaps.append(expected_gap(area, r["noise"]))
                    overs.append(chance_over(area, r["noise"], r["test_points"]))
            out[f"{name}_grid"] = round(float(np.mean(gaps)), 3)
            out[f"{name}_over"] = round(float(np.mean(overs)), 4)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench._sweep",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("candidates", nargs="+", help="JSON objects of Candidate fields")
    parser.add_argument("--set", default="tuning2", choices=list(SETS), help="dataset set")
    parser.add_argument("--limit", type=int, default=None, help="first N datasets per noise")
    parser.add_argument("--seed", type=int, default=0, help="first seed of the random streams")
    parser.add_argument("--out", type=Path, default=Path("bench/results/sweep.jsonl"))
    args = parser.parse_args(argv)
    try:
        candidates = [Candidate(**json.loads(text)) for text in args.candidates]
    except (TypeError, ValueError) as exc:
        print(f"bad candidate: {exc}", file=sys.stderr)
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    data = prepare(args.set, args.limit)
    if not data:
        print("no dataset to train on", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for c in candidates:
        started = time.monotonic()
        rows = train(data, c, args.seed)
        line = {"set": args.set, "seed": args.seed, "candidate": asdict(c), **summary(rows)}
        line["seconds"] = round(time.monotonic() - started, 1)
        print(json.dumps(line), flush=True)
        with args.out.open("a") as f:
            f.write(json.dumps({**line, "rows": rows}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
