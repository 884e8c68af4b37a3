"""What the benchmarks show the user: the command line a load benchmark starts from, and the
Markdown tables they print (pasted as they are into docs/)."""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence

from xor_dnn.cli import add_bounded

MAX_DURATION_S = 60.0
MIN_DURATION_S = 0.001


def load_parser(
    doc: str, *, duration: float, repeats: int, max_repeats: int
) -> argparse.ArgumentParser:
    """A load benchmark's parser: ``doc`` as its help, and the options every one of them
    takes: ``--duration`` of a load run (at most 60 s), ``--repeats`` (at most
    ``max_repeats``) and ``--epochs`` of the model it trains; a value out of range is a usage
    error naming the option and its range (:func:`xor_dnn.cli.add_bounded`)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawTextHelpFormatter)
    limits = (MIN_DURATION_S, MAX_DURATION_S)
    add_bounded(
        p, "--duration", float, *limits, default=duration, help="seconds per load run (%(default)s)"
    )
    add_bounded(
        p,
        "--repeats",
        int,
        1,
        max_repeats,
        default=repeats,
        help="interleaved rounds, medians reported (%(default)s)",
    )
    add_bounded(
        p,
        "--epochs",
        int,
        1,
        100_000,
        default=20,
        help="epochs of the benchmark model (%(default)s)",
    )
    return p


def add_loadgen(p: argparse.ArgumentParser, what: str) -> None:
    """``--loadgen auto|wrk|python``: which generator makes ``what`` (pass the value through
    ``bench._loadgen.pick_generator``); auto = wrk when it is on PATH."""
    p.add_argument(
        "--loadgen",
        choices=("auto", "wrk", "python"),
        default="auto",
        help=f"{what}: wrk (apt-get install wrk), the Python one in bench/_loadgen.py, or auto "
        "= wrk when on PATH (default)",
    )


def print_table(header: Sequence[str], align: str, rows: Iterable[Sequence[str]]) -> None:
    """A Markdown table: ``align`` has one letter a column, ``l`` (text) or ``r`` (figures)."""
    if len(align) != len(header):
        raise ValueError(f"align {align!r} has {len(align)} letters for {len(header)} columns")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" if a == "l" else "---:" for a in align) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
