"""The lesson as one table and one figure: which architectures solve XOR, clean and noisy.

Each architecture is trained over the same seeds on the same split of each dataset, with the
same code path as ``xor-dnn train`` (:func:`training.train.train_runs`); the figure shows the
decision surface of what each architecture would publish (the run closest to the runs'
majority vote; for the default row, the student distilled from its runs).

With ``publish`` (``xor-dnn experiment --publish REPO``), the lesson's three architectures on the
clean dataset (no hidden layer, the lesson's 6,4 + dropout, the default) are each published as
their own model ``REPO/<name>/<N>/`` (``linear``, ``lesson``, ``default``), with their training
history and the experiment's measured row in ``metadata.json`` (``experiment``), ready to be
served side by side with ``xor-dnn serve --model-repository REPO``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from training.model import ModelConfig
from xor_dnn.storage import atomic_write, open_store

DEFAULT_NOISE = 0.08


@dataclass(frozen=True)
class Architecture:
    name: str
    hidden_units: tuple[int, ...]
    dropout: float
    learning_rate: float = 0.001
    """The lesson's (Keras' default) unless a row says otherwise."""
    learning_rate_schedule: str = "constant"
    activation: str = "relu"
    distill: bool = False
    """Publish a student distilled from the runs (``ModelConfig.distill``)."""
    model_name: str = ""
    """The model it is published as with ``--publish`` (empty: not published)."""


def _default_architecture() -> Architecture:
    """The row of ``xor-dnn train``'s default network, read from :class:`ModelConfig`."""
    d = ModelConfig()
    hidden = ",".join(map(str, d.hidden_units))
    return Architecture(
        f"{hidden} {d.activation} + dropout {d.dropout:g}, lr {d.learning_rate:g} "
        f"{d.learning_rate_schedule} (default)",
        d.hidden_units,
        d.dropout,
        d.learning_rate,
        d.learning_rate_schedule,
        d.activation,
        distill=d.distill,
        model_name="default",
    )


ARCHITECTURES = (
    Architecture("no hidden layer (linear)", (), 0.0, model_name="linear"),
    Architecture("6,4 no dropout", (6, 4), 0.0),
    Architecture("6,4 + dropout 0.2 (lesson)", (6, 4), 0.2, model_name="lesson"),
    Architecture("20,20 + dropout 0.2", (20, 20), 0.2),
    _default_architecture(),
)


@dataclass
class ExperimentResult:
    rows: list[dict[str, Any]]
    markdown: str
    markdown_path: Path
    json_path: Path
    figure_path: Path
    published: list[tuple[str, int, str]] = field(default_factory=list)
    """With ``publish``: (model name, version, where) of each published architecture."""


