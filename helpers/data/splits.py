"""Train/validation splits of a wide table (see :mod:`helpers.core.severstal`), without TensorFlow.

- :func:`stratified_split`: seeded split stratified by *class combination* (the classes
  present in an image, e.g. ``"3"``, ``"1+3"``, ``""`` = defect-free);
- :func:`group_split`: whole groups (e.g. source radiographs, coils) to one side;
- :func:`split_groups`: the seeded ``{group: split}`` behind it (the converters use it too);
- :func:`sized_group_split`: whole groups to one side with an exact validation size, per stratum;
- :func:`from_splits_csv`: the split recorded in ``splits.csv`` (converters write it);
- :func:`train_val_ids`: one entry point choosing among them (``strategy``);
- :func:`group_kfold`: k folds by group (optionally stratified), for cross-validation;
- :func:`check_groups`: raise if a group has images in two splits;
- :func:`nested_group_subset`: the first ``n`` groups of one seeded order (nested as ``n`` grows).

Splits are Series indexed by ImageId holding the split name (``"train"`` / ``"val"``).
Every choice depends only on the sorted ImageIds (and groups) and ``seed``.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

from helpers.core import checks, severstal
from helpers.data import audit

__all__ = [
    "RARE_STRATUM",
    "STRATEGIES",
    "check_groups",
    "class_combinations",
    "from_splits_csv",
    "group_kfold",
    "group_split",
    "merge_rare",
    "nested_group_subset",
    "sized_group_split",
    "split_groups",
    "stratified_split",
    "train_val_ids",
]

STRATEGIES = ("auto", "stratified", "splits_csv", "group")
RARE_STRATUM = "rare"  # the catch-all stratum of combinations with too few images


def _series(name: str, values: pd.Series) -> pd.Series:
    if not isinstance(values, pd.Series):
        raise ValueError(f"{name} must be a pandas Series indexed by ImageId, got {type(values).__name__}")
    if values.index.has_duplicates:
        duplicated = values.index[values.index.duplicated()].unique().tolist()
        raise ValueError(f"{name} has duplicated ImageIds, e.g. {duplicated[:3]}")
    if values.isna().any():
        raise ValueError(f"{name} has missing values for ImageIds {values.index[values.isna()].tolist()[:3]}")
    return values.astype(str).sort_index()


def class_combinations(wide: pd.DataFrame) -> pd.Series:
    """Per ImageId the classes present, joined with ``+`` in id order (``"1+3"``; ``""`` = defect-free)."""
    classes = severstal.class_columns(wide)
    if not classes:
        raise ValueError(f"wide table has no class columns (ints 1..C); got columns {list(wide.columns)}")
    present = wide[classes].fillna("").astype(str).apply(lambda column: column.str.strip() != "")
    labels = ["+".join(str(c) for c, on in zip(classes, row) if on) for row in present.itertuples(index=False)]
    return pd.Series(labels, index=wide.index, name="combination", dtype=str)


def merge_rare(strata: pd.Series, min_count: int) -> pd.Series:
    """``strata`` with every value held by fewer than ``min_count`` images replaced by :data:`RARE_STRATUM`."""
    counts = strata.map(strata.value_counts())
    return strata.where(counts >= min_count, RARE_STRATUM)


def _allocate(sizes: np.ndarray, val_fraction: float) -> np.ndarray:
    """Validation count per stratum: >= 1 and <= n - 1 for strata of 2+, total near ``round(f * N)``."""
    if val_fraction == 0.0:
        return np.zeros_like(sizes)
    exact = val_fraction * sizes
    low = np.where(sizes >= 2, 1, 0)
    high = np.maximum(sizes - 1, 0)
    counts = np.clip(np.floor(exact).astype(int), low, high)
    target = int(math.floor(val_fraction * sizes.sum() + 0.5))
    # Largest remainders first (ties: larger stratum, then order) until the total is reached.
    order = sorted(range(len(sizes)), key=lambda i: (-(exact[i] - math.floor(exact[i])), -sizes[i], i))
    for i in order:
        if counts.sum() >= target:
            break
        if counts[i] < high[i] and counts[i] < math.ceil(exact[i]):
            counts[i] += 1
    return counts


def stratified_split(
    wide: pd.DataFrame, val_fraction: float = 0.2, seed: int = 0, min_stratum: int = 2
) -> pd.Series:
    """Seeded ``ImageId -> "train"/"val"`` split stratified by class combination.

    Each combination (see :func:`class_combinations`) with at least ``min_stratum`` images is
    its own stratum; rarer combinations are pooled into one catch-all stratum
    (:data:`RARE_STRATUM`), so they are spread over both sides without failing. Every stratum
    of two or more images gets at least one image on each side (when ``val_fraction > 0``);
    the total number of validation images is ``round(val_fraction * N)`` unless those
    minimums need more. A catch-all of a single image goes to train.
    """
    val_fraction, seed = checks.fraction("val_fraction", val_fraction), checks.seed("seed", seed)
    min_stratum = checks.positive_int("min_stratum", min_stratum)
    if wide.index.has_duplicates:
        raise ValueError(f"wide table has duplicated ImageIds, e.g. {wide.index[wide.index.duplicated()][:3].tolist()}")
    strata = merge_rare(class_combinations(wide).sort_index(), min_stratum)
    names = sorted(strata.unique())
    members = [strata.index[strata == name].tolist() for name in names]
    counts = _allocate(np.array([len(m) for m in members]), val_fraction)
    rng = np.random.default_rng(seed)
    split = pd.Series("train", index=strata.index, name="split", dtype=object)
    for ids, n_val in zip(members, counts):
        order = rng.permutation(len(ids))
        split.loc[[ids[i] for i in order[:n_val]]] = "val"
    return split.reindex(wide.index).astype(str)


def split_groups(
    groups: Sequence[str],
    val_fraction: float,
    seed: int | Sequence[int] = 0,
    val_split: str = "val",
    train_split: str = "train",
) -> dict[str, str]:
    """Seeded split of distinct ``groups`` into ``{group: split}``.

    ``round(val_fraction * n_groups)`` groups go to ``val_split``, but at least one and at
    most ``n_groups - 1`` when ``val_fraction > 0`` and there are two or more groups (a
    single group stays in ``train_split``). The choice depends only on the sorted group
    names and ``seed``.
    """
    val_fraction = checks.fraction("val_fraction", val_fraction)
    _seed(seed)
    unique = sorted(set(groups))
    n_val = int(np.floor(val_fraction * len(unique) + 0.5))
    if val_fraction > 0 and len(unique) > 1:
        n_val = min(max(n_val, 1), len(unique) - 1)
    elif len(unique) <= 1:
        n_val = 0
    order = np.random.default_rng(seed).permutation(len(unique))
    val = {unique[i] for i in order[:n_val]}
    return {g: (val_split if g in val else train_split) for g in unique}


def sized_group_split(groups: pd.Series, n_val: int, strata: pd.Series | None = None, seed: int = 0) -> pd.Series:
    """Seeded ``ImageId -> "train"/"val"`` split of whole ``groups`` with ``n_val`` validation images.

    For replacing a leaky published split by one of the same size. Each group's stratum is the
    most common ``strata`` value of its images (default: one stratum); every stratum gets its
    share of ``n_val`` (largest remainders), filled with whole groups in a seeded order; a
    shortfall is then filled exactly by other groups (a subset sum), giving back the last chosen
    groups if needed. The result holds exactly ``n_val`` validation images unless the group
    sizes make that impossible (then fewer: the count is the caller's to check).
    """
    original = groups.index
    groups = _series("groups", groups)
    n_val = checks.integer("n_val", n_val, low=0, high=len(groups))
    seed = checks.seed("seed", seed)
    strata = pd.Series("", index=groups.index) if strata is None else _series("strata", strata)
    if not strata.index.equals(groups.index):
        raise ValueError("strata must have the same ImageIds as groups")
    table = pd.DataFrame({"group": groups, "stratum": strata})
    per_group = table.groupby("group", sort=True).agg(
        size=("stratum", "size"), stratum=("stratum", lambda s: s.value_counts().sort_index().idxmax()))
    names = sorted(per_group["stratum"].unique())
    stratum_sizes = np.array([per_group.loc[per_group["stratum"] == name, "size"].sum() for name in names])
    exact = n_val * stratum_sizes / max(len(groups), 1)
    targets = np.floor(exact).astype(int)
    for i in sorted(range(len(names)), key=lambda i: (-(exact[i] - targets[i]), i))[: n_val - int(targets.sum())]:
        targets[i] += 1
    target_of = dict(zip(names, targets))
    order = per_group.index[np.random.default_rng(seed).permutation(len(per_group))]
    taken: dict[str, int] = {name: 0 for name in names}
    val: set[str] = set()
    for group in order:
        size, stratum = int(per_group.at[group, "size"]), per_group.at[group, "stratum"]
        if taken[stratum] + size <= target_of[stratum]:
            val.add(group)
            taken[stratum] += size
    chosen = [group for group in order if group in val]
    size_of = per_group["size"].astype(int).to_dict()
    while True:  # fill the shortfall exactly from the other groups, giving back the last chosen if needed
        gap = n_val - sum(size_of[g] for g in chosen)
        filler = _exact_subset([g for g in order if g not in set(chosen)], size_of, gap)
        if filler is not None or not chosen:
            break
        chosen.pop()
    val = set(chosen) | set(filler or [])
    split = groups.map(lambda g: "val" if g in val else "train").rename("split")
    return split.reindex(original)


def _exact_subset(candidates: Sequence[str], size_of: dict[str, int], total: int) -> list[str] | None:
    """Some of ``candidates`` (earlier ones preferred) whose sizes sum to exactly ``total``, or None."""
    last_of: dict[int, tuple[int, int]] = {0: (-1, -1)}  # reachable sum -> (candidate index, previous sum)
    for k, name in enumerate(candidates):
        size = size_of[name]
        for reached in sorted(last_of, reverse=True):
            if reached + size <= total and reached + size not in last_of:
                last_of[reached + size] = (k, reached)
        if total in last_of:
            break
    if total not in last_of:
        return None
    picked, reached = [], total
    while reached:
        k, reached = last_of[reached]
        picked.append(candidates[k])
    return picked


def _seed(seed: int | Sequence[int]) -> int | list[int]:
    """A seed >= 0, or a sequence of them (as ``numpy.random.default_rng`` takes)."""
    if isinstance(seed, (str, bytes)) or not isinstance(seed, Sequence):
        return checks.seed("seed", seed)
    return [checks.seed("seed", s) for s in seed]


def group_split(groups: pd.Series, val_fraction: float = 0.2, seed: int = 0) -> pd.Series:
    """Seeded ``ImageId -> "train"/"val"`` split keeping every group on one side.

    ``groups``: ImageId -> group id. ``round(val_fraction * n_groups)`` *groups* go to
    validation (at least one, and at least one stays in train, when there are two or more
    groups); see :func:`split_groups`.
    """
    val_fraction, seed = checks.fraction("val_fraction", val_fraction), checks.seed("seed", seed)
    groups = _series("groups", groups)
    split_of = split_groups(groups.tolist(), val_fraction, seed)
    split = groups.map(split_of).rename("split")
    check_groups(split, groups)
    return split


def nested_group_subset(groups: pd.Series, n_groups: int, seed: int = 0) -> pd.Series:
    """Boolean Series (index of ``groups``): rows of the first ``n_groups`` groups of one seeded order.

    The order depends only on the sorted group ids and ``seed``, so for one seed the subsets are
    nested (every group of a smaller subset is in each larger one): a corpus-size curve.
    """
    names = _series("groups", groups).reindex(groups.index)
    unique = np.array(sorted(names.unique()))
    n_groups = checks.integer("n_groups", n_groups, low=1, high=len(unique))
    order = np.random.default_rng(checks.seed("seed", seed)).permutation(len(unique))
    return names.isin(set(unique[order[:n_groups]])).rename("kept")


def check_groups(split: pd.Series, groups: pd.Series) -> None:
    """Raise ``ValueError`` naming the groups whose images sit in more than one split."""
    table = pd.DataFrame({"split": split.astype(str), "group": groups.reindex(split.index)})
    if table["group"].isna().any():
        missing = table.index[table["group"].isna()].tolist()
        raise ValueError(f"{len(missing)} ImageId(s) have no group, e.g. {missing[:3]}")
    spanning = audit.check_group_splits(table)
    if len(spanning):
        described = [f"{g} ({s})" for g, s in zip(spanning["group"], spanning["splits"])]
        raise ValueError(f"{len(spanning)} group(s) span two splits (leakage): {', '.join(described[:10])}")


def from_splits_csv(dataset_dir: str | os.PathLike, allow_leakage: bool = False) -> pd.Series:
    """``ImageId -> split`` from ``splits.csv``, checked that no group spans two splits (unless ``allow_leakage``)."""
    table = severstal.read_splits(dataset_dir)
    if table.index.has_duplicates:
        duplicated = table.index[table.index.duplicated()].unique().tolist()
        raise ValueError(f"{Path(dataset_dir) / 'splits.csv'} lists ImageIds twice, e.g. {duplicated[:3]}")
    if not allow_leakage:
        check_groups(table["split"], table["group"])
    return table["split"].astype(str).sort_index().rename("split")


def train_val_ids(
    dataset_dir: str | os.PathLike,
    wide: pd.DataFrame,
    strategy: str = "auto",
    val_fraction: float = 0.2,
    seed: int = 0,
    groups: pd.Series | None = None,
    train_split: str = "train",
    val_split: str = "val",
    allow_leakage: bool = False,
) -> tuple[list[str], list[str]]:
    """Sorted ``(train_ids, val_ids)`` of the images of ``wide``.

    ``strategy``: ``"splits_csv"`` (the recorded split; images in other splits, e.g.
    ``"test"``, are left out; choose the names with ``train_split``/``val_split``),
    ``"stratified"`` (:func:`stratified_split`), ``"group"`` (:func:`group_split` on
    ``groups``, default the ``group`` column of ``splits.csv``), or ``"auto"``
    (``splits_csv`` if the folder has ``splits.csv``, else ``stratified``).
    When groups are known, no group may span the two sides (``ValueError``), unless
    ``allow_leakage`` (e.g. to reproduce a published but leaky split): then a warning says how many do.
    """
    checks.choice("strategy", strategy, STRATEGIES)
    dataset_dir = Path(dataset_dir)
    has_csv = (dataset_dir / "splits.csv").is_file()
    if strategy == "auto":
        strategy = "splits_csv" if has_csv else "stratified"
    ids = wide.index
    if strategy == "stratified":
        split = stratified_split(wide, val_fraction, seed)
        train_split, val_split = "train", "val"
    elif strategy == "splits_csv":
        split = from_splits_csv(dataset_dir, allow_leakage)
        unsplit = ids.difference(split.index)
        if len(unsplit):
            raise ValueError(f"{len(unsplit)} image(s) of the table are not in {dataset_dir / 'splits.csv'}, e.g. {list(unsplit[:3])}")
        split = split.reindex(ids)
        found = sorted(split.unique())
        for name, value in (("train_split", train_split), ("val_split", val_split)):
            if value not in found:
                raise ValueError(f"{name}={value!r} is not a split of {dataset_dir / 'splits.csv'}; allowed: {found}")
    else:  # group
        if groups is None:
            if not has_csv:
                raise ValueError(f"strategy='group' needs groups= or {dataset_dir / 'splits.csv'} with a group column")
            groups = severstal.read_splits(dataset_dir)["group"]
        groups = _series("groups", groups)
        unknown = ids.difference(groups.index)
        if len(unknown):
            raise ValueError(f"{len(unknown)} image(s) of the table have no group, e.g. {list(unknown[:3])}")
        split = group_split(groups.reindex(ids), val_fraction, seed)
        train_split, val_split = "train", "val"
    if groups is None and has_csv:
        recorded = severstal.read_splits(dataset_dir)["group"]
        if ids.isin(recorded.index).all():
            groups = recorded
    if groups is not None:
        chosen = split[split.isin([train_split, val_split])]
        try:
            check_groups(chosen, groups.astype(str))
        except ValueError as err:
            if not allow_leakage:
                raise ValueError(f"strategy={strategy!r}: {err}; use strategy='group' to keep groups together") from None
            warnings.warn(f"strategy={strategy!r} keeps a leaky split (allow_leakage=True): {err}", stacklevel=2)
    return sorted(split.index[split == train_split]), sorted(split.index[split == val_split])


def group_kfold(
    groups: pd.Series, k: int = 5, seed: int = 0, strata: pd.Series | None = None
) -> pd.Series:
    """``ImageId -> fold`` (0..k-1) with every group in exactly one fold.

    Shuffled, seeded ``GroupKFold``; with ``strata`` (ImageId -> label, e.g.
    :func:`class_combinations`) ``StratifiedGroupKFold`` instead, labels held by fewer
    than ``k`` images pooled into :data:`RARE_STRATUM`. Needs at least ``k`` groups.
    Fold ``i``'s validation images are ``folds.index[folds == i]``.
    """
    seed = checks.seed("seed", seed)
    k = checks.integer("k", k, low=2)
    groups = _series("groups", groups)
    n_groups = groups.nunique()
    if n_groups < k:
        raise ValueError(f"k={k} folds need at least k groups, got {n_groups}")
    if strata is None:
        splitter = GroupKFold(n_splits=int(k), shuffle=True, random_state=seed)
        labels = np.zeros(len(groups), dtype=int)
    else:
        strata = _series("strata", strata)
        missing = groups.index.difference(strata.index)
        if len(missing):
            raise ValueError(f"{len(missing)} ImageId(s) have no stratum, e.g. {list(missing[:3])}")
        labels = merge_rare(strata.reindex(groups.index), int(k)).to_numpy()
        splitter = StratifiedGroupKFold(n_splits=int(k), shuffle=True, random_state=seed)
    folds = pd.Series(-1, index=groups.index, name="fold", dtype=int)
    for fold, (_, val_rows) in enumerate(splitter.split(np.zeros(len(groups)), labels, groups.to_numpy())):
        folds.iloc[val_rows] = fold
    check_groups(folds.astype(str), groups)
    return folds
