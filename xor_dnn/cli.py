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
