"""Keras metrics of sigmoid multi-label masks that agree with the numpy references of :mod:`helpers.modeling.metrics`.

:class:`SeverstalScore`, :class:`DicePerClass` and :class:`MeanIoU` are stateful
``keras.metrics.Metric`` subclasses that threshold ``y_pred`` at ``threshold`` and accumulate
over batches of ``(N, H, W, C)`` masks; over several batches they equal the numpy functions on the
concatenated arrays (definitions in :mod:`helpers.modeling.metrics`). Get them with the factories
:func:`keras_metrics`, :func:`severstal_score_metric`, :func:`dice_metric`, :func:`mean_iou_metric`.
They save with the model; load with
``keras.models.load_model(path, custom_objects=keras_metrics.custom_objects())`` or ``compile=False``.

Metric names match the keys of :func:`helpers.modeling.metrics.summarise`: ``severstal_score``,
``dice_<class>``, ``mean_iou``, ``mean_iou_with_background`` (Keras prefixes ``val_`` for validation data).

Keras/TensorFlow come only from :mod:`helpers.backend` (:mod:`helpers.modeling.metrics` imports neither).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from helpers.backend import keras, tf
from helpers.modeling import metrics

__all__ = [
    "DicePerClass",
    "MeanIoU",
    "SeverstalScore",
    "custom_objects",
    "dice_metric",
    "keras_metrics",
    "mean_iou_metric",
    "severstal_score_metric",
]


def _binarise(y_true, y_pred, threshold: float):
    truth = tf.cast(tf.cast(y_true, tf.float32) > 0.5, tf.float32)
    pred = tf.cast(tf.cast(y_pred, tf.float32) > threshold, tf.float32)
    return truth, pred


def _pair_dice(truth, pred):
    """(N, H, W, C) binary -> (N, C) Dice, 1 where both are empty."""
    intersection = tf.reduce_sum(truth * pred, axis=[1, 2])
    total = tf.reduce_sum(truth, axis=[1, 2]) + tf.reduce_sum(pred, axis=[1, 2])
    return tf.where(total > 0, tf.math.divide_no_nan(2.0 * intersection, total), tf.ones_like(total))


def _image_weights(sample_weight, rank: int):
    """Per-image ``sample_weight`` (N,) reshaped to broadcast against a rank-``rank`` tensor."""
    return tf.reshape(tf.cast(sample_weight, tf.float64), [-1] + [1] * (rank - 1))


def _check_threshold(threshold: float) -> float:
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
    return float(threshold)


class SeverstalScore(keras.metrics.Metric):
    """Mean Dice over (image, class) pairs of ``(N, H, W, C)`` batches (Kaggle Severstal score)."""

    def __init__(self, threshold: float = 0.5, name: str = "severstal_score", **kwargs):
        super().__init__(name=name, **kwargs)
        self.threshold = _check_threshold(threshold)
        self.dice_sum = self.add_weight(name="dice_sum", initializer="zeros", dtype=tf.float64)
        self.pairs = self.add_weight(name="pairs", initializer="zeros", dtype=tf.float64)

    def update_state(self, y_true, y_pred, sample_weight=None):
        dice = tf.cast(_pair_dice(*_binarise(y_true, y_pred, self.threshold)), tf.float64)
        weights = tf.ones_like(dice) if sample_weight is None else _image_weights(sample_weight, 2) * tf.ones_like(dice)
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
        self.threshold = _check_threshold(threshold)
        self.dice_sum = self.add_weight(name="dice_sum", initializer="zeros", dtype=tf.float64)
        self.images = self.add_weight(name="images", initializer="zeros", dtype=tf.float64)

    def update_state(self, y_true, y_pred, sample_weight=None):
        truth, pred = _binarise(y_true, y_pred, self.threshold)
        k = self.class_index
        dice = tf.cast(_pair_dice(truth[..., k:k + 1], pred[..., k:k + 1])[:, 0], tf.float64)
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
        self.threshold = _check_threshold(threshold)
        shape = (self.n_classes + 1,)
        self.tp = self.add_weight(name="tp", shape=shape, initializer="zeros", dtype=tf.float64)
        self.fp = self.add_weight(name="fp", shape=shape, initializer="zeros", dtype=tf.float64)
        self.fn = self.add_weight(name="fn", shape=shape, initializer="zeros", dtype=tf.float64)

    def update_state(self, y_true, y_pred, sample_weight=None):
        truth, pred = _binarise(y_true, y_pred, self.threshold)
        truth = tf.concat([1.0 - tf.reduce_max(truth, axis=-1, keepdims=True), truth], axis=-1)
        pred = tf.concat([1.0 - tf.reduce_max(pred, axis=-1, keepdims=True), pred], axis=-1)
        per_image = [tf.cast(tf.reduce_sum(x, axis=[1, 2]), tf.float64)  # (N, C + 1) counts per image
                     for x in (truth * pred, (1.0 - truth) * pred, truth * (1.0 - pred))]
        if sample_weight is not None:
            per_image = [x * _image_weights(sample_weight, 2) for x in per_image]
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


def severstal_score_metric(threshold: float = 0.5, name: str = "severstal_score"):
    """Keras :class:`SeverstalScore` metric (mean Dice over (image, class) pairs of ``(N, H, W, C)``)."""
    return SeverstalScore(threshold=threshold, name=name)


def dice_metric(class_index: int, threshold: float = 0.5, name: str | None = None):
    """Keras :class:`DicePerClass` metric for channel ``class_index`` (0-based; default name ``dice_class_<k+1>``)."""
    return DicePerClass(class_index, threshold=threshold, name=name)


def mean_iou_metric(n_classes: int, include_background: bool = False, threshold: float = 0.5, name: str | None = None):
    """Keras :class:`MeanIoU` metric (``mean_iou`` or ``mean_iou_with_background``)."""
    return MeanIoU(n_classes, include_background=include_background, threshold=threshold, name=name)


def keras_metrics(n_classes: int, threshold: float = 0.5,
                  class_names: Sequence[str] | Mapping[int, str] | None = None) -> list:
    """Metrics for ``model.compile(metrics=...)``: Severstal score, Dice per class, mIoU without and with background.

    Names match :func:`helpers.modeling.metrics.summarise`: ``severstal_score``, ``dice_<name>``, ``mean_iou``,
    ``mean_iou_with_background``.
    """
    names = metrics.class_key_list(class_names, n_classes)
    return [
        severstal_score_metric(threshold),
        *(dice_metric(k, threshold, name=f"dice_{name}") for k, name in enumerate(names)),
        mean_iou_metric(n_classes, include_background=False, threshold=threshold),
        mean_iou_metric(n_classes, include_background=True, threshold=threshold),
    ]


def custom_objects() -> dict[str, type]:
    """``{class name: class}`` of the Keras metrics, for ``keras.models.load_model(..., custom_objects=...)``."""
    return {cls.__name__: cls for cls in (SeverstalScore, DicePerClass, MeanIoU)}
