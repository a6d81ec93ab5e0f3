"""KuaiRand loader: label derivations on hand-computed rows, groups, splits, train-only vocabularies, errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from mfh_cli.config import compose
from mfh_cli.data.dataset import SPLITS
from mfh_cli.data.kuairand import load_kuairand
from mfh_cli.data.validate import validate
from mfh_cli.errors import DataError
from mfh_cli.tasks import USER_GROUPS

LOG_HEADER = ["user_id", "video_id", "date", "hourmin", "time_ms", "is_click", "is_like", "is_follow", "is_comment",
              "is_forward", "is_hate", "long_view", "play_time_ms", "duration_ms", "profile_stay_time",
              "comment_stay_time", "is_profile_enter", "is_rand", "tab"]
TRAIN_DAY, VALIDATION_DAY, TEST_DAY, OUTSIDE_DAY = 20220425, 20220505, 20220507, 20220420

# (user, video, date, play_ms, duration_ms, like, share) and the labels computed by hand from SPEC §5:
# (cmpl, finish, skip) or None when duration 0 masks them.
HAND_ROWS = [
    ((1, 10, TRAIN_DAY, 5000, 10000, 0, 0), (0.5, 0.0, 0.0)),  # half watched
    ((1, 11, TRAIN_DAY, 4000, 0, 1, 0), None),  # duration 0: watch labels masked, like stays
    ((2, 10, TRAIN_DAY, 15000, 10000, 0, 1), (1.0, 1.0, 0.0)),  # replayed: play > duration, cmpl capped at 1
    ((3, 11, TRAIN_DAY, 2000, 10000, 0, 0), (0.2, 0.0, 1.0)),  # under 3 s: skip
    ((4, 10, VALIDATION_DAY, 1500, 2000, 0, 0), (0.75, 0.0, 1.0)),  # 2 s video, 1.5 s played: skip
    ((5, 11, TEST_DAY, 2500, 2000, 0, 0), (1.0, 1.0, 0.0)),  # under 3 s but the whole 2 s video: no skip
    ((9, 12, TEST_DAY, 500, 8000, 0, 0), (0.0625, 0.0, 1.0)),  # user and video only in test: cold start
    ((1, 10, OUTSIDE_DAY, 1000, 10000, 0, 0), "dropped"),  # outside every split range
]
# user -> (user_active_degree, register_days, expected group)
USERS = {1: ("full_active", 400, "high"), 2: ("2_14_day_new", 400, "new"), 3: ("middle_active", 20, "new"),
         4: ("middle_active", 400, "low"), 5: ("high_active", 10, "new"), 9: ("full_active", 900, "high")}


def write_kuairand(folder: Path, drop_log_column: str | None = None) -> Path:
    """A KuaiRand-shaped folder (official column names) holding HAND_ROWS, USERS and three videos."""
    folder.mkdir(parents=True, exist_ok=True)
    log = pd.DataFrame([{**dict.fromkeys(LOG_HEADER, 0), "user_id": user, "video_id": video, "date": date,
                         "hourmin": 1300, "time_ms": 1650862800000 + 1000 * row, "play_time_ms": play,
                         "duration_ms": duration, "is_like": like, "is_forward": share, "tab": 1}
                        for row, ((user, video, date, play, duration, like, share), _) in enumerate(HAND_ROWS)])
    log.drop(columns=[drop_log_column] if drop_log_column else []).to_csv(folder / "log_standard_tiny.csv",
                                                                         index=False)
    user_rows = [{"user_id": user, "user_active_degree": degree, "is_lowactive_period": 0, "is_live_streamer": user,
                  "is_video_author": 0, "follow_user_num": 10 * user, "follow_user_num_range": "(0,10]",
                  "fans_user_num": user, "fans_user_num_range": "[1,10)", "friend_user_num": 0,
                  "friend_user_num_range": "0", "register_days": days, "register_days_range": "31-60",
                  **{f"onehot_feat{index}": index for index in range(18)}}
                 for user, (degree, days, _) in USERS.items()]
    pd.DataFrame(user_rows).to_csv(folder / "user_features_tiny.csv", index=False)
    pd.DataFrame({"video_id": [10, 11, 12], "author_id": [100, 101, 102], "video_type": "NORMAL",
                  "upload_dt": "2022-04-10", "upload_type": "ShortImport", "visible_status": 0.0,
                  "video_duration": 10000.0, "server_width": 720.0, "server_height": 1280.0,
                  "music_id": [1, 2, 3], "music_type": 9.0, "tag": ["7,20", "39", None]}
                 ).to_csv(folder / "video_features_basic_tiny.csv", index=False)
    return folder


def load(directory: Path, cache_dir: Path | None = None, overrides: tuple[str, ...] = ()):
    return load_kuairand(compose(["data=kuairand", *overrides]).data, directory, cache_dir=cache_dir, quiet=True)


@pytest.fixture
def tiny(tmp_path: Path):
    return load(write_kuairand(tmp_path / "kuairand-pure"))


def test_watch_labels_match_hand_computed_values_and_duration_zero_masks_them(tiny):
    kept = [expected for _, expected in HAND_ROWS if expected != "dropped"]
    assert len(tiny) == len(kept)
    for row, expected in enumerate(kept):
        if expected is None:
            assert not tiny.label_mask[row, :3].any() and torch.equal(tiny.labels[row, :3], torch.zeros(3))
        else:
            assert tiny.label_mask[row, :3].all()
            assert tiny.labels[row, :3].tolist() == pytest.approx(list(expected))


def test_interactive_labels_stay_where_duration_is_zero(tiny):
    behaviours = list(tiny.schema.behaviours)
    assert behaviours == ["cmpl", "finish", "skip", "like", "share", "comment", "follow"]
    assert tiny.label_mask[:, 3:].all()
    assert tiny.labels[1, behaviours.index("like")] == 1.0  # the duration-0 row
    assert tiny.labels[:, behaviours.index("share")].tolist() == [0, 0, 1, 0, 0, 0, 0]


def test_groups_follow_activity_degree_and_registration_days(tiny):
    user_group = {int(user): USER_GROUPS[int(group)] for user, group in zip(tiny.user, tiny.group)}
    assert user_group == {user: group for user, (_, _, group) in USERS.items()}


def test_split_by_date_ranges_drops_rows_outside(tiny):
    assert [SPLITS[int(index)] for index in tiny.split] == ["train"] * 4 + ["validation"] + ["test"] * 2


def test_vocabularies_come_from_train_rows_only(tiny):
    fields = list(tiny.schema.categorical)
    user_column, video_column = fields.index("user_id"), fields.index("video_id")
    cold = tiny.user == 9  # user 9 and video 12 appear only in test
    assert tiny.categorical[cold, user_column].tolist() == [0]
    assert tiny.categorical[cold, video_column].tolist() == [0]
    assert tiny.categorical[cold, fields.index("is_live_streamer")].tolist() == [0]  # its user features too
    # Users 1, 2, 3 are in train: distinct non-zero codes; users 4 and 5 (validation, test only) map to 0.
    train_codes = tiny.categorical[tiny.split == 0, user_column].unique()
    assert 0 not in train_codes.tolist() and len(train_codes) == 3
    assert tiny.categorical[(tiny.user == 4) | (tiny.user == 5), user_column].tolist() == [0, 0]
    assert tiny.schema.categorical["user_id"] == 4  # 3 train users + the out-of-vocabulary index


def test_first_tag_and_duration_bucket(tiny):
    fields = list(tiny.schema.categorical)
    first_tag = tiny.categorical[:, fields.index("first_tag")]
    # Train videos 10 ("7,20") and 11 ("39"): two first tags; video 12 has no tag at all.
    assert first_tag[tiny.split == 0].unique().tolist() == [1, 2]
    bucket = tiny.categorical[:, fields.index("duration_bucket")]
    assert bucket[1] == 0  # duration 0: unknown
    assert bucket[0] == bucket[2] and bucket[0] != 0  # both 10 s videos share a bucket


def test_dense_features_are_finite_and_standardised_on_train(tiny):
    assert tiny.schema.dense == ["follow_user_num", "fans_user_num", "friend_user_num", "register_days"]
    assert torch.isfinite(tiny.dense).all()
    # follow_user_num = 10 × user varies across train rows: standardised to mean 0 there.
    assert tiny.dense[tiny.split == 0, 0].mean().item() == pytest.approx(0.0, abs=1e-6)


def test_parent_directory_with_subdir_is_accepted(tmp_path: Path):
    write_kuairand(tmp_path / "kuairand-pure")
    assert len(load(tmp_path)) == len(load(tmp_path / "kuairand-pure"))


def test_missing_column_names_file_and_column(tmp_path: Path):
    folder = write_kuairand(tmp_path / "kuairand-pure", drop_log_column="duration_ms")
    with pytest.raises(DataError, match=r"log_standard_tiny\.csv: column duration_ms: missing \(a required "
                                        r"column\)"):
        load(folder)


def test_bad_integer_value_names_the_column(tmp_path: Path):
    folder = write_kuairand(tmp_path / "kuairand-pure")
    log = pd.read_csv(folder / "log_standard_tiny.csv", dtype=str)
    log.loc[2, "play_time_ms"] = "lots"
    log.to_csv(folder / "log_standard_tiny.csv", index=False)
    with pytest.raises(DataError, match=r"log_standard_tiny\.csv: column play_time_ms: non-numeric values .*1 row"):
        load(folder)


def test_missing_directory_and_missing_table_are_data_errors(tmp_path: Path):
    with pytest.raises(DataError, match="no such directory"):
        load(tmp_path / "nowhere")
    folder = write_kuairand(tmp_path / "kuairand-pure")
    (folder / "video_features_basic_tiny.csv").unlink()
    with pytest.raises(DataError, match=r"no video_features_basic_\*\.csv"):
        load(folder)


def test_duplicate_impressions_are_dropped_keeping_the_first_or_kept_when_asked(tmp_path: Path):
    """SPEC §5 / data/README.md: a row repeating an earlier row's user, video and time is dropped (the first row
    of each kept, whatever the repeat's labels) under data.duplicates=drop, kept under keep; a note says which."""
    folder = write_kuairand(tmp_path / "kuairand-pure")
    log = pd.read_csv(folder / "log_standard_tiny.csv")
    repeat = log.iloc[[0, 0]].assign(play_time_ms=10000)  # the first row twice more, fully watched this time
    pd.concat([log.iloc[:1], repeat, log.iloc[1:]]).to_csv(folder / "log_standard_tiny.csv", index=False)
    dropped, kept = load(folder), load(folder, overrides=("data.duplicates=keep",))
    assert len(dropped) == len(HAND_ROWS) - 1 and len(kept) == len(dropped) + 2
    assert dropped.labels[0, :3].tolist() == pytest.approx([0.5, 0.0, 0.0])  # the first row's, not the repeats'
    assert kept.labels[:3, 0].tolist() == pytest.approx([0.5, 1.0, 1.0])
    assert dropped.schema.notes[0] == ("2 duplicate impressions (rows repeating an earlier row's user_id, video_id, "
                                       "time_ms, 20.0% of the log's rows) dropped, the first of each kept "
                                       "(data.duplicates=drop)")
    assert "kept, so each weighs double (data.duplicates=keep)" in kept.schema.notes[0]


