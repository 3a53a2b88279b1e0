"""What the CLI prints for people off a terminal (pipes, files, these tests): whole values, no
colour, nothing read as markup."""

from __future__ import annotations

from compare_models.cli.console import print_error, print_fields, print_line, print_table

LONG = "s3://compare-models/runs/20261203-125558-1aef7fd7/report/index.html?" + "x" * 300


def test_a_table_keeps_every_value_whole_and_literal(capsys) -> None:
    print_table(
        [
            {"run": "r1", "accuracy": "0.6100", "report": LONG, "reason": "[bold]manual[/bold]"},
            {"run": "r2", "accuracy": 0.5, "report": None, "reason": "x"},
        ],
        title="Runs",
    )
    out = capsys.readouterr().out
    assert out.startswith("Runs") and "\x1b[" not in out  # no colour codes off a terminal
    assert LONG in out and "[bold]manual[/bold]" in out
    row = next(line for line in out.splitlines() if "r2" in line)
    assert "│ -" in row  # None shows as "-"
    # numbers are right-aligned: "0.5" ends where "0.6100" ends
    first = next(line for line in out.splitlines() if " r1 " in line)
    assert first.index("0.6100") + len("0.6100") == row.index("0.5") + len("0.5")


def test_empty_tables_fields_lines_and_errors(capsys) -> None:
    print_table([], title="Runs")
    print_fields({"run id": "r1", "report": LONG}, title="Run")
    print_line("verdict: [no markup] cnn beats tiny")
    print_error("unknown model name(s) ['vgg']")
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0] == "Runs: (none)"
    assert LONG in captured.out and "verdict: [no markup] cnn beats tiny" in captured.out
    assert captured.err == "compare-models: error: unknown model name(s) ['vgg']\n"
