"""Converters into the Severstal layout, on tiny hand-made fixtures."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers.core import rle, severstal
from helpers.data import audit, convert

# ----------------------------------------------------------------------------- fixture builders


def grey(height: int, width: int, offset: int = 0) -> np.ndarray:
    """A fixed uint8 (H, W) pattern."""
    return ((np.arange(height * width).reshape(height, width) * 7 + offset) % 256).astype(np.uint8)


def save(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    (image.convert(mode) if mode else image).save(path)
    return path


def label_mask(shape: tuple[int, int], pixels: dict[tuple[int, int], int]) -> np.ndarray:
    mask = np.zeros(shape, dtype=np.uint8)
    for (y, x), value in pixels.items():
        mask[y, x] = value
    return mask


def train_rows(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "train.csv", dtype={"ImageId": str}, keep_default_na=False)


def decoded(out: Path) -> dict[tuple[str, int], np.ndarray]:
    """``{(ImageId, ClassId): mask}`` straight from train.csv (sizes from the images)."""
    masks = {}
    for row in train_rows(out).itertuples():
        with Image.open(out / "train_images" / row.ImageId) as image:
            width, height = image.size
        masks[(row.ImageId, int(row.ClassId))] = rle.decode(row.EncodedPixels, (height, width))
    return masks


# index-mask fixture: three 8x10 images; b is defect-free
SHAPE = (8, 10)
BLOCK = {(y, x): 3 for y in range(2, 5) for x in range(3, 7)}
INDEX_MASKS = {
    "a": label_mask(SHAPE, {(0, 0): 1, (1, 0): 1, (7, 9): 2}),
    "b": label_mask(SHAPE, {}),
    "c": label_mask(SHAPE, {**BLOCK, (0, 9): 1}),
}
NAMES = {1: "inclusion", 2: "patches", 3: "scratches"}


@pytest.fixture
def index_src(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    for k, (stem, mask) in enumerate(INDEX_MASKS.items()):
        Image.fromarray(np.stack([grey(*SHAPE, 40 * k)] * 3, axis=-1)).save(_mkdir(src / "images") / f"{stem}.jpg")
        save(src / "masks" / f"{stem}.png", mask)
    return src


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


# ----------------------------------------------------------------------------- pure helpers


@pytest.mark.parametrize(
    "length, tile, stride, expected",
    [
        (50, 16, 16, [0, 16, 32, 34]),
        (50, 16, 12, [0, 12, 24, 34]),
        (20, 16, 16, [0, 4]),
        (20, 16, 12, [0, 4]),
        (48, 16, 16, [0, 16, 32]),
        (16, 16, 16, [0]),
        (10, 16, 16, [0]),
        (5, 1, 1, [0, 1, 2, 3, 4]),
    ],
)
def test_tile_origins_cover_the_axis(length, tile, stride, expected):
    origins = convert.tile_origins(length, tile, stride)
    assert origins == expected
    covered = np.zeros(max(length, tile), dtype=bool)
    for start in origins:
        covered[start : start + tile] = True
    assert covered[:length].all()


@pytest.mark.parametrize(
    "length, tile, stride, message",
    [
        (50, 16, 17, "stride must be in 1..tile=16"),
        (50, 16, 0, "stride must be"),
        (50, 0, 1, "tile must be"),
        (0, 4, 4, "length"),
    ],
)
def test_tile_origins_rejects_bad_arguments(length, tile, stride, message):
    with pytest.raises(ValueError, match=message):
        convert.tile_origins(length, tile, stride)


# ----------------------------------------------------------------------------- index masks


def test_index_masks_round_trip(index_src, tmp_path):
    out = tmp_path / "out"
    splits = {"train": ["a", "b.jpg"], "val": ["c"]}
    table = convert.convert_index_masks(index_src / "images", index_src / "masks", out, NAMES, splits=splits, progress=False)

    masks = decoded(out)
    assert sorted(masks) == [("a.jpg", 1), ("a.jpg", 2), ("c.jpg", 1), ("c.jpg", 3)]
    for (image_id, class_id), mask in masks.items():
        np.testing.assert_array_equal(mask, INDEX_MASKS[image_id[0]] == class_id)
    assert sorted(p.name for p in (out / "train_images").iterdir()) == ["a.jpg", "b.jpg", "c.jpg"]
    assert "b.jpg" not in set(train_rows(out)["ImageId"])
    for stem in INDEX_MASKS:
        assert (out / "train_images" / f"{stem}.jpg").read_bytes() == (index_src / "images" / f"{stem}.jpg").read_bytes()

    assert severstal.read_classes(out) == NAMES
    split_table = severstal.read_splits(out)
    assert split_table.to_dict("index") == {
        "a.jpg": {"split": "train", "group": "a"},
        "b.jpg": {"split": "train", "group": "b"},
        "c.jpg": {"split": "val", "group": "c"},
    }
    pd.testing.assert_frame_equal(table, severstal.read_dataset(out))
    assert table.loc["b.jpg", [1, 2, 3]].tolist() == ["", "", ""]
    assert (table["Height"].tolist(), table["Width"].tolist()) == ([8, 8, 8], [10, 10, 10])
    assert not (out / "train_images.partial").exists()


def test_index_masks_seeded_split_respects_groups(index_src, tmp_path):
    kwargs = dict(class_names=NAMES, groups={"a": "g", "c": "g"}, val_fraction=0.5, seed=1, progress=False)
    convert.convert_index_masks(index_src / "images", index_src / "masks", tmp_path / "one", **kwargs)
    convert.convert_index_masks(index_src / "images", index_src / "masks", tmp_path / "two", **kwargs)
    first, second = severstal.read_splits(tmp_path / "one"), severstal.read_splits(tmp_path / "two")
    pd.testing.assert_frame_equal(first, second)
    assert first["group"].to_dict() == {"a.jpg": "g", "b.jpg": "b", "c.jpg": "g"}
    assert audit.check_group_splits(first).empty
    assert sorted(first["split"].unique()) == ["train", "val"]


def _drop_mask(src: Path) -> None:
    (src / "masks" / "b.png").unlink()


def _wide_mask(src: Path) -> None:
    save(src / "masks" / "c.png", np.zeros((8, 11), np.uint8))


def _unknown_value(src: Path) -> None:
    save(src / "masks" / "c.png", label_mask(SHAPE, {(3, 3): 4, (4, 4): 255}))


def _orphan_mask(src: Path) -> None:
    save(src / "masks" / "z.png", INDEX_MASKS["a"])


def _unchanged(src: Path) -> None:
    pass


@pytest.mark.parametrize(
    "mutate, splits, error, pattern",
    [
        (_drop_mask, None, FileNotFoundError, r"b\.jpg.*expected .*b\.png"),
        (_wide_mask, None, ValueError, r"c\.png is 8x11 but image .*c\.jpg is 8x10"),
        (_unknown_value, None, ValueError, r"c\.png holds values \[4, 255\] outside the allowed classes \[0, 1, 2, 3\]"),
        (_orphan_mask, None, ValueError, r"have no image.*z\.png"),
        (_unchanged, {"train": ["a", "b", "c", "x"]}, ValueError, r"lists 'x'"),
        (_unchanged, {"train": ["a", "b"], "val": ["b", "c"]}, ValueError, r"'b' is listed in two splits"),
        (_unchanged, {"train": ["a", "b"]}, ValueError, r"1 image\(s\) are in no split.*'c'"),
    ],
)
def test_index_masks_errors_name_the_bad_file(index_src, tmp_path, mutate, splits, error, pattern):
    mutate(index_src)
    out = tmp_path / "out"
    with pytest.raises(error, match=pattern):
        convert.convert_index_masks(index_src / "images", index_src / "masks", out, NAMES, splits=splits, progress=False)
    assert not (out / "train_images").exists() and not (out / "train_images.partial").exists()


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"class_names": {1: "x", 3: "y"}}, r"class ids must be 1\.\.C"),
        ({"class_names": {}}, r"class ids must be 1\.\.C"),
        ({"class_names": {1: "x", 2: "x"}}, "distinct"),
        ({"mask_suffix": ".txt"}, r"mask_suffix must be one of \['.jpg'"),
        ({"val_fraction": 1.5}, r"val_fraction must be in \[0, 1\)"),
        ({"splits": {"train": "abc"}}, "must be a list"),
        ({"groups": {"nope": "g"}}, "not images"),
    ],
)
def test_index_masks_reject_bad_arguments(index_src, tmp_path, kwargs, pattern):
    kwargs = {"class_names": NAMES, **kwargs}
    with pytest.raises(ValueError, match=pattern):
        convert.convert_index_masks(index_src / "images", index_src / "masks", tmp_path / "out", progress=False, **kwargs)


def test_existing_output_needs_overwrite(index_src, tmp_path):
    out = tmp_path / "out"
    args = (index_src / "images", index_src / "masks", out, NAMES)
    convert.convert_index_masks(*args, progress=False)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        convert.convert_index_masks(*args, progress=False)
    (index_src / "images" / "c.jpg").unlink()
    (index_src / "masks" / "c.png").unlink()
    table = convert.convert_index_masks(*args, overwrite=True, progress=False)
    assert table.index.tolist() == ["a.jpg", "b.jpg"]
    assert sorted(p.name for p in (out / "train_images").iterdir()) == ["a.jpg", "b.jpg"]


def test_convert_neu_seg_layout(index_src, tmp_path):
    src = tmp_path / "neu"
    shutil.copytree(index_src, src)
    (src / "splits").mkdir()
    (src / "splits" / "train.txt").write_text("a\nc\n")
    (src / "splits" / "val.txt").write_text("b\n")
    table = convert.convert_neu_seg(src, tmp_path / "out", progress=False)
    assert severstal.read_classes(tmp_path / "out") == {1: "inclusion", 2: "patches", 3: "scratches"}
    assert severstal.read_splits(tmp_path / "out")["split"].to_dict() == {"a.jpg": "train", "b.jpg": "val", "c.jpg": "train"}
    assert table.loc["c.jpg", 3] == rle.encode(INDEX_MASKS["c"] == 3)


# ----------------------------------------------------------------------------- folder masks (Magnetic-tile)

SOFT = np.array([0, 100, 127, 128, 200, 255], dtype=np.uint8)


def soft_mask(shape: tuple[int, int], k: int) -> np.ndarray:
    """Values 0..255 with soft edges; defect (> 127) pixels depend on k."""
    mask = np.zeros(shape, np.uint8)
    mask[k % shape[0], :6] = SOFT
    mask[:, (k + 2) % shape[1]] = 200
    return mask


MT_FOLDERS = list(convert.MAGNETIC_TILE_CLASS_FOLDERS)


@pytest.fixture
def mt_src(tmp_path: Path) -> Path:
    """Magnetic-tile layout: 5 images per defect folder, 5 in MT_Free (one without mask)."""
    root = tmp_path / "mt"
    for f, folder in enumerate([*MT_FOLDERS, "MT_Free"]):
        for k in range(5):
            shape = (8, 10) if k % 2 else (9, 7)
            name = f"exp{f}_num_{k}"
            save(root / folder / f"{name}.jpg", grey(*shape, f * 10 + k))
            if folder != "MT_Free":
                save(root / folder / f"{name}.png", soft_mask(shape, k))
            elif k:
                save(root / folder / f"{name}.png", np.where(soft_mask(shape, k) > 127, 127, 0).astype(np.uint8))
    return root


def test_magnetic_tile_round_trip(mt_src, tmp_path):
    out = tmp_path / "out"
    table = convert.convert_magnetic_tile(mt_src, out, progress=False)

    masks = decoded(out)
    assert len(masks) == 25 and len(table) == 30
    for (image_id, class_id), mask in masks.items():
        folder = MT_FOLDERS[class_id - 1]
        source = np.asarray(Image.open(mt_src / folder / image_id.replace(".jpg", ".png")))
        np.testing.assert_array_equal(mask, source > 127)
        assert image_id.startswith(f"exp{class_id - 1}_")
    free = {f"exp5_num_{k}.jpg" for k in range(5)}
    assert free <= set(table.index) and not free & set(train_rows(out)["ImageId"])
    assert (out / "train_images" / "exp5_num_0.jpg").read_bytes() == (mt_src / "MT_Free" / "exp5_num_0.jpg").read_bytes()
    assert severstal.read_classes(out) == {1: "Blowhole", 2: "Break", 3: "Crack", 4: "Fray", 5: "Uneven"}
    pd.testing.assert_frame_equal(table, severstal.read_dataset(out))

    splits = severstal.read_splits(out)
    assert (splits["group"] == splits.index.str.removesuffix(".jpg")).all()
    per_folder = splits.assign(folder=splits.index.str[3]).groupby("folder")["split"].value_counts().unstack()
    assert per_folder["val"].tolist() == [1] * 6 and per_folder["train"].tolist() == [4] * 6


def test_magnetic_tile_split_is_seeded(mt_src, tmp_path):
    convert.convert_magnetic_tile(mt_src, tmp_path / "one", seed=5, progress=False)
    convert.convert_magnetic_tile(mt_src, tmp_path / "two", seed=5, progress=False)
    pd.testing.assert_frame_equal(severstal.read_splits(tmp_path / "one"), severstal.read_splits(tmp_path / "two"))


def test_magnetic_tile_without_defect_free_images(mt_src, tmp_path):
    table = convert.convert_magnetic_tile(mt_src, tmp_path / "out", include_free=False, progress=False)
    assert len(table) == 25 and not any(name.startswith("exp5_") for name in table.index)
    assert len(decoded(tmp_path / "out")) == 25
    assert sorted(p.name for p in (tmp_path / "out" / "train_images").iterdir()) == sorted(table.index)


def test_empty_defect_mask_is_kept_and_reported(mt_src, tmp_path):
    save(mt_src / "MT_Crack" / "exp2_num_3.png", np.full((8, 10), 127, np.uint8))
    with pytest.warns(UserWarning) as record:
        table = convert.convert_magnetic_tile(mt_src, tmp_path / "out", progress=False)
    messages = [str(w.message) for w in record]
    assert any("exp2_num_3.jpg" in m for m in messages) and any("none above threshold=127" in m for m in messages)
    assert table.attrs["empty_masks"] == ["exp2_num_3.jpg"] and table.attrs["faint_masks"] == ["exp2_num_3.png"]
    assert "exp2_num_3.jpg" in table.index and "exp2_num_3.jpg" not in set(train_rows(tmp_path / "out")["ImageId"])


def _mt_drop_mask(root: Path) -> None:
    (root / "MT_Fray" / "exp3_num_2.png").unlink()


def _mt_wrong_size(root: Path) -> None:
    save(root / "MT_Break" / "exp1_num_1.png", np.zeros((9, 10), np.uint8))


def _mt_free_with_defect(root: Path) -> None:
    save(root / "MT_Free" / "exp5_num_2.png", soft_mask((9, 7), 0))


def _mt_same_name(root: Path) -> None:
    shutil.copy(root / "MT_Crack" / "exp2_num_0.jpg", root / "MT_Uneven" / "exp2_num_0.jpg")
    shutil.copy(root / "MT_Crack" / "exp2_num_0.png", root / "MT_Uneven" / "exp2_num_0.png")


def _mt_no_folder(root: Path) -> None:
    shutil.rmtree(root / "MT_Blowhole")


def _mt_empty_class_folder(root: Path) -> None:
    for path in (root / "MT_Fray").iterdir():
        path.rename(path.with_suffix(".bmp" if path.suffix == ".jpg" else ".tif"))


@pytest.mark.parametrize(
    "mutate, error, pattern",
    [
        (_mt_drop_mask, FileNotFoundError, r"exp3_num_2\.jpg.*expected .*exp3_num_2\.png"),
        (_mt_wrong_size, ValueError, r"exp1_num_1\.png is 9x10 but image .*exp1_num_1\.jpg is 8x10"),
        (_mt_free_with_defect, ValueError, r"exp5_num_2\.png of defect-free folder 'MT_Free' has 12 defect pixels"),
        (_mt_same_name, ValueError, r"'exp2_num_0' appears twice"),
        (_mt_no_folder, FileNotFoundError, r"MT_Blowhole \(allowed folders here: \['MT_Break'"),
        (_mt_empty_class_folder, ValueError, r"MT_Fray holds no \*\.jpg images \(found \['\.bmp', '\.tif'\]\)"),
    ],
)
def test_folder_mask_errors_name_the_bad_file(mt_src, tmp_path, mutate, error, pattern):
    mutate(mt_src)
    with pytest.raises(error, match=pattern):
        convert.convert_magnetic_tile(mt_src, tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "train_images").exists()


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"threshold": 255}, r"threshold must be an integer in 0\.\.254"),
        ({"threshold": -1}, r"threshold must be an integer in 0\.\.254"),
        ({"val_fraction": 1.0}, r"val_fraction must be in \[0, 1\)"),
        ({"class_folders": {}}, "at least one folder"),
        ({"free_folders": ("MT_Crack",)}, r"\['MT_Crack'\] are listed both"),
        ({"mask_suffix": ".jpg"}, "must differ"),
    ],
)
def test_folder_masks_reject_bad_arguments(mt_src, tmp_path, kwargs, pattern):
    kwargs = {"class_folders": {"MT_Crack": "Crack"}, "free_folders": ("MT_Free",), **kwargs}
    with pytest.raises(ValueError, match=pattern):
        convert.convert_folder_masks(mt_src, tmp_path / "out", progress=False, **kwargs)


def test_folder_masks_generic_subset(mt_src, tmp_path):
    table = convert.convert_folder_masks(
        mt_src, tmp_path / "out", {"MT_Crack": "crack"}, free_folders="MT_Free", threshold=199, val_fraction=0.0,
        progress=False,
    )
    assert list(table.columns) == [1, "Height", "Width"] and len(table) == 10
    np.testing.assert_array_equal(rle.decode(table.loc["exp2_num_1.jpg", 1], (8, 10)), soft_mask((8, 10), 1) > 199)
    assert set(severstal.read_splits(tmp_path / "out")["split"]) == {"train"}


# ----------------------------------------------------------------------------- tiled radiographs

RADIOGRAPH = grey(20, 50, 3)
# defects in the first/last pixel, in tile overlaps, none in columns 12..31 (defect-free tiles)
DEFECT = label_mask(
    (20, 50),
    {(0, 0): 1, (19, 49): 1, (10, 33): 1, **{(5, x): 1 for x in range(8, 12)}, **{(y, 40): 1 for y in range(12, 20)}},
).astype(bool)
SMALL = grey(10, 12, 9)
SMALL_DEFECT = label_mask((10, 12), {(9, 11): 1, (0, 5): 1}).astype(bool)


@pytest.fixture
def radiographs(tmp_path: Path) -> list[tuple[Path, Path | None]]:
    src = tmp_path / "rad"
    return [
        (save(src / "R1.png", RADIOGRAPH), save(src / "R1_mask.png", DEFECT)),
        (save(src / "R2.png", SMALL), save(src / "R2_mask.png", SMALL_DEFECT.astype(np.uint8) * 255)),
        (save(src / "R3.png", RADIOGRAPH), None),
    ]


def reassemble(out: Path, table: pd.DataFrame, stem: str, shape: tuple[int, int]) -> tuple[np.ndarray, ...]:
    """Image, mask and coverage count of one source, rebuilt from its tiles."""
    height, width = shape
    image, mask, count = (np.zeros((height + 16, width + 16), dtype) for dtype in (np.uint8, np.uint8, np.int64))
    for image_id, row in table[table.index.str.startswith(f"{stem}_y")].iterrows():
        y, x = map(int, re.search(r"_y(\d+)_x(\d+)\.png$", image_id).groups())
        size = (int(row["Height"]), int(row["Width"]))
        image[y : y + size[0], x : x + size[1]] = np.asarray(Image.open(out / "train_images" / image_id))
        mask[y : y + size[0], x : x + size[1]] |= rle.decode(row[1], size)
        count[y : y + size[0], x : x + size[1]] += 1
    return image, mask, count


@pytest.mark.parametrize(
    "stride, ids",
    [
        (16, [f"R1_y{y:04d}_x{x:04d}" for y in (0, 4) for x in (0, 16, 32, 34)]),
        (12, [f"R1_y{y:04d}_x{x:04d}" for y in (0, 4) for x in (0, 12, 24, 34)]),
    ],
)
def test_tiles_cover_the_radiograph_exactly(radiographs, tmp_path, stride, ids):
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match=r"R3\.png: no mask"):
        table = convert.convert_tiled_radiographs(
            radiographs, out, tile=16, stride=stride, val_groups=["R2"], progress=False
        )

    assert [i for i in table.index if i.startswith("R1")] == [f"{i}.png" for i in ids]
    assert (table["Height"] == 16).all() and (table["Width"] == 16).all()
    image, mask, count = reassemble(out, table, "R1", (20, 50))
    np.testing.assert_array_equal(image[:20, :50], RADIOGRAPH)
    np.testing.assert_array_equal(mask[:20, :50], DEFECT)
    assert count[:20, :50].min() >= 1 and count[20:].sum() == 0 and count[:, 50:].sum() == 0

    assert table.attrs["skipped"] == {"R3.png": "no mask"}
    assert not any(i.startswith("R3") for i in table.index)
    assert severstal.read_classes(out) == {1: "defect"}
    pd.testing.assert_frame_equal(table, severstal.read_dataset(out))
    splits = severstal.read_splits(out)
    assert splits["group"].to_dict() == {i: i.split("_")[0] for i in table.index}
    assert splits.groupby("group")["split"].unique().map(list).to_dict() == {"R1": ["train"], "R2": ["val"]}
    defect_free = set(table.index[table[1] == ""])
    assert defect_free and not defect_free & set(train_rows(out)["ImageId"])
    assert set(train_rows(out)["ImageId"]) == set(table.index) - defect_free


def test_small_radiograph_is_padded(radiographs, tmp_path):
    with pytest.warns(UserWarning):
        table = convert.convert_tiled_radiographs(radiographs, tmp_path / "out", tile=16, stride=16, progress=False)
    assert table.attrs["padded"] == ["R2.png"]
    assert [i for i in table.index if i.startswith("R2")] == ["R2_y0000_x0000.png"]
    image, mask, _ = reassemble(tmp_path / "out", table, "R2", (10, 12))
    np.testing.assert_array_equal(image[:10, :12], SMALL)
    np.testing.assert_array_equal(mask[:10, :12], SMALL_DEFECT)
    assert image[10:16].sum() == 0 and image[:, 12:16].sum() == 0 and mask[10:16].sum() == 0


@pytest.mark.parametrize("fraction, seed", [(0.5, 0), (0.5, 1), (0.0, 0)])
def test_fraction_split_keeps_radiographs_whole(radiographs, tmp_path, fraction, seed):
    mask = tmp_path / "rad" / "R1_mask.png"
    pairs = radiographs[:2] + [(save(tmp_path / "rad" / f"R{k}.png", RADIOGRAPH), mask) for k in (4, 5)]
    table = convert.convert_tiled_radiographs(
        pairs, tmp_path / "out", tile=16, stride=12, val_fraction=fraction, seed=seed, progress=False
    )
    splits = severstal.read_splits(tmp_path / "out")
    assert audit.check_group_splits(splits).empty
    n_val = splits[splits["split"] == "val"]["group"].nunique()
    assert n_val == (2 if fraction else 0)
    assert len(table) == 3 * 8 + 1


def test_tiled_errors_name_the_bad_file(radiographs, tmp_path):
    src = tmp_path / "rad"
    save(src / "R2_mask.png", np.zeros((10, 13), bool))
    with pytest.raises(ValueError, match=r"R2_mask\.png is 10x13 but image .*R2\.png is 10x12"):
        convert.convert_tiled_radiographs(radiographs, tmp_path / "out", tile=16, progress=False)
    with pytest.raises(FileNotFoundError, match=r"R1\.png: expected .*nothere\.png"):
        convert.convert_tiled_radiographs([(src / "R1.png", src / "nothere.png")], tmp_path / "out", tile=16, progress=False)
    assert not (tmp_path / "out" / "train_images").exists()


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"val_groups": ["R3"]}, r"val_groups \['R3'\] are not converted radiographs; allowed: \['R1', 'R2'\]"),
        ({"stride": 17}, r"stride must be in 1\.\.tile=16"),
        ({"tile": 0}, "tile must be an integer >= 1"),
        ({"threshold": 300}, r"threshold must be an integer in 0\.\.254"),
        ({"val_fraction": -0.5}, r"val_fraction must be in \[0, 1\)"),
    ],
)
def test_tiled_rejects_bad_arguments(radiographs, tmp_path, kwargs, pattern):
    kwargs = {"tile": 16, **kwargs}
    with pytest.raises(ValueError, match=pattern):
        convert.convert_tiled_radiographs(radiographs, tmp_path / "out", progress=False, **kwargs)


def test_gdxray_welds_skips_the_unmasked_copy(tmp_path):
    src = tmp_path / "welds"
    save(src / "W0001" / "W0001_0001.png", RADIOGRAPH)
    shutil.copy(src / "W0001" / "W0001_0001.png", src / "W0001" / "W0001_0000.png")
    save(src / "W0001" / "W0001_0002.png", grey(18, 40, 1))
    save(src / "W0002" / "W0002_0001.png", DEFECT)
    save(src / "W0002" / "W0002_0002.png", np.zeros((18, 40), bool))
    (src / "W0001" / "W0001_readme.txt").write_text("readme")

    with pytest.warns(UserWarning, match=r"W0001_0000\.png: no mask W0002_0000\.png \(byte copy of W0001_0001\.png\)"):
        table = convert.convert_gdxray_welds(
            src, tmp_path / "out", tile=16, stride=16, val_groups=["W0001_0002"], progress=False
        )

    assert table.attrs["skipped"] == {"W0001_0000.png": "no mask W0002_0000.png (byte copy of W0001_0001.png)"}
    assert {i[:10] for i in table.index} == {"W0001_0001", "W0001_0002"}
    assert "W0001_0001_y0004_x0034.png" in table.index
    _, mask, _ = reassemble(tmp_path / "out", table, "W0001_0001", (20, 50))
    np.testing.assert_array_equal(mask[:20, :50], DEFECT)
    splits = severstal.read_splits(tmp_path / "out")
    assert splits.groupby("group")["split"].unique().map(list).to_dict() == {"W0001_0001": ["train"], "W0001_0002": ["val"]}
    assert set(train_rows(tmp_path / "out")["ImageId"].str[:10]) == {"W0001_0001"}


def test_converters_emit_no_warning_on_clean_data(index_src, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        convert.convert_index_masks(index_src / "images", index_src / "masks", tmp_path / "out", NAMES, progress=False)


# ----------------------------------------------------------------------------- box annotations (GDXray Castings)

# series -> {image index: (H, W)}; C0002 holds crops of C0001 (grouped with it), C0003 is another part
CASTING_SHAPES = {"C0001": {1: (20, 30), 2: (20, 30), 3: (20, 30)}, "C0002": {1: (12, 10)}, "C0003": {1: (18, 16), 2: (18, 16)}}
# ground_truth.txt rows: image_index x1 x2 y1 y2 (1-based, inclusive), written like GDXray's MATLAB export
CASTING_BOXES = {
    "C0001": [(1, 3, 5, 2, 4), (1, 20, 30, 18, 20), (2, 1, 1, 1, 1)],  # two boxes in image 1, a corner pixel in 2; 3 has none
    "C0002": [(1, 2, 4, 9, 12)],
    "C0003": [(2, 16, 16, 1, 18)],  # the last column
}


def box_mask(shape: tuple[int, int], boxes: list[tuple[float, ...]]) -> np.ndarray:
    """Expected mask: columns x1..x2 and rows y1..y2 (1-based, inclusive)."""
    mask = np.zeros(shape, bool)
    for _, x1, x2, y1, y2 in boxes:
        mask[int(y1) - 1 : int(y2), int(x1) - 1 : int(x2)] = True
    return mask


def write_ground_truth(folder: Path, rows: list[tuple[float, ...]]) -> None:
    (folder / "ground_truth.txt").write_text("".join("".join(f"{v:16.7e}" for v in row) + "\n" for row in rows))


@pytest.fixture
def castings(tmp_path: Path) -> Path:
    src = tmp_path / "castings"
    for series, shapes in CASTING_SHAPES.items():
        for index, shape in shapes.items():
            save(src / series / f"{series}_{index:04d}.png", grey(*shape, index * 11 + len(series)))
        write_ground_truth(src / series, CASTING_BOXES[series])
        (src / series / f"{series}_readme.txt").write_text("readme")
    return src


def expected_casting_masks() -> dict[str, np.ndarray]:
    return {
        f"{series}_{index:04d}": box_mask(shape, [b for b in CASTING_BOXES[series] if b[0] == index])
        for series, shapes in CASTING_SHAPES.items()
        for index, shape in shapes.items()
    }


def test_castings_whole_images_give_exact_box_masks(castings, tmp_path):
    out = tmp_path / "out"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = convert.convert_gdxray_castings(castings, out, tile=None, val_groups=["C0003"], progress=False)
    expected = expected_casting_masks()
    assert sorted(table.index) == sorted(f"{stem}.png" for stem in expected)
    for stem, mask in expected.items():
        row = table.loc[f"{stem}.png"]
        assert (row["Height"], row["Width"]) == mask.shape
        np.testing.assert_array_equal(rle.decode(row[1], mask.shape).astype(bool), mask)
        source = castings / stem[:5] / f"{stem}.png"
        assert (out / "train_images" / f"{stem}.png").read_bytes() == source.read_bytes()
    assert table.loc["C0001_0003.png", 1] == ""  # no box: kept, defect-free, not in train.csv
    assert "C0001_0003.png" not in set(train_rows(out)["ImageId"])
    assert severstal.read_classes(out) == {1: "defect"}
    pd.testing.assert_frame_equal(table, severstal.read_dataset(out))
    splits = severstal.read_splits(out)
    assert splits["group"].to_dict() == {
        "C0001_0001.png": "C0001", "C0001_0002.png": "C0001", "C0001_0003.png": "C0001",
        "C0002_0001.png": "C0001", "C0003_0001.png": "C0003", "C0003_0002.png": "C0003",
    }
    assert splits.groupby("group")["split"].unique().map(list).to_dict() == {"C0001": ["train"], "C0003": ["val"]}
    assert table.attrs["clipped_boxes"] == [] and table.attrs["skipped"] == {}


@pytest.mark.parametrize("stride", [8, 5])
def test_castings_tiles_reassemble_to_the_box_masks(castings, tmp_path, stride):
    out = tmp_path / "out"
    table = convert.convert_gdxray_castings(castings, out, tile=8, stride=stride, progress=False)
    for stem, mask in expected_casting_masks().items():
        _, rebuilt, count = reassemble(out, table, stem, mask.shape)
        height, width = mask.shape
        np.testing.assert_array_equal(rebuilt[:height, :width].astype(bool), mask)
        assert count[:height, :width].min() >= 1
    assert (table["Height"] == 8).all() and (table["Width"] == 8).all()
    assert audit.check_group_splits(severstal.read_splits(out)).empty
    defect_free = table.index[table[1] == ""]
    assert len(defect_free) and not set(defect_free) & set(train_rows(out)["ImageId"])


@pytest.mark.parametrize("fraction, seed", [(0.5, 0), (0.5, 1), (0.5, 2), (0.0, 0)])
def test_castings_groups_never_span_splits(castings, tmp_path, fraction, seed):
    convert.convert_gdxray_castings(castings, tmp_path / "out", tile=8, val_fraction=fraction, seed=seed, progress=False)
    splits = severstal.read_splits(tmp_path / "out")
    assert audit.check_group_splits(splits).empty
    assert splits["group"].nunique() == 2  # C0002 joins C0001
    assert splits["split"].nunique() == (2 if fraction else 1)
    ungrouped = convert.convert_gdxray_castings(castings, tmp_path / "own", tile=8, groups={}, progress=False)
    assert severstal.read_splits(tmp_path / "own")["group"].nunique() == 3 and len(ungrouped)


def test_castings_clip_boxes_past_the_edge(castings, tmp_path):
    write_ground_truth(castings / "C0003", [(1, 0, 2, 17, 19), (2, 16, 17, 1, 18)])  # x1 = 0, y2 = H + 1, x2 = W + 1
    with pytest.warns(UserWarning, match=r"clipped 2 box\(es\)"):
        table = convert.convert_gdxray_castings(castings, tmp_path / "out", tile=None, progress=False)
    assert table.attrs["clipped_boxes"] == [
        "C0003/ground_truth.txt line 1: x 0..2, y 17..19 clipped to x 1..2, y 17..18 (16x18 image C0003_0001.png)",
        "C0003/ground_truth.txt line 2: x 16..17, y 1..18 clipped to x 16..16, y 1..18 (16x18 image C0003_0002.png)",
    ]
    np.testing.assert_array_equal(rle.decode(table.loc["C0003_0001.png", 1], (18, 16)), box_mask((18, 16), [(1, 1, 2, 17, 18)]))


@pytest.mark.parametrize(
    "series, text, error, pattern",
    [
        ("C0001", "1 5 3 2 4\n", ValueError, r"C0001/ground_truth\.txt line 1: box x1=5 x2=3 y1=2 y2=4 needs x1 <= x2 and y1 <= y2"),
        ("C0001", "1 3 5 2 4\n2 3 5 9 4\n", ValueError, r"C0001/ground_truth\.txt line 2: box .* needs x1 <= x2 and y1 <= y2"),
        ("C0001", "1 3 5 2\n", ValueError, r"C0001/ground_truth\.txt line 1: expected 5 numbers 'image_index x1 x2 y1 y2', got '1 3 5 2'"),
        ("C0001", "1 3 five 2 4\n", ValueError, r"line 1: expected 5 numbers"),
        ("C0003", "\n3 1 2 1 2\n", ValueError, r"C0003/ground_truth\.txt line 2: image index 3 has no image .*C0003_0003\.png"),
        ("C0003", "1.5 1 2 1 2\n", ValueError, r"line 1: image index must be an integer >= 1 \(1-based\), got '1\.5'"),
        ("C0003", "0 1 2 1 2\n", ValueError, r"line 1: image index must be an integer >= 1"),
        ("C0003", "1 40 50 1 2\n", ValueError, r"C0003/ground_truth\.txt line 1: box x1=40 x2=50 y1=1 y2=2 lies outside the 16x18 \(WxH\) image C0003_0001\.png"),
    ],
)
def test_castings_errors_name_file_and_line(castings, tmp_path, series, text, error, pattern):
    (castings / series / "ground_truth.txt").write_text(text)
    with pytest.raises(error, match=pattern):
        convert.convert_gdxray_castings(castings, tmp_path / "out", tile=8, progress=False)
    assert not (tmp_path / "out" / "train_images").exists() and not (tmp_path / "out" / "train_images.partial").exists()


def test_castings_series_without_ground_truth_is_skipped(castings, tmp_path):
    (castings / "C0003" / "ground_truth.txt").unlink()
    with pytest.warns(UserWarning, match=r"skipped 1 series without ground truth .*\['C0003'\]"):
        table = convert.convert_gdxray_castings(castings, tmp_path / "out", tile=None, progress=False)
    assert table.attrs["skipped"] == {"C0003": "no ground_truth.txt"}
    assert not any(i.startswith("C0003") for i in table.index)


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"val_groups": ["C0002"]}, r"val_groups \['C0002'\] are not groups of the images; allowed: \['C0001', 'C0003'\]"),
        ({"tile": 0}, "tile must be an integer >= 1"),
        ({"tile": 8, "stride": 9}, r"stride must be in 1\.\.tile=8"),
        ({"tile": None, "stride": 4}, r"stride needs a tile size"),
        ({"val_fraction": 1.0}, r"val_fraction must be in \[0, 1\)"),
    ],
)
def test_castings_reject_bad_arguments(castings, tmp_path, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        convert.convert_gdxray_castings(castings, tmp_path / "out", progress=False, **kwargs)


def test_box_annotations_generic_core(tmp_path):
    images = [save(tmp_path / "src" / "a.png", grey(10, 12)), save(tmp_path / "src" / "b.png", grey(10, 12, 5))]
    boxes = pd.DataFrame({"image": ["a.png", "a.png"], "x1": [1.4, 11], "x2": [2.6, 12], "y1": [1, 10], "y2": [3, 10]})
    table = convert.convert_box_annotations(images, boxes, tmp_path / "out", tile=None, val_fraction=0.0, progress=False)
    np.testing.assert_array_equal(
        rle.decode(table.loc["a.png", 1], (10, 12)).astype(bool), box_mask((10, 12), [(1, 1, 3, 1, 3), (1, 11, 12, 10, 10)])
    )  # non-integer coordinates are rounded
    assert table.loc["b.png", 1] == ""
    assert severstal.read_splits(tmp_path / "out")["group"].to_dict() == {"a.png": "a", "b.png": "b"}
    bad = boxes.assign(image=["c.png", "a.png"])
    with pytest.raises(ValueError, match=r"box 0 \(c\.png\): image 'c\.png' is not among the images to convert"):
        convert.convert_box_annotations(images, bad, tmp_path / "other", tile=None, progress=False)
    with pytest.raises(ValueError, match=r"boxes need the columns \['image', 'x1', 'x2', 'y1', 'y2'\]"):
        convert.convert_box_annotations(images, boxes.drop(columns="y2"), tmp_path / "other", progress=False)


def test_read_gdxray_boxes(castings):
    boxes = convert.read_gdxray_boxes(castings / "C0001")
    assert list(boxes.columns) == ["image", "x1", "x2", "y1", "y2", "where"]
    assert boxes["image"].tolist() == ["C0001_0001.png", "C0001_0001.png", "C0001_0002.png"]
    assert boxes.iloc[1][["x1", "x2", "y1", "y2"]].tolist() == [20.0, 30.0, 18.0, 20.0]
    assert boxes["where"].tolist() == [f"C0001/ground_truth.txt line {k}" for k in (1, 2, 3)]


# ----------------------------------------------------------------------------- whole-folder swap (overwrite=True)

# The child converts index masks into OUT with overwrite=True and SIGKILLs itself at one point:
# "images" after 2 copied images, "tables" at the first table write, "swap" just before the new
# folder is renamed into place (the old one already moved aside).
KILL_CHILD = r"""
import os, signal, shutil, sys
from collections.abc import Callable
from pathlib import Path
from helpers.core import files
from helpers.data import convert

