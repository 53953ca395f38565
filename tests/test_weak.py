"""Pseudo-labelled datasets: training images carry the pseudo-masks, validation images their true masks."""

import numpy as np
import pandas as pd
import pytest

from helpers.core import files, rle, severstal
from helpers.studies import weak


@pytest.fixture
def source(tmp_path):
    """4 images 6x8 with two classes; b.png has defects of both classes."""
    root = tmp_path / "source"
    masks = {name: np.zeros((6, 8, 2), np.uint8) for name in ("a.png", "b.png", "c.png", "d.png")}
    masks["b.png"][1:3, 1:3, 0] = 1
    masks["b.png"][4:6, 5:8, 1] = 1
    masks["c.png"][0:2, 0:8, 1] = 1
    for name in masks:
        files.write_image(root / "train_images" / name, np.full((6, 8), 40, np.uint8))
    wide = pd.DataFrame({k + 1: {n: rle.encode(m[..., k]) for n, m in masks.items()} for k in range(2)}).rename_axis("ImageId")
    severstal.write_train_csv(wide, root / "train.csv")
    severstal.write_classes(root, {1: "pits", 2: "scratches"})
    return root, masks


def test_pseudo_and_true_masks_land_in_their_splits(source, tmp_path):
    root, masks = source
    pseudo = np.zeros((6, 8), np.uint8)
    pseudo[2:4, 2:6] = 1
    wide = weak.pseudo_label_dataset(root, tmp_path / "weak", {"a.png": pseudo, "c.png": np.zeros((6, 8))}, ["b.png"])
    assert list(wide.index) == ["a.png", "b.png", "c.png"] and severstal.read_classes(tmp_path / "weak") == {1: "defect"}
    np.testing.assert_array_equal(severstal.decode_masks(wide.loc["a.png"])[..., 0], pseudo)
    assert not severstal.decode_masks(wide.loc["c.png"]).any()  # its true scratch is replaced by the (empty) pseudo-mask
    np.testing.assert_array_equal(severstal.decode_masks(wide.loc["b.png"])[..., 0], masks["b.png"].max(axis=-1))
    assert severstal.read_splits(tmp_path / "weak")["split"].to_dict() == {"a.png": "train", "b.png": "val", "c.png": "train"}
    assert files.content_hash(tmp_path / "weak" / "train_images" / "b.png") == files.content_hash(root / "train_images" / "b.png")


@pytest.mark.parametrize("pseudo, true_ids, message", [
    ({"a.png": np.zeros((6, 8))}, ["a.png"], "both pseudo-labelled and validation"),
    ({"z.png": np.zeros((6, 8))}, ["b.png"], "not in"),
    ({"a.png": np.zeros((8, 6))}, ["b.png"], r"pseudo-mask of a.png is \(8, 6\)"),
])
def test_pseudo_label_dataset_refuses_inconsistent_inputs(source, tmp_path, pseudo, true_ids, message):
    root, _ = source
    with pytest.raises(ValueError, match=message):
        weak.pseudo_label_dataset(root, tmp_path / "weak", pseudo, true_ids)
