"""Corpora as sharded TFRecord files: writing, checking and reading them.

A *shard folder* holds

- ``shard-00000-of-00004.tfrecord`` ...: TFRecord files of ``tf.train.Example`` records, one per
  image, in the written order (shard 0 first);
- ``manifest.json``, written last (see below);
- the corpus' tables: for ``kind="segmentation"`` ``train.csv`` (Kaggle's long layout),
  ``classes.csv`` and ``splits.csv`` when the source has one; for ``kind="classification"``
  ``labels.csv`` (``id, path, group`` and one column per label, blank = NaN = ignored).
  :func:`read_table` reads them back without opening a shard.

Each record has ``id`` (Severstal ``ImageId``, or the image path relative to the source),
``path`` (the source file, for the record), ``group`` (``splits.csv``'s group, the patient, ...),
``image`` (the file's encoded bytes: JPEG and PNG files are copied byte for byte, never
re-encoded; any other format -- BMP, TIFF, ... -- is stored as a lossless 8-bit grey PNG of
:func:`helpers.core.files.read_grey`'s pixels), ``encoding`` (``jpeg`` / ``png``), ``height``,
``width`` and its targets: ``rle`` (segmentation: one Kaggle RLE string per class, in the order of
the manifest's ``class_ids``; ``""`` = no defect -- masks stay RLE, as in ``train.csv``) or
``labels`` (classification: ``K`` float32 values, NaN = ignored).

The manifest (``format``, ``format_version``, ``kind``, ``n_records``, ``label_names`` /
``class_ids``, ``image_sizes`` and ``encodings`` counts, ``order``, ``source``, the sha256 of each
table, and per shard its ``file``, ``count``, ``bytes``, ``sha256``, ``ids`` and ``sizes``
``[[H, W], ...]``) is what makes a folder a shard folder (:func:`is_shard_folder`).

Writing (:func:`write_shards`, :func:`write_segmentation_shards`, :func:`write_image_shards`, and
``python -m helpers.data.records SRC DST``) first checks every image (fully decoded, its size
against the table's; a bad one stops the run naming the file), then writes the shards into a
hidden staging folder beside the destination, the manifest last, and renames that folder into
place (:func:`helpers.core.files.replacing_folder`): an error or Ctrl-C leaves no manifest and no
shard behind (and an existing shard folder untouched); a build left by a killed process is
deleted by the next write. Shards are cut by size (``shard_size_mb``, about that many MB each,
default 100) or by count (``n_shards``), in the given order or, with ``shuffle_seed``, in a seeded
random order (recommended for training corpora sorted by patient or class: the pipeline only
shuffles shard order and a buffer).

Reading: :func:`verify` compares every shard's size and sha256 with the manifest (``ValueError``
naming the damaged file); :func:`read_records` iterates the records in Python (``verify=True``
checks first; a damaged record raises ``ValueError`` naming the shard and record number);
:func:`record_stream` is the ``tf.data`` source of :mod:`helpers.data.pipeline`, which accepts a
shard folder wherever it takes a dataset folder or image files. TensorFlow's own error for a
damaged record (``DataLossError: corrupted record at 123``) does not name the file: run
:func:`verify` to find it.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from helpers.core import checks, files, rle, severstal
from helpers.data import radiographs
from helpers.backend import tf

__all__ = [
    "CORPORA",
    "DEFAULT_SHARD_SIZE_MB",
    "FORMAT",
    "FORMAT_VERSION",
    "KINDS",
    "MANIFEST",
    "in_shard_order",
    "is_shard_folder",
    "main",
    "parse_record",
    "read_manifest",
    "read_records",
    "read_table",
    "record_stream",
    "rle_runs",
    "verify",
    "write_image_shards",
    "write_segmentation_shards",
    "write_shards",
]

FORMAT = "defect-records"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
KINDS = ("segmentation", "classification")
CORPORA = ("severstal-layout", *radiographs.PRETRAINING_CORPORA)  # write_shards' sources
DEFAULT_SHARD_SIZE_MB = 100.0
LABELS_TABLE = "labels.csv"
_SEGMENTATION_TABLES = ("train.csv", "classes.csv", "splits.csv")
_RECORD_OVERHEAD = 256  # bytes of a record besides its image and text fields (estimate, for cutting shards)
_READ_BUFFER = 4 << 20  # TFRecordDataset read buffer (bytes)
_CYCLE = 8  # shards read at once while training


# ----------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class _Item:
    """One image to write: where it comes from and what goes with it."""

    id: str
    path: str
    group: str
    rle: tuple[str, ...] = ()
    labels: tuple[float, ...] = ()
    shape: tuple[int, int] | None = None  # (H, W) the table expects


def _encoding(data: bytes) -> str | None:
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    return None


def _stored_bytes(path: str) -> tuple[bytes, str, bool]:
    """``(bytes, encoding, re-encoded)``: a JPEG/PNG file's own bytes, or a lossless grey PNG of any other image."""
    data = Path(path).read_bytes()
    encoding = _encoding(data)
    if encoding is not None:
        return data, encoding, False
    grey = files.decode_grey(data, name=path)
    ok, png = cv2.imencode(".png", grey)
    if not ok:  # pragma: no cover - OpenCV writes any uint8 (H, W) array
        raise ValueError(f"could not encode {path} as PNG")
    return png.tobytes(), "png", True


