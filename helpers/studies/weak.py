"""Weak supervision: pseudo-masks from Grad-CAM, and a segmentation dataset whose training masks are pseudo-masks.

:func:`pseudo_masks` thresholds CAMs ``(N, H, W)`` of defective images into masks (components below
``min_area`` dropped, :func:`helpers.modeling.postprocess.remove_small`); :func:`class_pseudo_masks`
does it per class from image-level labels, with the Grad-CAM of each class a label names. Train a
segmenter on them and score it against the true masks with :func:`helpers.modeling.metrics.evaluate`
(``(N, H, W, 1)`` arrays).

:func:`pseudo_label_dataset` writes a Severstal-layout folder in which the training images carry
pseudo-masks and the validation images keep their **true** masks, so that a segmenter trained on it
(:func:`helpers.studies.transfer.run_fold`) is scored against the truth it never saw. Images are
hard-linked from the source dataset when possible (copied otherwise), never re-encoded.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from helpers.core import rle, severstal
from helpers.modeling import postprocess

__all__ = ["class_pseudo_masks", "pseudo_label_dataset", "pseudo_masks"]


def pseudo_masks(
    cams: np.ndarray,
    threshold: float = 0.5,
    min_area: int = 0,
    image_labels: Sequence[Any] | np.ndarray | None = None,
) -> np.ndarray:
    """Binary ``(N, H, W)`` uint8 masks ``cam > threshold``, 8-connected components under ``min_area`` pixels dropped.

    ``image_labels`` ``(N,)``: images whose label is 0/False (defect-free) get an empty mask.
    """
    cams = np.asarray(cams, dtype=np.float64)
    if cams.ndim != 3:
        raise ValueError(f"cams must be (N, H, W); got shape {cams.shape}")
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be in [0, 1] (CAMs are normalised); got {threshold!r}")
    if not isinstance(min_area, (int, np.integer)) or min_area < 0:
        raise ValueError(f"min_area must be an integer >= 0 (pixels); got {min_area!r}")
    keep = np.ones(len(cams), bool) if image_labels is None else np.asarray(image_labels).astype(bool)
    if keep.shape != (len(cams),):
        raise ValueError(f"image_labels must be (N,) = ({len(cams)},); got shape {keep.shape}")
    out = np.zeros(cams.shape, np.uint8)
    for i in np.flatnonzero(keep):
        out[i] = postprocess.remove_small(cams[i] > threshold, int(min_area))
    return out


def class_pseudo_masks(
    model: "keras.Model",
    images: np.ndarray,
    labels: Sequence[Sequence[Any]] | np.ndarray,
    threshold: float = 0.5,
    min_area: int = 0,
    method: str = "gradcam",
    layer: str | None = None,
    batch_size: int = 16,
) -> np.ndarray:
    """Pseudo-masks ``(N, H, W, K)`` uint8 per class from image-level ``labels`` ``(N, K)`` (0/1) of a ``K``-output classifier.

    Channel ``k`` of image ``i`` is :func:`pseudo_masks` of the Grad-CAM of class ``k`` when
    ``labels[i, k]`` is set, else empty (a class is only looked for where the label says it is).
    ``images``: ``(N, H, W, C)`` in the model's input range. Grad-CAM (:func:`helpers.studies.explain.grad_cam`)
    needs TensorFlow, imported on the first call (this module imports none).
    """
    from helpers.studies import explain

    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4:
        raise ValueError(f"images must be (N, H, W, C); got shape {images.shape}")
    labels = np.asarray(labels)
    n_outputs = int(model.output_shape[-1])
    if labels.shape != (len(images), n_outputs):
        raise ValueError(f"labels must be (N, K) = ({len(images)}, {n_outputs}) (images, model outputs); got shape {labels.shape}")
    out = np.zeros((*images.shape[:3], n_outputs), np.uint8)
    for k in range(n_outputs):
        holding = np.flatnonzero(labels[:, k] > 0)
        if len(holding):
            cams = explain.grad_cam(model, images[holding], target=k, layer=layer, method=method, batch_size=batch_size)
            out[holding, ..., k] = pseudo_masks(cams, threshold=threshold, min_area=min_area)
    return out


def _link_or_copy(source: Path, target: Path) -> None:
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def pseudo_label_dataset(
    source_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    pseudo_masks: Mapping[str, np.ndarray],
    true_ids: Sequence[str],
) -> pd.DataFrame:
    """Write ``out_dir`` (one class ``defect``): ``pseudo_masks`` images for training, ``true_ids`` for validation.

    ``pseudo_masks``: ImageId -> 0/1 ``(H, W)`` mask of the same size as the image;
    ``true_ids``: ImageIds whose masks (all classes merged) are copied from ``source_dir``.
    ``splits.csv`` marks them ``train`` and ``val`` (group = ImageId). Returns the wide table.
    """
    source_dir, out_dir = Path(source_dir), Path(out_dir)
    wide = severstal.read_dataset(source_dir)
    overlap = sorted(set(pseudo_masks) & set(true_ids))
    if overlap:
        raise ValueError(f"{len(overlap)} image(s) are both pseudo-labelled and validation images, e.g. {overlap[:3]}")
    unknown = sorted((set(pseudo_masks) | set(true_ids)) - set(wide.index))
    if unknown:
        raise ValueError(f"{len(unknown)} image(s) are not in {source_dir}, e.g. {unknown[:3]}")
    images_dir = out_dir / "train_images"
    if images_dir.is_dir():
        shutil.rmtree(images_dir)
    images_dir.mkdir(parents=True)
    rows, split = {}, {}
    for image_id, mask in pseudo_masks.items():
        shape = (int(wide.loc[image_id, "Height"]), int(wide.loc[image_id, "Width"]))
        mask = np.asarray(mask)
        if mask.shape != shape:
            raise ValueError(f"pseudo-mask of {image_id} is {mask.shape}, the image is {shape} (HxW)")
        rows[image_id], split[image_id] = rle.encode(mask > 0), "train"
    for image_id in true_ids:
        rows[image_id], split[image_id] = rle.encode(severstal.decode_masks(wide.loc[image_id]).max(axis=-1)), "val"
    for image_id in rows:
        _link_or_copy(source_dir / "train_images" / image_id, images_dir / image_id)
    table = pd.DataFrame({1: pd.Series(rows)}).rename_axis("ImageId").sort_index()
    severstal.write_classes(out_dir, {1: "defect"})
    severstal.write_train_csv(table, out_dir / "train.csv")
    splits = pd.DataFrame({"split": pd.Series(split), "group": pd.Series({i: i for i in split})}).rename_axis("ImageId")
    severstal.write_splits(out_dir, splits)
    return severstal.read_dataset(out_dir)
