"""A deterministic, built-in Severstal-format steel dataset (no download needed).

:func:`make_steel_dataset` writes ``train_images/<ImageId>.jpg``, ``train.csv`` (Kaggle's
final layout, defect-free images absent) and ``classes.csv``, and returns the wide table
that :func:`helpers.core.severstal.read_dataset` reads back.

Images are grey rolled-steel strips (3 identical channels, JPEG, like Kaggle's): mid-grey
grain, horizontal rolling streaks, an illumination gradient with vignetting and sometimes a
black band past the strip edge at the left or right end. Four defect classes look distinct:

1. ``pits``: clusters of small dark or bright dots (small masks);
2. ``scratches``: long thin 1-3 px lines at various angles, bright or dark;
3. ``patches``: large irregular lighter or darker textured regions (the largest masks);
4. ``holes``: big, very dark irregular blobs.

Masks cover everything drawn for a defect and are a little larger (as Kaggle's coarse
annotations); two classes in one image lie side by side, so their masks do not overlap.
Defects stay off the black band. Sizes scale with the image height (256 px = Kaggle's).
Class frequencies follow Severstal (see :data:`DEFECT_FREE_SHARE`,
:data:`SINGLE_CLASS_WEIGHTS`, :data:`TWO_CLASS_SHARE`, :data:`CLASS_PAIR_WEIGHTS`).

Everything is drawn from ``numpy.random.default_rng`` streams seeded by ``(seed, index)``,
so the same arguments give byte-identical files, and image ``i`` is the same in a run of
any length (except images converted to meet ``min_images_per_class``).
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from helpers.core import checks, files, rle, severstal

__all__ = [
    "CLASS_NAMES",
    "CLASS_PAIR_WEIGHTS",
    "DEFECT_FREE_SHARE",
    "MIN_HEIGHT",
    "MIN_WIDTH",
    "SINGLE_CLASS_WEIGHTS",
    "TWO_CLASS_SHARE",
    "draw_holes",
    "draw_patches",
    "draw_pits",
    "draw_scratches",
    "image_id",
    "make_steel_dataset",
    "plan_classes",
    "render_image",
    "steel_background",
]

CLASS_NAMES = {1: "pits", 2: "scratches", 3: "patches", 4: "holes"}

# Severstal train.csv (12,568 images): 47% defect-free; of the defective images 6.4% hold
# two classes (mostly 3+4 and 1+3); the single-class images are 76% class 3, 12% class 1,
# 8% class 4 and 3% class 2. Marginally, of the defective images class 3 is in ~77%,
# class 1 ~13%, class 4 ~12% and class 2 ~4%.
DEFECT_FREE_SHARE = 0.47
TWO_CLASS_SHARE = 0.064  # of the defective images
SINGLE_CLASS_WEIGHTS = {1: 0.123, 2: 0.031, 3: 0.763, 4: 0.083}
CLASS_PAIR_WEIGHTS = {(3, 4): 0.66, (1, 3): 0.22, (1, 2): 0.08, (2, 3): 0.04}

MIN_HEIGHT = 32
MIN_WIDTH = 32

# Seed-sequence tags keep the per-image streams independent of one another.
_DRAW, _PLAN, _FILL = 0, 1, 2


# --------------------------------------------------------------------------- naming / plan


def image_id(seed: int, index: int, taken: set[str] | None = None) -> str:
    """Kaggle-like ImageId (9 lowercase hex chars + ``.jpg``) of image ``index``, not in ``taken``."""
    salt = 0
    while True:
        key = f"synthetic-steel:{seed}:{index}" + (f":{salt}" if salt else "")
        name = hashlib.sha1(key.encode("ascii")).hexdigest()[:9] + ".jpg"
        if taken is None or name not in taken:
            return name
        salt += 1


def _draw_label_set(rng: np.random.Generator) -> tuple[int, ...]:
    if rng.random() < DEFECT_FREE_SHARE:
        return ()
    if rng.random() < TWO_CLASS_SHARE:
        pairs = list(CLASS_PAIR_WEIGHTS)
        weights = np.array(list(CLASS_PAIR_WEIGHTS.values()))
        return pairs[int(rng.choice(len(pairs), p=weights / weights.sum()))]
    classes = list(SINGLE_CLASS_WEIGHTS)
    weights = np.array(list(SINGLE_CLASS_WEIGHTS.values()))
    return (classes[int(rng.choice(len(classes), p=weights / weights.sum()))],)


def plan_classes(n_images: int, seed: int = 0, min_images_per_class: int = 0) -> list[tuple[int, ...]]:
    """Sorted class ids of each of ``n_images`` images (``()`` = defect-free).

    Each image draws its label set from its own stream, then classes seen fewer than
    ``min_images_per_class`` times are added, in a seeded order, to defect-free images
    first, then to single-class images, and last in place of a class seen more often than
    needed. Needs ``4 * min_images_per_class <= 2 * n_images`` (at most two classes an image).
    """
    n_classes = len(CLASS_NAMES)
    if 2 * n_images < n_classes * min_images_per_class:
        raise ValueError(
            f"min_images_per_class must be between 0 and n_images // 2 = {n_images // 2} "
            f"(at most 2 classes per image), got {min_images_per_class}"
        )
    plan = [set(_draw_label_set(np.random.default_rng([seed, _PLAN, i]))) for i in range(n_images)]
    order = np.random.default_rng([seed, _FILL]).permutation(n_images).tolist()

    def count(class_id: int) -> int:
        return sum(class_id in labels for labels in plan)

    for class_id in CLASS_NAMES:
        deficit = min_images_per_class - count(class_id)
        candidates = [i for i in order if not plan[i]] + [
            i for i in order if len(plan[i]) == 1 and class_id not in plan[i]
        ]
        for i in candidates[: max(deficit, 0)]:
            plan[i].add(class_id)
        deficit = min_images_per_class - count(class_id)
        for i in order:
            if deficit <= 0:
                break
            spare = [c for c in sorted(plan[i]) if c != class_id and count(c) > min_images_per_class]
            if class_id not in plan[i] and spare:
                plan[i].discard(spare[-1])
                plan[i].add(class_id)
                deficit -= 1
    return [tuple(sorted(labels)) for labels in plan]


# --------------------------------------------------------------------------- texture


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], grid: tuple[int, int]) -> np.ndarray:
    """Float32 ``(H, W)`` noise: a ``grid = (gh, gw)`` standard-normal grid resized with cubic interpolation."""
    height, width = shape
    small = rng.standard_normal((max(grid[0], 2), max(grid[1], 2)), dtype=np.float32)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)


def steel_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Float32 ``(H, W)`` defect-free steel: mid-grey, fine grain and horizontal rolling streaks."""
    level = rng.uniform(88.0, 132.0)
    grain = rng.standard_normal((height, width), dtype=np.float32)
    grain = cv2.GaussianBlur(grain, (3, 3), 0.6) * np.float32(rng.uniform(7.0, 12.0))
    # Rolling streaks: per-row noise stretched along the long (horizontal) axis.
    fine = _smooth_noise(rng, (height, width), (height, max(width // 90, 2)))
    fine = cv2.GaussianBlur(fine, (1, 3), 0) * np.float32(rng.uniform(2.5, 6.0))
    coarse = _smooth_noise(rng, (height, width), (max(height // 8, 2), max(width // 400, 2)))
    coarse *= np.float32(rng.uniform(2.0, 5.0))
    return np.float32(level) + grain + fine + coarse


def _illumination(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Float32 ``(H, W)`` multiplicative light field: linear gradient, vignetting, slow blotches."""
    y = np.linspace(-1.0, 1.0, height, dtype=np.float32)[:, None]
    x = np.linspace(-1.0, 1.0, width, dtype=np.float32)[None, :]
    gx, gy = rng.uniform(-0.15, 0.15), rng.uniform(-0.1, 0.1)
    vignette = rng.uniform(0.05, 0.2)
    field = 1.0 + gx * x + gy * y - vignette * (0.6 * x**2 + 0.4 * y**2)
    field = field + 0.04 * _smooth_noise(rng, (height, width), (3, 6))
    return field.astype(np.float32)


def _edge_band(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, int, int]:
    """Alpha ``(H, W)`` of a black band past the strip edge (zeros if none) and the free columns ``[x_lo, x_hi)``."""
    alpha = np.zeros((height, width), dtype=np.float32)
    if rng.random() >= 0.15:
        return alpha, 0, width
    band = int(round(rng.uniform(0.04, 0.22) * width))
    wobble = _smooth_noise(rng, (height, 1), (4, 1))[:, 0] * max(1.0, 0.01 * height)
    edge = np.clip(band + wobble, 1, width - 1)  # per row, columns [0, edge) are off the strip
    columns = np.arange(width, dtype=np.float32)[None, :]
    soft = max(1.5, 0.012 * height)
    alpha = np.clip((edge[:, None] - columns) / soft + 0.5, 0.0, 1.0).astype(np.float32)
    left = rng.random() < 0.5
    if not left:
        alpha = alpha[:, ::-1].copy()
    reach = int(math.ceil(edge.max() + soft)) + 1
    return (alpha, reach, width) if left else (alpha, 0, width - reach)


# --------------------------------------------------------------------------- defects


def _scale(image: np.ndarray) -> float:
    """Size unit of an ``(H, W)`` image: 1.0 at Kaggle's height of 256 px."""
    return image.shape[0] / 256.0


def _blob(rng: np.random.Generator, box_height: int, box_width: int, roughness: float) -> np.ndarray:
    """Bool ``(h, w)`` irregular blob filling most of its box (always holds the centre)."""
    yy = np.linspace(-1.0, 1.0, box_height, dtype=np.float32)[:, None]
    xx = np.linspace(-1.0, 1.0, box_width, dtype=np.float32)[None, :]
    distance = np.sqrt(xx**2 + yy**2)
    grid = (4, max(4, int(round(4 * box_width / max(box_height, 1)))))
    noise = _smooth_noise(rng, (box_height, box_width), grid)
    blob = (distance + roughness * 0.3 * noise < 0.85) & (distance < 1.0)
    blob |= distance < 0.3
    blob[box_height // 2, box_width // 2] = True  # tiny boxes
    return blob


def _box(
    rng: np.random.Generator, height: int, box: tuple[float, float], columns: tuple[int, int]
) -> tuple[int, int, int, int]:
    """``(y, x, h, w)`` of a ``box = (h, w)``, shrunk if needed, inside the rows and the columns ``[x_lo, x_hi)``."""
    x_lo, x_hi = columns
    box_h = int(np.clip(box[0], 1, height))
    box_w = int(np.clip(box[1], 1, x_hi - x_lo))
    y = int(rng.integers(0, height - box_h + 1))
    x = int(rng.integers(x_lo, x_hi - box_w + 1))
    return y, x, box_h, box_w


def _kernel(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _soft_region(footprint: np.ndarray, blur: int) -> tuple[np.ndarray, np.ndarray]:
    """Alpha (float32) of a bool ``(H, W)`` footprint blurred with an odd ``blur`` kernel, and a mask covering it."""
    alpha = cv2.GaussianBlur(footprint.astype(np.float32), (blur, blur), 0)
    square = np.ones((blur, blur), dtype=np.uint8)
    mask = cv2.dilate(footprint.astype(np.uint8), square) > 0  # holds the whole kernel support
    return alpha, mask


def draw_patches(rng: np.random.Generator, image: np.ndarray, columns: tuple[int, int]) -> np.ndarray:
    """Draw 1-3 large irregular, rough lighter/darker patches into float32 ``image (H, W)``; return the bool mask."""
    height, width = image.shape
    s = _scale(image)
    span = columns[1] - columns[0]
    footprint = np.zeros((height, width), dtype=bool)
    for _ in range(int(rng.choice([1, 1, 1, 2, 2, 3]))):
        size = (max(rng.uniform(0.4, 1.0) * height, 8), min(max(rng.uniform(0.4, 1.8) * height, 8), 0.9 * span))
        y, x, box_h, box_w = _box(rng, height, size, columns)
        footprint[y : y + box_h, x : x + box_w] |= _blob(rng, box_h, box_w, roughness=rng.uniform(1.0, 1.8))
    blur = 2 * max(1, int(round(7 * s))) + 1
    alpha, mask = _soft_region(footprint, blur)
    lighter = rng.random() < 0.7
    # Strength fades in and out across the patch; the texture is scaly (mottled) and streaky.
    level = rng.uniform(14.0, 30.0) * (1.0 + 0.35 * np.tanh(_smooth_noise(rng, (height, width), (3, 10))))
    mottle = _smooth_noise(rng, (height, width), (max(height // 6, 2), max(width // 12, 2)))
    grain = rng.standard_normal((height, width), dtype=np.float32)
    streaks = _smooth_noise(rng, (height, width), (max(height // 2, 2), max(width // 40, 2)))
    texture = rng.uniform(6.0, 10.0) * mottle + rng.uniform(4.0, 7.0) * grain + rng.uniform(3.0, 6.0) * streaks
    image += alpha * ((level if lighter else -level) + texture)
    return mask


def draw_holes(rng: np.random.Generator, image: np.ndarray, columns: tuple[int, int]) -> np.ndarray:
    """Draw 1-2 big, very dark irregular blobs into float32 ``image (H, W)``; return the bool mask."""
    height, width = image.shape
    s = _scale(image)
    span = columns[1] - columns[0]
    footprint = np.zeros((height, width), dtype=bool)
    for _ in range(int(rng.choice([1, 1, 1, 2]))):
        size = (max(rng.uniform(0.4, 0.95) * height, 6), min(max(rng.uniform(0.25, 1.0) * height, 6), 0.6 * span))
        y, x, box_h, box_w = _box(rng, height, size, columns)
        footprint[y : y + box_h, x : x + box_w] |= _blob(rng, box_h, box_w, roughness=rng.uniform(1.0, 2.0))
    blur = 2 * max(1, int(round(3 * s))) + 1
    alpha, mask = _soft_region(footprint, blur)
    # Darkest in the middle, a little lighter towards the torn rim, with a faint texture.
    depth = cv2.GaussianBlur(footprint.astype(np.float32), (0, 0), max(2.0, 8.0 * s))
    dark = rng.uniform(6.0, 20.0) + 40.0 * (1.0 - np.clip(depth * 1.25, 0.0, 1.0))
    dark = dark + 4.0 * _smooth_noise(rng, (height, width), (max(height // 6, 2), max(width // 6, 2)))
    image *= 1.0 - alpha
    image += alpha * dark
    return mask


def draw_pits(rng: np.random.Generator, image: np.ndarray, columns: tuple[int, int]) -> np.ndarray:
    """Draw 1-3 clusters of small dark or bright dots into float32 ``image (H, W)``; return the bool mask."""
    height, width = image.shape
    s = _scale(image)
    delta = np.zeros((height, width), dtype=np.float32)
    x_lo, x_hi = columns
    for _ in range(int(rng.choice([1, 1, 2, 3]))):
        cy = rng.uniform(0.1, 0.9) * height
        cx = rng.uniform(x_lo + 0.05 * (x_hi - x_lo), x_hi - 0.05 * (x_hi - x_lo))
        spread_y = rng.uniform(0.03, 0.09) * height
        spread_x = spread_y * rng.uniform(1.0, 2.5)
        dark = rng.random() < 0.7
        n_dots = int(rng.integers(5, 20))
        offsets = rng.standard_normal((n_dots, 2)) * (spread_y, spread_x)
        offsets[0] = 0.0  # one dot on the centre, inside the strip
        for dy, dx in offsets:
            radius = max(1, int(round(rng.uniform(1.5, 5.0) * s)))
            value = rng.uniform(50.0, 85.0) * (-1.0 if dark or rng.random() < 0.2 else 0.8)
            centre = (int(np.clip(cx + dx, x_lo, x_hi - 1)), int(np.clip(cy + dy, 0, height - 1)))
            cv2.circle(delta, centre, radius, float(value), thickness=-1)
    footprint = (delta != 0).astype(np.uint8)
    image += cv2.GaussianBlur(delta, (3, 3), 0.7)
    # Coarse annotation: dots grown, then close neighbours joined.
    mask = cv2.dilate(footprint, _kernel(max(2, int(round(4 * s)))))
    return cv2.morphologyEx(mask, cv2.MORPH_CLOSE, _kernel(max(2, int(round(8 * s))))) > 0


def draw_scratches(rng: np.random.Generator, image: np.ndarray, columns: tuple[int, int]) -> np.ndarray:
    """Draw 1-2 long, thin (1-3 px), bowed bright or dark lines into float32 ``image (H, W)``; return the mask."""
    height, width = image.shape
    x_lo, x_hi = columns
    weight = np.zeros((height, width), dtype=np.float32)
    for _ in range(int(rng.choice([1, 1, 1, 2]))):
        cy = rng.uniform(0.25, 0.75) * height
        cx = min(rng.uniform(x_lo + 0.1 * (x_hi - x_lo), x_hi - 0.1 * (x_hi - x_lo)), x_hi - 1)
        angle = rng.uniform(0.0, np.pi)
        length = rng.uniform(0.8, 3.0) * height
        t = np.linspace(-0.5, 0.5, 9)
        bend = rng.uniform(-0.04, 0.04) * length * 4 * t**2  # bowed, through (cx, cy)
        direction, normal = np.array([np.cos(angle), np.sin(angle)]), np.array([-np.sin(angle), np.cos(angle)])
        points = np.array([cx, cy]) + np.outer(t * length, direction) + np.outer(bend, normal)
        thickness = int(rng.integers(1, 4))
        contrast = {1: 1.5, 2: 1.2, 3: 1.0}[thickness]  # the blur fades the thinnest lines most
        cv2.polylines(weight, [np.round(points).astype(np.int32)], False, contrast, thickness=thickness)
    weight[:, :x_lo] = 0
    weight[:, x_hi:] = 0
    sign = -1.0 if rng.random() < 0.5 else 1.0
    strength = sign * rng.uniform(40.0, 70.0) * (0.75 + 0.25 * np.tanh(_smooth_noise(rng, (height, width), (2, 8))))
    image += cv2.GaussianBlur(weight * strength, (3, 3), 0.6)
    return cv2.dilate((weight > 0).astype(np.uint8), np.ones((3, 3), dtype=np.uint8)) > 0


_DRAWERS = {3: draw_patches, 4: draw_holes, 1: draw_pits, 2: draw_scratches}  # drawing order: large first


def _split_columns(rng: np.random.Generator, x_lo: int, x_hi: int, parts: int, gap: int) -> list[tuple[int, int]]:
    """``parts`` (1 or 2) column ranges ``[a, b)`` of ``[x_lo, x_hi)``, in random order, ``gap`` apart.

    Two defect classes of one image lie side by side (as in Severstal), so their masks do
    not overlap when the gap is wider than twice the farthest a mask reaches past its range
    (true unless the strip is narrower than about 3 gaps).
    """
    if parts <= 1:
        return [(x_lo, x_hi)] * parts
    middle = x_lo + int(rng.uniform(0.3, 0.7) * (x_hi - x_lo))
    left, right = (x_lo, max(middle - gap // 2, x_lo + 1)), (min(middle + gap - gap // 2, x_hi - 1), x_hi)
    return [left, right] if rng.random() < 0.5 else [right, left]


def render_image(
    rng: np.random.Generator, height: int, width: int, classes: tuple[int, ...]
) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """A uint8 ``(H, W)`` steel image with defects of ``classes`` (at most 2) and their non-empty bool masks."""
    if len(set(classes)) > 2 or not set(classes) <= set(CLASS_NAMES):
        raise ValueError(f"classes must be at most 2 distinct ids from {sorted(CLASS_NAMES)}, got {classes!r}")
    image = steel_background(rng, height, width)
    band, x_lo, x_hi = _edge_band(rng, height, width)
    drawn = [c for c in _DRAWERS if c in classes]
    gap = max(int(0.04 * width), int(20 * height / 256) + 6)  # > twice the farthest mask reach past its span
    gap = min(gap, (x_hi - x_lo) // 3)
    spans = dict(zip(drawn, _split_columns(rng, x_lo, x_hi, len(drawn), gap)))
    masks = {c: _DRAWERS[c](rng, image, spans[c]) for c in drawn}
    image *= _illumination(rng, height, width)
    if x_hi - x_lo < width:  # the strip darkens towards its edge, then the black background
        shade = cv2.GaussianBlur(band, (0, 0), sigmaX=max(2.0, 0.012 * width), sigmaY=0.5)
        black = rng.uniform(3.0, 14.0) + 2.0 * rng.standard_normal((height, width), dtype=np.float32)
        image = image * (1.0 - band) * (1.0 - 0.5 * shade) + black * band
    on_strip = band < 1.0
    for class_id, mask in masks.items():
        mask &= on_strip
        if not mask.any():  # cannot happen: every defect is placed inside [x_lo, x_hi)
            raise RuntimeError(f"class {class_id} mask vanished behind the strip edge")
    return np.clip(np.round(image), 0, 255).astype(np.uint8), masks


# --------------------------------------------------------------------------- dataset


def make_steel_dataset(
    out_dir: str | os.PathLike,
    n_images: int = 400,
    height: int = 256,
    width: int = 1600,
    seed: int = 0,
    jpeg_quality: int = 90,
    min_images_per_class: int = 2,
    overwrite: bool = False,
    progress: bool = True,
) -> pd.DataFrame:
    """Write a synthetic Severstal-format steel dataset to ``out_dir`` and return its wide table.

    Writes ``train_images/<ImageId>.jpg`` (``height x width``, 3 identical grey channels),
    ``classes.csv`` (:data:`CLASS_NAMES`) and, last, ``train.csv``. Returns the table indexed
    by ImageId with RLE columns 1..4 plus ``Height`` and ``Width``, equal to
    ``helpers.core.severstal.read_dataset(out_dir)``. Same arguments give byte-identical files.
    The dataset is built beside ``out_dir`` and replaces it at once (a killed run leaves the old
    one whole); other entries of ``out_dir`` (not dataset files) are kept. If ``train_images``
    already holds images of another dataset: ``FileExistsError``, unless ``overwrite=True``.
    """
    n_images = checks.integer("n_images", n_images, 1)
    height = checks.integer("height", height, MIN_HEIGHT)
    width = checks.integer("width", width, MIN_WIDTH)
    seed = checks.integer("seed", seed, 0)
    jpeg_quality = checks.integer("jpeg_quality", jpeg_quality, 1, 100)
    min_images_per_class = checks.integer("min_images_per_class", min_images_per_class, 0, n_images // 2)
    plan = plan_classes(n_images, seed, min_images_per_class)

    ids: list[str] = []
    taken: set[str] = set()
    for index in range(n_images):
        ids.append(image_id(seed, index, taken))
        taken.add(ids[-1])
    out_dir = Path(out_dir)
    images_dir = out_dir / "train_images"
    if images_dir.is_dir():
        stale = sorted(p.name for p in files.list_images(images_dir) if p.name not in taken)
        if stale and not overwrite:
            raise FileExistsError(
                f"{images_dir} already holds {len(stale)} image(s) not in this dataset, e.g. {stale[:3]}; "
                "generate into an empty folder or pass overwrite=True"
            )
    kept = [p for p in out_dir.iterdir() if p.name not in severstal.DATASET_ENTRIES] if out_dir.is_dir() else []
    with files.replacing_folder(out_dir, carry=kept) as building:  # a killed run leaves the old dataset whole
        rows = []
        for index in tqdm(range(n_images), disable=not progress, desc="synthetic steel", unit="img"):
            rng = np.random.default_rng([seed, _DRAW, index])
            grey, masks = render_image(rng, height, width, plan[index])
            files.write_image(building / "train_images" / ids[index], np.repeat(grey[:, :, None], 3, axis=2),
                              quality=jpeg_quality)
            rows.append([rle.encode(masks[c]) if c in masks else "" for c in CLASS_NAMES])
        table = pd.DataFrame(rows, columns=list(CLASS_NAMES), index=pd.Index(ids, name="ImageId"))
        table["Height"], table["Width"] = height, width
        table = table.sort_index()
        severstal.write_classes(building, CLASS_NAMES)
        severstal.write_train_csv(table, building / "train.csv")
    return table
