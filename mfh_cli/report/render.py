"""Render one tidy frame to the terminal (rich), CSV, JSON, Markdown or LaTeX."""

from __future__ import annotations

import sys

import pandas as pd
from rich.console import Console
from rich.table import Table


def rich_table(frame: pd.DataFrame, title: str | None = None) -> Table:
    """A rich Table with one column per frame column (numbers right-aligned)."""
    table = Table(title=title, show_lines=False)
    for column in frame.columns:
        numeric = pd.api.types.is_numeric_dtype(frame[column])
        table.add_column(str(column), justify="right" if numeric else "left")
    for row in frame.itertuples(index=False):
        table.add_row(*(_cell(value) for value in row))
    return table


def _cell(value: object) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "—"
        return f"{value:,.4f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def emit(frame: pd.DataFrame, fmt: str, title: str | None = None, notes: list[str] | None = None) -> None:
    """Print `frame` on stdout in `fmt` (table | csv | json); notes go below a table, or to stderr otherwise."""
    if fmt == "csv":
        sys.stdout.write(frame.to_csv(index=False))
    elif fmt == "json":
        sys.stdout.write(frame.to_json(orient="records", indent=1) + "\n")
    else:
        console = Console(width=max(Console().width, 120))
        console.print(rich_table(frame, title))
        for note in notes or []:
            console.print(f"note: {note}")
        return
    for note in notes or []:
        print(f"note: {note}", file=sys.stderr)
