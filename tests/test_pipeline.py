"""Tests of helpers.data.pipeline: dataset checks and tf.data batches on tiny synthetic datasets."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers.core import files, severstal
from helpers.data import augment, pipeline, tf_augment
from helpers.data.synth import steel
from helpers.backend import tf

HEIGHT, WIDTH, N_IMAGES = 64, 256, 12
CROP = (32, 128)
BATCHING = {field.name for field in dataclasses.fields(pipeline.Batching)}


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """12 synthetic steel strips of 64x256 and their wide table."""
    out_dir = tmp_path_factory.mktemp("pipeline") / "steel"
    wide = steel.make_steel_dataset(out_dir, n_images=N_IMAGES, height=HEIGHT, width=WIDTH, seed=0, progress=False)
    return out_dir, wide


def _defective(wide: pd.DataFrame) -> list[str]:
    return [i for i in wide.index if (wide.loc[i, severstal.class_columns(wide)] != "").any()]


# How each image is broken, and the problem check_dataset must report for it.
BREAKS = {
    "truncated": "corrupt image",
    "missing": "missing file",
    "wrong_size": "unexpected size 32x128",
    "channels": "unexpected channels: 4",
    "not_an_image": "unreadable image",
    "rle": "invalid RLE: ImageId {image_id} ClassId 1",
}


@pytest.fixture(scope="module")
def broken(clean, tmp_path_factory) -> tuple[Path, pd.DataFrame, dict[str, str]]:
    """A copy of ``clean`` with one image broken per kind of :data:`BREAKS`; returns ``{kind: ImageId}``."""
    source, wide = clean
    out_dir = tmp_path_factory.mktemp("broken") / "steel"
    shutil.copytree(source, out_dir)
    images = out_dir / "train_images"
    defective = _defective(wide)
    victims = dict(zip(BREAKS, [defective[0], defective[1]] + [i for i in wide.index if i not in defective[:2]]))
    data = (images / victims["truncated"]).read_bytes()
    (images / victims["truncated"]).write_bytes(data[: len(data) // 2])
    (images / victims["missing"]).unlink()  # a defective image, so train.csv still names it
    Image.fromarray(np.full((32, 128), 100, np.uint8)).save(images / victims["wrong_size"], format="JPEG")
    Image.fromarray(np.full((HEIGHT, WIDTH, 4), 100, np.uint8), mode="RGBA").save(images / victims["channels"], format="PNG")
    (images / victims["not_an_image"]).write_bytes(b"not an image at all")
    table = wide.copy()
    table.loc[victims["rle"], 1] = f"{HEIGHT * WIDTH - 5} 10"  # runs past the last pixel
    severstal.write_train_csv(table, out_dir / "train.csv")
    return out_dir, table, victims


def _batches(dataset: tf.data.Dataset, n: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    taken = dataset if n is None else dataset.take(n)
    return [(x.numpy(), y.numpy()) for x, y in taken]


# ----------------------------------------------------------------------------- check_dataset


def test_check_clean(clean):
    out_dir, wide = clean
    problems = pipeline.check_dataset(out_dir, wide, progress=False)
    assert problems.empty and list(problems.columns) == list(pipeline.PROBLEM_COLUMNS)
    assert pipeline.check_dataset(out_dir, progress=False).empty


@pytest.mark.parametrize("kind", list(BREAKS))
@pytest.mark.parametrize("from_csv", [False, True])
def test_check_finds_each_problem(broken, kind, from_csv):
    out_dir, table, victims = broken
    wide, shape = (None, (HEIGHT, WIDTH)) if from_csv else (table, None)
    problems = pipeline.check_dataset(out_dir, wide, expected_shape=shape, progress=False, num_workers=2)
    assert set(problems["ImageId"]) == set(victims.values())
    image_id = victims[kind]
    found = problems[problems["ImageId"] == image_id]
    assert found["problem"].str.contains(BREAKS[kind].format(image_id=image_id), regex=False).any(), found
    assert (found["file"] == str(out_dir / "train_images" / image_id)).all()


def test_check_subset(broken):
    out_dir, table, victims = broken
    subset = [victims["missing"], victims["rle"]] + [i for i in table.index if i not in victims.values()][:2]
    problems = pipeline.check_dataset(out_dir, table, image_ids=subset, progress=False)
    assert set(problems["ImageId"]) == {victims["missing"], victims["rle"]}


def test_make_dataset_raises_naming_files(broken):
    out_dir, table, victims = broken
    with pytest.raises(ValueError, match="skip_bad=True") as error:
        pipeline.make_dataset(out_dir, list(table.index), table, pipeline.Batching(2, training=False), progress=False)
    for image_id in victims.values():
        assert str(out_dir / "train_images" / image_id) in str(error.value)


def test_skip_bad_drops_and_logs(broken, caplog):
    out_dir, table, victims = broken
    with caplog.at_level(logging.WARNING, logger="helpers.data.pipeline"):
        dataset = pipeline.make_dataset(out_dir, list(table.index), table, pipeline.Batching(4, training=False), skip_bad=True, progress=False)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert f"dropping {len(victims)} bad image(s)" in logged
    for image_id in victims.values():
        assert image_id in logged
    kept = [i for i in table.index if i not in victims.values()]
    assert pipeline.usable_ids(out_dir, list(table.index), table, skip_bad=True, progress=False) == kept
    images = np.concatenate([x for x, _ in _batches(dataset)])
    assert len(images) == len(kept)
    for image, image_id in zip(images, kept):
        np.testing.assert_array_equal(image[..., 0], files.read_grey(out_dir / "train_images" / image_id).astype(np.float32))


@pytest.mark.parametrize("engine", ["tf", "albumentations"])
@pytest.mark.parametrize("kind", ["truncated", "not_an_image", "wrong_size"])
def test_unchecked_bad_file_fails_naming_it(broken, engine, kind):
    out_dir, table, victims = broken
    ids = [victims[kind]]
    dataset = pipeline.make_dataset(out_dir, ids, table, pipeline.Batching(1, training=False), check=False, progress=False,
                                    augment_engine=engine)
    with pytest.raises(tf.errors.OpError, match=victims[kind]):
        _batches(dataset)


# ----------------------------------------------------------------------------- batches


@pytest.mark.parametrize(
    ("training", "options", "batch_size", "sizes", "shape"),
    [
        (True, dict(transforms=augment.train_transforms(crop_size=CROP)), 4, [4, 4, 4], CROP),
        (True, dict(), 5, [5, 5], (HEIGHT, WIDTH)),  # last partial batch dropped
        (True, dict(resize_to=(32, 100)), 4, [4, 4, 4], (32, 100)),
        (False, dict(), 5, [5, 5, 2], (HEIGHT, WIDTH)),
        (False, dict(resize_to=CROP), 8, [8, 4], CROP),
        (False, dict(transforms=augment.eval_transforms(pad_to=(72, 260))), 12, [12], (72, 260)),
    ],
)
def test_batch_shapes_and_values(clean, training, options, batch_size, sizes, shape):
    out_dir, wide = clean
    dataset = pipeline.make_dataset(out_dir, list(wide.index), wide, pipeline.Batching(batch_size, training=training), progress=False, **options)
    assert dataset.element_spec[0].shape.as_list()[1:] == [*shape, 1]
    assert dataset.element_spec[1].shape.as_list()[1:] == [*shape, 4]
    batches = _batches(dataset)
    assert [len(x) for x, _ in batches] == sizes
    for images, masks in batches:
        assert images.dtype == np.float32 and masks.dtype == np.float32
        assert images.shape[1:] == (*shape, 1) and masks.shape[1:] == (*shape, 4)
        assert images.min() >= 0.0 and images.max() <= 255.0 and images.max() > 50
        assert set(np.unique(masks).tolist()) <= {0.0, 1.0}
    assert sum(m.sum() for _, m in batches) > 0


@pytest.mark.parametrize("engine", ["tf", "albumentations"])
def test_validation_batch_matches_files_exactly(clean, engine):
    out_dir, wide = clean
    ids = list(wide.index)[::-1]  # the given order is kept
    dataset = pipeline.make_dataset(out_dir, ids, wide, pipeline.Batching(5, training=False), progress=False, augment_engine=engine)
    images = np.concatenate([x for x, _ in _batches(dataset)])
    masks = np.concatenate([y for _, y in _batches(dataset)])
    for k, image_id in enumerate(ids):
        np.testing.assert_array_equal(images[k, ..., 0], files.read_grey(out_dir / "train_images" / image_id).astype(np.float32))
        np.testing.assert_array_equal(masks[k], severstal.decode_masks(wide.loc[image_id]).astype(np.float32))


def _training(clean, seed: int, engine: str = "albumentations", **options) -> tf.data.Dataset:
    out_dir, wide = clean
    transforms = augment.train_transforms(crop_size=CROP) if engine == "albumentations" else tf_augment.train_augment(crop_size=CROP)
    batching = pipeline.Batching(4, training=True, seed=seed, **{k: v for k, v in options.items() if k in BATCHING})
    return pipeline.make_dataset(out_dir, list(wide.index), wide, batching, transforms=transforms, progress=False,
                                 **{k: v for k, v in options.items() if k not in BATCHING})


def _same(a: list, b: list) -> bool:
    return all(np.array_equal(x, y) for pa, pb in zip(a, b) for x, y in zip(pa, pb)) and len(a) == len(b)


@pytest.mark.parametrize("engine", ["tf", "albumentations"])
def test_same_seed_same_batches(clean, engine):
    first = _training(clean, seed=3, engine=engine)
    epoch_1, epoch_2 = _batches(first), _batches(first)
    assert _same(_batches(_training(clean, seed=3, engine=engine)), epoch_1)
    assert _same(_batches(_training(clean, seed=3, engine=engine, num_parallel_calls=1)), epoch_1)  # parallelism does not matter
    assert _same(_batches(_training(clean, seed=3, engine=engine, cache=True)), epoch_1)
    assert not _same(epoch_2, epoch_1)  # reshuffled and re-augmented every epoch
    assert not _same(_batches(_training(clean, seed=4, engine=engine)), epoch_1)
    repeated = _batches(_training(clean, seed=3, engine=engine, repeat=True), 6)
    assert _same(repeated[:3], epoch_1) and _same(repeated[3:], epoch_2)
    for images, masks in epoch_1:
        assert images.shape[1:] == (*CROP, 1) and set(np.unique(masks).tolist()) <= {0.0, 1.0}


def _all(dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    images, masks = zip(*_batches(dataset))
    return np.concatenate(images), np.concatenate(masks)


@pytest.mark.parametrize("recipe", [tf_augment.eval_augment(), tf_augment.eval_augment(pad_to=(72, 260)),
                                    tf_augment.eval_augment(resize_to=(32, 128)), tf_augment.eval_augment(resize_to=(32, 128), pad_to=(40, 130))])
def test_deterministic_path_is_the_same_on_both_engines(clean, recipe):
    """Evaluation batches, pixel for pixel: TF engine = albumentations engine = read_grey + decode_masks (+ pad / resize)."""
    out_dir, wide = clean
    ids = list(wide.index)
    batching = pipeline.Batching(4, training=False)
    tf_images, tf_masks = _all(pipeline.make_dataset(out_dir, ids, wide, batching, transforms=recipe, progress=False, augment_engine="tf"))
    al_images, al_masks = _all(pipeline.make_dataset(out_dir, ids, wide, batching, transforms=recipe, progress=False,
                                                     augment_engine="albumentations"))
    np.testing.assert_array_equal(tf_masks, al_masks)  # masks: exactly, resized or not
    if recipe.resize_to is None:
        np.testing.assert_array_equal(tf_images, al_images)
        height, width = recipe.output_size(HEIGHT, WIDTH)
        for k, image_id in enumerate(ids):
            image = files.read_grey(out_dir / "train_images" / image_id)
            masks = severstal.decode_masks(wide.loc[image_id])
            expected = np.pad(image, [[0, height - HEIGHT], [0, width - WIDTH]]).astype(np.float32)
            np.testing.assert_array_equal(tf_images[k, ..., 0], expected)
            np.testing.assert_array_equal(tf_masks[k], np.pad(masks, [[0, height - HEIGHT], [0, width - WIDTH], [0, 0]]))
    else:  # area resize: OpenCV and TensorFlow round some means differently
        assert np.abs(tf_images - al_images).max() <= 1.0 and (tf_images != al_images).mean() < 0.02


def test_engine_argument(clean):
    out_dir, wide = clean
    ids, batching = list(wide.index), pipeline.Batching(4, training=True)
    with pytest.raises(ValueError, match="augment_engine must be one of"):
        pipeline.make_dataset(out_dir, ids, wide, batching, progress=False, augment_engine="torch")
    with pytest.raises(ValueError, match="need augment_engine='albumentations'"):
        pipeline.make_dataset(out_dir, ids, wide, batching, transforms=augment.train_transforms(crop_size=CROP), progress=False,
                              augment_engine="tf")
    with pytest.raises(ValueError, match="transforms must be"):
        pipeline.make_dataset(out_dir, ids, wide, batching, transforms="flips", progress=False)
    # a recipe runs on either engine, with the same steps and output shapes
    for engine in ("tf", "albumentations"):
        data = pipeline.make_dataset(out_dir, ids, wide, batching, transforms=tf_augment.train_augment(crop_size=CROP), progress=False,
                                     augment_engine=engine)
        assert data.element_spec[1].shape.as_list() == [4, *CROP, 4]


EXIT_SCRIPT = """
from helpers.core import severstal
from helpers.data import pipeline, tf_augment

