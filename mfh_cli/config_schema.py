"""The typed schema of the composed config: every tasks, trainer, size and data value is checked when it is
composed.

A value that breaks a rule is one ConfigError line, `<key>: <rule> (got <value>)`, before any data is loaded or
any run is trained. Model structure (which switcher kinds combine how) is checked where models are built.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from omegaconf import DictConfig, OmegaConf
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from mfh_cli.errors import ConfigError
from mfh_cli.tasks import BEHAVIOUR, FACETS, USER_GROUP

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
        from mfh_cli.data.synthetic import read_settings  # imported here: the data layer sits above config

        read_settings(data_cfg)
    elif data_cfg.name == "kuairand":
        from mfh_cli.data.kuairand_format import split_ranges

        split_ranges(data_cfg)
