import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers.core import files
from helpers.data import pipeline


def _png_declaring(path: Path, height: int, width: int) -> Path:
    """A small grey PNG whose header claims ``height x width`` pixels (a decompression bomb's header)."""
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = data[12:29]  # chunk type + 13 bytes of data
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("size", [(30000, 30000), (10000, 10000)])  # above Pillow's error limit / its warning limit
def test_decompression_bombs_are_refused_naming_the_file(tmp_path, size):
    bomb = _png_declaring(tmp_path / "bomb.png", *size)
    for read in (files.image_size, files.read_grey, files.image_header, files.read_label_image):
        with pytest.raises(ValueError, match=r"refusing image .*bomb\.png"):
            read(bomb)


def test_check_dataset_lists_a_bomb_instead_of_aborting(tmp_path):
    files.write_image(tmp_path / "train_images" / "fine.png", np.zeros((4, 6), np.uint8))
    _png_declaring(tmp_path / "train_images" / "bomb.png", 30000, 30000)
    (tmp_path / "train.csv").write_text("ImageId,ClassId,EncodedPixels\nfine.png,1,1 2\n")
    problems = pipeline.check_dataset(tmp_path, progress=False, num_workers=1)
    assert list(problems["ImageId"]) == ["bomb.png"]
    assert "refusing image" in problems["problem"].iloc[0]


# Labels of an 8x10 index mask: class 3 in a block, class 1 in a corner, 0 = background.
LABELS = np.zeros((8, 10), np.uint8)
LABELS[2:5, 3:7] = 3
LABELS[0, 9] = 1


def _save(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array).save(path)
    return path


@pytest.mark.parametrize("mode", ["L", "P", "RGB"])
def test_read_label_image_keeps_class_ids(tmp_path, mode):
    path = tmp_path / "m.png"
    if mode == "P":
        image = Image.frombytes("P", (LABELS.shape[1], LABELS.shape[0]), LABELS.tobytes())
        image.putpalette([0, 0, 0, 200, 10, 10, 10, 200, 10, 10, 10, 200] + [0] * 756)
        image.save(path)
    else:
        _save(path, np.stack([LABELS] * 3, axis=-1) if mode == "RGB" else LABELS)
    values, _ = files.read_label_image(path)
    np.testing.assert_array_equal(values, LABELS)


def test_read_label_image_reads_1bit_as_0_1_and_rejects_colour(tmp_path):
    bits = LABELS > 0
    values, mode = files.read_label_image(_save(tmp_path / "bits.png", bits))
    assert mode == "1"
    np.testing.assert_array_equal(values, bits.astype(np.uint8))
    colour = np.zeros(LABELS.shape + (3,), np.uint8)
    colour[0, 0] = (255, 0, 0)
    with pytest.raises(ValueError, match="colour.png"):
        files.read_label_image(_save(tmp_path / "colour.png", colour))


# (stored 16-bit values, expected 8-bit values): one rule for every image, whatever its own maximum
SIXTEEN_BIT_CASES = [
    ([0, 256, 257, 65535], [0, 1, 1, 255]),  # grey 256 of a dark image is no longer stretched to 255
    ([0, 100, 200], [0, 0, 1]),  # an image whose maximum is below 256 is not left unscaled
    ([257 * 17, 257 * 200], [17, 200]),  # 8-bit data stored in 16 bits comes back exactly
]


@pytest.mark.parametrize("values, expected", SIXTEEN_BIT_CASES)
def test_sixteen_bit_images_use_one_fixed_rule(tmp_path, values, expected):
    path = tmp_path / "grey16.png"
    Image.fromarray(np.array([values], dtype=np.uint16)).save(path)
    assert Image.open(path).mode.startswith("I")
    np.testing.assert_array_equal(files.read_grey(path), np.array([expected], np.uint8))


def test_sixteen_bit_values_out_of_range_are_refused():
    with pytest.raises(ValueError, match="0..65535"):
        files.sixteen_to_eight_bits(np.array([[70000]], np.int32))


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"", "the file is empty"),
        (b"  \n\n", "the file is empty"),
        ("a,b\n1,2\n".encode("utf-16"), "looks like UTF-16"),
        ("a,b\n1,2\n".encode("utf-16-le"), "looks like UTF-16"),
        ("a,b\nx,\xe9\n".encode("latin-1"), "line 2: byte 0xe9 is not UTF-8"),
        (b'a,b\n"1,2\n', "t.csv"),  # unterminated quote
    ],
)
def test_read_csv_refuses_what_it_cannot_read_exactly(tmp_path, raw, message):
    (tmp_path / "t.csv").write_bytes(raw)
    with pytest.raises(ValueError, match=message) as err:
        files.read_csv(tmp_path / "t.csv")
    assert "t.csv" in str(err.value)


