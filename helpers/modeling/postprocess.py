"""Post-processing of per-class probabilities, tuned on validation (the Severstal winners' recipe).

Per class c: pixels with probability > ``thresholds[c]`` form connected components; components
smaller than ``min_areas[c]`` pixels are dropped. Optionally an image-level probability per class
(a classifier, or the segmenter's own maximum) gates the whole mask. Thresholds and minimum areas
are chosen per class to maximise the competition score (mean Dice over (image, class) pairs,
1 when both are empty), which decomposes over classes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import cv2
import numpy as np
import pandas as pd

from helpers.core import files, rle, severstal

__all__ = [
    "apply",
    "flip_tta",
    "remove_small",
    "tune",
    "tuned_record",
    "write_submission",
]


def _components(binary: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Label image ``(H, W)`` int32 and the area of each label (index 0 = background)."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary.astype(np.uint8), connectivity=8)
    return labels, stats[:, cv2.CC_STAT_AREA]


def remove_small(binary: np.ndarray, min_area: int) -> np.ndarray:
    """Drop 8-connected components smaller than ``min_area`` pixels from an ``(H, W)`` mask."""
    if min_area < 0:
        raise ValueError(f"min_area must be >= 0, got {min_area}")
    binary = np.asarray(binary) > 0
    if min_area <= 1 or not binary.any():
        return binary.astype(np.uint8)
    labels, areas = _components(binary)
    keep = areas >= min_area
    keep[0] = False
    return keep[labels].astype(np.uint8)


def _per_class(values, n_classes: int, name: str) -> np.ndarray:
    array = np.broadcast_to(np.asarray(values, dtype=np.float64), (n_classes,))
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must be finite numbers, got {values!r}")
    return array


def apply(
    probs: np.ndarray,
    thresholds: float | Sequence[float] = 0.5,
    min_areas: int | Sequence[int] = 0,
    image_probs: np.ndarray | None = None,
    gate_thresholds: float | Sequence[float] = 0.5,
) -> np.ndarray:
    """Binary ``(H, W, C)`` uint8 masks from ``(H, W, C)`` probabilities.

    ``image_probs`` ``(C,)``: image-level defect probabilities; a class whose value is at most its
    gate threshold is emptied.
    """
    probs = np.asarray(probs)
    if probs.ndim != 3:
        raise ValueError(f"probs must be (H, W, C), got shape {probs.shape}")
    n_classes = probs.shape[-1]
    thresholds = _per_class(thresholds, n_classes, "thresholds")
    min_areas = _per_class(min_areas, n_classes, "min_areas").astype(int)
    out = np.zeros(probs.shape, np.uint8)
    for c in range(n_classes):
        if image_probs is not None and image_probs[c] <= _per_class(gate_thresholds, n_classes, "gate_thresholds")[c]:
            continue
        out[..., c] = remove_small(probs[..., c] > thresholds[c], int(min_areas[c]))
    return out


def _dice_for_min_areas(prob: np.ndarray, truth: np.ndarray, threshold: float, min_areas: np.ndarray) -> np.ndarray:
    """Dice of one ``(H, W)`` pair for every candidate minimum area (vectorised over ``min_areas``)."""
    truth_sum = int(truth.sum())
    binary = prob > threshold
    if not binary.any():
        return np.full(min_areas.shape, 1.0 if truth_sum == 0 else 0.0)
    labels, areas = _components(binary)
    inter = np.bincount(labels.ravel(), weights=truth.ravel().astype(np.float64), minlength=areas.size)
    areas, inter = areas[1:], inter[1:]
    kept = areas[None, :] >= min_areas[:, None]
    pred_sum = (kept * areas).sum(axis=1)
    inter_sum = (kept * inter).sum(axis=1)
    total = pred_sum + truth_sum
    return np.where(total == 0, 1.0, 2 * inter_sum / np.maximum(total, 1))


def tune(
    probs: np.ndarray,
    truths: np.ndarray,
    thresholds: Sequence[float] = (0.3, 0.4, 0.5, 0.6, 0.7),
    min_areas: Sequence[int] = (0, 100, 300, 600, 1000, 2000, 3500),
    class_names: dict[int, str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Grid-search threshold and minimum area per class on validation data.

    ``probs`` and ``truths`` are ``(N, H, W, C)``. Returns ``(best, grid)``: ``best`` has one row per
    class (threshold, min_area, dice, dice at the defaults 0.5/0), ``grid`` every candidate's mean Dice.
    The competition score after tuning is ``best["dice"].mean()``.
    """
    probs, truths = np.asarray(probs), np.asarray(truths)
    if probs.shape != truths.shape or probs.ndim != 4:
        raise ValueError(f"probs and truths must both be (N, H, W, C), got {probs.shape} and {truths.shape}")
    areas = np.asarray(sorted(set(int(a) for a in min_areas) | {0}))
    rows = []
    for c in range(probs.shape[-1]):
        for threshold in sorted(set(float(t) for t in thresholds) | {0.5}):
            dice = np.mean([_dice_for_min_areas(probs[i, ..., c], truths[i, ..., c], threshold, areas)
                            for i in range(probs.shape[0])], axis=0)
            rows += [(c + 1, threshold, int(a), float(d)) for a, d in zip(areas, dice)]
    grid = pd.DataFrame(rows, columns=["ClassId", "threshold", "min_area", "dice"])
    best = grid.loc[grid.groupby("ClassId")["dice"].idxmax()].set_index("ClassId")
    default = grid[(grid["threshold"] == 0.5) & (grid["min_area"] == 0)].set_index("ClassId")["dice"]
    best["dice_default"] = default
    if class_names:
        best.insert(0, "name", [class_names.get(c, str(c)) for c in best.index])
    return best, grid