def test_load_writes_a_cache_and_reads_it_back(tmp_path: Path):
    folder = write_kuairand(tmp_path / "kuairand-pure")
    first = load(folder, cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("kuairand-*.pt"))) == 1
    second = load(folder, cache_dir=tmp_path / "cache")
    assert torch.equal(first.categorical, second.categorical) and torch.equal(first.labels, second.labels)
    assert second.schema == first.schema


BROKEN_LOGS = {  # a change to the log that `mfh data validate` rejects: (column, row, value)
    "negative play time": ("play_time_ms", 2, -4000),
    "like outside {0, 1}": ("is_like", 0, 2),
    "infinite time": ("time_ms", 3, "inf"),
}


def break_log(folder: Path, column: str, row: int, value: object) -> None:
    log = pd.read_csv(folder / "log_standard_tiny.csv", dtype=str)
    log.loc[row, column] = str(value)
    log.to_csv(folder / "log_standard_tiny.csv", index=False)


@pytest.mark.parametrize("change", BROKEN_LOGS)
def test_log_that_validate_rejects_is_not_loaded_nor_cached(tmp_path: Path, change: str):
    folder = write_kuairand(tmp_path / "kuairand-pure")
    break_log(folder, *BROKEN_LOGS[change])
    rejected = [problem.message for problem in validate(folder) if problem.level == "error"]
    assert len(rejected) == 1
    with pytest.raises(DataError) as raised:
        load(folder, cache_dir=tmp_path / "cache")
    assert str(raised.value) == rejected[0]  # the very line validate prints
    assert not list(tmp_path.rglob("*.pt"))


