"""Your own log (`data=table`): CSV and Parquet alike, group rules, splits, train-only vocabularies, checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from mfh_cli.config import compose
from mfh_cli.data import load_dataset
from mfh_cli.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[2]
ROWS = 40

MAPPING = {
    "path": "log.csv", "user": "uid", "item": "video", "time": "ts",
    "group": {"column": "activity", "values": {"new": ["fresh"], "high": ["heavy", "whale"]}, "default": "low",
              "names": ["new", "low", "high"]},
    "labels": {"cmpl": {"column": "ratio", "range": [0, 1]}, "finish": "done",
               "save": {"column": "saved", "kind": "binary"}},
    "categorical": ["country"], "dense": ["seconds"],
    "split": {"by": "fraction", "fractions": [0.5, 0.25, 0.25]},
}


def make_log(rows: int = ROWS, seed: int = 0) -> pd.DataFrame:
    """A clean log for MAPPING in shuffled time order, with an empty country and an empty dense value."""
    generator = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "uid": generator.integers(0, 8, rows), "video": generator.integers(0, 12, rows),
        "ts": generator.permutation(rows) * 10 + 1000,
        "activity": generator.choice(["fresh", "casual", "heavy", "whale", "unheard-of"], rows),
        "ratio": generator.random(rows), "done": generator.integers(0, 2, rows),
        "saved": generator.integers(0, 2, rows), "country": generator.choice(["fr", "de", "it"], rows),
        "seconds": generator.random(rows) * 100,
    })
    frame.loc[3, "country"] = None
    frame.loc[5, "seconds"] = np.nan
    frame.loc[0, "activity"] = None
    return frame


def load(tmp_path: Path, log: pd.DataFrame, file: str = "log.csv", **changes):
    """Write `log` as `file` in tmp_path and a mapping for it, then load through `load_dataset` (no cache)."""
    path = tmp_path / file
    log.to_parquet(path) if file.endswith(".parquet") else log.to_csv(path, index=False)
    mapping = tmp_path / f"mapping-{file}.yaml"
    mapping.write_text(yaml.safe_dump({**MAPPING, "path": file, **changes}))
    cfg = compose(["data=table", f"data.mapping={mapping}"])
    return load_dataset(cfg, data_dir=tmp_path, cache_dir=None)


def test_csv_and_parquet_give_identical_tensors(tmp_path):
    log = make_log()
    from_csv, from_parquet = load(tmp_path, log), load(tmp_path, log, file="log.parquet")
    assert from_csv.schema == from_parquet.schema
    for name in ("categorical", "dense", "labels", "label_mask", "group", "split", "user"):
        assert torch.equal(getattr(from_csv, name), getattr(from_parquet, name)), name
    assert len(from_csv) == ROWS
    assert from_csv.schema.behaviours == {"cmpl": "regression", "finish": "binary", "save": "binary"}
    assert list(from_csv.schema.categorical) == ["uid", "video", "country"]


def test_labels_follow_their_columns(tmp_path):
    log = make_log()
    dataset = load(tmp_path, log)
    expected = log[["ratio", "done", "saved"]].to_numpy(dtype=np.float32)
    assert torch.equal(dataset.labels, torch.from_numpy(expected)) and bool(dataset.label_mask.all())


def test_group_rule_and_default(tmp_path):
    log = make_log()
    dataset = load(tmp_path, log)
    names = ["new", "low", "high"]
    expected = [names.index({"fresh": "new", "heavy": "high", "whale": "high"}.get(value, "low"))
                for value in log["activity"]]  # casual, unheard-of and the empty cell: the default
    assert dataset.group.tolist() == expected
    assert dataset.schema.groups == names


def test_group_column_holding_names(tmp_path):
    log = make_log().assign(tier=lambda frame: np.where(frame.index % 3 == 0, "gold", "silver"))
    log.loc[7, "tier"] = "bronze"  # not a group name: the default
    dataset = load(tmp_path, log, group={"column": "tier", "names": ["silver", "gold"], "default": "silver"})
    assert dataset.schema.groups == ["silver", "gold"]
    assert dataset.group.tolist() == [1 if value == "gold" else 0 for value in log["tier"]]


def test_split_by_fraction_of_time_ordered_rows(tmp_path):
    log = make_log()
    dataset = load(tmp_path, log)
    time = torch.tensor(log["ts"].to_numpy())
    counts = torch.bincount(dataset.split, minlength=3).tolist()
    assert counts == [ROWS // 2, ROWS // 4, ROWS // 4]
    train, validation, test = (time[dataset.split == index] for index in range(3))
    assert train.max() < validation.min() and validation.max() < test.min()


def test_split_by_time_boundaries(tmp_path):
    log = make_log()
    dataset = load(tmp_path, log, split={"by": "time", "boundaries": [1150, 1300]})
    time = log["ts"].to_numpy()
    expected = np.where(time < 1150, 0, np.where(time < 1300, 1, 2))
    assert dataset.split.tolist() == expected.tolist()


def test_values_unseen_in_train_are_out_of_vocabulary(tmp_path):
    log = make_log()
    log.loc[log["ts"] >= 1300, "video"] = 999  # an item only in the test rows
    log.loc[log["ts"] == 1250, "country"] = "pt"  # a country only in one validation row
    log.loc[log["ts"] == 1390, "uid"] = 77  # a user first seen in test: cold start
    log.loc[log["ts"] == 1010, "country"] = None  # a missing value in a train row
    dataset = load(tmp_path, log, split={"by": "time", "boundaries": [1200, 1300]})
    fields = list(dataset.schema.categorical)
    video, country, user = (dataset.categorical[:, fields.index(name)] for name in ("video", "country", "uid"))
    test, train = dataset.split == 2, dataset.split == 0
    assert bool((video[test] == 0).all()) and bool((video[train] > 0).all())
    assert country[torch.from_numpy(log["ts"].to_numpy() == 1250)].item() == 0
    assert country[torch.from_numpy(log["ts"].to_numpy() == 1010)].item() == 0
    assert user[torch.from_numpy(log["uid"].to_numpy() == 77)].item() == 0
    # the vocabulary counts only train values (+1 for index 0)
    train_rows = log["ts"] < 1200
    assert dataset.schema.categorical["video"] == log.loc[train_rows, "video"].nunique() + 1


def test_dense_standardised_on_train_rows(tmp_path):
    log = make_log()
    dataset = load(tmp_path, log)
    dense = dataset.dense[:, 0].double()
    assert dense[5].item() == 0.0  # the empty cell
    train = (dataset.split == 0) & torch.tensor(log["seconds"].notna().to_numpy())
    assert abs(dense[train].mean().item()) < 1e-5 and abs(dense[train].std(unbiased=False).item() - 1) < 1e-5


def test_allow_missing_masks_the_label(tmp_path):
    log = make_log()
    log.loc[[2, 9], "done"] = np.nan
    with pytest.raises(DataError, match="done.*missing values.*2 rows"):
        load(tmp_path, log)
    dataset = load(tmp_path, log, labels={**MAPPING["labels"], "finish": {"column": "done", "allow_missing": True}})
    finish = list(dataset.schema.behaviours).index("finish")
    assert dataset.label_mask[:, finish].tolist() == [index not in (2, 9) for index in range(ROWS)]
    assert dataset.labels[[2, 9], finish].tolist() == [0.0, 0.0]


def test_invalid_log_stops_loading_with_the_first_error(tmp_path):
    log = make_log()
    log.loc[[4, 6], "ratio"] = 1.5
    with pytest.raises(DataError, match=r"log.csv: column ratio: values outside \[0, 1\].*2 rows"):
        load(tmp_path, log)


def test_infinite_dense_value_stops_loading(tmp_path):
    log = make_log()
    log.loc[[7], "seconds"] = np.inf
    with pytest.raises(DataError, match=r"^log.csv: column seconds: non-finite values .*1 row \(e.g. row 8\)$"):
        load(tmp_path, log)


def test_duplicate_impressions_through_the_cli_dropped_by_default_kept_when_asked(run_mfh, tmp_path):
    """Your own log follows the KuaiRand loader's policy (data/README.md): a row repeating an earlier row's user, item
    and time is dropped, the first kept; `data.duplicates=keep` keeps it; validate and describe say which."""
    log = make_log()
    repeats = log.iloc[[4, 4, 11]].assign(done=1 - log.loc[[4, 4, 11], "done"].to_numpy())  # same key, other labels
    pd.concat([log, repeats], ignore_index=True).to_csv(tmp_path / "log.csv", index=False)
    (tmp_path / "mapping.yaml").write_text(yaml.safe_dump(MAPPING))
    validated = run_mfh("data", "validate", str(tmp_path / "log.csv"), "--mapping", str(tmp_path / "mapping.yaml"))
    assert validated.returncode == 0 and ("warning: log.csv: column uid,video,ts: duplicate impressions (these "
                                          "columns repeat an earlier row): the loader drops them, keeping the first "
                                          "of each (data.duplicates=drop): 3 rows (e.g. rows 41, 42, 43)"
                                          ) in validated.stdout
    described = {}
    for policy in ("drop", "keep"):
        result = run_mfh("data", "describe", "table", f"data.mapping={tmp_path / 'mapping.yaml'}",
                         f"data.duplicates={policy}", "--format", "json", "--data-dir", str(tmp_path), check=True)
        described[policy] = json.loads(result.stdout)[-1]  # the `all` row
        done = "dropped, the first of each kept" if policy == "drop" else "kept, so each weighs double"
        assert (f"note: 3 duplicate impressions (rows repeating an earlier row's uid, video, ts, 7.0% of the log's "
                f"rows) {done} (data.duplicates={policy})") in result.stderr
    assert (described["drop"]["rows"], described["keep"]["rows"]) == (ROWS, ROWS + 3)
    assert described["drop"]["finish_rate"] == pytest.approx(log["done"].mean())  # the first rows' labels


def test_train_on_a_truncated_gzip_log_names_the_file(run_mfh, tmp_path):
    make_log(400).to_csv(tmp_path / "log.csv.gz", index=False)
    whole = (tmp_path / "log.csv.gz").read_bytes()
    (tmp_path / "log.csv.gz").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "mapping.yaml").write_text(yaml.safe_dump({**MAPPING, "path": "log.csv.gz"}))
    result = run_mfh("train", "data=table", f"data.mapping={tmp_path / 'mapping.yaml'}", "trainer=smoke",
                     "--quiet", "--data-dir", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: log.csv.gz: unreadable (truncated or corrupt compressed file")
    assert len(result.stderr.strip().splitlines()) == 1 and not list((tmp_path / "results").glob("runs/[!.]*"))


@pytest.mark.parametrize(("changes", "key"), [
    ({"labels": {"dwell": "ratio"}}, "labels.dwell.kind"),  # a new behaviour needs its kind
    ({"labels": {"finish": {"column": "done", "kind": "regression"}}}, "labels.finish.kind"),
    ({"group": {**MAPPING["group"], "default": "vip"}}, "group.default"),
    ({"split": {"by": "fraction", "fractions": [0.5, 0.5, 0.5]}}, "split.fractions"),
    ({"itme": "video"}, "itme"),  # a typo
])
def test_bad_mapping_is_a_config_error_naming_the_key(tmp_path, changes, key):
    with pytest.raises(ConfigError, match=f"key {key}:"):
        load(tmp_path, make_log(), **changes)


def test_inline_mapping_from_the_data_config(tmp_path):
    log = pd.DataFrame({"user_id": [1, 2, 3, 1, 2, 3, 1, 2, 3, 1], "item_id": list(range(10)), "time": range(10),
                        "user_group": ["new", "low", "high"] * 3 + ["nobody"],
                        "cmpl": np.linspace(0, 1, 10), "finish": [0, 1] * 5, "skip": [1, 0] * 5})
    log.to_csv(tmp_path / "inline.csv", index=False)
    dataset = load_dataset(compose(["data=table", "data.path=inline.csv"]), data_dir=tmp_path)
    assert dataset.group.tolist() == [0, 1, 2] * 3 + [1]
    assert torch.bincount(dataset.split).tolist() == [8, 1, 1]
    with pytest.raises(ConfigError, match="data.path"):
        load_dataset(compose(["data=table"]), data_dir=tmp_path)


def test_documented_example_mapping_loads(tmp_path):
    """docs/table_mapping_example.yaml is a working mapping for the log it describes."""
    example = yaml.safe_load((REPO / "docs" / "table_mapping_example.yaml").read_text())
    generator = np.random.default_rng(1)
    rows = 30
    log = pd.DataFrame({
        "uid": generator.integers(0, 5, rows), "video": generator.integers(0, 9, rows),
        "ts": np.linspace(1651000000, 1652000000, rows).astype(np.int64),
        "activity": generator.choice(["day_new", "full_active", "middle_active"], rows),
        "watch_ratio": generator.random(rows), **{column: generator.integers(0, 2, rows) for column in
                                                  ("finished", "skipped", "liked", "shared", "commented",
                                                   "followed", "saved")},
        "device": "phone", "country": "fr", "author": generator.integers(0, 3, rows),
        "video_seconds": generator.random(rows) * 60, "account_age_days": generator.integers(1, 900, rows)})
    log.to_parquet(tmp_path / example["path"])
    dataset = load_dataset(compose(["data=table", f"data.mapping={REPO / 'docs' / 'table_mapping_example.yaml'}"]),
                           data_dir=tmp_path)
    assert list(dataset.schema.behaviours) == list(example["labels"]) and dataset.schema.behaviours["save"] == "binary"
    boundaries = example["split"]["boundaries"]
    assert dataset.split.tolist() == np.digitize(log["ts"], boundaries).tolist()


def test_cached_dataset_is_reused(tmp_path):
    log = make_log()
    log.to_csv(tmp_path / "log.csv", index=False)
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(yaml.safe_dump(MAPPING))
    cfg = compose(["data=table", f"data.mapping={mapping}"])
    first = load_dataset(cfg, data_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("table-*.pt"))) == 1
    second = load_dataset(cfg, data_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert torch.equal(first.categorical, second.categorical) and first.schema == second.schema


def test_group_rule_on_numeric_codes_with_gaps(tmp_path):
    log = make_log().assign(code=lambda frame: (frame.index % 3 + 1).astype(float))
    log.loc[4, "code"] = np.nan  # the CSV column reads back as floats 1.0, 2.0, 3.0
    dataset = load(tmp_path, log, group={"column": "code", "values": {"new": [1], "high": [3]}, "default": "low",
                                         "names": ["new", "low", "high"]})
    assert dataset.group.tolist() == [0 if code == 1 else 2 if code == 3 else 1 for code in log["code"]]
