"""Segmentation metrics for sigmoid multi-label masks (numpy references and Keras metrics), and classification scores.

Arrays are ``(N, H, W, C)``: ``y_true`` 0/1 (or bool), ``y_pred`` 0/1 (or bool) -- or
probabilities in [0, 1] together with ``threshold`` (a pixel is predicted where
``y_pred > threshold``). Channel ``k`` (0-based) is class id ``k + 1`` (Severstal ``ClassId``).

Definitions
-----------
- **Dice of one (image, class) pair**: ``2 |X ∩ Y| / (|X| + |Y|)``, and **1 when truth and
  prediction are both empty** (Kaggle's rule). :func:`severstal_score` is the mean of this over
  all ``N * C`` pairs -- the Kaggle Severstal competition score. :func:`dice_per_class` is the
  mean over the N images, one value per class.
- **Background** (multi-label masks): a pixel is background when it has *no* class, i.e. all C
  channels are 0. Truth background and predicted background are defined the same way from
  ``y_true`` and the (thresholded) ``y_pred``. For C = 1 the background is the complement of
  the defect mask.
- **Dataset-level confusion counts** (:func:`confusion_counts`): for each class and for the
  background, TP/FP/FN/TN summed over *all pixels of all images* -- counts add up over batches
  (``counts_a + counts_b``). Arrays have C + 1 entries: **index 0 is the background**, index k
  is class id k (channel k - 1).
- **IoU** per class ``TP / (TP + FP + FN)`` from those dataset-level counts (not averaged over
  images). A class absent from both truth and prediction in the whole set has no IoU (NaN) and
  is left out of the means (as mmsegmentation's ``nanmean``).
- **mean IoU**: the mean of the class IoUs, ``include_background=False`` over the C defect
  classes, ``include_background=True`` over background + C classes (C + 1 values). When every
  pixel has at most one class in truth and prediction (e.g. NEU-Seg, or argmax'd predictions)
  these equal the IoUs of the usual (C + 1) x (C + 1) confusion matrix, so
  ``include_background=True`` is the mIoU reported by NEU-Seg papers; for a binary task
  (C = 1) it is "paper eq. 6": ``(IoU_defect + IoU_background) / 2``.
- **pixel precision / recall** ``TP / (TP + FP)`` and ``TP / (TP + FN)`` from the same counts
  (NaN when the denominator is 0).

Binary tasks as the radiograph pre-training paper reports them
----------------------------------------------------------------
:func:`binary_segmentation_scores` (one defect class): defect pixel precision and recall,
"accuracy" = the mean of the defect and background pixel recalls (balanced accuracy: the
paper's Table 4 values satisfy accuracy = (recall + background recall) / 2, e.g. 73.64 =
(48.35 + 98.93) / 2), and mIoU = ``(IoU_defect + IoU_background) / 2`` (its eq. 6); plain pixel
accuracy is reported too. :func:`binary_classification_scores`: accuracy, precision, recall and
F1 of the positive (defect) class. :func:`per_label_auc`: ROC AUC per label of a multi-label
classifier, NaN labels ignored.

Keras metrics
-------------
:class:`SeverstalScore`, :class:`DicePerClass` and :class:`MeanIoU` are stateful
``keras.metrics.Metric`` subclasses that threshold ``y_pred`` at ``threshold`` and accumulate
over batches; over several batches they equal the numpy functions on the concatenated arrays.
So that importing this module does not import TensorFlow, the classes are built on first use
by ``_keras_classes()`` (cached: each class exists once per process, like a module import).
Get them with the factories :func:`keras_metrics`, :func:`severstal_score_metric`,
:func:`dice_metric`, :func:`mean_iou_metric`, or as attributes (``metrics.SeverstalScore``
builds them on access). They save with the model; load with
``keras.models.load_model(path, custom_objects=metrics.custom_objects())`` or ``compile=False``.

Metric names match the keys of :func:`summarise`: ``severstal_score``, ``dice_<class>``,
``mean_iou``, ``mean_iou_with_background`` (Keras prefixes ``val_`` for validation data).
"""

from __future__ import annotations

import re

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

