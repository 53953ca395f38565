"""Predict with a trained model: a folder of images (Kaggle ``submission.csv`` + overlays) or a dataset split.

Split of a Severstal-layout dataset (validation, tuning, explanations): :func:`read_split` decodes
the images and true masks once and pads the images for the architecture; :func:`predict_dataset`
adds the model's probabilities, cropped back to the images' size. :func:`eval_dataset` is the same
padded split as a ``tf.data`` pipeline (validation during training). A split of mixed image sizes
(Magnetic-tile) is evaluated at its own resolution with ``mixed_sizes=True``: every image on one
canvas of the largest height and width, :attr:`Split.valid` marking each image's own pixels (pass it
to :func:`helpers.modeling.metrics.evaluate`, so the padding is not scored as background).

A folder:

    python -m helpers.deploy.predict MODEL IMAGES_DIR OUT_DIR [--threshold 0.5 [...]] [--min-area 0 [...]]
                              [--batch-size 1] [--threads 2] [--no-overlays] [--trust-code]
                              [--flip-tta] [--sample-submission sample_submission.csv]
    defects-predict ...                      # the same, as installed by pip

``MODEL``: a ``.tflite`` file (:func:`helpers.deploy.export.convert`), or a Keras model as notebook 03
writes it (a run folder ``models/<name>/``, :mod:`helpers.modeling.runs`, or a ``.keras`` file; see
:func:`helpers.deploy.export.load_keras_model`: model files holding code, such as a ``Lambda`` layer,
are refused unless ``--trust-code``, which runs that code). Every image of ``IMAGES_DIR`` (sorted
by name) is read as grey levels, zero-padded at the bottom/right to the model's input size (a ``.tflite`` model or
PSPNet: the size it was converted/built at; other Keras models: the next multiple of 32), predicted,
cropped back, thresholded per class with small components removed
(:func:`helpers.modeling.postprocess.apply`). ``OUT_DIR`` gets ``submission.csv`` (every ImageId x ClassId,
:func:`helpers.core.severstal.write_submission`; ImageId = the file name, as in Kaggle's) and
``overlays/<ImageId>.png`` (:func:`helpers.core.viz.overlay`; ``a.jpg`` and ``a.png`` -> ``a.jpg.png``
and ``a.png.png``). Outputs appear only once every image is predicted: a failure leaves none.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from helpers.core import checks, files, severstal, viz
from helpers.data import pipeline, tf_augment
from helpers.deploy import export
from helpers.modeling import builders, postprocess
from helpers.backend import keras, tf

__all__ = ["KerasPredictor", "Split", "eval_dataset", "has_mixed_sizes", "load_predictor", "main", "predict_dataset", "predict_folder",
           "predict_image", "read_split", "split_shape", "split_sizes"]

SUBMISSION_NAME = "submission.csv"
OVERLAYS_DIR = "overlays"


class KerasPredictor:
    """A Keras model behind the interface of :class:`helpers.deploy.export.TFLitePredictor`.

    ``input_size``: the model's fixed ``(H, W)``, or ``None`` when it takes any multiple of ``multiple``.
    """

    def __init__(self, model: keras.Model, multiple: int = 32):
        height, width = model.inputs[0].shape[1:3]
        self.model = model
        self.multiple = checks.positive_int("multiple", multiple)
        self.input_size = (int(height), int(width)) if height is not None and width is not None else None

    def predict(self, images: np.ndarray, batch_size: int = 1, progress: bool = False) -> np.ndarray:
        """Float32 outputs of ``(N, H, W, C)`` images in [0, 255]."""
        return np.asarray(self.model.predict(images, batch_size=batch_size, verbose=int(progress)), dtype=np.float32)


def load_predictor(
    path: str | os.PathLike, num_threads: int = 2, trust_code: bool = False
) -> export.TFLitePredictor | KerasPredictor:
    """:class:`helpers.deploy.export.TFLitePredictor` for a ``.tflite`` file, else a :class:`KerasPredictor`.

    Keras models load with :func:`helpers.deploy.export.load_keras_model` (``trust_code`` as there).
    """
    path = Path(path)
    if path.suffix == ".tflite":
        return export.TFLitePredictor(path, num_threads=num_threads)
    model, settings = export.load_keras_model(path, trust_code=trust_code)
    multiple = builders.size_multiple(settings["arch"], settings.get("downsample_factor", 8)) if "arch" in settings else 32
    return KerasPredictor(model, multiple)


def _target_size(predictor, shapes: list[tuple[int, int]], names: list[str]) -> tuple[int, int]:
    """The padded ``(H, W)`` of one batch: the model's fixed size, or the batch's largest rounded up."""
    if predictor.input_size is None:
        return builders.round_up([max(side) for side in zip(*shapes)], predictor.multiple)
    for name, shape in zip(names, shapes):
        if shape[0] > predictor.input_size[0] or shape[1] > predictor.input_size[1]:
            raise ValueError(
                f"image {name} is {shape[0]}x{shape[1]}, larger than the model input {predictor.input_size[0]}x"
                f"{predictor.input_size[1]} (HxW): convert the model at a larger input_size"
            )
    return predictor.input_size


def _values(name: str, values: float | Sequence[float], check) -> list:
    """``values`` (one, or a sequence) as a list, each passed through ``check(name, value)``."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence | np.ndarray):
        values = [values]
    if not len(values):
        raise ValueError(f"{name} needs 1 value or one per class; got {values!r}")
    return [check(name, value) for value in values]


