"""``xor-dnn score``: batch-score a CSV, Parquet or JSONL file or dataset (a folder, glob or
object-store prefix of such files), one shard of it, or merge parts.

Exit codes: 0 done (rejected rows do not fail a run); 1 the job failed (unreadable input,
missing column, no model, write error); 2 bad command line; 3 ``--strict`` met a bad row;
130 Ctrl-C; 143 SIGTERM. The last line on stdout is always one JSON object (``status`` ok or
error); the progress bar goes to stderr and only when it is a terminal.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import PurePosixPath
from types import FrameType
from typing import Any

from scoring.errors import ScoringError
from scoring.shards import COUNT_ENV, INDEX_ENV
from xor_dnn.cli import add_bounded, add_progress
from xor_dnn.storage import StorageError

DEFAULT_MODEL_DIR = "models/xor"
MODEL_DIR_ENV = "XOR_DNN_MODEL_DIR"
MAX_CHUNK = 1 << 22


class Terminated(BaseException):
    """SIGTERM (Kubernetes stopping the pod), raised so the temporary files are removed."""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "score",
        help="batch-score a CSV/Parquet/JSONL file of points (streaming, shardable)",
        description=(
            "Stream a file of points through a SavedModel version in constant memory. "
            "The output keeps every input column and adds probability, class_id and "
            "model_version; rows with a missing, non-numeric or non-finite coordinate go "
            "to the rejects file. " + __doc__.split("\n", 2)[2].replace("``", "'")
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    io = p.add_argument_group("files")
    io.add_argument(
        "-i",
        "--input",
        metavar="IN",
        help="file, folder, glob or object-store prefix (s3://bucket/points/) to score "
        "(required unless --merge)",
    )
    io.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        required=True,
        help="result file for a one-file input (a sharded run writes "
        "OUT-part-KKKKK-of-NNNNN.ext); a folder or prefix for a dataset: one output per input",
    )
    for flag, what in (
        ("--format", "format of input and output (default: from each extension)"),
        ("--input-format", "overrides --format for the input"),
        ("--output-format", "overrides --format for the output and rejects"),
    ):
        io.add_argument(flag, choices=["csv", "parquet", "jsonl"], help=what)
    io.add_argument(
        "--rejects",
        metavar="FILE|FOLDER",
        help="where bad rows go (default: beside each output, its name + .rejects, same format)",
    )
    io.add_argument("--x-col", default="x", help="column holding x")
    io.add_argument("--y-col", default="y", help="column holding y")

    model = p.add_argument_group("model")
    model.add_argument(
        "--model-dir",
        metavar="DIR|URI",
        help="versions folder or object store URI (s3://bucket/prefix, gs://...) "
        f"(default: ${MODEL_DIR_ENV} or {DEFAULT_MODEL_DIR})",
    )
    add_bounded(
        model,
        "--version",
        int,
        1,
        10**9,
        dest="model_version",
        help="model version (default: the newest)",
    )
    add_bounded(
        model,
        "--threshold",
        float,
        0.0,
        1.0,
        default=0.5,
        help="class_id is 1 where probability >= threshold",
    )

    run = p.add_argument_group("run")
    run.add_argument(
        "--engine",
        choices=["stream", "spark"],
        default="stream",
        help="stream: this process streams the file (shardable); spark: a Spark job reads "
        "the file or folder and writes output folders (pip install 'xor-dnn[spark]'; "
        "docs/spark.md)",
    )
    add_bounded(
        run,
        "--chunk-size",
        int,
        1,
        MAX_CHUNK,
        default=65536,
        help="rows per model call and about per read/write batch",
    )
    run.add_argument(
        "--strict",
        action="store_true",
        help="fail (exit 3) on the first bad row instead of rejecting it",
    )
    add_bounded(
        run,
        "--num-shards",
        int,
        1,
        99999,
        help=f"split the input in N shards (default: ${COUNT_ENV} or 1)",
    )
    add_bounded(
        run,
        "--shard-index",
        int,
        0,
        help=f"the shard to score, 0..N-1 (default: ${INDEX_ENV} or 0)",
    )
    add_progress(run, "progress bar on stderr (default: only when stderr is a terminal)")
    run.add_argument(
        "--resume",
        action="store_true",
        help="skip the inputs whose output already has a completion marker from an earlier run",
    )
    run.add_argument(
        "--merge",
        action="store_true",
        help="join the parts OUT-part-*-of-N (and their rejects) into OUT; no scoring",
    )
    p.set_defaults(func=run_score)


def _emit(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


def _merge(args: argparse.Namespace) -> dict[str, Any]:
    from scoring.formats import default_rejects_path, detect_format
    from scoring.merge import merge_file
    from xor_dnn.storage import split_uri

    out = PurePosixPath(split_uri(args.output)[1])
    fmt = detect_format(out, args.output_format or args.format, "output")
    result = merge_file(args.output, fmt)
    if args.rejects:
        rejects = args.rejects
    else:
        parent, _ = split_uri(args.output)
        name = default_rejects_path(out, fmt).name
        rejects = f"{parent}/{name}" if parent else name
    try:
        result["rejects"] = merge_file(rejects, fmt)
    except ScoringError:
        result["rejects"] = None  # a run with --rejects elsewhere: merge those with --rejects
    return {"status": "ok", **result}


def _output_format(args: argparse.Namespace) -> Any:
    """The flags' format, else OUT's extension's, else None (a folder: the input's format)."""
    from scoring.formats import EXTENSIONS, detect_format
    from xor_dnn.storage import split_uri

    given = args.output_format or args.format
    name = PurePosixPath(split_uri(args.output)[1])
    if given or name.suffix.lower() in EXTENSIONS:
        return detect_format(name, given, "output")
    return None


def score_dataset(args: argparse.Namespace) -> dict[str, Any]:
    """Score what the parsed ``score`` command line names with the SavedModel (the CLI's
    engine): the options and reject rules every engine shares; returns the JSON summary."""
    from scoring.errors import InputError
    from scoring.formats import Format
    from scoring.model import load_model
    from scoring.score import ScoreOptions, score
    from scoring.shards import resolve_shard

    if args.input is None:
        raise InputError("--input is required (unless --merge)")
    model_dir = args.model_dir or os.environ.get(MODEL_DIR_ENV) or str(DEFAULT_MODEL_DIR)
    if args.engine == "spark":
        from scoring.spark import score_files

        return score_files(args, model_dir)
    in_fmt = args.input_format or args.format
    options = ScoreOptions(
        input=args.input,
        output=args.output,
        input_format=Format(in_fmt) if in_fmt else None,
        output_format=_output_format(args),
        chunk_size=args.chunk_size,
        x_col=args.x_col,
        y_col=args.y_col,
        rejects=args.rejects,
        strict=args.strict,
        threshold=args.threshold,
        shard=resolve_shard(args.shard_index, args.num_shards),
        progress=args.progress,
        resume=args.resume,
    )
    summary = score(
        options,
        lambda: load_model(model_dir, args.model_version, warm_up_rows=args.chunk_size),
    )
    return summary.to_dict()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


def run_score(args: argparse.Namespace) -> int:
    """The ``score`` subcommand: returns the exit code and prints the JSON summary line."""
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        _emit(_merge(args) if args.merge else score_dataset(args))
        return 0
    except ScoringError as exc:
        print(f"xor-dnn score: error: {exc}", file=sys.stderr)
        _emit({"status": "error", "exit_code": exc.exit_code, "error": str(exc)})
        return exc.exit_code
    except StorageError as exc:
        print(f"xor-dnn score: error: {exc}; no output written", file=sys.stderr)
        _emit({"status": "error", "exit_code": 1, "error": str(exc)})
        return 1
    except OSError as exc:
        # Disk full, permission denied, a vanished folder: the writers already removed their
        # temporary files, so report it like any other failure instead of a traceback.
        where = f"{exc.filename}: " if exc.filename else ""
        message = f"{where}{exc.strerror or exc}"
        print(f"xor-dnn score: error: {message}; no output written", file=sys.stderr)
        _emit({"status": "error", "exit_code": 1, "error": message})
        return 1
    except Terminated:
        print("xor-dnn score: terminated (SIGTERM); no output written", file=sys.stderr)
        _emit({"status": "error", "exit_code": 143, "error": "terminated"})
        return 143
    except KeyboardInterrupt:
        print("xor-dnn score: interrupted; no output written", file=sys.stderr)
        _emit({"status": "error", "exit_code": 130, "error": "interrupted"})
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