def test_cached_load_is_checked_again_once_the_log_changes(tmp_path: Path):
    folder = write_kuairand(tmp_path / "kuairand-pure")
    load(folder, cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("kuairand-*.pt"))) == 1
    break_log(folder, *BROKEN_LOGS["negative play time"])
    with pytest.raises(DataError, match=r"column play_time_ms: negative values"):
        load(folder, cache_dir=tmp_path / "cache")


def test_infinite_dense_user_count_is_rejected(tmp_path: Path):
    folder = write_kuairand(tmp_path / "kuairand-pure")
    users = pd.read_csv(folder / "user_features_tiny.csv", dtype=str)
    users.loc[[1, 4], "fans_user_num"] = "inf"
    users.to_csv(folder / "user_features_tiny.csv", index=False)
    with pytest.raises(DataError, match=r"user_features_tiny\.csv: column fans_user_num: non-finite values .*2 rows"):
        load(folder)


# Real data: the two-week slice (SPEC §5 figures).

@pytest.fixture(scope="module")
def kuairand(kuairand_dir: Path):
    return load(kuairand_dir)


@pytest.fixture(scope="module")
def kuairand_kept(kuairand_dir: Path):
    """The slice with its duplicate impressions kept: SPEC §5's figures, counted on the raw log."""
    return load(kuairand_dir, overrides=("data.duplicates=keep",))