__all__ = [
    "binary_classification_scores",
    "binary_segmentation_scores",
    "class_keys",
    "ConfusionCounts",
    "confusion_counts",
    "custom_objects",
    "dice_metric",
    "dice_per_class",
    "dice_per_pair",
    "evaluate",
    "evaluate_batches",
    "iou_per_class",
    "keras_metrics",
    "mean_iou",
    "mean_iou_metric",
    "per_label_auc",
    "pixel_precision_recall",
    "severstal_score",
    "severstal_score_metric",
    "summarise",
]

KERAS_CLASSES = ("SeverstalScore", "DicePerClass", "MeanIoU")


# --------------------------------------------------------------------------- validation

def _binary(array: np.ndarray, name: str) -> np.ndarray:
    if array.dtype == bool:
        return array
    if not np.all((array == 0) | (array == 1)):
        values = np.unique(array[(array != 0) & (array != 1)])[:5].tolist()
        hint = "; pass threshold=... to binarise probabilities" if name == "y_pred" else ""
        raise ValueError(f"{name} must be binary (0/1 or bool), found values such as {values}{hint}")
    return array != 0


def _prepare(y_true, y_pred, threshold: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Validate ``(N, H, W, C)`` arrays and return them as bool."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.ndim != 4 or y_pred.ndim != 4:
        raise ValueError(f"y_true and y_pred must be 4-D (N, H, W, C), got shapes {y_true.shape} and {y_pred.shape}")
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true shape {y_true.shape} and y_pred shape {y_pred.shape} differ")
    if 0 in y_true.shape:
        raise ValueError(f"y_true and y_pred are empty (shape {y_true.shape})")
    truth = _binary(y_true, "y_true")
    if threshold is None:
        return truth, _binary(y_pred, "y_pred")
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
    outside = ~((y_pred >= 0) & (y_pred <= 1))
    if outside.any():
        raise ValueError(f"y_pred must hold probabilities in [0, 1], found values such as "
                         f"{np.unique(y_pred[outside])[:5].tolist()}")
    return truth, y_pred > threshold


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator`` as float, NaN where the denominator is 0."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    out = np.full(np.broadcast(numerator, denominator).shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


# --------------------------------------------------------------------------- Dice

def dice_per_pair(y_true, y_pred, threshold: float | None = None) -> np.ndarray:
    """Dice of every (image, class) pair of ``(N, H, W, C)`` masks as an ``(N, C)`` array (1 if both empty)."""
    truth, pred = _prepare(y_true, y_pred, threshold)
    intersection = (truth & pred).sum(axis=(1, 2))
    total = truth.sum(axis=(1, 2)) + pred.sum(axis=(1, 2))
    dice = _divide(2 * intersection, total)
    dice[total == 0] = 1.0
    return dice


def severstal_score(y_true, y_pred, threshold: float | None = None) -> float:
    """Kaggle Severstal score of ``(N, H, W, C)`` masks: mean Dice over all (image, class) pairs."""
    return float(dice_per_pair(y_true, y_pred, threshold).mean())


def dice_per_class(y_true, y_pred, threshold: float | None = None) -> np.ndarray:
    """Mean over images of the per-(image, class) Dice of ``(N, H, W, C)`` masks, shape ``(C,)``."""
    return dice_per_pair(y_true, y_pred, threshold).mean(axis=0)


# --------------------------------------------------------------------------- confusion counts

@dataclass(frozen=True, eq=False)
class ConfusionCounts:
    """Pixel counts summed over a set of images; each field has shape ``(C + 1,)``, index 0 = background.

    Counts of two batches add up: ``confusion_counts(a_true, a_pred) + confusion_counts(b_true, b_pred)``.
    """

    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    tn: np.ndarray

    def __post_init__(self) -> None:
        for field in ("tp", "fp", "fn", "tn"):
            object.__setattr__(self, field, np.asarray(getattr(self, field)))
        shapes = {np.shape(getattr(self, f)) for f in ("tp", "fp", "fn", "tn")}
        if len(shapes) != 1 or len(next(iter(shapes))) != 1 or next(iter(shapes))[0] < 2:
            raise ValueError(f"tp, fp, fn, tn must be 1-D of equal length C + 1 >= 2, got shapes {sorted(shapes)}")

    @property
    def n_classes(self) -> int:
        """Number of defect classes C (background not counted)."""
        return len(self.tp) - 1

    @classmethod
    def zeros(cls, n_classes: int) -> ConfusionCounts:
        """Empty counts for ``n_classes`` defect classes (the start of an accumulation)."""
        if n_classes < 1:
            raise ValueError(f"n_classes must be >= 1, got {n_classes}")
        return cls(*(np.zeros(n_classes + 1, dtype=np.int64) for _ in range(4)))

    def __add__(self, other: ConfusionCounts) -> ConfusionCounts:
        if not isinstance(other, ConfusionCounts):
            return NotImplemented
        if other.n_classes != self.n_classes:
            raise ValueError(f"cannot add counts of {self.n_classes} and {other.n_classes} classes")
        return ConfusionCounts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ConfusionCounts):
            return NotImplemented
        return all(np.array_equal(getattr(self, f), getattr(other, f)) for f in ("tp", "fp", "fn", "tn"))

    def iou(self) -> np.ndarray:
        """``TP / (TP + FP + FN)`` for background + classes, shape ``(C + 1,)``; NaN where never present."""
        return _divide(self.tp, self.tp + self.fp + self.fn)

    def precision(self) -> np.ndarray:
        """``TP / (TP + FP)``, shape ``(C + 1,)``; NaN where nothing was predicted."""
        return _divide(self.tp, self.tp + self.fp)

    def recall(self) -> np.ndarray:
        """``TP / (TP + FN)``, shape ``(C + 1,)``; NaN where the truth is empty."""
        return _divide(self.tp, self.tp + self.fn)

    def mean_iou(self, include_background: bool) -> float:
        """Mean IoU over classes with an IoU (NaN if none); ``include_background`` adds index 0."""
        iou = self.iou() if include_background else self.iou()[1:]
        return float(np.nanmean(iou)) if np.any(~np.isnan(iou)) else float("nan")