def _per_class(name: str, values: list, n_classes: int) -> np.ndarray:
    if len(values) not in (1, n_classes):
        raise ValueError(f"{name} needs 1 value or one per class ({n_classes}); got {values!r}")
    return np.broadcast_to(np.asarray(values), (n_classes,))


def _image_ids(paths: list[Path]) -> list[str]:
    """The ImageId (file name) of each path; a repeated one is an error naming it."""
    seen: dict[str, Path] = {}
    for path in paths:
        if path.name in seen:
            raise ValueError(f"ImageId {path.name!r} appears twice ({seen[path.name]} and {path}): each image needs its own")
        seen[path.name] = path
    return list(seen)


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
    trust_code: bool = False,
    sample_submission: str | os.PathLike | None = None,
    flips: Sequence[str] = (),
) -> pd.DataFrame:
    """Predict every image of ``images_dir``; write ``out_dir/submission.csv`` (+ ``overlays/<ImageId>.png``).

    Returns the wide table written (index ImageId = file name, one RLE column per class). ``thresholds``
    (in [0, 1]) / ``min_areas`` (pixels): one value or one per class. ``trust_code``: see
    :func:`load_predictor`. ``sample_submission``: a Kaggle ``sample_submission.csv`` whose rows,
    order and layout the submission takes (:func:`helpers.core.severstal.write_submission_like`,
    checked). ``flips``: test-time augmentation, ``horizontal`` and/or ``vertical``
    (:func:`helpers.modeling.postprocess.flip_tta`; use what the thresholds were tuned with). Nothing is
    written unless every image is predicted.
    """
    flips = tuple(checks.choice("flips", flip, ("horizontal", "vertical")) for flip in flips)
    if sample_submission is not None:
        severstal.read_sample_submission(sample_submission)  # a broken sample stops us before any prediction
    batch_size = checks.positive_int("batch_size", batch_size)
    num_threads = checks.positive_int("num_threads", num_threads)
    thresholds = _values("thresholds", thresholds, lambda name, v: checks.number(name, v, 0.0, 1.0))
    min_areas = _values("min_areas", min_areas, lambda name, v: checks.integer(name, v, low=0))
    paths = files.list_images(images_dir)
    if not paths:
        raise ValueError(f"no images ({', '.join(files.IMAGE_SUFFIXES)}) in {images_dir}")
    image_ids = _image_ids(paths)
    predictor = load_predictor(model, num_threads=num_threads, trust_code=trust_code)
    out_dir = Path(out_dir)
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{OVERLAYS_DIR}.", dir=out_dir))  # overlays wait here until all succeed
    try:
        rows: dict[str, list[str]] = {}
        shapes: dict[str, tuple[int, int]] = {}
        for start in tqdm(range(0, len(paths), batch_size), desc="predict", unit="batch", disable=not progress):
            chunk, ids = paths[start:start + batch_size], image_ids[start:start + batch_size]
            images = [files.read_grey(p) for p in chunk]
            height, width = _target_size(predictor, [im.shape for im in images], ids)
            batch = np.stack([np.pad(im, ((0, height - im.shape[0]), (0, width - im.shape[1]))) for im in images])
            probs = postprocess.flip_tta(lambda x: predictor.predict(x, batch_size=len(x)),
                                         batch[..., None].astype(np.float32), flips=flips)
            if probs.ndim != 4:
                raise ValueError(f"{model} outputs shape {probs.shape}, not (N, H, W, classes) masks: use a segmentation model")
            n_classes = probs.shape[-1]
            class_thresholds = _per_class("thresholds", thresholds, n_classes)
            class_areas = _per_class("min_areas", min_areas, n_classes)
            for image_id, image, prob in zip(ids, images, probs):
                masks = postprocess.apply(prob[: image.shape[0], : image.shape[1]], class_thresholds, class_areas)
                rows[image_id] = severstal.encode_masks(masks)
                shapes[image_id] = image.shape[:2]
                if overlays:
                    files.write_image(staging / f"{image_id}.png", viz.overlay(image, masks))
        wide = pd.DataFrame.from_dict(rows, orient="index", columns=list(range(1, n_classes + 1))).astype(str)
        wide.index.name = "ImageId"
        if sample_submission is None:
            severstal.write_submission(wide, out_dir / SUBMISSION_NAME)
        else:
            sized = wide.assign(Height=[shapes[i][0] for i in wide.index], Width=[shapes[i][1] for i in wide.index])
            severstal.write_submission_like(sized, sample_submission, out_dir / SUBMISSION_NAME)
        if overlays:
            (out_dir / OVERLAYS_DIR).mkdir(exist_ok=True)
            for image_id in image_ids:
                os.replace(staging / f"{image_id}.png", out_dir / OVERLAYS_DIR / f"{image_id}.png")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created:
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    shutil.rmtree(staging, ignore_errors=True)
    return wide


