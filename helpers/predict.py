"""Predict a folder of images with a ``.tflite`` or Keras model: Kaggle ``submission.csv`` + overlay PNGs.

    python -m helpers.predict MODEL IMAGES_DIR OUT_DIR [--threshold 0.5 [...]] [--min-area 0 [...]]
                              [--batch-size 1] [--threads 2] [--no-overlays]
    defects-predict ...                      # the same, as installed by pip

``MODEL``: a ``.tflite`` file (:func:`helpers.export.convert`), or a Keras model as notebook 03
writes it (``models/<name>/`` with ``build.json`` + ``best.weights.h5``, or a ``.keras`` file; see
:func:`helpers.export.load_keras_model`). Every image of ``IMAGES_DIR`` (sorted by name) is read
as grey levels, zero-padded at the bottom/right to the model's input size (a ``.tflite`` model or
PSPNet: the size it was converted/built at; other Keras models: the next multiple of 32), predicted,
cropped back, thresholded per class with small components removed
(:func:`helpers.postprocess.apply`). ``OUT_DIR`` gets ``submission.csv`` (every ImageId x ClassId,
:func:`helpers.severstal.write_submission`) and ``overlays/<image stem>.png``
(:func:`helpers.viz.overlay`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from . import checks, export, files, models, postprocess, severstal, viz
from .backend import keras

__all__ = ["KerasPredictor", "load_predictor", "main", "predict_folder"]

SUBMISSION_NAME = "submission.csv"
OVERLAYS_DIR = "overlays"


class KerasPredictor:
    """A Keras model behind the interface of :class:`helpers.export.TFLitePredictor`.

    ``input_size``: the model's fixed ``(H, W)``, or ``None`` when it takes any multiple of ``multiple``.
    """

    def __init__(self, model: keras.Model, multiple: int = 32):
        height, width = model.inputs[0].shape[1:3]
        self.model = model
        self.multiple = int(multiple)
        self.input_size = (int(height), int(width)) if height is not None and width is not None else None

    def predict(self, images: np.ndarray, batch_size: int = 1, progress: bool = False) -> np.ndarray:
        """Float32 outputs of ``(N, H, W, C)`` images in [0, 255]."""
        return np.asarray(self.model.predict(images, batch_size=batch_size, verbose=int(progress)), dtype=np.float32)


def load_predictor(path: str | os.PathLike, num_threads: int = 2) -> export.TFLitePredictor | KerasPredictor:
    """:class:`helpers.export.TFLitePredictor` for a ``.tflite`` file, else a :class:`KerasPredictor`."""
    path = Path(path)
    if path.suffix == ".tflite":
        return export.TFLitePredictor(path, num_threads=num_threads)
    model, settings = export.load_keras_model(path)
    multiple = models.size_multiple(settings["arch"], settings.get("downsample_factor", 8)) if "arch" in settings else 32
    return KerasPredictor(model, multiple)


def _target_size(predictor, shapes: list[tuple[int, int]], names: list[str]) -> tuple[int, int]:
    """The padded ``(H, W)`` of one batch: the model's fixed size, or the batch's largest rounded up."""
    if predictor.input_size is None:
        return models.round_up([max(side) for side in zip(*shapes)], predictor.multiple)
    for name, shape in zip(names, shapes):
        if shape[0] > predictor.input_size[0] or shape[1] > predictor.input_size[1]:
            raise ValueError(
                f"image {name} is {shape[0]}x{shape[1]}, larger than the model input {predictor.input_size[0]}x"
                f"{predictor.input_size[1]} (HxW): convert the model at a larger input_size"
            )
    return predictor.input_size


def _per_class(name: str, values: float | Sequence[float], n_classes: int) -> np.ndarray:
    array = np.atleast_1d(np.asarray(values, dtype=np.float64))
    if array.ndim != 1 or len(array) not in (1, n_classes):
        raise ValueError(f"{name} needs 1 value or one per class ({n_classes}); got {values!r}")
    return np.broadcast_to(array, (n_classes,))


def predict_folder(
    model: str | os.PathLike,
    images_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    thresholds: float | Sequence[float] = 0.5,
    min_areas: int | Sequence[int] = 0,
    batch_size: int = 1,
    num_threads: int = 2,
    overlays: bool = True,
    progress: bool = True,
) -> pd.DataFrame:
    """Predict every image of ``images_dir``; write ``out_dir/submission.csv`` (+ ``overlays/*.png``).

    Returns the wide table written (index ImageId = file name, one RLE column per class). ``thresholds`` /
    ``min_areas``: one value or one per class.
    """
    batch_size = checks.positive_int("batch_size", batch_size)
    paths = files.list_images(images_dir)
    if not paths:
        raise ValueError(f"no images ({', '.join(files.IMAGE_SUFFIXES)}) in {images_dir}")
    predictor = load_predictor(model, num_threads=num_threads)
    out_dir = Path(out_dir)
    rows: dict[str, list[str]] = {}
    for start in tqdm(range(0, len(paths), batch_size), desc="predict", unit="batch", disable=not progress):
        chunk = paths[start:start + batch_size]
        images = [files.read_grey(p) for p in chunk]
        height, width = _target_size(predictor, [im.shape for im in images], [p.name for p in chunk])
        batch = np.stack([np.pad(im, ((0, height - im.shape[0]), (0, width - im.shape[1]))) for im in images])
        probs = predictor.predict(batch[..., None].astype(np.float32), batch_size=len(batch))
        if probs.ndim != 4:
            raise ValueError(f"{model} outputs shape {probs.shape}, not (N, H, W, classes) masks: use a segmentation model")
        n_classes = probs.shape[-1]
        class_thresholds = _per_class("thresholds", thresholds, n_classes)
        class_areas = _per_class("min_areas", min_areas, n_classes).astype(int)
        for path, image, prob in zip(chunk, images, probs):
            masks = postprocess.apply(prob[: image.shape[0], : image.shape[1]], class_thresholds, class_areas)
            rows[path.name] = severstal.encode_masks(masks)
            if overlays:
                files.write_image(out_dir / OVERLAYS_DIR / f"{path.stem}.png", viz.overlay(image, masks))
    wide = pd.DataFrame.from_dict(rows, orient="index", columns=list(range(1, n_classes + 1))).astype(str)
    wide.index.name = "ImageId"
    severstal.write_submission(wide, out_dir / SUBMISSION_NAME)
    return wide


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m helpers.predict",
        description="Predict a folder of images with a .tflite or Keras model; write submission.csv and overlay PNGs.",
    )
    parser.add_argument("model", help=".tflite file, or a Keras model folder (build.json + best.weights.h5) / .keras file")
    parser.add_argument("images_dir", help="folder of images (.jpg, .png, ...)")
    parser.add_argument("out_dir", help="where submission.csv and overlays/ go")
    parser.add_argument("--threshold", type=float, nargs="+", default=[0.5], help="probability threshold, one or one per class")
    parser.add_argument("--min-area", type=int, nargs="+", default=[0], help="minimum component area in pixels, one or one per class")
    parser.add_argument("--batch-size", type=int, default=1, help="images per model call (default 1)")
    parser.add_argument("--threads", type=int, default=2, help="TFLite interpreter threads (default 2)")
    parser.add_argument("--no-overlays", action="store_true", help="write submission.csv only")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command-line entry; returns the exit code (errors exit with a one-line message)."""
    args = _parser().parse_args(argv)
    started = time.perf_counter()
    try:
        wide = predict_folder(
            args.model, args.images_dir, args.out_dir, thresholds=args.threshold, min_areas=args.min_area,
            batch_size=args.batch_size, num_threads=args.threads, overlays=not args.no_overlays,
        )
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    defects = int((wide != "").to_numpy().sum())
    where = Path(args.out_dir)
    extra = "" if args.no_overlays else f" and {where / OVERLAYS_DIR}/"
    print(f"{len(wide)} images, {defects} defect masks in {time.perf_counter() - started:.1f} s -> {where / SUBMISSION_NAME}{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