def _inspect(item: _Item, check: bool) -> tuple[int, tuple[int, int], str, bool, str | None]:
    """``(stored bytes, (H, W), encoding, re-encoded, problem or None)`` of one image."""
    try:
        data, encoding, reencoded = _stored_bytes(item.path)
        if check:
            shape = files.decode_grey(data, name=item.path).shape
        else:
            height, width, _, _ = files.image_header(item.path)
            shape = (height, width)
    except (ValueError, OSError) as err:
        return 0, (0, 0), "", False, str(err)
    if item.shape is not None and tuple(shape) != item.shape:
        return 0, (0, 0), "", False, (f"{item.path} is {shape[0]}x{shape[1]} (HxW) but the table says "
                                      f"{item.shape[0]}x{item.shape[1]}")
    return len(data), (int(shape[0]), int(shape[1])), encoding, reencoded, None


def _bytes_feature(values: Sequence[bytes]) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))


def _int_feature(values: Sequence[int]) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))


def _example(kind: str, item: _Item, data: bytes, encoding: str, shape: tuple[int, int]) -> bytes:
    feature = {
        "id": _bytes_feature([item.id.encode()]),
        "path": _bytes_feature([item.path.encode()]),
        "group": _bytes_feature([item.group.encode()]),
        "image": _bytes_feature([data]),
        "encoding": _bytes_feature([encoding.encode()]),
        "height": _int_feature([shape[0]]),
        "width": _int_feature([shape[1]]),
    }
    if kind == "segmentation":
        feature["rle"] = _bytes_feature([text.encode() for text in item.rle])
    else:
        feature["labels"] = tf.train.Feature(float_list=tf.train.FloatList(value=list(item.labels)))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()



def _shard_target(shard_size_mb: float | None, n_shards: int | None) -> tuple[float | None, int | None]:
    if shard_size_mb is not None and n_shards is not None:
        raise ValueError(f"give shard_size_mb or n_shards, not both (got {shard_size_mb!r} and {n_shards!r})")
    if n_shards is not None:
        return None, checks.positive_int("n_shards", n_shards)
    size = DEFAULT_SHARD_SIZE_MB if shard_size_mb is None else checks.number("shard_size_mb", shard_size_mb, low=0, low_open=True)
    return size, None


def _cut(sizes: Sequence[int], shard_size_mb: float | None, n_shards: int | None) -> list[tuple[int, int]]:
    """Contiguous ``[start, stop)`` record ranges: ``n_shards`` of near-equal counts, or about ``shard_size_mb`` each."""
    n = len(sizes)
    if n_shards is not None:
        if n_shards > n:
            raise ValueError(f"n_shards must be an integer in 1..{n} (the number of images), got {n_shards}")
        bounds = np.arange(n_shards + 1) * n // n_shards
        return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
    limit = shard_size_mb * 1e6
    ranges, start, total = [], 0, 0
    for i, size in enumerate(sizes):
        if i > start and total + size > limit:
            ranges.append((start, i))
            start, total = i, 0
        total += size
    ranges.append((start, n))
    return ranges


def _refuse_to_replace(destination: Path, source: Path | None, overwrite: bool) -> None:
    """Refuse a destination that exists (without ``overwrite``), is not shards, or holds the source."""
    destination = Path(os.path.abspath(destination))
    if source is not None:
        source = Path(os.path.abspath(source))
        if source == destination or destination in source.parents:
            raise ValueError(f"the destination {destination} would replace the source {source}; write the shards elsewhere")
    if not destination.exists():
        return
    if not overwrite:
        raise FileExistsError(f"{destination} already exists; pass overwrite=True (--overwrite) to replace it")
    if not destination.is_dir():
        raise NotADirectoryError(f"{destination} is a file, not a folder")
    entries = list(destination.iterdir())
    shards_only = is_shard_folder(destination) or all(is_shard_folder(e) for e in entries)
    if entries and not shards_only:
        raise ValueError(f"{destination} is not a shard folder (no {MANIFEST}); refusing to replace it: "
                         "choose an empty or new folder")


