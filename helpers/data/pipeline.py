"""``tf.data`` input pipelines for Severstal-layout datasets and for labelled images, and dataset checkers.

:func:`make_image_dataset` yields ``(images, labels)`` batches for classification (pre-training
corpora, patch classification): any image files resized to one size, ``(N, K)`` label vectors.

:func:`make_dataset` yields ``(images, masks)`` batches: images float32 ``(B, H, W, 1)``
as raw grey levels in ``[0, 255]`` (backbone-specific scaling is inside the model, see ``helpers.modeling.builders``),
masks float32 0/1 ``(B, H, W, C)``. Two engines run the parallel map:

- ``augment_engine="tf"`` (the default for :mod:`helpers.data.tf_augment` recipes): TensorFlow ops
  only. File bytes are read and decoded in the graph (the pixels of :func:`helpers.core.files.read_grey`),
  the RLE strings are parsed and validated once when the dataset is built (:func:`helpers.core.rle.parse`)
  and rasterised in the graph; no Python runs per element, so the map scales with cores and an
  iterator left open at interpreter exit does not hang it.
- ``augment_engine="albumentations"`` (the default when ``transforms`` is an albumentations pipeline):
  each element is read with the project's readers (:func:`helpers.core.files.read_grey`,
  :func:`helpers.core.severstal.decode_masks`) and transformed with :mod:`helpers.data.augment` inside
  ``tf.numpy_function``: Python under the GIL, about one core. An ``atexit`` guard (registered when the
  first such dataset is built) refuses new Python calls at exit and lets those in flight finish, so
  an open iterator does not deadlock the exit either (without it: a hang in every run tried).

Both engines give the same evaluation batches pixel for pixel (``resize_to``: masks equal, image
grey levels within 1, where OpenCV's and TensorFlow's area resize round differently); training
augmentations follow the same recipe but not the same random draws.

Bad files are never silently trained on: :func:`make_dataset` first runs
:func:`check_dataset` over the chosen images (every image is fully decoded, its size,
channels and RLE masks checked) and raises ``ValueError`` listing the problems; with
``skip_bad=True`` it logs them (``logging`` warning of this module's logger) and drops
those images. With ``check=False`` the scan is skipped and a bad file fails the
iteration with an error naming it.

Determinism: training shuffles the image order (seeded, reshuffled every time the dataset
is iterated, i.e. every Keras epoch, and on every ``repeat``) and pairs each element with a
draw of a seeded ``tf.data.Dataset.random`` stream; the element's augmentation is seeded
from ``(seed, draw)`` (stateless TF random ops, or a per-thread copy of the albumentations
transforms), and the map is ``deterministic=True``. So the same ``seed`` gives the same batches, whatever the number of
parallel calls; each epoch differs. Validation keeps ``image_ids`` order (minus bad images).

Sizes: ``resize_to = (H, W)`` resizes images (area) and masks (nearest) in training and
validation alike; it is needed to batch a dataset of mixed image sizes (Magnetic-tile)
unless the transforms crop or resize to one size (checked when the dataset is built).

Shards: both pipelines also read a shard folder of :mod:`helpers.data.records` (detected by its
``manifest.json``) in place of the dataset folder / the image files, with TensorFlow ops only,
giving batches of the same shapes and dtypes, and for evaluation the same pixels (tested). The
shards are listed first and read by ``tf.data.Dataset.interleave`` (parallel and deterministic
while training, in order for evaluation), and the dataset is auto-sharded by file
(``AutoShardPolicy.FILE``: each worker of a multi-worker strategy reads its own shards; write at
least as many shards as workers). Training shuffles the shard order (seeded, every iteration)
and the records through a buffer (:data:`SHARD_SHUFFLE_BUFFER`): a local shuffle, not the files
layout's full one, so the batches and their order differ from the files layout's (write the
shards in a shuffled order, ``shuffle_seed``, when the source is sorted by class or patient).
"""

from __future__ import annotations

import atexit
import copy
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from helpers.core import checks, files, rle, severstal
from helpers.data import augment, records, tf_augment
from helpers.backend import tf

__all__ = [
    "ENGINES",
    "PROBLEM_COLUMNS",
    "SHARD_SHUFFLE_BUFFER",
    "Batching",
    "check_dataset",
    "make_dataset",
    "make_image_dataset",
    "pipeline_rate",
    "unreadable_images",
    "usable_ids",
]

PROBLEM_COLUMNS = ("ImageId", "file", "problem")
ENGINES = ("auto", "tf", "albumentations")  # make_dataset's and make_image_dataset's augment_engine
SHARD_SHUFFLE_BUFFER = 1024  # records (their encoded bytes) held for shuffling shards, unless Batching.shuffle_buffer says

logger = logging.getLogger(__name__)

_IMAGES = "train_images"


# ----------------------------------------------------------------------------- checks


def _lenient_table(dataset_dir: Path) -> pd.DataFrame:
    """The CSV's rows plus the images without a row, *without* image sizes (nothing raises for bad files)."""
    n_classes = max(severstal.read_classes(dataset_dir))
    wide = severstal.read_train_csv(dataset_dir / "train.csv", n_classes=n_classes, validate=False)
    images_dir = dataset_dir / _IMAGES
    present = [p.name for p in files.list_images(images_dir)] if images_dir.is_dir() else []
    wide = wide.reindex(sorted(set(wide.index) | set(present)), fill_value="")
    wide.index.name = "ImageId"
    return wide


def _table_shape(row: pd.Series) -> tuple[int, int] | None:
    if "Height" not in row.index or "Width" not in row.index or pd.isna(row["Height"]) or pd.isna(row["Width"]):
        return None
    return int(row["Height"]), int(row["Width"])


