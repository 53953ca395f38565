"""Synthetic weld radiographs: deterministic, defects darker than their surroundings, tiled by radiograph."""

import numpy as np
import pytest
import cv2

from helpers.core import files, severstal
from helpers.data.synth import weld


def test_render_is_deterministic_and_seed_dependent():
    first = weld.render_radiograph(np.random.default_rng([0, 1]), 128, 512)
    again = weld.render_radiograph(np.random.default_rng([0, 1]), 128, 512)
    other = weld.render_radiograph(np.random.default_rng([0, 2]), 128, 512)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_defects_are_darker_than_the_seam_around_them(seed):
    image, mask = weld.render_radiograph(np.random.default_rng(seed), 256, 1024, defects_per_1000px=8.0)
    assert image.dtype == np.uint8 and mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}
    ring = cv2.dilate(mask, np.ones((9, 9), np.uint8)).astype(bool) & ~mask.astype(bool)
    assert image[mask.astype(bool)].mean() < image[ring].mean()


def test_no_defects_means_an_empty_mask():
    _, mask = weld.render_radiograph(np.random.default_rng(0), 128, 256, defects_per_1000px=0.0)
    assert not mask.any()


def test_dataset_is_tiled_and_split_by_radiograph(tmp_path):
    wide = weld.make_weld_dataset(tmp_path / "welds", n_radiographs=4, height=128, width=512, tile=128,
                                        seed=3, progress=False)
    assert len(wide) == 4 * 4 and set(wide["Height"]) == {128} and set(wide["Width"]) == {128}
    assert severstal.read_classes(tmp_path / "welds") == {1: "defect"}
    splits = severstal.read_splits(tmp_path / "welds")
    assert splits.groupby("group")["split"].nunique().max() == 1 and set(splits["split"]) == {"train", "val"}
    again = weld.make_weld_dataset(tmp_path / "again", n_radiographs=4, height=128, width=512, tile=128,
                                         seed=3, progress=False)
    for image_id in wide.index:
        assert files.content_hash(tmp_path / "welds" / "train_images" / image_id) == \
            files.content_hash(tmp_path / "again" / "train_images" / image_id)


@pytest.mark.parametrize("kwargs", [{"n_radiographs": 0}, {"height": 32}, {"width": 64}, {"seed": -1}, {"defects_per_1000px": -1}])
def test_dataset_refuses_bad_arguments(tmp_path, kwargs):
    with pytest.raises(ValueError):
        weld.make_weld_dataset(tmp_path, **{"n_radiographs": 1, "height": 128, "width": 256, **kwargs})
