"""Duplicate and leakage audit of image folders and Severstal-layout datasets.

- :func:`find_duplicates`: exact duplicates (same bytes, SHA-1 of :func:`files.content_hash`);
- :func:`check_group_splits`: groups whose images sit in more than one split;
- :func:`audit_folder`: duplicate counts of a raw source folder (e.g. NEU-Seg ``images/``);
- :func:`audit_dataset`: both checks on a dataset folder, plus duplicates that cross
  splits (leakage), as a JSON-ready dict;
- :func:`mask_transform_groups`: masks that are rotations/flips of each other (a hint
  of augmented copies that byte hashes cannot see, e.g. in NEU-Seg).
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from helpers.core import files, severstal

__all__ = [
    "DUPLICATE_COLUMNS",
    "SPANNING_COLUMNS",
    "audit_dataset",
    "audit_folder",
    "check_group_splits",
    "find_duplicates",
    "mask_transform_groups",
]

DUPLICATE_COLUMNS = ("hash", "group_size", "file")
SPANNING_COLUMNS = ("group", "n_splits", "splits", "n_images")

PathLike = str | os.PathLike


def _suffixes(suffixes: Sequence[str] | None) -> tuple[str, ...]:
    if suffixes is None:
        return files.IMAGE_SUFFIXES
    chosen = (suffixes,) if isinstance(suffixes, str) else tuple(suffixes)
    bad = [s for s in chosen if s.lower() not in files.IMAGE_SUFFIXES]
    if bad or not chosen:
        raise ValueError(f"suffixes must be taken from {list(files.IMAGE_SUFFIXES)}, got {list(chosen)}")
    return tuple(s.lower() for s in chosen)


def _image_paths(
    source: PathLike | Iterable[PathLike], recursive: bool, suffixes: Sequence[str] | None = None
) -> tuple[list[Path], Path | None]:
    wanted = _suffixes(suffixes)
    if isinstance(source, (str, os.PathLike)):
        folder = Path(source)
        if not folder.is_dir():
            raise FileNotFoundError(f"image folder not found: {folder}")
        if not recursive:
            return [p for p in files.list_images(folder) if p.suffix.lower() in wanted], folder
        found = (p for p in folder.rglob("*") if p.suffix.lower() in wanted and p.is_file())
        return sorted(found), folder
    paths = [Path(p) for p in source]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} file(s) not found, e.g. {[str(p) for p in missing[:3]]}")
    return paths, None


def find_duplicates(
    source: PathLike | Iterable[PathLike],
    recursive: bool = False,
    suffixes: Sequence[str] | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Exact-duplicate image files, one row per file of each duplicate group.

    ``source``: a folder (its images; with ``recursive`` also those of sub-folders;
    ``suffixes`` e.g. ``(".jpg",)`` keeps only those file types, default all image
    types) or an iterable of file paths (taken as given). Columns ``hash`` (SHA-1), ``group_size`` (files with that
    hash) and ``file`` (path relative to the folder, posix-style; the path as given for
    an iterable), sorted by hash then file. No duplicates: an empty frame with these
    columns. Only files of equal byte size are hashed.
    """
    paths, folder = _image_paths(source, recursive, suffixes)
    by_size: dict[int, list[Path]] = defaultdict(list)
    for path in paths:
        by_size[path.stat().st_size].append(path)
    candidates = [p for same in by_size.values() if len(same) > 1 for p in same]
    by_hash: dict[str, list[Path]] = defaultdict(list)
    for path in tqdm(candidates, desc="hash", unit="file", disable=not progress):
        by_hash[files.content_hash(path)].append(path)
    rows = [
        (digest, len(group), path.relative_to(folder).as_posix() if folder is not None else str(path))
        for digest, group in by_hash.items()
        if len(group) > 1
        for path in group
    ]
    table = pd.DataFrame(rows, columns=list(DUPLICATE_COLUMNS))
    table["group_size"] = table["group_size"].astype("int64")
    return table.sort_values(["hash", "file"]).reset_index(drop=True)


def check_group_splits(splits: pd.DataFrame) -> pd.DataFrame:
    """Groups whose images are in more than one split (empty frame = no group leakage).

    ``splits``: one row per image with columns ``split`` and ``group`` (as
    :func:`severstal.read_splits` returns). Result columns ``group``, ``n_splits``,
    ``splits`` (sorted, comma-joined) and ``n_images``, sorted by group.
    """
    missing = {"split", "group"} - set(splits.columns)
    if missing:
        raise ValueError(
            f"splits needs the columns ['split', 'group'], missing {sorted(missing)}; got {list(splits.columns)}"
        )
    table = splits[["split", "group"]].astype(str)
    per_group = table.groupby("group", sort=True).agg(
        n_splits=("split", "nunique"), splits=("split", lambda s: ",".join(sorted(set(s)))), n_images=("split", "size")
    )
    spanning = per_group[per_group["n_splits"] > 1].reset_index()
    spanning = spanning.astype({"n_splits": "int64", "n_images": "int64"})
    return spanning[list(SPANNING_COLUMNS)].reset_index(drop=True)


def _duplicate_groups(duplicates: pd.DataFrame) -> list[list[str]]:
    return [sorted(group["file"].tolist()) for _, group in duplicates.groupby("hash", sort=True)]


