"""Markdown and LaTeX renderings parse and hold one row per group × variant of the tidy table; missing cells say
why; the terminal shows every change with its sign."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from mfh_cli.report.build import run_report
from mfh_cli.report.render import latex_escape

GROUPS = ["new", "low", "high"]
ONE_CLASS = "one class only in the test rows"


@pytest.fixture
def study_with_gaps(write_study, results_dir) -> pd.DataFrame:
    """Two seeds, three variants, two tasks; hmtl's share is never computable (its metrics.json says why)."""
    rows = []
    for seed in (0, 1):
        for group_index, group in enumerate(GROUPS):
            for variant_index, variant in enumerate(["mfh", "hmtl", "flat"]):
                rows.append((variant, seed, group, "cmpl", "mse", 0.4 + 0.01 * variant_index + 0.001 * seed))
                share = None if variant == "hmtl" else 0.7 - 0.01 * variant_index - 0.002 * seed * group_index
                rows.append((variant, seed, group, "share", "auc", share))
    cells = pd.DataFrame(rows, columns=["variant", "seed", "group", "task", "metric", "value"])
    write_study("gaps", cells, reference="mfh", variants=["mfh", "hmtl", "flat"])
    for seed in (0, 1):
        metrics = {"metrics": {"test": {group: {"share": {"metric": "auc", "value": None, "rows": 9,
                                                          "reason": ONE_CLASS}} for group in GROUPS}}}
        path = results_dir / "runs" / f"hmtl-{seed}" / "metrics.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(metrics))
    return cells


def _markdown_cells(line: str) -> list[str]:
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def _markdown_tables(markdown: str) -> list[list[str]]:
    """The Markdown tables of a text, each as its lines (header, separator, rows)."""
    blocks = [block.splitlines() for block in markdown.split("\n\n")]
    return [lines for lines in blocks if lines and all(line.startswith("|") for line in lines)]


def test_markdown_has_one_row_per_group_and_variant_then_one_per_tested_cell(study_with_gaps, results_dir,
                                                                             captured_console):
    run_report(results_dir, fmt="markdown", console=captured_console)
    frame = pd.read_csv(results_dir / "tables" / "gaps.csv", keep_default_na=False)
    pooled, tidy = frame[frame["group"] == "pooled"], frame[frame["group"] != "pooled"]
    markdown = (results_dir / "tables" / "gaps.md").read_text()
    study_table, pooled_table, verdict_table = _markdown_tables(markdown)
    expected_rows = [len(tidy[["group", "variant"]].drop_duplicates()), len(pooled),
                     int((tidy["verdict"] != "").sum())]
    assert len(pooled) == 3 + 2  # flat: all cells, MSE, AUC; hmtl, whose AUC cells were not computed: all, MSE
    for (header, separator, *rows), expected in zip((study_table, pooled_table, verdict_table), expected_rows):
        assert len(rows) == expected
        width = len(_markdown_cells(header))
        assert all(set(cell) == {"-"} for cell in _markdown_cells(separator))
        assert len(_markdown_cells(separator)) == width
        assert all(len(_markdown_cells(row)) == width for row in rows)
    assert markdown in captured_console.file.getvalue()  # printed as well as written


def test_latex_has_one_row_per_group_and_variant(study_with_gaps, results_dir, captured_console):
    run_report(results_dir, fmt="latex", console=captured_console)
    frame = pd.read_csv(results_dir / "tables" / "gaps.csv")
    pooled, tidy = frame[frame["group"] == "pooled"], frame[frame["group"] != "pooled"]
    latex = (results_dir / "tables" / "gaps.tex").read_text()
    rows = [line for line in latex.splitlines() if line.rstrip().endswith("\\\\")]
    groups = tidy["group"].nunique()
    tested = int(tidy["verdict"].notna().sum())
    # The header, one \multicolumn line per group, one line per group × variant; then the pooled verdicts' header
    # and one line per variant and scope; then the verdicts' header and one line per tested cell.
    assert len(rows) == (1 + groups + len(tidy[["group", "variant"]].drop_duplicates()) + 1 + len(pooled) + 1
                         + tested)
    tables = latex.split("\\end{tabular}")[:-1]
    assert len(tables) == latex.count("\\begin{tabular}") == 3
    for table in tables:
        columns = len(re.search(r"\\begin\{tabular\}\{(\w+)\}", table).group(1))
        body = [row for row in table.splitlines() if row.rstrip().endswith("\\\\") and "\\multicolumn" not in row]
        assert all(len(re.findall(r"(?<!\\)&", row)) == columns - 1 for row in body)
    assert not re.search(r"(?<!\\)[%_]", latex.replace("\\%", "").replace("\\_", ""))


def test_missing_cells_say_why_instead_of_a_number(study_with_gaps, results_dir, captured_console):
    run_report(results_dir, console=captured_console)
    tidy = pd.read_csv(results_dir / "tables" / "gaps.csv", keep_default_na=False)
    missing = tidy[(tidy["variant"] == "hmtl") & (tidy["task"] == "share")]
    assert len(missing) == 3
    assert (missing["mean"] == "").all() and (missing["n_seeds"] == 0).all() and (missing["reason"] == ONE_CLASS).all()
    markdown = (results_dir / "tables" / "gaps.md").read_text()
    study_table = _markdown_tables(markdown)[0]
    hmtl_rows = [_markdown_cells(line) for line in study_table if "| hmtl |" in line]
    assert all(f"n/a: {ONE_CLASS}" in row[3] for row in hmtl_rows)
    assert f"n/a: {ONE_CLASS}" in captured_console.file.getvalue()


