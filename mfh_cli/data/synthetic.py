"""The built-in simulator (`data=synthetic`, SPEC §5 "Synthetic"): a seeded short-video feed whose task relations
are known, so a model's sharing structure can be checked against the truth.

Generative process. Sizes: U users, I items, K latent dimension, groups g ∈ {new, low, high}, behaviours
b ∈ {cmpl, finish, skip, like, share, comment, follow} (the task grid's: `mfh_cli/tasks.py`). Everything below is
drawn once from `seed` (the world) except the rows, which are drawn block by block.

World.
  Users are split into groups by `group_user_shares`; each has an age (8 values) and a region (20 values).
  Items have a tag (40 values), an author (one per 10 items), a standardised log duration dur_i ~ N(0, 1) and a
  Zipf popularity w_i ∝ rank_i^-0.8 (pop_i = standardised log w_i).
  Latent factors, with α = `attribute_share` (so the categorical attributes carry signal):
      p_u = √(α/2)·A_age[age_u] + √(α/2)·A_region[region_u] + √(1−α)·e_u
      q_i = √(α/2)·C_tag[tag_i] + √(α/2)·C_author[author_i] + √(1−α)·f_i
  with every row of A, C, e, f ~ N(0, I_K). Random K×K matrices R_b, N_g, P_bg have entries ~ N(0, 1/K), so
  each bilinear term ⟨p, q⟩_M = pᵀ M q / √K below has variance 1 (M = I included).

Rows. Row n's group g is drawn by `group_row_shares`, its user u uniformly among g's users (so a new user,
whose row share is below its user share, has fewer rows), its item i by popularity, its context c_n ~ N(0, 1).
Scores of row n, with features x_n = (dur_i, pop_i, c_n) (the dense inputs):
  shared behaviour score, the same for every group:
      S_b = λ_b·√ω_b·⟨p_u, q_i⟩_I + √(1−ω_b)·⟨p_u, q_i⟩_{R_b} + φ_b·x_n
  group deviation, the same for every behaviour of group g:
      D_g = o_g + ⟨p_u, q_i⟩_{N_g}
  task-specific term:
      T_bg = ⟨p_u, q_i⟩_{P_bg}
  logit:
      a_b = β_b + s·S_b + d·λ_b·D_g + t·T_bg        (s, d, t = shared_strength, group_deviation, task_strength)
  labels, with unobserved ε_n ~ N(0, noise²) shared by the row's behaviours and η_n ~ N(0, cmpl_noise²):
      binary b:  y_b ~ Bernoulli(σ(a_b + λ_b·ε_n));     cmpl:  y = σ(a_cmpl + ε_n + η_n) ∈ (0, 1)
  oracle (the true expectation given everything observable): E[y_b] = ∫ σ(a_b + v_b·z) φ(z) dz with v_b the
  std of the row noise in that label, by Gauss–Hermite quadrature.
λ_b is +1 except skip (−1): skip moves against finish and cmpl through the common interest, the group
deviation and the row noise. ω_b (share of the common interest in S_b) is 0.8 for watch behaviours, 0.4 for
interactive ones; φ_b weighs duration, popularity and context (constants below). The bias β_b is calibrated
on a sample of rows so that the overall mean of y_b equals `positive_rates[b]`. A `missing_fraction` of rows
has cmpl, finish and skip masked (as KuaiRand's duration 0).

Scenarios (the third facet, `data.scenarios`; issue 14). With S > 1 scenarios (the surfaces of the app, as
KuaiRand's tabs) each row also has a scenario σ_n, drawn with shares ∝ 2^-k (one dominant surface, as real
apps: 3 scenarios 57% / 29% / 14%), and a scenario deviation shared by every behaviour and group of it:
      E_σ = o_σ + ⟨p_u, q_i⟩_{Q_σ}        (o_σ ~ N(0, 1), Q_σ entries ~ N(0, 1/K))
      a_b += e·λ_b·E_σ                      (e = scenario_deviation)
so the truth (and the oracle, which reads a_b) differs by scenario by construction, and each row's scenario is
an input (categorical field `scenario`, like KuaiRand's `tab`). The scenario draws have random streams of their
own (world (seed, 3), rows (seed, 4, block), calibration (seed, 5)), so with S = 1 (the default, and the keys
absent from conf/data/synthetic.yaml so that run ids stay) nothing is drawn or added: the world, its rows and
the oracle are bit for bit those of before, with one scenario `s0` on every row.

Which sharing the data rewards: the largest term, S_b, is shared by one behaviour across all groups; D_g is
shared by all behaviours of one group; only the small T_bg is specific to a (behaviour, group) task. A model
that shares along both facets (MFH: behaviour tree + group tree) matches this structure; `group_deviation=0`
removes the group facet, `task_strength` sets how much per-task capacity can gain.

Rows come in time order with no drift; the last `test_fraction` of rows is test, the `validation_fraction`
before it validation; `extra_test_fraction` × rows more rows drawn after the log join the test split (the same
world, so only the metrics' sampling noise shrinks: what models train on is unchanged). Chunking: the chunk size is a fixed constant (BLOCK_ROWS); block k's rows come from a
generator seeded by (seed, k), the last block is drawn whole and truncated, so row n is the same for any
`rows` > n (only its split depends on `rows`).

Shape letters: N rows, R rows of one block, B behaviours, G groups, U users, I items, K latent dimension.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import numpy as np
import torch
from omegaconf import DictConfig

from mfh_cli.data.dataset import Dataset, Schema
from mfh_cli.config_schema import SimulatorSettings, largest_remainder, read_settings
from mfh_cli.tasks import (BEHAVIOURS, CMPL, COMMENT, FINISH, FOLLOW, LIKE, SHARE, SKIP, USER_GROUPS,
                            WATCH_BEHAVIOURS)

CONFIG_FILE = "conf/data/synthetic.yaml"
BLOCK_ROWS = 1 << 16  # fixed: results must not depend on how rows are chunked
PROGRESS_MIN_ROWS = 2_000_000  # show progress from this size on (when not quiet)
QUADRATURE_NODES = 20
FEW_TEST_POSITIVES = 30  # below this many positives in a (group, behaviour) test cell, AUC is noisy: say so

BEHAVIOUR_NAMES = list(BEHAVIOURS)
# Watch-time behaviours (masked together on missing-label rows) share more of the common interest than
# interactions; a skip is the opposite of interest.
BEHAVIOUR_SIGN = {name: -1.0 if name == SKIP else 1.0 for name in BEHAVIOURS}
COMMON_INTEREST_SHARE = {name: 0.8 if name in WATCH_BEHAVIOURS else 0.4 for name in BEHAVIOURS}
# φ_b: weights of (item_duration, item_popularity, context) in the shared score. Long videos are finished less.
FEATURE_WEIGHTS = {CMPL: (-0.5, 0.1, 0.3), FINISH: (-0.8, 0.1, 0.3), SKIP: (0.3, -0.1, -0.3),
                   LIKE: (0.0, 0.3, 0.2), SHARE: (0.0, 0.3, 0.1), COMMENT: (0.0, 0.2, 0.1),
                   FOLLOW: (0.0, 0.1, 0.1)}
USER_AGES, USER_REGIONS, ITEM_TAGS, ITEMS_PER_AUTHOR = 8, 20, 40, 10
POPULARITY_EXPONENT = 0.8
CATEGORICAL_FIELDS = ("user_id", "item_id", "user_group", "user_age", "user_region", "item_tag", "item_author")
SCENARIO_FIELD = "scenario"  # a further categorical input where the world has more than one scenario
DENSE_FIELDS = ["item_duration", "item_popularity", "context"]


@dataclass
class World:
    """Everything drawn once from the seed: users, items, their factors, and per-behaviour constants."""

    user_id: torch.Tensor  # [U] int64, 1..U (internal user index is sorted by group)
    group_first_user: torch.Tensor  # [G] int64, first internal index of each group
    group_users: torch.Tensor  # [G] int64, users per group
    group_cdf: torch.Tensor  # [G] float32, cumulative row shares
    user_attributes: torch.Tensor  # [U, 2] int64 (age, region), 1-based
    user_projection: torch.Tensor  # [U, B, K] float32: (s·M_b + d·λ_b·N_g + t·P_bg)ᵀ p_u / √K with g = g(u)
    item_factor: torch.Tensor  # [I, K] float32
    item_attributes: torch.Tensor  # [I, 2] int64 (tag, author), 1-based
    item_dense: torch.Tensor  # [I, 2] float32 (duration, popularity)
    item_cdf: torch.Tensor  # [I] float32, cumulative popularity
    feature_weights: torch.Tensor  # [3, B] float32, s·φ
    group_shift: torch.Tensor  # [G, B] float32, d·λ_b·o_g
    behaviour_sign: torch.Tensor  # [B] float32, λ
    is_cmpl: torch.Tensor  # [B] bool
    noise: float  # std of ε
    cmpl_noise: float  # std of η
    noise_scale: torch.Tensor  # [B] float32, std of the unobserved noise in each label's logit
    bias: torch.Tensor  # [B] float32, β (calibrated)
    authors: int
    scenario_cdf: torch.Tensor | None = None  # [S] float32 cumulative row shares; None: one scenario
    user_factor: torch.Tensor | None = None  # [U] × [K] p_u (only with scenarios)
    scenario_matrix: torch.Tensor | None = None  # [S, K, K] e·Q_σ / √K
    scenario_shift: torch.Tensor | None = None  # [S] e·o_σ

    @property
    def scenarios(self) -> int:
        """S, the number of scenarios."""
        return 1 if self.scenario_cdf is None else int(self.scenario_cdf.shape[0])


def scenario_names(count: int) -> list[str]:
    """The simulator's scenario values: s0, s1, … (s0 the largest)."""
    return [f"s{index}" for index in range(count)]