point, images, masks, out = sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4])

def kill_after(n, real, when=lambda *a: True):
    calls = [0]
    def wrapper(*args, **kwargs):
        if when(*args):
            calls[0] += 1
            if calls[0] > n:
                os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    return wrapper

if point == "images":
    shutil.copyfile = kill_after(2, shutil.copyfile)
elif point == "tables":
    files.atomic_write_text = kill_after(0, files.atomic_write_text)
elif point == "swap":
    os.rename = kill_after(0, os.rename, when=lambda src, dst: Path(dst).resolve() == out.resolve())
convert.convert_index_masks(images, masks, out, {1: "inclusion", 2: "patches", 3: "scratches"}, overwrite=True,
                            progress=False)
print("finished without being killed")
"""


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative posix path -> bytes)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _new_version(src: Path) -> None:
    """A different dataset from the same folders: a's mask changes, d is added (old images all stay)."""
    save(src / "masks" / "a.png", label_mask(SHAPE, {(5, 5): 2}))
    Image.fromarray(np.stack([grey(*SHAPE, 99)] * 3, axis=-1)).save(src / "images" / "d.jpg")
    save(src / "masks" / "d.png", label_mask(SHAPE, {(1, 1): 3}))


def _run_killed_child(tmp_path: Path, point: str, src: Path, out: Path) -> None:
    script = tmp_path / "kill_child.py"
    script.write_text(KILL_CHILD)
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run(
        [sys.executable, str(script), point, str(src / "images"), str(src / "masks"), str(out)],
        cwd=root, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == -signal.SIGKILL, (done.returncode, done.stdout, done.stderr)


@pytest.mark.parametrize("point", ["images", "tables", "swap"])
def test_overwrite_killed_midway_keeps_the_old_dataset(index_src, tmp_path, point):
    out = tmp_path / "data" / "out"
    args = (index_src / "images", index_src / "masks")
    old_table = convert.convert_index_masks(*args, out, NAMES, progress=False)
    old_files = snapshot(out)
    _new_version(index_src)

    _run_killed_child(tmp_path, point, index_src, out)
    if point != "swap":  # killed before the swap: the folder is the old dataset, untouched
        assert snapshot(out) == old_files
        pd.testing.assert_frame_equal(severstal.read_dataset(out), old_table)
    # the next conversion first repairs the folder (restores the moved-aside old one, removes the build) ...
    with pytest.raises(FileExistsError, match="overwrite=True"):
        convert.convert_index_masks(*args, out, NAMES, progress=False)
    assert snapshot(out) == old_files
    pd.testing.assert_frame_equal(severstal.read_dataset(out), old_table)
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]
    # ... and a rerun completes to the new dataset
    new_table = convert.convert_index_masks(*args, out, NAMES, overwrite=True, progress=False)
    fresh = convert.convert_index_masks(*args, tmp_path / "fresh", NAMES, progress=False)
    assert snapshot(out) == snapshot(tmp_path / "fresh")
    pd.testing.assert_frame_equal(severstal.read_dataset(out), new_table)
    pd.testing.assert_frame_equal(new_table, fresh)
    assert "d.jpg" in new_table.index and sorted(p.name for p in out.parent.iterdir()) == ["out"]


