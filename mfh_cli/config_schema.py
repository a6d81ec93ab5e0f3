"""The typed schema of the composed config: every tasks, trainer, size and data value is checked when it is
composed.

A value that breaks a rule is one ConfigError line, `<key>: <rule> (got <value>)`, before any data is loaded or
any run is trained. Model structure (which switcher kinds combine how) is checked where models are built.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Literal, Union

import numpy as np
from omegaconf import DictConfig, OmegaConf
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from mfh_cli.errors import ConfigError
from mfh_cli.tasks import BEHAVIOUR, BEHAVIOURS, FACETS, USER_GROUP, USER_GROUPS

# What the loaders do with duplicate impressions (`data.duplicates`, data/validate.py apply_duplicate_policy).
DUPLICATE_POLICIES = ("drop", "keep")
PositiveInt = Annotated[int, Field(ge=1)]
Count = Annotated[int, Field(ge=0)]
Widths = list[PositiveInt]


class _Strict(BaseModel):
    """No type coercion ('abc' is not a number, true is not 1) and no keys beyond the declared ones."""

    model_config = ConfigDict(strict=True, extra="forbid")


def _distinct(values: list[str]) -> list[str]:
    repeated = sorted({value for value in values if values.count(value) > 1})
    if repeated:
        raise ValueError(f"{', '.join(repeated)} listed more than once")
    return values


class TasksSchema(_Strict):
    """conf/tasks/*.yaml: the behaviours of the grid (checked against the dataset's when a model is built: your
    own log may name new ones) and its facets (mfh_cli/tasks.py FACETS), behaviour first and the user group (if
    listed) second: the towers and the task order are behaviour-major, and towers are banked per user group."""

    name: str
    behaviours: Annotated[list[str], Field(min_length=1)]
    facets: Annotated[list[Literal[tuple(FACETS)]], Field(min_length=1)]  # type: ignore[valid-type]

    @field_validator("behaviours")
    @classmethod
    def _behaviours_distinct(cls, behaviours: list[str]) -> list[str]:
        return _distinct(behaviours)

    @field_validator("facets")
    @classmethod
    def _facets_distinct_behaviour_first(cls, facets: list[str]) -> list[str]:
        if facets[0] != BEHAVIOUR.name:
            raise ValueError(f"the first facet must be {BEHAVIOUR.name}")
        if USER_GROUP.name in facets and facets.index(USER_GROUP.name) != 1:  # towers are sized per user group
            raise ValueError(f"{USER_GROUP.name} must come right after {BEHAVIOUR.name}")
        return _distinct(facets)


class TrainerSchema(_Strict):
    """conf/trainer/*.yaml."""

    max_epochs: PositiveInt
    batch_size: Annotated[int, Field(ge=2)]  # BatchNorm needs two rows
    eval_batch_size: PositiveInt
    lr: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    weight_decay: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    optimizer: Literal["adam", "adamw", "sgd"]
    patience: PositiveInt
    min_delta: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    selection: Literal["best", "last"]  # the best validation epoch (early stopping) or the last of max_epochs
    ema_decay: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)] | None  # weight averaging; null: off
    precise_bn_batches: Count  # 0: off; N: BatchNorm statistics recomputed over N train batches
    history: bool  # record history.csv (the overfitting study's curves)
    history_every: Count | None  # 0 or null: no history
    history_test_rows: PositiveInt | None  # null: all test rows
    threads: PositiveInt | None  # null: all cores
    device: Literal["cpu", "cuda", "auto"]
    precision: Literal["fp32", "bf16", "auto"]
    kernels: Literal["fused", "eager"]  # fused: the C++ ReLU → BatchNorm training kernel where it runs
    allow_emulated_bf16: bool
    compile: bool
    progress: bool
    nan_at_step: Count | None
    task_weights: dict[str, Annotated[float, Field(ge=0, allow_inf_nan=False)]]
    weighting: Literal["fixed", "uncertainty"]  # loss weighting across task cells (models/weighting.py)


class SwitcherSchema(_Strict):
    """One switcher's sizes in conf/size/*.yaml: sizes only; its kind and gate are the model file's
    (conf/model/*.yaml), and which kinds take which settings is checked by the model builder."""

    experts_per_branch: Count
    shared_experts: Count
    layers: Annotated[list[Annotated[Widths, Field(min_length=1)]], Field(min_length=1)]


class SizeSchema(_Strict):
    """conf/size/*.yaml."""

    name: str
    embedding_dim: PositiveInt
    level0: Widths | None  # null: no level 0
    branch_mlp: Widths
    switchers: dict[str, SwitcherSchema]
    towers: dict[str, Widths]
    bias_tower: Widths


class _TrackingBase(_Strict):
    """conf/tracking/*.yaml: the keys every backend has (engine/tracking.py)."""

    experiment: str | None  # null: the study's name, `train` for mfh train
    run_name: str | None  # null: <model>-seed<seed>-<tasks>


class NoTracking(_TrackingBase):
    name: Literal["none"]


class MlflowTracking(_TrackingBase):
    name: Literal["mlflow"]
    uri: str | None  # null: MLFLOW_TRACKING_URI, else <results>/mlflow/mlflow.db


class TensorboardTracking(_TrackingBase):
    name: Literal["tensorboard"]
    log_dir: str | None  # null: <results>/tensorboard


TrackingSchema = Annotated[Union[NoTracking, MlflowTracking, TensorboardTracking], Field(discriminator="name")]
# A tagged union's error location starts with the tag (the backend's name), which is no key of the config.
TAGGED_SECTIONS = ("tracking",)
SECTION_SCHEMAS = {"tasks": TypeAdapter(TasksSchema), "trainer": TypeAdapter(TrainerSchema),
                   "size": TypeAdapter(SizeSchema), "tracking": TypeAdapter(TrackingSchema)}


def check_config(cfg: DictConfig) -> None:
    """Raise one ConfigError line for the first tasks, trainer, size, tracking or data value that breaks its rule."""
    for section, schema in SECTION_SCHEMAS.items():
        try:
            schema.validate_python(OmegaConf.to_container(cfg[section], resolve=True))
        except ValidationError as error:
            first = error.errors()[0]
            location = first["loc"][1:] if section in TAGGED_SECTIONS else first["loc"]
            key = ".".join([section, *(str(part) for part in location)])
            rule = first["msg"].removeprefix("Value error, ").replace("Input should be", "must be").replace(
                "Extra inputs are not permitted", "unknown key")
            raise ConfigError(f"{key}: {rule} (got {first['input']!r})") from None
    check_data(cfg.data)


def check_data(data_cfg: DictConfig) -> None:
    """The loader's own rules for its data keys (one place per loader), run at compose time.

    `data=table`'s mapping is checked when its log and mapping file are read (its mapping may live in that file).
    """
    if data_cfg.name in ("kuairand", "table") and data_cfg.get("duplicates") not in DUPLICATE_POLICIES:
        raise ConfigError(f"data.duplicates: must be one of {', '.join(DUPLICATE_POLICIES)} "
                          f"(got {data_cfg.get('duplicates')!r})")
    if data_cfg.name == "synthetic":
        read_settings(data_cfg)
    elif data_cfg.name == "kuairand":
        split_ranges(data_cfg)


# The data settings each loader reads, checked when a config is composed (here, below the data layer, so that
# composing never imports a loader). The simulator's are typed; KuaiRand's date ranges are checked.

SIMULATOR_FILE = "conf/data/synthetic.yaml"
SPLIT_NAMES: tuple[str, ...] = ("train", "validation", "test")  # data/schema.py SPLITS
# The scenario keys are read with these defaults and are not in conf/data/synthetic.yaml: a key added there would
# change every simulator run id (the hash of the resolved config). Set them with `+data.scenarios=3`.
SCENARIO_DEFAULTS = {"scenarios": 1, "scenario_deviation": 0.5}


@dataclass(frozen=True)
class SimulatorSettings:
    """The validated knobs of `conf/data/synthetic.yaml`."""

    seed: int
    rows: int
    users: int
    items: int
    group_row_shares: tuple[float, ...]  # [G]
    group_user_shares: tuple[float, ...]  # [G]
    latent_dim: int
    attribute_share: float
    shared_strength: float
    group_deviation: float
    group_offsets: tuple[float, ...]  # [G]
    task_strength: float
    noise: float
    cmpl_noise: float
    positive_rates: tuple[float, ...]  # [B]
    missing_fraction: float
    validation_fraction: float
    test_fraction: float
    extra_test_fraction: float
    scenarios: int = 1  # S
    scenario_deviation: float = 0.5  # e

    @property
    def total_rows(self) -> int:
        """The log's rows and the extra test rows drawn after it."""
        return self.rows + round(self.rows * self.extra_test_fraction)


def read_settings(data_cfg: DictConfig) -> SimulatorSettings:
    """Check every knob of the data config; a bad one raises one ConfigError line naming the key and the rule."""

    def value(key: str):
        if data_cfg.get(key) is None:
            raise ConfigError(f"{SIMULATOR_FILE}: data.{key} is missing")
        return data_cfg[key]

    def number(key: str, low: float, high: float = math.inf, integer: bool = False) -> float:
        raw = value(key)
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or (integer and not isinstance(raw, int)):
            raise ConfigError(f"{SIMULATOR_FILE}: data.{key} must be {'an integer' if integer else 'a number'} "
                              f"(got {raw!r})")
        if not low <= raw <= high:
            raise ConfigError(f"{SIMULATOR_FILE}: data.{key} must lie in [{low}, {high}] (got {raw})")
        return raw

    def per_name(key: str, names: list[str], low: float, high: float, total: float | None = None
                 ) -> tuple[float, ...]:
        raw = value(key)
        if not isinstance(raw, DictConfig) or set(raw.keys()) != set(names):
            raise ConfigError(f"{SIMULATOR_FILE}: data.{key} must map exactly {', '.join(names)} to numbers")
        values = tuple(raw[name] for name in names)
        if any(isinstance(item, bool) or not isinstance(item, (int, float)) or not low <= item <= high
               for item in values):
            raise ConfigError(f"{SIMULATOR_FILE}: data.{key} values must be numbers in [{low}, {high}] "
                              f"(got {dict(raw)})")
        if total is not None and abs(sum(values) - total) > 1e-6:
            raise ConfigError(f"{SIMULATOR_FILE}: data.{key} must sum to {total:g} (got {sum(values):.6g})")
        return tuple(float(item) for item in values)

    def optional(key: str, check: Callable[[str], float]) -> float:
        return check(key) if data_cfg.get(key) is not None else SCENARIO_DEFAULTS[key]

    groups = list(USER_GROUPS)
    settings = SimulatorSettings(
        seed=int(number("seed", 0, integer=True)), rows=int(number("rows", 1, integer=True)),
        users=int(number("users", len(groups), integer=True)), items=int(number("items", 1, integer=True)),
        group_row_shares=per_name("group_row_shares", groups, 0.0, 1.0, total=1.0),
        group_user_shares=per_name("group_user_shares", groups, 0.0, 1.0, total=1.0),
        latent_dim=int(number("latent_dim", 1, integer=True)), attribute_share=number("attribute_share", 0, 1),
        shared_strength=number("shared_strength", 0), group_deviation=number("group_deviation", 0),
        group_offsets=per_name("group_offsets", groups, -math.inf, math.inf),
        task_strength=number("task_strength", 0), noise=number("noise", 0), cmpl_noise=number("cmpl_noise", 0),
        positive_rates=per_name("positive_rates", list(BEHAVIOURS), 1e-6, 1 - 1e-6),
        missing_fraction=number("missing_fraction", 0, 1),
        validation_fraction=number("validation_fraction", 0, 1), test_fraction=number("test_fraction", 0, 1),
        extra_test_fraction=number("extra_test_fraction", 0),
        scenarios=int(optional("scenarios", lambda key: number(key, 1, 64, integer=True))),
        scenario_deviation=float(optional("scenario_deviation", lambda key: number(key, 0))),
    )
    if settings.validation_fraction + settings.test_fraction >= 1:
        raise ConfigError(f"{SIMULATOR_FILE}: data.validation_fraction + data.test_fraction must be below 1")
    for split in ("validation", "test"):  # early stopping needs validation rows, metrics need test rows
        fraction = getattr(settings, f"{split}_fraction")
        if round(settings.rows * fraction) < 1:
            raise ConfigError(f"{SIMULATOR_FILE}: data.{split}_fraction must leave at least one {split} row of "
                              f"data.rows={settings.rows} (got {fraction})")
    if min(largest_remainder(settings.users, settings.group_user_shares)) < 1:
        raise ConfigError(f"{SIMULATOR_FILE}: data.users ({settings.users}) leaves a group with no user under "
                          f"data.group_user_shares")
    return settings


def largest_remainder(total: int, shares: tuple[float, ...]) -> list[int]:
    """Split `total` into integer parts proportional to `shares` that sum to `total`."""
    exact = np.asarray(shares) * total
    parts = np.floor(exact).astype(int)
    parts[np.argsort(-(exact - parts), kind="stable")[: total - parts.sum()]] += 1
    return parts.tolist()


def split_ranges(data_cfg: DictConfig) -> dict[str, tuple[int, int]]:
    """data.split as {split: (first, last)} inclusive YYYYMMDD, checked: complete, ordered, disjoint."""
    ranges = {}
    for name in SPLIT_NAMES:
        bounds = data_cfg.get("split", {}).get(name)
        if bounds is None or len(bounds) != 2 or int(bounds[0]) > int(bounds[1]):
            raise ConfigError(f"data.split.{name}: expected [first, last] YYYYMMDD dates, got {bounds}")
        ranges[name] = (int(bounds[0]), int(bounds[1]))
    ordered = sorted(ranges.items(), key=lambda item: item[1])
    for (earlier, (_, end)), (later, (start, _)) in zip(ordered, ordered[1:]):
        if start <= end:
            raise ConfigError(f"data.split: {earlier} and {later} date ranges overlap")
    return ranges