def test_terminal_prints_every_change_with_its_sign(study_with_gaps, results_dir, captured_console):
    run_report(results_dir, console=captured_console)
    tidy = pd.read_csv(results_dir / "tables" / "gaps.csv")
    printed = captured_console.file.getvalue()
    for change in tidy["relative_change"].dropna():
        assert f"{change:+.2f}%" in printed
    assert "gaps study (synthetic)" in printed


def test_latex_escape_covers_specials():
    assert latex_escape("heter_abl 5% & ±") == r"heter\_abl 5\% \& $\pm$"


def test_small_sample_cells_say_so_instead_of_a_number(write_study, results_dir, captured_console):
    rows = [(variant, seed, "new", "share", "auc", value + step * seed)
            for variant, value, step in (("mfh", 0.66, 0.01), ("flat", 0.61, 0.03), ("oracle", 0.64, 0.0))
            for seed in (0, 1)]
    cells = pd.DataFrame(rows, columns=["variant", "seed", "group", "task", "metric", "value"])
    cells["run_id"] = cells["variant"].replace("oracle", "mfh") + "-" + cells["seed"].astype(str)
    write_study("rare", cells, reference="mfh", variants=["mfh", "flat"])
    for run_id in ("mfh-0", "mfh-1", "flat-0", "flat-1"):
        path = results_dir / "runs" / run_id / "metrics.json"
        path.parent.mkdir(parents=True)
        cell = {"metric": "auc", "value": 0.6, "rows": 400, "positives": 3, "reason": None}
        path.write_text(json.dumps({"metrics": {"test": {"new": {"share": cell}}}}))
    run_report(results_dir, fmt="markdown", console=captured_console)
    study_table, _, verdict_table = _markdown_tables((results_dir / "tables" / "rare.md").read_text())
    values = {_markdown_cells(line)[1]: _markdown_cells(line)[2] for line in study_table[2:]}
    assert values == {"mfh": "too few positives (3 in test)", "flat": "too few positives (3 in test)",
                      "oracle": "too few positives (3 in test) †"}
    assert _markdown_cells(verdict_table[2])[-1] == "no difference shown; too few positives (3 in test)"
    markdown = (results_dir / "tables" / "rare.md").read_text()
    assert "† new/share: the oracle (the true expectations) scores worse than mfh" in markdown
    assert r"$^{\dagger}$" in (results_dir / "tables" / "rare.tex").read_text()


def test_values_carry_their_interval_inside_the_metric_bounds(study_with_gaps, results_dir, captured_console):
    run_report(results_dir, fmt="markdown", console=captured_console)
    tidy = pd.read_csv(results_dir / "tables" / "gaps.csv")
    markdown = (results_dir / "tables" / "gaps.md").read_text()
    row = tidy[(tidy["variant"] == "mfh") & (tidy["group"] == "low") & (tidy["task"] == "share")].iloc[0]
    assert 0 < row["ci_low"] < row["mean"] < row["ci_high"] < 1
    assert f"{row['mean']:.4f} [{row['ci_low']:.4f}, {row['ci_high']:.4f}]" in markdown


def test_a_wide_table_is_split_to_fit_the_terminal_and_kept_whole_in_the_files(write_study, results_dir):
    import io

    from rich.console import Console

    tasks = [("cmpl", "mse"), ("finish", "auc"), ("skip", "auc"), ("like", "auc"), ("share", "auc"),
             ("comment", "auc"), ("follow", "auc")]
    variants = ["mfh", "shared_bottom", "mmoe", "cgc", "ple"]
    rows = [(variant, seed, group, task, metric, 0.6 + 0.01 * index + 0.003 * seed * (index % 3))
            for index, variant in enumerate(variants) for seed in range(3) for group in GROUPS
            for task, metric in tasks]
    write_study("sota", pd.DataFrame(rows, columns=["variant", "seed", "group", "task", "metric", "value"]),
                reference="mfh", variants=variants)
    console = Console(file=io.StringIO(), width=140, color_system=None)
    run_report(results_dir, console=console)
    printed = console.file.getvalue().splitlines()
    assert max(len(line) for line in printed) <= 140
    verdicts = ("untested", "no difference shown", "better", "worse")
    study_rows = [line for line in printed if line.startswith("│") and any(f" {variant} " in line for variant in
                                                                           variants[1:])
                  and not any(verdict in line for verdict in verdicts)]
    headers = [line for line in printed
               if line.startswith("┃ group") and "┃ variant" in line and "┃ task" not in line]
    assert len(headers) >= 2  # split into tables of whole task columns
    assert len(study_rows) == len(headers) * len(GROUPS) * (len(variants) - 1)
    assert all(line.split("│")[2].strip() for line in printed if line.startswith("│"))  # no cell wraps a line
    shown = [task for header in headers for task, metric in tasks if f"{task} {metric.upper()}" in header]
    assert shown == [task for task, _ in tasks]  # every task column once, in order
    header = (results_dir / "tables" / "sota.md").read_text().splitlines()[2]
    assert all(f"{task} {metric.upper()}" in header for task, metric in tasks)  # the file keeps the whole table
