"""Losses: hand-computed values of the numpy references, Keras agreement, gradients, stability."""

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers.modeling import losses

ROOT = Path(__file__).resolve().parents[1]
LN2 = math.log(2)


def masks(*images: list[list[float]]) -> np.ndarray:
    """``(N, 1, W, C)`` float32 array from per-image lists of per-class pixel rows."""
    return np.array([[np.array(classes, dtype=np.float32).T] for classes in images], dtype=np.float32)


def test_masks_helper_layout():
    array = masks([[1, 0], [0, 0]])
    assert array.shape == (1, 1, 2, 2)
    assert array[0, 0, :, 0].tolist() == [1, 0]


# (name, function, kwargs, y_true, y_prob, expected) -- expected values worked out by hand
CASES = [
    ("bce half", losses.bce, {}, masks([[1, 0]]), masks([[0.5, 0.5]]), LN2),
    ("bce two pixels", losses.bce, {}, masks([[1, 0]]), masks([[0.9, 0.2]]), -(math.log(0.9) + math.log(0.8)) / 2),
    ("bce perfect at 0 and 1", losses.bce, {}, masks([[1, 0]]), masks([[1, 0]]), 0.0),
    ("bce wrong at 0 and 1 is clipped", losses.bce, {}, masks([[1, 0]]), masks([[0, 1]]), -math.log(1e-7)),
    ("bce class weights", losses.bce, {"class_weights": [1, 3]},
     masks([[1, 0], [1, 1]]), masks([[1, 0], [0.5, 0.5]]), 0.75 * LN2),
    # inter 1, |y| 2, |p| 2: (2*1 + 1) / (4 + 1) = 0.6
    ("dice overlap", losses.dice, {}, masks([[1, 1, 0, 0]]), masks([[1, 0, 1, 0]]), 0.4),
    # soft: inter 1, |y| 2, |p| 1: (2 + 1) / (3 + 1) = 0.75
    ("dice soft", losses.dice, {}, masks([[1, 1, 0, 0]]), masks([[0.5, 0.5, 0, 0]]), 0.25),
    ("dice both empty", losses.dice, {}, masks([[0, 0, 0, 0]]), masks([[0, 0, 0, 0]]), 0.0),
    # smooth 0.5: (2 + 0.5) / (3 + 0.5) = 5/7
    ("dice smooth", losses.dice, {"smooth": 0.5}, masks([[1, 1, 0, 0]]), masks([[0.5, 0.5, 0, 0]]), 2 / 7),
    # per (image, class): image A perfect (loss 0), image B (0 + 1)/(1 + 1) -> 0.5; mean 0.25
    # (a batch-level Dice would be (8 + 1)/(9 + 1) -> 0.1)
    ("dice per image then mean", losses.dice, {},
     masks([[1, 1, 1, 1]], [[1, 0, 0, 0]]), masks([[1, 1, 1, 1]], [[0, 0, 0, 0]]), 0.25),
    ("dice over the batch", losses.dice, {"per_image": False},
     masks([[1, 1, 1, 1]], [[1, 0, 0, 0]]), masks([[1, 1, 1, 1]], [[0, 0, 0, 0]]), 0.1),
    # one empty pair with a faint 0.1 everywhere: per pair (0 + 1)/(0.4 + 1) -> loss 2/7;
    # over the batch with a perfect pair: inter 4, total 8.4: (8 + 1)/(8.4 + 1) -> loss 0.4/9.4
    ("dice empty pair per image", losses.dice, {},
     masks([[1, 1, 1, 1]], [[0, 0, 0, 0]]), masks([[1, 1, 1, 1]], [[0.1, 0.1, 0.1, 0.1]]), 1 / 7),
    ("dice empty pair over the batch", losses.dice, {"per_image": False},
     masks([[1, 1, 1, 1]], [[0, 0, 0, 0]]), masks([[1, 1, 1, 1]], [[0.1, 0.1, 0.1, 0.1]]), 0.4 / 9.4),
    # class 0 batch: inter 1, total 3 -> 0.25; class 1 batch: inter 0, total 1 -> 0.5; mean 0.375
    ("dice over the batch per class", losses.dice, {"per_image": False},
     masks([[1, 0], [0, 0]], [[1, 0], [1, 0]]), masks([[1, 0], [0, 0]], [[0, 0], [0, 0]]), 0.375),
    ("bce_dice over the batch", losses.bce_dice, {"per_image": False},
     masks([[1, 0]]), masks([[0.5, 0.5]]), LN2 + 1 / 3),
    ("dice class weights", losses.dice, {"class_weights": [1, 3]},
     masks([[1, 1, 1, 1], [1, 0, 0, 0]]), masks([[1, 1, 1, 1], [0, 0, 0, 0]]), 0.375),
    # bce ln2; dice: inter 0.5, total 2: (1 + 1)/(2 + 1) -> loss 1/3
    ("bce_dice default weights", losses.bce_dice, {}, masks([[1, 0]]), masks([[0.5, 0.5]]), LN2 + 1 / 3),
    ("bce_dice weights", losses.bce_dice, {"bce_weight": 0.5, "dice_weight": 2.0},
     masks([[1, 0]]), masks([[0.5, 0.5]]), 0.5 * LN2 + 2 / 3),
    # y=1, p=.5: .25 * .5^2 * ln2; y=0, p=.5: .75 * .5^2 * ln2; mean -> ln2 / 8
    ("focal default", losses.focal, {}, masks([[1, 0]]), masks([[0.5, 0.5]]), LN2 / 8),
    ("focal no alpha", losses.focal, {"alpha": None}, masks([[1, 0]]), masks([[0.5, 0.5]]), LN2 / 4),
    ("focal gamma 0 no alpha is bce", losses.focal, {"gamma": 0.0, "alpha": None},
     masks([[1, 0]]), masks([[0.9, 0.2]]), -(math.log(0.9) + math.log(0.8)) / 2),
    ("focal perfect at 0 and 1", losses.focal, {}, masks([[1, 0]]), masks([[1, 0]]), 0.0),
]


