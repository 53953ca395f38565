from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers.core import files, severstal

SHAPE = (4, 6)  # every fixture image is 4x6


@pytest.fixture
def dataset_dir(tmp_path: Path) -> Path:
    """Three 4x6 images: a.jpg has classes 1 and 3, b.jpg class 2, c.jpg nothing (absent from the CSV)."""
    images = tmp_path / "train_images"
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        files.write_image(images / name, np.full(SHAPE, 128, np.uint8))
    (tmp_path / "train.csv").write_text("ImageId,ClassId,EncodedPixels\na.jpg,1,1 2\na.jpg,3,5 4\nb.jpg,2,21 4\n")
    return tmp_path


def test_new_layout_pivots_and_adds_missing_images(dataset_dir):
    wide = severstal.read_dataset(dataset_dir)
    assert list(wide.index) == ["a.jpg", "b.jpg", "c.jpg"]
    assert severstal.class_columns(wide) == [1, 2, 3, 4]
    assert wide.loc["a.jpg", 1] == "1 2" and wide.loc["a.jpg", 3] == "5 4" and wide.loc["a.jpg", 2] == ""
    assert wide.loc["b.jpg", 2] == "21 4"
    assert (wide.loc["c.jpg", [1, 2, 3, 4]] == "").all()
    assert wide.loc["a.jpg", "Height"] == 4 and wide.loc["a.jpg", "Width"] == 6


def test_old_layout_reads_the_same(dataset_dir):
    old = "ImageId_ClassId,EncodedPixels\n" + "".join(
        f"{image}_{c},{rle}\n"
        for image, rles in {"a.jpg": ["1 2", "", "5 4", ""], "b.jpg": ["", "21 4", "", ""], "c.jpg": ["", "", "", ""]}.items()
        for c, rle in enumerate(rles, start=1)
    )
    (dataset_dir / "old.csv").write_text(old)
    new = severstal.read_dataset(dataset_dir)
    wide = severstal.read_train_csv(dataset_dir / "old.csv", dataset_dir / "train_images", n_classes=4)
    pd.testing.assert_frame_equal(wide, new)


def test_read_without_images_uses_given_shape(dataset_dir):
    wide = severstal.read_train_csv(dataset_dir / "train.csv", shape=SHAPE)
    assert list(wide.index) == ["a.jpg", "b.jpg"]
    assert severstal.decode_masks(wide.loc["a.jpg"]).shape == SHAPE + (4,)


# (name, csv text, error words)
BAD_CSV_CASES = [
    ("bad RLE names image and class", "ImageId,ClassId,EncodedPixels\na.jpg,1,1 2\nb.jpg,3,23 9\n", "ImageId b.jpg ClassId 3: run 1: ends at pixel 31"),
    ("odd tokens", "ImageId,ClassId,EncodedPixels\na.jpg,2,1 2 3\n", "ImageId a.jpg ClassId 2: RLE has an odd number"),
    ("unknown image", "ImageId,ClassId,EncodedPixels\nzzz.jpg,1,1 2\n", "not found in"),
    ("class not an integer", "ImageId,ClassId,EncodedPixels\na.jpg,x,1 2\n", "line 2: ClassId 'x'"),
    ("class zero", "ImageId,ClassId,EncodedPixels\na.jpg,1,1 1\na.jpg,0,1 2\n", "line 3: ClassId '0'"),
    ("duplicate pair", "ImageId,ClassId,EncodedPixels\na.jpg,1,1 2\na.jpg,1,3 1\n", "line 3: ImageId 'a.jpg' ClassId 1 appears twice"),
    ("unknown columns", "Image,Class,Pixels\na.jpg,1,1 2\n", "unknown columns"),
    ("old layout without class", "ImageId_ClassId,EncodedPixels\najpg,1 2\n", "has no '_<class>'"),
]


@pytest.mark.parametrize("name, text, message", BAD_CSV_CASES, ids=[c[0] for c in BAD_CSV_CASES])
def test_bad_csv_rows_are_named(dataset_dir, name, text, message):
    (dataset_dir / "train.csv").write_text(text)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        severstal.read_dataset(dataset_dir)


