"""Tests of helpers.data.tf_augment: TF decoding and RLE masks against the project's readers, and the augmentation recipe."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from helpers.core import files, rle, severstal
from helpers.data import tf_augment
from helpers.data.synth import steel
from helpers.backend import tf

HEIGHT, WIDTH = 48, 96


def _grid(height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """A uint8 image without symmetry: each pixel's value follows from its position."""
    rows, columns = np.mgrid[:height, :width]
    return ((rows * 7 + columns * 3) % 250 + 3).astype(np.uint8)


def _decode(path) -> np.ndarray:
    return tf_augment.decode_grey(tf.io.read_file(str(path)), str(path)).numpy()


@pytest.mark.parametrize("kind", ["L", "RGB grey", "RGB colour", "RGBA", "LA", "I;16", "P", "1", "bmp", "gif", "jpeg"])
def test_decode_grey_gives_read_grey_pixels(tmp_path, kind):
    grey = _grid()
    colour = np.stack([grey, np.roll(grey, 5, axis=1), 255 - grey], axis=-1)
    suffix = {"bmp": ".bmp", "gif": ".gif", "jpeg": ".jpg"}.get(kind, ".png")
    image = {
        "L": Image.fromarray(grey), "RGB grey": Image.fromarray(np.repeat(grey[..., None], 3, axis=-1)),
        "RGB colour": Image.fromarray(colour), "RGBA": Image.fromarray(np.dstack([colour, grey])),
        "LA": Image.fromarray(np.dstack([grey, 255 - grey])), "I;16": Image.fromarray(grey.astype(np.uint16) * 250 + 7),
        "P": Image.fromarray(colour).quantize(16), "1": Image.fromarray(grey > 128), "bmp": Image.fromarray(grey),
        "gif": Image.fromarray(grey), "jpeg": Image.fromarray(np.repeat(grey[..., None], 3, axis=-1)),
    }[kind]
    path = tmp_path / f"image{suffix}"
    image.save(path)
    np.testing.assert_array_equal(_decode(path), files.read_grey(path))


def test_decode_grey_names_bad_files(tmp_path):
    good = files.write_image(tmp_path / "good.jpg", _grid())
    data = good.read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.png").write_bytes(b"not an image")
    for name in ("cut.jpg", "text.png"):
        with pytest.raises(tf.errors.InvalidArgumentError, match=name):
            _decode(tmp_path / name)
    with pytest.raises(tf.errors.InvalidArgumentError, match="good.jpg"):
        tf_augment.read_grey(tf.io.read_file(str(good)), tf.constant([HEIGHT, WIDTH + 1]), str(good))


def _reaches_size_check(tensor: tf.Tensor) -> bool:
    """Whether computing ``tensor`` runs an op of the ``size_check`` Assert first (through data or control edges)."""
    seen, stack = set(), [tensor.op]
    while stack:
        op = stack.pop()
        if op.name in seen:
            continue
        seen.add(op.name)
        if "size_check" in op.name:
            return True
        stack += [i.op for i in op.inputs] + list(op.control_inputs)
    return False


@pytest.mark.parametrize("jpeg_window", [False, True])
def test_size_check_runs_before_the_image_is_used(jpeg_window):
    """Under a parallel map, a wrong-size file must fail on its size check (naming it), not on a later shape op."""
    def read(data, shape):
        if jpeg_window:
            return tf_augment._jpeg_window(data, shape, "x.jpg", tf.constant(0), tf.constant(0), 2, 2)
        return tf_augment.read_grey(data, shape, "x.png")

    with tf.Graph().as_default():  # no automatic control dependencies: only the edges the code itself makes
        image = read(tf.compat.v1.placeholder(tf.string, []), tf.compat.v1.placeholder(tf.int64, [2]))
        assert _reaches_size_check(image)


@pytest.fixture(scope="module")
def strips(tmp_path_factory):
    """6 synthetic 64x256 steel strips with defects: (folder, wide table)."""
    folder = tmp_path_factory.mktemp("tf_augment") / "steel"
    wide = steel.make_steel_dataset(folder, n_images=6, height=64, width=256, seed=1, progress=False)
    return folder, wide


def _runs(row, classes) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    shape = (int(row["Height"]), int(row["Width"]))
    begins, ends, kinds = [], [], []
    for k, class_id in enumerate(classes):
        starts, lengths = rle.parse(row[class_id], shape)
        begins.append(starts - 1)
        ends.append(starts - 1 + lengths)
        kinds.append(np.full(starts.size, k))
    return tuple(tf.constant(np.concatenate(v).astype(np.int64)) for v in (begins, ends, kinds))