def confusion_counts(y_true, y_pred, threshold: float | None = None) -> ConfusionCounts:
    """Per-class and background TP/FP/FN/TN pixel counts of ``(N, H, W, C)`` masks (index 0 = background)."""
    truth, pred = _prepare(y_true, y_pred, threshold)
    # (N, H, W, C + 1) with channel 0 = "no class"
    truth = np.concatenate([~truth.any(axis=-1, keepdims=True), truth], axis=-1)
    pred = np.concatenate([~pred.any(axis=-1, keepdims=True), pred], axis=-1)
    axes = (0, 1, 2)
    tp = (truth & pred).sum(axis=axes, dtype=np.int64)
    fp = pred.sum(axis=axes, dtype=np.int64) - tp
    fn = truth.sum(axis=axes, dtype=np.int64) - tp
    tn = np.int64(np.prod(truth.shape[:3])) - tp - fp - fn
    return ConfusionCounts(tp, fp, fn, tn)


def iou_per_class(y_true, y_pred, threshold: float | None = None, include_background: bool = False) -> np.ndarray:
    """Dataset-level IoU of ``(N, H, W, C)`` masks: shape ``(C,)``, or ``(C + 1,)`` with background first."""
    iou = confusion_counts(y_true, y_pred, threshold).iou()
    return iou if include_background else iou[1:]


def mean_iou(y_true, y_pred, include_background: bool, threshold: float | None = None) -> float:
    """Mean of the dataset-level IoUs of ``(N, H, W, C)`` masks (classes without IoU left out)."""
    return confusion_counts(y_true, y_pred, threshold).mean_iou(include_background)