def predict_image(
    predictor,
    image: np.ndarray,
    thresholds: float | Sequence[float] = 0.5,
    min_areas: int | Sequence[int] = 0,
    flips: Sequence[str] = (),
    name: str = "image",
) -> tuple[np.ndarray, np.ndarray]:
    """``(probs (H, W, C) float32, masks (H, W, C) uint8)`` of one uint8 ``(H, W)`` grey image.

    As :func:`predict_folder` does for each image: zero-padded for ``predictor`` (a
    :func:`load_predictor` result), predicted (averaged over ``flips``), cropped back, thresholded
    per class with small components removed. ``name`` appears in errors.
    """
    flips = tuple(checks.choice("flips", flip, ("horizontal", "vertical")) for flip in flips)
    thresholds = _values("thresholds", thresholds, lambda key, v: checks.number(key, v, 0.0, 1.0))
    min_areas = _values("min_areas", min_areas, lambda key, v: checks.integer(key, v, low=0))
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"image {name} must be grey (H, W); got shape {image.shape}")
    height, width = _target_size(predictor, [image.shape], [name])
    batch = np.pad(image, ((0, height - image.shape[0]), (0, width - image.shape[1])))[None, ..., None].astype(np.float32)
    probs = postprocess.flip_tta(lambda x: predictor.predict(x, batch_size=len(x)), batch, flips=flips)
    if probs.ndim != 4:
        raise ValueError(f"the model outputs shape {probs.shape}, not (N, H, W, classes) masks: use a segmentation model")
    n_classes = probs.shape[-1]
    prob = probs[0, : image.shape[0], : image.shape[1]]
    masks = postprocess.apply(prob, _per_class("thresholds", thresholds, n_classes), _per_class("min_areas", min_areas, n_classes))
    return prob, masks