def _image_problems(
    image_id: str,
    path: Path,
    row: pd.Series,
    expected_channels: tuple[int, ...],
    expected_shape: tuple[int, int] | None,
) -> list[str]:
    """What is wrong with one image and its masks (empty list = fine)."""
    problems: list[str] = []
    table_shape = _table_shape(row)
    actual: tuple[int, int] | None = None
    if not path.is_file():
        problems.append("missing file")
    else:
        try:
            height, width, mode, bands = files.image_header(path)
        except (ValueError, OSError) as err:
            problems.append(f"unreadable image: {err}")
        else:
            actual = (height, width)
            if bands not in expected_channels:
                problems.append(f"unexpected channels: {bands} ({mode}), expected one of {expected_channels}")
            if table_shape is not None and actual != table_shape:
                problems.append(f"unexpected size {height}x{width}, the table says {table_shape[0]}x{table_shape[1]} (HxW)")
            if expected_shape is not None and actual != expected_shape:
                problems.append(f"unexpected size {height}x{width}, expected {expected_shape[0]}x{expected_shape[1]} (HxW)")
            try:
                files.read_grey(path)
            except (ValueError, OSError) as err:
                problems.append(f"corrupt image: {err}")
    shape = table_shape or actual
    if shape is not None:
        masks_row = row.astype(object)
        masks_row["Height"], masks_row["Width"] = shape
        try:
            severstal.decode_masks(masks_row, image_id=image_id)
        except ValueError as err:
            problems.append(f"invalid RLE: {err}")
    return problems


def check_dataset(
    dataset_dir: str | os.PathLike,
    wide: pd.DataFrame | None = None,
    image_ids: Sequence[str] | None = None,
    expected_channels: Sequence[int] = (1, 3),
    expected_shape: Sequence[int] | None = None,
    progress: bool = True,
    num_workers: int | None = None,
) -> pd.DataFrame:
    """Problems of a dataset's images and masks: a frame with columns ``ImageId, file, problem``.

    One row per problem (empty frame = all good), sorted by ImageId. Every image of ``wide``
    (or only ``image_ids``) is opened and fully decoded with :func:`helpers.core.files.read_grey`:
    ``missing file``, ``unreadable image`` (not an image), ``corrupt image`` (truncated or
    damaged data), ``unexpected channels`` (band count not in ``expected_channels``),
    ``unexpected size`` (differs from the table's ``Height``/``Width`` or from
    ``expected_shape = (H, W)``), ``invalid RLE`` (the message names ImageId and ClassId;
    checked against the table's size, else the file's).

    ``wide=None``: ``train.csv`` plus the images without a row, read without sizes or RLE
    validation (so a broken dataset can still be checked; sizes then come from the files).
    Files are checked in ``num_workers`` threads (default: CPU count).
    """
    dataset_dir = Path(dataset_dir)
    channels = tuple(int(c) for c in expected_channels)
    if not channels or any(c not in (1, 2, 3, 4) for c in channels):
        raise ValueError(f"expected_channels must be a non-empty subset of (1, 2, 3, 4), got {expected_channels!r}")
    shape = None if expected_shape is None else rle.validate_shape(expected_shape)
    workers = (os.cpu_count() or 1) if num_workers is None else checks.positive_int("num_workers", num_workers)
    table = _lenient_table(dataset_dir) if wide is None else wide
    if image_ids is None:
        ids = list(table.index)
    else:
        ids = list(dict.fromkeys(image_ids))
        unknown = [i for i in ids if i not in table.index]
        if unknown:
            raise ValueError(f"{len(unknown)} image_ids are not in the table, e.g. {unknown[:3]}")
    images_dir = dataset_dir / _IMAGES

    def check(image_id: str) -> list[tuple[str, str, str]]:
        path = images_dir / image_id
        found = _image_problems(image_id, path, table.loc[image_id], channels, shape)
        return [(image_id, str(path), problem) for problem in found]

    rows: list[tuple[str, str, str]] = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(check, ids)
        for found in tqdm(results, total=len(ids), disable=not progress, desc="check images", unit="img"):
            rows.extend(found)
    problems = pd.DataFrame(rows, columns=list(PROBLEM_COLUMNS), dtype=str)
    return problems.sort_values(["ImageId", "problem"], kind="stable").reset_index(drop=True)


def _describe(problems: pd.DataFrame, limit: int | None = None) -> str:
    shown = problems if limit is None else problems.head(limit)
    lines = [f"  {r.ImageId} ({r.file}): {r.problem}" for r in shown.itertuples(index=False)]
    if limit is not None and len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more")
    return "\n".join(lines)


def usable_ids(
    dataset_dir: str | os.PathLike,
    image_ids: Sequence[str],
    wide: pd.DataFrame,
    skip_bad: bool = False,
    progress: bool = True,
) -> list[str]:
    """``image_ids`` after :func:`check_dataset`: raises on problems, or drops and logs them with ``skip_bad``.

    The order (and any repeats) of ``image_ids`` is kept.
    """
    problems = check_dataset(dataset_dir, wide, image_ids=image_ids, progress=progress)
    if problems.empty:
        return list(image_ids)
    bad = set(problems["ImageId"])
    if not skip_bad:
        raise ValueError(
            f"{len(bad)} bad image(s) in {dataset_dir} ({len(problems)} problem(s)); fix them or pass "
            f"skip_bad=True to drop them:\n{_describe(problems, limit=20)}"
        )
    logger.warning("dropping %d bad image(s) of %s:\n%s", len(bad), dataset_dir, _describe(problems))
    return [i for i in image_ids if i not in bad]


# ----------------------------------------------------------------------------- tf.data


