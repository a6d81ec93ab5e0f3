"""The simulator: determinism, block independence, documented marginals, oracle, knobs, errors, CLI."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from mfh_cli.config import compose
from mfh_cli.data import Dataset
from mfh_cli.data.synthetic import BLOCK_ROWS, simulate
from mfh_cli.errors import ConfigError
from mfh_cli.tasks import USER_GROUPS, WATCH_BEHAVIOURS

MARGINAL_ROWS = 200_000


def simulate_with(*overrides: str) -> Dataset:
    """The simulator under `conf/data/synthetic.yaml` plus `data.*` overrides, through the real config."""
    return simulate(compose(["data=synthetic", *overrides]).data)


def column(dataset: Dataset, behaviour: str) -> int:
    """The label column of a behaviour."""
    return list(dataset.schema.behaviours).index(behaviour)


def binomial_tolerance(rate: float, rows: int, sigmas: float = 4.0) -> float:
    """`sigmas` standard errors of a rate estimated from `rows` independent rows."""
    return sigmas * math.sqrt(rate * (1 - rate) / rows)


@pytest.fixture(scope="module")
def default_config():
    return compose(["data=synthetic", f"data.rows={MARGINAL_ROWS}"]).data


@pytest.fixture(scope="module")
def dataset(default_config) -> Dataset:
    return simulate(default_config)


def test_same_seed_gives_identical_tensors_and_another_seed_differs():
    first, second = simulate_with("data.rows=20000"), simulate_with("data.rows=20000")
    other = simulate_with("data.rows=20000", "data.seed=1")
    for name in Dataset.TENSORS:
        assert torch.equal(getattr(first, name), getattr(second, name)), name
    for name in ("categorical", "labels", "oracle", "dense"):
        assert not torch.equal(getattr(first, name), getattr(other, name)), name


def test_a_row_does_not_depend_on_the_length_or_the_block_it_falls_in():
    # Rows are drawn in fixed blocks seeded by (seed, block): a short run (ending inside block 1) is a prefix of a
    # longer one; only the split, which is a fraction of the length, may differ.
    short_rows = BLOCK_ROWS + 1_234
    short, long = simulate_with(f"data.rows={short_rows}"), simulate_with(f"data.rows={2 * BLOCK_ROWS + 7}")
    for name in Dataset.TENSORS:
        if name != "split":
            assert torch.equal(getattr(short, name)[:short_rows], getattr(long, name)[:short_rows]), name


def test_shapes_schema_and_value_ranges(dataset):
    dataset.check()
    assert list(dataset.schema.behaviours) == ["cmpl", "finish", "skip", "like", "share", "comment", "follow"]
    assert dataset.schema.groups == list(USER_GROUPS)
    for position, (field, vocabulary) in enumerate(dataset.schema.categorical.items()):
        values = dataset.categorical[:, position]
        assert values.min() >= 1 and values.max() < vocabulary, field
    assert torch.equal(dataset.categorical[:, 0], dataset.user)
    assert torch.equal(dataset.categorical[:, 2], dataset.group + 1)
    cmpl = dataset.labels[:, column(dataset, "cmpl")]
    assert cmpl.min() >= 0 and cmpl.max() <= 1
    binary = dataset.labels[:, 1:]
    assert torch.all((binary == 0) | (binary == 1))
    assert dataset.oracle.min() >= 0 and dataset.oracle.max() <= 1


def test_group_shares_and_users_per_group_follow_the_config(dataset, default_config):
    rows = len(dataset)
    for index, group in enumerate(USER_GROUPS):
        share = default_config.group_row_shares[group]
        observed = float((dataset.group == index).float().mean())
        assert abs(observed - share) <= binomial_tolerance(share, rows), group
    # Each user belongs to exactly one group.
    pairs = torch.unique(torch.stack([dataset.user, dataset.group]), dim=1)
    assert pairs.shape[1] == torch.unique(dataset.user).numel()
    # New users have fewer rows each than high-activity users (row share / user share, SPEC §5).
    rows_per_user = [(dataset.group == index).sum() / torch.unique(dataset.user[dataset.group == index]).numel()
                     for index in range(len(USER_GROUPS))]
    assert rows_per_user[USER_GROUPS.index("new")] < rows_per_user[USER_GROUPS.index("high")]


def test_split_is_by_time_with_the_configured_fractions(dataset, default_config):
    rows = default_config.rows
    test_rows = round(rows * default_config.test_fraction)
    validation_rows = round(rows * default_config.validation_fraction)
    extra_rows = round(rows * default_config.extra_test_fraction)
    assert len(dataset) == rows + extra_rows
    expected = torch.zeros(rows + extra_rows, dtype=torch.int64)
    expected[rows - test_rows - validation_rows:] = 1
    expected[rows - test_rows:] = 2
    assert torch.equal(dataset.split, expected)


def test_extra_test_rows_extend_the_log_without_changing_it():
    """The extra rows come after the log: its rows, and so what a model trains and early-stops on, are the same
    with and without them."""
    plain = simulate_with("data.rows=5000", "data.extra_test_fraction=0")
    extended = simulate_with("data.rows=5000", "data.extra_test_fraction=1.5")
    assert len(plain) == 5000 and len(extended) == 12500
    for name in ("categorical", "dense", "labels", "label_mask", "group", "split", "oracle"):
        assert torch.equal(getattr(extended, name)[:5000], getattr(plain, name)), name
    assert (extended.split[5000:] == 2).all()


def test_missing_labels_hit_only_watch_behaviours_at_the_configured_fraction(dataset, default_config):
    watch = [column(dataset, name) for name in WATCH_BEHAVIOURS]
    interactive = [index for index in range(dataset.labels.shape[1]) if index not in watch]
    missing_rows = ~dataset.label_mask[:, watch[0]]
    for index in watch:  # masked together, like KuaiRand's duration 0
        assert torch.equal(~dataset.label_mask[:, index], missing_rows)
    assert dataset.label_mask[:, interactive].all()
    assert torch.all(dataset.labels[~dataset.label_mask] == 0)
    fraction = default_config.missing_fraction
    assert abs(float(missing_rows.float().mean()) - fraction) <= binomial_tolerance(fraction, len(dataset))


def test_label_rates_match_the_configured_targets_and_look_like_a_feed(dataset, default_config):
    for behaviour, target in default_config.positive_rates.items():
        index = column(dataset, behaviour)
        labels = dataset.labels[dataset.label_mask[:, index], index]
        # Biases are calibrated on a sample block: allow sampling error plus 5% calibration error.
        tolerance = binomial_tolerance(target, labels.numel()) + 0.05 * target
        assert abs(float(labels.mean()) - target) <= tolerance, behaviour
    rate = {name: float(dataset.labels[:, column(dataset, name)].mean()) for name in ("like", "share", "comment",
                                                                                   "follow")}
    assert 0.01 <= rate["like"] <= 0.1
    assert all(rate[name] < 0.01 for name in ("share", "comment", "follow"))


def test_skip_and_finish_are_negatively_related(dataset):
    both = dataset.label_mask[:, column(dataset, "finish")] & dataset.label_mask[:, column(dataset, "skip")]
    finish, skip = dataset.labels[both, column(dataset, "finish")], dataset.labels[both, column(dataset, "skip")]
    assert np.corrcoef(finish.numpy(), skip.numpy())[0, 1] < -0.05


def test_oracle_predicts_better_than_a_constant(dataset):
    test = dataset.split == 2
    for behaviour in ("finish", "skip", "like"):
        index = column(dataset, behaviour)
        rows = test & dataset.label_mask[:, index]
        assert roc_auc_score(dataset.labels[rows, index].numpy(), dataset.oracle[rows, index].numpy()) > 0.6
    index = column(dataset, "cmpl")
    rows = test & dataset.label_mask[:, index]
    labels, oracle = dataset.labels[rows, index], dataset.oracle[rows, index]
    assert float(((labels - oracle) ** 2).mean()) < float(((labels - labels.mean()) ** 2).mean())


@pytest.mark.parametrize("behaviour", ["cmpl", "finish", "like"])
def test_oracle_is_the_expectation_of_the_label(dataset, behaviour):
    # Within each decile of the oracle, the mean label equals the mean oracle up to sampling error.
    index = column(dataset, behaviour)
    rows = dataset.label_mask[:, index]
    labels, oracle = dataset.labels[rows, index], dataset.oracle[rows, index]
    for decile in torch.argsort(oracle).chunk(10):
        spread = float(labels[decile].std()) / math.sqrt(decile.numel())
        assert abs(float(labels[decile].mean() - oracle[decile].mean())) <= 4 * spread + 1e-4


def test_without_noise_the_watch_ratio_equals_its_oracle():
    dataset = simulate_with("data.rows=5000", "data.noise=0", "data.cmpl_noise=0")
    index = column(dataset, "cmpl")
    rows = dataset.label_mask[:, index]
    assert torch.allclose(dataset.labels[rows, index], dataset.oracle[rows, index], atol=1e-5)


def group_rate_gap(dataset: Dataset, behaviour: str) -> tuple[float, float]:
    """|rate(new) − rate(high)| of a behaviour's labels, and 4 binomial standard errors of that difference."""
    index = column(dataset, behaviour)
    rates, counts = [], []
    for group in ("new", "high"):
        rows = (dataset.group == USER_GROUPS.index(group)) & dataset.label_mask[:, index]
        rates.append(float(dataset.labels[rows, index].mean()))
        counts.append(int(rows.sum()))
    pooled = sum(rate * count for rate, count in zip(rates, counts)) / sum(counts)
    standard_error = math.sqrt(pooled * (1 - pooled) * (1 / counts[0] + 1 / counts[1]))
    return abs(rates[0] - rates[1]), 4 * standard_error


