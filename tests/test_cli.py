"""The installed `mfh` as a user runs it: config errors, train on the simulator and on KuaiRand, the help (flags,
usage, names, version) and every example the help shows."""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from mfh_cli import __version__, config_names
from tests.conftest import mfh_executable

TINY = ["data.rows=5000", "trainer=smoke"]


@pytest.mark.parametrize("override, expected", [
    ("nosuchkey=3", "nosuchkey"),
    ("model=nosuchmodel", "nosuchmodel"),
    ("seed", "key=value"),
    ("trainer.precision=fp16", "trainer.precision: must be 'fp32', 'bf16' or 'auto' (got 'fp16')"),
    ("trainer.optimizer=lion", "trainer.optimizer: must be 'adam', 'adamw' or 'sgd' (got 'lion')"),
    ("trainer.lr=abc", "trainer.lr: must be a valid number (got 'abc')"),
    ("trainer.batch_size=0", "trainer.batch_size: must be greater than or equal to 2 (got 0)"),
    ("trainer.batch_size=-5", "trainer.batch_size: must be greater than or equal to 2 (got -5)"),
    ("trainer.eval_batch_size=0", "trainer.eval_batch_size: must be greater than or equal to 1 (got 0)"),
    ("trainer.max_epochs=0", "trainer.max_epochs: must be greater than or equal to 1 (got 0)"),
    ("size.embedding_dim=0", "size.embedding_dim: must be greater than or equal to 1 (got 0)"),
    ("data.validation_fraction=0", "data.validation_fraction must leave at least one validation row"),
    ("+hydra.callbacks.x._target_=builtins.print", "override '+hydra.callbacks.x._target_=builtins.print' is "
                                                   "not accepted"),
    ("hydra/launcher=joblib", "hydra/launcher=<name> and hydra.launcher.<key>=<value>, on mfh ablate"),
])
def test_bad_override_is_one_line_and_exit_code_2(run_mfh, tmp_path: Path, override: str, expected: str):
    result = run_mfh("train", override)
    assert result.returncode == 2
    assert expected in result.stderr
    assert result.stderr.strip().startswith("error:") and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "results" / "runs").exists(), "a refused config wrote into the results"


def test_ablate_refuses_hydra_overrides_other_than_the_launchers(run_mfh, tmp_path: Path):
    # The launcher used to instantiate `hydra.callbacks` given to `mfh ablate`: now refused before any run.
    result = run_mfh("ablate", "--study", "hierarchical", "--seeds", "1", *TINY,
                     "+hydra.callbacks.x._target_=builtins.print", "hydra/launcher=joblib")
    assert result.returncode == 2, result.stderr
    assert "'+hydra.callbacks.x._target_=builtins.print' is not accepted" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "results" / "runs").exists() and not (tmp_path / "results" / "hydra").exists()


def test_train_prints_metrics_per_group_and_writes_the_run(run_mfh, tmp_path: Path):
    result = run_mfh("train", *TINY, "--quiet", check=True)
    for column in ("cmpl mse", "finish auc", "skip auc"):
        assert column in result.stdout
    for group in ("new", "low", "high"):
        assert group in result.stdout
    run_dir = Path(result.stdout.split("run directory: ")[1].split(" (")[0])
    assert (run_dir / "metrics.json").is_file() and run_dir.parent.parent == tmp_path / "results"
    again = run_mfh("train", *TINY, "--quiet", "--format", "json", check=True)
    metrics = json.loads(again.stdout)
    assert metrics["run_id"] == run_dir.name
    assert metrics == json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.slow
def test_train_on_kuairand_reports_all_nine_tasks(run_mfh, kuairand_dir: Path):
    result = run_mfh("train", "data=kuairand", "trainer=smoke", "trainer.batch_size=2048", "--quiet",
                     "--format", "json", "--data-dir", str(kuairand_dir), check=True)
    metrics = json.loads(result.stdout)
    test = metrics["metrics"]["test"]
    assert set(test) == {"new", "low", "high"}
    for group in test.values():
        assert set(group) == {"cmpl", "finish", "skip"}
        assert all(cell["value"] is not None for cell in group.values())
    assert 0.5 < test["high"]["finish"]["value"] < 1.0