def test_overwrite_keeps_other_files_and_clears_stale_builds(index_src, tmp_path):
    out = tmp_path / "out"
    args = (index_src / "images", index_src / "masks", out, NAMES)
    convert.convert_index_masks(*args, progress=False)
    (out / "notes.txt").write_text("mine")
    save(out / "source" / "raw.png", grey(4, 4))
    (out / "train_images.partial").mkdir()  # left by an older version of the converter
    stale = tmp_path / ".out.building-999999999"  # no such process
    save(stale / "train_images" / "a.jpg", grey(4, 4))
    _new_version(index_src)
    table = convert.convert_index_masks(*args, overwrite=True, progress=False)
    assert "d.jpg" in table.index
    assert (out / "notes.txt").read_text() == "mine" and (out / "source" / "raw.png").is_file()
    assert sorted(p.name for p in out.iterdir()) == [
        "classes.csv", "notes.txt", "source", "splits.csv", "train.csv", "train_images"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["src", "out"])


def test_converter_refuses_an_out_dir_that_is_a_file(index_src, tmp_path):
    (tmp_path / "out").write_text("not a folder")
    with pytest.raises(NotADirectoryError, match=r"out.*not a folder"):
        convert.convert_index_masks(index_src / "images", index_src / "masks", tmp_path / "out", NAMES,
                                    overwrite=True, progress=False)
    assert (tmp_path / "out").read_text() == "not a folder"


