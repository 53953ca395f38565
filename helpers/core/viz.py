"""Mask overlays and sample grids in one consistent colour scheme."""

from __future__ import annotations

import cv2
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Patch

__all__ = ["CLASS_COLORS", "class_color", "legend_handles", "overlay", "plot_overlays"]

# Okabe-Ito colours (colour-blind safe), one per class id 1, 2, 3, ...
CLASS_COLORS = ((230, 159, 0), (86, 180, 233), (0, 158, 115), (213, 94, 0), (204, 121, 167), (240, 228, 66), (0, 114, 178))


def class_color(class_id: int) -> tuple[int, int, int]:
    """RGB colour of a 1-based class id."""
    if class_id < 1:
        raise ValueError(f"class ids start at 1, got {class_id}")
    return CLASS_COLORS[(class_id - 1) % len(CLASS_COLORS)]


def overlay(image: np.ndarray, masks: np.ndarray, alpha: float = 0.35, outline: int = 1) -> np.ndarray:
    """Colour the ``(H, W, C)`` masks over an ``(H, W)`` grey image; return ``(H, W, 3)`` uint8.

    Each class gets a translucent fill and an opaque outline of ``outline`` pixels.
    """
    image = np.asarray(image)
    masks = np.asarray(masks)
    if image.ndim != 2 or masks.ndim != 3 or masks.shape[:2] != image.shape:
        raise ValueError(f"need image (H, W) and masks (H, W, C) of the same H, W; got {image.shape} and {masks.shape}")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    rgb = np.repeat(image.astype(np.float32)[..., None], 3, axis=-1)
    kernel = np.ones((3, 3), np.uint8)
    for k in range(masks.shape[-1]):
        mask = masks[..., k] > 0
        if not mask.any():
            continue
        color = np.array(class_color(k + 1), dtype=np.float32)
        rgb[mask] = (1 - alpha) * rgb[mask] + alpha * color
        if outline:
            edge = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_GRADIENT, kernel, iterations=outline) > 0
            rgb[edge] = color
    return np.clip(rgb, 0, 255).astype(np.uint8)


def legend_handles(class_names: dict[int, str]) -> list[Patch]:
    """Legend patches for ``{class_id: name}`` in the overlay colours."""
    return [Patch(color=np.array(class_color(c)) / 255, label=f"{c}: {n}") for c, n in class_names.items()]


def plot_overlays(images: list[np.ndarray], masks: list[np.ndarray], titles: list[str], class_names: dict[int, str], columns: int | None = None, width: float = 12.0):
    """Grid of overlays (one ``(H, W)`` image + ``(H, W, C)`` masks per panel) with a class legend.

    ``columns`` defaults to 1 for wide strips (W > 2H) and up to 4 otherwise; ``width`` is the figure width in inches.
    """
    if not (len(images) == len(masks) == len(titles)) or not images:
        raise ValueError("images, masks and titles must be non-empty lists of the same length")
    aspect = images[0].shape[0] / images[0].shape[1]
    if columns is None:
        columns = 1 if aspect < 0.5 else min(4, len(images))
    rows = -(-len(images) // columns)
    panel = width / columns
    fig, axes = plt.subplots(rows, columns, figsize=(width, panel * aspect * rows * 1.2 + 0.6), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, mask, title in zip(axes.ravel(), images, masks, titles):
        ax.imshow(overlay(image, mask))
        ax.set_title(title, fontsize=9, loc="left")
    fig.legend(handles=legend_handles(class_names), loc="lower center", ncol=len(class_names), frameon=False)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig
