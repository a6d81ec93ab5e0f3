"""Render one tidy frame to the terminal (rich), CSV or JSON (`emit`), and a study's tidy table in the paper's
layout to the terminal, Markdown or LaTeX (`study_*`)."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import pandas as pd
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

from mfh_cli.report.verdicts import NOT_COMPUTED
from mfh_cli.tasks import metric_label


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
        if value.is_integer() or abs(value) >= 1000:  # counts (floats after a transpose) print as integers
            return f"{value:,.0f}"
        return f"{value:,.4f}"
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


# --- Study tables in the paper's layout: a block per user group, a row per variant, a column per task metric. ---
# Every format is rendered from the one tidy table of `aggregate.summarise`; a change always carries its sign
# (colour, in the terminal only, repeats the direction; it is never the only carrier of information).

SIGNIFICANT_MARK = "*"
ORACLE_BELOW_MARK = "†"  # an oracle cell that a model beats: small-sample noise (aggregate.oracle_below)
DIRECTION_STYLES = {True: "green", False: "red"}


@dataclass(frozen=True)
class StudyCell:
    """One task cell of one variant row, as text: our value, our change, and the paper's value and change."""

    value: str
    change: str
    better: bool | None
    paper: str


def study_layout(tidy: pd.DataFrame) -> tuple[list[str], list[tuple[str, str, list[StudyCell]]]]:
    """The task column labels ('cmpl MSE', ...) and one (group, variant, cells) row per group × variant."""
    tasks = list(dict.fromkeys(zip(tidy["task"], tidy["metric"])))
    labels = [f"{task} {metric_label(metric)}" for task, metric in tasks]
    rows = []
    for (group, variant), block in tidy.groupby(["group", "variant"], sort=False):
        by_task = {(row.task, row.metric): row for row in block.itertuples(index=False)}
        rows.append((group, variant, [_study_cell(by_task.get(task)) for task in tasks]))
    return labels, rows


def _study_cell(row) -> StudyCell:
    if row is None:
        return StudyCell("no result", "", None, "")
    if row.n_seeds == 0:
        value = f"n/a: {row.reason}"
    elif row.small_sample:  # too few positives: no number (docs/statistics.md)
        value = row.small_sample
    elif np.isnan(row.ci_low) or row.ci_low == row.ci_high:  # one seed, or every seed the same value
        value = f"{row.mean:.4f}"
    else:  # the interval is not symmetric around the mean (the metric's scale, tasks.SCALES)
        value = f"{row.mean:.4f} [{row.ci_low:.4f}, {row.ci_high:.4f}]"
    if row.oracle_below:
        value += f" {ORACLE_BELOW_MARK}"
    if np.isnan(row.relative_change) or row.small_sample:
        change = ""
    else:  # an exact tie has no sign to print; anything else always shows its sign
        change = "0.00%" if row.relative_change == 0 else f"{row.relative_change:+.2f}%"
    if change and row.significant:
        change += SIGNIFICANT_MARK
    better = None if pd.isna(row.better) else bool(row.better)
    paper = "" if np.isnan(row.paper_value) else f"{row.paper_value:.4f}"
    if paper and not np.isnan(row.paper_change):
        paper += f" ({row.paper_change:+.2f}%)"
    return StudyCell(value, change, better, paper)


def _header(labels: list[str], paper: bool) -> list[str]:
    return [name for label in labels for name in ([label, f"{label} paper"] if paper else [label])]


def _joined(cell: StudyCell) -> str:
    return f"{cell.value} ({cell.change})" if cell.change else cell.value


def _cells(cell: StudyCell, paper: bool) -> list[str]:
    return [_joined(cell), cell.paper] if paper else [_joined(cell)]


def study_rich_tables(tidy: pd.DataFrame, title: str, paper: bool, width: int) -> list[Table]:
    """The terminal rendering, split into tables of whole task columns that each fit `width` columns (a wide table
    wraps every cell over several lines otherwise; the files keep the full table): group on its block's first row,
    changes coloured by direction for the metric."""
    labels, rows = study_layout(tidy)
    texts = [[_rich_cell(cell) for cell in cells] for _, _, cells in rows]
    fixed = sum(_column_width(name, [row[index] for row in rows]) for index, name in enumerate(("group", "variant")))
    task_widths = [sum(_column_width(name, [_cells(row[2][task], paper)[position] for row in rows])
                       for position, name in enumerate(_header([label], paper)))
                   for task, label in enumerate(labels)]
    chunks = _fit(task_widths, width - fixed - 1)
    tables = []
    for number, chunk in enumerate(chunks, start=1):
        part = f" ({number}/{len(chunks)})" if len(chunks) > 1 else ""
        table = Table(title=f"{title}{part}", show_lines=False)
        table.add_column("group")
        table.add_column("variant")
        for name in _header([labels[task] for task in chunk], paper):
            table.add_column(name, justify="right", style="dim" if name.endswith(" paper") else None)
        for position, (group, variant, cells) in enumerate(rows):
            first_of_block = position == 0 or rows[position - 1][0] != group
            last_of_block = position == len(rows) - 1 or rows[position + 1][0] != group
            rendered = [text for task in chunk
                        for text in ([texts[position][task], cells[task].paper] if paper else [texts[position][task]])]
            table.add_row(group if first_of_block else "", variant, *rendered, end_section=last_of_block)
        tables.append(table)
    return tables


