"""Every shipped config file composes; overrides land; the run id ignores execution-only keys."""

from __future__ import annotations

import pytest

from mfh_cli.config import CONF_DIR, compose, config_hash, recipe_of, resolved_threads
from mfh_cli.errors import ConfigError

GROUPS = ["data", "tasks", "model", "size", "trainer", "recipe"]


@pytest.mark.parametrize("group, option", [(group, path.stem) for group in GROUPS
                                           for path in sorted((CONF_DIR / group).glob("*.yaml"))])
def test_every_config_file_composes(group: str, option: str):
    cfg = compose([f"{group}={option}"])
    if group == "recipe":  # a recipe sets keys of other groups (@package _global_): it is named by its values
        assert recipe_of(cfg) == option
        return
    assert cfg[group] is not None
    if group == "model":
        assert cfg.model.name == option


def test_overrides_land_and_later_ones_win():
    cfg = compose(["data.rows=1234", "trainer.lr=0.5", "seed=3", "seed=4"])
    assert (cfg.data.rows, cfg.trainer.lr, cfg.seed) == (1234, 0.5, 4)


def test_run_id_ignores_progress_but_not_results_keys():
    base = config_hash(compose([]))
    assert config_hash(compose(["trainer.progress=false"])) == base
    assert config_hash(compose(["trainer.allow_emulated_bf16=true"])) == base  # where bf16 may run, not its numbers
    assert config_hash(compose(["seed=1"])) != base
    assert config_hash(compose(["model=hmtl"])) != base


# Run ids of configs as main composed them on 2026-12-07 (commit ff20a99), at one thread: a change that leaves what
# a run computes alone must leave these alone (keys added since, at their legacy value: config.LEGACY_VALUES).
# The training recipe then was the one named `authors` now.
PINNED_RUN_IDS = [
    ([], "7d209f856071"),
    (["model=hmtl"], "72673cc8f133"),
    (["tasks=interactive", "model=flat"], "0b35644251b4"),
    (["trainer.kernels=eager", "size=paper"], "e1664d0258eb"),
    (["data=kuairand", "data.duplicates=keep"], "d5009128b904"),
    (["data=kuairand", "model=flat", "seed=3", "data.duplicates=keep"], "4062cabe2c06"),
    (["data=kuairand", "model.dense.batch_norm=none", "data.duplicates=keep"], "768c0e63ceaf"),
    (["data=table", "data.duplicates=keep"], "070c9b368357"),
]


@pytest.mark.parametrize("overrides, run_id", PINNED_RUN_IDS)
def test_run_ids_made_before_are_found_again(overrides: list[str], run_id: str):
    assert config_hash(compose(["recipe=authors", *overrides, "trainer.threads=1"])) == run_id


def test_the_default_recipe_is_low_noise_and_names_new_runs():
    """docs/results/recipes.md: no BatchNorm and weight averaging, adopted on its measured spread and error."""
    default = compose(["trainer.threads=1"])
    assert recipe_of(default) == "low_noise"
    assert default.model.dense.batch_norm == "none" and default.trainer.ema_decay == 0.998
    assert config_hash(default) != "7d209f856071"
    mixed = compose(["model.dense.batch_norm=authors"])
    assert recipe_of(mixed) == "custom (low_noise but model.dense.batch_norm=authors)"


def test_dropping_duplicate_impressions_names_new_runs():
    """The default loader drops duplicate impressions: its runs train on other rows than those made before the rule
    (which `data.duplicates=keep` finds again), so they get ids of their own."""
    for data in ("kuairand", "table"):
        default = compose([f"data={data}", "trainer.threads=1"])
        assert default.data.duplicates == "drop"
        assert config_hash(default) != config_hash(compose([f"data={data}", "data.duplicates=keep",
                                                            "trainer.threads=1"]))
    with pytest.raises(ConfigError, match="data.duplicates: must be one of drop, keep"):
        compose(["data=kuairand", "data.duplicates=twice"])


def test_run_id_holds_the_thread_count_actually_used():
    # The thread count changes float reduction order, so two counts are two runs; null means all cores.
    assert config_hash(compose(["trainer.threads=1"])) != config_hash(compose(["trainer.threads=2"]))
    all_cores = resolved_threads(None)
    assert config_hash(compose([])) == config_hash(compose([f"trainer.threads={all_cores}"]))