# ----------------------------------------------------------------------------- hostile ground truth and list files


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("inf 1 2 1 2\n", r"line 1: image index must be an integer >= 1 \(1-based\), got 'inf'"),
        ("nan 1 2 1 2\n", r"line 1: image index must be an integer >= 1 \(1-based\), got 'nan'"),
        ("1e400 1 2 1 2\n", r"line 1: image index must be an integer >= 1"),
        ("1 inf 2 1 2\n", r"line 1: x1 must be a finite number >= 0, got 'inf'"),
        ("1 1 2 nan 2\n", r"line 1: y1 must be a finite number >= 0, got 'nan'"),
        ("1 1 2 1 -inf\n", r"line 1: y2 must be a finite number >= 0, got '-inf'"),
        ("1 -3 2 1 2\n", r"line 1: x1 must be a finite number >= 0, got '-3'"),
        ("1 1 2 1 2\n1 4 2 1 2\n", r"line 2: box x1=4 x2=2 y1=1 y2=2 needs x1 <= x2 and y1 <= y2"),
        ("1 1 2 1 2 9\n", r"line 1: expected 5 numbers 'image_index x1 x2 y1 y2', got '1 1 2 1 2 9'"),
    ],
)
def test_castings_ground_truth_bad_values_name_file_line_and_field(castings, tmp_path, text, pattern):
    (castings / "C0003" / "ground_truth.txt").write_text(text)
    with pytest.raises(ValueError, match=r"C0003/ground_truth\.txt " + pattern):
        convert.convert_gdxray_castings(castings, tmp_path / "out", tile=None, progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "raw, pattern",
    [
        ("1 1 2 1 2\n".encode("utf-16"), r"ground_truth\.txt: looks like UTF-16 text; save it as UTF-8"),
        (b"1 1 2 1 2\n2 1 2 1 2 \xe9\n", r"ground_truth\.txt line 2: byte 0xe9 is not UTF-8"),
    ],
)
def test_castings_ground_truth_encoding_errors_name_the_file(castings, tmp_path, raw, pattern):
    (castings / "C0003" / "ground_truth.txt").write_bytes(raw)
    with pytest.raises(ValueError, match=pattern):
        convert.convert_gdxray_castings(castings, tmp_path / "out", tile=None, progress=False)


