"""The lesson's Keras DNN: build it from a config and export it as a SavedModel version."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from xor_dnn.modelstore import INPUT_NAME, OUTPUT_NAME, SIGNATURE_NAME

if TYPE_CHECKING:
    import keras


LESSON_HIDDEN_UNITS = (6, 4)
LESSON_DROPOUT = 0.2
# Beyond half, the runs would learn from fewer points than they are judged on.
MAX_VALIDATION_SIZE = 0.5
LEARNING_RATE_SCHEDULES = ("constant", "cosine")
ACTIVATIONS = ("relu", "tanh")
# Points a run learns from when the caller does not say (the lesson's split of 1,000 points
# keeps 750 for training); sets the length of a cosine schedule.
DEFAULT_FIT_SIZE = 750
# A distilled student learns from the training points plus this many times as many uniform
# points in their box (2,250 for the lesson's 750; chosen on tuning2 with bench._sweep).
DISTILL_EXTRA_FACTOR = 3
# Smaller than this, the generalized cross-entropy is binary cross-entropy to four digits and
# its power misbehaves in float32; 0 means binary cross-entropy itself.
MIN_GCE_Q = 0.01


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and training settings.

    The defaults are the lesson's network and training settings (Adam, 100 epochs, batch 32,
    dropout 0.2) with wider hidden layers, (16, 16) instead of (6, 4), of tanh units instead
    of ReLU, and Adam's learning rate starting at 0.1 and decaying to 0 along a cosine
    instead of Keras' constant 0.001. Measured (docs/training.md): six and four units leave
    too little redundancy, so the boundary along the axes stays blurred (about 95% test
    accuracy, runs down to 90%); 16 units per layer reach the clean-data target. What is left
    on noisy data is where the boundary sits along the axes: on 70 noisy tuning datasets one
    run lands 0.41 point below the ceiling with 16,16 tanh units (0.53 with 64,64), against
    0.84 for ReLU units with a cosine step from 0.01 and 1.09 at a constant 0.003
    (``bench._sweep``). Like the lesson, every run learns from the whole training part
    (``validation_size`` 0). What is published is a *student* (``distill``): one more
    network of the same shape fitted to the runs' mean probability, 0.38 point below the
    ceiling on tuning2 where one run is 0.41, at one network's serving cost; the ensemble of
    the runs itself (``ensemble``) is an option at five times the model's arithmetic
    (docs/training.md).
    The runs minimise a noise-robust loss, the generalized cross-entropy with ``gce_q`` 0.5,
    instead of binary cross-entropy (0.40 point on tuning2's grid against 0.44, session 22).
    :meth:`lesson` gives exactly the lesson's network.
    """

    hidden_units: tuple[int, ...] = (16, 16)
    """Units of each hidden layer; () is the lesson's no-hidden-layer (linear) model."""
    activation: str = "tanh"
    """The hidden layers' activation: ``tanh`` or ``relu`` (the lesson's)."""
    dropout: float = 0.2
    """Dropout rate after each hidden layer; 0 disables dropout."""
    epochs: int = 100
    batch_size: int = 32
    learning_rate: float = 0.1
    """Adam's learning rate: throughout (``constant``), or at the start (``cosine``)."""
    learning_rate_schedule: str = "cosine"
    """``constant``, or ``cosine``: from ``learning_rate`` down to 0 at the last step."""
    gce_q: float = 0.5
    """The runs' loss: the generalized cross-entropy (1 - p^q) / q of the probability p given
    to a point's label (Zhang and Sabuncu, 2018), which weighs a point the network is sure is
    mislabelled less than binary cross-entropy does; 0 is binary cross-entropy (the lesson's),
    1 the mean absolute error (for hard labels). A distilled student always fits its soft
    labels with binary cross-entropy."""
    seed: int = 0
    validation_size: float = 0.0
    """Fraction of the training part held out as a validation split (seeded). 0, the lesson's
    way, trains on all of it; above 0 the runs learn from the rest. Without ``ensemble`` it
    decides which run is published: closest to the runs' majority vote at 0, else the best
    validation accuracy."""
    ensemble: bool = False
    """Publish every usable run as ONE SavedModel answering their mean probability, instead of
    one chosen run (see ``validation_size``)."""
    swa_epochs: int = 0
    """Stochastic weight averaging: each run ends with the mean of its weights after each of
    its last ``swa_epochs`` epochs; 0 keeps the final weights."""
    distill: bool = True
    """Knowledge distillation: after the runs, train one more network of the same shape (the
    *student*, seed ``seed + runs``) on the runs' mean probability (soft labels) at the
    training points plus ``DISTILL_EXTRA_FACTOR`` times as many points drawn uniformly in
    their bounding box, for as many steps as one run, and publish it: close to the ensemble's
    accuracy at one network's cost (docs/training.md). Excludes ``ensemble``."""

    def __post_init__(self) -> None:
        if any(u < 1 for u in self.hidden_units):
            raise ValueError(f"hidden_units must be positive, got {self.hidden_units}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}"
            )
        if self.learning_rate_schedule not in LEARNING_RATE_SCHEDULES:
            raise ValueError(
                f"learning_rate_schedule must be one of {', '.join(LEARNING_RATE_SCHEDULES)}, "
                f"got {self.learning_rate_schedule!r}"
            )
        if not 0 <= self.swa_epochs <= self.epochs:
            raise ValueError(
                f"swa_epochs must be in [0, epochs={self.epochs}], got {self.swa_epochs}"
            )
        if not (self.gce_q == 0 or MIN_GCE_Q <= self.gce_q <= 1):
            raise ValueError(
                f"gce_q must be 0 (binary cross-entropy) or in [{MIN_GCE_Q}, 1], got {self.gce_q}"
            )
        if self.distill and self.ensemble:
            raise ValueError("distill and ensemble exclude each other: publish one or the other")
        if not 0.0 <= self.validation_size <= MAX_VALIDATION_SIZE:
            raise ValueError(
                f"validation_size must be in [0, {MAX_VALIDATION_SIZE}], got {self.validation_size}"
            )

    @classmethod
    def lesson(cls, **overrides: Any) -> ModelConfig:
        """Exactly the lesson's network: Dense 6 relu, Dropout 0.2, Dense 4 relu, Dropout 0.2.

        Trained as the lesson does: Adam at a constant 0.001, 100 epochs, batch 32, on the
        whole training part (no validation cut).
        """
        settings: dict[str, Any] = {
            "hidden_units": LESSON_HIDDEN_UNITS,
            "dropout": LESSON_DROPOUT,
            "epochs": 100,
            "batch_size": 32,
            "learning_rate": 0.001,
            "learning_rate_schedule": "constant",
            "gce_q": 0.0,
            "activation": "relu",
            "validation_size": 0.0,
            "ensemble": False,
            "swa_epochs": 0,
            "distill": False,
        }
        settings.update(overrides)
        return cls(**settings)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hidden_units"] = list(self.hidden_units)
        return d


