"""Tests of helpers.data.records: sharded TFRecord corpora, written, checked and read by both pipelines."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers.core import files, rle, severstal
from helpers.data import augment, pipeline, radiographs, records, tf_augment
from helpers.data.synth import chest, steel
from helpers.backend import tf

HEIGHT, WIDTH, N_STEEL = 64, 128, 8
# the labelled images: (height, width, file format); JPEG/PNG are stored as they are, BMP/TIFF as grey PNG
IMAGES = [(40, 48, "png"), (48, 40, "jpeg"), (40, 48, "bmp"), (48, 40, "tiff"), (40, 48, "jpeg"), (48, 40, "png")]
LABELS = np.array([[1, 0], [0, 1], [1, np.nan], [0, 0], [np.nan, 1], [1, 1]], np.float32)
GROUPS = ["p1", "p1", "p2", "p3", "p3", "p4"]
SUFFIX = {"png": ".png", "jpeg": ".jpg", "bmp": ".bmp", "tiff": ".tif"}


def _pattern(height: int, width: int, k: int) -> np.ndarray:
    """A deterministic grey ramp with structure (so resizes and JPEG do something)."""
    rows, columns = np.arange(height)[:, None], np.arange(width)[None, :]
    return ((rows * 7 + columns * 3 + 29 * k + (rows * columns) % 11) % 256).astype(np.uint8)


@pytest.fixture(scope="module")
def steel_dir(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """8 synthetic steel strips (64x128 JPEG) with a splits.csv of 4 groups."""
    folder = tmp_path_factory.mktemp("records") / "steel"
    wide = steel.make_steel_dataset(folder, n_images=N_STEEL, height=HEIGHT, width=WIDTH, seed=0, progress=False)
    splits = pd.DataFrame({"split": ["train", "val"] * (N_STEEL // 2), "group": [f"g{k // 2}" for k in range(N_STEEL)]},
                          index=pd.Index(wide.index, name="ImageId"))
    severstal.write_splits(folder, splits)
    return folder, wide


@pytest.fixture(scope="module")
def steel_shards(steel_dir, tmp_path_factory) -> Path:
    source, _ = steel_dir
    return records.write_segmentation_shards(source, tmp_path_factory.mktemp("shards") / "steel", n_shards=4, progress=False)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> tuple[list[Path], Path]:
    """6 labelled images of two sizes in four formats, and their shard folder (3 shards)."""
    folder = tmp_path_factory.mktemp("labelled")
    paths = []
    for k, (height, width, kind) in enumerate(IMAGES):
        path = folder / "images" / f"img_{k}{SUFFIX[kind]}"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(_pattern(height, width, k)).save(path, **({"quality": 90} if kind == "jpeg" else {}))
        paths.append(path)
    shards = records.write_image_shards(folder / "shards", paths, LABELS, ["a", "b"], groups=GROUPS, n_shards=3, progress=False)
    return paths, shards


def _batches(dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    images, targets = zip(*[(x.numpy(), y.numpy()) for x, y in dataset])
    return np.concatenate(images), np.concatenate(targets)


# ----------------------------------------------------------------------------- round trips


def test_segmentation_round_trip(steel_dir, steel_shards):
    source, wide = steel_dir
    stored = list(records.read_records(steel_shards, verify=True))
    assert [r["id"] for r in stored] == list(wide.index)  # the table's order
    splits = severstal.read_splits(source)
    for record in stored:
        image_id = record["id"]
        assert record["image"] == (source / "train_images" / image_id).read_bytes()  # JPEG copied, not re-encoded
        assert record["encoding"] == "jpeg" and (record["height"], record["width"]) == (HEIGHT, WIDTH)
        assert record["rle"] == [wide.at[image_id, c] for c in severstal.class_columns(wide)]
        assert record["group"] == splits.at[image_id, "group"]
    pd.testing.assert_frame_equal(records.read_table(steel_shards), wide)
    assert severstal.read_classes(steel_shards) == severstal.read_classes(source)
    pd.testing.assert_frame_equal(severstal.read_splits(steel_shards), splits)


def test_classification_round_trip(labelled):
    paths, shards = labelled
    stored = list(records.read_records(shards, verify=True))
    assert [r["id"] for r in stored] == [p.name for p in paths] and [r["group"] for r in stored] == GROUPS
    for record, path, (height, width, kind) in zip(stored, paths, IMAGES):
        assert (record["height"], record["width"]) == (height, width)
        if kind in ("png", "jpeg"):
            assert record["image"] == path.read_bytes() and record["encoding"] == kind
        else:  # lossless grey PNG of read_grey's pixels
            assert record["encoding"] == "png"
            np.testing.assert_array_equal(files.decode_grey(record["image"]), files.read_grey(path))
    np.testing.assert_array_equal(np.stack([r["labels"] for r in stored]), LABELS)  # NaN where NaN
    table = records.read_table(shards)
    assert table["id"].tolist() == [p.name for p in paths] and table["group"].tolist() == GROUPS
    np.testing.assert_array_equal(table[["a", "b"]].to_numpy(), LABELS)
    manifest = records.read_manifest(shards)
    assert manifest["encodings"] == {"jpeg": 2, "png": 4} and manifest["reencoded_to_png"] == 2
    assert manifest["image_sizes"] == {"40x48": 3, "48x40": 3} and manifest["label_names"] == ["a", "b"]


def test_rle_runs_parse_like_rle_parse(steel_dir):
    _, wide = steel_dir
    classes = severstal.class_columns(wide)
    for image_id in wide.index:
        begins, ends, kinds = (t.numpy() for t in records.rle_runs(tf.constant([wide.at[image_id, c] for c in classes])))
        expected = [rle.parse(wide.at[image_id, c], (HEIGHT, WIDTH)) for c in classes]
        np.testing.assert_array_equal(begins, np.concatenate([s - 1 for s, _ in expected]))
        np.testing.assert_array_equal(ends - begins, np.concatenate([n for _, n in expected]))
        np.testing.assert_array_equal(kinds, np.concatenate([np.full(s.size, k) for k, (s, _) in enumerate(expected)]))


def test_write_shards_of_a_pretraining_corpus(tmp_path):
    folder = chest.make_chexpert_dataset(tmp_path / "corpus", n_images=10, image_size=(64, 64), seed=0, valid_fraction=0.3,
                                         progress=False)
    written = records.write_shards(folder, tmp_path / "shards", corpus="chexpert", n_shards=1, progress=False)
    assert written == [tmp_path / "shards" / "train", tmp_path / "shards" / "val"]
    train, val, columns = radiographs.pretraining_corpus("chexpert", folder)
    for part, table in zip(written, (train, val)):
        stored = records.read_table(part)
        assert stored["path"].tolist() == table["path"].tolist() and stored["group"].tolist() == table["group"].tolist()
        np.testing.assert_array_equal(stored[columns].to_numpy(), table[columns].to_numpy(np.float32))
        assert records.read_manifest(part)["source"]["layout"] == "chexpert"


# ----------------------------------------------------------------------------- the manifest


@pytest.mark.parametrize("target, counts", [
    ({"n_shards": 1}, [6]),
    ({"n_shards": 4}, [1, 2, 1, 2]),
    ({"n_shards": 6}, [1] * 6),
    ({"shard_size_mb": 1e-6}, [1] * 6),  # every record is larger than the target: one per shard
    ({"shard_size_mb": 100}, [6]),
])
def test_manifest_counts_sizes_and_checksums(labelled, tmp_path, target, counts):
    paths, _ = labelled
    folder = records.write_image_shards(tmp_path / "shards", paths, LABELS, ["a", "b"], progress=False, **target)
    manifest = json.loads((folder / records.MANIFEST).read_text())
    assert manifest["format"] == records.FORMAT and manifest["format_version"] == records.FORMAT_VERSION
    assert manifest["kind"] == "classification" and manifest["n_records"] == 6
    assert [s["count"] for s in manifest["shards"]] == counts
    assert [s["file"] for s in manifest["shards"]] == [f"shard-{k:05d}-of-{len(counts):05d}.tfrecord" for k in range(len(counts))]
    assert [i for s in manifest["shards"] for i in s["ids"]] == [p.name for p in paths]
    assert [tuple(size) for s in manifest["shards"] for size in s["sizes"]] == [(h, w) for h, w, _ in IMAGES]
    for shard in manifest["shards"]:
        data = (folder / shard["file"]).read_bytes()
        assert shard["bytes"] == len(data) and shard["sha256"] == hashlib.sha256(data).hexdigest()
    assert manifest["tables"] == {"labels.csv": hashlib.sha256((folder / "labels.csv").read_bytes()).hexdigest()}
    assert sorted(p.name for p in folder.iterdir()) == sorted([records.MANIFEST, "labels.csv", *(s["file"] for s in manifest["shards"])])


def test_shuffle_seed_writes_a_seeded_permutation(labelled, tmp_path):
    paths, _ = labelled
    orders = [[r["id"] for r in records.read_records(
        records.write_image_shards(tmp_path / f"s{k}", paths, LABELS, ["a", "b"], shuffle_seed=seed, progress=False))]
        for k, seed in enumerate((3, 3, 4))]
    assert orders[0] == orders[1] and sorted(orders[0]) == sorted(p.name for p in paths)
    assert orders[0] != [p.name for p in paths] and orders[0] != orders[2]
    assert records.read_manifest(tmp_path / "s0")["order"] == {"shuffled_seed": 3}


@pytest.mark.parametrize("change, message", [
    ({"format_version": records.FORMAT_VERSION + 1}, "newer than this code reads"),
    ({"format": "something-else"}, "not a defect-records manifest"),
    ({"kind": "detection"}, r"kind must be one of \['segmentation', 'classification'\]"),
    ({"n_records": 5}, "shards hold 6 records, n_records says 5"),
])
def test_manifest_is_checked(labelled, tmp_path, change, message):
    _, shards = labelled
    folder = tmp_path / "copy"
    shutil.copytree(shards, folder)
    manifest = json.loads((folder / records.MANIFEST).read_text())
    (folder / records.MANIFEST).write_text(json.dumps({**manifest, **change}))
    with pytest.raises(ValueError, match=message):
        records.read_manifest(folder)


def test_a_folder_without_manifest_is_not_shards(tmp_path):
    assert not records.is_shard_folder(tmp_path)
    with pytest.raises(ValueError, match=f"not a shard folder: no {records.MANIFEST}"):
        records.read_manifest(tmp_path)


# ----------------------------------------------------------------------------- damage and interruptions


def _damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "flipped":
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    elif how == "truncated":
        path.write_bytes(bytes(data[: len(data) - 7]))
    else:
        path.unlink()


@pytest.mark.parametrize("how, error, message", [
    ("flipped", ValueError, "sha256 differs"),
    ("truncated", ValueError, "bytes, the manifest says"),
    ("missing", FileNotFoundError, "is missing"),
])
def test_a_damaged_shard_is_named(steel_shards, steel_dir, tmp_path, how, error, message):
    folder = tmp_path / "copy"
    shutil.copytree(steel_shards, folder)
    victim = folder / "shard-00002-of-00004.tfrecord"
    _damage(victim, how)
    with pytest.raises(error, match=message) as found:
        records.verify(folder)
    assert str(victim) in str(found.value)
    with pytest.raises(error, match=re.escape(str(victim))):  # the pipeline verifies when it checks (the default)
        pipeline.make_dataset(folder, list(steel_dir[1].index), None, pipeline.Batching(2, training=False))
    if how != "missing":  # read without verifying: the damaged record itself is named
        with pytest.raises(ValueError, match=re.escape(f"shard {victim}")):
            list(records.read_records(folder))


class _Interrupt(Exception):
    pass


@pytest.mark.parametrize("after", [0, 3, 5])
def test_interrupted_writing_leaves_nothing(labelled, tmp_path, monkeypatch, after):
    paths, _ = labelled
    written = []
    original = records._example

    def failing(*args):
        if len(written) == after:
            raise _Interrupt("killed while writing")
        written.append(1)
        return original(*args)

    monkeypatch.setattr(records, "_example", failing)
    with pytest.raises(_Interrupt):
        records.write_image_shards(tmp_path / "shards", paths, LABELS, ["a", "b"], n_shards=3, progress=False)
    assert list(tmp_path.iterdir()) == []  # no destination, no staging folder
    # an existing shard folder is kept whole when its replacement fails
    monkeypatch.setattr(records, "_example", original)
    records.write_image_shards(tmp_path / "shards", paths[:2], LABELS[:2], ["a", "b"], progress=False)
    before = {p.name: p.read_bytes() for p in (tmp_path / "shards").iterdir()}
    written.clear()
    monkeypatch.setattr(records, "_example", failing)
    with pytest.raises(_Interrupt):
        records.write_image_shards(tmp_path / "shards", paths, LABELS, ["a", "b"], overwrite=True, progress=False)
    assert {p.name: p.read_bytes() for p in (tmp_path / "shards").iterdir()} == before
    assert records.verify(tmp_path / "shards")["n_records"] == 2 and [p.name for p in tmp_path.iterdir()] == ["shards"]


def test_a_bad_image_stops_the_writing_naming_it(labelled, tmp_path):
    paths, _ = labelled
    broken = tmp_path / "broken.png"
    broken.write_bytes(paths[0].read_bytes()[:200])  # a truncated PNG
    with pytest.raises(ValueError, match="(?s)1 bad image.*broken.png"):
        records.write_image_shards(tmp_path / "shards", [*paths, broken], np.vstack([LABELS, [[1, 1]]]), ["a", "b"], progress=False)
    assert not (tmp_path / "shards").exists()


def test_refuses_to_replace_what_is_not_shards(steel_dir, labelled, tmp_path):
    source, _ = steel_dir
    paths, _ = labelled
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a shard folder"):
        records.write_image_shards(tmp_path / "precious", paths, LABELS, ["a", "b"], overwrite=True, progress=False)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        records.write_image_shards(tmp_path / "precious", paths, LABELS, ["a", "b"], progress=False)
    with pytest.raises(ValueError, match="would replace the source"):
        records.write_segmentation_shards(source / "train_images" / "..", source, progress=False)
    assert (tmp_path / "precious" / "notes.txt").read_text() == "keep me"


# ----------------------------------------------------------------------------- the pipelines read shards


@pytest.mark.parametrize("resize_to", [None, (32, 64), (40, 100)])
def test_segmentation_eval_batches_equal_the_files_layout(steel_dir, steel_shards, resize_to):
    source, wide = steel_dir
    ids = list(wide.index)[1:]  # a subset, in the stored order
    batching = pipeline.Batching(3, training=False)
    from_files = _batches(pipeline.make_dataset(source, ids, wide, batching, resize_to=resize_to, progress=False))
    from_shards = _batches(pipeline.make_dataset(steel_shards, ids, records.read_table(steel_shards), batching, resize_to=resize_to))
    for a, b in zip(from_files, from_shards):
        assert a.dtype == b.dtype == np.float32 and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    python = _batches(pipeline.make_dataset(source, ids, wide, batching, resize_to=resize_to, progress=False,
                                            augment_engine="albumentations"))
    np.testing.assert_array_equal(python[1], from_shards[1])  # masks equal; grey levels within 1 after a resize
    assert np.abs(python[0] - from_shards[0]).max() <= (0 if resize_to is None else 1)


@pytest.mark.parametrize("image_size, cv2_difference", [
    ((40, 48), 1),  # three images kept as they are, three resized from 48x40
    ((20, 24), 1),  # factor 2 / non-integer factors
    ((80, 96), 1),
])
def test_classification_eval_batches_equal_the_files_layout(labelled, image_size, cv2_difference):
    paths, shards = labelled
    batching = pipeline.Batching(4, training=False)
    from_shards = _batches(pipeline.make_image_dataset(shards, None, batching, image_size=image_size))
    readable = [k for k, (_, _, kind) in enumerate(IMAGES) if kind != "tiff"]  # TensorFlow decodes no TIFF
    tf_files = _batches(pipeline.make_image_dataset([paths[k] for k in readable], LABELS[readable], batching, image_size=image_size,
                                                    progress=False, augment_engine="tf"))
    cv2_files = _batches(pipeline.make_image_dataset(paths, LABELS, batching, image_size=image_size, progress=False))
    assert from_shards[0].shape == (6, *image_size, 1) and from_shards[0].dtype == np.float32
    np.testing.assert_array_equal(from_shards[0][readable], tf_files[0])  # the same bytes through the same TF ops
    np.testing.assert_array_equal(from_shards[1][readable], tf_files[1])
    np.testing.assert_array_equal(from_shards[1], cv2_files[1])
    difference = np.abs(from_shards[0] - cv2_files[0])  # TF area resize vs OpenCV INTER_AREA
    assert difference.max() <= cv2_difference
    kept = [k for k, (h, w, _) in enumerate(IMAGES) if (h, w) == image_size]
    np.testing.assert_array_equal(from_shards[0][kept], cv2_files[0][kept])  # no resize: identical


def test_training_reads_shards_in_a_seeded_shuffled_order(labelled):
    _, shards = labelled
    paths, _ = labelled

    def firsts(data):  # the top-left grey level tells the images apart (no augmentation)
        return [tuple(x.numpy()[:, 0, 0, 0]) for x, _ in data]

    def dataset(seed):
        return pipeline.make_image_dataset(shards, None, pipeline.Batching(2, training=True, seed=seed), image_size=(40, 48))

    data = dataset(0)
    first, second = firsts(data), firsts(data)
    assert firsts(dataset(0)) == first  # same seed, same batches
    assert first != second  # every epoch reshuffles
    stored = [tuple(x.numpy()[:, 0, 0, 0]) for x, _ in pipeline.make_image_dataset(shards, None, pipeline.Batching(2, training=False),
                                                                                    image_size=(40, 48))]
    assert sorted(v for batch in first for v in batch) == sorted(v for batch in stored for v in batch)
    assert first != stored  # not the stored order
    assert len(first) == 3  # 6 images, batches of 2, none dropped


def test_auto_shard_policy_is_file_and_each_worker_gets_its_own_shards(labelled, steel_dir, steel_shards):
    from tensorflow.python.data.experimental.ops import distribute

    _, shards = labelled
    file_policy = tf.data.experimental.AutoShardPolicy.FILE
    data = pipeline.make_image_dataset(shards, None, pipeline.Batching(1, training=False), image_size=(40, 48))
    assert data.options().experimental_distribute.auto_shard_policy == file_policy
    train = pipeline.make_dataset(steel_shards, list(steel_dir[1].index), None, pipeline.Batching(2, training=True),
                                  transforms=tf_augment.train_augment(crop_size=(32, 64)))
    assert train.options().experimental_distribute.auto_shard_policy == file_policy
    everything = _batches(data)[0][:, 0, 0, 0]
    manifest = records.read_manifest(shards)
    first = np.cumsum([0] + [s["count"] for s in manifest["shards"]])
    for worker in range(2):  # the FILE rewrite of a 2-worker strategy: shards 0 and 2, then shard 1
        images = [x.numpy()[0, 0, 0, 0] for x, _ in distribute._AutoShardDataset(data, 2, worker)]
        expected = [v for k in range(worker, len(manifest["shards"]), 2) for v in everything[first[k]:first[k + 1]]]
        assert images == expected
    for worker in range(2):  # training too (shuffled shards, random bases drawn inside): 2 of the 4 shards each
        assert len([x for x, _ in distribute._AutoShardDataset(train, 2, worker)]) == 2


def test_evaluation_order_is_the_stored_order(steel_dir, steel_shards):
    _, wide = steel_dir
    ids = list(wide.index)
    reversed_ids = ids[::-1]
    with pytest.raises(ValueError, match="stored order.*in_shard_order"):
        pipeline.make_dataset(steel_shards, reversed_ids, None, pipeline.Batching(2, training=False))
    assert records.in_shard_order(steel_shards, reversed_ids) == ids
    pipeline.make_dataset(steel_shards, reversed_ids, None, pipeline.Batching(2, training=True))  # any order to train


# ----------------------------------------------------------------------------- arguments


@pytest.mark.parametrize("kwargs, message", [
    ({"n_shards": 0}, "n_shards must be an integer >= 1"),
    ({"n_shards": 7}, r"n_shards must be an integer in 1..6"),
    ({"shard_size_mb": 0}, "shard_size_mb must be a finite number > 0"),
    ({"shard_size_mb": 10, "n_shards": 2}, "give shard_size_mb or n_shards, not both"),
    ({"shuffle_seed": -1}, "shuffle_seed must be an integer >= 0"),
    ({"label_names": ["a"]}, "label_names must be 2 distinct names"),
    ({"label_names": ["a", "a"]}, "label_names must be 2 distinct names"),
    ({"labels": LABELS[:5]}, "need N >= 1 paths and"),
    ({"ids": ["x"] * 6}, "ids must be unique"),
    ({"labels": np.full((6, 2), np.inf)}, "finite numbers or NaN"),
])
def test_write_image_shards_checks_arguments(labelled, tmp_path, kwargs, message):
    paths, _ = labelled
    arguments = {"labels": LABELS, "label_names": ["a", "b"], **kwargs}
    with pytest.raises(ValueError, match=message):
        records.write_image_shards(tmp_path / "shards", paths, progress=False, **arguments)
    assert not (tmp_path / "shards").exists()


@pytest.mark.parametrize("kwargs, message", [
    ({"corpus": "imagenet"}, r"corpus must be one of \['severstal-layout', 'chexpert', 'chest-xray', 'severstal'\]"),
    ({"n_shards": 9}, r"n_shards must be an integer in 1..8"),
])
def test_write_shards_checks_arguments(steel_dir, tmp_path, kwargs, message):
    source, _ = steel_dir
    with pytest.raises(ValueError, match=message):
        records.write_shards(source, tmp_path / "shards", progress=False, **kwargs)


@pytest.mark.parametrize("kwargs, message", [
    ({"augment_engine": "albumentations"}, "TensorFlow ops only"),
    ({"augment_engine": "numpy"}, r"augment_engine must be one of \['auto', 'tf', 'albumentations'\]"),
    ({"transforms": augment.train_transforms(crop_size=None)}, "TensorFlow ops only"),
    ({"labels": LABELS}, "labels come from the shards"),
    ({"skip_bad": True}, "skip_bad=True is for the files layout"),
    ({"transforms": tf_augment.train_augment(crop_size=(16, 16))}, "transforms must keep image_size"),
])
def test_image_dataset_of_shards_checks_arguments(labelled, kwargs, message):
    _, shards = labelled
    arguments = {"labels": None, "image_size": (40, 48), **kwargs}
    with pytest.raises(ValueError, match=message):
        pipeline.make_image_dataset(shards, batching=pipeline.Batching(2, training=False), **arguments)


def test_image_dataset_refuses_a_folder_that_is_not_shards(tmp_path):
    with pytest.raises(ValueError, match="not a shard folder"):
        pipeline.make_image_dataset(tmp_path, None, pipeline.Batching(2, training=False))


@pytest.mark.parametrize("kwargs, message", [
    ({"augment_engine": "albumentations"}, "augment_engine='tf'"),
    ({"cache": True}, "cache=True is for the files layout"),
    ({"skip_bad": True}, "skip_bad=True is for the files layout"),
    ({"image_ids": ["nope.jpg"]}, "1 image_ids are not in the shards"),
    ({"repeat_ids": True}, "image_ids repeat an image"),
    ({"wide": "wrong classes"}, "wide does not describe the shards"),
])
def test_dataset_of_shards_checks_arguments(steel_dir, steel_shards, kwargs, message):
    _, wide = steel_dir
    ids = list(wide.index)
    arguments = {"image_ids": ids + ids[:1] if kwargs.pop("repeat_ids", False) else ids, "wide": None, **kwargs}
    if arguments["wide"] == "wrong classes":
        arguments["wide"] = wide.drop(columns=[4])
    with pytest.raises(ValueError, match=message):
        pipeline.make_dataset(steel_shards, batching=pipeline.Batching(2, training=True), **arguments)


def test_each_pipeline_refuses_the_other_kind(labelled, steel_dir, steel_shards):
    _, shards = labelled
    with pytest.raises(ValueError, match="holds segmentation shards: read them with pipeline.make_dataset"):
        pipeline.make_image_dataset(steel_shards, None, pipeline.Batching(2, training=False))
    with pytest.raises(ValueError, match="holds classification shards: read them with pipeline.make_image_dataset"):
        pipeline.make_dataset(shards, ["img_0.png"], None, pipeline.Batching(1, training=False))


# ----------------------------------------------------------------------------- command line


def test_command_line_writes_shards(steel_dir, tmp_path, capsys):
    source, _ = steel_dir
    assert records.main([str(source), str(tmp_path / "shards"), "--n-shards", "2"]) == 0
    assert "8 images in 2 shard(s)" in capsys.readouterr().out
    assert records.verify(tmp_path / "shards")["n_records"] == N_STEEL
    assert records.main([str(source), str(tmp_path / "shards")]) == 2  # exists: refused without --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert records.main([str(source), str(tmp_path / "shards"), "--overwrite", "--shard-size-mb", "100"]) == 0
    assert len(records.read_manifest(tmp_path / "shards")["shards"]) == 1
    with pytest.raises(SystemExit):
        records.main([str(source), str(tmp_path / "other"), "--n-shards", "2", "--shard-size-mb", "1"])
