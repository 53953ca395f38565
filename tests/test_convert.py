"""Converters into the Severstal layout, on tiny hand-made fixtures."""

from __future__ import annotations

import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers import audit, convert, rle, severstal

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
    first = convert.split_groups(groups, fraction, seed)
    assert first == convert.split_groups(list(reversed(groups)), fraction, seed)
    assert sorted(first) == sorted(set(groups))
    assert list(first.values()).count("val") == n_val


@pytest.mark.parametrize("fraction", [1.0, -0.1, "half"])
def test_split_groups_rejects_bad_fraction(fraction):
    with pytest.raises(ValueError, match=r"val_fraction must be in \[0, 1\)"):
        convert.split_groups(["a"], fraction)


@pytest.mark.parametrize("mode", ["L", "P", "RGB"])
def test_read_label_image_keeps_class_ids(tmp_path, mode):
    labels = INDEX_MASKS["c"]
    path = tmp_path / "m.png"
    if mode == "P":
        image = Image.frombytes("P", (SHAPE[1], SHAPE[0]), labels.tobytes())
        image.putpalette([0, 0, 0, 200, 10, 10, 10, 200, 10, 10, 10, 200] + [0] * 756)
        image.save(path)
    else:
        save(path, np.stack([labels] * 3, axis=-1) if mode == "RGB" else labels)
    values, _ = convert.read_label_image(path)
    np.testing.assert_array_equal(values, labels)


def test_read_label_image_reads_1bit_as_0_1_and_rejects_colour(tmp_path):
    bits = INDEX_MASKS["a"] > 0
    values, mode = convert.read_label_image(save(tmp_path / "bits.png", bits))
    assert mode == "1"
    np.testing.assert_array_equal(values, bits.astype(np.uint8))
    colour = np.zeros(SHAPE + (3,), np.uint8)
    colour[0, 0] = (255, 0, 0)
    with pytest.raises(ValueError, match="colour.png"):
        convert.read_label_image(save(tmp_path / "colour.png", colour))


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


def test_empty_defect_mask_is_kept_and_reported(mt_src, tmp_path):
    save(mt_src / "MT_Crack" / "exp2_num_3.png", np.full((8, 10), 127, np.uint8))
    with pytest.warns(UserWarning, match="exp2_num_3.jpg"):
        table = convert.convert_magnetic_tile(mt_src, tmp_path / "out", progress=False)
    assert table.attrs["empty_masks"] == ["exp2_num_3.jpg"]
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


@pytest.mark.parametrize(
    "mutate, error, pattern",
    [
        (_mt_drop_mask, FileNotFoundError, r"exp3_num_2\.jpg.*expected .*exp3_num_2\.png"),
        (_mt_wrong_size, ValueError, r"exp1_num_1\.png is 9x10 but image .*exp1_num_1\.jpg is 8x10"),
        (_mt_free_with_defect, ValueError, r"exp5_num_2\.png of defect-free folder 'MT_Free' has 12 defect pixels"),
        (_mt_same_name, ValueError, r"'exp2_num_0' appears twice"),
        (_mt_no_folder, FileNotFoundError, r"MT_Blowhole \(allowed folders here: \['MT_Break'"),
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