def test_masks_from_runs_equal_decode_masks(strips):
    _, wide = strips
    classes = severstal.class_columns(wide)
    for image_id, row in wide.iterrows():
        masks = tf_augment.masks_from_runs(*_runs(row, classes), int(row["Height"]), int(row["Width"]), len(classes))
        np.testing.assert_array_equal(masks.numpy(), severstal.decode_masks(row))
    # touching runs, the first and the last pixel, a column-major run across columns
    shape = (4, 3)
    row = {"Height": 4, "Width": 3, 1: "1 2 3 3 12 1", 2: "", 3: "4 2"}
    begins, ends, kinds = [], [], []
    for k, class_id in enumerate((1, 2, 3)):
        starts, lengths = rle.parse(row[class_id], shape)
        begins += list(starts - 1)
        ends += list(starts - 1 + lengths)
        kinds += [k] * starts.size
    masks = tf_augment.masks_from_runs(tf.constant(begins, tf.int64), tf.constant(ends, tf.int64), tf.constant(kinds, tf.int64), 4, 3, 3)
    expected = np.stack([rle.decode(row[c], shape) for c in (1, 2, 3)], axis=-1)
    np.testing.assert_array_equal(masks.numpy(), expected)


def test_rasterise_window_past_the_edge_is_zero_padded(strips):
    _, wide = strips
    classes = severstal.class_columns(wide)
    row = wide.iloc[0]
    full = severstal.decode_masks(row)
    pixels, kinds = tf_augment.run_pixels(*_runs(row, classes))
    window = tf_augment.rasterise(pixels, kinds, 64, len(classes), (-5, 200, 80, 100)).numpy()
    padded = np.pad(full, [[5, 80 - 5 - 64], [0, 44], [0, 0]])
    np.testing.assert_array_equal(window, padded[:, 200:300])


def _pair(recipe, image, masks, seed):
    out_image, out_masks = tf_augment.augment_pair(recipe, tf.constant(image), tf.constant(masks), tf.constant(seed, tf.int64))
    return out_image.numpy(), out_masks.numpy()


@pytest.mark.parametrize("crop", [(32, 64), (64, 128), (80, 300)])  # smaller than, equal to and larger than 64x256 (padded)
def test_augment_runs_equals_augment_pair(strips, crop):
    """Choosing the window first and decoding / rasterising only it gives the full-image result."""
    folder, wide = strips
    classes = severstal.class_columns(wide)
    recipe = tf_augment.train_augment(crop_size=crop, defect_crop_p=0.7)
    for (image_id, row), seed in zip(wide.iterrows(), range(6)):
        path = str(folder / "train_images" / image_id)
        image, masks = files.read_grey(path), severstal.decode_masks(row)
        runs = _runs(row, classes)
        pixels, _ = tf_augment.run_pixels(*runs)
        expected = tf_augment.augment_pair(recipe, tf.constant(image), tf.constant(masks), tf.constant([3, seed], tf.int64),
                                           defect_pixels=pixels)
        for source in (tf.io.read_file(path), tf.constant(image)):  # encoded (the pipeline) or decoded (its cache)
            got = tf_augment.augment_runs(recipe, source, tf.constant([64, 256]), *runs, len(classes),
                                          tf.constant([3, seed], tf.int64), path=path)
            np.testing.assert_array_equal(got[0].numpy(), expected[0].numpy())
            np.testing.assert_array_equal(got[1].numpy(), expected[1].numpy())


def _aligned(image: np.ndarray) -> np.ndarray:
    """Masks that follow the image's pixels: class 1 where it is > 128, class 2 where it is odd."""
    return np.stack([image > 128, image % 2 == 1], axis=-1).astype(np.uint8)


def test_crop_and_flips_move_image_and_masks_alike():
    image = _grid(64, 128)
    recipe = tf_augment.train_augment(crop_size=(32, 48), shift_scale_rotate=False, brightness_contrast=False, defect_crop_p=0.5)
    seen = set()
    for seed in range(12):
        out_image, out_masks = _pair(recipe, image, _aligned(image), [0, seed])
        assert out_image.shape == (32, 48) and out_masks.shape == (32, 48, 2)
        np.testing.assert_array_equal(out_masks, _aligned(out_image.astype(np.uint8)))
        # the crop is a window of one of the four flips of the image
        for flipped in (image, image[:, ::-1], image[::-1], image[::-1, ::-1]):
            found = [(y, x) for y in range(33) for x in range(81) if np.array_equal(flipped[y:y + 32, x:x + 48], out_image)]
            if found:
                seen.add(flipped.tobytes())
                break
        else:
            pytest.fail(f"seed {seed}: the output is no window of a flipped image")
    assert len(seen) >= 3  # fixed seeds 0..11 draw several of the four flips


def test_affine_moves_masks_with_the_image():
    masks = np.zeros((64, 128, 1), np.uint8)
    masks[16:48, 30:90] = 1
    image = (masks[..., 0] * 200 + 20).astype(np.uint8)
    recipe = tf_augment.train_augment(crop_size=None, flips=False, brightness_contrast=False)
    moved = 0
    for seed in range(8):
        out_image, out_masks = _pair(recipe, image, masks, [0, seed])
        assert set(np.unique(out_masks)) <= {0, 1}
        moved += not np.array_equal(out_masks, masks)
        agree = ((out_image > 120) == (out_masks[..., 0] == 1)).mean()
        assert agree > 0.98, (seed, agree)
    assert 0 < moved < 8  # p = 0.5: some seeds warp, some do not