@dataclass(frozen=True)
class Batching:
    """How a pipeline turns items into batches, checked when made; the same for masks and labels.

    ``training=True``: items shuffled (``shuffle_buffer`` indices, default all, so a full shuffle
    costs no image memory; reshuffled every iteration, i.e. every Keras epoch and every
    ``repeat``), each paired with a draw of a seeded random stream that seeds its augmentation,
    the last partial batch dropped (``drop_remainder`` default). ``training=False``: the given
    order, fixed draws, every item kept. ``repeat``: repeat forever. Same ``seed``, same batches.
    """

    batch_size: int
    training: bool
    seed: int = 0
    shuffle_buffer: int | None = None
    repeat: bool = False
    drop_remainder: bool | None = None
    num_parallel_calls: int = tf.data.AUTOTUNE

    def __post_init__(self) -> None:
        if not isinstance(self.training, (bool, np.bool_)):
            raise ValueError(f"training must be True or False, got {self.training!r}")
        fixed = {
            "batch_size": checks.positive_int("batch_size", self.batch_size),
            "training": bool(self.training),
            "seed": checks.seed("seed", self.seed),
            "shuffle_buffer": None if self.shuffle_buffer is None else checks.positive_int("shuffle_buffer", self.shuffle_buffer),
            "repeat": bool(self.repeat),
            "drop_remainder": bool(self.training) if self.drop_remainder is None else bool(self.drop_remainder),
        }
        if self.num_parallel_calls != tf.data.AUTOTUNE:
            fixed["num_parallel_calls"] = checks.positive_int("num_parallel_calls (or tf.data.AUTOTUNE)", self.num_parallel_calls)
        for name, value in fixed.items():
            object.__setattr__(self, name, value)

    def check_count(self, n_items: int) -> None:
        """A ``ValueError`` when ``n_items`` make no batch."""
        if n_items == 0 or (self.drop_remainder and n_items < self.batch_size):
            raise ValueError(f"{n_items} usable item(s) make no full batch of batch_size={self.batch_size}; "
                             "lower it or set drop_remainder=False")

    def _pairs(self, n_items: int, items: tf.data.Dataset | None = None) -> tf.data.Dataset:
        """``(item, draw)`` pairs: ``items`` (default the indices ``0..n_items-1``) shuffled or in order, repeated if asked."""
        items = tf.data.Dataset.range(n_items) if items is None else items
        if self.training:
            items = items.shuffle(self.shuffle_buffer or n_items, seed=self.seed, reshuffle_each_iteration=True)
            draws = tf.data.Dataset.random(seed=self.seed, rerandomize_each_iteration=True)
        else:
            draws = tf.data.Dataset.range(n_items)  # fixed per item
        dataset = tf.data.Dataset.zip((items, draws))
        return dataset.repeat() if self.repeat else dataset

    def _batched(self, dataset: tf.data.Dataset, element: Callable) -> tf.data.Dataset:
        dataset = dataset.map(element, num_parallel_calls=self.num_parallel_calls, deterministic=True)
        dataset = dataset.batch(self.batch_size, drop_remainder=self.drop_remainder)
        return dataset.prefetch(tf.data.AUTOTUNE)

    def batches(
        self,
        load: Callable[[np.int64, np.int64], tuple[np.ndarray, np.ndarray]],
        n_items: int,
        image_shape: tuple,
        target_shape: tuple,
        name: str,
    ) -> tf.data.Dataset:
        """Parallel, prefetched batches of a Python ``load(index, draw) -> (image, target)`` over ``n_items`` items.

        ``load`` runs in ``tf.numpy_function`` (under the GIL: it does not scale with cores). An exit
        guard (:class:`_ExitGuard`) keeps an iterator left open at interpreter exit from deadlocking it.
        """
        guard = _exit_guard()

        def load_tf(index: tf.Tensor, draw: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            image, target = tf.numpy_function(guard.wrap(load), [index, draw], [tf.float32, tf.float32], name=name)
            image.set_shape(image_shape)
            target.set_shape(target_shape)
            return image, target

        return self._batched(self._pairs(n_items), load_tf)

    def graph_batches(
        self, element: Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]], n_items: int,
        items: tf.data.Dataset | None = None,
    ) -> tf.data.Dataset:
        """Parallel, prefetched batches of a graph function ``element(item, draw)`` (TensorFlow ops only, no Python).

        ``items``: a dataset of ``n_items`` elements (default their indices), shuffled and paired with draws as in :meth:`batches`.
        """
        return self._batched(self._pairs(n_items, items), element)

    def stream_batches(
        self, stream: tf.data.Dataset, n_items: int, element: Callable[[dict, tf.Tensor], tuple[tf.Tensor, tf.Tensor]],
    ) -> tf.data.Dataset:
        """Batches of a shard ``stream`` of ``(record, draw)`` (:func:`helpers.data.records.record_stream`) mapped by ``element``.

        Training shuffles records with a buffer of ``shuffle_buffer`` (default
        ``min(n_items, SHARD_SHUFFLE_BUFFER)``; the stream has shuffled the shard order), so the order
        is not the full shuffle of the files layout. The dataset is auto-sharded *by file*
        (``AutoShardPolicy.FILE``): under a multi-worker strategy each worker reads its own shards.
        """
        if self.training:
            buffer = self.shuffle_buffer or min(n_items, SHARD_SHUFFLE_BUFFER)
            stream = stream.shuffle(buffer, seed=self.seed, reshuffle_each_iteration=True)
        if self.repeat:
            stream = stream.repeat()
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.FILE
        return self._batched(stream, element).with_options(options)