def _neu(index_src: Path, tmp_path: Path, train: bytes, val: bytes) -> Path:
    src = tmp_path / "neu"
    shutil.copytree(index_src, src)
    (src / "splits").mkdir()
    (src / "splits" / "train.txt").write_bytes(train)
    (src / "splits" / "val.txt").write_bytes(val)
    return src


@pytest.mark.parametrize(
    "train, val, pattern",
    [
        (b"a\nc\n", b"b\n../outside\n", r"splits/val\.txt line 2: '\.\./outside' is not an image in .*images"),
        (b"a\nc\n", b"b\nzz\n", r"splits/val\.txt line 2: 'zz' is not an image in"),
        (b"a\nc\n", b"b\nc.jpg\n", r"splits/val\.txt line 2: 'c\.jpg' is also listed in .*splits/train\.txt line 2"),
        (b"a\nc\n", "b\n".encode("utf-16"), r"splits/val\.txt: looks like UTF-16 text"),
        (b"a\nc\n", b"b\n\xe9\n", r"splits/val\.txt line 2: byte 0xe9 is not UTF-8"),
    ],
)
def test_neu_seg_split_lists_errors_name_file_and_line(index_src, tmp_path, train, val, pattern):
    src = _neu(index_src, tmp_path, train, val)
    with pytest.raises(ValueError, match=pattern):
        convert.convert_neu_seg(src, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_neu_seg_split_lists_accept_bom_crlf_and_file_names(index_src, tmp_path):
    src = _neu(index_src, tmp_path, b"\xef\xbb\xbfa\r\nc.jpg\r\n\r\n", b"b\n")
    convert.convert_neu_seg(src, tmp_path / "out", progress=False)
    assert severstal.read_splits(tmp_path / "out")["split"].to_dict() == {"a.jpg": "train", "b.jpg": "val", "c.jpg": "train"}


def test_box_annotations_refuse_image_paths_that_are_not_the_images(tmp_path):
    images = [save(tmp_path / "src" / "a.png", grey(10, 12))]
    save(tmp_path / "other" / "a.png", grey(10, 12, 1))
    boxes = pd.DataFrame({"image": ["../other/a.png"], "x1": [1], "x2": [2], "y1": [1], "y2": [2]})
    with pytest.raises(ValueError, match=r"box 0 \(\.\./other/a\.png\): image '\.\./other/a\.png' is not among the images"):
        convert.convert_box_annotations(images, boxes, tmp_path / "out", tile=None, progress=False)
    same = boxes.assign(image=[str(images[0])])  # the image's own path is fine
    table = convert.convert_box_annotations(images, same, tmp_path / "out", tile=None, progress=False)
    assert table.loc["a.png", 1] != ""


# ----------------------------------------------------------------------------- hostile images, masks and arguments


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-30])  # header intact, pixel data cut short