def test_class_above_n_classes(dataset_dir):
    with pytest.raises(ValueError, match="ClassId 3 > n_classes=2"):
        severstal.read_train_csv(dataset_dir / "train.csv", n_classes=2, shape=SHAPE)


def test_missing_csv(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"train\.csv not found\): write one with notebooks/00_prepare_data\.ipynb"):
        severstal.read_dataset(tmp_path)
    with pytest.raises(FileNotFoundError, match="train.csv"):
        severstal.read_train_csv(tmp_path / "train.csv")


def test_write_train_csv_round_trip(dataset_dir, tmp_path):
    wide = severstal.read_dataset(dataset_dir)
    out = severstal.write_train_csv(wide, tmp_path / "out" / "train.csv")
    assert out.read_text() == "ImageId,ClassId,EncodedPixels\na.jpg,1,1 2\na.jpg,3,5 4\nb.jpg,2,21 4\n"


@pytest.mark.parametrize(
    "layout, header, row_a2",
    [
        ("ImageId,EncodedPixels,ClassId", "ImageId,EncodedPixels,ClassId", "a.jpg,,2"),
        ("ImageId_ClassId,EncodedPixels", "ImageId_ClassId,EncodedPixels", "a.jpg_2,"),
    ],
)
def test_submission_lists_every_image_and_class(dataset_dir, tmp_path, layout, header, row_a2):
    wide = severstal.read_dataset(dataset_dir)
    lines = severstal.write_submission(wide, tmp_path / "submission.csv", layout=layout).read_text().splitlines()
    assert lines[0] == header
    assert len(lines) == 1 + 3 * 4
    assert row_a2 in lines
    back = severstal.read_train_csv(tmp_path / "submission.csv", shape=SHAPE, n_classes=4)
    pd.testing.assert_frame_equal(back, wide.assign(Height=4, Width=6))


def test_submission_layout_is_checked(dataset_dir, tmp_path):
    with pytest.raises(ValueError, match="layout must be one of"):
        severstal.write_submission(severstal.read_dataset(dataset_dir), tmp_path / "s.csv", layout="csv")


def test_atomic_write_gives_readable_files(tmp_path):
    target = files.atomic_write_text(tmp_path / "report.html", "<html></html>\n")
    assert target.stat().st_mode & 0o777 == 0o644


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    target = files.atomic_write_text(tmp_path / "train.csv", "old\n")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        files.atomic_write_text(target, "new\n")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["train.csv"]


def test_decode_masks_matches_pixels(dataset_dir):
    wide = severstal.read_dataset(dataset_dir)
    masks = severstal.decode_masks(wide.loc["a.jpg"])
    expected_class1 = np.zeros(SHAPE, np.uint8)
    expected_class1[0:2, 0] = 1  # pixels 1-2 = first column, rows 0-1
    expected_class3 = np.zeros(SHAPE, np.uint8)
    expected_class3[:, 1] = 1  # pixels 5-8 = second column
    np.testing.assert_array_equal(masks[..., 0], expected_class1)
    np.testing.assert_array_equal(masks[..., 2], expected_class3)
    assert masks[..., 1].sum() == 0 and masks[..., 3].sum() == 0
    assert severstal.encode_masks(masks) == ["1 2", "", "5 4", ""]


def test_stack_unstack_round_trip():
    layers = [np.eye(3, dtype=np.uint8), np.zeros((3, 3), np.uint8), np.ones((3, 3), bool)]
    stacked = severstal.stack_masks(layers)
    assert stacked.shape == (3, 3, 3) and stacked.dtype == np.uint8
    for original, back in zip(layers, severstal.unstack_masks(stacked)):
        np.testing.assert_array_equal(back, original.astype(np.uint8))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: severstal.stack_masks([]), "at least one"),
        (lambda: severstal.stack_masks([np.zeros((2, 2)), np.zeros((2, 3))]), "same shape"),
        (lambda: severstal.unstack_masks(np.zeros((2, 2))), r"\(H, W, C\)"),
    ],
)
def test_stack_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_classes_and_splits_files(tmp_path):
    severstal.write_classes(tmp_path, {1: "inclusion", 2: "patches"})
    assert severstal.read_classes(tmp_path) == {1: "inclusion", 2: "patches"}
    splits = pd.DataFrame({"split": ["train", "val"], "group": ["g1", "g2"]}, index=pd.Index(["b.jpg", "a.jpg"], name="ImageId"))
    severstal.write_splits(tmp_path, splits)
    assert (tmp_path / "splits.csv").read_text().splitlines() == ["ImageId,split,group", "a.jpg,val,g2", "b.jpg,train,g1"]
    pd.testing.assert_frame_equal(severstal.read_splits(tmp_path).sort_index(), splits.sort_index())


