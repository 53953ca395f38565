"""Segmentation metrics for sigmoid multi-label masks (numpy references), and classification scores.

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

The Keras metrics that agree with these, named as the keys of :func:`summarise`, are in
:mod:`helpers.modeling.keras_metrics`; this module imports no TensorFlow.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "binary_classification_scores",
    "binary_segmentation_scores",
    "class_key_list",
    "class_keys",
    "ConfusionCounts",
    "confusion_counts",
    "dice_per_class",
    "dice_per_pair",
    "evaluate",
    "evaluate_batches",
    "iou_per_class",
    "mean_iou",
    "per_label_auc",
    "pixel_precision_recall",
    "severstal_score",
    "summarise",
]

# --------------------------------------------------------------------------- validation

def _binary(array: np.ndarray, name: str) -> np.ndarray:
    if array.dtype == bool:
        return array
    if not np.all((array == 0) | (array == 1)):
        values = np.unique(array[(array != 0) & (array != 1)])[:5].tolist()
        hint = "; pass threshold=... to binarise probabilities" if name == "y_pred" else ""
        raise ValueError(f"{name} must be binary (0/1 or bool), found values such as {values}{hint}")
    return array != 0


def _prepare(y_true, y_pred, threshold: float | None, valid=None) -> tuple[np.ndarray, np.ndarray]:
    """Validate ``(N, H, W, C)`` arrays and return them as bool (``False`` outside ``valid``, ``(N, H, W)``, if given)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.ndim != 4 or y_pred.ndim != 4:
        raise ValueError(f"y_true and y_pred must be 4-D (N, H, W, C), got shapes {y_true.shape} and {y_pred.shape}")
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true shape {y_true.shape} and y_pred shape {y_pred.shape} differ")
    if 0 in y_true.shape:
        raise ValueError(f"y_true and y_pred are empty (shape {y_true.shape})")
    truth = _binary(y_true, "y_true")
    if threshold is None:
        pred = _binary(y_pred, "y_pred")
    else:
        if not 0 <= threshold <= 1:
            raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
        outside = ~((y_pred >= 0) & (y_pred <= 1))
        if outside.any():
            raise ValueError(f"y_pred must hold probabilities in [0, 1], found values such as "
                             f"{np.unique(y_pred[outside])[:5].tolist()}")
        pred = y_pred > threshold
    if valid is None:
        return truth, pred
    inside = _valid(valid, truth.shape)[..., None]
    return truth & inside, pred & inside


def _valid(valid, shape: tuple[int, ...]) -> np.ndarray:
    """``valid`` as a bool ``(N, H, W)`` array matching masks of ``shape = (N, H, W, C)``."""
    inside = np.asarray(valid)
    if inside.shape != tuple(shape[:3]):
        raise ValueError(f"valid must have the masks' (N, H, W) shape {tuple(shape[:3])}, got {inside.shape}")
    return _binary(inside, "valid")


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator`` as float, NaN where the denominator is 0."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    out = np.full(np.broadcast(numerator, denominator).shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


# --------------------------------------------------------------------------- Dice

def dice_per_pair(y_true, y_pred, threshold: float | None = None, valid=None) -> np.ndarray:
    """Dice of every (image, class) pair of ``(N, H, W, C)`` masks as an ``(N, C)`` array (1 if both empty).

    ``valid``: ``(N, H, W)`` bool, the pixels that count (images of mixed sizes on one canvas); default all.
    """
    truth, pred = _prepare(y_true, y_pred, threshold, valid)
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


def confusion_counts(y_true, y_pred, threshold: float | None = None, valid=None) -> ConfusionCounts:
    """Per-class and background TP/FP/FN/TN pixel counts of ``(N, H, W, C)`` masks (index 0 = background).

    ``valid``: ``(N, H, W)`` bool, the pixels that count (the padding of a mixed-size canvas is not background).
    """
    truth, pred = _prepare(y_true, y_pred, threshold, valid)
    truth_background, pred_background = ~truth.any(axis=-1, keepdims=True), ~pred.any(axis=-1, keepdims=True)
    n_pixels = np.int64(np.prod(truth.shape[:3]))
    if valid is not None:
        inside = _valid(valid, truth.shape)[..., None]
        truth_background, pred_background, n_pixels = truth_background & inside, pred_background & inside, np.int64(inside.sum())
    # (N, H, W, C + 1) with channel 0 = "no class"
    truth = np.concatenate([truth_background, truth], axis=-1)
    pred = np.concatenate([pred_background, pred], axis=-1)
    axes = (0, 1, 2)
    tp = (truth & pred).sum(axis=axes, dtype=np.int64)
    fp = pred.sum(axis=axes, dtype=np.int64) - tp
    fn = truth.sum(axis=axes, dtype=np.int64) - tp
    tn = n_pixels - tp - fp - fn
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

def class_key_list(class_names: Sequence[str] | Mapping[int, str] | None, n_classes: int) -> list[str]:
    """The ``n_classes`` keys used in metric names (``dice_<key>``), in class id order.

    ``class_names``: a list of C names, a ``{class_id: name}`` dict, or None (``class_1 .. class_C``);
    non-word characters become ``_``. ``ValueError`` when they are not distinct or one is ``background``.
    """
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
    return dict(zip(sorted(class_names), class_key_list(class_names, len(class_names))))


def summarise(counts: ConfusionCounts, dice_pairs: np.ndarray | None = None,
              class_names: Sequence[str] | Mapping[int, str] | None = None) -> dict[str, float]:
    """Flat metrics dict from dataset counts and (optionally) the ``(N, C)`` per-pair Dice.

    Keys: ``severstal_score`` and ``dice_<name>`` (with ``dice_pairs``), ``mean_iou``,
    ``mean_iou_with_background``, ``iou_background``, ``iou_<name>``, ``precision_<name>``,
    ``recall_<name>``. Names default to ``class_1 .. class_C``; ``class_names`` is a list of C
    names or a ``{class_id: name}`` dict (as :func:`helpers.core.severstal.read_classes`).
    """
    names = class_key_list(class_names, counts.n_classes)
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
             class_names: Sequence[str] | Mapping[int, str] | None = None, valid=None) -> dict[str, float]:
    """:func:`summarise` of ``(N, H, W, C)`` masks in memory; ``valid``: ``(N, H, W)`` bool, the pixels that count."""
    return summarise(confusion_counts(y_true, y_pred, threshold, valid), dice_per_pair(y_true, y_pred, threshold, valid),
                     class_names)


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
