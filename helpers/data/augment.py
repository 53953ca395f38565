"""Albumentations pipelines for grey defect images and their ``(H, W, C)`` mask stacks (no TensorFlow).

Every transform is called as ``transforms(image=image, mask=masks)`` with a uint8 ``(H, W)``
grey image and a uint8 0/1 ``(H, W, C)`` mask stack (:func:`helpers.core.severstal.decode_masks`);
geometric steps move both identically, masks with nearest-neighbour interpolation and a
constant 0 border, so they stay 0/1. Pixel-level steps (brightness/contrast) touch the image only.

:func:`train_transforms` (in this order): optional resize to a common size, optional random
crop (padded first if the image is smaller; with probability ``defect_crop_p`` the crop is
chosen by ``CropNonEmptyMaskIfExists`` so that it holds defect pixels when the image has any,
otherwise uniformly), flips, a small shift-scale-rotate (``Affine``) and random
brightness/contrast. :func:`eval_transforms`: nothing, or a resize / top-left pad to a common
size (for datasets of mixed sizes such as Magnetic-tile).

Reproducibility: albumentations 2.0.8's ``Compose(seed=s)`` gives *every* child transform its
own generator seeded with the same ``s``, so e.g. a horizontal and a vertical flip with equal
``p`` always fire together. :func:`reseed` instead shares one generator pair among all
children (independent draws, still fully determined by the seed); :func:`train_transforms`
uses it, and :mod:`helpers.data.pipeline` reseeds a per-thread copy for every element.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import albumentations as A
import cv2
import numpy as np

__all__ = ["apply", "eval_transforms", "reseed", "train_transforms"]


def _size(name: str, value: Sequence[int] | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        height, width = (int(v) for v in value)
        ok = all(float(v) == int(v) for v in value) and height >= 1 and width >= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{name} must be None or (height, width) with two integers >= 1, got {value!r}")
    return height, width


def _probability(name: str, value: float) -> float:
    try:
        p = float(value)
    except (TypeError, ValueError):
        p = float("nan")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return p


def reseed(transforms: A.BaseCompose, seed: int | Sequence[int]) -> A.BaseCompose:
    """Seed ``transforms`` in place with one shared (numpy, python) generator pair; return it.

    ``seed``: an int >= 0 or a sequence of them (e.g. ``(seed, index)``), mixed by
    ``numpy.random.SeedSequence``. The same seed gives the same sequence of augmentations.
    """
    entropy = [int(seed)] if np.ndim(seed) == 0 else [int(s) for s in seed]
    if any(s < 0 for s in entropy):
        raise ValueError(f"seed must be an int >= 0 or a sequence of them, got {seed!r}")
    numpy_state, python_state = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint64)
    transforms.set_random_state(np.random.default_rng(int(numpy_state)), random.Random(int(python_state)))
    return transforms


def _resize(size: tuple[int, int]) -> A.Resize:
    return A.Resize(*size, interpolation=cv2.INTER_AREA, mask_interpolation=cv2.INTER_NEAREST, p=1.0)


def train_transforms(
    crop_size: Sequence[int] | None = (256, 512),
    resize_to: Sequence[int] | None = None,
    flips: bool = True,
    brightness_contrast: bool = True,
    shift_scale_rotate: bool = True,
    defect_crop_p: float = 0.5,
    seed: int | None = None,
) -> A.Compose:
    """Training augmentation for a grey ``(H, W)`` image and its ``(H, W, C)`` masks.

    ``resize_to = (h, w)``: first resize everything to that size (area for the image,
    nearest for masks). ``crop_size = (h, w)``: then a random crop of that size (e.g. 256x512
    out of Severstal's 256x1600; smaller images are zero-padded up to it first); with
    probability ``defect_crop_p`` the crop is placed over defect pixels if the image has
    any (``CropNonEmptyMaskIfExists``), otherwise anywhere. ``None`` keeps the full size.
    Then horizontal and vertical flips (p=0.5 each), ``Affine`` (p=0.5: shift <= 6.25%,
    scale 0.9-1.1, rotation <= 10 degrees, bilinear image / nearest masks, constant 0
    border) and brightness/contrast (+-0.2, p=0.5, image only). ``seed``: reproducible
    augmentation (see :func:`reseed`); ``None`` draws fresh entropy.
    """
    crop = _size("crop_size", crop_size)
    resize = _size("resize_to", resize_to)
    defect_crop_p = _probability("defect_crop_p", defect_crop_p)
    steps: list[A.BasicTransform | A.BaseCompose] = []
    if resize is not None:
        steps.append(_resize(resize))
    if crop is not None:
        steps.append(
            A.PadIfNeeded(min_height=crop[0], min_width=crop[1], position="center", border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0)
        )
        defect_crop = A.CropNonEmptyMaskIfExists(*crop, p=defect_crop_p)
        random_crop = A.RandomCrop(*crop, p=1.0 - defect_crop_p)
        if defect_crop_p == 1.0:
            steps.append(A.CropNonEmptyMaskIfExists(*crop, p=1.0))
        elif defect_crop_p == 0.0:
            steps.append(A.RandomCrop(*crop, p=1.0))
        else:  # OneOf picks one child with probability proportional to its p
            steps.append(A.OneOf([defect_crop, random_crop], p=1.0))
    if flips:
        steps += [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)]
    if shift_scale_rotate:
        steps.append(
            A.Affine(
                translate_percent=(-0.0625, 0.0625),
                scale=(0.9, 1.1),
                rotate=(-10, 10),
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST,
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                fill_mask=0,
                p=0.5,
            )
        )
    if brightness_contrast:
        steps.append(A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5))
    transforms = A.Compose(steps, p=1.0)
    if seed is not None:
        reseed(transforms, seed)
    return transforms


def eval_transforms(resize_to: Sequence[int] | None = None, pad_to: Sequence[int] | None = None) -> A.Compose:
    """Deterministic evaluation transform: identity, a resize, a top-left zero pad, or both.

    ``resize_to = (h, w)``: resize (area for the image, nearest for masks) so images of
    different sizes batch together. ``pad_to = (h, w)``: then zero-pad at the bottom/right
    up to that size (no resampling; images larger than it are left as they are, and
    predictions are cropped back with ``[:h0, :w0]``). With both, ``pad_to`` may not be
    smaller than ``resize_to``.
    """
    resize = _size("resize_to", resize_to)
    pad = _size("pad_to", pad_to)
    if resize is not None and pad is not None and (pad[0] < resize[0] or pad[1] < resize[1]):
        raise ValueError(f"pad_to must be at least resize_to on each side, got resize_to={resize_to!r}, pad_to={pad_to!r}")
    steps: list[A.BasicTransform] = []
    if resize is not None:
        steps.append(_resize(resize))
    if pad is not None:
        steps.append(
            A.PadIfNeeded(min_height=pad[0], min_width=pad[1], position="top_left", border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0)
        )
    return A.Compose(steps, p=1.0)


def apply(transforms: A.BaseCompose | None, image: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run ``transforms`` on a uint8 ``(H, W)`` image and ``(H, W, C)`` masks; ``None`` = identity.

    Returns contiguous uint8 ``(h, w)`` and ``(h, w, C)`` arrays.
    """
    image, masks = np.asarray(image), np.asarray(masks)
    if image.ndim != 2 or masks.ndim != 3 or image.shape != masks.shape[:2]:
        raise ValueError(f"need an (H, W) image and (H, W, C) masks of the same H, W; got {image.shape} and {masks.shape}")
    if transforms is not None:
        out = transforms(image=image, mask=masks)
        image, masks = out["image"], out["mask"]
        if image.ndim == 3 and image.shape[-1] == 1:
            image = image[..., 0]
    return np.ascontiguousarray(image, dtype=np.uint8), np.ascontiguousarray(masks, dtype=np.uint8)
