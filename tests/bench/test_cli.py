"""bench/_cli.py: the load benchmarks' shared options and the benchmarks' Markdown tables."""

from __future__ import annotations

import pytest

from bench._cli import load_parser, print_table


def test_print_table_writes_a_markdown_table_with_the_alignment_asked(
    capsys: pytest.CaptureFixture[str],
) -> None:
    print_table(["case", "rows/s"], "lr", [["csv", "1,000"], ["parquet", ""]])
    assert capsys.readouterr().out.splitlines() == [
        "| case | rows/s |",
        "|---|---:|",
        "| csv | 1,000 |",
        "| parquet |  |",
    ]
    with pytest.raises(ValueError, match="'l' has 1 letters for 2 columns"):
        print_table(["case", "rows/s"], "l", [])


def test_load_parser_defaults_and_range_errors_name_the_option(
    capsys: pytest.CaptureFixture[str],
) -> None:
    p = load_parser("doc", duration=3.0, repeats=9, max_repeats=50)
    args = p.parse_args([])
    assert (args.duration, args.repeats, args.epochs) == (3.0, 9, 20)
    for argv, message in (
        (["--duration", "61"], "--duration must be in [0.001, 60.0], got '61'"),
        (["--repeats", "51"], "--repeats must be in [1, 50], got '51'"),
        (["--epochs", "0"], "--epochs must be in [1, 100000], got '0'"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            p.parse_args(argv)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
