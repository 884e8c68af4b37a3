"""The training job's subcommands: ``xor-dnn train``, ``xor-dnn experiment``, ``xor-dnn data``.

TensorFlow is imported only inside the command functions, so ``xor-dnn --help`` is instant.
Exit codes: 0 success, 2 bad input (data file, option value), 1 training failed.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from training.data import DEFAULT_N, DEFAULT_SEED, DataError
from training.model import (
    ACTIVATIONS,
    LEARNING_RATE_SCHEDULES,
    MAX_VALIDATION_SIZE,
    ModelConfig,
)
from xor_dnn.cli import add_bounded, add_progress

DEFAULT_MODEL_DIR = Path("models/xor")
EXIT_BAD_INPUT = 2
EXIT_FAILED = 1
PROGRESS_HELP = "per-epoch progress line (default: on in a terminal, off in CI)"


def register(subparsers: Any) -> None:
    """Add ``train``, ``experiment`` and ``data`` to the ``xor-dnn`` dispatcher."""
    _register_train(subparsers)
    _register_experiment(subparsers)
    _register_data(subparsers)


def hidden_units(text: str) -> tuple[int, ...]:
    """``"6,4"`` -> (6, 4); ``"none"`` or ``""`` -> () (the lesson's straight-line model)."""
    cleaned = text.strip().lower()
    if cleaned in ("", "none", "0", "linear"):
        return ()
    try:
        units = tuple(int(part) for part in cleaned.replace(" ", "").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--hidden must be comma-separated positive integers like 6,4 or 'none', got {text!r}"
        ) from None
    if any(u < 1 or u > 4096 for u in units):
        raise argparse.ArgumentTypeError(f"--hidden units must be in 1..4096, got {text!r}")
    return units


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    d = ModelConfig()
    g = parser.add_argument_group("model")
    g.add_argument(
        "--lesson",
        action="store_true",
        help="start from exactly the lesson's network (6,4 + dropout 0.2, 100 epochs, lr 0.001);"
        " other model options still override it",
    )
    g.add_argument(
        "--hidden",
        type=hidden_units,
        default=None,
        metavar="UNITS",
        help="hidden layer sizes, e.g. 6,4 or 20,20; 'none' for no hidden layer "
        f"(default {','.join(map(str, d.hidden_units))})",
    )
    g.add_argument(
        "--activation",
        choices=ACTIVATIONS,
        default=None,
        help=f"the hidden layers' units (default {d.activation}; relu is the lesson's, and "
        "with --learning-rate 0.01 --dropout 0.1 lands further from the best possible on "
        "noisy data: docs/training.md)",
    )
    add_bounded(
        g,
        "--dropout",
        float,
        0.0,
        0.95,
        help=f"dropout rate after each hidden layer, 0 disables (default {d.dropout})",
    )
    add_bounded(
        g, "--epochs", int, 1, 100_000, help=f"training epochs per run (default {d.epochs})"
    )
    add_bounded(
        g, "--batch-size", int, 1, 1_000_000, help=f"mini-batch size (default {d.batch_size})"
    )
    add_bounded(
        g,
        "--learning-rate",
        float,
        1e-9,
        10.0,
        help=f"Adam learning rate, at the start with a cosine schedule (default {d.learning_rate})",
    )
    g.add_argument(
        "--learning-rate-schedule",
        choices=LEARNING_RATE_SCHEDULES,
        default=None,
        help="constant, or cosine: from --learning-rate down to 0 at the last step "
        f"(default {d.learning_rate_schedule}; --lesson: constant)",
    )
    add_bounded(
        g,
        "--gce-q",
        float,
        0.0,
        1.0,
        metavar="Q",
        help="the runs' loss: the generalized cross-entropy (1 - p^q) / q, which lets points "
        "that look mislabelled pull the boundary less; 0 is binary cross-entropy "
        f"(default {d.gce_q}; --lesson: 0)",
    )
    add_bounded(
        g,
        "--validation-size",
        float,
        0.0,
        MAX_VALIDATION_SIZE,
        metavar="FRACTION",
        help="hold this fraction of the training part out (the runs learn from the rest); "
        "without --ensemble the run with the best validation accuracy is published instead of "
        "the one closest to the runs' majority vote; 0 trains on all of it, as the lesson does "
        f"(default {d.validation_size})",
    )
    g.add_argument(
        "--ensemble",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="publish every run as one model answering their mean probability; --no-ensemble "
        "publishes one run (closest to the runs' majority vote, or best on validation) "
        f"(default {'on' if d.ensemble else 'off'}; --lesson: off)",
    )
    g.add_argument(
        "--distill",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="after the runs, train one network of the same shape on their mean probability "
        "(a student: the ensemble's accuracy at one network's cost, one more run of training) "
        "and publish it; --no-distill publishes one run, or the ensemble with --ensemble "
        f"(default {'on' if d.distill else 'off'}; --lesson: off)",
    )
    add_bounded(
        g,
        "--swa-epochs",
        int,
        0,
        100_000,
        metavar="N",
        help="end each run with the mean of its weights over its last N epochs (stochastic "
        f"weight averaging); 0 keeps the final weights (default {d.swa_epochs})",
    )
    add_bounded(
        g,
        "--seed",
        int,
        0,
        2**31 - 1,
        help=f"seed of run 1; run i uses seed+i-1 (default {d.seed})",
    )


def _add_generator_options(parser: argparse._ActionsContainer, *, prefix: str = "") -> None:
    add_bounded(
        parser,
        f"--{prefix}n",
        int,
        1,
        10_000_000,
        dest="n",
        default=DEFAULT_N,
        help=f"number of points (default {DEFAULT_N})",
    )
    add_bounded(
        parser,
        f"--{prefix}noise",
        float,
        0.0,
        1.0,
        dest="noise",
        default=0.0,
        help="fraction of labels flipped at random (default 0)",
    )
    add_bounded(
        parser,
        f"--{prefix}seed",
        int,
        0,
        2**63 - 1,
        dest="data_seed",
        default=DEFAULT_SEED,
        help=f"generator seed (default {DEFAULT_SEED})",
    )


def progress_default() -> bool:
    """Whether to draw per-epoch progress: at a terminal yes, in CI or a log file no."""
    # Per-epoch redraws are for people at a terminal; CI logs get the per-run lines only.
    return sys.stderr.isatty() and not os.environ.get("CI")


def _register_train(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train",
        help="train N seeded runs and publish them (or one, chosen without the test split) "
        "as a version",
        description="Train the lesson's dropout DNN (default: 16,16 tanh + dropout 0.2, "
        "lr 0.1 cosine; --lesson for the lesson's 6,4 at lr 0.001) on the lesson's split "
        "(25% test, random_state 42), report every run's test accuracy, and publish a network "
        "distilled from the runs (with --no-distill: the run closest to the runs' majority "
        "vote, or with --validation-size the best on validation; with --ensemble: every run, "
        "as one model answering their mean probability) as "
        "MODEL_DIR/<next N>/ "
        "(SavedModel + metadata.json + pictures).",
    )
    p.add_argument(
        "--data",
        type=Path,
        metavar="CSV",
        help="CSV with columns x, y, class id (default: generated lesson data, "
        "see --gen-n/--gen-noise/--gen-seed)",
    )
    p.add_argument(
        "--model-dir",
        default=str(DEFAULT_MODEL_DIR),
        metavar="DIR|URI",
        help="model folder or object store URI (s3://bucket/prefix, gs://..., file://...); "
        f"the version lands in DIR/<N>/ (default {DEFAULT_MODEL_DIR})",
    )
    add_bounded(p, "--runs", int, 1, 1000, default=5, help="seeded runs to train (default 5)")
    _add_model_options(p)
    g = p.add_argument_group("generated data (used when --data is not given)")
    _add_generator_options(g, prefix="gen-")
    add_progress(p, PROGRESS_HELP)
    p.add_argument(
        "--history",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="record the training history (the surface, losses and weight norms at about 20 "
        "log-spaced epochs) as history.json beside the SavedModel, replayed by the playground "
        "(default on; --no-history skips it)",
    )
    p.set_defaults(func=cmd_train)


def _config_from(args: argparse.Namespace) -> ModelConfig:
    """The default (or, with --lesson, the lesson's) config with the given options applied."""
    base = ModelConfig.lesson() if getattr(args, "lesson", False) else ModelConfig()
    given = {
        "hidden_units": args.hidden,
        "activation": args.activation,
        "dropout": args.dropout,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "learning_rate_schedule": args.learning_rate_schedule,
        "gce_q": args.gce_q,
        "seed": args.seed,
        "validation_size": args.validation_size,
        "ensemble": args.ensemble,
        "swa_epochs": args.swa_epochs,
        "distill": args.distill,
    }
    if args.ensemble and args.distill is None:
        given["distill"] = False  # --ensemble alone publishes the ensemble, not its student
    return replace(base, **{k: v for k, v in given.items() if v is not None})


def _published(config: ModelConfig) -> str:
    if config.ensemble:
        return "the ensemble of the runs"
    return "a student distilled from the runs" if config.distill else "one run"


def cmd_train(args: argparse.Namespace) -> int:
    from training.data import generated_dataset, load_csv
    from training.train import RunResult, TrainingError, train_and_publish
    from xor_dnn.modelstore import ModelStoreError
    from xor_dnn.storage import StorageError

    try:
        config = _config_from(args)
        dataset = (
            load_csv(args.data)
            if args.data is not None
            else generated_dataset(args.n, noise=args.noise, seed=args.data_seed)
        )
    except (DataError, ValueError) as exc:
        print(f"xor-dnn train: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    progress = progress_default() if args.progress is None else args.progress
    source = str(dataset.path) if dataset.path else f"generated {dataset.generated}"
    print(f"data: {source} ({dataset.rows} rows, sha256 {dataset.sha256[:12]}...)")
    print(
        f"model: hidden {list(config.hidden_units) or 'none'} {config.activation}, "
        f"dropout {config.dropout}, "
        f"{config.epochs} epochs, batch {config.batch_size}, lr {config.learning_rate} "
        f"({config.learning_rate_schedule}), "
        f"loss {'GCE q ' + str(config.gce_q) if config.gce_q else 'BCE'}, "
        f"validation cut {config.validation_size}, swa epochs {config.swa_epochs}, "
        f"seeds {config.seed}..{config.seed + args.runs - 1}, "
        f"publish {_published(config)}"
    )

    def on_run(r: RunResult) -> None:
        detail = (
            f"fit loss {r.fit_loss:.4f}"
            if math.isnan(r.val_accuracy)
            else f"validation {r.val_accuracy:.4f}, loss {r.val_loss:.4f}"
        )
        print(
            f"run {r.index + 1}/{args.runs} seed {r.seed}: test accuracy {r.test_accuracy:.4f}"
            f"  ({detail}, {r.seconds:.1f}s)",
            flush=True,
        )

    try:
        published = train_and_publish(
            args.model_dir,
            data=dataset,
            runs=args.runs,
            config=config,
            progress=progress,
            on_run=on_run,
            history=args.history,
        )
    except DataError as exc:
        print(f"xor-dnn train: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"xor-dnn train: failed: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILED
    except (TrainingError, StorageError, ModelStoreError) as exc:
        print(f"xor-dnn train: failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    assert published.report is not None
    print(published.report.table())
    print(f"published version {published.version}: {published.path}")
    return 0


def _register_experiment(subparsers: Any) -> None:
    from training.experiment import DEFAULT_NOISE

    p = subparsers.add_parser(
        "experiment",
        help="the lesson as a table: linear vs hidden layers, with/without dropout, clean/noisy",
        description="Train each architecture (no hidden layer; 6,4; 6,4 + dropout 0.2; "
        "20,20 + dropout 0.2; the default 16,16 tanh + dropout 0.2 at lr 0.1 cosine) over several "
        "seeds on clean and noisy generated data, and write a Markdown table, a JSON file "
        "and a figure of decision surfaces.",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("experiment"),
        metavar="DIR",
        help="folder for experiment.md, experiment.json, experiment.png (default ./experiment)",
    )
    add_bounded(
        p, "--runs", int, 1, 100, default=5, help="seeds per architecture and dataset (default 5)"
    )
    add_bounded(
        p,
        "--epochs",
        int,
        1,
        100_000,
        help="override every architecture's epochs (default: the lesson's 100)",
    )
    p.add_argument(
        "--data",
        type=Path,
        metavar="CSV",
        help="use this CSV as the 'clean' dataset instead of generated data",
    )
    add_bounded(
        p,
        "--n",
        int,
        20,
        10_000_000,
        default=DEFAULT_N,
        help=f"points per generated dataset (default {DEFAULT_N})",
    )
    add_bounded(
        p,
        "--noise",
        float,
        0.0,
        1.0,
        default=DEFAULT_NOISE,
        help=f"label-noise rate of the noisy dataset (default {DEFAULT_NOISE})",
    )
    add_bounded(
        p,
        "--data-seed",
        int,
        0,
        2**63 - 1,
        default=DEFAULT_SEED,
        help=f"generator seed (default {DEFAULT_SEED})",
    )
    add_progress(p, PROGRESS_HELP)
    p.add_argument(
        "--publish",
        metavar="REPO",
        default=None,
        help="also publish the lesson's architectures trained on the clean data (no hidden "
        "layer, 6,4 + dropout, the default) as models REPO/linear, REPO/lesson, REPO/default "
        "(next version each, with history and the measured accuracy in metadata.json), to "
        "serve side by side with `xor-dnn serve --model-repository REPO`; a folder or "
        "s3://, gs:// URI",
    )
    p.set_defaults(func=cmd_experiment)


def cmd_experiment(args: argparse.Namespace) -> int:
    from training.experiment import run_experiment
    from xor_dnn.modelstore import ModelStoreError
    from xor_dnn.storage import StorageError

    progress = progress_default() if args.progress is None else args.progress
    try:
        result = run_experiment(
            args.out,
            runs=args.runs,
            epochs=args.epochs,
            data=args.data,
            n=args.n,
            noise=args.noise,
            data_seed=args.data_seed,
            progress=progress,
            echo=lambda line: print(line, flush=True),
            publish=args.publish,
        )
    except DataError as exc:
        print(f"xor-dnn experiment: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (OSError, StorageError, ModelStoreError) as exc:
        print(f"xor-dnn experiment: failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print()
    print(result.markdown)
    print(f"\nwrote {result.markdown_path}, {result.json_path}, {result.figure_path}")
    for name, version, where in result.published:
        print(f"published model '{name}' version {version}: {where}")
    return 0


def _register_data(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "data",
        help="generate lesson-style XOR data as a CSV (x, y, class id)",
        description="Points uniform in [-5,5]², class 1 where x*y < 0, with an optional "
        "fraction of labels flipped (label noise). Same arguments, same file.",
    )
    _add_generator_options(p)
    p.add_argument(
        "--out",
        required=True,
        metavar="FILE",
        help="CSV to write (atomically); '-' writes to standard output",
    )
    p.set_defaults(func=cmd_data)


def cmd_data(args: argparse.Namespace) -> int:
    from training.data import generate, save_csv, to_csv_text

    points, labels = generate(args.n, noise=args.noise, seed=args.data_seed)
    if args.out == "-":
        sys.stdout.write(to_csv_text(points, labels))
        return 0
    try:
        path = save_csv(args.out, points, labels)
    except OSError as exc:
        print(
            f"xor-dnn data: error: cannot write {args.out}: {exc.strerror or exc}", file=sys.stderr
        )
        return EXIT_BAD_INPUT
    print(
        f"wrote {path} ({args.n} rows, noise {args.noise}, seed {args.data_seed}, "
        f"class 1: {int(labels.sum())})"
    )
    return 0