def tuned_record(best: pd.DataFrame, flips: Sequence[str] = ()) -> dict:
    """``best`` of :func:`tune` as a run's ``"postprocessing"`` metrics record (what serving applies).

    ``{"<ClassId>": {"threshold": t, "min_area": a, "dice": d, "dice_default": d0, "flips": [...]}}``;
    ``flips``: the flip TTA the values were tuned with.
    """
    columns = [c for c in ("threshold", "min_area", "dice", "dice_default") if c in best.columns]
    if not {"threshold", "min_area"} <= set(columns):
        raise ValueError(f"best needs threshold and min_area columns (as tune returns), got {list(best.columns)}")
    return {str(int(class_id)): {"threshold": float(row["threshold"]), "min_area": int(row["min_area"]),
                                 **{c: float(row[c]) for c in columns[2:]}, "flips": list(flips)}
            for class_id, row in best[columns].iterrows()}


def flip_tta(predict: Callable[..., np.ndarray], images: np.ndarray, flips: Sequence[str] = ("horizontal",), **predict_kwargs) -> np.ndarray:
    """Average ``predict(images, **predict_kwargs)`` over the images and their flips, each flipped back.

    ``images`` ``(N, H, W, ch)``; ``predict`` returns ``(N, H, W, C)``; ``flips`` among
    ``horizontal`` and ``vertical`` (empty = plain prediction).
    """
    axes = {"horizontal": 2, "vertical": 1}
    unknown = set(flips) - set(axes)
    if unknown:
        raise ValueError(f"flips must be among {sorted(axes)}, got {sorted(unknown)}")
    total = np.asarray(predict(images, **predict_kwargs), dtype=np.float64)
    for flip in flips:
        axis = axes[flip]
        total += np.flip(np.asarray(predict(np.flip(images, axis=axis), **predict_kwargs)), axis=axis)
    return (total / (1 + len(flips))).astype(np.float32)


def write_submission(image_ids: Sequence[str], masks: Sequence[np.ndarray], path: str | os.PathLike) -> pd.DataFrame:
    """Write a Kaggle submission from ``(H, W, C)`` masks and check it by re-decoding every row.

    Returns the wide table written. Raises ``ValueError`` if a row does not decode to its mask.
    """
    if len(image_ids) != len(masks) or not len(masks):
        raise ValueError(f"need as many masks as image ids (and at least one), got {len(masks)} and {len(image_ids)}")
    repeated = pd.Index(image_ids)[pd.Index(image_ids).duplicated()]
    if len(repeated):
        raise ValueError(f"ImageId {repeated[0]!r} appears more than once in image_ids; each image must have one row")
    n_classes = np.asarray(masks[0]).shape[-1]
    rows = {image_id: severstal.encode_masks(mask) for image_id, mask in zip(image_ids, masks)}
    wide = pd.DataFrame.from_dict(rows, orient="index", columns=list(range(1, n_classes + 1))).astype(str)
    wide.index.name = "ImageId"
    severstal.write_submission(wide, path)
    written = files.read_csv(path, dtype=str, keep_default_na=False)
    for image_id, mask in zip(image_ids, masks):
        for c in range(n_classes):
            encoded = written.loc[(written["ImageId"] == image_id) & (written["ClassId"] == str(c + 1)), "EncodedPixels"]
            if len(encoded) != 1 or not np.array_equal(rle.decode(encoded.iloc[0], mask.shape[:2]), mask[..., c] > 0):
                raise ValueError(f"{path}: ImageId {image_id} ClassId {c + 1} does not decode to its mask")
    return wide