def test_real_slice_group_and_split_counts_as_spec_counts_them(kuairand_kept):
    assert torch.bincount(kuairand_kept.group, minlength=3).tolist() == [8_695, 25_430, 194_204]
    assert torch.bincount(kuairand_kept.split, minlength=3).tolist() == [171_671, 27_224, 29_434]
    assert kuairand_kept.user[kuairand_kept.group == USER_GROUPS.index("new")].unique().numel() == 765


def test_real_slice_without_its_5885_duplicate_impressions(kuairand, kuairand_dir: Path):
    """data/README.md "Duplicate impressions": the counts the default loader trains and scores on."""
    assert len(kuairand) == 228_329 - 5_885
    assert torch.bincount(kuairand.group, minlength=3).tolist() == [8_555, 25_018, 188_871]
    assert torch.bincount(kuairand.split, minlength=3).tolist() == [166_932, 26_651, 28_861]
    assert kuairand.schema.notes[0].startswith("5,885 duplicate impressions")
    log = pd.read_csv(next(kuairand_dir.glob("log_standard_*.csv")), usecols=["user_id", "video_id", "time_ms"])
    first = ~log.duplicated().to_numpy()
    assert torch.equal(kuairand.user, torch.from_numpy(log["user_id"].to_numpy()[first]))  # first kept, order kept


def test_real_slice_duration_zero_rows_are_masked(kuairand):
    assert int((~kuairand.label_mask[:, 0]).sum()) == 3_568  # SOURCE.md: duration_ms is 0 on 3,568 rows (none repeated)
    assert kuairand.label_mask[:, 3:].all()


def test_real_slice_cold_start_users_map_to_zero(kuairand):
    column = list(kuairand.schema.categorical).index("user_id")
    train_users = kuairand.user[kuairand.split == 0].unique()
    test = kuairand.split == SPLITS.index("test")
    unseen = test & ~torch.isin(kuairand.user, train_users)
    assert unseen.any()
    assert (kuairand.categorical[unseen, column] == 0).all()
    assert (kuairand.categorical[test & ~unseen, column] > 0).all()


def test_real_slice_share_sparsity_note_is_computed(kuairand):
    share = [note for note in kuairand.schema.notes if note.startswith("share ")]
    # SPEC §5 counts 195 shares in the raw log; one of them is a duplicate impression.
    assert len(share) == 1 and "194 positives in all" in share[0] and "8 among new users" in share[0]
    assert not any(note.startswith("like ") for note in kuairand.schema.notes)  # 163 new-user likes: not sparse