@pytest.fixture(scope="module")
def dataset_without_group_deviation() -> Dataset:
    return simulate_with(f"data.rows={MARGINAL_ROWS}", "data.group_deviation=0")


@pytest.mark.parametrize("behaviour", ["finish", "skip", "like"])
def test_group_deviation_is_what_makes_groups_differ(dataset, dataset_without_group_deviation, behaviour):
    gap, tolerance = group_rate_gap(dataset, behaviour)
    assert gap > tolerance  # default: the groups differ
    gap, tolerance = group_rate_gap(dataset_without_group_deviation, behaviour)
    assert gap <= tolerance  # no group deviation: the groups are alike


@pytest.mark.parametrize("override, message", [
    ("data.group_row_shares.new=0.5", "data.group_row_shares must sum to 1"),
    ("data.test_fraction=0.95", "data.validation_fraction + data.test_fraction must be below 1"),
    ("data.rows=0", "data.rows must lie in"),
    ("data.users=2.5", "data.users must be an integer"),
])
def test_bad_knobs_raise_one_config_error_line(override, message):
    with pytest.raises(ConfigError, match="conf/data/synthetic.yaml") as raised:
        simulate_with(override)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_describe_synthetic_prints_every_group_and_split(run_mfh):
    result = run_mfh("data", "describe", "synthetic", "data.rows=20000", "--format", "csv", check=True)
    for name in (*USER_GROUPS, "train", "validation", "test"):
        assert name in result.stdout, name


