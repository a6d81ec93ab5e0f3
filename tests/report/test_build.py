"""run_report end to end on hand-written result files: never imports torch, writes every table file, prints the
chosen format, names files per dataset only when a study has several."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from mfh_cli.errors import ConfigError, DataError
from mfh_cli.report.build import run_report


def _cells(offset: float = 0.0) -> pd.DataFrame:
    rows = [(variant, seed, group, "cmpl", "mse", 0.4 + index * 0.01 + seed * 0.002 + offset)
            for index, variant in enumerate(["mfh", "flat"]) for seed in (0, 1, 2) for group in ("new", "high")]
    return pd.DataFrame(rows, columns=["variant", "seed", "group", "task", "metric", "value"])


def test_report_never_imports_torch(write_study, results_dir):
    write_study("sota", _cells(), reference="mfh", variants=["mfh", "flat"])
    script = textwrap.dedent(f"""
        import io, sys
        from rich.console import Console
        from mfh_cli.report import run_report  # the entry point the CLI imports
        summary = run_report({str(results_dir)!r}, console=Console(file=io.StringIO()))
        assert summary.files, "nothing written"
        print("torch imported" if "torch" in sys.modules else "torch not imported")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "torch not imported"


def test_csv_format_prints_the_tidy_table_and_writes_all_files(write_study, results_dir, captured_console):
    write_study("sota", _cells(), reference="mfh", variants=["mfh", "flat"])
    summary = run_report(results_dir, fmt="csv", console=captured_console)
    printed = pd.read_csv(io.StringIO(captured_console.file.getvalue()))
    written = pd.read_csv(results_dir / "tables" / "sota.csv")
    pd.testing.assert_frame_equal(printed, written)
    assert list(written.columns[:17]) == ["study", "dataset", "table", "group", "variant", "task", "metric", "mean",
                                          "ci_low", "ci_high", "n_seeds", "relative_change", "p_value", "significant",
                                          "better", "paper_value", "paper_change"]
    assert set(written["study"]) == {"sota"} and set(written["table"]) == {"sota study"}
    assert sorted(path.name for path in summary.files) == ["sota.csv", "sota.md", "sota.tex"]
    assert sorted(path.name for path in (results_dir / "tables").iterdir()) == ["sota.csv", "sota.md", "sota.tex"]


def test_csv_over_every_study_is_one_tidy_frame(write_study, results_dir, captured_console):
    write_study("sota", _cells(), reference="mfh", variants=["mfh", "flat"], dataset="synthetic")
    write_study("sota", _cells(0.1), reference="mfh", variants=["mfh", "flat"], dataset="kuairand")
    write_study("hierarchical", _cells(), reference="mfh", variants=["mfh", "flat"], paper_table=2,
                title="Table 2: hierarchical")
    run_report(results_dir, fmt="csv", console=captured_console)
    text = captured_console.file.getvalue()
    assert text.count("study,dataset,table,group") == 1  # one header
    frame = pd.read_csv(io.StringIO(text))
    assert list(frame[["study", "dataset"]].drop_duplicates().itertuples(index=False, name=None)) == [
        ("hierarchical", "synthetic"), ("sota", "kuairand"), ("sota", "synthetic")]
    pooled = frame["group"] == "pooled"  # each table's verdict as a whole, first: flat over all cells
    assert list(frame.groupby(["study", "dataset"], sort=False)["group"].first()) == ["pooled"] * 3
    assert pooled.sum() == 3 and set(frame.loc[pooled, "cells"]) == {"2 of 2"}
    assert len(frame) == 3 * (4 + 1) and frame["mean"].notna().all()
    assert set(frame.loc[frame["study"] == "hierarchical", "table"]) == {"Table 2: hierarchical"}
    files = pd.concat([pd.read_csv(results_dir / "tables" / f"{stem}.csv")
                       for stem in ("hierarchical", "sota_kuairand", "sota_synthetic")], ignore_index=True)
    pd.testing.assert_frame_equal(frame, files)