def test_read_csv_accepts_utf8_with_and_without_bom(tmp_path):
    for name, raw in (("plain.csv", "a,b\nx,é\n".encode()), ("bom.csv", "\ufeffa,b\nx,é\n".encode())):
        (tmp_path / name).write_bytes(raw)
        pd.testing.assert_frame_equal(files.read_csv(tmp_path / name), pd.DataFrame({"a": ["x"], "b": ["é"]}))


def test_read_json_names_a_truncated_file(tmp_path):
    path = files.atomic_write_json(tmp_path / "run.json", {"profile": "smoke", "notebooks": [1, 2]})
    assert files.read_json(path) == {"profile": "smoke", "notebooks": [1, 2]}
    path.write_text(path.read_text()[:-8])
    with pytest.raises(ValueError, match=r"run\.json line \d+: not valid JSON"):
        files.read_json(path)
    path.write_bytes(b"\xff\xfe{}")
    with pytest.raises(ValueError, match="not UTF-8"):
        files.read_json(path)


@pytest.mark.parametrize("relative", ["../x.jpg", "a/../../x.jpg", "/etc/passwd"])
def test_inside_refuses_paths_leaving_the_root(tmp_path, relative):
    with pytest.raises(ValueError, match="points outside"):
        files.inside(tmp_path / "images", relative, what="Path")


def test_inside_keeps_paths_within_the_root(tmp_path):
    assert files.inside(tmp_path, "train/p1/view1.png") == tmp_path / "train/p1/view1.png"
    assert files.inside(tmp_path, "a/../b.png") == tmp_path / "a/../b.png"


def test_replacing_folder_swaps_whole_and_keeps_carried_entries(tmp_path):
    final = tmp_path / "data"
    (final / "old").mkdir(parents=True)
    (final / "notes.txt").write_text("mine")
    with files.replacing_folder(final, carry=[final / "notes.txt"]) as building:
        assert building.parent == tmp_path and building.name.startswith(".data.building-")
        (building / "new").mkdir()
    assert sorted(p.name for p in final.iterdir()) == ["new", "notes.txt"]
    assert (final / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_replacing_folder_leaves_the_old_folder_on_an_error(tmp_path):
    final = tmp_path / "data"
    final.mkdir()
    (final / "train.csv").write_text("old")
    with pytest.raises(RuntimeError, match="half-way"):
        with files.replacing_folder(final) as building:
            (building / "train.csv").write_text("new")
            raise RuntimeError("half-way")
    assert (final / "train.csv").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


@pytest.mark.parametrize("final_present", [False, True])
def test_recover_folder_repairs_a_kill_during_the_swap(tmp_path, final_present):
    final, old = tmp_path / "data", tmp_path / ".data.old"
    old.mkdir()
    (old / "train.csv").write_text("old")
    dead_build = tmp_path / ".data.building-999999999"
    dead_build.mkdir()
    if final_present:
        final.mkdir()
        (final / "train.csv").write_text("new")
    files.recover_folder(final)
    assert (final / "train.csv").read_text() == ("new" if final_present else "old")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_decode_grey_reads_bytes_like_read_grey_and_tells_problems_apart(tmp_path):
    image = np.arange(48 * 64, dtype=np.uint32).reshape(48, 64).astype(np.uint8)
    path = files.write_image(tmp_path / "a.png", np.dstack([image] * 3))
    np.testing.assert_array_equal(files.decode_grey(path.read_bytes(), "a.png"), files.read_grey(path))
    bomb = _png_declaring(tmp_path / "bomb.png", 100, 100).read_bytes()
    cmyk = tmp_path / "c.tif"
    Image.fromarray(image).convert("CMYK").save(cmyk)
    cases = {
        "unreadable": (b"not an image", {}), "too_large": (bomb, {"max_pixels": 9_999}),
        "corrupt": (path.read_bytes()[: path.stat().st_size // 2], {}), "mode": (cmyk.read_bytes(), {}),
    }
    for kind, (data, options) in cases.items():
        with pytest.raises(files.ImageError, match="'up.png'") as info:
            files.decode_grey(data, "up.png", **options)
        assert info.value.kind == kind and isinstance(info.value, ValueError)
    with pytest.raises(files.ImageError, match=r"48x64 \(HxW\), larger than the model input 32x64"):
        files.decode_grey(path.read_bytes(), "up.png", max_size=(32, 64))
