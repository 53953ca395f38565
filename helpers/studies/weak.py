"""Weak supervision: a segmentation dataset whose training masks are pseudo-masks (e.g. from Grad-CAM).

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

import numpy as np
import pandas as pd

from helpers.core import rle, severstal

__all__ = ["pseudo_label_dataset"]


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