def _not_an_image(path: Path) -> None:
    path.write_bytes(b"this is not an image")


def _index_images(src: Path, tmp_path: Path) -> tuple[Path, Callable]:
    return src / "images" / "c.jpg", lambda: convert.convert_index_masks(
        src / "images", src / "masks", tmp_path / "out", NAMES, progress=False)


def _castings_whole(src: Path, tmp_path: Path) -> tuple[Path, Callable]:
    return src / "C0003" / "C0003_0002.png", lambda: convert.convert_gdxray_castings(
        src, tmp_path / "out", tile=None, progress=False)


@pytest.mark.parametrize("damage", [_truncate, _not_an_image])
@pytest.mark.parametrize("fixture, case", [("index_src", _index_images), ("castings", _castings_whole)])
def test_copied_images_are_decoded_so_damaged_files_are_named(request, tmp_path, damage, fixture, case):
    path, run = case(request.getfixturevalue(fixture), tmp_path)
    damage(path)
    with pytest.raises(ValueError, match=re.escape(str(path))):
        run()
    assert not (tmp_path / "out").exists()


def test_folder_masks_refuse_a_truncated_image(mt_src, tmp_path):
    _truncate(mt_src / "MT_Crack" / "exp2_num_3.jpg")
    with pytest.raises(ValueError, match=r"MT_Crack/exp2_num_3\.jpg"):
        convert.convert_magnetic_tile(mt_src, tmp_path / "out", progress=False)


