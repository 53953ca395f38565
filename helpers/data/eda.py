"""Exploratory statistics of a Severstal-format wide table (see :mod:`helpers.core.severstal`)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from helpers.core import files, rle, severstal

__all__ = [
    "class_balance",
    "cooccurrence",
    "defects_per_image",
    "intensity_stats",
    "label_sets",
    "mask_stats",
]


def label_sets(wide: pd.DataFrame) -> pd.DataFrame:
    """Boolean ``(n_images, C)`` table: image has a defect of class c."""
    classes = severstal.class_columns(wide)
    return wide[classes].ne("") & wide[classes].notna()


def class_balance(wide: pd.DataFrame, class_names: dict[int, str] | None = None) -> pd.DataFrame:
    """Images per class (and defect-free), with their share of all images."""
    present = label_sets(wide)
    counts = present.sum().rename(index=lambda c: (class_names or {}).get(c, f"class {c}"))
    counts["defect-free"] = int((~present.any(axis=1)).sum())
    table = counts.rename("images").to_frame()
    table["share"] = table["images"] / len(wide)
    return table


def defects_per_image(wide: pd.DataFrame) -> pd.Series:
    """How many images have 0, 1, 2, ... defect classes."""
    counts = label_sets(wide).sum(axis=1).value_counts().sort_index()
    counts.index.name = "classes per image"
    return counts.rename("images")


def cooccurrence(wide: pd.DataFrame) -> pd.DataFrame:
    """``(C, C)`` counts of images holding both classes (diagonal = images with the class)."""
    present = label_sets(wide).astype(int)
    return present.T @ present


def mask_stats(wide: pd.DataFrame, progress: bool = False) -> pd.DataFrame:
    """One row per (image, class) defect: pixel area, area share of the image and connected components."""
    rows = []
    for image_id, row in tqdm(wide.iterrows(), total=len(wide), disable=not progress, desc="masks"):
        shape = (int(row["Height"]), int(row["Width"]))
        for class_id in severstal.class_columns(wide):
            encoded = row[class_id]
            if not encoded:
                continue
            mask = rle.decode(encoded, shape)
            n_components = cv2.connectedComponents(np.ascontiguousarray(mask), connectivity=8)[0] - 1
            area = int(mask.sum())
            rows.append((image_id, class_id, area, area / mask.size, n_components))
    return pd.DataFrame(rows, columns=["ImageId", "ClassId", "area", "area_share", "components"])


def intensity_stats(images_dir: str | os.PathLike, wide: pd.DataFrame, progress: bool = False) -> pd.DataFrame:
    """Per image: grey mean, std, 1st/99th percentiles, and mean grey inside / outside the defects."""
    rows = []
    for image_id, row in tqdm(wide.iterrows(), total=len(wide), disable=not progress, desc="images"):
        image = files.read_grey(Path(images_dir) / image_id)
        defect = severstal.decode_masks(row).any(axis=-1)
        low, high = np.percentile(image, [1, 99])
        rows.append(
            (
                image_id,
                float(image.mean()),
                float(image.std()),
                float(low),
                float(high),
                float(image[defect].mean()) if defect.any() else np.nan,
                float(image[~defect].mean()) if (~defect).any() else np.nan,
            )
        )
    columns = ["ImageId", "mean", "std", "p1", "p99", "defect_mean", "background_mean"]
    return pd.DataFrame(rows, columns=columns).set_index("ImageId")