def simulate(data_cfg: DictConfig, quiet: bool = True) -> Dataset:
    """Simulate `data_cfg.rows` rows of the feed described in the module docstring (deterministic in its seed),
    and the extra test rows after them."""
    settings = read_settings(data_cfg)
    world = build_world(settings)
    rows = settings.total_rows
    behaviours = len(BEHAVIOUR_NAMES)
    vocabulary = dict(zip(CATEGORICAL_FIELDS, [settings.users + 1, settings.items + 1, len(USER_GROUPS) + 1,
                                               USER_AGES + 1, USER_REGIONS + 1, ITEM_TAGS + 1, world.authors + 1]))
    if world.scenarios > 1:
        vocabulary[SCENARIO_FIELD] = world.scenarios + 1
    schema = Schema(categorical=vocabulary, dense=list(DENSE_FIELDS), behaviours=dict(BEHAVIOURS),
                    groups=list(USER_GROUPS), name="synthetic", scenarios=scenario_names(world.scenarios))
    output = Dataset(
        schema=schema,
        categorical=torch.empty(rows, len(vocabulary), dtype=torch.int64),
        dense=torch.empty(rows, len(DENSE_FIELDS), dtype=torch.float32),
        labels=torch.empty(rows, behaviours, dtype=torch.float32),
        label_mask=torch.empty(rows, behaviours, dtype=torch.bool),
        group=torch.empty(rows, dtype=torch.int64),
        split=torch.empty(rows, dtype=torch.int64),
        user=torch.empty(rows, dtype=torch.int64),
        oracle=torch.empty(rows, behaviours, dtype=torch.float32),
        scenario=torch.empty(rows, dtype=torch.int64),
    )
    test_start = settings.rows - round(settings.rows * settings.test_fraction)
    validation_start = test_start - round(settings.rows * settings.validation_fraction)
    blocks = math.ceil(rows / BLOCK_ROWS)
    with _progress(blocks, show=not quiet and rows >= PROGRESS_MIN_ROWS) as advance:
        for block in range(blocks):
            start, end = block * BLOCK_ROWS, min((block + 1) * BLOCK_ROWS, rows)
            _write_block(world, settings, _generator(settings.seed, 1, block), _generator(settings.seed, 4, block),
                         output, start, end)
            row_index = torch.arange(start, end)
            output.split[start:end] = (row_index >= validation_start).long() + (row_index >= test_start).long()
            advance()
    output.schema = replace(schema, notes=_sparse_test_notes(output))
    output.check()
    return output