class _ExitGuard:
    """Lets an interpreter with an open Python-mapped ``tf.data`` iterator exit (no hang, no abort).

    At exit the iterator's C++ destructor waits for its in-flight ``tf.numpy_function`` calls,
    which need the GIL that the exiting main thread holds: a deadlock. The ``atexit`` hook runs
    before that: it refuses new calls (they fail at once) and releases the GIL until the calls in
    flight have finished and none has started for a moment, so the destructor has nothing to wait for.
    """

    def __init__(self, quiet_s: float = 0.1, limit_s: float = 30.0):
        self.lock = threading.Lock()
        self.active, self.closing, self.last = 0, False, time.monotonic()
        self.quiet_s, self.limit_s = quiet_s, limit_s

    def wrap(self, load: Callable) -> Callable:
        def guarded(*args):
            with self.lock:
                self.last = time.monotonic()
                if self.closing:
                    raise RuntimeError("the interpreter is exiting: input pipeline stopped")
                self.active += 1
            try:
                return load(*args)
            finally:
                with self.lock:
                    self.active -= 1
                    self.last = time.monotonic()

        return guarded

    def close(self) -> None:
        with self.lock:
            self.closing = True
        start = time.monotonic()
        while time.monotonic() - start < self.limit_s:
            time.sleep(0.02)  # releases the GIL: calls waiting for it run (and are refused)
            with self.lock:
                if self.active == 0 and time.monotonic() - self.last > self.quiet_s:
                    return


_GUARD: list[_ExitGuard] = []  # filled on first use (no work at import)
_GUARD_LOCK = threading.Lock()


def _exit_guard() -> _ExitGuard:
    with _GUARD_LOCK:
        if not _GUARD:
            _GUARD.append(_ExitGuard())
            atexit.register(_GUARD[0].close)
        return _GUARD[0]


def _output_shape(
    transforms: A.BaseCompose, sizes: set[tuple[int, int]], n_classes: int
) -> tuple[int, int] | None:
    """Output ``(h, w)`` of ``transforms`` shared by every input size, or ``None`` if it varies."""
    probe = copy.deepcopy(transforms)
    augment.reseed(probe, 0)
    shapes = set()
    for height, width in sorted(sizes):
        image, _ = augment.apply(
            probe, np.zeros((height, width), np.uint8), np.zeros((height, width, n_classes), np.uint8)
        )
        shapes.add(image.shape)
    return next(iter(shapes)) if len(shapes) == 1 else None


def _engine(augment_engine: str, transforms: object) -> str:
    """The engine that runs ``transforms``: ``tf`` for a :class:`tf_augment.Augment` (or none), else ``albumentations``."""
    checks.choice("augment_engine", augment_engine, ENGINES)
    python_steps = isinstance(transforms, (A.BaseCompose, A.BasicTransform))
    if transforms is not None and not python_steps and not isinstance(transforms, tf_augment.Augment):
        raise ValueError(f"transforms must be a tf_augment.Augment, an albumentations pipeline or None, got {type(transforms).__name__}")
    if augment_engine == "auto":
        return "albumentations" if python_steps else "tf"
    if augment_engine == "tf" and python_steps:
        raise ValueError("albumentations transforms need augment_engine='albumentations' (or 'auto'); for the TF engine "
                         "give a recipe, e.g. tf_augment.train_augment(crop_size=(256, 512))")
    return augment_engine


def _albumentations_of(recipe: tf_augment.Augment) -> A.Compose:
    """The albumentations pipeline with the steps of ``recipe``."""
    if not recipe.random:
        return augment.eval_transforms(resize_to=recipe.resize_to, pad_to=recipe.pad_to)
    return augment.train_transforms(crop_size=recipe.crop_size, resize_to=recipe.resize_to, flips=recipe.flips,
                                    brightness_contrast=recipe.brightness_contrast, shift_scale_rotate=recipe.shift_scale_rotate,
                                    defect_crop_p=recipe.defect_crop_p)


def _mixed_sizes_error(size_of: dict[str, tuple[int, int]]) -> ValueError:
    members: dict[tuple[int, int], list[str]] = {}
    for image_id, size in size_of.items():
        members.setdefault(size, []).append(image_id)
    common = sorted(members, key=lambda size: -len(members[size]))
    examples = "; ".join(f"{h}x{w}: {len(members[h, w])} image(s), e.g. {members[h, w][0]}" for h, w in common[:4])
    return ValueError(
        f"images of {len(members)} sizes (HxW) do not batch ({examples}): pass resize_to=(H, W) or "
        "transforms that resize or crop to one size, or batch_size=1"
    )


