"""The task grid, declared once (SPEC §1, §4, §5): its facets and their values, the behaviours and their kinds,
the task names; which metric applies to which behaviour kind, which way is better, the scale its intervals are
computed on, how it is computed; and the columns of the run files.

Torch-free (numpy only), importable by every layer. A run's facets are its tasks config's `facets` (checked at
compose time): each facet here says where a run reads its values (the tasks config, or the dataset's schema), so
a further facet is one `Facet` here, its values in the data's schema and its name in `conf/tasks/*.yaml`.
The engine computes every registered metric of a cell's kind, the studies write one runs.csv row per metric, the
report reads direction and scale from here. Adding a metric is one function
(`compute(predictions, labels, users) -> MetricValue`) and one `register(Metric(...))` call.

Predictions are the model's raw outputs: a logit for a binary behaviour, a value for a regression one.
Shape letters: N rows of one cell (one user group, one behaviour, rows whose label exists).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from mfh_cli.errors import ConfigError  # imports nothing of mfh_cli

if TYPE_CHECKING:  # types only: tasks.py imports nothing of the layers that read it
    from omegaconf import DictConfig

    from mfh_cli.data.schema import Schema

KINDS = ("binary", "regression")

# --- The facets of the task grid. ---

# Every behaviour the project knows and its kind (SPEC §1, §3): regression trains on squared error, binary on
# cross-entropy with logits. The watch-time behaviours come from play time and duration, so they are unknown
# together where a video's duration is (SPEC §5); the others are interactions.
CMPL, FINISH, SKIP = "cmpl", "finish", "skip"
LIKE, SHARE, COMMENT, FOLLOW = "like", "share", "comment", "follow"
BEHAVIOURS: dict[str, str] = {CMPL: "regression", FINISH: "binary", SKIP: "binary", LIKE: "binary",
                              SHARE: "binary", COMMENT: "binary", FOLLOW: "binary"}
WATCH_BEHAVIOURS: tuple[str, ...] = (CMPL, FINISH, SKIP)

# The user groups of KuaiRand and the simulator (SPEC §5), in index order (Dataset.group indexes the schema's
# groups); your own log (`data=table`) names its own.
NEW_USERS, LOW_ACTIVITY, HIGH_ACTIVITY = "new", "low", "high"
USER_GROUPS: tuple[str, ...] = (NEW_USERS, LOW_ACTIVITY, HIGH_ACTIVITY)


@dataclass(frozen=True)
class Facet:
    """A facet of the task grid: its `name` (as `tasks.facets`, `model.trees` and task names write it) and where a
    run reads its values: attribute `key` of the tasks config (`from_config`) or of the dataset's Schema, whose
    rows then carry each row's value index in Dataset attribute `column` (as `Dataset.group` the user group)."""

    name: str
    key: str
    from_config: bool = False
    column: str = ""

    def run_values(self, tasks_cfg: DictConfig, schema: Schema) -> list[str]:
        """This facet's values in a run of tasks config `tasks_cfg` on a dataset of `schema`."""
        return list(getattr(tasks_cfg if self.from_config else schema, self.key))


BEHAVIOUR = Facet("behaviour", key="behaviours", from_config=True)  # tasks.behaviours: a subset of the data's
USER_GROUP = Facet("group", key="groups", column="group")  # every user group of the dataset
# The surface of the app a row was shown on (KuaiRand: the log's `tab`, the largest tabs apart and the rest
# pooled; the simulator: `data.scenarios`); a dataset without scenarios has none (Schema.scenarios empty).
SCENARIO = Facet("scenario", key="scenarios", column="scenario")
FACETS: dict[str, Facet] = {facet.name: facet for facet in (BEHAVIOUR, USER_GROUP, SCENARIO)}


def run_facets(tasks_cfg: DictConfig, schema: Schema) -> dict[str, list[str]]:
    """{facet: its values} of a run, in the order of `tasks_cfg.facets` (canonical task order: the last facet
    varies fastest). `tasks_cfg` is the composed `cfg.tasks` (checked by config_schema), `schema` the dataset's;
    a facet the dataset does not have (no values) is a ConfigError naming it."""
    grid = {name: FACETS[name].run_values(tasks_cfg, schema) for name in tasks_cfg.facets}
    empty = [name for name, values in grid.items() if not values]
    if empty:
        raise ConfigError(f"tasks.facets: dataset '{getattr(schema, 'name', '') or 'this dataset'}' has no "
                          f"{', '.join(empty)} values (Schema.{', '.join(FACETS[name].key for name in empty)} "
                          "is empty)")
    return grid