def test_same_seed_same_output_and_ranges(strips):
    folder, wide = strips
    image_id = wide.index[0]
    image, masks = files.read_grey(folder / "train_images" / image_id), severstal.decode_masks(wide.loc[image_id])
    recipe = tf_augment.train_augment(crop_size=(32, 128))
    first = _pair(recipe, image, masks, [5, 9])
    again = _pair(recipe, image, masks, [5, 9])
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    others = [_pair(recipe, image, masks, [5, s]) for s in range(10, 14)] + [_pair(recipe, image, masks, [6, 9])]
    assert all(not np.array_equal(o[0], first[0]) for o in others)
    for out_image, out_masks in [first, *others]:
        assert out_image.dtype == np.float32 and out_masks.dtype == np.float32
        assert out_image.min() >= 0 and out_image.max() <= 255 and np.array_equal(out_image, np.round(out_image))
        assert set(np.unique(out_masks)) <= {0, 1}


def test_defect_crop_holds_a_defect_pixel():
    masks = np.zeros((64, 512, 2), np.uint8)
    masks[40:44, 450:452, 1] = 1  # one small defect far from most windows
    image = np.full((64, 512), 100, np.uint8)
    always = tf_augment.train_augment(crop_size=(32, 64), flips=False, shift_scale_rotate=False, brightness_contrast=False, defect_crop_p=1.0)
    never = tf_augment.Augment(True, crop_size=(32, 64), defect_crop_p=0.0)
    assert all(_pair(always, image, masks, [0, s])[1].any() for s in range(10))
    assert sum(_pair(never, image, masks, [0, s])[1].any() for s in range(10)) < 5


def test_eval_recipe_pads_and_resizes(strips):
    folder, wide = strips
    image_id = wide.index[1]
    image, masks = files.read_grey(folder / "train_images" / image_id), severstal.decode_masks(wide.loc[image_id])
    padded_image, padded_masks = _pair(tf_augment.eval_augment(pad_to=(70, 260)), image, masks, [0, 0])
    np.testing.assert_array_equal(padded_image, np.pad(image, [[0, 6], [0, 4]]).astype(np.float32))
    np.testing.assert_array_equal(padded_masks, np.pad(masks, [[0, 6], [0, 4], [0, 0]]))
    assert tf_augment.eval_augment(resize_to=(32, 128), pad_to=(40, 128)).output_size(64, 256) == (40, 128)
    assert tf_augment.train_augment(crop_size=(32, 64)).output_size(16, 16) == (32, 64)


@pytest.mark.parametrize(("make", "message"), [
    (lambda: tf_augment.train_augment(crop_size=(0, 5)), "crop_size"),
    (lambda: tf_augment.train_augment(defect_crop_p=1.5), "defect_crop_p"),
    (lambda: tf_augment.eval_augment(resize_to=(64, 64), pad_to=(32, 64)), "pad_to must be at least"),
    (lambda: tf_augment.Augment(True, pad_to=(8, 8)), "pad_to is for evaluation"),
    (lambda: tf_augment.Augment(False, flips=True), "evaluation recipe"),
])
def test_recipe_checks_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(("size", "at_most"), [
    ((HEIGHT, WIDTH), 0),  # same size: unchanged
    ((24, 48), 0),  # factor 2: OpenCV and TensorFlow round alike
    ((12, 24), 1),  # factor 4: OpenCV rounds half to even, here half up
    ((30, 70), 1),  # non-integer factors
])
def test_resize_grey_is_an_area_resize_within_one_grey_level_of_opencv(size, at_most):
    import cv2

    image = _grid()
    resized = tf_augment.resize_grey(tf.constant(image), size).numpy()
    assert resized.dtype == np.uint8 and resized.shape == size
    assert np.abs(resized.astype(int) - cv2.resize(image, size[::-1], interpolation=cv2.INTER_AREA)).max() == at_most
    if size == (HEIGHT, WIDTH):
        np.testing.assert_array_equal(resized, image)


def test_augment_image_is_augment_pair_without_masks():
    image = tf.constant(_grid())
    recipe = tf_augment.train_augment(crop_size=None, flips=False)
    for seed in ([0, 1], [0, 2]):
        alone = tf_augment.augment_image(recipe, image, tf.constant(seed, tf.int64)).numpy()
        paired, _ = tf_augment.augment_pair(recipe, image, tf.zeros((HEIGHT, WIDTH, 2), tf.uint8), tf.constant(seed, tf.int64))
        np.testing.assert_array_equal(alone, paired.numpy())
        assert alone.dtype == np.float32 and alone.shape == (HEIGHT, WIDTH)