def test_output_writes_one_file_per_study(write_study, results_dir, tmp_path, captured_console):
    write_study("sota", _cells(), reference="mfh", variants=["mfh", "flat"])
    write_study("hierarchical", _cells(0.1), reference="mfh", variants=["mfh", "flat"])
    output = tmp_path / "out"
    run_report(results_dir, fmt="csv", console=captured_console, output=output)
    assert captured_console.file.getvalue() == ""
    assert sorted(path.name for path in output.iterdir()) == ["hierarchical.csv", "sota.csv"]
    assert set(pd.read_csv(output / "sota.csv")["study"]) == {"sota"}
    run_report(results_dir, fmt="markdown", console=captured_console, output=output)
    assert (output / "sota.md").read_text() == (results_dir / "tables" / "sota.md").read_text()
    with pytest.raises(ConfigError, match="--output writes files: give it with --format csv, markdown or latex"):
        run_report(results_dir, console=captured_console, output=output)


def test_dataset_suffix_only_when_a_study_has_several(write_study, results_dir, captured_console):
    write_study("sota", _cells(), reference="mfh", variants=["mfh", "flat"], dataset="synthetic")
    write_study("sota", _cells(0.1), reference="mfh", variants=["mfh", "flat"], dataset="kuairand")
    write_study("hierarchical", _cells(), reference="mfh", variants=["mfh", "flat"], dataset="synthetic")
    run_report(results_dir, console=captured_console)
    names = sorted(path.stem for path in (results_dir / "tables").glob("*.csv"))
    assert names == ["hierarchical", "sota_kuairand", "sota_synthetic"]
    kuairand, synthetic = (pd.read_csv(results_dir / "tables" / f"sota_{name}.csv").query("group != 'pooled'")
                           for name in ("kuairand", "synthetic"))
    assert (kuairand["mean"] - synthetic["mean"]).to_numpy() == pytest.approx(0.1)

    summary = run_report(results_dir, study="sota", dataset="kuairand", console=captured_console)
    assert [path.name for path in summary.files] == ["sota_kuairand.csv", "sota_kuairand.md", "sota_kuairand.tex"]


def test_bad_requests_are_one_line_errors(write_study, results_dir, captured_console):
    with pytest.raises(DataError, match=r"studies: no study results"):
        run_report(results_dir, console=captured_console)
    write_study("sota", _cells(), reference="mfh", variants=["mfh", "flat"])
    with pytest.raises(DataError, match=r"no results for study 'nope'; found: sota"):
        run_report(results_dir, study="nope", console=captured_console)
    with pytest.raises(DataError, match=r"no results on dataset 'kuairand'; found: synthetic"):
        run_report(results_dir, dataset="kuairand", console=captured_console)
    with pytest.raises(ConfigError, match=r"unknown report format 'json'"):
        run_report(results_dir, fmt="json", console=captured_console)


def test_control_lines_say_what_each_expected_verdict_got(write_study, results_dir, captured_console):
    import json

    seeds = range(5)
    reference = [0.700, 0.705, 0.698, 0.702, 0.701]
    noise = [0.0004, -0.0003, 0.0002, -0.0004, 0.0001]
    rows = []
    for group in ("new", "low", "high"):
        rows += [("base", seed, group, "finish", "auc", reference[seed]) for seed in seeds]
        rows += [("sees_more", seed, group, "finish", "auc", reference[seed] + 0.01 + noise[seed]) for seed in seeds]
        rows += [("reseeded", seed, group, "finish", "auc", reference[seed] + 3 * noise[seed]) for seed in seeds]
    directory = write_study("controls", pd.DataFrame(rows, columns=["variant", "seed", "group", "task", "metric",
                                                                    "value"]),
                            reference="base", variants=["base", "sees_more", "reseeded"])
    info = json.loads((directory / "study.json").read_text())
    info["expected"] = {"sees_more": "better", "reseeded": "no difference shown"}
    (directory / "study.json").write_text(json.dumps(info))

    summary = run_report(results_dir, console=captured_console)
    positive, negative = summary.controls
    assert positive.startswith("positive control, sees_more vs base (synthetic): expected 'better', got 'better' "
                               "in 3 of 3 cells (3 better; 3 significant after Holm")
    assert negative.startswith("negative control, reseeded vs base (synthetic): expected 'no difference shown', "
                               "got 'no difference shown' in 3 of 3 cells (3 no difference shown; 0 significant")
    assert positive in (results_dir / "tables" / "controls.md").read_text()