# (name, train.csv bytes, error words) read with read_train_csv(shape=...): no classes.csv bounds them
HOSTILE_CSV_CASES = [
    ("class id far too large", b"ImageId,ClassId,EncodedPixels\na.jpg,1000,1 2\n", "line 2: ClassId '1000' is not an integer in 1..255"),
    ("class id in float notation", b"ImageId,ClassId,EncodedPixels\na.jpg,1,1 1\na.jpg,1e2,1 2\n", "line 3: ClassId '1e2' is not an integer"),
    ("image id leaving the folder", b"ImageId,ClassId,EncodedPixels\n../x.jpg,1,1 2\n", "line 2: ImageId '../x.jpg' must be a plain file name"),
    ("image id in a sub-folder", b"ImageId,ClassId,EncodedPixels\na.jpg,1,1 1\nsub/b.jpg,1,1 2\n", "line 3: ImageId 'sub/b.jpg'"),
    ("both layouts", b"ImageId,ClassId,EncodedPixels,ImageId_ClassId\na.jpg,1,1 2,a.jpg_2\n", "holds both layouts' columns"),
    ("empty file", b"", "the file is empty"),
    ("UTF-16 file", "ImageId,ClassId,EncodedPixels\na.jpg,1,1 2\n".encode("utf-16"), "looks like UTF-16"),
    ("Latin-1 file", "ImageId,ClassId,EncodedPixels\na.jpg,1,1 2\nbr\xfbl\xe9.jpg,1,1 2\n".encode("latin-1"), "line 3: byte 0xfb is not UTF-8"),
    ("overflowing RLE", f"ImageId,ClassId,EncodedPixels\na.jpg,2,1 {2**63}\n".encode(), "ImageId a.jpg ClassId 2: RLE token 2 is far too large"),
    ("runs that overflow int64 once added",  # killed the kernel (SIGSEGV) before
     f"ImageId,ClassId,EncodedPixels\na.jpg,2,1 {2**62} {2**62 + 1} {2**62} {2**63 - 1} {2**62}\n".encode(),
     "ImageId a.jpg ClassId 2: run 2: start 4611686018427387905 is past the last pixel 24"),
]


@pytest.mark.parametrize("name, raw, message", HOSTILE_CSV_CASES, ids=[c[0] for c in HOSTILE_CSV_CASES])
def test_hostile_csv_is_refused_naming_file_and_line(tmp_path, name, raw, message):
    (tmp_path / "train.csv").write_bytes(raw)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")) as err:
        severstal.read_train_csv(tmp_path / "train.csv", shape=SHAPE)
    assert "train.csv" in str(err.value) or "ImageId a.jpg" in str(err.value)


def test_a_bom_is_accepted(dataset_dir):
    (dataset_dir / "train.csv").write_bytes(b"\xef\xbb\xbf" + (dataset_dir / "train.csv").read_bytes())
    assert severstal.read_dataset(dataset_dir).loc["a.jpg", 1] == "1 2"


@pytest.mark.parametrize(
    "text, message",
    [
        ("ClassId,Name\n1,pits\n1,holes\n", "line 3: ClassId 1 appears twice"),
        ("ClassId,Name\n1,pits\n9999,holes\n", "line 3: ClassId '9999' is not an integer in 1..255"),
        ("Id,Name\n1,pits\n", "missing columns \\['ClassId'\\]"),
    ],
)
def test_bad_classes_file_is_named(tmp_path, text, message):
    (tmp_path / "classes.csv").write_text(text)
    with pytest.raises(ValueError, match=message) as err:
        severstal.read_classes(tmp_path)
    assert "classes.csv" in str(err.value)


def test_classes_file_with_a_gap_keeps_the_highest_class(dataset_dir):
    (dataset_dir / "classes.csv").write_text("ClassId,Name\n1,pits\n3,holes\n")
    assert severstal.class_columns(severstal.read_dataset(dataset_dir)) == [1, 2, 3]


