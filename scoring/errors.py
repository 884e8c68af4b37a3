"""Every error the scoring job raises, each carrying its process exit code.

The tree (``scoring.cli`` prints the message and exits with the code)::

    ScoringError              1  the job could not run or finish
    ├── InputError            1  unreadable input, unknown format, missing column
    ├── ModelError            1  no model version, or it fails to load or to run
    ├── OutputError           1  the output cannot be written or the parts cannot be merged
    └── StrictModeError       3  ``--strict`` and a bad row: names the row and the column

Exit codes 2 (bad command line, from argparse), 130 (Ctrl-C) and 143 (SIGTERM) come from
the CLI layer; in every failing case no file is left under the output's final name.
"""

from __future__ import annotations


class ScoringError(Exception):
    """Base class: ``exit_code`` and a message that names the file, column or row at fault."""

    exit_code = 1


class InputError(ScoringError):
    pass


class ModelError(ScoringError):
    pass


class OutputError(ScoringError):
    pass


class StrictModeError(ScoringError):
    """A bad row under ``--strict``; ``row`` and ``column`` locate it (column None: whole row)."""

    exit_code = 3

    def __init__(self, row: int, column: str | None, reason: str) -> None:
        where = f"row {row}" + (f", column '{column}'" if column else "")
        super().__init__(f"{where}: {reason} (--strict stops at the first bad row)")
        self.row = row
        self.column = column
        self.reason = reason