def build_world(settings: SimulatorSettings) -> World:
    """Draw users, items, latent factors and the term matrices from the seed, then calibrate the biases."""
    generator = _generator(settings.seed, 0)
    behaviours, groups, latent = len(BEHAVIOUR_NAMES), len(USER_GROUPS), settings.latent_dim

    def normal(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator)

    def categories(count: int, values: int) -> torch.Tensor:
        return torch.randint(1, values + 1, (count,), generator=generator)

    group_users = torch.tensor(largest_remainder(settings.users, settings.group_user_shares))
    user_id = torch.randperm(settings.users, generator=generator) + 1
    user_attributes = torch.stack([categories(settings.users, USER_AGES),
                                   categories(settings.users, USER_REGIONS)], dim=1)
    authors = max(1, settings.items // ITEMS_PER_AUTHOR)
    item_attributes = torch.stack([categories(settings.items, ITEM_TAGS), categories(settings.items, authors)],
                                  dim=1)
    attribute_weight, own_weight = math.sqrt(settings.attribute_share / 2), math.sqrt(1 - settings.attribute_share)
    user_factor = (attribute_weight * normal(USER_AGES + 1, latent)[user_attributes[:, 0]]
                   + attribute_weight * normal(USER_REGIONS + 1, latent)[user_attributes[:, 1]]
                   + own_weight * normal(settings.users, latent))  # [U, K]
    item_factor = (attribute_weight * normal(ITEM_TAGS + 1, latent)[item_attributes[:, 0]]
                   + attribute_weight * normal(authors + 1, latent)[item_attributes[:, 1]]
                   + own_weight * normal(settings.items, latent))  # [I, K]

    duration = normal(settings.items)
    popularity = (torch.randperm(settings.items, generator=generator) + 1.0) ** -POPULARITY_EXPONENT
    log_popularity = popularity.log()
    item_dense = torch.stack([duration, (log_popularity - log_popularity.mean())
                              / log_popularity.std().clamp_min(1e-6)], dim=1)
    item_cdf = (popularity.double().cumsum(0) / popularity.double().sum()).float()

    sign = torch.tensor([BEHAVIOUR_SIGN[name] for name in BEHAVIOUR_NAMES])
    common_share = torch.tensor([COMMON_INTEREST_SHARE[name] for name in BEHAVIOUR_NAMES])
    behaviour_taste = normal(behaviours, latent, latent) / math.sqrt(latent)  # R_b
    group_matrix = normal(groups, latent, latent) / math.sqrt(latent)  # N_g
    task_matrix = normal(behaviours, groups, latent, latent) / math.sqrt(latent)  # P_bg
    shared_matrix = ((sign * common_share.sqrt())[:, None, None] * torch.eye(latent)
                     + (1 - common_share).sqrt()[:, None, None] * behaviour_taste)  # M_b [B, K, K]
    term_matrix = (settings.shared_strength * shared_matrix[:, None]
                   + settings.group_deviation * sign[:, None, None, None] * group_matrix[None]
                   + settings.task_strength * task_matrix) / math.sqrt(latent)  # [B, G, K, K]
    user_projection = torch.cat([torch.einsum("uk,bkj->ubj", factor, term_matrix[:, group])
                                 for group, factor in enumerate(user_factor.split(group_users.tolist()))])

    cmpl_index = BEHAVIOUR_NAMES.index(CMPL)
    noise_scale = torch.full((behaviours,), settings.noise)
    noise_scale[cmpl_index] = math.hypot(settings.noise, settings.cmpl_noise)
    world = World(
        user_id=user_id,
        group_first_user=torch.cumsum(group_users, 0) - group_users, group_users=group_users,
        group_cdf=torch.tensor(np.cumsum(settings.group_row_shares), dtype=torch.float32),
        user_attributes=user_attributes, user_projection=user_projection, item_factor=item_factor,
        item_attributes=item_attributes, item_dense=item_dense, item_cdf=item_cdf,
        feature_weights=settings.shared_strength * torch.tensor([FEATURE_WEIGHTS[n] for n in BEHAVIOUR_NAMES]).T,
        group_shift=settings.group_deviation * torch.tensor(settings.group_offsets)[:, None] * sign[None],
        behaviour_sign=sign, is_cmpl=torch.arange(behaviours) == cmpl_index, noise=settings.noise,
        cmpl_noise=settings.cmpl_noise, noise_scale=noise_scale,
        bias=torch.zeros(behaviours), authors=authors,
    )
    if settings.scenarios > 1:
        _add_scenarios(world, settings, user_factor)
    world.bias = _calibrated_bias(world, settings)
    return world


def _add_scenarios(world: World, settings: SimulatorSettings, user_factor: torch.Tensor) -> None:
    """The scenario deviation's constants, from the scenario world stream (seed, 3): row shares ∝ 2^-k, offsets
    o_σ ~ N(0, 1) and matrices Q_σ (module docstring)."""
    generator = _generator(settings.seed, 3)
    count, latent = settings.scenarios, settings.latent_dim
    shares = 0.5 ** np.arange(count)
    world.scenario_cdf = torch.tensor(np.cumsum(shares / shares.sum()), dtype=torch.float32)
    world.scenario_shift = settings.scenario_deviation * torch.randn(count, generator=generator)
    matrix = torch.randn(count, latent, latent, generator=generator) / math.sqrt(latent)
    world.scenario_matrix = settings.scenario_deviation * matrix / math.sqrt(latent)
    world.user_factor = user_factor


@dataclass
class _Rows:
    """One block's random draws and the rows' expected logits."""

    group: torch.Tensor  # [R] int64
    user: torch.Tensor  # [R] int64, internal user index
    item: torch.Tensor  # [R] int64, 0-based
    features: torch.Tensor  # [R, 3] float32: item duration, item popularity, context (DENSE_FIELDS)
    logit: torch.Tensor  # [R, B] a_b (noise-free)
    realised_logit: torch.Tensor  # [R, B] a_b plus the row's unobserved noise
    label_uniform: torch.Tensor  # [R, B]
    missing_uniform: torch.Tensor  # [R]
    scenario: torch.Tensor  # [R] int64 (0 with one scenario)


def _draw_rows(world: World, generator: torch.Generator, scenario_generator: torch.Generator) -> _Rows:
    """Draw one whole block of BLOCK_ROWS rows (always whole, so a block's rows never depend on its length); the
    scenarios from their own stream, and only where the world has more than one."""
    behaviours = len(BEHAVIOUR_NAMES)
    uniform = torch.rand(BLOCK_ROWS, 4 + behaviours, generator=generator)
    gaussian = torch.randn(BLOCK_ROWS, 3, generator=generator)
    group = torch.searchsorted(world.group_cdf, uniform[:, 0].contiguous(), right=True).clamp_(max=len(USER_GROUPS) - 1)
    users = world.group_users[group]
    user = world.group_first_user[group] + torch.minimum((uniform[:, 1] * users).long(), users - 1)
    item = torch.searchsorted(world.item_cdf, uniform[:, 2].contiguous(), right=True).clamp_(
        max=world.item_cdf.shape[0] - 1)
    features = torch.cat([world.item_dense.index_select(0, item), gaussian[:, :1]], dim=1)  # [R, 3]
    item_factor = world.item_factor.index_select(0, item)  # [R, K]
    interaction = (world.user_projection.index_select(0, user) * item_factor[:, None, :]).sum(-1)  # [R, B]
    logit = world.bias + interaction + features @ world.feature_weights + world.group_shift.index_select(0, group)
    scenario = torch.zeros(BLOCK_ROWS, dtype=torch.int64)
    if world.scenario_cdf is not None:
        scenario = torch.searchsorted(world.scenario_cdf, torch.rand(BLOCK_ROWS, generator=scenario_generator),
                                      right=True).clamp_(max=world.scenarios - 1)
        user_side = torch.einsum("rk,rkj->rj", world.user_factor.index_select(0, user),
                                 world.scenario_matrix.index_select(0, scenario))
        deviation = world.scenario_shift.index_select(0, scenario) + (user_side * item_factor).sum(-1)  # [R]
        logit = logit + world.behaviour_sign * deviation[:, None]
    # ε_n enters every behaviour of the row (signed by λ_b); η_n only the watch ratio.
    realised_logit = (logit + world.behaviour_sign * (world.noise * gaussian[:, 1:2])
                      + world.is_cmpl * (world.cmpl_noise * gaussian[:, 2:3]))
    return _Rows(group=group, user=user, item=item, features=features, logit=logit, realised_logit=realised_logit,
                 label_uniform=uniform[:, 4:], missing_uniform=uniform[:, 3], scenario=scenario)


def _write_block(world: World, settings: SimulatorSettings, generator: torch.Generator,
                 scenario_generator: torch.Generator, output: Dataset, start: int, end: int) -> None:
    """Draw one block and write its first `end - start` rows into the preallocated output tensors.

    Everything is computed on the whole block and sliced only when written: vectorised kernels may round a
    short tensor's tail differently, and a row must not depend on where the data end.
    """
    count = end - start
    rows = _draw_rows(world, generator, scenario_generator)
    probability = torch.sigmoid(rows.realised_logit)
    labels = torch.where(world.is_cmpl, probability, (rows.label_uniform < probability).float())
    watch_columns = torch.tensor([name in WATCH_BEHAVIOURS for name in BEHAVIOUR_NAMES])
    present = ~((rows.missing_uniform[:, None] < settings.missing_fraction) & watch_columns)
    user_id = world.user_id.index_select(0, rows.user)
    scenario_input = [rows.scenario[:, None] + 1] if world.scenarios > 1 else []
    block = {
        "labels": labels * present,
        "label_mask": present,
        "oracle": expected_label(rows.logit, world.noise_scale),
        "group": rows.group,
        "user": user_id,
        "categorical": torch.cat([user_id[:, None], rows.item[:, None] + 1, rows.group[:, None] + 1,
                                  world.user_attributes.index_select(0, rows.user),
                                  world.item_attributes.index_select(0, rows.item), *scenario_input], dim=1),
        "dense": rows.features,
        "scenario": rows.scenario,
    }
    for name, values in block.items():
        getattr(output, name)[start:end] = values[:count]


def expected_label(logit: torch.Tensor, noise_scale: torch.Tensor) -> torch.Tensor:
    """E[σ(logit + v·z)], z ~ N(0, 1), per column with std v = noise_scale[column] (Gauss–Hermite quadrature)."""
    nodes, weights = np.polynomial.hermite.hermgauss(QUADRATURE_NODES)
    expected = torch.zeros_like(logit)
    for node, weight in zip(nodes, weights):  # a loop over quadrature nodes, not rows: memory stays one block
        expected += (weight / math.sqrt(math.pi)) * torch.sigmoid(logit + noise_scale * (math.sqrt(2) * node))
    return expected


def _calibrated_bias(world: World, settings: SimulatorSettings) -> torch.Tensor:
    """β_b such that the mean of σ(β_b + rest of the realised logit) over a sample block equals the target rate.

    The sample is one block from its own stream (seed, 2) drawn with β = 0; the unobserved noise is sampled, so
    the mean estimates the overall label rate. Bisection, all behaviours at once.
    """
    # [R, B] with bias 0
    rest = _draw_rows(world, _generator(settings.seed, 2), _generator(settings.seed, 5)).realised_logit
    target = torch.tensor(settings.positive_rates)
    low, high = torch.full_like(target, -40.0), torch.full_like(target, 40.0)
    for _ in range(30):  # bracket width 80 / 2^30: far below float32 resolution of a logit
        middle = (low + high) / 2
        too_high = torch.sigmoid(rest + middle).mean(0) > target
        high, low = torch.where(too_high, middle, high), torch.where(too_high, low, middle)
    return (low + high) / 2


def _sparse_test_notes(dataset: Dataset) -> list[str]:
    """A note naming the (behaviour, group) test cells with too few positives for a stable AUC."""
    test = dataset.split == 2
    positives = torch.zeros(len(USER_GROUPS), len(BEHAVIOUR_NAMES)).index_add_(
        0, dataset.group[test], dataset.labels[test] * dataset.label_mask[test])
    sparse = [f"{behaviour}/{group} {int(positives[g, b])}" for b, behaviour in enumerate(BEHAVIOUR_NAMES)
              if BEHAVIOURS[behaviour] == "binary" for g, group in enumerate(USER_GROUPS)
              if positives[g, b] < FEW_TEST_POSITIVES]
    if not sparse:
        return []
    return [f"few test positives (AUC noisy; raise data.rows): {', '.join(sparse)}"]


def _generator(seed: int, *stream: int) -> torch.Generator:
    """A torch generator for one named random stream of `seed` (0 world, 1 rows by block, 2 calibration; the
    scenarios': 3 world, 4 rows by block, 5 calibration)."""
    state = np.random.SeedSequence((seed, *stream)).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


@contextmanager
def _progress(blocks: int, show: bool) -> Iterator[Callable[[], None]]:
    """Yield an `advance()` callable: one step of a transient rich progress bar on stderr when `show`."""
    if not show:
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("simulating rows", total=blocks)
        yield lambda: bar.advance(task)
