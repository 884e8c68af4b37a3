"""The ``xor-dnn`` command: one entry point, a subcommand per job.

Each job module exposes ``register(subparsers)``, which adds its subcommands with
``set_defaults(func=...)``; ``func(args)`` returns the exit code. Job modules import
TensorFlow lazily, so ``xor-dnn --help`` answers at once.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any

from xor_dnn import __version__

JOB_MODULES = ("training.cli", "service.cli", "scoring.cli")


def bounded(kind: type, name: str, low: float, high: float | None = None) -> Any:
    """An argparse ``type`` that parses a ``kind`` (int or float) in [low, high] (no upper
    limit when ``high`` is None); the error names the option ``name`` and the limits."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{name} must be a {kind.__name__}, got {text!r}"
            ) from None
        if not value >= low or (high is not None and not value <= high):
            limit = f">= {low}" if high is None else f"in [{low}, {high}]"
            raise argparse.ArgumentTypeError(f"{name} must be {limit}, got {text!r}")
        return value

    return parse


def add_bounded(
    parser: argparse._ActionsContainer,
    flag: str,
    kind: type,
    low: float,
    high: float | None = None,
    **kwargs: Any,
) -> None:
    """Add the option ``flag`` whose value is a ``kind`` in [low, high] (:func:`bounded`)."""
    parser.add_argument(flag, type=bounded(kind, flag, low, high), **kwargs)


def add_progress(parser: argparse._ActionsContainer, help: str) -> None:
    """``--progress`` / ``--no-progress``; None when neither is given (the job picks)."""
    parser.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None, help=help
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xor-dnn",
        description="Train, serve and batch-score the XOR lesson's dropout DNN.",
    )
    parser.add_argument("--version", action="version", version=f"xor-dnn {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in JOB_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    if code in _STOPPED and argv is None:
        # Stopped by a signal mid-job (the job has already removed its temporary files and
        # printed its status): end now. Interpreter shutdown would run while native threads
        # (Arrow's, TensorFlow's) may still be working for the abandoned job, and crashed
        # (PyGILState_Release) or hung there in about one stop in six.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


_STOPPED = (130, 143)
"""Exit codes of a job stopped by Ctrl-C (SIGINT) or SIGTERM."""


if __name__ == "__main__":
    sys.exit(main())