def build_model(config: ModelConfig, fit_size: int = DEFAULT_FIT_SIZE) -> keras.Sequential:
    """Dense hidden layers (``config.activation``), each followed by Dropout, then Dense(1,
    sigmoid); compiled for training on ``fit_size`` points (the length of a cosine schedule)."""
    import keras

    keras.utils.set_random_seed(config.seed)
    layers: list[Any] = [keras.Input(shape=(2,), name=INPUT_NAME)]
    for i, units in enumerate(config.hidden_units, start=1):
        layers.append(keras.layers.Dense(units, activation=config.activation, name=f"hidden_{i}"))
        if config.dropout > 0:
            layers.append(keras.layers.Dropout(config.dropout, name=f"dropout_{i}"))
    layers.append(keras.layers.Dense(1, activation="sigmoid", name="output"))
    model = keras.Sequential(layers, name="xor_dnn")
    learning_rate: Any = config.learning_rate
    if config.learning_rate_schedule == "cosine":
        steps = math.ceil(fit_size / config.batch_size) * config.epochs
        learning_rate = keras.optimizers.schedules.CosineDecay(config.learning_rate, steps)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss=generalized_cross_entropy(config.gce_q) if config.gce_q else "binary_crossentropy",
        metrics=["accuracy"],
    )
    return model


def generalized_cross_entropy(q: float) -> keras.losses.Loss:
    """The generalized cross-entropy (1 - p^q) / q, with p the probability the model gives to
    a point's label (for a soft label y: y p + (1 - y)(1 - p)). It tends to binary
    cross-entropy as q goes to 0 and, for hard labels, is the mean absolute error at q = 1;
    between, the gradient of a point is its cross-entropy gradient times p^q, so the points
    the network already finds most unlikely, which under label noise are mostly the flipped
    ones, pull the boundary less (Zhang and Sabuncu, NeurIPS 2018)."""
    return _loss_class()(q)


def _loss_class() -> Any:
    """The loss class, defined once on first use so that importing this module stays free of
    Keras; registered so a saved ``.keras`` file of a model compiled with it loads again."""
    global _GCE
    if _GCE is None:
        import keras

        @keras.saving.register_keras_serializable(package="xor_dnn")
        class GeneralizedCrossEntropy(keras.losses.Loss):  # type: ignore[misc]
            def __init__(self, q: float, name: str = "generalized_cross_entropy", **kw: Any):
                super().__init__(name=name, **kw)
                self.q = float(q)

            def call(self, y_true: Any, y_pred: Any) -> Any:
                ops = keras.ops
                # Labels arrive as (batch,) for predictions (batch, 1): match them, or the
                # products below would broadcast to (batch, batch).
                y_true = ops.reshape(ops.cast(y_true, y_pred.dtype), ops.shape(y_pred))
                p = ops.clip(y_pred, keras.config.epsilon(), 1.0 - keras.config.epsilon())
                p_label = y_true * p + (1.0 - y_true) * (1.0 - p)
                return ops.mean((1.0 - ops.power(p_label, self.q)) / self.q, axis=-1)

            def get_config(self) -> dict[str, Any]:
                return {**super().get_config(), "q": self.q}

        _GCE = GeneralizedCrossEntropy
    return _GCE


_GCE: Any = None


def export_savedmodel(
    model: keras.Model | Sequence[keras.Model], path: str | os.PathLike[str]
) -> None:
    """Write ``model`` as a SavedModel whose ``serving_default`` follows xor_dnn.modelstore.

    Only the inference graph is exported (dropout off), with a named input and output so
    TensorFlow Serving, Triton and plain ``tf.saved_model.load`` users see stable names.
    Several models make one ensemble: the signature answers their mean probability, so a
    server or scorer calls it exactly as it calls a single model.
    """
    import keras
    import tensorflow as tf

    models = [model] if isinstance(model, keras.Model) else list(model)
    if not models:
        raise ValueError("export_savedmodel needs at least one model")
    archive = keras.export.ExportArchive()
    for m in models:
        archive.track(m)

    def serve(points: tf.Tensor) -> dict[str, tf.Tensor]:
        outputs = [m(points, training=False) for m in models]
        mean = outputs[0] if len(outputs) == 1 else tf.add_n(outputs) / len(outputs)
        return {OUTPUT_NAME: mean}

    archive.add_endpoint(
        name=SIGNATURE_NAME,
        fn=serve,
        input_signature=[tf.TensorSpec([None, 2], tf.float32, name=INPUT_NAME)],
    )
    archive.write_out(str(path), verbose=False)