def test_duplicate_image_ids_are_refused_in_splits(tmp_path):
    (tmp_path / "splits.csv").write_text("ImageId,split,group\na.jpg,train,g1\na.jpg,val,g2\n")
    with pytest.raises(ValueError, match="line 3: ImageId 'a.jpg' appears twice"):
        severstal.read_splits(tmp_path)


@pytest.mark.parametrize("write", [severstal.write_submission, severstal.write_train_csv])
def test_duplicate_image_ids_are_refused_when_writing(dataset_dir, tmp_path, write):
    wide = severstal.read_dataset(dataset_dir)
    doubled = pd.concat([wide, wide.loc[["b.jpg"]]])
    with pytest.raises(ValueError, match="ImageId 'b.jpg' appears more than once"):
        write(doubled, tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists()


SAMPLES = {  # Kaggle's two sample-submission layouts, rows deliberately not sorted
    "ImageId,EncodedPixels,ClassId": "ImageId,EncodedPixels,ClassId\nb.jpg,1 1,1\na.jpg,1 1,2\nb.jpg,1 1,2\na.jpg,1 1,1\n",
    "ImageId_ClassId,EncodedPixels": "ImageId_ClassId,EncodedPixels\nb.jpg_1,1 1\na.jpg_2,1 1\nb.jpg_2,1 1\na.jpg_1,1 1\n",
}


def _predictions(**extra_rows) -> pd.DataFrame:
    rows = {"a.jpg": ["1 2", ""], "b.jpg": ["", "5 3"], **extra_rows}
    wide = pd.DataFrame.from_dict(rows, orient="index", columns=[1, 2])
    wide.index.name = "ImageId"
    return wide.assign(Height=4, Width=6)


@pytest.mark.parametrize("layout", list(SAMPLES))
def test_submission_like_the_sample_keeps_its_rows_order_and_layout(tmp_path, layout):
    (tmp_path / "sample_submission.csv").write_text(SAMPLES[layout])
    path = severstal.write_submission_like(_predictions(), tmp_path / "sample_submission.csv", tmp_path / "submission.csv")
    lines = path.read_text().splitlines()
    assert lines[0] == layout
    expected = {"ImageId,EncodedPixels,ClassId": ["b.jpg,,1", "a.jpg,,2", "b.jpg,5 3,2", "a.jpg,1 2,1"],
                "ImageId_ClassId,EncodedPixels": ["b.jpg_1,", "a.jpg_2,", "b.jpg_2,5 3", "a.jpg_1,1 2"]}[layout]
    assert lines[1:] == expected
    back = severstal.read_train_csv(path, shape=SHAPE, n_classes=2)
    pd.testing.assert_frame_equal(back, _predictions().sort_index())


@pytest.mark.parametrize(
    "predictions, sample, message",
    [
        (_predictions().drop(index="b.jpg"), SAMPLES["ImageId,EncodedPixels,ClassId"], "1 images of the sample submission were not predicted"),
        (_predictions(**{"c.jpg": ["", ""]}), SAMPLES["ImageId,EncodedPixels,ClassId"], "1 predicted images are not in the sample"),
        (_predictions().drop(index="b.jpg"), "ImageId,EncodedPixels,ClassId\na.jpg,1 1,3\n", "ClassId 3 is not a class of the predictions"),
        (_predictions(), "ImageId,ClassId\na.jpg,1\n", "the header must be one of"),
        (_predictions(), "ImageId,EncodedPixels,ClassId\na.jpg,1 1,1\na.jpg,,1\n", "line 3: ImageId 'a.jpg' ClassId 1 appears twice"),
        (_predictions().assign(Height=1), SAMPLES["ImageId,EncodedPixels,ClassId"], "ImageId b.jpg ClassId 2: run 1: ends at pixel 7"),
    ],
)
def test_submission_like_the_sample_refuses_what_would_not_score(tmp_path, predictions, sample, message):
    (tmp_path / "sample_submission.csv").write_text(sample)
    with pytest.raises(ValueError, match=message):
        severstal.write_submission_like(predictions, tmp_path / "sample_submission.csv", tmp_path / "submission.csv")
    assert not (tmp_path / "submission.csv").exists()