def _rich_cell(cell: StudyCell) -> Text:
    text = Text(cell.value)
    if cell.change:
        text.append(" ")
        text.append(cell.change, style=DIRECTION_STYLES.get(cell.better))
    return text


def _column_width(header: str, texts: list) -> int:
    """Columns a rich table column takes: its widest text, one space of padding either side and a border."""
    return max(cell_len(str(text)) for text in [header, *texts]) + 3


def _fit(widths: list[int], room: int) -> list[list[int]]:
    """Consecutive column indices packed into as few groups as fit `room` (a column wider than `room` alone)."""
    chunks: list[list[int]] = [[]]
    used = 0
    for index, width in enumerate(widths):
        if chunks[-1] and used + width > room:
            chunks.append([])
            used = 0
        chunks[-1].append(index)
        used += width
    return chunks


VERDICT_HEADER = ["group", "variant", "task", "change", "95% interval (per cell)", "p (Holm)", "detectable",
                  "seeds needed", "paper", "verdict"]


def verdict_rows(tidy: pd.DataFrame) -> list[list[str]]:
    """One row of text per tested cell (VERDICT_HEADER): what the cell establishes and what deciding it takes."""
    rows = []
    for row in tidy[tidy["verdict"] != ""].itertuples(index=False):
        interval = ("—" if np.isnan(row.change_ci_low)
                    else f"[{row.change_ci_low:+.2f}%, {row.change_ci_high:+.2f}%]")
        paper = "" if np.isnan(row.paper_change_as_ours) else f"{row.paper_change_as_ours:+.2f}%"
        rows.append([row.group, row.variant, f"{row.task} {metric_label(row.metric)}",
                     "—" if np.isnan(row.relative_change) else f"{row.relative_change:+.2f}%", interval,
                     "—" if np.isnan(row.p_adjusted) else f"{row.p_adjusted:.3f}",
                     "—" if np.isnan(row.detectable_change) else f"{row.detectable_change:.2f}%",
                     _seed_count(row.seeds_needed), paper, _verdict_text(row)])
    return rows


def _verdict_text(row) -> str:
    """The verdict with what qualifies it: why a cell was not computed, or that it rests on too few rows."""
    if row.verdict == NOT_COMPUTED and row.reason:
        return f"{row.verdict}: {row.reason}"
    return f"{row.verdict}; {row.small_sample}" if row.small_sample else row.verdict


def _seed_count(value: float) -> str:
    if np.isnan(value):
        return "—"
    return "> 100,000" if np.isinf(value) else f"{value:,.0f}"


POOLED_HEADER = ["variant", "cells", "pooled change [95% interval]", "p (Holm)", "improves", "seeds needed",
                 "paper", "verdict"]


def pooled_rows(pooled: pd.DataFrame) -> list[list[str]]:
    """One row of text per variant and scope (POOLED_HEADER): the table's question as a whole (report/pooled.py);
    `cells` names the scope and how many of its cells were computed, `improves` the mean share of them the variant
    improves per seed; the tidy CSV has every figure (the detectable change among them)."""
    rows = []
    for row in pooled.itertuples(index=False):
        interval = "" if np.isnan(row.change_ci_low) else f" [{row.change_ci_low:+.2f}%, {row.change_ci_high:+.2f}%]"
        scope = row.scope.removesuffix(" cells")
        rows.append([row.variant, f"{scope} {row.cells}/{row.cells_total}", f"{row.relative_change:+.2f}%{interval}",
                     "—" if np.isnan(row.p_adjusted) else f"{row.p_adjusted:.3f}", f"{row.share_improved:.0%}",
                     _seed_count(row.seeds_needed),
                     "" if np.isnan(row.paper_change_as_ours) else f"{row.paper_change_as_ours:+.2f}%", row.verdict])
    return rows