def test_tiled_warns_about_masks_with_values_below_the_threshold(radiographs, tmp_path):
    save(tmp_path / "rad" / "R1_mask.png", DEFECT.astype(np.uint8))  # 0/1 in an 8-bit mask, threshold 127
    with pytest.warns(UserWarning) as record:
        table = convert.convert_tiled_radiographs(radiographs, tmp_path / "out", tile=16, threshold=127, progress=False)
    assert any(re.search(r"1 mask\(s\) have non-zero values but none above threshold=127.*R1_mask\.png", str(w.message))
               for w in record)
    assert table.attrs["faint_masks"] == ["R1_mask.png"]
    assert (table.loc[table.index.str.startswith("R1_"), 1] == "").all()


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"seed": -1}, r"seed must be an integer >= 0, got -1"),
        ({"seed": 1.5}, r"seed must be an integer >= 0, got 1\.5"),
        ({"mask_suffix": None}, r"mask_suffix must be one of \['.jpg'.*got None"),
        ({"mask_suffix": "png"}, r"mask_suffix must be one of \['.jpg'.*got 'png'"),
    ],
)
def test_index_masks_reject_bad_seed_and_suffix(index_src, tmp_path, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        convert.convert_index_masks(index_src / "images", index_src / "masks", tmp_path / "out", NAMES,
                                    progress=False, **kwargs)


@pytest.mark.parametrize("value", [np.inf, np.nan, "wide", None])
def test_box_annotations_name_the_bad_coordinate(tmp_path, value):
    images = [save(tmp_path / "src" / "a.png", grey(10, 12))]
    boxes = pd.DataFrame({"image": ["a.png", "a.png"], "x1": [1, 1], "x2": [2, 2], "y1": [1, 1], "y2": [2, value]})
    with pytest.raises(ValueError, match=r"box 1 \(a\.png\): box y2 must be a finite number, got '"):
        convert.convert_box_annotations(images, boxes, tmp_path / "out", tile=None, progress=False)


# ----------------------------------------------------------------------------- NEU-Seg leak-free split

def _twin_masks() -> dict[str, np.ndarray]:
    """Masks of 11 images: three sets of rotated/flipped copies (a, b, c) and three singles (d, e, f)."""
    def shape(cells, value):
        mask = np.zeros((12, 12), np.uint8)
        for y, x in cells:
            mask[y, x] = value
        return mask

    a = shape([(1, 1), (2, 1), (3, 1), (3, 2)], 1)  # an L: its rotations and flips all differ
    b = shape([(5, 5), (5, 6), (5, 7), (6, 7), (9, 2)], 2)
    c = shape([(0, 8), (1, 8), (1, 9), (8, 8), (8, 9)], 3)
    return {"a0": a, "a1": np.rot90(a), "a2": np.fliplr(a), "b0": b, "b1": np.rot90(b, 2), "c0": c, "c1": c.T,
            "c2": np.flipud(c), "d0": shape([(6, 6)], 1), "e0": shape([(2, 9), (3, 9)], 2), "f0": shape([(10, 1)], 3)}


@pytest.fixture
def neu_twins(tmp_path: Path) -> Path:
    src = tmp_path / "neu-twins"
    for k, (stem, mask) in enumerate(_twin_masks().items()):
        pixels = grey(12, 12, 0 if stem in ("d0", "f0") else 30 * k)  # d0 and f0: byte-identical images
        save(src / "images" / f"{stem}.png", pixels)
        save(src / "masks" / f"{stem}.png", np.ascontiguousarray(mask))
    (src / "splits").mkdir()
    (src / "splits" / "train.txt").write_text("a0\na2\nb0\nc0\nc2\ne0\nf0\n")
    (src / "splits" / "val.txt").write_text("a1\nb1\nc1\nd0\n")  # every val image has a twin in train
    return src


def test_neu_leak_free_split_keeps_copy_sets_and_identical_images_together(neu_twins, tmp_path):
    from helpers.data import audit

    groups = audit.mask_transform_groups(neu_twins / "masks", progress=False)
    assert set(groups.values()) == {"a0", "b0", "c0"}
    official = convert.convert_neu_seg(neu_twins, tmp_path / "official", groups=groups, progress=False)
    assert len(audit.check_group_splits(severstal.read_splits(tmp_path / "official"))) == 3  # the published split leaks
    for seed in (0, 1):
        out = tmp_path / f"leak-free-{seed}"
        table = convert.convert_neu_seg(neu_twins, out, groups=groups, split="leak_free", seed=seed, progress=False)
        recorded = severstal.read_splits(out)
        assert sorted(table.index) == sorted(official.index)
        assert (recorded["split"] == "val").sum() == 4 and audit.check_group_splits(recorded).empty
        assert recorded.loc["d0.png", "split"] == recorded.loc["f0.png", "split"]  # identical images, one side


def test_neu_split_choices_are_checked(neu_twins, tmp_path):
    with pytest.raises(ValueError, match=r"split must be one of \['official', 'leak_free'\], got 'random'"):
        convert.convert_neu_seg(neu_twins, tmp_path / "out", split="random", progress=False)
    with pytest.raises(ValueError, match="leak_free' needs groups"):
        convert.convert_neu_seg(neu_twins, tmp_path / "out", split="leak_free", progress=False)
