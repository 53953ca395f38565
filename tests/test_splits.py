"""Tests of helpers.data.splits: stratified, group and splits.csv train/validation splits, k folds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers.core import severstal
from helpers.data import splits

# Class combinations of a hand-made table: count of images per combination ("" = defect-free).
COMBINATIONS = {"": 20, "3": 15, "1": 6, "4": 5, "3+4": 3, "1+3": 2, "2": 1, "1+2": 1}


def _wide(combinations: dict[str, int] = COMBINATIONS) -> pd.DataFrame:
    rows, ids = [], []
    for combination, count in combinations.items():
        present = {int(c) for c in combination.split("+") if c}
        for i in range(count):
            ids.append(f"{combination or 'free'}_{i:02d}.jpg")
            rows.append(["1 1" if c in present else "" for c in range(1, 5)])
    wide = pd.DataFrame(rows, columns=[1, 2, 3, 4], index=pd.Index(ids, name="ImageId"))
    wide["Height"], wide["Width"] = 8, 8
    return wide


def _groups(wide: pd.DataFrame) -> pd.Series:
    """Group = ImageId bucket: 11 groups of 1 to 9 images."""
    sizes = [1, 2, 3, 4, 5, 9, 9, 9, 4, 4, 3]
    labels = np.repeat([f"g{k:02d}" for k in range(len(sizes))], sizes)[: len(wide)]
    return pd.Series(labels, index=wide.index, name="group")


def test_class_combinations():
    combos = splits.class_combinations(_wide())
    assert combos.value_counts().to_dict() == COMBINATIONS
    assert combos["free_00.jpg"] == "" and combos["1+3_00.jpg"] == "1+3"


@pytest.mark.parametrize("val_fraction", [0.1, 0.2, 0.3])
def test_stratified_keeps_combinations_on_both_sides(val_fraction):
    wide = _wide()
    split = splits.stratified_split(wide, val_fraction=val_fraction, seed=0)
    assert list(split.index) == list(wide.index) and set(split) == {"train", "val"}
    combos = splits.class_combinations(wide)
    for combination, count in COMBINATIONS.items():
        sides = set(split[combos == combination])
        if count >= 2:
            assert sides == {"train", "val"}, combination
    # round(f * N) images, or more where a stratum needs its one validation image.
    sizes = [c for c in COMBINATIONS.values() if c >= 2] + [2]  # + the catch-all of the two singletons
    n_val = int((split == "val").sum())
    assert round(val_fraction * len(wide)) <= n_val <= sum(max(1, int(np.ceil(val_fraction * n))) for n in sizes)


def test_stratified_is_deterministic_and_order_free():
    wide = _wide()
    first = splits.stratified_split(wide, 0.2, seed=1)
    shuffled = wide.iloc[np.random.default_rng(0).permutation(len(wide))]
    pd.testing.assert_series_equal(splits.stratified_split(shuffled, 0.2, seed=1).sort_index(), first.sort_index())
    pd.testing.assert_series_equal(splits.stratified_split(wide, 0.2, seed=1), first)
    assert not splits.stratified_split(wide, 0.2, seed=2).equals(first)


def test_rare_combinations_pooled():
    wide = _wide({"": 10, "3": 10, "2": 1, "1+2": 1, "4": 1})
    split = splits.stratified_split(wide, 0.3, seed=0)
    rare = split[["2_00.jpg", "1+2_00.jpg", "4_00.jpg"]]
    assert set(rare) == {"train", "val"}  # the catch-all of 3 images is split too
    strata = splits.merge_rare(splits.class_combinations(wide), 2)
    assert (strata == splits.RARE_STRATUM).sum() == 3


def test_zero_val_fraction_and_single_image():
    assert set(splits.stratified_split(_wide(), 0.0)) == {"train"}
    assert set(splits.stratified_split(_wide({"3": 1}), 0.5)) == {"train"}


@pytest.mark.parametrize(
    "groups, fraction, seed, n_val",
    [
        (["a", "b", "c", "d", "e"], 0.2, 0, 1),
        (["a", "b", "c", "d", "e"], 0.4, 3, 2),
        (["a", "a", "b"], 0.0, 0, 0),
        (["x", "y"], 0.1, 0, 1),  # at least one val group ...
        (["x", "y"], 0.9, 0, 1),  # ... and at least one train group
        (["x"], 0.5, 0, 0),  # a single group stays in train
    ],
)
def test_split_groups_is_seeded_and_sized(groups, fraction, seed, n_val):
    first = splits.split_groups(groups, fraction, seed)
    assert first == splits.split_groups(list(reversed(groups)), fraction, seed)
    assert sorted(first) == sorted(set(groups))
    assert list(first.values()).count("val") == n_val


@pytest.mark.parametrize("fraction", [1.0, -0.1, "half"])
def test_split_groups_rejects_bad_fraction(fraction):
    with pytest.raises(ValueError, match=r"val_fraction must be in \[0, 1\)"):
        splits.split_groups(["a"], fraction)


@pytest.mark.parametrize("seed", [-1, "x", [0, -2]])
def test_split_groups_rejects_bad_seed(seed):
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        splits.split_groups(["a", "b"], 0.5, seed)


@pytest.mark.parametrize("val_fraction", [0.1, 0.25, 0.5])
def test_group_split_keeps_groups_whole(val_fraction):
    wide = _wide()
    groups = _groups(wide)
    split = splits.group_split(groups, val_fraction, seed=3)
    per_group = pd.DataFrame({"split": split, "group": groups}).groupby("group")["split"].nunique()
    assert (per_group == 1).all()
    n_val_groups = groups[split == "val"].nunique()
    assert n_val_groups == max(1, round(val_fraction * groups.nunique()))
    pd.testing.assert_series_equal(splits.group_split(groups, val_fraction, seed=3), split)


def test_check_groups_names_spanning_group():
    groups = pd.Series(["a", "a", "b"], index=["x.jpg", "y.jpg", "z.jpg"])
    split = pd.Series(["train", "val", "val"], index=groups.index)
    with pytest.raises(ValueError, match=r"a \(train,val\)"):
        splits.check_groups(split, groups)
    splits.check_groups(pd.Series(["val", "val", "train"], index=groups.index), groups)


def _write_splits(dataset_dir: Path, split: pd.Series, groups: pd.Series) -> None:
    severstal.write_splits(dataset_dir, pd.DataFrame({"split": split, "group": groups}))


def test_from_splits_csv(tmp_path):
    wide = _wide()
    groups = _groups(wide)
    split = splits.group_split(groups, 0.3, seed=0)
    _write_splits(tmp_path, split, groups)
    pd.testing.assert_series_equal(splits.from_splits_csv(tmp_path), split.sort_index().rename("split"))
    leaky = split.copy()
    leaky.iloc[0] = "val" if leaky.iloc[0] == "train" else "train"
    _write_splits(tmp_path, leaky, groups)
    assert (groups == groups[leaky.index[0]]).sum() > 1
    with pytest.raises(ValueError, match=f"{groups[leaky.index[0]]} "):
        splits.from_splits_csv(tmp_path)
    with pytest.raises(ValueError, match="span two splits"):
        splits.train_val_ids(tmp_path, wide, strategy="splits_csv")
    with pytest.warns(UserWarning, match="leaky split"):
        train, val = splits.train_val_ids(tmp_path, wide, strategy="splits_csv", allow_leakage=True)
    assert val == sorted(leaky.index[leaky == "val"])


@pytest.mark.parametrize(
    ("strategy", "with_csv", "expected"),
    [
        ("auto", False, "stratified"),
        ("auto", True, "csv"),
        ("splits_csv", True, "csv"),
        ("stratified", False, "stratified"),
        ("group", True, "group"),
    ],
)
def test_train_val_ids(tmp_path, strategy, with_csv, expected):
    wide = _wide()
    groups = pd.Series([f"g_{i}" for i in range(len(wide))], index=wide.index)  # one image per group
    recorded = pd.Series(["val" if i % 4 == 0 else "train" for i in range(len(wide))], index=wide.index)
    if with_csv:
        _write_splits(tmp_path, recorded, groups)
    train, val = splits.train_val_ids(tmp_path, wide, strategy=strategy, val_fraction=0.2, seed=0)
    assert sorted(train + val) == sorted(wide.index) and not set(train) & set(val)
    assert train == sorted(train) and val == sorted(val)
    reference = {
        "stratified": splits.stratified_split(wide, 0.2, seed=0),
        "csv": recorded,
        "group": splits.group_split(groups, 0.2, seed=0),
    }[expected]
    assert val == sorted(reference.index[reference == "val"])


def test_train_val_ids_errors(tmp_path):
    wide = _wide()
    with pytest.raises(ValueError, match=r"strategy must be one of \['auto', 'stratified', 'splits_csv', 'group'\], got 'random'"):
        splits.train_val_ids(tmp_path, wide, strategy="random")
    with pytest.raises(FileNotFoundError, match="splits.csv"):
        splits.train_val_ids(tmp_path, wide, strategy="splits_csv")
    with pytest.raises(ValueError, match="needs groups"):
        splits.train_val_ids(tmp_path, wide, strategy="group")
    groups = _groups(wide)
    _write_splits(tmp_path, splits.group_split(groups, 0.2, seed=0), groups)
    with pytest.raises(ValueError, match="use strategy='group'"):  # stratified would split the big groups
        splits.train_val_ids(tmp_path, wide, strategy="stratified")
    with pytest.raises(ValueError, match="val_split='test'.*allowed: \\['train', 'val'\\]"):
        splits.train_val_ids(tmp_path, wide, strategy="splits_csv", val_split="test")
    with pytest.raises(ValueError, match="not in"):
        splits.train_val_ids(tmp_path, pd.concat([wide, _wide({"9": 1}).rename(index=lambda i: "new.jpg")]))


@pytest.mark.parametrize("stratify", [False, True])
@pytest.mark.parametrize("k", [2, 3, 5])
def test_group_kfold(k, stratify):
    wide = _wide()
    groups = _groups(wide)
    strata = splits.class_combinations(wide) if stratify else None
    folds = splits.group_kfold(groups, k=k, seed=0, strata=strata)
    assert sorted(folds.unique()) == list(range(k))
    assert (pd.DataFrame({"fold": folds, "group": groups}).groupby("group")["fold"].nunique() == 1).all()
    pd.testing.assert_series_equal(splits.group_kfold(groups, k=k, seed=0, strata=strata), folds)


def test_group_kfold_errors():
    groups = pd.Series(["a", "a", "b"], index=["x.jpg", "y.jpg", "z.jpg"])
    with pytest.raises(ValueError, match="at least k groups"):
        splits.group_kfold(groups, k=3)
    for k in (1, 2.5, True):
        with pytest.raises(ValueError, match=r"k must be an integer >= 2, got "):
            splits.group_kfold(groups, k=k)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: splits.stratified_split(_wide(), val_fraction=1.0), r"val_fraction must be in \[0, 1\)"),
        (lambda: splits.stratified_split(_wide(), val_fraction=-0.1), "val_fraction"),
        (lambda: splits.stratified_split(_wide(), seed=-1), "seed"),
        (lambda: splits.stratified_split(_wide(), min_stratum=0), "min_stratum"),
        (lambda: splits.group_split(["a", "b"], 0.2), "pandas Series"),
    ],
)
def test_bad_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_nested_group_subsets_keep_whole_groups_and_grow_by_adding():
    groups = pd.Series([f"p{k // 3}" for k in range(30)], index=[f"img{k:02d}" for k in reversed(range(30))])
    subsets = {n: splits.nested_group_subset(groups, n, seed=4) for n in (1, 4, 7, 10)}
    for n, kept in subsets.items():
        assert kept.index.equals(groups.index) and groups[kept].nunique() == n
        assert not set(groups[kept]) & set(groups[~kept])  # a group is wholly in or out
    for small, large in [(1, 4), (4, 7), (7, 10)]:
        assert set(groups[subsets[small]]) <= set(groups[subsets[large]])
    assert subsets[10].all()
    assert not splits.nested_group_subset(groups, 4, seed=5).equals(subsets[4])  # the seed draws the order


@pytest.mark.parametrize("n_groups", [0, 11, 2.5])
def test_nested_group_subset_refuses_impossible_sizes(n_groups):
    groups = pd.Series([f"p{k // 3}" for k in range(30)], index=[f"img{k:02d}" for k in range(30)])
    with pytest.raises(ValueError, match=r"n_groups must be an integer in 1\.\.10"):
        splits.nested_group_subset(groups, n_groups)


@pytest.mark.parametrize(
    "n_val, strata, expected_val_strata",
    [
        (4, None, None),
        (6, ["x"] * 8 + ["y"] * 4, {"x": 4, "y": 2}),  # shares of 6: 4 of x, 2 of y
        (3, ["x"] * 8 + ["y"] * 4, {"x": 2, "y": 1}),
        (0, None, None),
    ],
)
def test_sized_group_split_moves_whole_groups_to_an_exact_size(n_val, strata, expected_val_strata):
    index = [f"img{k:02d}" for k in range(12)]
    groups = pd.Series(["g0", "g0", "g1", "g2", "g2", "g3", "g4", "g5", "g6", "g6", "g7", "g8"], index=index)
    strata = None if strata is None else pd.Series(strata, index=index)
    split = splits.sized_group_split(groups, n_val, strata=strata, seed=2)
    assert split.index.equals(groups.index) and int((split == "val").sum()) == n_val
    splits.check_groups(split, groups)  # raises if a group spans both sides
    if expected_val_strata is not None:
        assert strata[split == "val"].value_counts().to_dict() == expected_val_strata
    assert split.equals(splits.sized_group_split(groups, n_val, strata=strata, seed=2))


def test_sized_group_split_refuses_more_than_all():
    groups = pd.Series(["g0", "g1"], index=["a", "b"])
    with pytest.raises(ValueError, match=r"n_val must be an integer in 0\.\.2"):
        splits.sized_group_split(groups, 3)
