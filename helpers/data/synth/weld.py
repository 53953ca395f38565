"""A deterministic, built-in weld-radiograph dataset in the GDXray-welds style (no download needed).

:func:`make_weld_dataset` renders long weld radiographs with binary defect masks, then tiles them
with :func:`helpers.data.convert.convert_tiled_radiographs` into the Severstal layout
(``train_images/`` + ``train.csv`` + ``classes.csv`` + ``splits.csv`` with group = radiograph),
exactly as the real GDXray welds are converted. It is the target of the transfer notebook
(``06``) when no real data is given.

A radiograph (:func:`render_radiograph`) is a horizontal weld seam: a bright band with a soft,
wavy profile across dark parent plate, weld ripples, film grain and slow exposure changes. Defects
are small and faint, like GDXray's: round pores (alone or in clusters), elongated slag or
worm-hole inclusions, thin jagged cracks and a lack-of-fusion line along a band edge; all darker
than their surroundings. The mask covers each drawn defect. About half of the tiles hold a defect.

Everything is drawn from ``numpy.random.default_rng`` streams seeded by ``(seed, index)``: same
arguments, byte-identical files.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from helpers.core import checks, files
from helpers.data import convert

__all__ = ["DEFECT_KINDS", "MIN_HEIGHT", "MIN_WIDTH", "make_weld_dataset", "render_radiograph"]

MIN_HEIGHT = 64
MIN_WIDTH = 128
DEFECT_KINDS = ("pore", "pore_cluster", "inclusion", "crack", "lack_of_fusion")
_KIND_WEIGHTS = (0.35, 0.15, 0.2, 0.2, 0.1)


def _smooth(rng: np.random.Generator, shape: tuple[int, int], grid: tuple[int, int]) -> np.ndarray:
    """Float32 ``(H, W)`` smooth noise from a standard-normal ``grid`` resized with cubic interpolation."""
    small = rng.standard_normal((max(grid[0], 2), max(grid[1], 2)), dtype=np.float32)
    return cv2.resize(small, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def _seam(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Float32 ``(H, W)`` defect-free radiograph and the seam's centre row and half-width per column ``(W,)``."""
    x = np.arange(width, dtype=np.float32)
    centre = height * (0.5 + 0.04 * _smooth(rng, (1, width), (1, max(width // 600, 2)))[0])
    half = height * rng.uniform(0.2, 0.3) * (1 + 0.08 * _smooth(rng, (1, width), (1, max(width // 400, 2)))[0])
    rows = np.arange(height, dtype=np.float32)[:, None]
    profile = np.exp(-0.5 * ((rows - centre[None, :]) / (0.75 * half[None, :])) ** 4)  # flat-topped bright band
    plate, band = rng.uniform(15, 35), rng.uniform(120, 175)
    image = plate + (band - plate) * profile
    ripple_period = rng.uniform(0.25, 0.5) * height
    ripples = np.sin(2 * np.pi * (x[None, :] + 0.3 * np.abs(rows - centre[None, :])) / ripple_period)
    image += rng.uniform(2.0, 5.0) * ripples * profile
    image *= 1 + 0.06 * _smooth(rng, (height, width), (3, max(width // 300, 2)))
    grain = cv2.GaussianBlur(rng.standard_normal((height, width), dtype=np.float32), (3, 3), 0.8)
    image += rng.uniform(3.0, 6.0) * grain
    return image.astype(np.float32), centre, half


def _disc(height: int, width: int, cy: float, cx: float, ry: float, rx: float, angle: float) -> np.ndarray:
    """Bool ``(H, W)`` filled ellipse."""
    mask = np.zeros((height, width), np.uint8)
    cv2.ellipse(mask, (int(round(cx)), int(round(cy))), (max(1, int(round(rx))), max(1, int(round(ry)))),
                float(angle), 0, 360, 1, thickness=-1)
    return mask.astype(bool)


def _polyline(height: int, width: int, points: np.ndarray, thickness: int) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    cv2.polylines(mask, [np.round(points).astype(np.int32).reshape(-1, 1, 2)], False, 1, thickness=thickness)
    return mask.astype(bool)


def _draw_defect(rng: np.random.Generator, kind: str, shape: tuple[int, int], x: float, centre: float, half: float) -> np.ndarray:
    """Bool ``(H, W)`` footprint of one defect of ``kind`` near column ``x`` of the seam."""
    height, width = shape
    unit = height / 512  # sizes at GDXray's typical seam scale
    y = centre + rng.uniform(-0.6, 0.6) * half
    if kind == "pore":
        r = rng.uniform(3, 9) * unit
        return _disc(height, width, y, x, r, r * rng.uniform(0.8, 1.2), rng.uniform(0, 180))
    if kind == "pore_cluster":
        footprint = np.zeros(shape, bool)
        for _ in range(int(rng.integers(3, 8))):
            r = rng.uniform(2, 5) * unit
            footprint |= _disc(height, width, y + rng.normal(0, 12 * unit), x + rng.normal(0, 20 * unit), r, r, 0)
        return footprint
    if kind == "inclusion":
        length = rng.uniform(12, 40) * unit
        return _disc(height, width, y, x, rng.uniform(2, 5) * unit, length, rng.uniform(-20, 20))
    if kind == "crack":
        length = rng.uniform(30, 90) * unit
        steps = np.linspace(0, 1, 12)[:, None]
        direction = rng.uniform(-0.4, 0.4) + (np.pi / 2 if rng.random() < 0.3 else 0.0)
        jitter = rng.normal(0, 3 * unit, (12, 2))
        points = np.hstack([x + steps * length * np.cos(direction), y + steps * length * np.sin(direction)]) + jitter
        return _polyline(height, width, points, thickness=max(1, int(round(2 * unit))))
    edge = centre + (half if rng.random() < 0.5 else -half) * 0.85  # lack of fusion along a band edge
    length = rng.uniform(60, 200) * unit
    xs = np.linspace(x, x + length, 16)
    points = np.stack([xs, edge + rng.normal(0, 1.5 * unit, 16)], axis=1)
    return _polyline(height, width, points, thickness=max(2, int(round(3 * unit))))


def render_radiograph(rng: np.random.Generator, height: int, width: int, defects_per_1000px: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """One weld radiograph: uint8 ``(H, W)`` grey image and uint8 0/1 ``(H, W)`` defect mask."""
    image, centre, half = _seam(rng, height, width)
    mask = np.zeros((height, width), bool)
    n_defects = int(rng.poisson(defects_per_1000px * width / 1000))
    for _ in range(n_defects):
        kind = str(rng.choice(DEFECT_KINDS, p=_KIND_WEIGHTS))
        x = rng.uniform(0.02, 0.95) * width
        column = int(np.clip(x, 0, width - 1))
        footprint = _draw_defect(rng, kind, (height, width), x, float(centre[column]), float(half[column]))
        alpha = cv2.GaussianBlur(footprint.astype(np.float32), (5, 5), 1.0)
        image -= alpha * rng.uniform(0.12, 0.3) * np.maximum(image, 1.0)  # less material: darker
        mask |= footprint
    blurred = cv2.GaussianBlur(image, (3, 3), 0.7)
    return np.clip(np.round(blurred), 0, 255).astype(np.uint8), mask.astype(np.uint8)


def make_weld_dataset(
    out_dir: str | os.PathLike,
    n_radiographs: int = 10,
    height: int = 512,
    width: int = 2560,
    tile: int = 256,
    stride: int | None = None,
    defects_per_1000px: float = 4.0,
    val_fraction: float = 0.2,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> pd.DataFrame:
    """Render ``n_radiographs`` weld radiographs and tile them into a Severstal-layout dataset in ``out_dir``.

    The radiographs and masks are kept in ``out_dir/source/`` (``W<k>.png`` and ``W<k>_mask.png``);
    tiles, groups and the split by radiograph come from
    :func:`helpers.data.convert.convert_tiled_radiographs` (``tile``, ``stride``, ``val_fraction``,
    ``seed``, ``overwrite`` are passed on). Returns the wide table of the tiles.
    """
    n_radiographs = checks.positive_int("n_radiographs", n_radiographs)
    seed = checks.seed("seed", seed)
    if checks.positive_int("height", height) < MIN_HEIGHT or checks.positive_int("width", width) < MIN_WIDTH:
        raise ValueError(f"height and width must be at least {MIN_HEIGHT} and {MIN_WIDTH}, got {height}x{width}")
    if not defects_per_1000px >= 0:
        raise ValueError(f"defects_per_1000px must be >= 0, got {defects_per_1000px!r}")
    source = Path(out_dir) / "source"
    if source.is_dir():
        shutil.rmtree(source)
    pairs = []
    for index in tqdm(range(n_radiographs), desc="synthetic welds", unit="radiograph", disable=not progress):
        image, mask = render_radiograph(np.random.default_rng([seed, index]), height, width, defects_per_1000px)
        pairs.append((files.write_image(source / f"W{index:04d}.png", image),
                      files.write_image(source / f"W{index:04d}_mask.png", mask * np.uint8(255))))
    return convert.convert_tiled_radiographs(pairs, out_dir, tile=tile, stride=stride, val_fraction=val_fraction,
                                             seed=seed, threshold=127, overwrite=overwrite, progress=progress)
