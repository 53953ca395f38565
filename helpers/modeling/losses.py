"""Segmentation losses for sigmoid multi-label masks: numpy references and Keras versions.

Arrays are ``(N, H, W, C)``: ``y_true`` in [0, 1] (normally 0/1), ``y_prob`` probabilities
in [0, 1] (sigmoid outputs, one independent channel per class, as in Severstal).

Definitions (numpy and Keras compute exactly the same thing):

- **bce** -- binary cross-entropy ``-(y log p + (1 - y) log(1 - p))`` averaged over the pixels
  of each (image, class) pair.
- **dice** -- ``1 - soft Dice``. The soft Dice of one (image, class) pair is
  ``(2 sum(y p) + smooth) / (sum(y) + sum(p) + smooth)`` (sums over the H x W pixels);
  it is computed **per (image, class) pair**, not over the whole batch. With ``smooth > 0``
  a pair whose truth and prediction are both empty scores 1 (loss 0), matching the Severstal
  rule of :func:`helpers.modeling.metrics.severstal_score`. Default ``smooth = 1``.
  ``per_image=False`` sums over the whole batch instead (one Dice per class, as the default of
  ``segmentation_models.losses.DiceLoss``): faint probabilities on an empty pair then cost
  little, whereas per pair they cost almost a whole point of loss.
  The batch value then stands for every image of the batch (per replica under a distribution
  strategy), so ``sample_weight`` does not re-weight it.
- **bce_dice** -- ``bce_weight * bce + dice_weight * dice`` (defaults 1 and 1, as in
  ``segmentation_models.losses.bce_dice_loss``, but with the per-pair Dice above).
- **focal** -- binary focal loss ``-alpha (1 - p)^gamma y log p
  - (1 - alpha) p^gamma (1 - y) log(1 - p)`` per pixel, averaged like bce (``alpha=None``
  drops the alpha factors; ``gamma=0, alpha=None`` is bce).

Reduction: each loss is first a value per (image, class) pair; the classes of an image are
combined by a weighted mean with ``class_weights`` (length C, non-negative, normalised to sum
to 1; default equal weights), which gives one value per image; the numpy functions return the
mean over images. The Keras versions return the per-image values ``(N,)`` and Keras averages
them over the batch, so without ``sample_weight`` both report the same number.

Numerical safety: ``log p`` and ``log(1 - p)`` are taken of ``max(p, eps)`` and
``max(1 - p, eps)`` (``eps = 1e-7``), so predictions of exactly 0 or 1 give finite losses and
gradients. The Keras versions cast both inputs to float32 first (mixed-precision safe).

Multi-label classification (pre-training on radiograph corpora): :func:`masked_bce` takes
``(N, K)`` label vectors in which NaN marks a label to ignore (CheXpert's uncertain labels under
the ``ignore`` policy); each image's loss is the BCE averaged over its known labels (0 if it has
none), and the batch loss the mean over images. Keras version: :func:`masked_bce_loss`.

Keras versions come from :func:`get_loss`; this module imports TensorFlow only when
:func:`get_loss` is called, so the numpy functions are usable without TensorFlow::

    model.compile(optimizer="adam", loss=get_loss("bce_dice", dice_weight=2.0))

A loss function carries the name ``"<name>_loss"`` (e.g. ``"bce_dice_loss"``); a model saved
with it is loaded with ``compile=False`` or with
``custom_objects={"bce_dice_loss": get_loss("bce_dice", ...)}`` (the parameters are not saved).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["EPS", "LOSSES", "bce", "bce_dice", "dice", "focal", "get_loss", "masked_bce", "masked_bce_loss"]

EPS = 1e-7
LOSSES = ("bce", "dice", "bce_dice", "focal")


# --------------------------------------------------------------------------- validation

def _check_arrays(y_true, y_prob) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true, dtype=np.float64)
    y_prob = np.asarray(y_prob, dtype=np.float64)
    if y_true.ndim != 4 or y_prob.ndim != 4:
        raise ValueError(f"y_true and y_prob must be 4-D (N, H, W, C), got shapes {y_true.shape} and {y_prob.shape}")
    if y_true.shape != y_prob.shape:
        raise ValueError(f"y_true shape {y_true.shape} and y_prob shape {y_prob.shape} differ")
    if y_true.size == 0:
        raise ValueError(f"y_true and y_prob are empty (shape {y_true.shape})")
    for name, array in (("y_true", y_true), ("y_prob", y_prob)):
        outside = ~((array >= 0) & (array <= 1))
        if outside.any():
            raise ValueError(f"{name} must hold values in [0, 1] (probabilities), found values such as "
                             f"{np.unique(array[outside])[:5].tolist()}")
    return y_true, y_prob


def _class_weights(class_weights: Sequence[float] | None, n_classes: int | None) -> np.ndarray | None:
    """Class weights normalised to sum 1, or None for equal weights; ``n_classes=None`` skips the length check."""
    if class_weights is None:
        return None
    weights = np.asarray(class_weights, dtype=np.float64)
    if weights.ndim != 1 or (n_classes is not None and weights.shape[0] != n_classes):
        expected = "C" if n_classes is None else n_classes
        raise ValueError(f"class_weights must be a sequence of {expected} numbers (one per class), got shape {weights.shape}")
    if not np.all(np.isfinite(weights)) or np.any(weights < 0) or weights.sum() <= 0:
        raise ValueError(f"class_weights must be finite, >= 0 and not all 0, got {weights.tolist()}")
    return weights / weights.sum()


def _check_params(smooth: float | None = None, gamma: float | None = None, alpha: float | None = None,
                  bce_weight: float | None = None, dice_weight: float | None = None,
                  per_image: bool | None = None) -> None:
    if per_image is not None and not isinstance(per_image, (bool, np.bool_)):
        raise ValueError(f"per_image must be True or False, got {per_image!r}")
    if smooth is not None and not (np.isfinite(smooth) and smooth > 0):
        raise ValueError(f"smooth must be a finite number > 0, got {smooth!r}")
    if gamma is not None and not (np.isfinite(gamma) and gamma >= 0):
        raise ValueError(f"gamma must be a finite number >= 0, got {gamma!r}")
    if alpha is not None and not (0 <= alpha <= 1):
        raise ValueError(f"alpha must be in [0, 1] or None, got {alpha!r}")
    for name, value in (("bce_weight", bce_weight), ("dice_weight", dice_weight)):
        if value is not None and not (np.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def _reduce(per_pair: np.ndarray, weights: np.ndarray | None) -> float:
    """``(N, C)`` values -> class-weighted mean per image -> mean over images."""
    per_image = per_pair.mean(axis=1) if weights is None else per_pair @ weights
    return float(per_image.mean())


# --------------------------------------------------------------------------- numpy

def _bce_pairs(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    log_p = np.log(np.maximum(p, EPS))
    log_q = np.log(np.maximum(1.0 - p, EPS))
    return -(y * log_p + (1.0 - y) * log_q).mean(axis=(1, 2))


def _dice_pairs(y: np.ndarray, p: np.ndarray, smooth: float, per_image: bool = True) -> np.ndarray:
    """``(N, C)`` Dice losses; with ``per_image=False`` each row holds the batch value per class."""
    axes = (1, 2) if per_image else (0, 1, 2)
    intersection = (y * p).sum(axis=axes)
    total = y.sum(axis=axes) + p.sum(axis=axes)
    return np.broadcast_to(1.0 - (2.0 * intersection + smooth) / (total + smooth), (y.shape[0], y.shape[-1]))


def _focal_pairs(y: np.ndarray, p: np.ndarray, gamma: float, alpha: float | None) -> np.ndarray:
    q = 1.0 - p
    log_p = np.log(np.maximum(p, EPS))
    log_q = np.log(np.maximum(q, EPS))
    a1, a0 = (1.0, 1.0) if alpha is None else (alpha, 1.0 - alpha)
    positive = a1 * np.maximum(q, EPS) ** gamma * y * log_p
    negative = a0 * np.maximum(p, EPS) ** gamma * (1.0 - y) * log_q
    return -(positive + negative).mean(axis=(1, 2))


def bce(y_true, y_prob, class_weights: Sequence[float] | None = None) -> float:
    """Binary cross-entropy of ``(N, H, W, C)`` arrays (mean over pixels, classes, images)."""
    y, p = _check_arrays(y_true, y_prob)
    return _reduce(_bce_pairs(y, p), _class_weights(class_weights, y.shape[-1]))


def dice(y_true, y_prob, smooth: float = 1.0, class_weights: Sequence[float] | None = None,
         per_image: bool = True) -> float:
    """Soft Dice loss ``1 - soft Dice`` per (image, class) pair (or per class over the batch) of ``(N, H, W, C)`` arrays."""
    _check_params(smooth=smooth, per_image=per_image)
    y, p = _check_arrays(y_true, y_prob)
    return _reduce(_dice_pairs(y, p, smooth, per_image), _class_weights(class_weights, y.shape[-1]))


def bce_dice(y_true, y_prob, bce_weight: float = 1.0, dice_weight: float = 1.0, smooth: float = 1.0,
             class_weights: Sequence[float] | None = None, per_image: bool = True) -> float:
    """``bce_weight * bce + dice_weight * dice`` of ``(N, H, W, C)`` arrays."""
    _check_params(smooth=smooth, bce_weight=bce_weight, dice_weight=dice_weight, per_image=per_image)
    y, p = _check_arrays(y_true, y_prob)
    pairs = bce_weight * _bce_pairs(y, p) + dice_weight * _dice_pairs(y, p, smooth, per_image)
    return _reduce(pairs, _class_weights(class_weights, y.shape[-1]))


def focal(y_true, y_prob, gamma: float = 2.0, alpha: float | None = 0.25,
          class_weights: Sequence[float] | None = None) -> float:
    """Binary focal loss of ``(N, H, W, C)`` arrays (mean over pixels, classes, images)."""
    _check_params(gamma=gamma, alpha=alpha)
    y, p = _check_arrays(y_true, y_prob)
    return _reduce(_focal_pairs(y, p, gamma, alpha), _class_weights(class_weights, y.shape[-1]))


# --------------------------------------------------------------------------- Keras

_NUMPY_LOSSES: dict[str, Callable[..., float]] = {"bce": bce, "dice": dice, "bce_dice": bce_dice, "focal": focal}


def get_loss(name: str, **kwargs) -> Callable:
    """Keras loss ``fn(y_true, y_pred) -> (N,)`` per-image losses for ``(N, H, W, C)`` tensors.

    ``name`` is one of :data:`LOSSES`; ``kwargs`` are the parameters of the numpy function of
    the same name (e.g. ``get_loss("focal", gamma=2.0, alpha=0.25, class_weights=[1, 1, 2, 1])``).
    """
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; allowed: {', '.join(LOSSES)}")
    signature = inspect.signature(_NUMPY_LOSSES[name])
    allowed = [p for p in signature.parameters if p not in ("y_true", "y_prob")]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for loss {name!r}; allowed: {', '.join(allowed)}")
    params = {p: signature.parameters[p].default for p in allowed} | kwargs
    _check_params(**{k: v for k, v in params.items() if k != "class_weights"})
    weights = _class_weights(params["class_weights"], None)

    from helpers.backend import tf

    def prepare(y_true, y_pred):
        y = tf.cast(y_true, tf.float32)
        p = tf.cast(y_pred, tf.float32)
        return y, p, 1.0 - p

    def logs(p, q):
        return tf.math.log(tf.maximum(p, EPS)), tf.math.log(tf.maximum(q, EPS))

    def bce_pairs(y, p, q):
        log_p, log_q = logs(p, q)
        return -tf.reduce_mean(y * log_p + (1.0 - y) * log_q, axis=[1, 2])

    def dice_pairs(y, p, q):
        smooth = float(params["smooth"])
        axes = [1, 2] if params["per_image"] else [0, 1, 2]
        intersection = tf.reduce_sum(y * p, axis=axes)
        total = tf.reduce_sum(y, axis=axes) + tf.reduce_sum(p, axis=axes)
        per_class = 1.0 - (2.0 * intersection + smooth) / (total + smooth)
        return per_class + tf.zeros_like(y[:, 0, 0, :])  # (N, C), the batch value on every row if not per image

    def focal_pairs(y, p, q):
        gamma, alpha = float(params["gamma"]), params["alpha"]
        a1, a0 = (1.0, 1.0) if alpha is None else (float(alpha), 1.0 - float(alpha))
        log_p, log_q = logs(p, q)
        positive = a1 * tf.pow(tf.maximum(q, EPS), gamma) * y * log_p
        negative = a0 * tf.pow(tf.maximum(p, EPS), gamma) * (1.0 - y) * log_q
        return -tf.reduce_mean(positive + negative, axis=[1, 2])

    def pairs(y, p, q):
        if name == "bce":
            return bce_pairs(y, p, q)
        if name == "dice":
            return dice_pairs(y, p, q)
        if name == "focal":
            return focal_pairs(y, p, q)
        return float(params["bce_weight"]) * bce_pairs(y, p, q) + float(params["dice_weight"]) * dice_pairs(y, p, q)

    def loss(y_true, y_pred):
        per_pair = pairs(*prepare(y_true, y_pred))  # (N, C)
        if weights is None:
            return tf.reduce_mean(per_pair, axis=-1)
        if per_pair.shape[-1] is not None and per_pair.shape[-1] != len(weights):
            raise ValueError(f"class_weights has {len(weights)} values but y_pred has {per_pair.shape[-1]} classes")
        return tf.linalg.matvec(per_pair, tf.constant(weights, dtype=tf.float32))

    loss.__name__ = loss.__qualname__ = f"{name}_loss"
    loss.__doc__ = f"Keras {name} loss with {params}: (N, H, W, C) tensors -> (N,) per-image losses."
    return loss


# --------------------------------------------------------------------------- multi-label classification


def _masked_bce_terms(y_true, y_prob) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_prob, dtype=np.float64)
    if y.ndim != 2 or y.shape != p.shape:
        raise ValueError(f"y_true and y_prob must both be (N, K); got {y.shape} and {p.shape}")
    known = ~np.isnan(y)
    if np.any((y[known] < 0) | (y[known] > 1)) or np.any((p < 0) | (p > 1) | np.isnan(p)):
        raise ValueError("labels must be in [0, 1] or NaN (ignored) and probabilities in [0, 1]")
    y = np.where(known, y, 0.0)
    terms = -(y * np.log(np.maximum(p, EPS)) + (1 - y) * np.log(np.maximum(1 - p, EPS)))
    return terms * known, known


def masked_bce(y_true, y_prob) -> float:
    """Mean over images of the BCE over each image's known labels; ``(N, K)`` arrays, NaN labels ignored."""
    terms, known = _masked_bce_terms(y_true, y_prob)
    return float(np.mean(terms.sum(axis=1) / np.maximum(known.sum(axis=1), 1)))


def masked_bce_loss() -> Callable:
    """Keras loss ``fn(y_true, y_pred) -> (N,)`` for ``(N, K)`` tensors: :func:`masked_bce` per image."""
    from helpers.backend import tf

    def loss(y_true, y_pred):
        y = tf.cast(y_true, tf.float32)
        p = tf.cast(y_pred, tf.float32)
        known = tf.cast(tf.logical_not(tf.math.is_nan(y)), tf.float32)
        y = tf.where(known > 0, y, 0.0)
        terms = -(y * tf.math.log(tf.maximum(p, EPS)) + (1.0 - y) * tf.math.log(tf.maximum(1.0 - p, EPS)))
        return tf.reduce_sum(terms * known, axis=-1) / tf.maximum(tf.reduce_sum(known, axis=-1), 1.0)

    loss.__name__ = loss.__qualname__ = "masked_bce_loss"
    return loss
