"""Model structure, reproducibility, and the SavedModel export contract (plain TF load)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.data import generate
from training.model import ModelConfig, build_model, export_savedmodel


def layer_kinds(config: ModelConfig) -> list[tuple[str, int | float]]:
    import keras

    kinds: list[tuple[str, int | float]] = []
    for layer in build_model(config).layers:
        if isinstance(layer, keras.layers.Dense):
            kinds.append((layer.activation.__name__, layer.units))
        elif isinstance(layer, keras.layers.Dropout):
            kinds.append(("dropout", layer.rate))
    return kinds


def test_lesson_config_is_the_lessons_network() -> None:
    config = ModelConfig.lesson()
    assert (config.epochs, config.batch_size, config.learning_rate) == (100, 32, 0.001)
    # The lesson fits on its whole training part (no validation cut) and serves one network.
    assert config.validation_size == 0.0
    assert not config.ensemble and config.swa_epochs == 0
    assert layer_kinds(config) == [
        ("relu", 6),
        ("dropout", 0.2),
        ("relu", 4),
        ("dropout", 0.2),
        ("sigmoid", 1),
    ]
    model = build_model(config)
    assert model.loss == "binary_crossentropy"
    assert type(model.optimizer).__name__ == "Adam"
    assert float(model.optimizer.learning_rate) == pytest.approx(config.learning_rate)
    assert ModelConfig.lesson(seed=3, epochs=5).seed == 3


def test_default_keeps_the_lessons_shape_and_training_with_wider_layers() -> None:
    config = ModelConfig()
    lesson = ModelConfig.lesson()
    assert (config.epochs, config.batch_size, config.validation_size) == (
        lesson.epochs,
        lesson.batch_size,
        lesson.validation_size,
    )
    # The training settings that differ: the units and Adam's step (docs/training.md, issue 18).
    assert (config.learning_rate, lesson.learning_rate) == (0.1, 0.001)
    assert (config.learning_rate_schedule, lesson.learning_rate_schedule) == ("cosine", "constant")
    assert (config.activation, lesson.activation) == ("tanh", "relu")
    assert layer_kinds(config) == [
        ("tanh", 16),
        ("dropout", 0.2),
        ("tanh", 16),
        ("dropout", 0.2),
        ("sigmoid", 1),
    ]


def test_default_runs_minimise_the_generalized_cross_entropy() -> None:
    import keras

    from training.model import generalized_cross_entropy

    assert (ModelConfig().gce_q, ModelConfig.lesson().gce_q) == (0.5, 0.0)
    loss = build_model(ModelConfig()).loss
    assert type(loss).__name__ == "GeneralizedCrossEntropy" and loss.q == 0.5
    assert build_model(ModelConfig(gce_q=0.0)).loss == "binary_crossentropy"
    labels = np.array([[1.0], [0.0], [1.0], [0.3]], np.float32)
    probs = np.array([[0.9], [0.2], [0.05], [0.6]], np.float32)
    # (1 - p^q) / q of the probability given to the label (soft: y p + (1 - y)(1 - p)).
    p_label = labels * probs + (1 - labels) * (1 - probs)
    expected = np.mean((1 - p_label**0.5) / 0.5)
    assert float(generalized_cross_entropy(0.5)(labels, probs)) == pytest.approx(expected, 1e-5)
    # Keras' fit hands labels over as (batch,) against predictions (batch, 1).
    flat = float(generalized_cross_entropy(0.5)(labels.reshape(-1), probs))
    assert flat == pytest.approx(expected, 1e-5)
    # Binary cross-entropy as q -> 0; for hard labels the mean absolute error at q = 1.
    bce = float(keras.losses.BinaryCrossentropy()(labels, probs))
    assert float(generalized_cross_entropy(0.01)(labels, probs)) == pytest.approx(bce, rel=0.03)
    hard, hard_probs = labels[:3], probs[:3]
    mae = float(np.mean(np.abs(hard - hard_probs)))
    assert float(generalized_cross_entropy(1.0)(hard, hard_probs)) == pytest.approx(mae, 1e-5)


def test_a_point_that_looks_mislabelled_pulls_less_under_gce() -> None:
    """The gradient of a point is its cross-entropy gradient times p^q: a point given
    probability 0.05 of its label pulls about 0.22 times as hard as under BCE, one at 0.9
    about 0.95 times."""
    import tensorflow as tf

    from training.model import generalized_cross_entropy

    def pull(loss: object, p: float) -> float:
        logit = tf.Variable([[float(np.log(p / (1 - p)))]])
        with tf.GradientTape() as tape:
            value = loss(tf.constant([[1.0]]), tf.sigmoid(logit))  # type: ignore[operator]
        return abs(float(tape.gradient(value, logit)[0, 0]))

    import keras

    gce, bce = generalized_cross_entropy(0.5), keras.losses.BinaryCrossentropy()
    assert pull(gce, 0.05) / pull(bce, 0.05) == pytest.approx(0.05**0.5, rel=1e-3)
    assert pull(gce, 0.9) / pull(bce, 0.9) == pytest.approx(0.9**0.5, rel=1e-3)


@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")  # never trained
def test_a_model_compiled_with_gce_saves_and_loads_as_a_keras_file(tmp_path: Path) -> None:
    import keras

    model = build_model(ModelConfig(gce_q=0.3))
    model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras")
    assert type(again.loss).__name__ == "GeneralizedCrossEntropy" and again.loss.q == 0.3


def test_cosine_schedule_decays_to_zero_over_the_run() -> None:
    config = ModelConfig(epochs=4, batch_size=10, learning_rate=0.01)
    model = build_model(config, fit_size=95)  # 10 steps per epoch, 40 in all
    schedule = model.optimizer._learning_rate
    assert float(schedule(0)) == pytest.approx(0.01)
    assert float(schedule(20)) == pytest.approx(0.005)
    assert float(schedule(40)) == pytest.approx(0.0, abs=1e-9)
    constant = build_model(ModelConfig.lesson())
    assert float(constant.optimizer.learning_rate) == pytest.approx(0.001)
    with pytest.raises(ValueError, match="learning_rate_schedule must be one of"):
        ModelConfig(learning_rate_schedule="step")
    with pytest.raises(ValueError, match="activation must be one of"):
        ModelConfig(activation="sigmoid")


def test_configurable_layers_and_no_hidden_layer() -> None:
    assert layer_kinds(ModelConfig(hidden_units=(), dropout=0.2)) == [("sigmoid", 1)]
    assert layer_kinds(ModelConfig(hidden_units=(20, 20, 5), dropout=0.0)) == [
        ("tanh", 20),
        ("tanh", 20),
        ("tanh", 5),
        ("sigmoid", 1),
    ]
    relu = ModelConfig(hidden_units=(3,), dropout=0.0, activation="relu")
    assert layer_kinds(relu) == [("relu", 3), ("sigmoid", 1)]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"hidden_units": (6, 0)},
        {"dropout": 1.0},
        {"dropout": -0.1},
        {"epochs": 0},
        {"batch_size": 0},
        {"learning_rate": 0.0},
        {"validation_size": -0.1},
        {"validation_size": 0.6},
        {"gce_q": -0.1},
        {"gce_q": 1.5},
        {"gce_q": 0.001},
    ],
)
def test_bad_config_is_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ModelConfig(**kwargs)  # type: ignore[arg-type]


def test_dropout_is_active_in_training_only() -> None:
    model = build_model(ModelConfig(hidden_units=(64, 64), dropout=0.5, seed=1))
    points = np.random.default_rng(0).uniform(-5, 5, size=(256, 2)).astype(np.float32)
    inference_a = np.asarray(model(points, training=False))
    inference_b = np.asarray(model(points, training=False))
    training_a = np.asarray(model(points, training=True))
    training_b = np.asarray(model(points, training=True))
    assert np.array_equal(inference_a, inference_b)
    assert not np.allclose(training_a, inference_a)
    assert not np.allclose(training_a, training_b)


def fitted_weights(seed: int) -> list[np.ndarray]:
    points, labels = generate(200, seed=0)
    config = ModelConfig(epochs=3, seed=seed)
    model = build_model(config)
    model.fit(points, labels, epochs=3, batch_size=32, shuffle=True, verbose=0)
    return [np.asarray(w) for w in model.get_weights()]


def test_same_seed_reproduces_weights_exactly_and_other_seed_differs() -> None:
    a, b, c = fitted_weights(7), fitted_weights(7), fitted_weights(8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_savedmodel_round_trip_with_plain_tensorflow(tmp_path: Path) -> None:
    import tensorflow as tf

    points, labels = generate(200, seed=2)
    model = build_model(ModelConfig(epochs=2, seed=2))
    model.fit(points, labels, epochs=2, verbose=0)
    export_savedmodel(model, tmp_path / "sm")

    loaded = tf.saved_model.load(str(tmp_path / "sm"))
    fn = loaded.signatures["serving_default"]
    _, kwargs = fn.structured_input_signature
    assert kwargs["points"].dtype == tf.float32
    assert kwargs["points"].shape.as_list() == [None, 2]
    assert fn.structured_outputs["probability"].shape.as_list() == [None, 1]

    probe = np.random.default_rng(3).uniform(-6, 6, size=(333, 2)).astype(np.float32)
    got = fn(points=tf.constant(probe))["probability"].numpy()
    want = np.asarray(model(probe, training=False))
    assert got.shape == (333, 1)
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
    # Dropout is off in the export: the same input always gives the same output.
    again = fn(points=tf.constant(probe))["probability"].numpy()
    assert np.array_equal(got, again)


def test_swa_epochs_beyond_the_epochs_is_refused() -> None:
    with pytest.raises(ValueError, match=r"swa_epochs must be in \[0, epochs=10\], got 11"):
        ModelConfig(epochs=10, swa_epochs=11)
    with pytest.raises(ValueError, match="swa_epochs"):
        ModelConfig(swa_epochs=-1)
    assert ModelConfig(epochs=10, swa_epochs=10).swa_epochs == 10


def test_several_models_export_as_one_signature_answering_their_mean(tmp_path: Path) -> None:
    import tensorflow as tf

    points, labels = generate(200, seed=5)
    models = []
    for seed in (1, 2, 3):
        model = build_model(ModelConfig(hidden_units=(8, 4), epochs=2, seed=seed))
        model.fit(points, labels, epochs=2, verbose=0)
        models.append(model)
    export_savedmodel(models, tmp_path / "ensemble")

    fn = tf.saved_model.load(str(tmp_path / "ensemble")).signatures["serving_default"]
    _, kwargs = fn.structured_input_signature
    assert kwargs["points"].shape.as_list() == [None, 2]
    probe = np.random.default_rng(4).uniform(-6, 6, size=(257, 2)).astype(np.float32)
    got = fn(points=tf.constant(probe))["probability"].numpy()
    each = [np.asarray(m(probe, training=False)) for m in models]
    assert got.shape == (257, 1)
    np.testing.assert_allclose(got, np.mean(each, axis=0), atol=1e-6, rtol=0)
    # The members really differ, so the mean is not any one of them.
    assert all(np.abs(got - e).max() > 1e-3 for e in each)


def test_export_of_no_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one model"):
        export_savedmodel([], tmp_path / "none")
    assert not (tmp_path / "none").exists()


def test_a_tanh_network_serves_through_litert_as_keras_answers(tmp_path: Path) -> None:
    from xor_dnn.modelstore import LITE_MAX_POINTS, load_folder

    points, labels = generate(300, seed=6)
    config = ModelConfig(activation="tanh", learning_rate=0.06, dropout=0.2, epochs=3)
    model = build_model(config, fit_size=len(points))
    model.fit(points, labels, epochs=3, verbose=0)
    export_savedmodel(model, tmp_path / "1")
    served = load_folder(tmp_path / "1", 1, lite_max_points=LITE_MAX_POINTS)
    assert served.small_batch_path == "litert"  # the tanh graph converted, and checked
    probe = np.random.default_rng(7).uniform(-6, 6, size=(300, 2)).astype(np.float32)
    want = np.asarray(model(probe, training=False)).reshape(-1)
    for rows in (probe[:1], probe[:5], probe):  # LiteRT sizes, then TensorFlow above them
        np.testing.assert_allclose(served.predict(rows), want[: len(rows)], atol=1e-5, rtol=0)
