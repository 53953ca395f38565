"""Tests of helpers.data.augment: albumentations pipelines applied identically to image and masks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers.data import augment

HEIGHT, WIDTH, N_CLASSES = 64, 256, 3
ROOT = Path(__file__).resolve().parents[1]


def _masks() -> np.ndarray:
    """uint8 0/1 ``(64, 256, 3)``: blocky, asymmetric shapes so every flip and shift shows."""
    masks = np.zeros((HEIGHT, WIDTH, N_CLASSES), dtype=np.uint8)
    masks[5:30, 10:60, 0] = 1
    masks[40:60, 20:35, 0] = 1
    masks[8:50, 150:170, 1] = 1
    masks[30:34, 90:250, 2] = 1
    masks[50:64, 200:256, 2] = 1
    return masks


def _image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH), dtype=np.uint8)


GEOMETRIC = [
    pytest.param(dict(crop_size=None, shift_scale_rotate=False), id="flips"),
    pytest.param(dict(crop_size=None, flips=False), id="shift-scale-rotate"),
    pytest.param(dict(crop_size=(32, 96), flips=False, shift_scale_rotate=False), id="crop"),
    pytest.param(dict(crop_size=(48, 128)), id="crop+flips+ssr"),
    pytest.param(dict(crop_size=(48, 128), resize_to=(32, 200)), id="resize+crop+flips+ssr"),
]


@pytest.mark.parametrize("options", GEOMETRIC)
def test_geometry_hits_image_and_masks_identically(options):
    masks = _masks()
    changed = False
    for seed in range(6):
        outputs = []
        for k in range(N_CLASSES):  # same seed, image = 255 * channel k: the same geometry each time
            transforms = augment.train_transforms(brightness_contrast=False, seed=seed, **options)
            image, out_masks = augment.apply(transforms, 255 * masks[..., k], masks)
            outputs.append(out_masks)
            exact = (image == 0) | (image == 255)  # pixels not blended by interpolation
            assert exact.mean() > 0.9
            np.testing.assert_array_equal(out_masks[..., k][exact], (image[exact] == 255).astype(np.uint8))
        for other in outputs[1:]:
            np.testing.assert_array_equal(other, outputs[0])
        changed |= outputs[0].shape != masks.shape or not np.array_equal(outputs[0], masks)
    assert changed  # the transform did something for some seed


@pytest.mark.parametrize(
    ("crop_size", "resize_to", "expected"),
    [
        ((32, 64), None, (32, 64)),
        ((64, 128), None, (64, 128)),
        ((16, 256), None, (16, 256)),
        ((80, 300), None, (80, 300)),  # larger than the image: zero-padded first
        (None, None, (HEIGHT, WIDTH)),
        (None, (32, 100), (32, 100)),
        ((16, 50), (32, 100), (16, 50)),
    ],
)
def test_output_sizes(crop_size, resize_to, expected):
    transforms = augment.train_transforms(crop_size=crop_size, resize_to=resize_to, seed=0)
    for _ in range(3):
        image, masks = augment.apply(transforms, _image(), _masks())
        assert image.shape == expected and image.dtype == np.uint8
        assert masks.shape == expected + (N_CLASSES,) and masks.dtype == np.uint8


def test_same_seed_same_augmentations():
    runs = []
    for seed in (5, 5, 6):
        transforms = augment.train_transforms(crop_size=(32, 96), seed=seed)
        runs.append([augment.apply(transforms, _image(), _masks()) for _ in range(4)])
    for (image_a, masks_a), (image_b, masks_b) in zip(runs[0], runs[1]):
        np.testing.assert_array_equal(image_a, image_b)
        np.testing.assert_array_equal(masks_a, masks_b)
    assert any(not np.array_equal(a[0], c[0]) for a, c in zip(runs[0], runs[2]))


def test_reseed_restarts_the_sequence():
    transforms = augment.train_transforms(crop_size=(32, 96))
    first = augment.apply(augment.reseed(transforms, (1, 2)), _image(), _masks())
    augment.apply(transforms, _image(), _masks())
    again = augment.apply(augment.reseed(transforms, (1, 2)), _image(), _masks())
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])


def test_flips_are_independent_draws():
    """Compose(seed=s) in albumentations 2.0.8 would fire both flips together; reseed must not."""
    picture = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    picture[0, 0] = 255
    decisions = set()
    for seed in range(40):
        transforms = augment.train_transforms(crop_size=None, shift_scale_rotate=False, brightness_contrast=False, seed=seed)
        image, _ = augment.apply(transforms, picture, _masks())
        y, x = np.argwhere(image == 255)[0]
        decisions.add((bool(x), bool(y)))
    assert decisions == {(False, False), (False, True), (True, False), (True, True)}


def test_masks_stay_binary_under_full_augmentation():
    transforms = augment.train_transforms(crop_size=(48, 160), resize_to=(60, 240), seed=3)
    for _ in range(10):
        _, masks = augment.apply(transforms, _image(), _masks())
        assert set(np.unique(masks).tolist()) <= {0, 1}


def test_defect_crop_holds_defects():
    masks = np.zeros((HEIGHT, WIDTH, N_CLASSES), dtype=np.uint8)
    masks[20:30, 230:240, 1] = 1  # one small defect near the right end
    transforms = augment.train_transforms(
        crop_size=(32, 64), flips=False, shift_scale_rotate=False, brightness_contrast=False, defect_crop_p=1.0, seed=0
    )
    for _ in range(8):
        _, out = augment.apply(transforms, _image(), masks)
        assert out[..., 1].any()


def test_eval_transforms():
    image, masks = _image(), _masks()
    same = augment.apply(augment.eval_transforms(), image, masks)
    np.testing.assert_array_equal(same[0], image)
    np.testing.assert_array_equal(same[1], masks)
    resized = augment.apply(augment.eval_transforms(resize_to=(32, 128)), image, masks)
    assert resized[0].shape == (32, 128) and resized[1].shape == (32, 128, N_CLASSES)
    assert set(np.unique(resized[1]).tolist()) <= {0, 1}
    padded = augment.apply(augment.eval_transforms(pad_to=(70, 300)), image, masks)
    assert padded[0].shape == (70, 300)
    np.testing.assert_array_equal(padded[0][:HEIGHT, :WIDTH], image)
    np.testing.assert_array_equal(padded[1][:HEIGHT, :WIDTH], masks)
    assert not padded[1][HEIGHT:].any() and not padded[0][:, WIDTH:].any()
    both = augment.apply(augment.eval_transforms(resize_to=(32, 128), pad_to=(64, 128)), image, masks)
    assert both[0].shape == (64, 128) and both[1].shape == (64, 128, N_CLASSES)
    np.testing.assert_array_equal(both[0][:32], resized[0])
    np.testing.assert_array_equal(both[1][:32], resized[1])
    assert not both[0][32:].any() and not both[1][32:].any()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: augment.train_transforms(crop_size=(0, 64)), "crop_size"),
        (lambda: augment.train_transforms(crop_size="256x512"), "crop_size"),
        (lambda: augment.train_transforms(crop_size=(1.5, 64)), "crop_size"),
        (lambda: augment.train_transforms(resize_to=(64,)), "resize_to"),
        (lambda: augment.train_transforms(defect_crop_p=1.5), "defect_crop_p"),
        (lambda: augment.eval_transforms(resize_to=(8, 16), pad_to=(8, 8)), "at least resize_to"),
        (lambda: augment.reseed(augment.eval_transforms(), -1), "seed"),
        (lambda: augment.apply(None, _image(), _masks()[:10]), "same H, W"),
    ],
)
def test_bad_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_no_tensorflow_import():
    code = (
        "import sys, helpers.data.augment, helpers.data.splits; "
        "print(any(m.split('.')[0] in ('tensorflow', 'tf_keras', 'keras') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"