def cell_facets(grid: dict[str, list[str]], schema: Schema) -> dict[str, list[str]]:
    """{facet: values} that place a row in one cell of the grid: every facet of the run but behaviour, and the
    user group even where the grid lacks it (metrics are per user group, SPEC §4). A task is a behaviour × a
    cell; for the two-facet grids the cells are the user groups."""
    cells = {name: values for name, values in grid.items() if name != BEHAVIOUR.name}
    return cells if USER_GROUP.name in cells else {USER_GROUP.name: list(schema.groups), **cells}


def cell_names(cells: dict[str, list[str]]) -> list[str]:
    """The name of every cell of {facet: values} in canonical order: its values joined (`high`, `high_tab1`)."""
    return task_names(cells)


def facet_trees(facets: list[str]) -> list[str]:
    """MFH's trees over a grid's facets (SPEC §2, K facets): one tree per facet, which splits first by it, then
    each branch into the tasks sharing its value (`behaviour/group+scenario`). Two facets give the authors'
    pair `behaviour/group`, `group/behaviour`; one facet one single-level tree. The `facet_trees` resolver of the
    model files (conf/model/mfh.yaml)."""
    facets = [str(facet) for facet in facets]
    if len(facets) == 1:
        return facets
    return [f"{facet}/{'+'.join(other for other in facets if other != facet)}" for facet in facets]


def joint_tree(facets: list[str]) -> str:
    """One level splitting by every task of the grid at once (`behaviour+group`): the flat models' tree, the
    `joint_tree` resolver of conf/model/flat.yaml."""
    return "+".join(str(facet) for facet in facets)


def task_name(*values: str) -> str:
    """A task's name: its value of each facet in facet order, joined (`cmpl_new`)."""
    return "_".join(values)


def task_names(facet_values: dict[str, list[str]]) -> list[str]:
    """Every task of a grid {facet: values} in canonical order (the last facet varies fastest)."""
    return [task_name(*values) for values in itertools.product(*facet_values.values())]


# --- The run files and the metrics. ---

# runs.csv: one row per (variant, seed, split, group, task, metric); `value` empty when not computable.
RUNS_COLUMNS = ("study", "variant", "seed", "dataset", "split", "group", "task", "metric", "value", "run_id")
HISTORY_COLUMNS = ("step", "epoch", "split", "group", "task", "loss")


@dataclass(frozen=True)
class MetricValue:
    """One metric of one cell: its value, or None and the reason; `facts` are counts the cell records with it
    (gAUC: users used and skipped)."""

    value: float | None
    reason: str | None = None
    facts: dict = field(default_factory=dict)


def _logit(values: np.ndarray) -> np.ndarray:
    return np.log(values) - np.log1p(-values)


def _expit(values: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-values))


def _identity(values: np.ndarray) -> np.ndarray:
    return values


# The scale on which a metric's per-seed values are unbounded, and back (report/aggregate.py: a cell's interval is
# the t interval of the mean there, mapped back, so it never leaves what the metric can take).
SCALES: dict[str, tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]] = {
    "logit": (_logit, _expit),  # values in (0, 1)
    "log": (np.log, np.exp),  # values above 0
    "identity": (_identity, _identity),  # any real value
}


@dataclass(frozen=True)
class Metric:
    """A registry entry: `name` (runs.csv's `metric`), the behaviour `kind` it applies to, whether lower is
    better, its unbounded `scale` (a key of SCALES), `compute`, the `label` tables print, and whether it rests
    on the cell's two classes (`class_counts`: the report flags cells with too few positives or negatives)."""

    name: str
    kind: str
    lower_is_better: bool
    scale: str
    compute: Callable[[np.ndarray, np.ndarray, np.ndarray], MetricValue]
    label: str = ""
    class_counts: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"metric {self.name}: kind must be one of {', '.join(KINDS)}, not {self.kind}")
        if self.scale not in SCALES:
            raise ValueError(f"metric {self.name}: scale must be one of {', '.join(SCALES)}, not {self.scale}")
        if not self.label:
            object.__setattr__(self, "label", self.name.upper())


