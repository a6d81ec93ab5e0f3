"""Study specifications read from conf/study/<name>.yaml (a new ablation is a YAML file, not code)."""

from __future__ import annotations

from dataclasses import dataclass, field

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
    focus: dict | None = None  # overfitting study: {"task": ..., "group": ...}
    note: str = ""

    def describe(self, dataset: str, seeds: list[int]) -> dict:
        """What study.json records next to runs.csv (read by the report)."""
        return {"study": self.name, "title": self.title, "paper_table": self.paper_table, "tasks": self.tasks,
                "reference": self.reference, "variants": list(self.variants), "seeds": seeds,
                "dataset": dataset, "focus": self.focus, "note": self.note}


def study_names() -> list[str]:
    """Every study shipped in conf/study, in the paper's order (tables, figure, then ours)."""
    order = ["multifaceted", "hierarchical", "heterogeneity", "biasnet", "overfitting", "sota"]
    found = sorted(path.stem for path in (CONF_DIR / "study").glob("*.yaml"))
    return [name for name in order if name in found] + [name for name in found if name not in order]


def load_study(name: str) -> Study:
    """Read and check conf/study/<name>.yaml."""
    path = CONF_DIR / "study" / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown study '{name}': choose one of {', '.join(study_names())} or all")
    try:
        raw = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except OmegaConfBaseException as error:
        raise ConfigError(f"{path}: {error}") from None
    try:
        tasks = raw["tasks"] if isinstance(raw["tasks"], list) else [raw["tasks"]]
        study = Study(name=raw.get("name", name), title=raw["title"], tasks=tasks,
                      variants={k: list(v or []) for k, v in raw["variants"].items()},
                      reference=raw["reference"], seeds=int(raw.get("seeds", 3)),
                      paper_table=raw.get("paper_table"), overrides=list(raw.get("overrides") or []),
                      focus=raw.get("focus"), note=raw.get("note", ""))
    except (KeyError, TypeError, AttributeError) as error:
        raise ConfigError(f"{path}: missing or malformed key {error}") from None
    if study.reference not in study.variants:
        raise ConfigError(f"{path}: reference '{study.reference}' is not one of the variants")
    return study