def run_experiment(
    out_dir: str | os.PathLike[str],
    *,
    runs: int = 5,
    epochs: int | None = None,
    data: str | os.PathLike[str] | None = None,
    n: int = 1000,
    noise: float = DEFAULT_NOISE,
    data_seed: int = 0,
    architectures: tuple[Architecture, ...] = ARCHITECTURES,
    progress: bool = False,
    echo: Callable[[str], None] | None = None,
    publish: str | os.PathLike[str] | None = None,
) -> ExperimentResult:
    """Train every architecture on the clean and the noisy dataset; write table and figure.

    ``data`` replaces the generated clean dataset with a CSV. Returns the rows (one per
    dataset x architecture) and the paths written: ``experiment.md``, ``experiment.json``
    and ``experiment.png`` in ``out_dir``. ``publish`` (a folder or object-store URI) also
    publishes each architecture with a ``model_name`` trained on the clean dataset as the
    next version of ``publish/<model_name>`` (checked writable before any training).
    """
    import numpy as np

    from training import plots
    from training.data import generated_dataset, load_csv
    from training.train import package_versions, publish_report, train_runs
    from xor_dnn.modelstore import ModelRepository

    say = echo or (lambda _line: None)
    repos: dict[str, ModelRepository] = {}
    if publish is not None:
        root = open_store(publish)
        for arch in architectures:
            if arch.model_name:
                repos[arch.model_name] = ModelRepository(root.child(arch.model_name))
                repos[arch.model_name].check()
    published: list[tuple[str, int, str]] = []
    clean = load_csv(data) if data is not None else generated_dataset(n, seed=data_seed)
    noisy = generated_dataset(n, noise=noise, seed=data_seed)
    datasets = (
        (f"clean ({clean.path.name})" if clean.path else "clean", clean),
        (f"noisy ({noise:.0%} labels flipped)", noisy),
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = ModelConfig.lesson()
    if epochs is not None:
        base = replace(base, epochs=epochs)

    rows: list[dict[str, Any]] = []
    panels: list[list[plots.Panel]] = []
    for data_index, (data_name, dataset) in enumerate(datasets):
        panel_row: list[plots.Panel] = []
        for arch in architectures:
            repo = repos.get(arch.model_name) if data_index == 0 else None
            config = replace(
                base,
                hidden_units=arch.hidden_units,
                dropout=arch.dropout,
                learning_rate=arch.learning_rate,
                learning_rate_schedule=arch.learning_rate_schedule,
                activation=arch.activation,
                distill=arch.distill,
            )
            say(f"{data_name} / {arch.name}: {runs} run(s) of {config.epochs} epochs ...")
            report = train_runs(dataset, config, runs, progress=progress, history=repo is not None)
            row = {
                "dataset": data_name,
                "architecture": arch.name,
                "hidden_units": list(arch.hidden_units),
                "dropout": arch.dropout,
                "runs": runs,
                "test_accuracy_runs": [round(a, 4) for a in report.test_accuracies],
                "mean": report.test_accuracy_mean,
                "std": report.test_accuracy_std,
                "min": report.test_accuracy_min,
                "published": report.published_test_accuracy,
                "noise_ceiling": report.true_rule_test_accuracy,
                "seconds": round(report.seconds, 1),
            }
            rows.append(row)
            say(f"  mean {row['mean']:.4f}  std {row['std']:.4f}  min {row['min']:.4f}")
            if repo is not None:
                version = publish_report(repo, report, extra_metadata={"experiment": row})
                published.append((arch.model_name, version.version, str(version.path)))
                say(f"  published as model '{arch.model_name}' version {version.version}")
            split = report.split
            panel_row.append(
                plots.Panel(
                    title=f"{arch.name}\n{data_name}: test acc {row['published']:.3f}",
                    predict=report.predict_proba,
                    points=np.asarray(split.test_points),
                    labels=np.asarray(split.test_labels),
                )
            )
        panels.append(panel_row)

    markdown = to_markdown(rows, runs=runs, epochs=base.epochs)
    md_path = _write_text(out / "experiment.md", markdown + "\n")
    json_path = _write_text(
        out / "experiment.json",
        _json({"config": base.to_dict(), "rows": rows, "packages": package_versions()}),
    )
    fig_path = plots.plot_experiment(
        panels,
        out / plots.EXPERIMENT_PNG,
        title=f"Decision surfaces (test points shown), published run of {runs}",
    )
    return ExperimentResult(rows, markdown, md_path, json_path, fig_path, published)


def to_markdown(rows: list[dict[str, Any]], *, runs: int, epochs: int) -> str:
    lines = [
        f"Test accuracy over {runs} seed(s), {epochs} epochs each "
        "(noise ceiling = accuracy of the true rule x*y<0 on the same test split).",
        "",
        "| dataset | architecture | mean | std | min | published model | noise ceiling |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['dataset']} | {r['architecture']} | {r['mean']:.4f} | {r['std']:.4f} | "
            f"{r['min']:.4f} | {r['published']:.4f} | {r['noise_ceiling']:.4f} |"
        )
    return "\n".join(lines)


def _json(payload: Any) -> str:
    import json

    return json.dumps(payload, indent=2) + "\n"


def _write_text(path: Path, text: str) -> Path:
    atomic_write(path, text)
    return path