REGISTRY: dict[str, Metric] = {}  # in registration order: the order cells and runs.csv list them
PRIMARY = {"binary": "auc", "regression": "mse"}  # the metric of a kind the report shows by default (SPEC §4)


def register(metric: Metric) -> Metric:
    """Add `metric` to the registry (replacing one of the same name); every layer reads it from there."""
    REGISTRY[metric.name] = metric
    return metric


def unregister(name: str) -> None:
    """Remove a metric (a test's toy metric); the primary metrics stay."""
    if name in PRIMARY.values():
        raise ValueError(f"metric {name} is the primary metric of its kind")
    REGISTRY.pop(name, None)


def metric(name: str) -> Metric:
    """The registry entry `name`; KeyError naming the registered ones otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown metric '{name}' (registered: {', '.join(REGISTRY)})") from None


def metrics_of(kind: str) -> list[Metric]:
    """Every registered metric of behaviour kind `kind`, primary first."""
    return sorted((entry for entry in REGISTRY.values() if entry.kind == kind),
                  key=lambda entry: entry.name != PRIMARY[kind])


def lower_is_better(name: str) -> bool:
    """Whether a lower value of metric `name` is better."""
    return metric(name).lower_is_better


def kind_of(name: str) -> str:
    """The behaviour kind metric `name` applies to."""
    return metric(name).kind


def metric_label(name: str) -> str:
    """How tables print metric `name`: its registry label ('AUC', 'gAUC'), else the name in capitals."""
    return REGISTRY[name].label if name in REGISTRY else name.upper()


def shown_metrics(choice: str | None) -> dict[str, str]:
    """{kind: metric shown} for a report: `choice` for its own kind, the primary metric for the others."""
    shown = dict(PRIMARY)
    if choice is not None:
        shown[kind_of(choice)] = choice
    return shown


# --- The metrics. ---

def _binary(labels: np.ndarray) -> np.ndarray:
    return np.asarray(labels) > 0.5


def auc_value(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Area under the ROC curve by ranking (ties get their average rank); None when one class is absent."""
    positive = _binary(labels)
    n_positive = int(positive.sum())
    n_negative = positive.size - n_positive
    if n_positive == 0 or n_negative == 0:
        return None
    values = np.asarray(scores)
    # float32 (the model's outputs) sorts faster; float64 scores (the oracle's logits) keep their precision.
    values = values if values.dtype == np.float64 else values.astype(np.float32, copy=False)
    order = np.argsort(values)
    sorted_values = values[order]
    ends = np.append(np.flatnonzero(sorted_values[1:] != sorted_values[:-1]) + 1, values.size)  # tie blocks
    starts = np.concatenate(([0], ends[:-1]))
    average_rank = (starts + 1 + ends) / 2  # 1-based ranks starts+1 .. ends, averaged
    positives_before = np.concatenate(([0], np.cumsum(positive[order])[ends - 1]))
    rank_sum = float((np.diff(positives_before) * average_rank).sum())
    return (rank_sum - n_positive * (n_positive + 1) / 2) / (n_positive * n_negative)


def _single_class(labels: np.ndarray) -> str:
    positives = int(_binary(labels).sum())
    return f"one class only ({positives} positives in {np.asarray(labels).size} rows)"


def auc(predictions: np.ndarray, labels: np.ndarray, users: np.ndarray) -> MetricValue:
    """AUC of the cell's rows (rank-based)."""
    value = auc_value(predictions, labels)
    return MetricValue(value, None if value is not None else _single_class(labels))


def mse(predictions: np.ndarray, labels: np.ndarray, users: np.ndarray) -> MetricValue:
    """Mean squared error, accumulated in float64."""
    error = np.asarray(predictions, dtype=np.float64) - np.asarray(labels, dtype=np.float64)
    return MetricValue(float(np.dot(error, error) / error.size))


