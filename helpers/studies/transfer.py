"""Transfer experiments of the radiograph pre-training method: fine-tune per (task, initialisation, fold).

Initialisations (:data:`INITIALISATIONS`) of the encoder:

- ``random``: no pre-trained weights;
- ``imagenet``: the backbone's official ImageNet file, looked up in ``weights_dir`` and downloaded
  when missing and allowed (:func:`helpers.modeling.weight_files.find_weights_file`; a clear
  error names the missing file);
- ``radiograph``: encoder weights pre-trained on radiographs (notebook ``05``, written by
  :func:`helpers.modeling.builders.save_encoder_weights`), loaded strictly with the layer count
  reported; ``radiograph:<label>`` names one of several such encoders (e.g. pre-trained on corpora of
  different sizes), each its own initialisation (:func:`init_kind`, :func:`check_init`).

Tasks (:data:`TASKS`) on a Severstal-layout dataset, every defect class merged into one
"defect" (the paper's tasks are binary):

- ``classification``: defect / no defect per image; encoder + global average pooling + one
  dense softmax layer over 2 classes, categorical cross-entropy, flips (the paper's recipe);
- ``segmentation``: defect mask of the defective images only; a segmentation architecture
  (U-Net by default) with the initialised encoder and a random decoder, BCE + Dice, flips, a
  small affine transform and brightness/contrast.

Nothing is frozen (the encoder is fine-tuned). BatchNormalization moving averages use momentum
``bn_momentum`` = 0.9 (:data:`BN_MOMENTUM`, PyTorch's default, the paper's framework): with
Keras' 0.99 a randomly initialised network trained for a few hundred steps keeps stale
statistics and answers one class for every image in inference mode. Learning rate: cosine
from ``learning_rate`` to ``min_learning_rate`` (the paper: 1e-3 / 5e-3 to 1e-6). Every epoch the validation images are
scored in numpy (:func:`helpers.modeling.metrics.binary_classification_scores`,
:func:`helpers.modeling.metrics.binary_segmentation_scores` at threshold 0.5) and logged as ``val_<score>``,
which gives the convergence curves; the reported scores are those of the **last** epoch (the
validation fold is the evaluation fold, so picking the best epoch on it would flatter every
initialisation).

:func:`sensitivity_grid` repeats one fold for every (batch size, learning rate) of a grid (the
paper's Fig. 7). :func:`cross_validate` runs all (initialisation, fold, training fraction) combinations, each in
its own folder, and skips the finished ones when re-run (an interrupted sweep resumes). Every
finished run is a saved run (:func:`helpers.modeling.runs.load_run` gives its model and scores);
its :class:`FoldRecipe` is recorded in ``recipe.json``.

Runs train under :func:`helpers.modeling.train.get_strategy` (several GPUs, or the workers of a
``TF_CONFIG`` cluster, each running the same sweep): the chief writes the run folders, the other
workers write their copies to temporary folders that are removed (:mod:`helpers.modeling.distributed`).
A cluster's strategy can only be made before TensorFlow has run anything in the process:
:func:`cross_validate` and :func:`run_fold` make it first, so a program must not run TensorFlow before them.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from helpers.core import checks, files
from helpers.data import pipeline, radiographs, tf_augment
from helpers.modeling import builders, distributed, losses, metrics, runs, train, weight_files
from helpers.backend import keras, tf

__all__ = [
    "BN_MOMENTUM",
    "CLASSIFICATION_SCORES",
    "ENCODER_BATCHNORM",
    "FoldRecipe",
    "INITIALISATIONS",
    "PAPER_FIGURES",
    "SEGMENTATION_SCORES",
    "TASKS",
    "build_model",
    "check_init",
    "check_initialisations",
    "cross_validate",
    "find_radiograph_encoder",
    "fold_summary",
    "holdout_folds",
    "init_kind",
    "model_settings",
    "run_fold",
    "run_path",
    "sensitivity_grid",
    "training_subset",
    "with_paper_figures",
]

BN_MOMENTUM = 0.9
INITIALISATIONS = ("random", "imagenet", "radiograph")
_LABEL = re.compile(r"[A-Za-z0-9._-]+")
ENCODER_BATCHNORM = ("trainable", "frozen")
TASKS = ("classification", "segmentation")
CLASSIFICATION_SCORES = ("accuracy", "precision", "recall", "f1")
SEGMENTATION_SCORES = ("precision", "recall", "accuracy", "pixel_accuracy", "iou_defect", "iou_background", "miou")
# the paper's Tables 3 and 4 (ResNet50; "radiograph": its CheXpert pre-training), per dataset, task and kind of init
PAPER_FIGURES = {
    "gdxray-weld": {
        "classification": {"random": {"accuracy %": 85.03, "F1": 0.8529}, "imagenet": {"accuracy %": 93.44, "F1": 0.9379},
                           "radiograph": {"accuracy %": 97.78, "F1": 0.9699}},
        "segmentation": {
            "random": {"precision %": 69.20, "recall %": 48.35, "accuracy %": 73.64, "mIoU %": 68.00},
            "imagenet": {"precision %": 71.05, "recall %": 51.63, "accuracy %": 75.18, "mIoU %": 69.35},
            "radiograph": {"precision %": 74.28, "recall %": 61.93, "accuracy %": 80.45, "mIoU %": 73.92}},
    },
    "zju-casting": {
        "classification": {"random": {"accuracy %": 71.31, "F1": 0.7125}, "imagenet": {"accuracy %": 89.56, "F1": 0.8928},
                           "radiograph": {"accuracy %": 91.69, "F1": 0.9151}},
        "segmentation": {
            "random": {"precision %": 50.61, "recall %": 50.69, "accuracy %": 75.16, "mIoU %": 66.58},
            "imagenet": {"precision %": 54.44, "recall %": 54.24, "accuracy %": 76.95, "mIoU %": 68.32},
            "radiograph": {"precision %": 56.79, "recall %": 54.93, "accuracy %": 77.31, "mIoU %": 69.04}},
    },
}


def training_subset(ids: Sequence[str], labels: pd.Series, fraction: float, seed: int = 0) -> list[str]:
    """A seeded share ``fraction`` in (0, 1] of ``ids``, per label value (so the class balance stays).

    Subsets are nested: with the same seed, the 25 % subset lies inside the 50 % one.
    """
    fraction = float(fraction)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    ids = sorted(ids)
    chosen: list[str] = []
    rng = np.random.default_rng(checks.seed("seed", seed))
    for value in sorted(labels.reindex(ids).unique()):
        members = [i for i in ids if labels[i] == value]
        order = rng.permutation(len(members))
        chosen += [members[j] for j in order[: max(1, round(fraction * len(members)))]]
    return sorted(chosen)


@dataclass(frozen=True)
class FoldRecipe:
    """How :func:`run_fold` fine-tunes one fold; :meth:`record` is what a run records in ``recipe.json``.

    ``image_size = (H, W)``: images are resized to it; ``crop_size = (h, w)``: segmentation trains
    on random crops of those (validation on whole images). Learning rate: cosine from
    ``learning_rate`` to ``min_learning_rate``. ``weights_dir``: where the ImageNet file is
    looked up (``imagenet``), or ``imagenet_weights``: an ImageNet file by path instead (e.g. the
    int8-recovered MobileNets); ``radiograph_weights``: the encoder of notebook 05 (``radiograph``).
    ``encoder_batchnorm``: ``trainable``, or ``frozen`` (the encoder's BatchNorm kept in inference
    mode with its loaded statistics); ``bn_reestimate_batches = N > 0``: every BatchNorm's statistics
    re-estimated on N training batches first (:func:`helpers.modeling.builders.reestimate_batchnorm`). ``options``: backbone options (``alpha``, see :func:`helpers.modeling.builders.backbone_options`)
    and, for segmentation, the architecture's (``decoder_filters``, ...).
    """

    backbone: str = "mobilenet"
    image_size: tuple[int, int] = (256, 256)
    epochs: int = 30
    batch_size: int = 16
    learning_rate: float = 1e-3
    min_learning_rate: float = 1e-6
    seed: int = 0
    arch: str = "unet"
    weights_dir: str | None = None
    radiograph_weights: str | None = None
    crop_size: tuple[int, int] | None = None
    bn_momentum: float = BN_MOMENTUM
    imagenet_weights: str | None = None
    encoder_batchnorm: str = "trainable"
    bn_reestimate_batches: int = 0
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        fixed = {
            "image_size": checks.size("image_size", self.image_size),
            "crop_size": None if self.crop_size is None else checks.size("crop_size", self.crop_size),
            "epochs": checks.positive_int("epochs", self.epochs),
            "batch_size": checks.positive_int("batch_size", self.batch_size),
            "learning_rate": checks.number("learning_rate", self.learning_rate, low=0.0),
            "min_learning_rate": checks.number("min_learning_rate", self.min_learning_rate, low=0.0),
            "seed": checks.seed("seed", self.seed),
            "bn_momentum": checks.fraction("bn_momentum", self.bn_momentum),
            "weights_dir": None if not self.weights_dir else str(self.weights_dir),
            "radiograph_weights": None if not self.radiograph_weights else str(self.radiograph_weights),
            "imagenet_weights": None if not self.imagenet_weights else str(self.imagenet_weights),
            "encoder_batchnorm": checks.choice("encoder_batchnorm", self.encoder_batchnorm, ENCODER_BATCHNORM),
            "bn_reestimate_batches": checks.integer("bn_reestimate_batches", self.bn_reestimate_batches, low=0),
            "options": {key: tuple(v) if isinstance(v, (list, tuple)) else v for key, v in dict(self.options).items()},
        }
        for name, value in fixed.items():
            object.__setattr__(self, name, value)

    def record(self, init: str) -> dict[str, Any]:
        """The recipe as JSON values, ``options`` flattened in; the weight files only where ``init`` reads them.

        Fields added later are left out at their default, so runs recorded before them still resume.
        """
        recipe = dataclasses.asdict(self)
        recipe |= recipe.pop("options")
        kind = init_kind(init)
        if kind != "radiograph":
            recipe.pop("radiograph_weights")
        if kind != "imagenet":
            recipe.pop("weights_dir")
        if kind != "imagenet" or recipe["imagenet_weights"] is None:
            recipe.pop("imagenet_weights")
        if recipe["encoder_batchnorm"] == "trainable":
            recipe.pop("encoder_batchnorm")
        if recipe["bn_reestimate_batches"] == 0:
            recipe.pop("bn_reestimate_batches")
        return {key: list(value) if isinstance(value, tuple) else value for key, value in sorted(recipe.items())}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> FoldRecipe:
        """The recipe that :meth:`record` wrote (its image lists, if any, are left out)."""
        names = {f.name for f in dataclasses.fields(cls)} - {"options"}
        options = {key: value for key, value in record.items() if key not in names | {"train_ids", "val_ids"}}
        return cls(**{key: value for key, value in record.items() if key in names}, options=options)


def check_init(init: str) -> str:
    """``init`` if it is one of :data:`INITIALISATIONS` or ``radiograph:<label>`` (letters, digits, ``._-``)."""
    kind, colon, label = str(init).partition(":")
    if colon and kind == "radiograph" and _LABEL.fullmatch(label):
        return init
    if not colon and init in INITIALISATIONS:
        return init
    raise ValueError(f"init must be one of {list(INITIALISATIONS)} or 'radiograph:<label>' (label of letters, digits, "
                     f"'.', '_', '-'), got {init!r}")


def init_kind(init: str) -> str:
    """``random``, ``imagenet`` or ``radiograph`` (for ``radiograph`` and every ``radiograph:<label>``)."""
    return check_init(init).partition(":")[0]


def _encoder_weights(init: str, imagenet_weights, radiograph_weights) -> str | None:
    kind = init_kind(init)
    if kind == "imagenet":
        return imagenet_weights or "imagenet"
    if kind == "radiograph":
        if not radiograph_weights or not Path(radiograph_weights).is_file():
            raise FileNotFoundError(
                f"initialisation {init!r} needs the encoder weights of notebook 05; not found: {radiograph_weights!r}"
            )
    return None


def find_radiograph_encoder(pretrained_dir: str | os.PathLike, backbone: str, **backbone_options: Any) -> dict | None:
    """The newest manifest ``<pretrained_dir>/*.json`` (written by notebook 05) of an encoder for this backbone, or None.

    A manifest holds at least ``weights`` (the ``.h5`` path), ``backbone`` and the backbone
    options it was built with (``alpha`` for mobilenet); options must match.
    """
    folder = Path(pretrained_dir)
    if not folder.is_dir():
        return None
    found = []
    for path in folder.glob("*.json"):
        manifest = files.read_json(path)
        if not isinstance(manifest, dict):
            raise ValueError(f"{path}: not an encoder manifest (expected a JSON object with weights and backbone)")
        if manifest.get("backbone") == backbone and all(manifest.get(k) == v for k, v in backbone_options.items()):
            found.append((path.stat().st_mtime, path.name, manifest))
    return max(found, key=lambda item: item[:2])[2] if found else None


def check_initialisations(
    inits: Sequence[str],
    backbone: str,
    image_size: Sequence[int],
    weights_dir: str | os.PathLike | None = None,
    radiograph_weights: str | os.PathLike | None = None,
    pretrained_dir: str | os.PathLike | None = None,
    imagenet_weights: str | os.PathLike | None = None,
    radiograph_encoders: Mapping[str, str | os.PathLike] | None = None,
    **backbone_options: Any,
) -> dict[str, Any]:
    """Which of ``inits`` can run here, and why the others cannot.

    ``imagenet`` needs ``imagenet_weights`` (a file by path) or else the official file
    (:func:`helpers.modeling.weight_files.find_weights_file`);
    ``radiograph`` needs ``radiograph_weights``, or else the newest matching manifest in
    ``pretrained_dir`` (:func:`find_radiograph_encoder`); ``radiograph:<label>`` needs its file in
    ``radiograph_encoders`` (its manifest, 05's ``<name>.json`` beside it, is read when present).
    Returns ``{"available": [...], "skipped": {init: reason}, "imagenet_file", "radiograph_weights",
    "manifest", "encoders": {init: file}, "manifests": {init: manifest or None}}``.
    """
    for init in inits:
        check_init(init)
    found: dict[str, Any] = {"skipped": {}, "imagenet_file": None, "radiograph_weights": None, "manifest": None,
                             "encoders": {}, "manifests": {}}
    for init in (i for i in inits if i.startswith("radiograph:")):
        path = (radiograph_encoders or {}).get(init)
        if path and Path(path).is_file():
            found["encoders"][init] = str(path)
            manifest_path = Path(path).with_suffix(".json")
            found["manifests"][init] = files.read_json(manifest_path) if manifest_path.is_file() else None
        else:
            found["skipped"][init] = f"no encoder file for {init} ({path or 'not in radiograph_encoders'}): run notebook 05 first"
    if "imagenet" in inits and imagenet_weights:
        if Path(imagenet_weights).is_file():
            found["imagenet_file"] = str(imagenet_weights)
        else:
            found["skipped"]["imagenet"] = f"imagenet_weights file not found: {imagenet_weights}"
    elif "imagenet" in inits:
        try:
            official = builders.official_weights_file(backbone, (*image_size, 1), **backbone_options)
            found["imagenet_file"] = str(weight_files.find_weights_file(official, weights_dir))
        except FileNotFoundError as err:
            found["skipped"]["imagenet"] = str(err)
    if "radiograph" in inits:
        if not radiograph_weights and pretrained_dir is not None:
            found["manifest"] = find_radiograph_encoder(pretrained_dir, backbone, **backbone_options)
            radiograph_weights = found["manifest"]["weights"] if found["manifest"] else None
        if radiograph_weights and Path(radiograph_weights).is_file():
            found["radiograph_weights"] = str(radiograph_weights)
        else:
            where = radiograph_weights or f"no manifest for {backbone} {backbone_options or ''} in {pretrained_dir}"
            found["skipped"]["radiograph"] = f"no radiograph-pretrained encoder ({where}): run notebook 05 first"
    found["available"] = [init for init in inits if init not in found["skipped"]]
    return found


def model_settings(task: str, recipe: FoldRecipe) -> dict[str, Any]:
    """The builder settings of ``task``'s model (:mod:`helpers.modeling.runs`), without the encoder initialisation.

    Classification: the encoder on ``image_size`` images + pooling + a 2-way softmax; segmentation:
    ``arch`` on any multiple of 32 (trained on crops, validated on whole images), one output.
    """
    checks.choice("task", task, TASKS)
    if task == "classification":
        return dict(backbone=recipe.backbone, input_shape=(*recipe.image_size, 1), n_outputs=2, activation="softmax",
                    **recipe.options)
    return dict(arch=recipe.arch, backbone=recipe.backbone, input_shape=(None, None, 1), classes=1, **recipe.options)


def build_model(task: str, init: str, recipe: FoldRecipe) -> tuple[keras.Model, int, dict[str, Any]]:
    """``task``'s model with its encoder initialised by ``init``: ``(model, encoder layers loaded, builder settings)``.

    Grey input in [0, 255]; the ImageNet file is looked up for ``recipe.image_size``.
    """
    kind = init_kind(init)
    settings = model_settings(task, recipe)
    encoder_weights = _encoder_weights(init, recipe.imagenet_weights, recipe.radiograph_weights)
    build = builders.build_classifier if task == "classification" else builders.build_segmenter
    model = build(**settings, encoder_weights=encoder_weights, weights_dir=recipe.weights_dir)
    if kind == "radiograph":
        loaded = builders.load_encoder_weights(model, recipe.radiograph_weights, recipe.backbone)
    elif kind == "imagenet":
        loaded = len([layer for layer in builders.encoder_layers(model, recipe.backbone)
                      if layer.weights and layer.name != builders.STEM_NAME])
    else:
        loaded = 0
    return model, loaded, settings


class _EpochScores(keras.callbacks.Callback):
    """Scores the validation images in numpy after every epoch and adds ``val_<score>`` to the logs."""

    def __init__(self, task: str, images: np.ndarray, truth: np.ndarray, batch_size: int):
        super().__init__()
        self.task, self.images, self.truth, self.batch_size = task, images, truth, batch_size

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        predicted = self.model.predict(self.images, batch_size=self.batch_size, verbose=0)
        for name, value in _score(self.task, self.truth, predicted).items():
            if logs is not None:
                logs[f"val_{name}"] = value


def _score(task: str, truth: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    if task == "classification":
        return metrics.binary_classification_scores(truth, predicted.argmax(axis=-1))
    return metrics.binary_segmentation_scores(truth, predicted.astype(np.float32), threshold=0.5)


def _merged_defects(images: tf.Tensor, masks: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    return images, tf.reduce_max(masks, axis=-1, keepdims=True)


def _datasets(task, data_dir, wide, train_ids, val_ids, image_size, batch_size, seed, crop_size):
    """(training dataset, validation images, validation truth) of ``task``."""
    size = tuple(int(v) for v in image_size)
    if task == "classification":
        labels = radiographs.defect_labels(wide)
        onehot = np.eye(2, dtype=np.float32)
        flips = tf_augment.train_augment(crop_size=None, shift_scale_rotate=False, brightness_contrast=False)  # TF ops
        train_data = pipeline.make_image_dataset(
            [Path(data_dir) / "train_images" / i for i in train_ids], onehot[labels.reindex(train_ids).to_numpy()],
            pipeline.Batching(batch_size, training=True, seed=seed), image_size=size, transforms=flips, progress=False)
        val_data = pipeline.make_image_dataset(
            [Path(data_dir) / "train_images" / i for i in val_ids], onehot[labels.reindex(val_ids).to_numpy()],
            pipeline.Batching(batch_size, training=False), image_size=size, progress=False, augment_engine="tf")
        images = np.concatenate([x.numpy() for x, _ in val_data])
        return train_data, images, labels.reindex(val_ids).to_numpy()
    transforms = tf_augment.train_augment(crop_size=crop_size, resize_to=size)  # TF ops, seeded by the batching
    train_data = pipeline.make_dataset(data_dir, train_ids, wide, pipeline.Batching(batch_size, training=True, seed=seed),
                                       transforms=transforms, progress=False).map(_merged_defects)
    val_data = pipeline.make_dataset(data_dir, val_ids, wide, pipeline.Batching(batch_size, training=False), resize_to=size,
                                     progress=False).map(_merged_defects)
    batches = [(x.numpy(), m.numpy()) for x, m in val_data]
    return train_data, np.concatenate([x for x, _ in batches]), np.concatenate([m for _, m in batches]).astype(np.uint8)


def run_fold(
    task: str,
    init: str,
    data_dir: str | os.PathLike,
    wide: pd.DataFrame,
    train_ids: Sequence[str],
    val_ids: Sequence[str],
    run_dir: str | os.PathLike,
    recipe: FoldRecipe = FoldRecipe(),
    progress: bool = False,
    strategy: tf.distribute.Strategy | None = None,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Fine-tune one model by ``recipe`` and score it on ``val_ids``: ``(scores of the last epoch, epoch log)``.

    ``run_dir`` holds the run (see :func:`helpers.modeling.train.fit`; resumable) and, once done, the
    saved run (:func:`helpers.modeling.runs.save_run`: the last epoch's weights, the model's
    settings, the scores). For ``segmentation`` pass the defective images only (as the paper does).
    ``batch_size`` is lowered to the number of training images when they are fewer. The model is
    built and trained under ``strategy`` (default :func:`helpers.modeling.train.get_strategy`); under
    several workers only the chief writes ``run_dir``.
    """
    checks.choice("task", task, TASKS)
    if recipe.crop_size is not None and task == "classification":
        raise ValueError("crop_size is for segmentation (a crop may cut the defect out of a classification image)")
    batch_size = min(recipe.batch_size, len(train_ids))  # tiny subsets: one batch per epoch
    run_dir = Path(run_dir)
    strategy = train.get_strategy() if strategy is None else strategy  # before any TensorFlow work (a cluster's must be)
    keras.backend.clear_session()
    train.set_seed(recipe.seed)
    train_data, val_images, val_truth = _datasets(task, data_dir, wide, train_ids, val_ids, recipe.image_size, batch_size,
                                                  recipe.seed, recipe.crop_size)
    with strategy.scope():
        model, loaded, settings = build_model(task, init, recipe)
        builders.set_batchnorm_momentum(model, recipe.bn_momentum)
        builders.set_encoder_batchnorm_trainable(model, recipe.backbone, recipe.encoder_batchnorm == "trainable")
    if recipe.bn_reestimate_batches:  # the target's statistics replace the loaded ones
        builders.reestimate_batchnorm(model, train_data, recipe.bn_reestimate_batches)
    with strategy.scope():
        steps = max(1, len(train_ids) // batch_size)
        schedule = train.WarmupCosine(recipe.learning_rate, total_steps=recipe.epochs * steps,
                                      min_lr=min(recipe.min_learning_rate, recipe.learning_rate))
        loss = "categorical_crossentropy" if task == "classification" else losses.get_loss("bce_dice")
        model.compile(optimizer=keras.optimizers.Adam(schedule), loss=loss)
    monitor = "val_f1" if task == "classification" else "val_miou"
    started = time.perf_counter()
    log = train.fit(model, train_data, None, run_dir, epochs=recipe.epochs, monitor=monitor, mode="max", tensorboard=False,
                    progress=progress, scorers=[_EpochScores(task, val_images, val_truth, batch_size)])
    session_seconds = time.perf_counter() - started
    seconds = float(log["epoch_seconds"].sum())  # every epoch, also those of earlier sessions of a resumed run
    last = log.iloc[-1]
    names = CLASSIFICATION_SCORES if task == "classification" else SEGMENTATION_SCORES
    scores = {name: float(last[f"val_{name}"]) for name in names}
    scores |= {"task": task, "init": init, "backbone": recipe.backbone, "encoder_layers_loaded": loaded,
               "n_train": len(train_ids), "n_val": len(val_ids), "epochs": int(len(log)), "batch_size": batch_size,
               "bn_momentum": recipe.bn_momentum, "train_seconds": seconds,
               "session_seconds": session_seconds}
    # run.json written last: its presence means "done"; every worker saves (a collective), the chief into run_dir
    runs.save_run(distributed.worker_run_dir(run_dir, strategy), model, settings, scores)
    distributed.remove_worker_dir(run_dir, strategy)
    return scores, log


def run_path(out_dir: str | os.PathLike, task: str, init: str, fraction: float, fold: int) -> Path:
    """Folder of one run of :func:`cross_validate`: ``out_dir/<task>/<init>/frac<fraction>/fold<fold>`` (``:`` as ``-``)."""
    return Path(out_dir) / task / check_init(init).replace(":", "-") / f"frac{float(fraction):g}" / f"fold{int(fold)}"


def cross_validate(
    task: str,
    inits: Sequence[str],
    data_dir: str | os.PathLike,
    wide: pd.DataFrame,
    folds: pd.Series,
    out_dir: str | os.PathLike,
    recipe: FoldRecipe = FoldRecipe(),
    fractions: Sequence[float] = (1.0,),
    progress: bool = True,
    radiograph_encoders: Mapping[str, str | os.PathLike] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`run_fold` for every (fraction, initialisation, fold): ``(scores, logs)`` tables.

    ``folds``: ``ImageId -> fold`` (e.g. :func:`helpers.data.splits.group_kfold`); fold ``k >= 0`` is
    validated on its images after training on the others (a fold ``< 0`` is only ever trained on:
    :func:`holdout_folds` makes the hold-out protocol), reduced to ``fraction`` of them by
    :func:`training_subset` (seeded by ``recipe.seed``; validation images unchanged). For
    ``segmentation`` only the defective images take part. Runs live in
    ``out_dir/<task>/<init>/frac<f>/fold<k>/``; a finished run (a saved run) is read back instead of
    trained again, and a run recorded (``recipe.json``) with another recipe or other images is a
    ``ValueError``. ``scores`` has one row per run; ``logs`` the epoch logs with ``init, fold,
    fraction`` columns. ``radiograph_encoders``: ``radiograph:<label>`` -> its encoder file (the
    recipe's ``radiograph_weights`` for that initialisation).
    """
    checks.choice("task", task, TASKS)
    train.get_strategy()  # a TF_CONFIG cluster's strategy is made before any TensorFlow work; the runs get it again
    encoders = dict(radiograph_encoders or {})
    for init in inits:
        if check_init(init).startswith("radiograph:") and init not in encoders:
            raise ValueError(f"initialisation {init!r} has no encoder file in radiograph_encoders ({sorted(encoders)})")
    labels = radiographs.defect_labels(wide)
    folds = folds.reindex(wide.index) if task == "classification" else folds.reindex(labels.index[labels == 1])
    if folds.isna().any():
        raise ValueError(f"{int(folds.isna().sum())} image(s) have no fold, e.g. {list(folds.index[folds.isna()][:3])}")
    validated = [int(fold) for fold in sorted(folds.unique()) if fold >= 0]
    if not validated:
        raise ValueError("folds has no fold >= 0 to validate on")
    combos = [(fraction, init, fold) for fraction in fractions for init in inits for fold in validated]
    rows, logs = [], []
    for fraction, init, fold in tqdm(combos, desc=f"{task} runs", unit="run", disable=not progress):
        run_dir = run_path(out_dir, task, init, fraction, fold)
        init_recipe = dataclasses.replace(recipe, radiograph_weights=str(encoders[init])) if init in encoders else recipe
        train_ids = training_subset(folds.index[folds != fold], labels, fraction, seed=recipe.seed)
        val_ids = sorted(folds.index[folds == fold])
        _check_recipe(run_dir, init_recipe.record(init) | {"train_ids": sorted(map(str, train_ids)),
                                                      "val_ids": sorted(map(str, val_ids))})
        if (run_dir / runs.RUN_FILE).is_file() or (run_dir / "scores.json").is_file():
            scores, log = runs.load_run(run_dir, build=False).metrics, train.read_log(run_dir)
        else:
            scores, log = run_fold(task, init, data_dir, wide, train_ids, val_ids, run_dir, init_recipe)
        rows.append({"init": init, "fold": fold, "fraction": fraction, **scores})
        logs.append(log.assign(init=init, fold=fold, fraction=fraction))
    return pd.DataFrame(rows), pd.concat(logs, ignore_index=True)


def sensitivity_grid(
    task: str,
    inits: Sequence[str],
    data_dir: str | os.PathLike,
    wide: pd.DataFrame,
    folds: pd.Series,
    out_dir: str | os.PathLike,
    recipe: FoldRecipe = FoldRecipe(),
    batch_sizes: Sequence[int] = (16, 32, 64),
    learning_rates: Sequence[float] = (1e-4, 1e-3, 1e-2),
    fold: int = 0,
    progress: bool = True,
    radiograph_encoders: Mapping[str, str | os.PathLike] | None = None,
) -> pd.DataFrame:
    """:func:`cross_validate` of one ``fold`` for every (batch size, learning rate) of a grid: one row per (cell, init).

    The paper's Fig. 7 (sensitivity to the two hyper-parameters). ``recipe`` gives everything else;
    the other folds are trained on. Rows have ``cross_validate``'s scores plus ``learning_rate`` and
    ``batch_size_asked`` (``batch_size`` is the one used, lower when the training images are fewer).
    Runs live in ``out_dir/b<batch>-lr<lr>/`` and resume like :func:`cross_validate`'s.
    """
    checks.choice("task", task, TASKS)
    batch_sizes = [checks.positive_int("batch_sizes", b) for b in batch_sizes]
    learning_rates = [checks.number("learning_rates", lr, low=0.0) for lr in learning_rates]
    if not batch_sizes or not learning_rates:
        raise ValueError("batch_sizes and learning_rates each need at least one value")
    fold = checks.integer("fold", fold, low=0)
    if not (folds == fold).any():
        raise ValueError(f"fold must be one of {sorted(int(k) for k in folds.unique() if k >= 0)}, got {fold}")
    one_fold = folds.where(folds == fold, -1)  # the others: trained on only
    cells = [(b, lr) for b in batch_sizes for lr in learning_rates]
    rows = []
    for batch_size, learning_rate in tqdm(cells, desc=f"{task} grid", unit="cell", disable=not progress):
        cell = dataclasses.replace(recipe, batch_size=batch_size, learning_rate=learning_rate)
        scores, _ = cross_validate(task, inits, data_dir, wide, one_fold, Path(out_dir) / f"b{batch_size}-lr{learning_rate:g}",
                                   cell, progress=False, radiograph_encoders=radiograph_encoders)
        rows.append(scores.assign(learning_rate=learning_rate, batch_size_asked=batch_size))
    return pd.concat(rows, ignore_index=True)


def holdout_folds(split: pd.Series) -> pd.Series:
    """``ImageId -> fold`` for the hold-out protocol: ``val`` images fold 0, ``train`` images -1 (trained on only).

    ``split``: ``ImageId -> "train"/"val"`` (e.g. the ``split`` column of a dataset's ``splits.csv``).
    """
    unknown = sorted(set(split.astype(str)) - {"train", "val"})
    if unknown:
        raise ValueError(f"split values must be 'train' or 'val', got {unknown[:3]}")
    if not (split == "val").any() or not (split == "train").any():
        raise ValueError("a hold-out split needs both train and val images")
    return split.map({"val": 0, "train": -1}).astype(int).rename("fold")


def _check_recipe(run_dir: Path, recipe: dict[str, Any]) -> None:
    """Record ``recipe`` in ``run_dir/recipe.json`` (the chief of a cluster only); a different recorded recipe is a ``ValueError``."""
    path = run_dir / "recipe.json"
    if path.is_file():
        recorded = files.read_json(path)
        changed = sorted(key for key in recorded.keys() | recipe.keys() if recorded.get(key) != recipe.get(key))
        if changed:
            raise ValueError(f"{run_dir} was run with other settings ({', '.join(changed)}): "
                             "use another output folder, or delete that run to redo it")
        return
    if not distributed.is_chief():
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    files.atomic_write_json(path, recipe)


def fold_summary(scores: pd.DataFrame, columns: Sequence[str], by: Sequence[str] = ("init",)) -> pd.DataFrame:
    """``mean ± std`` over folds of ``columns`` per group ``by`` (strings, 4 decimals), plus the fold count ``n``."""
    grouped = scores.groupby(list(by), sort=False)[list(columns)]
    mean, std = grouped.mean(), grouped.std(ddof=1)
    table = mean.map(lambda v: f"{v:.4f}") + std.map(lambda v: "" if pd.isna(v) else f" ± {v:.4f}")  # one fold: no spread
    table["n"] = grouped.size()
    return table


def with_paper_figures(table: pd.DataFrame, task: str, dataset: str) -> pd.DataFrame:
    """``table`` (one row per initialisation) plus ``paper <score>`` columns: :data:`PAPER_FIGURES` of ``dataset``'s ``task``."""
    checks.choice("dataset", dataset, list(PAPER_FIGURES))
    checks.choice("task", task, TASKS)
    figures = PAPER_FIGURES[dataset][task]
    table = table.copy()
    for score in figures["random"]:
        table[f"paper {score}"] = [figures[init_kind(init)][score] for init in table.index]
    return table
