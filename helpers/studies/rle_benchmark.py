"""RLE speed benchmark: :mod:`helpers.core.rle` against the straightforward public-kernel functions.

The baselines are the two functions most public Severstal kernels use: ``mask2rle``
(``np.where`` on the padded column-major pixels, string join) and ``rle2mask`` (a Python
loop filling one slice per run, no validation). Both sides are timed in the same process,
interleaved, best of ``repeats``; report the ratio, not absolute times.
"""

from __future__ import annotations

import time

import cv2
import numpy as np
import pandas as pd

from helpers.core import rle

__all__ = ["MIXES", "baseline_mask2rle", "baseline_rle2mask", "benchmark_masks", "large_area_masks", "realistic_masks", "time_rle"]


def baseline_mask2rle(mask: np.ndarray) -> str:
    """Public-kernel style encoder: ``np.where`` over the padded column-major pixels."""
    pixels = np.concatenate([[0], mask.T.flatten(), [0]])
    runs = np.where(pixels[1:] != pixels[:-1])[0] + 1
    runs[1::2] -= runs[::2]
    return " ".join(str(x) for x in runs)


def baseline_rle2mask(encoded: str, shape: tuple[int, int]) -> np.ndarray:
    """Public-kernel style decoder: one slice assignment per run, no validation."""
    tokens = encoded.split()
    starts = np.asarray(tokens[0::2], dtype=int) - 1
    lengths = np.asarray(tokens[1::2], dtype=int)
    flat = np.zeros(shape[0] * shape[1], dtype=np.uint8)
    for lo, hi in zip(starts, starts + lengths):
        flat[lo:hi] = 1
    return flat.reshape(shape[1], shape[0]).T


def realistic_masks(n: int, shape: tuple[int, int] = (256, 1600), seed: int = 0) -> list[np.ndarray]:
    """``n`` uint8 ``(H, W)`` masks with 1-3 irregular blobs each, sized like Severstal defects.

    Blob areas are log-normal around ~0.5% of the image (small pits) up to ~10% (large patches).
    """
    height, width = rle.validate_shape(shape)
    rng = np.random.default_rng(seed)
    masks = []
    for _ in range(n):
        mask = np.zeros((height, width), np.uint8)
        for _ in range(rng.integers(1, 4)):
            area = min(np.exp(rng.normal(np.log(0.005), 1.2)), 0.1) * height * width
            for _ in range(rng.integers(1, 5)):
                axis_a = max(2, np.sqrt(area / np.pi) * rng.uniform(0.4, 1.6))
                axis_b = max(2, area / (np.pi * axis_a) * rng.uniform(0.5, 1.0))
                center = (int(rng.integers(0, width)), int(rng.integers(0, height)))
                cv2.ellipse(mask, center, (int(axis_a), int(min(axis_b, height / 2))), float(rng.uniform(0, 180)), 0, 360, 1, -1)
        masks.append(mask)
    return masks


def large_area_masks(n: int, shape: tuple[int, int] = (256, 1600), seed: int = 0, max_size: tuple[int, int] = (80, 300)) -> list[np.ndarray]:
    """``n`` uint8 ``(H, W)`` masks of 1-5 axis-aligned rectangles up to ``max_size = (h, w)``, like Severstal's class 3 patches.

    Large areas mean long runs: one per column a rectangle covers.
    """
    height, width = rle.validate_shape(shape)
    max_h, max_w = min(max_size[0], height), min(max_size[1], width)
    rng = np.random.default_rng(seed)
    masks = []
    for _ in range(n):
        mask = np.zeros((height, width), np.uint8)
        for _ in range(rng.integers(1, 6)):
            h, w = int(rng.integers(max(1, max_h // 4), max_h + 1)), int(rng.integers(max(1, max_w // 4), max_w + 1))
            top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
            mask[top:top + h, left:left + w] = 1
        masks.append(mask)
    return masks


MIXES = {"small defects": realistic_masks, "large areas": large_area_masks}
"""The two benchmark mixes: irregular blobs of realistic defect sizes, and large rectangular patches."""


def benchmark_masks(mix: str, n: int, shape: tuple[int, int] = (256, 1600), seed: int = 0) -> list[np.ndarray]:
    """``n`` masks of one of :data:`MIXES`."""
    if mix not in MIXES:
        raise ValueError(f"mix must be one of {list(MIXES)}, got {mix!r}")
    return MIXES[mix](n, shape, seed=seed)


def _best_rate(function, items, repeats: int) -> float:
    best = np.inf
    for _ in range(repeats):
        started = time.perf_counter()
        for item in items:
            function(item)
        best = min(best, time.perf_counter() - started)
    return len(items) / best


def time_rle(masks: list[np.ndarray], repeats: int = 3) -> pd.DataFrame:
    """Encode and decode rates (masks/s) of this project and of the baselines, measured in one run.

    Also checks that both sides agree on every mask before timing.
    """
    if not masks:
        raise ValueError("time_rle needs at least one mask")
    shape = masks[0].shape
    strings = [rle.encode(m) for m in masks]
    for mask, encoded in zip(masks, strings):
        if encoded != baseline_mask2rle(mask) or not np.array_equal(rle.decode(encoded, shape), baseline_rle2mask(encoded, shape)):
            raise AssertionError("helpers.core.rle and the baseline disagree; benchmark aborted")
    cases = {
        ("encode", "helpers.core.rle.encode"): (rle.encode, masks),
        ("encode", "baseline mask2rle"): (baseline_mask2rle, masks),
        ("decode", "helpers.core.rle.decode (validating)"): (lambda s: rle.decode(s, shape), strings),
        ("decode", "baseline rle2mask (no checks)"): (lambda s: baseline_rle2mask(s, shape), strings),
    }
    rates = {key: [] for key in cases}
    for _ in range(repeats):  # interleave so machine noise hits both sides alike
        for key, (function, items) in cases.items():
            rates[key].append(_best_rate(function, items, 1))
    rows = [(op, impl, max(r)) for (op, impl), r in rates.items()]
    table = pd.DataFrame(rows, columns=["operation", "implementation", "masks_per_s"])
    table["us_per_mask"] = 1e6 / table["masks_per_s"]
    runs = np.array([len(s.split()) // 2 for s in strings])
    table.attrs.update(n_masks=len(masks), shape=shape, median_runs=float(np.median(runs)))
    return table