def test_a_fused_run_id_names_the_kernels_version(monkeypatch: pytest.MonkeyPatch):
    """A change of the fused kernels' floats (config.FUSED_KERNELS_VERSION) gives fused runs new ids, so a run of
    the earlier kernel is never reused as one of the new; eager runs keep theirs."""
    import mfh_cli.config as config

    fused, eager = compose(["trainer.kernels=fused"]), compose(["trainer.kernels=eager"])
    before = config_hash(fused), config_hash(eager)
    monkeypatch.setattr(config, "FUSED_KERNELS_VERSION", config.FUSED_KERNELS_VERSION + 1)
    assert config_hash(fused) != before[0]
    assert config_hash(eager) == before[1]


def test_unknown_key_is_a_config_error_naming_it():
    with pytest.raises(ConfigError, match="trainer.nosuch"):
        compose(["trainer.nosuch=1"])


@pytest.mark.parametrize("override, message", [
    ("trainer.lr=abc", "trainer.lr: must be a valid number (got 'abc')"),
    ("trainer.lr=0", "trainer.lr: must be greater than 0 (got 0)"),
    ("trainer.batch_size=1", "trainer.batch_size: must be greater than or equal to 2 (got 1)"),
    ("trainer.patience=true", "trainer.patience: must be a valid integer (got True)"),
    ("trainer.optimizer=nadam", "trainer.optimizer: must be 'adam', 'adamw' or 'sgd' (got 'nadam')"),
    ("trainer.threads=0", "trainer.threads"),
    ("+trainer.task_weights.finish=-1", "trainer.task_weights.finish: must be greater than or equal to 0"),
    ("+trainer.nosuch=1", "trainer.nosuch: unknown key (got 1)"),
    ("size.towers.high=[32,0]", "size.towers.high.1: must be greater than or equal to 1 (got 0)"),
    ("size.switchers.level1.layers=[]", "size.switchers.level1.layers: List should have at least 1 item"),
    # size files carry sizes only: a switcher's kind and gate belong to the model file
    ("+size.switchers.level1.kind=ple", "size.switchers.level1.kind: unknown key (got 'ple')"),
    ("+size.switchers.level2.gate=softmax", "size.switchers.level2.gate: unknown key (got 'softmax')"),
    ("trainer.weighting=gradnorm", "trainer.weighting: must be 'fixed' or 'uncertainty' (got 'gradnorm')"),
    ("data.test_fraction=0", "data.test_fraction must leave at least one test row"),
    ("data.validation_fraction=0.000001", "data.validation_fraction must leave at least one validation row"),
])
def test_config_values_are_checked_when_composed(override: str, message: str):
    with pytest.raises(ConfigError) as raised:
        compose([override])
    assert message in str(raised.value)


@pytest.mark.parametrize("override", ["+hydra.callbacks.x._target_=builtins.print", "hydra.run.dir=/tmp/x",
                                      "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"])
def test_hydra_overrides_never_reach_a_run_config(override: str):
    # mfh ablate takes its documented launcher overrides out before composing; anything else is refused here.
    with pytest.raises(ConfigError, match="hydra/launcher=<name> and hydra.launcher.<key>=<value>"):
        compose([override])


def test_a_signal_during_composition_is_an_interrupt_not_a_bad_override():
    """Hydra wraps whatever its config code raises, a signal handler's exception included, into an empty
    composition error (or trips over its own file reading): a Ctrl-C must still arrive as Interrupted."""
    import os
    import random
    import signal
    import threading

    from mfh_cli.errors import Interrupted

    def handler(signum: int, frame: object) -> None:
        raise Interrupted(signum)

    # The first compose imports Hydra's plugins once per process; hydra-ray-launcher's registers an OmegaConf
    # resolver as it is imported and cannot be imported a second time, so a signal inside that import would leave
    # this process unable to compose at all (the CLI stops on that interrupt anyway). Signals below land in the
    # per-compose work.
    compose(["model=hmtl", "seed=3"])
    previous = signal.signal(signal.SIGINT, handler)
    outcomes: list[str] = []
    generator = random.Random(0)
    try:
        for _ in range(150):
            timer = threading.Timer(generator.uniform(0, 0.03), os.kill, (os.getpid(), signal.SIGINT))
            try:
                timer.start()  # inside the try: a near-zero delay can deliver the signal before start() returns
                while True:
                    compose(["model=hmtl", "seed=3"])
            except Interrupted:
                outcomes.append("interrupted")
            except Exception as error:  # what the bug looked like: "bad config override: " with no message
                outcomes.append(f"{type(error).__name__}: {error}")
            timer.join()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert set(outcomes) == {"interrupted"}, sorted(set(outcomes))