def _help(*command: str) -> str:
    result = subprocess.run([mfh_executable(), *command, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _commands(*group: str) -> list[tuple[str, ...]]:
    """Every command of the CLI under `group` with its help text, from the help's Commands section (groups
    recursively), the group itself first."""
    text = _help(*group)
    found = [(group, text)]
    if "Commands:" in text:
        listing = text.split("Commands:")[1].split("\n\n")[0]
        for name in re.findall(r"^  (\S+)", listing, re.MULTILINE):
            found += _commands(*group, name)
    return found


@functools.cache
def all_commands() -> tuple[tuple[tuple[str, ...], str], ...]:
    """(command, help text) of every command, the app itself first (read once per test session)."""
    return tuple(_commands())


TRAINING = ("train", "tune", "ablate", "reproduce")


def test_help_shows_flags_usage_names_and_version(run_mfh):
    commands = all_commands()
    assert {command for command, _ in commands} >= {(), ("train",), ("ablate",), ("report",), ("reproduce",),
                                                    ("data",), ("data", "describe"), ("data", "validate"),
                                                    ("data", "download"), ("model",), ("model", "describe"),
                                                    ("tune",)}
    for command, text in commands:
        assert "<bool>" not in text, f"mfh {' '.join(command)} --help shows a flag as taking a value"
        assert re.search(r"^  --help\s+Show this message and exit\.$", text, re.MULTILINE)
    helps = dict(commands)
    for command in [("train",), ("tune",), ("ablate",), ("reproduce",), ("model", "describe"), ("data", "describe")]:
        assert re.search(r"^Usage: mfh .*\[KEY=VALUE\]\.\.\.$", helps[command], re.MULTILINE), command
    assert "--quiet " not in helps[("train",)].split("-q, --quiet")[1].splitlines()[0]  # a flag: no value
    ablate = " ".join(helps[("ablate",)].split())
    assert all(name in ablate for name in config_names("study"))
    train = " ".join(helps[("train",)].split())
    assert all(name in train for name in config_names("model"))
    assert run_mfh("--version", check=True).stdout.strip() == f"mfh {__version__}"


def _examples(text: str) -> list[list[str]]:
    """The command lines of a help's Examples section, as arguments (without `mfh` and any `# comment`)."""
    if "Examples:" not in text:
        return []
    lines = [line.strip() for line in text.split("Examples:")[1].splitlines() if line.strip().startswith("mfh ")]
    return [shlex.split(line, comments=True)[1:] for line in lines]


def _tiny(args: list[str]) -> list[str]:
    """The example with tiny data and training added after its own arguments (the last value wins): a few batches
    on 2,000 simulated rows (on KuaiRand: large batches), one seed per variant, two tuning trials per variant."""
    composes = args[0] in TRAINING or args[:2] == ["model", "describe"]
    if not composes:
        return args
    kuairand = "data=kuairand" in args
    tiny = [*args, "trainer=smoke", "trainer.batch_size=8192" if kuairand else "data.rows=2000"]
    return tiny + (["--seeds", "1"] if args[0] in ("ablate", "reproduce") else []) + (
        ["--trials", "2"] if args[0] == "tune" else [])


def _help_examples(on_kuairand: bool) -> list[list[str]]:
    """Every distinct example every help shows, as run tiny, those that touch KuaiRand or the others, commands that
    train first so that the reports have results to show."""
    commands = [(command, text) for command, text in all_commands() if command not in [("data",), ("model",)]]
    assert all(len(_examples(text)) >= 2 for _, text in commands), "a command's help shows fewer than 2 examples"
    examples = {tuple(_tiny(example)): None for _, text in commands for example in _examples(text)}  # ordered set
    order = ["data", "model", "train", "tune", "ablate", "report", "reproduce"]
    chosen = [list(args) for args in examples if any("kuairand" in arg for arg in args) == on_kuairand]
    return sorted(chosen, key=lambda args: order.index(args[0]))


def _run_examples(examples: list[list[str]], folder: Path, kuairand_dir: Path | None = None) -> None:
    """As a new user would: in an empty folder, with the KuaiRand slice in ./data (the default data dir) if given."""
    if kuairand_dir is not None:
        shutil.copytree(kuairand_dir, folder / "data" / "kuairand-pure")
    environment = {name: value for name, value in os.environ.items() if not name.startswith("MFH_")}
    for args in examples:
        result = subprocess.run([mfh_executable(), *args], capture_output=True, text=True, cwd=folder,
                                env=environment, timeout=900)
        assert result.returncode == 0, f"mfh {shlex.join(args)}: exit {result.returncode}\n{result.stderr}"


@pytest.mark.slow
def test_every_kuairand_example_in_the_help_runs(kuairand_dir: Path, tmp_path: Path):
    examples = _help_examples(on_kuairand=True)
    assert {args[0] for args in examples} >= {"data", "train", "ablate"}
    _run_examples(examples, tmp_path, kuairand_dir)
    assert list((tmp_path / "results" / "studies").glob("biasnet/kuairand/runs.csv"))


@pytest.mark.slow
def test_every_simulator_example_in_the_help_runs(tmp_path: Path):
    examples = _help_examples(on_kuairand=False)
    assert {args[0] for args in examples} >= {"train", "tune", "ablate", "report", "reproduce", "model"}
    # `mfh report --format csv --output tables`: one file per study and dataset, the CSV the report writes (checked
    # before the later examples retrain studies, `reproduce` replacing the tuned table of `ablate --tuned`).
    output = next(i for i, args in enumerate(examples) if "--output" in args) + 1
    _run_examples(examples[:output], tmp_path)
    studies = list((tmp_path / "results" / "studies").glob("*/*/runs.csv"))
    written = list((tmp_path / "tables").iterdir())
    assert studies and len(written) == len(studies)
    assert all(path.read_text() == (tmp_path / "results" / "tables" / path.name).read_text() for path in written)
    _run_examples(examples[output:], tmp_path)


def write_own_log_without_new_users_in_test(folder: Path) -> Path:
    """A small own log (1,200 rows, 30 users, play labels) whose 6 new users have rows only in the first half of
    the time order, so the time-ordered 60/20/20 split leaves the `new` group without a test row; its mapping."""
    generator = np.random.default_rng(0)
    rows = 1200
    user = generator.integers(0, 30, rows)
    time = np.arange(rows)
    user[(time >= rows // 2) & (user < 6)] = 29  # the new users' later rows go to a high-activity user
    activity = np.array(["new"] * 6 + ["low"] * 12 + ["high"] * 12)
    pd.DataFrame({"uid": user, "video": generator.integers(0, 40, rows), "ts": time, "activity": activity[user],
                  "cmpl": generator.random(rows).round(3), "finish": generator.integers(0, 2, rows),
                  "skip": generator.integers(0, 2, rows)}).to_csv(folder / "log.csv", index=False)
    mapping = {"path": "log.csv", "user": "uid", "item": "video", "time": "ts",
               "group": {"column": "activity", "default": "low", "names": ["new", "low", "high"]},
               "labels": {"cmpl": {"column": "cmpl", "range": [0, 1]}, "finish": "finish", "skip": "skip"},
               "split": {"by": "fraction", "fractions": [0.6, 0.2, 0.2]}}
    (folder / "mapping.yaml").write_text(yaml.safe_dump(mapping))
    return folder / "mapping.yaml"


@pytest.mark.slow  # two tiny seeds of Table 2 on an own log, then its report (~10 s)
def test_a_group_without_test_rows_is_not_computed_and_every_count_says_of_how_many(run_mfh, tmp_path: Path):
    mapping = write_own_log_without_new_users_in_test(tmp_path)
    run_mfh("ablate", "--study", "hierarchical", "--seeds", "2", "--jobs", "1", "--quiet", "data=table",
            f"data.mapping={mapping}", "trainer=smoke", "--data-dir", str(tmp_path), check=True)
    report = run_mfh("report", "--study", "hierarchical", "--format", "markdown", check=True).stdout
    assert "no rows with this label" not in report
    assert report.count("| n/a: no rows of this group in the test split |") == 6  # hmtl and flat, 3 tasks
    for task in ("cmpl MSE", "finish AUC", "skip AUC"):
        assert f"| new | flat | {task} | — | — | — | — | — |" in report
    assert report.count("| not computed: no rows of this group in the test split |") == 3
    left_out = "; 3 of 9 cells not computed (no rows of this group in the test split)"
    verdicts = next(line for line in report.splitlines() if ", 2 seeds: " in line and "as a whole" not in line)
    assert verdicts.endswith(f"(Holm over 6 of 9 cells, α = 0.05){left_out}")
    agreement = next(line for line in report.splitlines() if "direction agrees with the paper" in line)
    assert re.search(r"direction agrees with the paper in \d of 6 cells \(\d significant\)" + re.escape(left_out) + "$",
                     agreement)
    assert "too few rows" not in report  # the new cells have no value to flag


@pytest.mark.slow  # three tiny runs of the three-facet study, then its report (~25 s on one core)
def test_ablate_three_facets_reports_every_group_by_scenario_cell_with_the_oracle(run_mfh, tmp_path: Path):
    tiny = ["data.rows=1500", "data.extra_test_fraction=0", "trainer=smoke"]
    run_mfh("ablate", "--study", "three_facets", "--seeds", "1", "--jobs", "1", "--quiet", *tiny, check=True)
    runs = pd.read_csv(tmp_path / "results" / "studies" / "three_facets" / "synthetic" / "runs.csv")
    assert set(runs["variant"]) == {"mfh", "mfh_two_facets", "flat", "oracle"}
    cells = [f"{group}_{scenario}" for group in ("new", "low", "high") for scenario in ("s0", "s1", "s2")]
    for variant, rows in runs[runs["split"] == "test"].groupby("variant"):
        assert sorted(set(rows["group"])) == sorted(cells), variant  # every variant scored on every cell
    report = run_mfh("report", "--study", "three_facets", "--format", "markdown", check=True).stdout
    assert "| high_s2 | mfh_two_facets |" in report and "| new_s0 | oracle |" in report


@pytest.mark.slow  # three tiny sweeps of Table 2 (~15 s)
def test_seeds_a_user_chooses_a_count_a_range_or_a_list(run_mfh, tmp_path: Path):
    runs_csv = tmp_path / "results" / "studies" / "hierarchical" / "synthetic" / "runs.csv"
    for given, expected in (("2", {0, 1}), ("100-102", {100, 101, 102}), ("0,3,7", {0, 3, 7})):
        run_mfh("ablate", "--study", "hierarchical", "--seeds", given, "--quiet", "--jobs", "1", *TINY, check=True)
        runs = pd.read_csv(runs_csv)
        assert set(runs["seed"]) == expected, given
        trained = {json.loads(path.read_text())["seed"] for path in (tmp_path / "results" / "runs").glob(
            "*/metrics.json")}
        assert expected <= trained  # the seeds trained are the seeds asked for, not 0 … n−1
    for bad in ("0", "3-1", "1,1", "a"):
        refused = run_mfh("ablate", "--study", "hierarchical", "--seeds", bad, *TINY)
        assert refused.returncode == 2 and f"--seeds '{bad}': give a count (5)" in refused.stderr


def test_a_seed_override_to_a_study_is_refused_not_dropped(run_mfh, tmp_path: Path):
    for command in (("ablate", "--study", "hierarchical", "--seeds", "2"), ("reproduce",)):
        refused = run_mfh(*command, "seed=7", *TINY)
        assert refused.returncode == 2, refused.stderr
        line, = refused.stderr.strip().splitlines()
        assert "'seed=7' is not accepted" in line and "--seeds" in line and "seed_offsets" in line
    assert not (tmp_path / "results" / "runs").exists()
    # The controls' reseeded variant trains seed s + 1000: a seed list reaching it would pair a run with itself.
    clash = run_mfh("ablate", "--study", "controls", "--seeds", "0,1000", *TINY)
    assert clash.returncode == 2 and "would be the same run" in clash.stderr and "seed_offsets" in clash.stderr
