"""Duplicate and split-leakage audit, on tiny hand-made folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers.core import files
from helpers.data import audit


def save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
    return path


def pattern(offset: int, shape: tuple[int, int] = (8, 10)) -> np.ndarray:
    return ((np.arange(shape[0] * shape[1]).reshape(shape) * 3 + offset) % 256).astype(np.uint8)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """a = b (copy), c = d (copy); e and f: same byte size, other pixels; sub/g = a."""
    root = tmp_path / "images"
    save(root / "a.png", pattern(0))
    shutil.copyfile(root / "a.png", root / "b.png")
    save(root / "c.png", pattern(50))
    shutil.copyfile(root / "c.png", root / "d.png")
    e = np.zeros((8, 10), np.uint8)
    save(root / "e.bmp", e)
    f = e.copy()
    f[0, 0] = 1
    save(root / "f.bmp", f)
    assert (root / "e.bmp").stat().st_size == (root / "f.bmp").stat().st_size
    (root / "notes.txt").write_text("not an image")
    shutil.copyfile(root / "a.png", save(root / "sub" / "g.png", pattern(0)))
    return root


def test_find_duplicates_in_a_folder(folder):
    table = audit.find_duplicates(folder, progress=False)
    assert list(table.columns) == ["hash", "group_size", "file"]
    hash_a, hash_c = files.content_hash(folder / "a.png"), files.content_hash(folder / "c.png")
    expected = sorted([(hash_a, 2, "a.png"), (hash_a, 2, "b.png"), (hash_c, 2, "c.png"), (hash_c, 2, "d.png")])
    assert list(table.itertuples(index=False, name=None)) == expected
    assert table["group_size"].dtype == np.int64


def test_find_duplicates_recursive_and_path_list(folder):
    table = audit.find_duplicates(folder, recursive=True, progress=False)
    groups = sorted(table.groupby("hash")["file"].apply(list).tolist())
    assert groups == [["a.png", "b.png", "sub/g.png"], ["c.png", "d.png"]]
    assert sorted(table["group_size"].tolist()) == [2, 2, 3, 3, 3]
    listed = audit.find_duplicates([folder / "a.png", folder / "sub" / "g.png", folder / "e.bmp"], progress=False)
    assert sorted(listed["file"]) == [str(folder / "a.png"), str(folder / "sub" / "g.png")]


@pytest.mark.parametrize("names", [["e.bmp", "f.bmp"], ["a.png"], []])
def test_find_duplicates_empty_when_unique(folder, names):
    table = audit.find_duplicates([folder / n for n in names], progress=False)
    assert table.empty and list(table.columns) == ["hash", "group_size", "file"]


def test_find_duplicates_missing_source(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere"):
        audit.find_duplicates(tmp_path / "nothere")
    with pytest.raises(FileNotFoundError, match="gone.png"):
        audit.find_duplicates([tmp_path / "gone.png"])


@pytest.mark.parametrize(
    "rows, expected",
    [
        ([("x1", "train", "x"), ("x2", "train", "x"), ("y1", "val", "y")], []),
        ([("x1", "train", "x"), ("x2", "val", "x"), ("y1", "val", "y")], [("x", 2, "train,val", 2)]),
        (
            [
                ("a", "val", "g2"),
                ("b", "train", "g2"),
                ("c", "test", "g2"),
                ("d", "train", "g1"),
                ("e", "test", "g1"),
                ("f", "val", "g3"),
            ],
            [("g1", 2, "test,train", 2), ("g2", 3, "test,train,val", 3)],
        ),
        ([], []),
    ],
)
def test_check_group_splits(rows, expected):
    splits = pd.DataFrame(rows, columns=["ImageId", "split", "group"]).set_index("ImageId")
    result = audit.check_group_splits(splits)
    assert list(result.columns) == ["group", "n_splits", "splits", "n_images"]
    assert list(result.itertuples(index=False, name=None)) == expected


def test_check_group_splits_needs_columns():
    with pytest.raises(ValueError, match=r"columns \['split', 'group'\], missing \['group'\]"):
        audit.check_group_splits(pd.DataFrame({"split": ["train"]}))


def test_audit_folder_counts(folder):
    result = audit.audit_folder(folder, progress=False)
    assert result == {
        "n_images": 7,
        "n_duplicate_groups": 2,
        "n_duplicate_files": 5,
        "n_redundant_files": 3,
        "duplicate_groups": sorted(
            [["a.png", "b.png", "sub/g.png"], ["c.png", "d.png"]], key=lambda g: files.content_hash(folder / g[0])
        ),
    }
    assert audit.audit_folder(folder, recursive=False, progress=False)["n_images"] == 6
    only_bmp = audit.audit_folder(folder, suffixes=(".bmp",), progress=False)
    assert (only_bmp["n_images"], only_bmp["n_duplicate_groups"]) == (2, 0)


@pytest.mark.parametrize("suffixes", [(".txt",), (), "txt"])
def test_suffixes_must_be_image_types(folder, suffixes):
    with pytest.raises(ValueError, match=r"suffixes must be taken from \['.jpg'"):
        audit.find_duplicates(folder, suffixes=suffixes)


def make_dataset(root: Path, splits: list[tuple[str, str, str]] | None) -> Path:
    """Severstal-layout folder: a = b (bytes), c, d, e distinct."""
    images = root / "train_images"
    for k, name in enumerate(["a", "c", "d", "e"]):
        save(images / f"{name}.png", pattern(20 * k))
    shutil.copyfile(images / "a.png", images / "b.png")
    (root / "train.csv").write_text("ImageId,ClassId,EncodedPixels\na.png,1,1 3\n")
    if splits is not None:
        table = pd.DataFrame(splits, columns=["ImageId", "split", "group"])
        table.to_csv(root / "splits.csv", index=False)
    return root


CLEAN = [
    ("a.png", "train", "a"),
    ("b.png", "train", "a"),
    ("c.png", "train", "c"),
    ("d.png", "val", "d"),
    ("e.png", "val", "e"),
]
LEAKY = [("a.png", "train", "a"), ("b.png", "val", "b"), ("c.png", "train", "cd"), ("d.png", "val", "cd")]


@pytest.mark.parametrize(
    "splits, expected",
    [
        (
            CLEAN,
            {
                "split_sizes": {"train": 3, "val": 2},
                "n_groups": 4,
                "n_groups_spanning_splits": 0,
                "groups_spanning_splits": [],
                "n_duplicate_groups_across_splits": 0, "duplicate_groups_across_splits": [],
                "n_duplicate_groups_across_groups": 0, "n_unsplit_images": 0, "leakage": False,
            },
        ),
        (
            LEAKY,
            {
                "split_sizes": {"train": 2, "val": 2},
                "n_groups": 3,
                "n_groups_spanning_splits": 1,
                "groups_spanning_splits": ["cd"],
                "n_duplicate_groups_across_splits": 1, "duplicate_groups_across_splits": [["a.png", "b.png"]],
                "n_duplicate_groups_across_groups": 1, "n_unsplit_images": 1, "leakage": True,
            },
        ),
    ],
)
def test_audit_dataset(tmp_path, splits, expected):
    result = audit.audit_dataset(make_dataset(tmp_path / "ds", splits), progress=False)
    assert json.loads(json.dumps(result)) == result
    assert {k: result[k] for k in ("n_images", "n_duplicate_groups", "n_duplicate_files", "has_splits")} == {
        "n_images": 5, "n_duplicate_groups": 1, "n_duplicate_files": 2, "has_splits": True,
    }
    assert {k: result[k] for k in expected} == expected


def test_audit_dataset_without_splits(tmp_path):
    result = audit.audit_dataset(make_dataset(tmp_path / "ds", None), progress=False)
    assert result["has_splits"] is False and result["leakage"] is None and result["n_groups_spanning_splits"] is None
    assert result["duplicate_groups"] == [["a.png", "b.png"]]


def test_mask_transform_groups(tmp_path):
    base = np.zeros((6, 6), np.uint8)
    base[0, :3] = 1
    base[4, 5] = 2
    masks = tmp_path / "masks"
    for name, mask in {
        "m1": base, "m2": np.rot90(base), "m3": np.fliplr(base), "m4": base.T, "m5": (base > 0).astype(np.uint8),
        "e1": np.zeros((6, 6), np.uint8), "e2": np.zeros((6, 6), np.uint8),
    }.items():
        save(masks / f"{name}.png", mask)
    assert audit.mask_transform_groups(masks, progress=False) == {"m1": "m1", "m2": "m1", "m3": "m1", "m4": "m1"}
    with pytest.raises(FileNotFoundError, match="nothere"):
        audit.mask_transform_groups(tmp_path / "nothere")