def pooled_rich_table(pooled: pd.DataFrame, title: str) -> Table:
    """The pooled verdicts in the terminal, printed first under the table."""
    table = Table(title=title, show_lines=False)
    for name in POOLED_HEADER:
        table.add_column(name, justify="left" if name in ("variant", "cells", "verdict") else "right")
    for row in pooled_rows(pooled):
        table.add_row(*row[:-1], Text(row[-1], style=VERDICT_STYLES.get(row[-1])))
    return table


def verdict_rich_table(tidy: pd.DataFrame, title: str) -> Table:
    """The verdicts in the terminal: a row per tested cell."""
    table = Table(title=title, show_lines=False)
    for name in VERDICT_HEADER:
        table.add_column(name, justify="left" if name in ("group", "variant", "task", "verdict") else "right")
    for row in verdict_rows(tidy):
        table.add_row(*row[:-1], Text(row[-1], style=VERDICT_STYLES.get(row[-1].split(";")[0])))
    return table


VERDICT_STYLES = {"confirmed": "green", "better": "green", "opposite": "red", "worse": "red", "smaller": "yellow"}


def study_markdown(tidy: pd.DataFrame, title: str, paper: bool, notes: list[str],
                   pooled: pd.DataFrame | None = None) -> str:
    """A Markdown heading, one table row per group × variant, the table's pooled verdicts, the per-cell verdicts,
    and the notes as a list."""
    labels, rows = study_layout(tidy)
    header = ["group", "variant", *_header(labels, paper)]
    lines = [f"### {title}", "", _markdown_row(header), _markdown_row(["---"] * len(header))]
    for group, variant, cells in rows:
        lines.append(_markdown_row([group, variant, *(text for cell in cells for text in _cells(cell, paper))]))
    if pooled is not None and not pooled.empty:
        lines += ["", _markdown_row(POOLED_HEADER), _markdown_row(["---"] * len(POOLED_HEADER))]
        lines += [_markdown_row(row) for row in pooled_rows(pooled)]
    verdicts = verdict_rows(tidy)
    if verdicts:
        lines += ["", _markdown_row(VERDICT_HEADER), _markdown_row(["---"] * len(VERDICT_HEADER))]
        lines += [_markdown_row(row) for row in verdicts]
    lines += [""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def _markdown_row(texts: list[str]) -> str:
    escaped = (text.replace("|", "\\|").replace("*", "\\*") for text in texts)
    return "| " + " | ".join(escaped) + " |"


LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "±": r"$\pm$", "−": "-", "×": r"$\times$", "≈": r"$\approx$", "§": r"\S{}",
                  "<": r"$<$", ">": r"$>$",
                  SIGNIFICANT_MARK: r"$^{*}$", ORACLE_BELOW_MARK: r"$^{\dagger}$"}


def latex_escape(text: str) -> str:
    """Text safe inside a LaTeX tabular."""
    return "".join(LATEX_SPECIALS.get(character, character) for character in text)


def study_latex(tidy: pd.DataFrame, title: str, paper: bool, notes: list[str],
                pooled: pd.DataFrame | None = None) -> str:
    """A booktabs table like the paper's: a header row per user group, a row per variant, the pooled and the
    per-cell verdicts, notes below."""
    labels, rows = study_layout(tidy)
    header = ["variant", *_header(labels, paper)]
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{latex_escape(title)}}}",
             r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}", r"\toprule",
             " & ".join(latex_escape(name) for name in header) + r" \\"]
    previous_group = None
    for group, variant, cells in rows:
        if group != previous_group:
            lines += [r"\midrule", rf"\multicolumn{{{len(header)}}}{{l}}{{\textit{{{latex_escape(group)}}}}} \\"]
            previous_group = group
        texts = [variant, *(text for cell in cells for text in _cells(cell, paper))]
        lines.append(" & ".join(latex_escape(text) for text in texts) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    blocks = [(POOLED_HEADER, pooled_rows(pooled) if pooled is not None else [], "lll"),
              (VERDICT_HEADER, verdict_rows(tidy), "lll")]
    for names, texts, left in blocks:
        if texts:
            lines += [r"\par\medskip", r"\begin{tabular}{" + left + "r" * (len(names) - len(left) - 1) + "l}",
                      r"\toprule", " & ".join(latex_escape(name) for name in names) + r" \\", r"\midrule"]
            lines += [" & ".join(latex_escape(text) for text in row) + r" \\" for row in texts]
            lines += [r"\bottomrule", r"\end{tabular}"]
    lines += [r"\par\footnotesize " + latex_escape(note) for note in notes]
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"