@pytest.mark.parametrize("name, fn, kwargs, y_true, y_prob, expected", CASES, ids=[c[0] for c in CASES])
def test_numpy_losses_match_hand_values(name, fn, kwargs, y_true, y_prob, expected):
    assert fn(y_true, y_prob, **kwargs) == pytest.approx(expected, rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("fn", [losses.bce, losses.dice, losses.bce_dice, losses.focal])
def test_shape_mismatch_names_both_shapes(fn):
    with pytest.raises(ValueError, match=r"\(1, 1, 2, 1\).*\(1, 1, 3, 1\)"):
        fn(np.zeros((1, 1, 2, 1)), np.zeros((1, 1, 3, 1)))


@pytest.mark.parametrize("y_true, y_prob, match", [
    (np.zeros((2, 2)), np.zeros((2, 2)), "4-D"),
    (np.zeros((1, 1, 2, 1)), np.full((1, 1, 2, 1), 1.5), r"y_prob must hold values in \[0, 1\]"),
    (np.zeros((1, 1, 2, 1)), np.full((1, 1, 2, 1), np.nan), r"y_prob.*\[nan\]"),
    (np.full((1, 1, 2, 1), -1.0), np.zeros((1, 1, 2, 1)), "y_true"),
    (np.zeros((0, 1, 2, 1)), np.zeros((0, 1, 2, 1)), "empty"),
])
def test_bad_arrays_raise(y_true, y_prob, match):
    with pytest.raises(ValueError, match=match):
        losses.bce(y_true, y_prob)


@pytest.mark.parametrize("fn, kwargs, match", [
    (losses.dice, {"smooth": 0.0}, "smooth"),
    (losses.dice, {"per_image": "no"}, "per_image must be True or False"),
    (losses.focal, {"gamma": -1.0}, "gamma"),
    (losses.focal, {"alpha": 1.5}, "alpha"),
    (losses.bce_dice, {"dice_weight": -1.0}, "dice_weight"),
    (losses.bce, {"class_weights": [1, 1, 1]}, "2 numbers"),
    (losses.bce, {"class_weights": [0, 0]}, "not all 0"),
    (losses.bce, {"class_weights": [1, -1]}, ">= 0"),
])
def test_bad_parameters_raise(fn, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fn(masks([[1, 0], [0, 1]]), masks([[0.5, 0.5], [0.5, 0.5]]), **kwargs)


def test_get_loss_rejects_unknown_names_and_parameters():
    with pytest.raises(ValueError, match="allowed: bce, dice, bce_dice, focal"):
        losses.get_loss("jaccard")
    with pytest.raises(ValueError, match=r"\['gama'\].*allowed: gamma, alpha, class_weights"):
        losses.get_loss("focal", gama=2)
    with pytest.raises(ValueError, match="smooth"):
        losses.get_loss("dice", smooth=-1)


# ----------------------------------------------------------------------------- Keras

def fixed_batch() -> tuple[np.ndarray, np.ndarray]:
    """Deterministic (3, 6, 5, 3) truths/probabilities with exact 0s and 1s and one empty (image, class) pair."""
    rng = np.random.default_rng(1234)
    y_true = (rng.random((3, 6, 5, 3)) > 0.6).astype(np.float32)
    y_true[1, :, :, 2] = 0
    y_prob = rng.random((3, 6, 5, 3)).astype(np.float32)
    y_prob[0, 0, :, :] = 0.0
    y_prob[0, 1, :, :] = 1.0
    return y_true, y_prob


KERAS_CASES = [
    ("bce", {}),
    ("bce", {"class_weights": [1, 2, 0.5]}),
    ("dice", {}),
    ("dice", {"smooth": 1e-3, "class_weights": [0, 1, 1]}),
    ("bce_dice", {}),
    ("bce_dice", {"bce_weight": 0.3, "dice_weight": 2.0, "smooth": 0.5}),
    ("dice", {"per_image": False}),
    ("bce_dice", {"per_image": False, "class_weights": [1, 2, 0.5]}),
    ("focal", {}),
    ("focal", {"gamma": 0.5, "alpha": None}),
]


@pytest.mark.parametrize("name, kwargs", KERAS_CASES, ids=[f"{n}-{sorted(k)}" for n, k in KERAS_CASES])
def test_keras_losses_agree_with_numpy(name, kwargs):
    from helpers.backend import tf

    y_true, y_prob = fixed_batch()
    per_image = losses.get_loss(name, **kwargs)(tf.constant(y_true), tf.constant(y_prob))
    assert per_image.shape == (3,) and per_image.dtype == tf.float32
    expected = getattr(losses, name)(y_true, y_prob, **kwargs)
    assert float(tf.reduce_mean(per_image)) == pytest.approx(expected, rel=1e-5, abs=1e-6)
    if kwargs.get("per_image") is False:
        return  # the batch Dice is shared by the images: there is no image-by-image value
    for i in range(3):  # and image by image
        assert float(per_image[i]) == pytest.approx(getattr(losses, name)(y_true[i:i + 1], y_prob[i:i + 1], **kwargs),
                                                    rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("name", losses.LOSSES)
def test_keras_losses_are_differentiable_and_finite_at_0_and_1(name):
    from helpers.backend import tf

    y_true, y_prob = fixed_batch()
    y_prob[0, 2] = 1 - y_true[0, 2]  # confidently wrong pixels
    y_prob[0, 3] = y_true[0, 3]  # confidently right pixels
    y_pred = tf.Variable(y_prob)
    with tf.GradientTape() as tape:
        value = tf.reduce_mean(losses.get_loss(name)(tf.constant(y_true), y_pred))
    gradient = tape.gradient(value, y_pred).numpy()
    assert np.isfinite(float(value))
    assert np.all(np.isfinite(gradient))
    assert np.abs(gradient).sum() > 0


@pytest.mark.parametrize("name", losses.LOSSES)
def test_keras_losses_accept_float16_and_compute_in_float32(name):
    from helpers.backend import tf

    y_true, y_prob = fixed_batch()
    y_prob16 = y_prob.astype(np.float16)
    per_image = losses.get_loss(name)(tf.constant(y_true.astype(np.uint8)), tf.constant(y_prob16))
    assert per_image.dtype == tf.float32
    expected = getattr(losses, name)(y_true, y_prob16.astype(np.float32))
    assert float(tf.reduce_mean(per_image)) == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_keras_loss_names_and_class_weight_length_check():
    from helpers.backend import tf

    loss = losses.get_loss("bce_dice", class_weights=[1, 1])
    assert loss.__name__ == "bce_dice_loss"
    with pytest.raises(ValueError, match="2 values but y_pred has 3 classes"):
        loss(tf.zeros((1, 2, 2, 3)), tf.zeros((1, 2, 2, 3)))


# --------------------------------------------------------------------------- masked multi-label BCE

NAN = float("nan")
# (labels, probabilities, expected loss): one image per row of hand-computed cases
MASKED_BCE_CASES = [
    ([[1.0, 0.0]], [[0.5, 0.5]], np.log(2)),
    ([[1.0, NAN]], [[0.5, 0.9]], np.log(2)),  # the ignored label does not count, whatever p
    ([[NAN, NAN]], [[0.3, 0.9]], 0.0),  # nothing known: no loss
    ([[1.0, 0.0], [NAN, 1.0]], [[0.5, 0.5], [0.1, 0.25]], (np.log(2) + np.log(4)) / 2),
]


@pytest.mark.parametrize("y_true, y_prob, expected", MASKED_BCE_CASES)
def test_masked_bce_hand_computed(y_true, y_prob, expected):
    assert losses.masked_bce(y_true, y_prob) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("y_true, y_prob, expected", MASKED_BCE_CASES)
def test_masked_bce_keras_agrees(y_true, y_prob, expected):
    per_image = losses.masked_bce_loss()(np.array(y_true, np.float32), np.array(y_prob, np.float32)).numpy()
    assert float(np.mean(per_image)) == pytest.approx(expected, abs=1e-5)


def test_masked_bce_keras_gradient_ignores_unknown_labels():
    from helpers.backend import tf

    prob = tf.Variable([[0.5, 0.9]])
    with tf.GradientTape() as tape:
        value = tf.reduce_mean(losses.masked_bce_loss()(tf.constant([[1.0, NAN]]), prob))
    gradient = tape.gradient(value, prob).numpy()
    assert gradient[0, 1] == 0 and gradient[0, 0] < 0 and np.isfinite(gradient).all()


@pytest.mark.parametrize("y_true, y_prob", [([[2.0]], [[0.5]]), ([[1.0]], [[1.5]]), ([1.0, 0.0], [0.5, 0.5]), ([[1.0, 0.0]], [[0.5]])])
def test_masked_bce_refuses_bad_inputs(y_true, y_prob):
    with pytest.raises(ValueError):
        losses.masked_bce(y_true, y_prob)
