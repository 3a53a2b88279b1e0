"""What the `compare-models` command prints for people, in the Prefect CLI's style: Rich tables
with a title, the first column in cyan, numbers right-aligned, errors in red.

Every command prints through these helpers, so a new command (or a new column) is one call:

>>> print_table([{"run": "r1", "accuracy": 0.61}], title="Runs")
>>> print_fields({"run id": "r1", "report": "s3://..."}, title="Run")

Values are shown as text, never read as Rich markup: a model name or a reason with square
brackets prints as it is. When the output is not a terminal (a pipe, a file, a test), no
colour is written and no cell is wrapped or cut, so `grep` finds a whole run id or URL.
`--json` output does not come through here: scripts get plain `json.dumps`.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

#: Wide enough that no table of ours is ever wrapped when the output is not a terminal.
_UNWRAPPED_WIDTH = 4096


def console(*, stderr: bool = False) -> Console:
    """The console a command prints to: the terminal's width there, unwrapped elsewhere."""
    out = Console(stderr=stderr, highlight=False)
    if out.is_terminal:
        return out
    return Console(stderr=stderr, highlight=False, width=_UNWRAPPED_WIDTH)


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Number) and not isinstance(value, bool)


def _numeric_column(rows: Sequence[Mapping[str, object]], column: str) -> bool:
    """A column whose values are all numbers (or numbers formatted as text) is right-aligned."""

    def numeric(value: object) -> bool:
        if _is_number(value):
            return True
        try:
            float(str(value))
        except ValueError:
            return False
        return True

    values = [row.get(column) for row in rows if row.get(column) not in (None, "", "-")]
    return bool(values) and all(numeric(v) for v in values)


def _cell(value: object) -> Text:
    return Text("-" if value is None else str(value))


def table(
    rows: Sequence[Mapping[str, object]],
    *,
    title: str | None = None,
    columns: Sequence[str] | None = None,
) -> Table:
    """A Rich table of `rows` (one mapping per row), its columns `columns` or the first row's
    keys, in that order."""
    columns = list(columns or (rows[0] if rows else []))
    out = console()
    result = Table(title=title, expand=out.is_terminal, title_justify="left")
    for i, column in enumerate(columns):
        result.add_column(
            column,
            style="cyan" if i == 0 else None,
            justify="right" if _numeric_column(rows, column) else "left",
            no_wrap=i == 0,
        )
    for row in rows:
        result.add_row(*(_cell(row.get(column)) for column in columns))
    return result


def print_table(
    rows: Sequence[Mapping[str, object]],
    *,
    title: str | None = None,
    columns: Sequence[str] | None = None,
    empty: str = "(none)",
) -> None:
    """Prints `rows` as a table (see `table`), or `empty` when there are none."""
    out = console()
    if not rows:
        out.print(Text(f"{title}: {empty}" if title else empty, style="dim"))
        return
    out.print(table(rows, title=title, columns=columns))


def print_fields(fields: Mapping[str, object], *, title: str | None = None) -> None:
    """Prints name/value pairs as a two-column table without a header (a record's details)."""
    result = Table(title=title, show_header=False, title_justify="left", box=None, padding=(0, 2))
    result.add_column(style="bold", no_wrap=True)
    result.add_column()
    for name, value in fields.items():
        result.add_row(Text(name), _cell(value))
    console().print(result)


def print_line(text: str, *, style: str | None = None) -> None:
    """One line of plain text (a verdict, a note), never read as markup."""
    console().print(Text(text, style=style or ""))


def print_error(message: str) -> None:
    """An error on stderr, in red on a terminal, prefixed like argparse's own errors."""
    console(stderr=True).print(Text(f"compare-models: error: {message}", style="red"))