def test_cli_reports_a_bad_knob_as_one_error_line(run_mfh):
    result = run_mfh("data", "describe", "synthetic", "data.group_row_shares.new=0.5")
    assert result.returncode == ConfigError.exit_code
    assert result.stderr.strip().splitlines() == [
        "error: conf/data/synthetic.yaml: data.group_row_shares must sum to 1 (got 1.46)"]


# Scenarios (issue 14): a third facet whose truth differs by construction, drawn from streams of its own.

SCENARIO_ROWS = ("data.rows=20000", "data.extra_test_fraction=0")


@pytest.mark.slow  # three simulations (~8 s on one core)
def test_scenarios_differ_by_construction_and_leave_the_default_world_as_it_was():
    default = simulate_with(*SCENARIO_ROWS)
    silent = simulate_with(*SCENARIO_ROWS, "+data.scenarios=3", "+data.scenario_deviation=0")
    apart = simulate_with(*SCENARIO_ROWS, "+data.scenarios=3")  # deviation 0.5
    assert default.schema.scenarios == ["s0"] and bool((default.scenario == 0).all())
    assert silent.schema.scenarios == ["s0", "s1", "s2"]
    assert list(silent.schema.categorical)[-1] == "scenario"  # an input, as KuaiRand's tab
    assert torch.equal(silent.categorical[:, -1], silent.scenario + 1)
    # Own random streams: without a deviation every row is the default world's, its scenario aside.
    for name in ("dense", "labels", "label_mask", "group", "split", "user", "oracle"):
        assert torch.equal(getattr(silent, name), getattr(default, name)), name
    assert torch.equal(silent.categorical[:, :-1], default.categorical)
    shares = torch.bincount(silent.scenario, minlength=3) / len(silent)
    assert shares.tolist() == pytest.approx([4 / 7, 2 / 7, 1 / 7], abs=0.02)  # ∝ 2^-k
    # With the deviation the truth differs by scenario: the oracle's mean finish logit per scenario spreads out.
    assert torch.equal(apart.scenario, silent.scenario) and torch.equal(apart.group, silent.group)
    finish = column(apart, "finish")

    def mean_logits(dataset: Dataset) -> list[float]:
        logit = torch.logit(dataset.oracle[:, finish].double())
        return [float(logit[dataset.scenario == index].mean()) for index in range(3)]

    assert np.ptp(mean_logits(silent)) < 0.1 < np.ptp(mean_logits(apart))
    change = (torch.logit(apart.oracle[:, finish].double()) - torch.logit(silent.oracle[:, finish].double())).abs()
    assert float(change.mean()) > 0.1  # and row by row