def audit_folder(
    folder: PathLike, recursive: bool = True, suffixes: Sequence[str] | None = None, progress: bool = True
) -> dict:
    """Duplicate audit of a raw source folder (JSON-ready); arguments as in :func:`find_duplicates`.

    Pass ``suffixes`` to leave masks out when they sit next to the images (e.g.
    Magnetic-tile: ``(".jpg",)``; its empty ``.png`` masks are byte-identical). Keys: ``n_images``, ``n_duplicate_groups``, ``n_duplicate_files`` (files in such
    groups), ``n_redundant_files`` (files beyond the first of each group) and
    ``duplicate_groups`` (lists of relative paths).
    """
    paths, _ = _image_paths(folder, recursive, suffixes)
    duplicates = find_duplicates(folder, recursive=recursive, suffixes=suffixes, progress=progress)
    groups = _duplicate_groups(duplicates)
    return {
        "n_images": len(paths),
        "n_duplicate_groups": len(groups),
        "n_duplicate_files": int(len(duplicates)),
        "n_redundant_files": int(len(duplicates) - len(groups)),
        "duplicate_groups": groups,
    }


def audit_dataset(dataset_dir: PathLike, progress: bool = True) -> dict:
    """Duplicate and split-leakage audit of a Severstal-layout folder (JSON-ready).

    Adds to :func:`audit_folder`'s keys (over ``train_images/``): ``has_splits``;
    ``split_sizes`` (``{split: n_images}``); ``n_groups`` and ``n_groups_spanning_splits`` /
    ``groups_spanning_splits`` (from ``splits.csv``); ``n_duplicate_groups_across_splits`` /
    ``duplicate_groups_across_splits`` (same bytes in two splits = leakage) and
    ``n_duplicate_groups_across_groups`` (same bytes under two group ids); ``n_unsplit_images``
    (images missing from ``splits.csv``); ``leakage`` (any spanning group or cross-split
    duplicate). Split-dependent keys are ``None`` without ``splits.csv``.
    """
    dataset_dir = Path(dataset_dir)
    images_dir = dataset_dir / "train_images"
    result = audit_folder(images_dir, recursive=False, progress=progress)
    names = [p.name for p in files.list_images(images_dir)]
    has_splits = (dataset_dir / "splits.csv").is_file()
    result["has_splits"] = has_splits
    keys = (
        "split_sizes",
        "n_groups",
        "n_groups_spanning_splits",
        "groups_spanning_splits",
        "n_duplicate_groups_across_splits",
        "duplicate_groups_across_splits",
        "n_duplicate_groups_across_groups",
        "n_unsplit_images",
        "leakage",
    )
    if not has_splits:
        result.update(dict.fromkeys(keys))
        return result
    splits = severstal.read_splits(dataset_dir)
    spanning = check_group_splits(splits)
    split_of, group_of = splits["split"].to_dict(), splits["group"].to_dict()
    across_splits = [g for g in result["duplicate_groups"] if len({split_of[f] for f in g if f in split_of}) > 1]
    across_groups = [g for g in result["duplicate_groups"] if len({group_of.get(f, f) for f in g}) > 1]
    result.update(
        split_sizes={str(k): int(v) for k, v in splits["split"].value_counts().sort_index().items()},
        n_groups=int(splits["group"].nunique()),
        n_groups_spanning_splits=int(len(spanning)),
        groups_spanning_splits=spanning["group"].tolist(),
        n_duplicate_groups_across_splits=len(across_splits),
        duplicate_groups_across_splits=across_splits,
        n_duplicate_groups_across_groups=len(across_groups),
        n_unsplit_images=len(set(names) - set(split_of)),
        leakage=bool(len(spanning) or across_splits),
    )
    return result


def _dihedral_key(mask: np.ndarray) -> str:
    forms = [np.rot90(mask, k) for k in range(4)] + [np.rot90(mask.T, k) for k in range(4)]
    return min(
        hashlib.sha1(f"{f.shape}".encode() + np.ascontiguousarray(f).tobytes()).hexdigest() for f in forms
    )


def mask_transform_groups(masks_dir: PathLike, mask_suffix: str = ".png", progress: bool = True) -> dict[str, str]:
    """``{mask stem: group id}`` for non-empty masks equal up to a rotation/flip (8 forms).

    Only stems in groups of two or more are returned; the group id is the smallest stem.
    Equal masks strongly suggest augmented copies of one image (check a few images);
    empty masks are never grouped. The result fits ``convert_neu_seg(groups=...)``.
    """
    masks_dir = Path(masks_dir)
    if not masks_dir.is_dir():
        raise FileNotFoundError(f"mask folder not found: {masks_dir}")
    paths = sorted(masks_dir.glob(f"*{mask_suffix}"))
    by_key: dict[str, list[str]] = defaultdict(list)
    for path in tqdm(paths, desc="mask forms", unit="mask", disable=not progress):
        labels, _ = files.read_label_image(path)
        if labels.any():
            by_key[_dihedral_key(labels)].append(path.stem)
    return {stem: min(stems) for stems in by_key.values() if len(stems) > 1 for stem in stems}