# ------------------------------------------------------------------ a split of a dataset
@dataclass(frozen=True)
class Split:
    """Images of a dataset split decoded once, with their true masks and (after :func:`predict_dataset`) probabilities.

    ``inputs``: ``(N, H', W', 1)`` float32 grey levels, zero-padded at the bottom/right to what the
    model takes; ``truths``: ``(N, H, W, C)`` uint8 0/1 and ``probs``: ``(N, H, W, C)`` float32, both
    at the images' ``shape = (H, W)``; ``seconds``: wall time of the prediction. Mixed sizes:
    ``shape`` is the canvas (the largest height and width), ``sizes`` each image's own ``(h, w)``,
    and truths and probabilities are 0 outside it.
    """

    image_ids: list[str]
    inputs: np.ndarray
    truths: np.ndarray
    shape: tuple[int, int]
    probs: np.ndarray | None = None
    seconds: float = 0.0
    sizes: list[tuple[int, int]] | None = None

    @property
    def images(self) -> np.ndarray:
        """``(N, H, W)`` uint8 grey images at their own size (mixed sizes: on the canvas)."""
        return np.uint8(self.crop(self.inputs)[..., 0])

    @cached_property
    def valid(self) -> np.ndarray | None:
        """``(N, H, W)`` bool, True on each image's own pixels; ``None`` when every image fills ``shape`` (built once)."""
        if self.sizes is None:
            return None
        inside = np.zeros((len(self.sizes), *self.shape), bool)
        for k, (height, width) in enumerate(self.sizes):
            inside[k, :height, :width] = True
        return inside

    def crop(self, batch: np.ndarray) -> np.ndarray:
        """``batch[:, :H, :W]``: model outputs on ``inputs`` cropped back to the images' size (mixed: 0 outside each)."""
        cropped = batch[:, : self.shape[0], : self.shape[1]]
        if self.sizes is None:
            return cropped
        return np.where(self.valid.reshape(*self.valid.shape, *([1] * (cropped.ndim - 3))), cropped, 0).astype(cropped.dtype)

    def own(self, index: int, array: np.ndarray) -> np.ndarray:
        """``array`` (one image's ``(H, W[, C])`` on the canvas) cut to that image's own size."""
        height, width = self.sizes[index] if self.sizes is not None else self.shape
        return array[:height, :width]


def split_sizes(wide: pd.DataFrame, image_ids: Sequence[str], resize_to: Sequence[int] | None = None) -> list[tuple[int, int]]:
    """Every image's ``(H, W)`` (``resize_to`` for all when given), in ``image_ids`` order."""
    if resize_to:
        return [tuple(int(side) for side in resize_to)] * len(image_ids)
    return [(int(wide.at[i, "Height"]), int(wide.at[i, "Width"])) for i in image_ids]


def has_mixed_sizes(wide: pd.DataFrame, image_ids: Sequence[str], resize_to: Sequence[int] | None = None) -> bool:
    """Whether these images (after ``resize_to``) have more than one size: evaluate them with ``mixed_sizes=True``."""
    return len(set(split_sizes(wide, image_ids, resize_to))) > 1


def split_shape(wide: pd.DataFrame, image_ids: Sequence[str], resize_to: Sequence[int] | None = None,
                mixed_sizes: bool = False) -> tuple[int, int]:
    """The one ``(H, W)`` of these images (``resize_to`` when given); with ``mixed_sizes`` the largest height and width.

    Images of two sizes without ``mixed_sizes`` are a ``ValueError``.
    """
    sizes = dict(zip(image_ids, split_sizes(wide, image_ids, resize_to)))
    if not sizes:
        raise ValueError("image_ids is empty")
    if mixed_sizes:
        return max(h for h, _ in sizes.values()), max(w for _, w in sizes.values())
    first = next(iter(sizes))
    other = next((i for i, size in sizes.items() if size != sizes[first]), None)
    if other is not None:
        (h0, w0), (h1, w1) = sizes[first], sizes[other]
        raise ValueError(f"the split holds images of two sizes ({first} is {h0}x{w0}, {other} is {h1}x{w1}): "
                         "pass resize_to=(H, W) to evaluate them together, or mixed_sizes=True to evaluate each at its own size")
    return sizes[first]