def _check_all(items: Sequence[_Item], check: bool, progress: bool, num_workers: int | None) -> list[tuple]:
    workers = (os.cpu_count() or 1) if num_workers is None else checks.positive_int("num_workers", num_workers)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        found = list(tqdm(pool.map(lambda item: _inspect(item, check), items), total=len(items), disable=not progress,
                          desc="check images", unit="img"))
    problems = [f"  {item.id} ({item.path}): {result[-1]}" for item, result in zip(items, found) if result[-1] is not None]
    if problems:
        shown = problems[:20] + ([f"  ... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise ValueError(f"{len(problems)} bad image(s); nothing was written; fix them or leave them out:\n" + "\n".join(shown))
    return found


def _write_folder(
    folder: Path, kind: str, items: Sequence[_Item], header: dict, shard_size_mb: float | None, n_shards: int | None,
    check: bool, progress: bool, num_workers: int | None,
) -> dict:
    """Check ``items``, write their shards into the existing empty ``folder``, then its manifest; return the manifest."""
    found = _check_all(items, check, progress, num_workers)
    sizes = [size + len(item.id) + len(item.path) + len(item.group) + sum(map(len, item.rle)) + 4 * len(item.labels)
             + _RECORD_OVERHEAD for item, (size, *_rest) in zip(items, found)]
    ranges = _cut(sizes, shard_size_mb, n_shards)
    shards = []
    bar = tqdm(total=len(items), disable=not progress, desc="write shards", unit="img")
    for number, (start, stop) in enumerate(ranges):
        name = f"shard-{number:05d}-of-{len(ranges):05d}.tfrecord"
        with tf.io.TFRecordWriter(str(folder / name)) as writer:
            for item, (_, shape, _, _, _) in zip(items[start:stop], found[start:stop]):
                data, encoding, _ = _stored_bytes(item.path)
                writer.write(_example(kind, item, data, encoding, shape))
                bar.update(1)
        shards.append({"file": name, "count": stop - start, "bytes": (folder / name).stat().st_size,
                       "sha256": files.content_hash(folder / name, "sha256"), "ids": [item.id for item in items[start:stop]],
                       "sizes": [list(result[1]) for result in found[start:stop]]})
    bar.close()
    image_sizes = pd.Series([f"{h}x{w}" for _, (h, w), *_ in found]).value_counts().sort_index()
    encodings = pd.Series([result[2] for result in found]).value_counts().sort_index()
    tables = {p.name: files.content_hash(p, "sha256") for p in sorted(folder.iterdir()) if p.suffix == ".csv"}
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind, **header, "n_records": len(items),
        "image_sizes": {k: int(v) for k, v in image_sizes.items()},
        "encodings": {k: int(v) for k, v in encodings.items()},
        "reencoded_to_png": int(sum(result[3] for result in found)),
        "shard_target": {"shard_size_mb": shard_size_mb} if n_shards is None else {"n_shards": n_shards},
        "tables": tables, "shards": shards,
    }
    files.atomic_write_json(folder / MANIFEST, manifest)  # last: only a complete folder has one
    return manifest


def _order(n: int, shuffle_seed: int | None) -> tuple[np.ndarray, object]:
    if shuffle_seed is None:
        return np.arange(n), "given"
    seed = checks.seed("shuffle_seed", shuffle_seed)
    return np.random.default_rng([seed, 0x5EED]).permutation(n), {"shuffled_seed": seed}


def _unique_ids(ids: Sequence[str]) -> None:
    repeated = pd.Index(ids)[pd.Index(ids).duplicated()]
    if len(repeated):
        raise ValueError(f"ids must be unique, {repeated[0]!r} appears more than once ({len(repeated)} repeat(s))")


def _segmentation_into(folder: Path, dataset_dir: Path, image_ids: Sequence[str] | None, shard_size_mb: float | None,
                       n_shards: int | None, shuffle_seed: int | None, check: bool, progress: bool,
                       num_workers: int | None) -> dict:
    if image_ids is not None and (isinstance(image_ids, str) or len(image_ids) == 0):
        raise ValueError(f"image_ids must be a non-empty sequence of ImageIds (or None for all), got {image_ids!r}")
    wide = severstal.read_dataset(dataset_dir)  # validates every RLE against the image sizes
    names = severstal.read_classes(dataset_dir)
    ids = list(wide.index) if image_ids is None else [str(i) for i in image_ids]
    _unique_ids(ids)
    unknown = [i for i in ids if i not in wide.index]
    if unknown:
        raise ValueError(f"{len(unknown)} image_ids are not in {dataset_dir / 'train.csv'} or train_images/, e.g. {unknown[:3]}")
    classes = severstal.class_columns(wide)
    splits = None
    if (dataset_dir / "splits.csv").is_file():
        splits = severstal.read_splits(dataset_dir).reindex(ids).fillna("")
    groups = (splits["group"].fillna("").astype(str) if splits is not None else pd.Series(ids, index=ids)).to_dict()
    order, order_note = _order(len(ids), shuffle_seed)
    images_dir = Path(os.path.abspath(dataset_dir)) / "train_images"
    items = [_Item(id=i, path=str(images_dir / i), group=groups[i] or i,
                   rle=tuple(str(wide.at[i, c]) for c in classes), shape=(int(wide.at[i, "Height"]), int(wide.at[i, "Width"])))
             for i in (ids[k] for k in order)]
    severstal.write_train_csv(wide.loc[sorted(ids)], folder / "train.csv")
    severstal.write_classes(folder, {c: names.get(c, f"class {c}") for c in classes})
    if splits is not None:
        severstal.write_splits(folder, splits.rename_axis("ImageId"))
    header = {"class_ids": classes, "label_names": [names.get(c, f"class {c}") for c in classes], "order": order_note,
              "source": {"layout": "severstal-layout", "path": str(Path(os.path.abspath(dataset_dir)))}}
    return _write_folder(folder, "segmentation", items, header, shard_size_mb, n_shards, check, progress, num_workers)


def write_segmentation_shards(
    dataset_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    image_ids: Sequence[str] | None = None,
    shard_size_mb: float | None = None,
    n_shards: int | None = None,
    shuffle_seed: int | None = None,
    check: bool = True,
    overwrite: bool = False,
    progress: bool = True,
    num_workers: int | None = None,
) -> Path:
    """Write a Severstal-layout dataset (``train.csv`` + ``train_images/``) as a segmentation shard folder; return it.

    ``image_ids``: the images to write (default all, in ``ImageId`` order; order kept). Masks go
    in as the table's RLE strings, one per class (read and validated by
    :func:`helpers.core.severstal.read_dataset`); ``group`` comes from ``splits.csv`` (else the
    ImageId). ``check``: decode every image fully before writing (else headers only). See the
    module doc for sizes, order and atomicity; ``out_dir`` must be new, empty, or (with
    ``overwrite``) a shard folder.
    """
    target = _shard_target(shard_size_mb, n_shards)
    dataset_dir = Path(dataset_dir)
    _refuse_to_replace(Path(out_dir), dataset_dir, overwrite)
    with files.replacing_folder(out_dir) as staging:
        _segmentation_into(staging, dataset_dir, image_ids, *target, shuffle_seed, check, progress, num_workers)
    return Path(out_dir)


def _image_items(paths: Sequence, labels: np.ndarray, groups: Sequence | None, ids: Sequence | None) -> list[_Item]:
    paths = [os.path.abspath(p) for p in paths]
    labels = np.asarray(labels, dtype=np.float32)
    if labels.ndim == 1:
        labels = labels[:, None]
    if labels.ndim != 2 or len(labels) != len(paths) or not paths:
        raise ValueError(f"need N >= 1 paths and (N, K) labels, got {len(paths)} paths and labels of shape {labels.shape}")
    if np.isinf(labels).any():
        raise ValueError("labels must be finite numbers or NaN (ignored); found inf")
    if ids is None:
        root = os.path.commonpath([os.path.dirname(p) for p in paths])
        ids = [os.path.relpath(p, root) for p in paths]
    ids = [str(i) for i in ids]
    groups = ids if groups is None else ["" if pd.isna(g) else str(g) for g in groups]
    if len(ids) != len(paths) or len(groups) != len(paths):
        raise ValueError(f"need one id and one group per path: {len(paths)} paths, {len(ids)} ids, {len(groups)} groups")
    _unique_ids(ids)
    return [_Item(id=i, path=p, group=g, labels=tuple(float(v) for v in row)) for i, p, g, row in zip(ids, paths, groups, labels)]


def _image_into(folder: Path, items: list[_Item], label_names: Sequence[str], source: dict, shard_size_mb: float | None,
                n_shards: int | None, shuffle_seed: int | None, check: bool, progress: bool, num_workers: int | None) -> dict:
    names = [str(n) for n in label_names]
    if len(names) != len(items[0].labels) or len(set(names)) != len(names):
        raise ValueError(f"label_names must be {len(items[0].labels)} distinct names (one per label column), got {names}")
    order, order_note = _order(len(items), shuffle_seed)
    items = [items[k] for k in order]
    table = pd.DataFrame({"id": [i.id for i in items], "path": [i.path for i in items], "group": [i.group for i in items]})
    values = pd.DataFrame(np.array([i.labels for i in items], np.float32).reshape(len(items), len(names)), columns=names)
    buffer = io.StringIO()
    pd.concat([table, values], axis=1).to_csv(buffer, index=False, lineterminator="\n")
    files.atomic_write_text(folder / LABELS_TABLE, buffer.getvalue())
    header = {"label_names": names, "order": order_note, "source": source}
    return _write_folder(folder, "classification", items, header, shard_size_mb, n_shards, check, progress, num_workers)


def write_image_shards(
    out_dir: str | os.PathLike,
    paths: Sequence[str | os.PathLike],
    labels: np.ndarray,
    label_names: Sequence[str],
    groups: Sequence[str] | None = None,
    ids: Sequence[str] | None = None,
    source: str | None = None,
    shard_size_mb: float | None = None,
    n_shards: int | None = None,
    shuffle_seed: int | None = None,
    check: bool = True,
    overwrite: bool = False,
    progress: bool = True,
    num_workers: int | None = None,
) -> Path:
    """Write labelled images (a radiograph corpus, patches, ...) as a classification shard folder; return it.

    ``paths``: image files (any size, as :func:`helpers.data.pipeline.make_image_dataset` takes
    them); ``labels``: ``(N, K)`` float targets, NaN = ignored; ``label_names``: the ``K``
    column names; ``groups``: per image (patient, case; default the id); ``ids``: unique per image
    (default each path relative to the images' common folder); ``source``: a note for the
    manifest (e.g. the corpus folder). Other arguments as :func:`write_segmentation_shards`.
    """
    target = _shard_target(shard_size_mb, n_shards)
    items = _image_items(paths, labels, groups, ids)
    _refuse_to_replace(Path(out_dir), None, overwrite)
    with files.replacing_folder(out_dir) as staging:
        _image_into(staging, items, label_names, {"layout": "paths", "path": "" if source is None else str(source)},
                    *target, shuffle_seed, check, progress, num_workers)
    return Path(out_dir)


def write_shards(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    corpus: str = "severstal-layout",
    shard_size_mb: float | None = None,
    n_shards: int | None = None,
    shuffle_seed: int | None = None,
    policy: str = "ones",
    frontal_only: bool = True,
    val_fraction: float = 0.1,
    seed: int = 0,
    per_class: bool = False,
    check: bool = True,
    overwrite: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Write the corpus in folder ``src`` as shards under ``dst``; return the shard folders written.

    ``corpus``: one of :data:`CORPORA`. ``"severstal-layout"``: ``src`` is a dataset folder
    (``train.csv`` + ``train_images/``), written whole as one segmentation shard folder ``dst``
    (:func:`write_segmentation_shards`). A pre-training corpus (``chexpert``, ``chest-xray``,
    ``severstal``: :func:`helpers.data.radiographs.pretraining_corpus` with ``policy``,
    ``frontal_only``, ``val_fraction``, ``seed``, ``per_class``) gives two classification shard
    folders ``dst/train`` and ``dst/val`` (ids: paths relative to ``src``), written together:
    both or neither. ``shard_size_mb`` / ``n_shards`` apply to each folder.
    """
    checks.choice("corpus", corpus, CORPORA)
    target = _shard_target(shard_size_mb, n_shards)
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"source folder not found: {src}")
    if corpus == "severstal-layout":
        return [write_segmentation_shards(src, dst, shard_size_mb=shard_size_mb, n_shards=n_shards, shuffle_seed=shuffle_seed,
                                          check=check, overwrite=overwrite, progress=progress)]
    train, val, label_columns = radiographs.pretraining_corpus(corpus, src, policy=policy, frontal_only=frontal_only,
                                                               val_fraction=val_fraction, seed=seed, per_class=per_class)
    _refuse_to_replace(Path(dst), src, overwrite)
    parts = {}
    for split, table in (("train", train), ("val", val)):
        if len(table) == 0:
            raise ValueError(f"the {split} part of {src} is empty; change val_fraction or the corpus")
        ids = [os.path.relpath(os.path.abspath(p), os.path.abspath(src)) for p in table["path"]]
        parts[split] = _image_items(table["path"], table[label_columns].to_numpy(np.float32), table["group"].astype(str), ids)
    with files.replacing_folder(dst) as staging:
        for split, items in parts.items():
            (staging / split).mkdir()
            note = {"layout": corpus, "path": str(Path(os.path.abspath(src))), "split": split, "policy": policy,
                    "frontal_only": bool(frontal_only), "val_fraction": float(val_fraction), "seed": int(seed)}
            _image_into(staging / split, items, label_columns, note, *target, shuffle_seed, check, progress, None)
    return [Path(dst) / "train", Path(dst) / "val"]


# ----------------------------------------------------------------------------- the manifest and checks


def is_shard_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder holding a shard manifest (``manifest.json``)."""
    path = Path(path)
    return path.is_dir() and (path / MANIFEST).is_file()


def _plain_name(name: object) -> bool:
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name


def read_manifest(folder: str | os.PathLike) -> dict:
    """The manifest of a shard folder, checked for consistency (not the shards' bytes: see :func:`verify`).

    ``ValueError`` naming the folder for a missing or unreadable manifest, another format, a newer
    format version, an unknown kind, counts that do not add up or repeated ids;
    ``FileNotFoundError`` naming a listed shard that is missing.
    """
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise ValueError(f"{folder} is not a shard folder: no {MANIFEST} (write one with records.write_shards, "
                         "python -m helpers.data.records SRC DST)")
    manifest = files.read_json(path)
    where = f"{path}:"
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{where} not a {FORMAT} manifest")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"{where} format_version must be an integer >= 1, got {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(f"{where} format_version {version} is newer than this code reads ({FORMAT_VERSION}); update the code")
    checks.choice(f"{where} kind", manifest.get("kind"), KINDS)
    shards = manifest.get("shards")
    if not isinstance(shards, list) or not shards:
        raise ValueError(f"{where} lists no shards")
    for shard in shards:
        if not _plain_name(shard.get("file")) or len(shard.get("ids", ())) != shard.get("count") or \
                len(shard.get("sizes", ())) != shard.get("count"):
            raise ValueError(f"{where} shard entry {shard.get('file')!r} is inconsistent (file name, count, ids, sizes)")
        if not (folder / shard["file"]).is_file():
            raise FileNotFoundError(f"shard {folder / shard['file']} listed in {path} is missing")
    ids = [i for shard in shards for i in shard["ids"]]
    if len(ids) != manifest.get("n_records"):
        raise ValueError(f"{where} shards hold {len(ids)} records, n_records says {manifest.get('n_records')}")
    if len(set(ids)) != len(ids):
        raise ValueError(f"{where} an id appears in more than one record")
    n_values = len(manifest.get("class_ids" if manifest["kind"] == "segmentation" else "label_names", []))
    if n_values < 1:
        raise ValueError(f"{where} names no {'classes' if manifest['kind'] == 'segmentation' else 'labels'}")
    return manifest


def verify(folder: str | os.PathLike) -> dict:
    """Check every shard's size and sha256 (and the tables') against the manifest; return the manifest.

    ``ValueError`` naming each damaged, truncated or replaced file.
    """
    return _verified(Path(folder))


def _verified(folder: Path) -> dict:
    manifest = read_manifest(folder)
    problems = []
    for shard in manifest["shards"]:
        path = folder / shard["file"]
        size = path.stat().st_size
        if size != shard["bytes"]:
            problems.append(f"shard {path}: {size} bytes, the manifest says {shard['bytes']} (truncated or replaced)")
        elif files.content_hash(path, "sha256") != shard["sha256"]:
            problems.append(f"shard {path}: sha256 differs from the manifest's (damaged or replaced)")
    for name, digest in manifest.get("tables", {}).items():
        path = folder / name
        if not path.is_file() or files.content_hash(path, "sha256") != digest:
            problems.append(f"table {path}: missing or its sha256 differs from the manifest's")
    if problems:
        raise ValueError(f"{len(problems)} damaged file(s) in shard folder {folder}; write the shards again:\n  "
                         + "\n  ".join(problems))
    return manifest


def _decode_example(serialized: bytes, kind: str) -> dict:
    features = tf.train.Example.FromString(serialized).features.feature
    text = {name: features[name].bytes_list.value[0].decode() for name in ("id", "path", "group", "encoding")}
    record = {**text, "image": features["image"].bytes_list.value[0],
              "height": int(features["height"].int64_list.value[0]), "width": int(features["width"].int64_list.value[0])}
    if kind == "segmentation":
        record["rle"] = [value.decode() for value in features["rle"].bytes_list.value]
    else:
        record["labels"] = np.asarray(features["labels"].float_list.value, np.float32)
    return record


def read_records(folder: str | os.PathLike, verify: bool = False) -> Iterator[dict]:
    """Every record of a shard folder, in the written order, as a dict.

    Keys: ``id``, ``path``, ``group``, ``encoding``, ``image`` (the stored bytes), ``height``,
    ``width``, and ``rle`` (list of C strings) or ``labels`` (float32 ``(K,)``, NaN = ignored).
    ``verify``: check the checksums first (:func:`verify`). A damaged record, or a shard holding
    another number of records than the manifest says, raises ``ValueError`` naming the shard.
    """
    folder = Path(folder)
    manifest = _verified(folder) if verify else read_manifest(folder)
    for shard in manifest["shards"]:
        path = folder / shard["file"]
        count = 0
        try:
            for serialized in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
                try:
                    yield _decode_example(serialized, manifest["kind"])
                except Exception as err:  # protobuf DecodeError, missing feature
                    raise ValueError(f"shard {path} record {count}: not a readable record ({err}); "
                                     "run records.verify on the folder") from None
                count += 1
        except tf.errors.DataLossError as err:
            raise ValueError(f"shard {path} is damaged after record {count}: {err.message.split(' [Op')[0]}; "
                             "run records.verify on the folder") from None
        if count != shard["count"]:
            raise ValueError(f"shard {path} holds {count} records, the manifest says {shard['count']}")


def read_table(folder: str | os.PathLike) -> pd.DataFrame:
    """The table of a shard folder, without opening a shard.

    Segmentation: the wide table (index ``ImageId``, one RLE column per class id, ``Height``,
    ``Width``), as :func:`helpers.core.severstal.read_dataset` gives it for the source's images,
    sorted by ImageId. Classification: ``id, path, group`` and the label columns in the
    written order (the order of :func:`helpers.data.pipeline.make_image_dataset`'s evaluation batches).
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest["kind"] == "classification":
        table = files.read_csv(folder / LABELS_TABLE, dtype={"id": str, "path": str, "group": str}, keep_default_na=False,
                               na_values={name: [""] for name in manifest["label_names"]})
        names = manifest["label_names"]
        table[names] = table[names].astype(np.float32)
        return table
    classes = manifest["class_ids"]
    wide = severstal.read_train_csv(folder / "train.csv", n_classes=max(classes), validate=False)[classes]
    ids = [i for shard in manifest["shards"] for i in shard["ids"]]
    sizes = np.array([s for shard in manifest["shards"] for s in shard["sizes"]], np.int64).reshape(-1, 2)
    wide = wide.reindex(ids, fill_value="")
    wide["Height"], wide["Width"] = sizes[:, 0], sizes[:, 1]
    wide = wide.sort_index()
    wide.index.name = "ImageId"
    return wide


def in_shard_order(folder: str | os.PathLike, ids: Sequence[str]) -> list[str]:
    """``ids`` sorted as they are stored (the order evaluation batches come in); unknown ids raise ``ValueError``."""
    manifest = read_manifest(folder)
    position = {i: k for k, i in enumerate(i for shard in manifest["shards"] for i in shard["ids"])}
    unknown = [i for i in ids if i not in position]
    if unknown:
        raise ValueError(f"{len(unknown)} ids are not in the shards of {folder}, e.g. {unknown[:3]}")
    return sorted(ids, key=position.__getitem__)


# ----------------------------------------------------------------------------- tf.data reading


def parse_record(serialized: tf.Tensor, kind: str, n_values: int) -> dict[str, tf.Tensor]:
    """Graph parse of one serialized record: ``id, path, group, image, encoding`` (strings), ``height, width`` (int64), and
    ``rle`` (string ``(n_values,)``) or ``labels`` (float32 ``(n_values,)``)."""
    checks.choice("kind", kind, KINDS)
    spec = {name: tf.io.FixedLenFeature([], tf.string) for name in ("id", "path", "group", "image", "encoding")}
    spec.update({name: tf.io.FixedLenFeature([], tf.int64) for name in ("height", "width")})
    if kind == "segmentation":
        spec["rle"] = tf.io.FixedLenFeature([n_values], tf.string)
    else:
        spec["labels"] = tf.io.FixedLenFeature([n_values], tf.float32)
    return tf.io.parse_single_example(serialized, spec)


def rle_runs(texts: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Graph parse of ``C`` RLE strings: int64 0-based ``begins``, ``ends`` (one past) and class positions of every run.

    Runs come class by class, in each string's order (as :func:`helpers.core.rle.parse` reads them;
    the strings were validated when the shards were written).
    """
    tokens = tf.strings.split(texts)
    values = tf.strings.to_number(tokens.flat_values, tf.int64)
    pairs = tf.reshape(values, [-1, 2])
    classes = tf.gather(tokens.value_rowids(), tf.range(0, tf.size(values, out_type=tf.int64), 2))
    begins = pairs[:, 0] - 1
    return begins, begins + pairs[:, 1], classes


def record_stream(
    folder: str | os.PathLike,
    manifest: dict,
    ids: Sequence[str] | None = None,
    training: bool = False,
    seed: int = 0,
    cycle_length: int = _CYCLE,
) -> tf.data.Dataset:
    """``(record, draw)`` elements of a shard folder: the parsed record (:func:`parse_record`, plus ``where``, the shard
    file and id for error messages) and an int64 draw that seeds its augmentation.

    ``ids``: only these records (default all), read from the shards that hold them. Evaluation
    (``training=False``): the written order, shard after shard; draws are the record's position
    in its shard. Training: the shard order is shuffled (seeded, reshuffled every iteration), up to
    ``cycle_length`` shards are read in parallel by ``interleave`` (deterministic), each shard
    draws a fresh random base (seeded, new every iteration) and its records base + position; the
    caller shuffles records with a buffer. The dataset starts from the list of shard files, so
    ``AutoShardPolicy.FILE`` can give each worker its own shards (no random source outside the
    ``interleave``, which the FILE rewrite would refuse).
    """
    folder = Path(folder)
    kind = manifest["kind"]
    n_values = len(manifest["class_ids"] if kind == "segmentation" else manifest["label_names"])
    wanted = None if ids is None else set(ids)
    names = [str(folder / s["file"]) for s in manifest["shards"] if wanted is None or not wanted.isdisjoint(s["ids"])]
    shards = tf.data.Dataset.from_tensor_slices(names)
    if training:
        bases = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        shards = shards.shuffle(len(names), seed=seed, reshuffle_each_iteration=True)
        shards = shards.flat_map(lambda name: tf.data.Dataset.zip((tf.data.Dataset.from_tensors(name), bases.take(1))))
    else:
        shards = shards.map(lambda name: (name, tf.constant(0, tf.int64)))

    def read(name: tf.Tensor, base: tf.Tensor) -> tf.data.Dataset:
        positions = tf.data.Dataset.range(np.iinfo(np.int64).max)
        return tf.data.Dataset.zip((tf.data.TFRecordDataset(name, buffer_size=_READ_BUFFER), positions)).map(
            lambda serialized, k: (serialized, name, base + k))

    if training:
        stream = shards.interleave(read, cycle_length=max(1, min(cycle_length, len(names))), block_length=1,
                                   num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:
        stream = shards.interleave(read, cycle_length=1, block_length=1)

    def parse(serialized: tf.Tensor, name: tf.Tensor, draw: tf.Tensor) -> tuple[dict, tf.Tensor]:
        record = parse_record(serialized, kind, n_values)
        record["where"] = tf.strings.join(["shard ", name, " record ", record["id"]])
        return record, draw

    stream = stream.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if wanted is not None and len(wanted) < manifest["n_records"]:
        table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(tf.constant(sorted(wanted)),
                                                                              tf.ones(len(wanted), tf.int64)), 0)
        stream = stream.filter(lambda record, draw: table.lookup(record["id"]) > 0)
    return stream


# ----------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m helpers.data.records SRC DST [--corpus ...] [--shard-size-mb 100 | --n-shards N]``."""
    parser = argparse.ArgumentParser(prog="python -m helpers.data.records",
                                     description="Write a corpus as sharded TFRecord files with a manifest (see helpers/data/records.py).")
    parser.add_argument("src", help="a Severstal-layout dataset folder, or a pre-training corpus folder (--corpus)")
    parser.add_argument("dst", help="the shard folder to write (pre-training corpora: DST/train and DST/val)")
    parser.add_argument("--corpus", default="severstal-layout", choices=CORPORA,
                        help="severstal-layout (segmentation shards, default) or a pre-training corpus of "
                             "radiographs.pretraining_corpus (classification shards)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--shard-size-mb", type=float, default=None, help=f"about this many MB per shard (default {DEFAULT_SHARD_SIZE_MB:g})")
    size.add_argument("--n-shards", type=int, default=None, help="this many shards (per folder)")
    parser.add_argument("--shuffle-seed", type=int, default=None, help="write the records in this seeded random order")
    parser.add_argument("--policy", default="ones", choices=radiographs.LABEL_POLICIES, help="CheXpert uncertain labels")
    parser.add_argument("--all-views", action="store_true", help="keep lateral views (default: frontal only)")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="validation share of groups without an official split")
    parser.add_argument("--seed", type=int, default=0, help="seed of the group split")
    parser.add_argument("--per-class", action="store_true", help="corpus severstal: one label per class")
    parser.add_argument("--no-check", action="store_true", help="read image headers only (default: decode every image)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing shard folder")
    options = parser.parse_args(argv)
    try:
        written = write_shards(options.src, options.dst, corpus=options.corpus, shard_size_mb=options.shard_size_mb,
                               n_shards=options.n_shards, shuffle_seed=options.shuffle_seed, policy=options.policy,
                               frontal_only=not options.all_views, val_fraction=options.val_fraction, seed=options.seed,
                               per_class=options.per_class, check=not options.no_check, overwrite=options.overwrite)
    except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for folder in written:
        manifest = read_manifest(folder)
        total = sum(s["bytes"] for s in manifest["shards"]) / 1e6
        print(f"{folder}: {manifest['n_records']} images in {len(manifest['shards'])} shard(s), {total:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
