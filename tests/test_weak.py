"""Tests of helpers.studies.weak: pseudo-masks from CAMs (per class from a toy classifier's Grad-CAM) and
pseudo-labelled datasets (training images carry the pseudo-masks, validation images their true masks)."""

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


# ------------------------------------------------------------------ pseudo-masks
def test_pseudo_masks_threshold_area_and_image_labels():
    cams = np.zeros((2, 6, 6))
    cams[:, 0:3, 0:3] = 0.8  # 9 px
    cams[:, 5, 5] = 0.9  # 1 px
    cams[:, 3, 3] = 0.5  # exactly the threshold: not kept (cam > threshold)
    masks = weak.pseudo_masks(cams, threshold=0.5, min_area=2, image_labels=[1, 0])
    assert masks.shape == (2, 6, 6) and masks.dtype == np.uint8
    assert masks[0].sum() == 9 and masks[0, 0:3, 0:3].all() and not masks[1].any()
    assert weak.pseudo_masks(cams, threshold=0.5)[0].sum() == 10
    assert weak.pseudo_masks(cams, threshold=0.85)[0].sum() == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"threshold": 1.5}, "threshold must be in \\[0, 1\\]"),
        ({"min_area": -1}, "min_area must be an integer >= 0"),
        ({"image_labels": [1, 0, 1]}, "image_labels must be \\(N,\\) = \\(2,\\)"),
    ],
)
def test_pseudo_mask_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        weak.pseudo_masks(np.zeros((2, 4, 4)), **kwargs)


@pytest.fixture(scope="module")
def toy_classifier():
    """16x16 grey 0/1 images -> softmax of logits 10 * bright, 10 * dark, -(bright + dark) (pooled 1x1 features).

    The Grad-CAM of class 0 is exactly the bright pixels, of class 1 the dark ones, of class 2 all zeros
    (the toy CNN of ``test_explain.py``).
    """
    from helpers.backend import keras

    features = keras.layers.Conv2D(2, 1, activation="relu", name="features")
    head = keras.layers.Dense(3, activation="softmax", name="head")
    model = keras.Sequential([keras.Input((16, 16, 1)), features, keras.layers.GlobalAveragePooling2D(), head])
    features.set_weights([np.array([1.0, -1.0], np.float32).reshape(1, 1, 1, 2), np.array([-0.5, 0.5], np.float32)])
    head.set_weights([np.array([[10, 0, -1], [0, 10, -1]], np.float32), np.zeros(3, np.float32)])
    return model


def _squares() -> np.ndarray:
    """Two toy images ``(2, 16, 16, 1)``: a 12x12 bright square and a 4x4 one."""
    x = np.zeros((2, 16, 16, 1), np.float32)
    x[0, 2:14, 3:15] = 1
    x[1, 4:8, 9:13] = 1
    return x


def test_class_pseudo_masks_follow_the_image_labels(toy_classifier):
    images = _squares()
    square = images[..., 0].astype(np.uint8)
    masks = weak.class_pseudo_masks(toy_classifier, images, [[1, 0, 0], [1, 1, 0]], threshold=0.5)
    assert masks.shape == (2, 16, 16, 3) and masks.dtype == np.uint8
    np.testing.assert_array_equal(masks[..., 0], square)  # class 0 (bright) in both images: the squares
    np.testing.assert_array_equal(masks[0, ..., 1], 0)  # class 1 not in image 0's label: empty
    np.testing.assert_array_equal(masks[1, ..., 1], 1 - square[1])  # class 1 (dark): the rest of image 1
    assert not masks[..., 2].any()


def test_class_pseudo_masks_need_one_label_per_output(toy_classifier):
    with pytest.raises(ValueError, match=r"labels must be \(N, K\) = \(2, 3\)"):
        weak.class_pseudo_masks(toy_classifier, _squares(), [[1, 0], [0, 1]])
