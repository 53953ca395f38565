"""Tests of helpers.data.synth.steel: the built-in deterministic Severstal-format steel dataset."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers.core import files, rle, severstal
from helpers.data.synth import steel

HEIGHT, WIDTH = 64, 400


def _make(out_dir: Path, **kwargs) -> pd.DataFrame:
    arguments = dict(n_images=30, height=HEIGHT, width=WIDTH, seed=0, progress=False) | kwargs
    return steel.make_steel_dataset(out_dir, **arguments)


def _folder_bytes(out_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out_dir)): p.read_bytes() for p in sorted(out_dir.rglob("*")) if p.is_file()}


def _present(table: pd.DataFrame) -> pd.DataFrame:
    return table[severstal.class_columns(table)].ne("")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """A moderately sized run (200 images of 64x400), generated once."""
    out_dir = tmp_path_factory.mktemp("synth") / "steel"
    return out_dir, _make(out_dir, n_images=200)


@pytest.fixture(scope="module")
def defects(dataset) -> dict[int, list[tuple[np.ndarray, np.ndarray]]]:
    """``{class_id: [(grey (H, W), bool mask (H, W)), ...]}`` read back from disk."""
    out_dir, table = dataset
    found: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {c: [] for c in steel.CLASS_NAMES}
    for image_id, row in table.iterrows():
        grey = files.read_grey(out_dir / "train_images" / image_id)
        masks = severstal.decode_masks(row)
        for k, class_id in enumerate(severstal.class_columns(table)):
            if masks[..., k].any():
                found[class_id].append((grey, masks[..., k] > 0))
    return found


# --------------------------------------------------------------------------- files and table


def test_reads_back_as_returned(dataset):
    out_dir, table = dataset
    pd.testing.assert_frame_equal(severstal.read_dataset(out_dir), table)
    assert severstal.read_classes(out_dir) == steel.CLASS_NAMES
    assert list(table.columns) == [1, 2, 3, 4, "Height", "Width"]
    assert (table["Height"] == HEIGHT).all() and (table["Width"] == WIDTH).all()


def test_train_csv_is_kaggle_final_layout(dataset):
    out_dir, table = dataset
    text = (out_dir / "train.csv").read_text()
    assert text.splitlines()[0] == "ImageId,ClassId,EncodedPixels"
    long = pd.read_csv(out_dir / "train.csv", dtype=str, keep_default_na=False)
    present = _present(table)
    assert len(long) == int(present.to_numpy().sum())  # one row per defect
    assert (long["EncodedPixels"] != "").all()
    defect_free = set(present.index[~present.any(axis=1)])
    assert defect_free and defect_free.isdisjoint(long["ImageId"])


def test_image_ids_and_files(dataset):
    out_dir, table = dataset
    assert all(re.fullmatch(r"[0-9a-f]{9}\.jpg", name) for name in table.index)
    assert table.index.is_unique
    assert [p.name for p in files.list_images(out_dir / "train_images")] == list(table.index)
    with Image.open(out_dir / "train_images" / table.index[0]) as image:
        assert image.format == "JPEG" and image.mode == "RGB" and image.size == (WIDTH, HEIGHT)
        rgb = np.asarray(image)
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()


def test_masks_non_empty_and_inside_the_image(dataset):
    _, table = dataset
    for image_id, row in table.iterrows():
        masks = severstal.decode_masks(row)  # raises if a run leaves the image
        assert masks.shape == (HEIGHT, WIDTH, 4)
        for k, class_id in enumerate(severstal.class_columns(table)):
            assert bool(row[class_id]) == bool(masks[..., k].any()), (image_id, class_id)
            assert rle.encode(masks[..., k]) == row[class_id]


# --------------------------------------------------------------------------- determinism


def test_same_arguments_give_identical_bytes(tmp_path):
    first, second = _make(tmp_path / "a"), _make(tmp_path / "b")
    pd.testing.assert_frame_equal(first, second)
    written = _folder_bytes(tmp_path / "a")
    assert len(written) == 30 + 2
    assert written == _folder_bytes(tmp_path / "b")


def test_other_seed_gives_other_dataset(tmp_path):
    first, other = _make(tmp_path / "a", seed=0), _make(tmp_path / "b", seed=1)
    assert set(first.index).isdisjoint(other.index)
    assert (tmp_path / "a" / "train.csv").read_bytes() != (tmp_path / "b" / "train.csv").read_bytes()


def test_plan_of_a_longer_run_extends_a_shorter_one():
    assert steel.plan_classes(100, seed=3)[:40] == steel.plan_classes(40, seed=3)
    assert steel.image_id(3, 7) == steel.image_id(3, 7) != steel.image_id(4, 7)


# --------------------------------------------------------------------------- class balance


@pytest.mark.parametrize(
    "n_images, min_per_class, seed",
    [(4, 1, 0), (8, 2, 0), (8, 2, 5), (12, 3, 1), (10, 5, 2), (30, 2, 0)],
)
def test_every_class_at_least_min_images(tmp_path, n_images, min_per_class, seed):
    table = _make(tmp_path, n_images=n_images, min_images_per_class=min_per_class, seed=seed)
    counts = _present(table).sum()
    assert (counts >= min_per_class).all(), counts.to_dict()
    assert (_present(table).sum(axis=1) <= 2).all()


@pytest.mark.parametrize("n_images, min_per_class, seed", [(50, 0, 0), (200, 4, 1), (9, 4, 3), (400, 0, 7)])
def test_plan_meets_minimum(n_images, min_per_class, seed):
    plan = steel.plan_classes(n_images, seed, min_per_class)
    assert len(plan) == n_images
    for class_id in steel.CLASS_NAMES:
        assert sum(class_id in labels for labels in plan) >= min_per_class
    assert all(len(labels) <= 2 and list(labels) == sorted(set(labels)) for labels in plan)


def test_severstal_like_imbalance(dataset):
    _, table = dataset
    present = _present(table)
    counts = present.sum()
    assert counts.idxmax() == 3
    assert counts[3] > 2 * counts.drop(3).max()
    assert 0.3 < (~present.any(axis=1)).mean() < 0.6
    assert (present.sum(axis=1) == 2).sum() >= 1


# --------------------------------------------------------------------------- looks


def test_holes_are_very_dark(defects):
    for grey, mask in defects[4]:
        assert grey[mask].mean() < 0.6 * np.median(grey)


def test_scratches_are_thin_and_long(defects):
    rendered = [steel.render_image(np.random.default_rng([0, 5, i]), HEIGHT, WIDTH, (2,))[1][2] for i in range(20)]
    assert defects[2]
    for mask in [mask for _, mask in defects[2]] + rendered:
        mask = mask.astype(np.uint8)
        # Thin: a 1-3 px line dilated by 1 px is <= 5 px wide; two crossing lines a little more.
        assert cv2.distanceTransform(mask, cv2.DIST_L2, 5).max() <= 6.0
        _, _, stats, _ = cv2.connectedComponentsWithStats(mask)
        assert stats[1:, 2:4].max() >= 0.5 * HEIGHT  # long
        assert mask.sum() < 0.25 * mask.size


def test_pits_are_small_clusters_of_strong_dots(defects):
    assert defects[1]
    for grey, mask in defects[1]:
        assert mask.mean() < 0.05
        assert np.abs(grey[mask].astype(float) - np.median(grey)).max() > 40


def test_patches_have_the_largest_masks(defects):
    mean_area = {c: np.mean([mask.sum() for _, mask in found]) for c, found in defects.items()}
    assert mean_area[3] == max(mean_area.values())
    assert mean_area[3] > 3 * mean_area[1]
    assert mean_area[4] > mean_area[1]


@pytest.mark.parametrize("draw", [steel.draw_pits, steel.draw_scratches, steel.draw_patches, steel.draw_holes])
@pytest.mark.parametrize("shape, columns", [((64, 400), (0, 400)), ((128, 800), (100, 700)), ((256, 1600), (0, 1300))])
def test_mask_covers_everything_drawn(draw, shape, columns):
    for seed in range(3):
        image = np.full(shape, 100.0, dtype=np.float32)
        mask = draw(np.random.default_rng([seed, 99]), image, columns)
        assert mask.shape == shape and mask.dtype == bool and mask.any()
        changed = image != 100.0
        assert changed.any() and not (changed & ~mask).any()
        assert not mask[:, : max(columns[0] - 6, 0)].any()


@pytest.mark.parametrize("shape", [(64, 400), (128, 800), (32, 32)])
@pytest.mark.parametrize("classes", [(3, 4), (1, 3), (1, 2), (2, 3)])
def test_two_classes_lie_side_by_side(shape, classes):
    for index in range(4):
        _, masks = steel.render_image(np.random.default_rng([1, 0, index]), *shape, classes)
        first, second = (masks[c] for c in classes)
        assert first.any() and second.any() and not (first & second).any()


def test_edge_band_and_masks_stay_on_the_strip():
    found = 0
    for index in range(60):
        grey, masks = steel.render_image(np.random.default_rng([0, 0, index]), HEIGHT, WIDTH, (3,))
        columns_mean = grey.mean(axis=0)
        for side in (slice(0, 4), slice(WIDTH - 4, WIDTH)):
            if columns_mean[side].mean() < 25:  # black background past the strip edge
                found += 1
                assert not masks[3][:, side].any()
    assert found >= 1


# --------------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n_images": 0}, r"n_images must be an integer >= 1"),
        ({"n_images": 2.5}, r"n_images must be an integer >= 1"),
        ({"n_images": True}, r"n_images must be an integer >= 1"),
        ({"height": 16}, rf"height must be an integer >= {steel.MIN_HEIGHT}"),
        ({"width": 8}, rf"width must be an integer >= {steel.MIN_WIDTH}"),
        ({"jpeg_quality": 0}, r"jpeg_quality must be an integer in 1\.\.100"),
        ({"jpeg_quality": 101}, r"jpeg_quality must be an integer in 1\.\.100"),
        ({"seed": -1}, r"seed must be an integer >= 0"),
        ({"min_images_per_class": -1}, r"min_images_per_class must be an integer in 0\.\.15"),
        ({"n_images": 5, "min_images_per_class": 3}, r"min_images_per_class must be an integer in 0\.\.2"),
    ],
)
def test_bad_arguments_raise(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        _make(tmp_path, **kwargs)
    assert not (tmp_path / "train.csv").exists()


def test_refuses_to_mix_with_other_images(tmp_path):
    files.write_image(tmp_path / "train_images" / "000000000.jpg", np.zeros((HEIGHT, WIDTH), np.uint8))
    with pytest.raises(FileExistsError, match="000000000.jpg"):
        _make(tmp_path, n_images=4, min_images_per_class=0)


def test_overwrite_replaces_another_dataset(tmp_path):
    files.write_image(tmp_path / "train_images" / "000000000.jpg", np.zeros((HEIGHT, WIDTH), np.uint8))
    (tmp_path / "splits.csv").write_text("ImageId,split,group\n000000000.jpg,train,a\n")
    table = _make(tmp_path, n_images=4, min_images_per_class=0, overwrite=True)
    assert sorted(p.name for p in (tmp_path / "train_images").iterdir()) == sorted(table.index)
    assert not (tmp_path / "splits.csv").exists()


def test_regenerating_in_place_is_allowed(tmp_path):
    first = _make(tmp_path, n_images=6)
    pd.testing.assert_frame_equal(_make(tmp_path, n_images=6), first)


def test_progress_bar(tmp_path, capsys):
    _make(tmp_path, n_images=3, min_images_per_class=0, progress=True)
    assert "synthetic steel" in capsys.readouterr().err


KILLED_GENERATION = """
import os, signal, sys
from helpers.core import files
from helpers.data.synth import steel
written = []
real_write = files.write_image
def write_then_die(path, array, quality=90):
    real_write(path, array, quality=quality)
    written.append(path)
    if len(written) == 3:
        os.kill(os.getpid(), signal.SIGKILL)
files.write_image = write_then_die
steel.make_steel_dataset(sys.argv[1], n_images=6, height=64, width=160, seed=1, overwrite=True, progress=False)
"""


def test_a_killed_regeneration_leaves_the_old_dataset_whole(tmp_path):
    """Before: the first images of the new dataset sat beside the old train.csv, and read back without error."""
    import subprocess
    import sys

    out = tmp_path / "steel"
    old = steel.make_steel_dataset(out, n_images=4, height=64, width=128, seed=0, progress=False)
    before = {p.name: p.read_bytes() for p in (out / "train_images").iterdir()}
    done = subprocess.run([sys.executable, "-c", KILLED_GENERATION, str(out)], timeout=120,
                          cwd=Path(__file__).resolve().parents[1], capture_output=True)
    assert done.returncode == -9, done.stderr.decode()[-400:]
    pd.testing.assert_frame_equal(severstal.read_dataset(out), old)
    assert {p.name: p.read_bytes() for p in (out / "train_images").iterdir()} == before
    new = steel.make_steel_dataset(out, n_images=6, height=64, width=160, seed=1, overwrite=True, progress=False)
    pd.testing.assert_frame_equal(severstal.read_dataset(out), new)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["steel"]