def logloss(predictions: np.ndarray, labels: np.ndarray, users: np.ndarray) -> MetricValue:
    """Mean binary cross-entropy of logits: softplus(x) − y·x = −log σ(±x), stable for any finite logit."""
    logits = np.asarray(predictions, dtype=np.float64)
    signed = np.where(_binary(labels), logits, -logits)  # −log σ(signed) is each row's loss
    with np.errstate(over="ignore", invalid="ignore"):
        value = float(np.logaddexp(0.0, -signed).mean())
    if not np.isfinite(value):
        return MetricValue(None, "infinite: a prediction of probability 0 or 1 on the other class")
    return MetricValue(value)


def user_aucs(predictions: np.ndarray, labels: np.ndarray, users: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                                          np.ndarray]:
    """Per user of the cell: AUC (NaN for a single-class user), rows, positives; vectorised (one sort by user then
    score, ties within a user averaged like `auc_value`)."""
    positive = _binary(labels)
    scores = np.asarray(predictions)
    scores = scores if scores.dtype == np.float64 else scores.astype(np.float32, copy=False)
    order = np.lexsort((scores, np.asarray(users)))
    users_sorted, scores_sorted, positive_sorted = np.asarray(users)[order], scores[order], positive[order]
    n = users_sorted.size
    new_user = np.concatenate(([True], users_sorted[1:] != users_sorted[:-1]))
    user_starts = np.flatnonzero(new_user)
    user_index = np.cumsum(new_user) - 1  # [N] which user each sorted row belongs to
    new_block = new_user | np.concatenate(([True], scores_sorted[1:] != scores_sorted[:-1]))
    block_starts = np.flatnonzero(new_block)
    block_ends = np.append(block_starts[1:], n)
    block_of_row = np.cumsum(new_block) - 1
    first_of_user = user_starts[user_index[block_starts]]
    block_rank = (block_starts - first_of_user + 1 + block_ends - first_of_user) / 2  # within-user average rank
    rank = block_rank[block_of_row]
    rows = np.diff(np.append(user_starts, n))
    positives = np.bincount(user_index, weights=positive_sorted, minlength=rows.size)
    rank_sum = np.bincount(user_index, weights=rank * positive_sorted, minlength=rows.size)
    negatives = rows - positives
    with np.errstate(divide="ignore", invalid="ignore"):
        aucs = (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)
    aucs[(positives == 0) | (negatives == 0)] = np.nan
    return aucs, rows, positives.astype(np.int64)


def _gauc(predictions: np.ndarray, labels: np.ndarray, users: np.ndarray, weighted: bool) -> MetricValue:
    if np.asarray(labels).size == 0:
        return MetricValue(None, "no rows with this label", {"users": 0, "users_skipped": 0})
    aucs, rows, _ = user_aucs(predictions, labels, users)
    used = ~np.isnan(aucs)
    facts = {"users": int(used.sum()), "users_skipped": int((~used).sum())}
    if not used.any():
        return MetricValue(None, f"no user with both classes ({aucs.size} users, each single-class)", facts)
    weights = rows[used] if weighted else np.ones(int(used.sum()))
    return MetricValue(float(np.dot(aucs[used], weights) / weights.sum()), None, facts)


def gauc(predictions: np.ndarray, labels: np.ndarray, users: np.ndarray) -> MetricValue:
    """Group AUC: each user's AUC over the cell, averaged weighted by the user's rows; single-class users skipped."""
    return _gauc(predictions, labels, users, weighted=True)


def gauc_unweighted(predictions: np.ndarray, labels: np.ndarray, users: np.ndarray) -> MetricValue:
    """Group AUC with every user (of both classes in the cell) counting once."""
    return _gauc(predictions, labels, users, weighted=False)


register(Metric("auc", "binary", lower_is_better=False, scale="logit", compute=auc, label="AUC",
                class_counts=True))
register(Metric("mse", "regression", lower_is_better=True, scale="log", compute=mse, label="MSE"))
register(Metric("logloss", "binary", lower_is_better=True, scale="log", compute=logloss, label="LogLoss"))
register(Metric("gauc", "binary", lower_is_better=False, scale="logit", compute=gauc, label="gAUC",
                class_counts=True))
register(Metric("gauc_unweighted", "binary", lower_is_better=False, scale="logit", compute=gauc_unweighted,
                label="gAUC(unw)", class_counts=True))
