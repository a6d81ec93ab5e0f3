"""Study specifications read from conf/study/<name>.yaml (a new ablation is a YAML file, not code)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mfh_cli.config import CONF_DIR
from mfh_cli.errors import ConfigError


@dataclass(frozen=True)
class Study:
    """One study: task grids, variants (name → overrides; the reference first) and default seeds."""

    name: str
    title: str
    tasks: list[str]  # task grids (conf/tasks), e.g. [play] or [play, interactive]
    variants: dict[str, list[str]]
    reference: str
    seeds: int = 3
    paper_table: int | None = None
    overrides: list[str] = field(default_factory=list)  # applied to every variant, before the user's
    # dataset name → overrides applied to every variant on that dataset only, after `overrides` (the simulator's
    # scenarios in conf/study/three_facets.yaml: KuaiRand has its own and no such key)
    data_overrides: dict[str, list[str]] = field(default_factory=dict)
    focus: dict | None = None  # overfitting study: {"task": ..., "group": ...}
    note: str = ""
    # variant → offset added to its run seeds: seed s of the variant trains with seed s + offset and is paired
    # with seed s of the others (an independent seed stream, e.g. the negative control)
    seed_offsets: dict[str, int] = field(default_factory=dict)
    expected: dict[str, str] = field(default_factory=dict)  # variant → the verdict a control must get
    # setting → overrides: the study runs once per setting, each a study of its own named <name>_<setting>
    # (the mechanism sweep); `figure` names the sweep's x key, line key and compared variant
    settings: dict[str, list[str]] = field(default_factory=dict)
    figure: dict | None = None
    sweep: dict | None = None  # on an expanded study: {"study", "setting", "overrides", "figure"}
    in_main_job: bool = True  # `mfh reproduce` and `--study all` run it (else: by name, or reproduce --with)
    only_on: str | None = None  # the one dataset the study means something on (the controls: synthetic)
    # `mfh tune`'s search space beyond (or replacing) conf/tuning.yaml's: key → {min, max, log, int} | {choices}
    tune: dict[str, dict] = field(default_factory=dict)
    # set by `--tuned` (studies/tuned.py apply_tuning): best.yaml's overrides per variant and grid, and the budget
    tuned: dict | None = None

    def expand(self) -> list[Study]:
        """The study itself, or one study per setting when it sweeps settings."""
        if not self.settings:
            return [self]
        return [replace(self, name=f"{self.name}_{setting}", title=f"{self.title} [{setting}]",
                        overrides=[*self.overrides, *overrides], settings={}, figure=None,
                        sweep={"study": self.name, "setting": setting, "overrides": list(overrides),
                               "figure": self.figure})
                for setting, overrides in self.settings.items()]

    def describe(self, dataset: str, seeds: list[int]) -> dict:
        """What study.json records next to runs.csv (read by the report)."""
        return {"study": self.name, "title": self.title, "paper_table": self.paper_table, "tasks": self.tasks,
                "reference": self.reference, "variants": list(self.variants), "seeds": seeds,
                "dataset": dataset, "focus": self.focus, "note": self.note, "seed_offsets": self.seed_offsets,
                "expected": self.expected, "sweep": self.sweep, "tuned": self.tuned}


def study_names(main_job: bool = False) -> list[str]:
    """Every study shipped in conf/study (or only those of the main job), controls first, then the paper's order
    (tables, figure), then ours."""
    order = ["controls", "multifaceted", "hierarchical", "heterogeneity", "biasnet", "overfitting", "sota"]
    found = sorted(path.stem for path in (CONF_DIR / "study").glob("*.yaml"))
    names = [name for name in order if name in found] + [name for name in found if name not in order]
    return [name for name in names if not main_job or load_study(name).in_main_job]


def load_expanded(name: str) -> Study:
    """A study by name, also one setting of a sweeping study (`mechanism_deviation_0`)."""
    if (CONF_DIR / "study" / f"{name}.yaml").is_file():
        return load_study(name)
    for candidate in study_names():
        for expanded in load_study(candidate).expand():
            if expanded.name == name:
                return expanded
    return load_study(name)  # raises the unknown-study error


# The keys a study file may hold (Study's fields as conf/study/*.yaml spells them).
STUDY_KEYS = {"name", "title", "tasks", "variants", "reference", "seeds", "paper_table", "overrides", "data_overrides",
              "focus", "note", "seed_offsets", "expected", "settings", "figure", "in_main_job", "only_on", "tune"}


def load_study(name: str) -> Study:
    """Read and check conf/study/<name>.yaml."""
    path = CONF_DIR / "study" / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown study '{name}': choose one of {', '.join(study_names())} or all")
    try:
        raw = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except OmegaConfBaseException as error:
        raise ConfigError(f"{path}: {error}") from None
    unknown = sorted(set(raw) - STUDY_KEYS) if isinstance(raw, dict) else []
    if unknown:  # a typo (`in_main_jobs: false`) would otherwise be ignored, and the study join the main job
        raise ConfigError(f"{path}: unknown key '{unknown[0]}' (a study file takes {', '.join(sorted(STUDY_KEYS))})")
    try:
        tasks = raw["tasks"] if isinstance(raw["tasks"], list) else [raw["tasks"]]
        study = Study(name=raw.get("name", name), title=raw["title"], tasks=tasks,
                      variants={k: list(v or []) for k, v in raw["variants"].items()},
                      reference=raw["reference"], seeds=int(raw.get("seeds", 3)),
                      paper_table=raw.get("paper_table"), overrides=list(raw.get("overrides") or []),
                      data_overrides={k: list(v or []) for k, v in (raw.get("data_overrides") or {}).items()},
                      focus=raw.get("focus"), note=raw.get("note", ""),
                      seed_offsets={k: int(v) for k, v in (raw.get("seed_offsets") or {}).items()},
                      expected=dict(raw.get("expected") or {}),
                      settings={k: list(v or []) for k, v in (raw.get("settings") or {}).items()},
                      figure=raw.get("figure"), in_main_job=bool(raw.get("in_main_job", True)),
                      only_on=raw.get("only_on"), tune=dict(raw.get("tune") or {}))
    except (KeyError, TypeError, AttributeError, ValueError) as error:
        raise ConfigError(f"{path}: missing or malformed key {error}") from None
    if study.reference not in study.variants:
        raise ConfigError(f"{path}: reference '{study.reference}' is not one of the variants")
    for variant, overrides in [("overrides", study.overrides), *study.variants.items()]:
        if any(item.lstrip("+~").split("=", 1)[0] == "seed" for item in overrides):
            raise ConfigError(f"{path}: {variant}: a seed= override is not accepted: a study trains its own seeds "
                              f"(mfh ablate --seeds); give a variant an independent stream with seed_offsets")
    strangers = sorted((set(study.seed_offsets) | set(study.expected)) - set(study.variants))
    if strangers:
        raise ConfigError(f"{path}: seed_offsets / expected name unknown variant(s) {', '.join(strangers)}")
    bad_settings = [setting for setting in study.settings if not re.fullmatch(r"[A-Za-z0-9_.-]+", str(setting))]
    if bad_settings:
        raise ConfigError(f"{path}: setting names may hold letters, digits, '_', '.', '-' only: "
                          f"{', '.join(map(str, bad_settings))}")
    check_search_space(study.tune, f"{path}: tune")
    return study


SPACE_KEYS = {"min", "max", "log", "int"}


def check_search_space(space: dict, source: str) -> None:
    """A search space (conf/tuning.yaml `space`, a study's `tune:`): each key maps to {min, max} (optionally
    `log: true`, `int: true`) or to {choices: [values]}; anything else is one ConfigError line naming it."""
    if not isinstance(space, dict):
        raise ConfigError(f"{source}: expected a mapping of config keys to ranges (got {space!r})")
    for key, dimension in space.items():
        where = f"{source}.{key}"
        if not isinstance(dimension, dict):
            raise ConfigError(f"{where}: expected {{min, max[, log, int]}} or {{choices: [...]}} (got {dimension!r})")
        if "choices" in dimension:
            choices = dimension["choices"]
            if set(dimension) != {"choices"} or not isinstance(choices, list) or not choices:
                raise ConfigError(f"{where}: choices must be a non-empty list, alone (got {dimension!r})")
            continue
        unknown = sorted(set(dimension) - SPACE_KEYS)
        if unknown or not {"min", "max"} <= set(dimension):
            raise ConfigError(f"{where}: expected min and max (and optionally log, int) (got {dimension!r})")
        lowest, highest = dimension["min"], dimension["max"]
        if not all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in (lowest, highest)):
            raise ConfigError(f"{where}: min and max must be numbers (got {lowest!r}, {highest!r})")
        if not lowest < highest:
            raise ConfigError(f"{where}: min must be below max (got {lowest!r}, {highest!r})")
        if dimension.get("log") and lowest <= 0:
            raise ConfigError(f"{where}: a log scale needs min > 0 (got {lowest!r})")