def pixel_precision_recall(y_true, y_pred, threshold: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Dataset-level pixel ``(precision, recall)`` per class of ``(N, H, W, C)`` masks, each shape ``(C,)``."""
    counts = confusion_counts(y_true, y_pred, threshold)
    return counts.precision()[1:], counts.recall()[1:]


# --------------------------------------------------------------------------- summaries

def _class_names(class_names: Sequence[str] | Mapping[int, str] | None, n_classes: int) -> list[str]:
    if class_names is None:
        return [f"class_{k}" for k in range(1, n_classes + 1)]
    if isinstance(class_names, Mapping):
        if sorted(class_names) != list(range(1, n_classes + 1)):
            raise ValueError(f"class_names must map class ids 1..{n_classes} to names, got keys {sorted(class_names)}")
        names = [str(class_names[k]) for k in range(1, n_classes + 1)]
    else:
        names = [str(name) for name in class_names]
        if len(names) != n_classes:
            raise ValueError(f"class_names must have {n_classes} names, got {len(names)}: {names}")
    names = [re.sub(r"\W+", "_", name).strip("_") or "class" for name in names]  # valid metric/scope names
    if len(set(names)) != len(names) or "background" in names:
        raise ValueError(f"class_names must be distinct and not 'background', got {names}")
    return names


def class_keys(class_names: Mapping[int, str]) -> dict[int, str]:
    """``{class_id: key}`` used in metric names (``dice_<key>``): names with non-word characters become ``_``."""
    return dict(zip(sorted(class_names), _class_names(class_names, len(class_names))))


def summarise(counts: ConfusionCounts, dice_pairs: np.ndarray | None = None,
              class_names: Sequence[str] | Mapping[int, str] | None = None) -> dict[str, float]:
    """Flat metrics dict from dataset counts and (optionally) the ``(N, C)`` per-pair Dice.

    Keys: ``severstal_score`` and ``dice_<name>`` (with ``dice_pairs``), ``mean_iou``,
    ``mean_iou_with_background``, ``iou_background``, ``iou_<name>``, ``precision_<name>``,
    ``recall_<name>``. Names default to ``class_1 .. class_C``; ``class_names`` is a list of C
    names or a ``{class_id: name}`` dict (as :func:`helpers.core.severstal.read_classes`).
    """
    names = _class_names(class_names, counts.n_classes)
    out: dict[str, float] = {}
    if dice_pairs is not None:
        dice_pairs = np.asarray(dice_pairs, dtype=np.float64)
        if dice_pairs.ndim != 2 or dice_pairs.shape[1] != counts.n_classes:
            raise ValueError(f"dice_pairs must have shape (N, {counts.n_classes}), got {dice_pairs.shape}")
        out["severstal_score"] = float(dice_pairs.mean())
        out |= {f"dice_{name}": float(v) for name, v in zip(names, dice_pairs.mean(axis=0))}
    out["mean_iou"] = counts.mean_iou(include_background=False)
    out["mean_iou_with_background"] = counts.mean_iou(include_background=True)
    iou, precision, recall = counts.iou(), counts.precision(), counts.recall()
    out["iou_background"] = float(iou[0])
    out |= {f"iou_{name}": float(v) for name, v in zip(names, iou[1:])}
    out |= {f"precision_{name}": float(v) for name, v in zip(names, precision[1:])}
    out |= {f"recall_{name}": float(v) for name, v in zip(names, recall[1:])}
    return out


def evaluate(y_true, y_pred, threshold: float | None = None,
             class_names: Sequence[str] | Mapping[int, str] | None = None) -> dict[str, float]:
    """:func:`summarise` of ``(N, H, W, C)`` masks in memory."""
    return summarise(confusion_counts(y_true, y_pred, threshold), dice_per_pair(y_true, y_pred, threshold), class_names)


def evaluate_batches(batches: Iterable[tuple[np.ndarray, np.ndarray]], threshold: float | None = None,
                     class_names: Sequence[str] | Mapping[int, str] | None = None) -> dict[str, float]:
    """:func:`summarise` accumulated over ``(y_true, y_pred)`` batches of ``(n, H, W, C)`` masks.

    Equals :func:`evaluate` on the concatenated batches without holding them all in memory.
    """
    counts: ConfusionCounts | None = None
    dice: list[np.ndarray] = []
    for y_true, y_pred in batches:
        batch_counts = confusion_counts(y_true, y_pred, threshold)
        counts = batch_counts if counts is None else counts + batch_counts
        dice.append(dice_per_pair(y_true, y_pred, threshold))
    if counts is None:
        raise ValueError("batches is empty")
    return summarise(counts, np.concatenate(dice), class_names)


# --------------------------------------------------------------------------- binary tasks, classification

def binary_segmentation_scores(y_true, y_pred, threshold: float | None = None) -> dict[str, float]:
    """Paper-style scores of one defect class: ``(N, H, W)`` or ``(N, H, W, 1)`` masks (see the module doc).

    Keys: ``precision``, ``recall`` (defect pixels), ``accuracy`` (mean of defect and background
    recall), ``pixel_accuracy``, ``iou_defect``, ``iou_background``, ``miou`` (their mean).
    """
    truth, pred = (array[..., None] if array.ndim == 3 else array for array in (np.asarray(y_true), np.asarray(y_pred)))
    if truth.shape[-1] != 1:
        raise ValueError(f"binary_segmentation_scores needs one class, got masks of shape {truth.shape}")
    counts = confusion_counts(truth, pred, threshold)
    iou, recall = counts.iou(), counts.recall()
    return {
        "precision": float(counts.precision()[1]),
        "recall": float(recall[1]),
        "accuracy": float(np.nanmean(recall)) if np.any(~np.isnan(recall)) else float("nan"),
        "pixel_accuracy": float((counts.tp[1] + counts.tn[1]) / (counts.tp[1] + counts.tn[1] + counts.fp[1] + counts.fn[1])),
        "iou_defect": float(iou[1]),
        "iou_background": float(iou[0]),
        "miou": counts.mean_iou(include_background=True),
    }


def _binary_labels(values, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1 or not np.isin(array, (0, 1)).all():
        raise ValueError(f"{name} must be a 1-D array of 0/1 labels, got shape {array.shape}")
    return array.astype(bool)


def binary_classification_scores(y_true, y_pred) -> dict[str, float]:
    """``accuracy``, ``precision``, ``recall``, ``f1`` of the positive class for ``(N,)`` 0/1 labels (NaN if undefined)."""
    truth, pred = _binary_labels(y_true, "y_true"), _binary_labels(y_pred, "y_pred")
    if truth.shape != pred.shape or len(truth) == 0:
        raise ValueError(f"y_true and y_pred must have the same non-zero length, got {truth.shape} and {pred.shape}")
    tp, fp, fn = np.sum(truth & pred), np.sum(~truth & pred), np.sum(truth & ~pred)
    return {
        "accuracy": float(np.mean(truth == pred)),
        "precision": float(_divide(np.array([tp]), np.array([tp + fp]))[0]),
        "recall": float(_divide(np.array([tp]), np.array([tp + fn]))[0]),
        "f1": float(_divide(np.array([2 * tp]), np.array([2 * tp + fp + fn]))[0]),
    }


def per_label_auc(y_true, y_prob) -> np.ndarray:
    """ROC AUC per label of ``(N, K)`` arrays, shape ``(K,)``; NaN labels are left out, NaN where one class is missing."""
    from sklearn.metrics import roc_auc_score

    truth, prob = np.asarray(y_true, dtype=np.float64), np.asarray(y_prob, dtype=np.float64)
    if truth.ndim != 2 or truth.shape != prob.shape:
        raise ValueError(f"y_true and y_prob must both be (N, K), got {truth.shape} and {prob.shape}")
    aucs = np.full(truth.shape[1], np.nan)
    for k in range(truth.shape[1]):
        known = ~np.isnan(truth[:, k])
        labels = truth[known, k]
        if np.unique(labels).size == 2:
            aucs[k] = roc_auc_score(labels, prob[known, k])
    return aucs


# --------------------------------------------------------------------------- Keras

@functools.cache
def _keras_classes() -> SimpleNamespace:
    """Build the Keras metric classes (imports TensorFlow); cached so each class is created once."""
    from helpers.backend import keras, tf

    def binarise(y_true, y_pred, threshold: float):
        truth = tf.cast(tf.cast(y_true, tf.float32) > 0.5, tf.float32)
        pred = tf.cast(tf.cast(y_pred, tf.float32) > threshold, tf.float32)
        return truth, pred

    def pair_dice(truth, pred):
        """(N, H, W, C) binary -> (N, C) Dice, 1 where both are empty."""
        intersection = tf.reduce_sum(truth * pred, axis=[1, 2])
        total = tf.reduce_sum(truth, axis=[1, 2]) + tf.reduce_sum(pred, axis=[1, 2])
        return tf.where(total > 0, tf.math.divide_no_nan(2.0 * intersection, total), tf.ones_like(total))

    def image_weights(sample_weight, rank: int):
        """Per-image ``sample_weight`` (N,) reshaped to broadcast against a rank-``rank`` tensor."""
        return tf.reshape(tf.cast(sample_weight, tf.float64), [-1] + [1] * (rank - 1))

    def check_threshold(threshold: float) -> float:
        if not 0 <= threshold <= 1:
            raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
        return float(threshold)

    class SeverstalScore(keras.metrics.Metric):
        """Mean Dice over (image, class) pairs of ``(N, H, W, C)`` batches (Kaggle Severstal score)."""

        def __init__(self, threshold: float = 0.5, name: str = "severstal_score", **kwargs):
            super().__init__(name=name, **kwargs)
            self.threshold = check_threshold(threshold)
            self.dice_sum = self.add_weight(name="dice_sum", initializer="zeros", dtype=tf.float64)
            self.pairs = self.add_weight(name="pairs", initializer="zeros", dtype=tf.float64)

        def update_state(self, y_true, y_pred, sample_weight=None):
            dice = tf.cast(pair_dice(*binarise(y_true, y_pred, self.threshold)), tf.float64)
            weights = tf.ones_like(dice) if sample_weight is None else image_weights(sample_weight, 2) * tf.ones_like(dice)
            self.dice_sum.assign_add(tf.reduce_sum(dice * weights))
            self.pairs.assign_add(tf.reduce_sum(weights))

        def result(self):
            return tf.cast(tf.math.divide_no_nan(self.dice_sum, self.pairs), tf.float32)

        def reset_state(self):
            self.dice_sum.assign(0.0)
            self.pairs.assign(0.0)

        def get_config(self):
            return {**super().get_config(), "threshold": self.threshold}

    class DicePerClass(keras.metrics.Metric):
        """Mean over images of the Dice of channel ``class_index`` (0-based) of ``(N, H, W, C)`` batches."""

        def __init__(self, class_index: int, threshold: float = 0.5, name: str | None = None, **kwargs):
            if int(class_index) < 0:
                raise ValueError(f"class_index must be >= 0 (0-based channel), got {class_index}")
            super().__init__(name=name or f"dice_class_{int(class_index) + 1}", **kwargs)
            self.class_index = int(class_index)
            self.threshold = check_threshold(threshold)
            self.dice_sum = self.add_weight(name="dice_sum", initializer="zeros", dtype=tf.float64)
            self.images = self.add_weight(name="images", initializer="zeros", dtype=tf.float64)

        def update_state(self, y_true, y_pred, sample_weight=None):
            truth, pred = binarise(y_true, y_pred, self.threshold)
            k = self.class_index
            dice = tf.cast(pair_dice(truth[..., k:k + 1], pred[..., k:k + 1])[:, 0], tf.float64)
            weights = tf.ones_like(dice) if sample_weight is None else tf.reshape(tf.cast(sample_weight, tf.float64), [-1])
            self.dice_sum.assign_add(tf.reduce_sum(dice * weights))
            self.images.assign_add(tf.reduce_sum(weights))

        def result(self):
            return tf.cast(tf.math.divide_no_nan(self.dice_sum, self.images), tf.float32)

        def reset_state(self):
            self.dice_sum.assign(0.0)
            self.images.assign(0.0)

        def get_config(self):
            return {**super().get_config(), "class_index": self.class_index, "threshold": self.threshold}

    class MeanIoU(keras.metrics.Metric):
        """Dataset-level mean IoU of ``(N, H, W, C)`` batches, with or without the background (see module doc)."""

        def __init__(self, n_classes: int, include_background: bool = False, threshold: float = 0.5,
                     name: str | None = None, **kwargs):
            if int(n_classes) < 1:
                raise ValueError(f"n_classes must be >= 1, got {n_classes}")
            default = "mean_iou_with_background" if include_background else "mean_iou"
            super().__init__(name=name or default, **kwargs)
            self.n_classes = int(n_classes)
            self.include_background = bool(include_background)
            self.threshold = check_threshold(threshold)
            shape = (self.n_classes + 1,)
            self.tp = self.add_weight(name="tp", shape=shape, initializer="zeros", dtype=tf.float64)
            self.fp = self.add_weight(name="fp", shape=shape, initializer="zeros", dtype=tf.float64)
            self.fn = self.add_weight(name="fn", shape=shape, initializer="zeros", dtype=tf.float64)

        def update_state(self, y_true, y_pred, sample_weight=None):
            truth, pred = binarise(y_true, y_pred, self.threshold)
            truth = tf.concat([1.0 - tf.reduce_max(truth, axis=-1, keepdims=True), truth], axis=-1)
            pred = tf.concat([1.0 - tf.reduce_max(pred, axis=-1, keepdims=True), pred], axis=-1)
            per_image = [tf.cast(tf.reduce_sum(x, axis=[1, 2]), tf.float64)  # (N, C + 1) counts per image
                         for x in (truth * pred, (1.0 - truth) * pred, truth * (1.0 - pred))]
            if sample_weight is not None:
                per_image = [x * image_weights(sample_weight, 2) for x in per_image]
            for variable, count in zip((self.tp, self.fp, self.fn), per_image):
                variable.assign_add(tf.reduce_sum(count, axis=0))

        def result(self):
            union = self.tp + self.fp + self.fn
            iou = tf.math.divide_no_nan(self.tp, union)
            present = union > 0
            if not self.include_background:
                iou, present = iou[1:], present[1:]
            valid = tf.reduce_sum(tf.cast(present, tf.float64))
            mean = tf.reduce_sum(tf.where(present, iou, tf.zeros_like(iou))) / valid  # NaN if no class present
            return tf.cast(mean, tf.float32)

        def reset_state(self):
            for variable in (self.tp, self.fp, self.fn):
                variable.assign(tf.zeros_like(variable))

        def get_config(self):
            return {**super().get_config(), "n_classes": self.n_classes,
                    "include_background": self.include_background, "threshold": self.threshold}

    return SimpleNamespace(SeverstalScore=SeverstalScore, DicePerClass=DicePerClass, MeanIoU=MeanIoU)


def __getattr__(name: str):
    """``metrics.SeverstalScore`` etc.: build the Keras classes on first access."""
    if name in KERAS_CLASSES:
        return getattr(_keras_classes(), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def severstal_score_metric(threshold: float = 0.5, name: str = "severstal_score"):
    """Keras :class:`SeverstalScore` metric (mean Dice over (image, class) pairs of ``(N, H, W, C)``)."""
    return _keras_classes().SeverstalScore(threshold=threshold, name=name)


def dice_metric(class_index: int, threshold: float = 0.5, name: str | None = None):
    """Keras :class:`DicePerClass` metric for channel ``class_index`` (0-based; default name ``dice_class_<k+1>``)."""
    return _keras_classes().DicePerClass(class_index, threshold=threshold, name=name)


def mean_iou_metric(n_classes: int, include_background: bool = False, threshold: float = 0.5, name: str | None = None):
    """Keras :class:`MeanIoU` metric (``mean_iou`` or ``mean_iou_with_background``)."""
    return _keras_classes().MeanIoU(n_classes, include_background=include_background, threshold=threshold, name=name)


def keras_metrics(n_classes: int, threshold: float = 0.5,
                  class_names: Sequence[str] | Mapping[int, str] | None = None) -> list:
    """Metrics for ``model.compile(metrics=...)``: Severstal score, Dice per class, mIoU without and with background.

    Names match :func:`summarise`: ``severstal_score``, ``dice_<name>``, ``mean_iou``, ``mean_iou_with_background``.
    """
    names = _class_names(class_names, n_classes)
    return [
        severstal_score_metric(threshold),
        *(dice_metric(k, threshold, name=f"dice_{name}") for k, name in enumerate(names)),
        mean_iou_metric(n_classes, include_background=False, threshold=threshold),
        mean_iou_metric(n_classes, include_background=True, threshold=threshold),
    ]


def custom_objects() -> dict[str, type]:
    """``{class name: class}`` of the Keras metrics, for ``keras.models.load_model(..., custom_objects=...)``."""
    classes = _keras_classes()
    return {name: getattr(classes, name) for name in KERAS_CLASSES}