data_dir = {data_dir!r}
wide = severstal.read_dataset(data_dir)
transforms = tf_augment.train_augment(crop_size=(32, 128))
data = pipeline.make_dataset(data_dir, list(wide.index), wide, pipeline.Batching(8, training=True, seed=0, repeat=True),
                             transforms=transforms, progress=False, augment_engine={engine!r})
it = iter(data)
for _ in range(3):
    images, masks = next(it)
print("read", images.shape)
"""


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["tf", "albumentations"])
def test_open_iterator_does_not_hang_the_exit(clean, tmp_path, engine):
    """A script that leaves a repeating training iterator open exits cleanly, 5 times out of 5."""
    out_dir, _ = clean
    script = tmp_path / "leave_open.py"
    script.write_text(textwrap.dedent(EXIT_SCRIPT.format(data_dir=str(out_dir), engine=engine)))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    codes = []
    for _ in range(5):
        try:
            done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
        except subprocess.TimeoutExpired:
            codes.append("hung")
            continue
        codes.append(done.returncode)
        assert "read" in done.stdout, done.stderr[-2000:]
    assert codes == [0] * 5


def test_mixed_sizes_need_resize(clean, tmp_path):
    source, wide = clean
    out_dir = tmp_path / "mixed"
    shutil.copytree(source, out_dir)
    odd = wide.index[0]
    files.write_image(out_dir / "train_images" / odd, np.full((48, 200), 90, np.uint8))
    table = wide.copy()
    table.loc[odd, severstal.class_columns(table)] = ""
    table.loc[odd, ["Height", "Width"]] = [48, 200]
    ids = list(table.index)
    with pytest.raises(ValueError, match=f"48x200: 1 image\\(s\\), e.g. {odd}.*pass resize_to"):
        pipeline.make_dataset(out_dir, ids, table, pipeline.Batching(4, training=False), progress=False)
    for training in (False, True):
        dataset = pipeline.make_dataset(out_dir, ids, table, pipeline.Batching(4, training=training), resize_to=(48, 128), progress=False)
        assert all(x.shape[1:] == (48, 128, 1) for x, _ in _batches(dataset))
    single = pipeline.make_dataset(out_dir, ids[:2], table, pipeline.Batching(1, training=False), progress=False)
    assert [x.shape[1:3] for x, _ in _batches(single)] == [(48, 200), (HEIGHT, WIDTH)]


def test_pipeline_rate(clean):
    rate = pipeline.pipeline_rate(_training(clean, seed=0, repeat=True), n_batches=3)
    assert rate > 0.0
    with pytest.raises(ValueError, match="no batch"):
        pipeline.pipeline_rate(_training(clean, seed=0), n_batches=2, warmup=5)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(batch_size=0), "batch_size"),
        (dict(seed=-1), "seed"),
        (dict(image_ids=[]), "image_ids"),
        (dict(image_ids=["nope.jpg"]), "not in the table"),
        (dict(resize_to=(32, 32), transforms=augment.eval_transforms()), "not both"),
        (dict(skip_bad=True, check=False), "needs check=True"),
        (dict(batch_size=13, training=True), "no full batch"),
        (dict(num_parallel_calls=0), "num_parallel_calls"),
        (dict(shuffle_buffer=0), "shuffle_buffer"),
    ],
)
def test_bad_arguments(clean, options, message):
    out_dir, wide = clean
    arguments = dict(image_ids=list(wide.index), batch_size=4, training=False, progress=False) | options
    with pytest.raises(ValueError, match=message):
        batching = pipeline.Batching(**{name: arguments.pop(name) for name in BATCHING if name in arguments})
        pipeline.make_dataset(out_dir, wide=wide, batching=batching, **arguments)


def test_check_dataset_bad_arguments(clean):
    out_dir, wide = clean
    with pytest.raises(ValueError, match="expected_channels"):
        pipeline.check_dataset(out_dir, wide, expected_channels=(5,), progress=False)
    with pytest.raises(ValueError, match="shape"):
        pipeline.check_dataset(out_dir, wide, expected_shape=(0, 10), progress=False)


# ----------------------------------------------------------------------------- make_image_dataset


@pytest.fixture(scope="module")
def labelled_images(tmp_path_factory) -> tuple[list[Path], np.ndarray]:
    """6 grey images of different sizes whose mean grey level encodes their index, and (6, 2) labels."""
    folder = tmp_path_factory.mktemp("labelled")
    paths = []
    for index, (height, width) in enumerate([(40, 60), (64, 64), (30, 90), (64, 32), (50, 50), (80, 40)]):
        paths.append(files.write_image(folder / f"img_{index}.png", np.full((height, width), 20 * index + 10, np.uint8)))
    labels = np.array([[1, 0], [0, 1], [1, np.nan], [0, 0], [1, 1], [np.nan, 0]], np.float32)
    return paths, labels


def test_image_dataset_resizes_and_keeps_order_and_labels(labelled_images):
    paths, labels = labelled_images
    data = pipeline.make_image_dataset(paths, labels, pipeline.Batching(4, training=False), image_size=(16, 24), progress=False)
    images, targets = map(np.concatenate, zip(*[(x.numpy(), y.numpy()) for x, y in data]))
    assert images.shape == (6, 16, 24, 1) and images.dtype == np.float32
    np.testing.assert_array_equal(images[:, 0, 0, 0], 20 * np.arange(6) + 10)  # flat images stay flat
    np.testing.assert_array_equal(np.isnan(targets), np.isnan(labels))
    np.testing.assert_array_equal(np.nan_to_num(targets), np.nan_to_num(labels))


def test_image_dataset_training_is_seeded_and_shuffled(labelled_images):
    paths, labels = labelled_images
    transforms = augment.train_transforms(crop_size=None, shift_scale_rotate=False, brightness_contrast=False)

    def first_epoch(seed):
        data = pipeline.make_image_dataset(paths, labels, pipeline.Batching(3, training=True, seed=seed), image_size=(16, 16),
                                           transforms=transforms, progress=False)
        return np.concatenate([x.numpy()[:, 0, 0, 0] for x, _ in data])

    order = first_epoch(0)
    assert sorted(order) == list(20 * np.arange(6) + 10)  # each image once per epoch (flips keep flat images flat)
    np.testing.assert_array_equal(first_epoch(0), order)
    assert any(not np.array_equal(first_epoch(seed), order) for seed in (1, 2, 3))


def test_image_dataset_names_unreadable_files_or_skips_them(labelled_images, tmp_path, caplog):
    paths, labels = labelled_images
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="broken.png"):
        pipeline.make_image_dataset([*paths, broken], np.vstack([labels, [[1, 1]]]), pipeline.Batching(2, training=False), progress=False)
    with caplog.at_level(logging.WARNING):
        data = pipeline.make_image_dataset([*paths, broken], np.vstack([labels, [[1, 1]]]), pipeline.Batching(7, training=False),
                                           image_size=(8, 8), skip_bad=True, progress=False)
    assert "broken.png" in caplog.text
    assert sum(int(x.shape[0]) for x, _ in data) == 6


def test_image_dataset_tf_engine_matches_the_albumentations_engine(labelled_images):
    paths, labels = labelled_images
    batching = pipeline.Batching(3, training=False)
    python, graph = (_batches(pipeline.make_image_dataset(paths, labels, batching, image_size=(16, 24), progress=False,
                                                          augment_engine=engine)) for engine in ("albumentations", "tf"))
    for (a, b), (c, d) in zip(python, graph):  # flat images: the two area resizes agree exactly
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)
    recipe = tf_augment.train_augment(crop_size=None, flips=False)  # "auto" runs a recipe on TF ops, seeded
    first, again = (_batches(pipeline.make_image_dataset(paths, labels, pipeline.Batching(3, training=True, seed=1),
                                                         image_size=(16, 24), transforms=recipe, progress=False)) for _ in range(2))
    for (a, b), (c, d) in zip(first, again):
        np.testing.assert_array_equal(a, c)
    assert first[0][0].shape == (3, 16, 24, 1)
    with pytest.raises(ValueError, match="need augment_engine='albumentations'"):
        pipeline.make_image_dataset(paths, labels, batching, transforms=augment.train_transforms(crop_size=None), augment_engine="tf")
    with pytest.raises(ValueError, match="not .jpg/.jpeg/.png/.bmp/.gif files"):
        pipeline.make_image_dataset([*paths[:-1], Path(paths[-1]).with_suffix(".tif")], labels, batching, augment_engine="tf")


@pytest.mark.parametrize("kwargs, message", [
    ({"labels": np.zeros((5, 2))}, "labels of shape"),
    ({"batch_size": 0}, "batch_size"),
    ({"image_size": (0, 8)}, "height >= 1"),
    ({"training": "yes"}, "training"),
    ({"batch_size": 7, "training": True}, "no full batch"),
])
def test_image_dataset_checks_arguments(labelled_images, kwargs, message):
    paths, labels = labelled_images
    arguments = {"labels": labels, "batch_size": 2, "training": False, "image_size": (8, 8), **kwargs}
    with pytest.raises(ValueError, match=message):
        batching = pipeline.Batching(**{name: arguments.pop(name) for name in BATCHING if name in arguments})
        pipeline.make_image_dataset(paths, batching=batching, progress=False, **arguments)


@pytest.mark.parametrize("training, drop", [(True, True), (False, False)])
def test_batching_drops_the_last_partial_batch_only_in_training_by_default(training, drop):
    batching = pipeline.Batching(4, training=training)
    assert batching.drop_remainder is drop and batching.seed == 0 and not batching.repeat
    assert pipeline.Batching(4, training=training, drop_remainder=not drop).drop_remainder is (not drop)
    with pytest.raises(dataclasses.FrozenInstanceError):
        batching.batch_size = 8


def test_pipelines_take_a_batching_not_loose_numbers(clean):
    out_dir, wide = clean
    with pytest.raises(ValueError, match="batching must be a pipeline.Batching, got int"):
        pipeline.make_dataset(out_dir, list(wide.index), wide, 4)