def eval_dataset(
    data_dir: str | os.PathLike,
    image_ids: Sequence[str],
    wide: pd.DataFrame,
    batch_size: int,
    arch: str = "unet",
    resize_to: Sequence[int] | None = None,
    downsample_factor: int = 8,
    progress: bool = False,
    mixed_sizes: bool = False,
) -> tuple[tf.data.Dataset, tuple[int, int]]:
    """``(batches of padded images and masks, the images' (H, W))`` of a split, in ``image_ids`` order.

    Images are resized to ``resize_to`` (optional) and zero-padded for ``arch``
    (:func:`helpers.modeling.builders.padded_size`; crop outputs back with ``[:, :H, :W]``).
    ``mixed_sizes``: images of several sizes are padded to one canvas (``(H, W)`` is its size, see :func:`split_shape`).
    """
    shape = split_shape(wide, image_ids, resize_to, mixed_sizes)
    pad_to = builders.padded_size(shape, arch, downsample_factor)
    transforms = tf_augment.eval_augment(resize_to=tuple(resize_to) if resize_to else None, pad_to=pad_to)  # TF ops
    data = pipeline.make_dataset(data_dir, image_ids, wide, pipeline.Batching(batch_size, training=False), transforms=transforms,
                                 progress=progress)
    return data, shape


def read_split(
    data_dir: str | os.PathLike,
    image_ids: Sequence[str],
    wide: pd.DataFrame | None = None,
    arch: str = "unet",
    resize_to: Sequence[int] | None = None,
    batch_size: int = 8,
    downsample_factor: int = 8,
    mixed_sizes: bool = False,
) -> Split:
    """The images (padded for ``arch``) and true masks of ``image_ids`` of a Severstal-layout dataset, decoded once.

    ``mixed_sizes``: images of several sizes on one canvas, each at its own resolution (:attr:`Split.valid`).
    """
    wide = severstal.read_dataset(data_dir) if wide is None else wide
    data, shape = eval_dataset(data_dir, image_ids, wide, batch_size, arch, resize_to, downsample_factor, mixed_sizes=mixed_sizes)
    batches = [(images.numpy(), masks.numpy()) for images, masks in data]
    inputs = np.concatenate([images for images, _ in batches])
    truths = np.concatenate([masks for _, masks in batches])[:, : shape[0], : shape[1]].astype(np.uint8)
    sizes = split_sizes(wide, image_ids, resize_to)
    return Split(image_ids=list(image_ids), inputs=inputs, truths=truths, shape=shape,
                 sizes=sizes if len(set(sizes)) > 1 else None)


def predict_dataset(
    model: keras.Model,
    data_dir: str | os.PathLike,
    image_ids: Sequence[str],
    wide: pd.DataFrame | None = None,
    arch: str = "unet",
    resize_to: Sequence[int] | None = None,
    batch_size: int = 8,
    flips: Sequence[str] = (),
    downsample_factor: int = 8,
    mixed_sizes: bool = False,
) -> Split:
    """:func:`read_split` plus ``model``'s probabilities, averaged over ``flips`` (:func:`helpers.modeling.postprocess.flip_tta`).

    Mixed sizes: each image is predicted on the canvas, its probabilities outside its own pixels set to 0.
    """
    split = read_split(data_dir, image_ids, wide, arch, resize_to, batch_size, downsample_factor, mixed_sizes)
    started = time.perf_counter()
    probs = postprocess.flip_tta(model.predict, split.inputs, flips=tuple(flips), batch_size=batch_size, verbose=0)
    seconds = time.perf_counter() - started
    return Split(split.image_ids, split.inputs, split.truths, split.shape, split.crop(probs), seconds, split.sizes)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m helpers.deploy.predict",
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
    parser.add_argument("--trust-code", action="store_true",
                        help="load .keras/.h5 model files even when they hold Python code (a Lambda layer): that code runs")
    parser.add_argument("--flip-tta", action="store_true", help="average each prediction with its horizontal flip")
    parser.add_argument("--sample-submission", metavar="CSV",
                        help="Kaggle sample_submission.csv: write its rows, in its order and layout (checked)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command-line entry; returns the exit code (errors exit with a one-line message)."""
    args = _parser().parse_args(argv)
    started = time.perf_counter()
    try:
        wide = predict_folder(
            args.model, args.images_dir, args.out_dir, thresholds=args.threshold, min_areas=args.min_area,
            batch_size=args.batch_size, num_threads=args.threads, overlays=not args.no_overlays, trust_code=args.trust_code,
            sample_submission=args.sample_submission, flips=("horizontal",) if args.flip_tta else (),
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