def test_train_stops_on_a_real_slice_copy_that_validate_rejects(run_mfh, kuairand_dir: Path, tmp_path: Path):
    """Every 10th row of the real log with one negative play time; the user and video tables linked as they are."""
    copy = tmp_path / "kuairand-pure"
    copy.mkdir()
    log_file = next(kuairand_dir.glob("log_standard_*.csv"))
    log = pd.read_csv(log_file).iloc[::10].reset_index(drop=True)
    log.loc[7, "play_time_ms"] = -7000
    log.to_csv(copy / log_file.name, index=False)
    for table in [*kuairand_dir.glob("user_features_*.csv"), *kuairand_dir.glob("video_features_basic_*.csv")]:
        (copy / table.name).symlink_to(table)
    validated = run_mfh("data", "validate", str(copy))
    assert validated.returncode == 1
    rejected = [line for line in validated.stderr.splitlines() if line.startswith("error: ")]
    assert len(rejected) == 1 and "column play_time_ms: negative values" in rejected[0]
    trained = run_mfh("train", "data=kuairand", "trainer=smoke", "--quiet", "--data-dir", str(tmp_path))
    assert trained.returncode == 1
    assert trained.stderr.strip().splitlines()[-1] == rejected[0]
    results = tmp_path / "results"
    # The writability check may have made runs/ (and its lock folder), but no run directory is there.
    assert not list(results.rglob("*.pt")) and not list(results.glob("runs/[!.]*"))



@pytest.mark.slow
def test_a_backup_copy_beside_the_real_log_stops_validate_describe_and_train(run_mfh, kuairand_dir: Path,
                                                                            tmp_path: Path):
    """A folder holding the slice's log and a backup copy of it (as people keep): every row would load twice. Each
    command says so in the line validate prints, exits 1 and caches nothing."""
    folder = tmp_path / "kuairand-pure"
    folder.mkdir()
    for table in kuairand_dir.glob("*.csv"):
        (folder / table.name).symlink_to(table)
    log = next(kuairand_dir.glob("log_standard_*.csv"))
    backup = folder / log.name.replace(".csv", "_backup.csv")
    shutil.copyfile(log, backup)
    validated = run_mfh("data", "validate", str(folder))
    assert validated.returncode == 1
    rejected = [line for line in validated.stderr.splitlines() if line.startswith("error: ")]
    assert rejected == [f"error: {backup.name}: rows repeated from {log.name} (same user_id, video_id, time_ms; dates "
                        f"20220425-20220508 in both files: a log held twice, keep one copy): 228,329 rows (e.g. rows "
                        f"1, 2, 3)"]
    for command in (("data", "describe", "kuairand"), ("train", "data=kuairand", "trainer=smoke")):
        result = run_mfh(*command, "--data-dir", str(tmp_path))
        assert result.returncode == 1 and result.stderr.strip().splitlines()[-1] == rejected[0], result.stderr
    assert not list((tmp_path / "results").rglob("*.pt")) and not list((tmp_path / "results").glob("runs/[!.]*"))


def test_real_slice_scenarios_are_the_tabs_with_five_percent_of_train_rows_and_the_rest_pooled(kuairand,
                                                                                              kuairand_kept,
                                                                                              kuairand_dir: Path):
    """data/README.md "Scenarios": tab6 is half duplicate impressions (5,549 of its 11,208 rows); without them it holds
    2.7% of the train rows and joins tab_other; with them kept it is a scenario of its own (5.3%)."""
    assert kuairand.schema.scenarios == ["tab1", "tab0", "tab4", "tab_other"]
    assert torch.bincount(kuairand.scenario, minlength=4).tolist() == [173_008, 20_239, 13_647, 15_550]
    assert kuairand_kept.schema.scenarios == ["tab1", "tab0", "tab4", "tab6", "tab_other"]
    assert torch.bincount(kuairand_kept.scenario, minlength=5).tolist() == [173_008, 20_254, 13_647, 11_208, 10_212]
    tab = pd.read_csv(next(kuairand_dir.glob("log_standard_*.csv")), usecols=["tab"])["tab"].to_numpy()
    assert len(tab) == len(kuairand_kept)  # every row of the slice falls in a split: the loader keeps the log's order
    for index, value in enumerate((1, 0, 4, 6)):
        assert torch.equal(kuairand_kept.scenario == index, torch.from_numpy(tab == value))