def _mask_runs(rows: list[pd.Series], ids: list[str], classes: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every image's validated RLE runs: 0-based ``begins``, ``ends`` (one past), class positions and ``row_splits`` (int64)."""
    begins, ends, kinds, splits = [], [], [], [0]
    for row, image_id in zip(rows, ids):
        shape = (int(row["Height"]), int(row["Width"]))
        count = 0
        for k, class_id in enumerate(classes):
            try:
                starts, lengths = rle.parse(row[class_id], shape)
            except ValueError as err:
                raise ValueError(f"ImageId {image_id} ClassId {class_id}: {err}") from None
            begins.append(starts - 1)
            ends.append(starts - 1 + lengths)
            kinds.append(np.full(starts.size, k, np.int64))
            count += starts.size
        splits.append(splits[-1] + count)
    joined = [np.concatenate(part).astype(np.int64) if part else np.empty(0, np.int64) for part in (begins, ends, kinds)]
    return (*joined, np.asarray(splits, np.int64))


def _graph_dataset(
    paths: list[str], rows: list[pd.Series], ids: list[str], classes: list[int], recipe: tf_augment.Augment,
    batching: Batching, out_shape: tuple[int, int] | None, cache: bool,
) -> tf.data.Dataset:
    """The TF engine: files read and decoded, masks rasterised and ``recipe`` applied by graph ops in the parallel map."""
    unsupported = [p for p in paths if Path(p).suffix.lower() not in tf_augment.TF_SUFFIXES]
    if unsupported:
        raise ValueError(f"{len(unsupported)} image(s) are not {'/'.join(tf_augment.TF_SUFFIXES)} files, e.g. {unsupported[0]}: "
                         "use augment_engine='albumentations' (Pillow reads them)")
    begins, ends, kinds, splits = _mask_runs(rows, ids, classes)
    path_table = tf.constant(paths)
    shapes = tf.constant([[int(r["Height"]), int(r["Width"])] for r in rows], tf.int64)
    begins_t, ends_t, kinds_t, splits_t = (tf.constant(a) for a in (begins, ends, kinds, splits))
    n_classes, seed = len(classes), batching.seed
    height, width = out_shape if out_shape is not None else (None, None)

    def read(index: tf.Tensor) -> tf.Tensor:
        return tf_augment.read_grey(tf.io.read_file(path_table[index]), shapes[index], path_table[index])

    def element(item, draw: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        index, image = item if cache else (item, tf.io.read_file(path_table[item]))
        low, high = splits_t[index], splits_t[index + 1]
        key = tf.stack([tf.constant(seed, tf.int64), tf.cast(draw, tf.int64)])
        image, masks = tf_augment.augment_runs(recipe, image, shapes[index], begins_t[low:high], ends_t[low:high], kinds_t[low:high],
                                               n_classes, key, path=path_table[index])
        return tf.ensure_shape(image[..., None], (height, width, 1)), tf.ensure_shape(masks, (height, width, n_classes))

    items = None
    if cache:  # decoded once (in parallel), kept in memory; shuffled with the same order as indices would be
        items = tf.data.Dataset.range(len(paths)).map(lambda i: (i, read(i)), num_parallel_calls=batching.num_parallel_calls,
                                                      deterministic=True).cache()
    return batching.graph_batches(element, len(paths), items)


def _shard_manifest(folder: Path, kind: str, check: bool, skip_bad: bool, cache: bool = False) -> dict:
    """The manifest of a shard folder about to be read (checksums verified with ``check``)."""
    manifest = records.verify(folder) if check else records.read_manifest(folder)
    if manifest["kind"] != kind:
        reader = "make_dataset" if manifest["kind"] == "segmentation" else "make_image_dataset"
        raise ValueError(f"{folder} holds {manifest['kind']} shards: read them with pipeline.{reader}")
    if skip_bad:
        raise ValueError("skip_bad=True is for the files layout: shards hold only images checked when they were written")
    if cache:
        raise ValueError("cache=True is for the files layout; shards are read sequentially and decoded in the parallel map")
    return manifest


def _shard_ids(folder: Path, manifest: dict, image_ids: Sequence[str], training: bool) -> list[str]:
    """``image_ids`` checked against the shards: known, not repeated, and (evaluation) in the stored order."""
    ids = [str(i) for i in image_ids]
    position = {i: k for k, i in enumerate(i for shard in manifest["shards"] for i in shard["ids"])}
    unknown = [i for i in dict.fromkeys(ids) if i not in position]
    if unknown:
        raise ValueError(f"{len(unknown)} image_ids are not in the shards of {folder}, e.g. {unknown[:3]}")
    if len(set(ids)) != len(ids):
        raise ValueError("image_ids repeat an image: shards give each record once (repeats are for the files layout)")
    order = [position[i] for i in ids]
    if not training and any(b < a for a, b in zip(order, order[1:])):
        raise ValueError(f"evaluation batches of shards come in the stored order: pass image_ids in that order, "
                         f"records.in_shard_order({str(folder)!r}, image_ids)")
    return ids


def _shard_dataset(
    folder: Path, image_ids: Sequence[str], wide: pd.DataFrame | None, batching: Batching, recipe: tf_augment.Augment,
    check: bool, skip_bad: bool, cache: bool,
) -> tf.data.Dataset:
    """:func:`make_dataset` of a segmentation shard folder (TF ops only)."""
    manifest = _shard_manifest(folder, "segmentation", check, skip_bad, cache)
    ids = _shard_ids(folder, manifest, image_ids, batching.training)
    classes = [int(c) for c in manifest["class_ids"]]
    if wide is not None:
        missing = [i for i in ids if i not in wide.index]
        if missing or severstal.class_columns(wide) != classes:
            raise ValueError(f"wide does not describe the shards of {folder} (classes {severstal.class_columns(wide)} vs "
                             f"{classes}, {len(missing)} image_ids missing): pass records.read_table(folder) or None")
    batching.check_count(len(ids))
    size_of = dict(zip((i for shard in manifest["shards"] for i in shard["ids"]),
                       (tuple(s) for shard in manifest["shards"] for s in shard["sizes"])))
    size_of = {i: size_of[i] for i in ids}
    shapes = {recipe.output_size(*size) for size in set(size_of.values())}
    out_shape = next(iter(shapes)) if len(shapes) == 1 else None
    if out_shape is None and batching.batch_size > 1:
        raise _mixed_sizes_error(size_of)
    n_classes, seed = len(classes), batching.seed
    height, width = out_shape if out_shape is not None else (None, None)

    def element(record: dict, draw: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        begins, ends, kinds = records.rle_runs(record["rle"])
        shape = tf.stack([record["height"], record["width"]])
        key = tf.stack([tf.constant(seed, tf.int64), tf.cast(draw, tf.int64)])
        image, masks = tf_augment.augment_runs(recipe, record["image"], shape, begins, ends, kinds, n_classes, key,
                                               path=record["where"])
        return tf.ensure_shape(image[..., None], (height, width, 1)), tf.ensure_shape(masks, (height, width, n_classes))

    stream = records.record_stream(folder, manifest, ids, training=batching.training, seed=seed)
    return batching.stream_batches(stream, len(ids), element)


def make_dataset(
    dataset_dir: str | os.PathLike,
    image_ids: Sequence[str],
    wide: pd.DataFrame | None,
    batching: Batching,
    transforms: tf_augment.Augment | A.BaseCompose | None = None,
    resize_to: Sequence[int] | None = None,
    cache: bool = False,
    skip_bad: bool = False,
    check: bool = True,
    progress: bool = True,
    augment_engine: str = "auto",
) -> tf.data.Dataset:
    """Batches ``(images (B, H, W, 1) float32 grey levels in [0, 255], masks (B, H, W, C) float32 0/1)``.

    ``image_ids``: images of ``wide`` (the wide table, with ``Height``/``Width``) under
    ``dataset_dir/train_images``, batched by ``batching`` (:class:`Batching`). Training batches
    are augmented with ``transforms`` (default: the training recipe without crop, i.e. full size;
    pass ``tf_augment.train_augment(crop_size=(256, 512))`` for crops); others get none (default:
    the evaluation recipe). ``resize_to = (H, W)``: the default transforms resize to it (give
    transforms *or* resize_to). ``cache``: keep decoded grey images in memory (H*W bytes each;
    masks are rasterised again each time). ``check``/``skip_bad``: see the module doc.

    ``augment_engine``: ``"tf"`` runs everything as TensorFlow ops (:mod:`helpers.data.tf_augment`;
    scales with cores; JPEG/PNG/BMP/GIF files); ``"albumentations"`` runs :mod:`helpers.data.augment`
    in Python (``tf.numpy_function``, under the GIL: slower, about one core); ``"auto"``: ``"tf"``
    unless ``transforms`` is an albumentations pipeline. A :class:`tf_augment.Augment` recipe runs
    on either engine (same steps, not the same random draws). Each element's augmentation is seeded
    from ``batching.seed`` and its draw, so a seed given to the transforms themselves is not used.

    ``dataset_dir`` may be a segmentation shard folder (:mod:`helpers.data.records`, detected by its
    manifest): the same batches from the records' bytes and RLE strings, TF engine only; ``wide``
    may then be ``None`` (else it must have the shards' classes, e.g. ``records.read_table``). ``check``
    verifies the shards' checksums; ``skip_bad`` and ``cache`` are refused; ``image_ids`` may not repeat,
    and evaluation batches come in the stored order (pass ``image_ids`` in it:
    :func:`helpers.data.records.in_shard_order`). Training reads shards in a shuffled order through a
    shuffle buffer (:meth:`Batching.stream_batches`): not the files layout's order, nor its draws.
    """
    dataset_dir = Path(dataset_dir)
    if not isinstance(batching, Batching):
        raise ValueError(f"batching must be a pipeline.Batching, got {type(batching).__name__}")
    training, seed = batching.training, batching.seed
    engine = _engine(augment_engine, transforms)
    if transforms is not None and resize_to is not None:
        raise ValueError("give transforms or resize_to, not both: build the transforms with resize_to instead")
    if skip_bad and not check:
        raise ValueError("skip_bad=True needs check=True (the check finds the images to skip)")
    if isinstance(image_ids, str) or len(image_ids) == 0:
        raise ValueError(f"image_ids must be a non-empty sequence of ImageIds, got {image_ids!r}")
    if records.is_shard_folder(dataset_dir):
        if engine != "tf":
            raise ValueError("shards are read with TensorFlow ops only: use augment_engine='tf' (or 'auto') and a "
                             "tf_augment recipe as transforms")
        if transforms is None:
            transforms = tf_augment.train_augment(crop_size=None, resize_to=resize_to) if training else tf_augment.eval_augment(resize_to=resize_to)
        return _shard_dataset(dataset_dir, image_ids, wide, batching, transforms, check, skip_bad, cache)
    if wide is None:
        raise ValueError(f"wide (the table of {dataset_dir}) is needed for the files layout; only a shard folder may go without")
    unknown = [i for i in dict.fromkeys(image_ids) if i not in wide.index]
    if unknown:
        raise ValueError(f"{len(unknown)} image_ids are not in the table, e.g. {unknown[:3]}")
    if not {"Height", "Width"} <= set(wide.columns):
        raise ValueError("wide needs Height and Width columns (as severstal.read_dataset returns)")
    if transforms is None:
        transforms = (
            tf_augment.train_augment(crop_size=None, resize_to=resize_to)
            if training
            else tf_augment.eval_augment(resize_to=resize_to)
        )
    if engine == "albumentations" and isinstance(transforms, tf_augment.Augment):
        transforms = _albumentations_of(transforms)

    ids = usable_ids(dataset_dir, image_ids, wide, skip_bad=skip_bad, progress=progress) if check else list(image_ids)
    if not ids:
        raise ValueError(f"no usable images left in {dataset_dir} after dropping the bad ones")
    batching.check_count(len(ids))
    classes = severstal.class_columns(wide)
    rows = [wide.loc[i] for i in ids]
    paths = [str(dataset_dir / _IMAGES / i) for i in ids]
    size_of = {i: (int(r["Height"]), int(r["Width"])) for i, r in zip(ids, rows)}
    sizes = set(size_of.values())
    if engine == "tf":
        shapes = {transforms.output_size(*size) for size in sizes}
        out_shape = next(iter(shapes)) if len(shapes) == 1 else None
    else:
        out_shape = _output_shape(transforms, sizes, len(classes))
    if out_shape is None and batching.batch_size > 1:
        raise _mixed_sizes_error(size_of)
    if engine == "tf":
        return _graph_dataset(paths, rows, ids, classes, transforms, batching, out_shape, cache)

    local = threading.local()
    images_cache: dict[int, np.ndarray] = {}

    def load(index: np.int64, draw: np.int64) -> tuple[np.ndarray, np.ndarray]:
        index = int(index)
        path = paths[index]
        image = images_cache.get(index) if cache else None
        if image is None:
            image = files.read_grey(path)
            if cache:
                images_cache[index] = image
        masks = severstal.decode_masks(rows[index], image_id=ids[index])
        if image.shape != masks.shape[:2]:
            raise ValueError(f"image {path} is {image.shape[0]}x{image.shape[1]} but its masks are {masks.shape[0]}x{masks.shape[1]} (HxW)")
        if not hasattr(local, "transforms"):
            local.transforms = copy.deepcopy(transforms)
        augment.reseed(local.transforms, (seed, int(draw) & 0xFFFFFFFFFFFFFFFF))
        image, masks = augment.apply(local.transforms, image, masks)
        if out_shape is not None and image.shape != out_shape:
            raise ValueError(f"image {path} came out {image.shape}, the other images {out_shape} (HxW); pass resize_to")
        return (image[..., None].astype(np.float32), masks.astype(np.float32))

    height, width = out_shape if out_shape is not None else (None, None)
    return batching.batches(load, len(ids), (height, width, 1), (height, width, len(classes)), name="load_image_masks")


def unreadable_images(paths: Sequence[str | os.PathLike], progress: bool = True, num_workers: int | None = None) -> pd.DataFrame:
    """Files among ``paths`` that cannot be read as grey images: a frame ``file, problem`` (empty = all good)."""
    workers = (os.cpu_count() or 1) if num_workers is None else checks.positive_int("num_workers", num_workers)

    def problem(path: str | os.PathLike) -> tuple[str, str] | None:
        try:
            files.read_grey(path)
        except (ValueError, OSError) as err:
            return str(path), str(err)
        return None

    with ThreadPoolExecutor(max_workers=workers) as pool:
        found = list(tqdm(pool.map(problem, paths), total=len(paths), disable=not progress, desc="check images", unit="img"))
    return pd.DataFrame([row for row in found if row is not None], columns=["file", "problem"], dtype=str)


def _image_engine(augment_engine: str, transforms: object, shards: bool) -> str:
    """The engine of :func:`make_image_dataset`: ``tf`` for shards or a recipe, else ``albumentations`` (the default of files)."""
    checks.choice("augment_engine", augment_engine, ENGINES)
    python_steps = isinstance(transforms, (A.BaseCompose, A.BasicTransform))
    if transforms is not None and not python_steps and not isinstance(transforms, tf_augment.Augment):
        raise ValueError(f"transforms must be a tf_augment.Augment, an albumentations pipeline or None, got {type(transforms).__name__}")
    if shards and (python_steps or augment_engine == "albumentations"):
        raise ValueError("shards are read with TensorFlow ops only: use augment_engine='tf' (or 'auto') and a "
                         "tf_augment recipe (or None) as transforms, e.g. tf_augment.train_augment(crop_size=None, flips=False)")
    if augment_engine == "auto":
        return "tf" if shards or isinstance(transforms, tf_augment.Augment) else "albumentations"
    if augment_engine == "tf" and python_steps:
        raise ValueError("albumentations transforms need augment_engine='albumentations' (or 'auto'); for the TF engine "
                         "give a recipe, e.g. tf_augment.train_augment(crop_size=None, flips=False)")
    return augment_engine


def _image_element(recipe: tf_augment.Augment | None, size: tuple[int, int], seed: int) -> Callable:
    """Graph ``(encoded bytes, where, draw) -> float32 (H, W, 1)``: decode grey, area resize to ``size``, then ``recipe``."""

    def image_of(data: tf.Tensor, where: tf.Tensor, draw: tf.Tensor) -> tf.Tensor:
        image = tf_augment.resize_grey(tf_augment.decode_grey(data, where), size)
        if recipe is None:
            picture = tf.cast(image, tf.float32)
        else:
            key = tf.stack([tf.constant(seed, tf.int64), tf.cast(draw, tf.int64)])
            picture = tf_augment.augment_image(recipe, image, key)
        return tf.ensure_shape(picture[..., None], (*size, 1))

    return image_of


def _check_recipe_size(recipe: tf_augment.Augment | None, size: tuple[int, int]) -> None:
    if recipe is not None and recipe.output_size(*size) != size:
        raise ValueError(f"transforms must keep image_size {size}, this recipe gives {recipe.output_size(*size)}: "
                         "leave crop_size / resize_to / pad_to out (image_size resizes)")


def _shard_images(folder: Path, labels: object, batching: Batching, size: tuple[int, int], recipe: tf_augment.Augment | None,
                  check: bool, skip_bad: bool) -> tf.data.Dataset:
    """:func:`make_image_dataset` of a classification shard folder (TF ops only)."""
    if labels is not None:
        raise ValueError("labels come from the shards: pass labels=None with a shard folder (records.read_table gives them)")
    manifest = _shard_manifest(folder, "classification", check, skip_bad)
    batching.check_count(manifest["n_records"])
    image_of = _image_element(recipe, size, batching.seed)
    n_labels = len(manifest["label_names"])

    def element(record: dict, draw: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return image_of(record["image"], record["where"], draw), tf.ensure_shape(record["labels"], (n_labels,))

    stream = records.record_stream(folder, manifest, training=batching.training, seed=batching.seed)
    return batching.stream_batches(stream, manifest["n_records"], element)


def make_image_dataset(
    paths: Sequence[str | os.PathLike] | str | os.PathLike,
    labels: np.ndarray | None,
    batching: Batching,
    image_size: Sequence[int] = (256, 256),
    transforms: A.BaseCompose | tf_augment.Augment | None = None,
    skip_bad: bool = False,
    check: bool = True,
    progress: bool = True,
    augment_engine: str = "auto",
) -> tf.data.Dataset:
    """Batches ``(images (B, H, W, 1) float32 grey levels in [0, 255], labels (B, K) float32)`` for classification.

    ``paths``: image files (any size; each is resized to ``image_size = (H, W)``, area
    interpolation); ``labels``: ``(N, K)`` targets, NaN where a label is to be ignored (see
    :func:`helpers.modeling.losses.masked_bce`). ``transforms``: augmentation applied after the
    resize, on the image only: an albumentations pipeline (e.g. ``augment.train_transforms(crop_size=None, ...)``)
    or a :class:`tf_augment.Augment` recipe (e.g. ``tf_augment.train_augment(crop_size=None, flips=False)``);
    default none. Batches by ``batching`` (:class:`Batching`); checks (``check``/``skip_bad``:
    unreadable files raise naming them, or are logged and dropped) as in :func:`make_dataset`.

    ``augment_engine``: ``"albumentations"`` reads with :func:`helpers.core.files.read_grey`, resizes
    with OpenCV's ``INTER_AREA`` and runs albumentations, in ``tf.numpy_function`` (Python under the
    GIL: about one core); ``"tf"`` runs TensorFlow ops only (:func:`tf_augment.decode_grey`,
    :func:`tf_augment.resize_grey`, the recipe; JPEG/PNG/BMP/GIF files): it scales with cores;
    ``"auto"``: ``"tf"`` for a recipe or shards, else ``"albumentations"`` (the files' default, as
    before). Both give the same pixels without resize; with a resize, grey levels within 1 (see
    :func:`tf_augment.resize_grey`).

    ``paths`` may be a classification shard folder (:mod:`helpers.data.records`, detected by its
    manifest) with ``labels=None``: the stored images and labels, TF engine, in the stored order
    for evaluation; ``check`` verifies the shards' checksums, ``skip_bad`` is refused; training
    reads shards in a shuffled order through a shuffle buffer (:meth:`Batching.stream_batches`).
    """
    if not isinstance(batching, Batching):
        raise ValueError(f"batching must be a pipeline.Batching, got {type(batching).__name__}")
    seed = batching.seed
    size = rle.validate_shape(tuple(image_size))
    if skip_bad and not check:
        raise ValueError("skip_bad=True needs check=True (the check finds the images to skip)")
    shards = isinstance(paths, (str, os.PathLike))
    if shards and not records.is_shard_folder(paths):
        raise ValueError(f"paths must be a sequence of image files or a shard folder (with {records.MANIFEST}); "
                         f"{paths} is not a shard folder")
    engine = _image_engine(augment_engine, transforms, shards)
    if engine == "tf":
        _check_recipe_size(transforms, size)
    if shards:
        return _shard_images(Path(paths), labels, batching, size, transforms, check, skip_bad)
    paths = [str(p) for p in paths]
    labels = np.asarray(labels, dtype=np.float32)
    if labels.ndim == 1:
        labels = labels[:, None]
    if labels.ndim != 2 or len(labels) != len(paths) or len(paths) == 0:
        raise ValueError(f"need N >= 1 paths and (N, K) labels, got {len(paths)} paths and labels of shape {labels.shape}")
    if engine == "tf":
        unsupported = [p for p in paths if Path(p).suffix.lower() not in tf_augment.TF_SUFFIXES]
        if unsupported:
            raise ValueError(f"{len(unsupported)} image(s) are not {'/'.join(tf_augment.TF_SUFFIXES)} files, e.g. "
                             f"{unsupported[0]}: use augment_engine='albumentations' (Pillow reads them)")
    if check:
        problems = unreadable_images(paths, progress=progress)
        if len(problems):
            listing = "\n".join(f"  {r.file}: {r.problem}" for r in problems.head(20).itertuples(index=False))
            if not skip_bad:
                raise ValueError(f"{len(problems)} unreadable image(s); fix them or pass skip_bad=True to drop them:\n{listing}")
            logger.warning("dropping %d unreadable image(s):\n%s", len(problems), listing)
            keep = ~pd.Series(paths).isin(set(problems["file"])).to_numpy()
            paths, labels = [p for p, k in zip(paths, keep) if k], labels[keep]
    batching.check_count(len(paths))
    if engine == "tf":
        path_table, label_table = tf.constant(paths), tf.constant(labels)
        image_of = _image_element(transforms, size, seed)

        def element(index: tf.Tensor, draw: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            return image_of(tf.io.read_file(path_table[index]), path_table[index], draw), label_table[index]

        return batching.graph_batches(element, len(paths))
    if isinstance(transforms, tf_augment.Augment):
        transforms = _albumentations_of(transforms)
    resize = A.Resize(*size, interpolation=cv2.INTER_AREA)
    local = threading.local()

    def load(index: np.int64, draw: np.int64) -> tuple[np.ndarray, np.ndarray]:
        index = int(index)
        image = resize(image=files.read_grey(paths[index]))["image"]
        if transforms is not None:
            if not hasattr(local, "transforms"):
                local.transforms = copy.deepcopy(transforms)
            augment.reseed(local.transforms, (seed, int(draw) & 0xFFFFFFFFFFFFFFFF))
            image = local.transforms(image=image)["image"]
            if image.shape != size:
                raise ValueError(f"transforms changed the size of {paths[index]} to {image.shape}; expected {size}")
        return image[..., None].astype(np.float32), labels[index]

    return batching.batches(load, len(paths), (*size, 1), (labels.shape[1],), name="load_image_labels")


def pipeline_rate(dataset: tf.data.Dataset, n_batches: int, warmup: int = 1) -> float:
    """Images per second of iterating ``dataset`` for ``n_batches`` batches after ``warmup`` untimed ones."""
    n_batches = checks.positive_int("n_batches", n_batches)
    if isinstance(warmup, bool) or not isinstance(warmup, (int, np.integer)) or warmup < 0:
        raise ValueError(f"warmup must be an integer >= 0, got {warmup!r}")
    iterator = iter(dataset)
    for _ in range(int(warmup)):
        next(iterator, None)
    n_images = 0
    start = time.perf_counter()
    for _ in range(n_batches):
        batch = next(iterator, None)
        if batch is None:
            break
        n_images += int(tf.shape(batch[0])[0])
    elapsed = time.perf_counter() - start
    if n_images == 0:
        raise ValueError("the dataset yielded no batch to time (too few batches for warmup + n_batches?)")
    return n_images / elapsed
