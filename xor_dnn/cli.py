"""The ``xor-dnn`` command: one entry point, a subcommand per job.

Each job module exposes ``register(subparsers)``, which adds its subcommands with
``set_defaults(func=...)``; ``func(args)`` returns the exit code. Job modules import
TensorFlow lazily, so ``xor-dnn --help`` answers at once.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from xor_dnn import __version__

JOB_MODULES = ("training.cli", "service.cli", "scoring.cli")


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
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
