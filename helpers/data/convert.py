"""Convert public defect datasets into the Severstal layout (see :mod:`helpers.core.severstal`).

Every converter writes into ``out_dir``

- ``train_images/``: the images (source bytes copied unchanged; crops/tiles as PNG);
- ``train.csv``: ``ImageId,ClassId,EncodedPixels``, one row per defect (defect-free
  images are in ``train_images/`` but not in the CSV);
- ``classes.csv``: ``ClassId,Name`` with ids ``1..C``;
- ``splits.csv``: ``ImageId,split,group`` (images of one group never span two splits);

and returns the wide table that ``severstal.read_dataset(out_dir)`` reads back (index
``ImageId``, int columns ``1..C`` of RLE strings, ``Height``, ``Width``). The dataset is
built in a hidden sibling folder ``.<out_dir name>.building-<pid>`` and swapped for
``out_dir`` only when the whole conversion succeeded, so a failed or killed run leaves the
old dataset (or nothing) and never a mix (see :class:`_Output`); ``overwrite=True`` replaces
the dataset files, other entries of ``out_dir`` are kept. Conversion notes are in the
table's ``attrs``: ``"skipped"`` (``{source file: reason}``, also warned about),
``"empty_masks"`` (ImageIds whose defect-folder mask is empty, warned about),
``"faint_masks"`` (mask files with non-zero values but none above ``threshold``, e.g. 0/1
masks read with threshold 127; warned about) and ``"padded"`` (sources smaller than the tile).
Copied images are decoded in full, so a corrupt or truncated file raises ``ValueError`` naming it.

Generic converters: :func:`convert_index_masks`, :func:`convert_folder_masks`,
:func:`convert_tiled_radiographs`, :func:`convert_box_annotations`; dataset wrappers:
:func:`convert_neu_seg`, :func:`convert_magnetic_tile`, :func:`convert_gdxray_welds`,
:func:`convert_gdxray_castings` (box converters also note ``"clipped_boxes"``).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from helpers.core import checks, files, rle, severstal
from helpers.data import audit, splits

__all__ = [
    "BOX_COLUMNS",
    "GDXRAY_CASTING_CLASSES",
    "GDXRAY_CASTING_GROUPS",
    "GDXRAY_WELD_CLASSES",
    "MAGNETIC_TILE_CLASS_FOLDERS",
    "MAGNETIC_TILE_FREE_FOLDERS",
    "NEU_SEG_CLASSES",
    "NEU_SPLITS",
    "convert_box_annotations",
    "convert_folder_masks",
    "convert_gdxray_castings",
    "convert_gdxray_welds",
    "convert_index_masks",
    "convert_magnetic_tile",
    "convert_neu_seg",
    "convert_tiled_radiographs",
    "leak_free_lists",
    "read_gdxray_boxes",
    "tile_origins",
]

NEU_SEG_CLASSES: dict[int, str] = {1: "inclusion", 2: "patches", 3: "scratches"}
MAGNETIC_TILE_CLASS_FOLDERS: dict[str, str] = {
    "MT_Blowhole": "Blowhole",
    "MT_Break": "Break",
    "MT_Crack": "Crack",
    "MT_Fray": "Fray",
    "MT_Uneven": "Uneven",
}
MAGNETIC_TILE_FREE_FOLDERS: tuple[str, ...] = ("MT_Free",)
GDXRAY_WELD_CLASSES: dict[int, str] = {1: "defect"}
GDXRAY_CASTING_CLASSES: dict[int, str] = {1: "defect"}
# Series folded into another one's group: C0002's readme says "crops of C0001 with defects"
# (C0002_0016.png matches a region of C0001_0013.png with correlation 0.999).
GDXRAY_CASTING_GROUPS: dict[str, str] = {"C0002": "C0001"}
BOX_COLUMNS = ("image", "x1", "x2", "y1", "y2")

PathLike = str | os.PathLike
_TRAIN_IMAGES = "train_images"


# ----------------------------------------------------------------------------- small pure helpers


def tile_origins(length: int, tile: int, stride: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` along an axis of ``length`` pixels.

    Tiles start every ``stride`` pixels; the last tile is aligned to the far edge so the
    whole axis is covered without padding. An axis shorter than ``tile`` gives ``[0]``
    (the caller pads). Needs ``1 <= stride <= tile`` (a larger stride would leave gaps).

    >>> tile_origins(50, 16, 16)
    [0, 16, 32, 34]
    >>> tile_origins(50, 16, 12)
    [0, 12, 24, 34]
    """
    length, tile, stride = checks.positive_int("length", length), checks.positive_int("tile", tile), checks.positive_int("stride", stride)
    if stride > tile:
        raise ValueError(f"stride must be in 1..tile={tile} so that tiles cover the image, got {stride}")
    if length <= tile:
        return [0]
    origins = list(range(0, length - tile + 1, stride))
    if origins[-1] + tile < length:
        origins.append(length - tile)
    return origins


# ----------------------------------------------------------------------------- argument checks


def _threshold(threshold: int) -> int:
    try:
        return checks.integer("threshold", threshold, 0, 254)
    except ValueError as err:
        raise ValueError(f"{err} (defect = mask value > threshold)") from None


def _class_names(class_names: Mapping[int, str]) -> dict[int, str]:
    names = {int(k): str(v) for k, v in dict(class_names).items()}
    expected = list(range(1, len(names) + 1))
    if not names or sorted(names) != expected:
        raise ValueError(f"class ids must be 1..C (0 is background), e.g. {{1: 'scratch'}}; got {sorted(names)}")
    if any(not n.strip() for n in names.values()) or len(set(names.values())) != len(names):
        raise ValueError(f"class names must be distinct and non-empty, got {list(names.values())}")
    return {k: names[k] for k in expected}


def _suffix(name: str, value: str) -> str:
    """An image suffix such as ``.png`` (any case)."""
    checks.choice(name, value.lower() if isinstance(value, str) else value, files.IMAGE_SUFFIXES)
    return value


def _check_size(mask_path: Path, mask_shape: tuple[int, ...], image_path: Path, image_shape: tuple[int, ...]) -> None:
    if tuple(mask_shape) != tuple(image_shape):
        raise ValueError(
            f"mask {mask_path} is {mask_shape[0]}x{mask_shape[1]} but image {image_path} is "
            f"{image_shape[0]}x{image_shape[1]} (HxW)"
        )


def _binary(path: Path, threshold: int, faint: list[str] | None = None) -> np.ndarray:
    """Defect pixels of a mask: value > ``threshold`` (1-bit: 1); a mask with non-zero values
    but none above ``threshold`` (e.g. 0/1 in 8 bits) is appended to ``faint``."""
    values, mode = files.read_label_image(path)
    if mode == "1":
        return values.astype(bool)
    mask = values > threshold
    if faint is not None and not mask.any() and values.any():
        faint.append(path.name)
    return mask


# ----------------------------------------------------------------------------- output handling


_STALE_ENTRIES = (f"{_TRAIN_IMAGES}.partial",)  # staging folder of older versions of this module


@dataclass
class _Output:
    """Collects one conversion into a hidden sibling folder, then swaps it for ``out_dir``.

    The new dataset is built in ``.<name>.building-<pid>`` next to ``out_dir`` (same parent,
    so same file system); only when everything is written does :meth:`finish` rename the old
    folder to ``.<name>.old``, the new one to ``out_dir`` and delete the old one. A reader
    sees the old dataset or the new one, never a mix -- except during the instant between
    the two renames, when ``out_dir`` is missing. A killed run is repaired by the next
    conversion into the same folder (``.old`` restored if ``out_dir`` is missing, else
    deleted; builds of dead processes deleted). Entries of ``out_dir`` that are not part of
    the dataset (e.g. a ``source/`` folder) are carried into the new folder as hard links.
    """

    out_dir: Path
    class_names: dict[int, str]
    overwrite: bool
    rows: list[tuple[str, dict[int, str], int, int, str, str]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    empty_masks: list[str] = field(default_factory=list)
    padded: list[str] = field(default_factory=list)
    faint_masks: list[str] = field(default_factory=list)
    threshold: int | None = None

    def __post_init__(self) -> None:
        given = self.out_dir
        self.final = final = Path(os.path.abspath(given)).resolve()  # a link to the folder: swap its target
        files.recover_folder(final)  # before the check: a killed swap may have left the old dataset aside
        if final.exists() and not final.is_dir():
            raise NotADirectoryError(f"out_dir {given} is a file, not a folder")
        images = final / _TRAIN_IMAGES
        if ((images.is_dir() and any(images.iterdir())) or (final / "train.csv").exists()) and not self.overwrite:
            raise FileExistsError(f"{given} already holds a dataset; pass overwrite=True to replace it")
        self._replacing = files.replacing_folder(final, carry=self._carried())
        self.building = self._replacing.__enter__()  # left by finish() (swap) or abort() (discard)
        self.staging = self.building / _TRAIN_IMAGES
        self.staging.mkdir()
        self._ids: dict[str, str] = {}

    def _carried(self) -> list[Path]:
        """Entries of the existing folder that are not dataset files (kept across the swap)."""
        if not self.final.is_dir():
            return []
        skip = {*severstal.DATASET_ENTRIES, *_STALE_ENTRIES}
        return sorted(p for p in self.final.iterdir() if p.name not in skip)

    def claim(self, image_id: str, source: Path | str) -> Path:
        """Destination path of ``image_id``; raise if two sources map to the same ImageId."""
        if image_id in self._ids:
            raise ValueError(f"ImageId {image_id!r} would come from both {self._ids[image_id]} and {source}")
        self._ids[image_id] = str(source)
        return self.staging / image_id

    def add(self, image_id: str, masks: dict[int, np.ndarray], shape: tuple[int, int], split: str, group: str) -> None:
        rles = {c: rle.encode(m) for c, m in masks.items()}
        rles = {c: r for c, r in rles.items() if r}
        self.rows.append((image_id, rles, int(shape[0]), int(shape[1]), split, group))

    def abort(self) -> None:
        self._replacing.__exit__(RuntimeError, RuntimeError("conversion aborted"), None)

    def finish(self) -> pd.DataFrame:
        classes = list(self.class_names)
        ids = [r[0] for r in self.rows]
        index = pd.Index(ids, name="ImageId")
        wide = pd.DataFrame({c: [r[1].get(c, "") for r in self.rows] for c in classes}, index=index)
        wide["Height"] = np.array([r[2] for r in self.rows], dtype=np.int64)
        wide["Width"] = np.array([r[3] for r in self.rows], dtype=np.int64)
        wide = wide.sort_index()
        split_table = pd.DataFrame({"split": [r[4] for r in self.rows], "group": [r[5] for r in self.rows]}, index=index)
        try:
            severstal.write_train_csv(wide, self.building / "train.csv")
            severstal.write_classes(self.building, self.class_names)
            severstal.write_splits(self.building, split_table)
        except BaseException:
            self.abort()
            raise
        self._replacing.__exit__(None, None, None)  # carries the other entries over, then swaps
        wide.attrs["skipped"] = dict(self.skipped)
        wide.attrs["empty_masks"] = sorted(self.empty_masks)
        wide.attrs["padded"] = sorted(self.padded)
        wide.attrs["faint_masks"] = sorted(self.faint_masks)
        if self.skipped:
            listed = "; ".join(f"{k}: {v}" for k, v in list(self.skipped.items())[:5])
            _warn(f"skipped {len(self.skipped)} source file(s) (see table.attrs['skipped']): {listed}")
        if self.empty_masks:
            _warn(
                f"{len(self.empty_masks)} image(s) in defect folders have an empty mask and are stored as "
                f"defect-free (see table.attrs['empty_masks']): {sorted(self.empty_masks)[:5]}"
            )
        if self.faint_masks:
            _warn(
                f"{len(self.faint_masks)} mask(s) have non-zero values but none above threshold={self.threshold}, so "
                f"they hold no defect (0/1 masks need threshold=0; see table.attrs['faint_masks']): "
                f"{sorted(self.faint_masks)[:5]}"
            )
        return wide


def _warn(message: str) -> None:
    """``UserWarning`` attributed to the first caller outside this module."""
    frame, level = sys._getframe(0), 1
    while frame.f_back is not None and frame.f_code.co_filename == __file__:
        frame, level = frame.f_back, level + 1
    warnings.warn(message, UserWarning, stacklevel=level)


def _run(output: _Output, body: Callable[[], None]) -> pd.DataFrame:
    try:
        body()
    except BaseException:
        output.abort()
        raise
    return output.finish()


# ----------------------------------------------------------------------------- 1. index masks


def convert_index_masks(
    images_dir: PathLike,
    masks_dir: PathLike,
    out_dir: PathLike,
    class_names: Mapping[int, str],
    splits: Mapping[str, Sequence[str]] | None = None,
    groups: Mapping[str, str] | None = None,
    mask_suffix: str = ".png",
    val_fraction: float = 0.2,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> pd.DataFrame:
    """Convert images + same-stem index masks (pixel value = class id, 0 = background).

    Each image ``images_dir/<stem>.<ext>`` needs ``masks_dir/<stem><mask_suffix>`` of the
    same ``(H, W)`` whose values are in ``{0} | class_names``; image bytes are copied
    unchanged and ImageId is the image file name. ``splits`` maps a split name to image
    ids (stems or file names) and must cover every image exactly once; without it a
    seeded ``val_fraction`` split of the groups is made. ``groups`` maps image stem ->
    group id (images not listed: their own stem); default group = image stem.
    """
    names = _class_names(class_names)
    mask_suffix = _suffix("mask_suffix", mask_suffix)
    checks.fraction("val_fraction", val_fraction)
    seed = checks.seed("seed", seed)
    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    images = files.list_images(images_dir)
    if not images:
        raise ValueError(f"no images ({', '.join(files.IMAGE_SUFFIXES)}) in {images_dir}")
    if not masks_dir.is_dir():
        raise FileNotFoundError(f"mask folder not found: {masks_dir}")
    stems = [p.stem for p in images]
    if len(set(stems)) != len(stems):
        dup = next(s for s in stems if stems.count(s) > 1)
        raise ValueError(f"two images in {images_dir} share the stem {dup!r}; masks are matched by stem")
    image_stems = set(stems)
    orphans = sorted(p.name for p in masks_dir.glob(f"*{mask_suffix}") if p.stem not in image_stems)
    if orphans:
        raise ValueError(f"{len(orphans)} mask(s) in {masks_dir} have no image in {images_dir}, e.g. {orphans[:3]}")
    group_of = {stem: str((groups or {}).get(stem, stem)) for stem in stems}
    unknown_groups = sorted(set(groups or {}) - image_stems)
    if unknown_groups:
        raise ValueError(f"groups names {len(unknown_groups)} stem(s) that are not images, e.g. {unknown_groups[:3]}")
    split_of = _image_splits(images, splits, val_fraction, seed, group_of)
    allowed = np.arange(len(names) + 1)
    output = _Output(Path(out_dir), names, overwrite)

    def body() -> None:
        for image in tqdm(images, desc="index masks", unit="image", disable=not progress):
            mask_path = masks_dir / f"{image.stem}{mask_suffix}"
            if not mask_path.is_file():
                raise FileNotFoundError(f"mask not found for image {image}: expected {mask_path}")
            labels, _ = files.read_label_image(mask_path)
            shape = files.image_size(image, decode=True)
            _check_size(mask_path, labels.shape, image, shape)
            present = np.unique(labels)
            unknown = np.setdiff1d(present, allowed)
            if unknown.size:
                raise ValueError(
                    f"mask {mask_path} holds values {unknown.tolist()[:8]} outside the allowed classes "
                    f"{allowed.tolist()} (0 = background, {names})"
                )
            masks = {int(c): labels == c for c in present if c != 0}
            shutil.copyfile(image, output.claim(image.name, image))
            output.add(image.name, masks, shape, split_of[image.stem], group_of[image.stem])

    return _run(output, body)


def _image_splits(
    images: list[Path],
    lists: Mapping[str, Sequence[str]] | None,
    val_fraction: float,
    seed: int,
    group_of: Mapping[str, str],
) -> dict[str, str]:
    stems = [p.stem for p in images]
    if lists is None:
        group_split = splits.split_groups(list(group_of.values()), val_fraction, seed)
        return {stem: group_split[group_of[stem]] for stem in stems}
    if not isinstance(lists, Mapping) or not lists:
        raise ValueError(f"splits must map split name -> image ids, e.g. {{'train': [...], 'val': [...]}}; got {lists}")
    by_name = {p.name: p.stem for p in images}
    known = set(stems)
    split_of: dict[str, str] = {}
    for split, ids in lists.items():
        if isinstance(ids, str):
            raise ValueError(f"splits[{split!r}] must be a list of image ids, got a string")
        for image_id in ids:
            stem = by_name.get(str(image_id), str(image_id))
            if stem not in known:
                raise ValueError(f"splits[{split!r}] lists {image_id!r}, which is not an image of the dataset")
            if stem in split_of and split_of[stem] != split:
                raise ValueError(f"image {image_id!r} is listed in two splits: {split_of[stem]!r} and {split!r}")
            split_of[stem] = str(split)
    missing = sorted(known - set(split_of))
    if missing:
        raise ValueError(f"{len(missing)} image(s) are in no split ({list(lists)}), e.g. {missing[:3]}")
    return split_of


def _read_split_lists(split_files: list[Path], images_dir: Path) -> dict[str, list[str]]:
    """``{split: [image stem, ...]}`` from ``<split>.txt`` lists of image ids (stems or file names).

    An id that is not an image of ``images_dir`` (a typo, a path such as ``../x``) or an image
    listed twice raises ``ValueError`` naming the file and line.
    """
    images = files.list_images(images_dir)
    stem_of = {**{p.stem: p.stem for p in images}, **{p.name: p.stem for p in images}}
    listed: dict[str, str] = {}
    lists: dict[str, list[str]] = {}
    for path in split_files:
        lists[path.stem] = []
        for number, image_id in files.read_text_lines(path):
            where = f"{path} line {number}"
            stem = stem_of.get(image_id)
            if stem is None:
                example = f" such as {images[0].stem!r}" if images else ""
                raise ValueError(f"{where}: {image_id!r} is not an image in {images_dir} (expected an image id{example})")
            if stem in listed:
                raise ValueError(f"{where}: {image_id!r} is also listed in {listed[stem]}")
            listed[stem] = where
            lists[path.stem].append(stem)
    return lists


NEU_SPLITS = ("official", "leak_free")


def _class_combination(mask_path: Path) -> str:
    labels, _ = files.read_label_image(mask_path)
    return "+".join(str(c) for c in np.unique(labels) if c != 0)


def leak_free_lists(
    lists: Mapping[str, Sequence[str]], groups: Mapping[str, str], masks_dir: PathLike, seed: int = 0,
    mask_suffix: str = ".png",
) -> dict[str, list[str]]:
    """``{"train": [...], "val": [...]}`` of the same sizes as ``lists``, whole ``groups`` to one side.

    ``lists``: the published ``train``/``val`` image stems; ``groups``: stem -> group (stems not
    listed are their own group). Stratified by the class combination of each mask
    (:func:`helpers.data.splits.sized_group_split`); ``ValueError`` if the sizes cannot be met.
    """
    if set(lists) != {"train", "val"}:
        raise ValueError(f"a leak-free split replaces train and val lists; got the splits {sorted(lists)}")
    stems = sorted(stem for ids in lists.values() for stem in ids)
    group_of = pd.Series({stem: str(groups.get(stem, stem)) for stem in stems})
    strata = pd.Series({stem: _class_combination(Path(masks_dir) / f"{stem}{mask_suffix}") for stem in stems})
    split = splits.sized_group_split(group_of, len(lists["val"]), strata=strata, seed=seed)
    if int((split == "val").sum()) != len(lists["val"]):
        raise ValueError(f"the groups cannot fill a validation split of exactly {len(lists['val'])} images")
    return {name: split.index[split == name].tolist() for name in ("train", "val")}


def convert_neu_seg(
    src_dir: PathLike,
    out_dir: PathLike,
    groups: Mapping[str, str] | None = None,
    split: str = "official",
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> pd.DataFrame:
    """NEU-Seg (``images/*.jpg``, ``masks/*.png`` with 0 bg, 1 inclusion, 2 patches, 3 scratches).

    ``split="official"``: splits from ``splits/<split>.txt`` (UTF-8, one image id per line;
    usually ``train`` and ``val``; an unknown or repeated id raises ``ValueError`` naming the file
    and line). Group = image id: NEU-Seg ships no grouping, so rotated/flipped copies of one image
    may sit in different splits; pass ``groups`` (image id -> group id, e.g.
    :func:`helpers.data.audit.mask_transform_groups`) to record a better grouping (the official
    splits are kept; audit them with :func:`helpers.data.audit.check_group_splits`).
    ``split="leak_free"``: the same train/val sizes with whole ``groups`` (and byte-identical
    images) to one side, seeded, stratified by class combination (:func:`leak_free_lists`).
    JPEG bytes are copied unchanged.
    """
    checks.choice("split", split, NEU_SPLITS)
    src_dir = Path(src_dir)
    split_files = sorted((src_dir / "splits").glob("*.txt"))
    if not split_files:
        raise FileNotFoundError(f"no split lists (*.txt) in {src_dir / 'splits'}")
    lists = _read_split_lists(split_files, src_dir / "images")
    if split == "leak_free":
        if groups is None:
            raise ValueError("split='leak_free' needs groups (e.g. audit.mask_transform_groups of the masks)")
        groups = _with_identical_images(dict(groups), src_dir / "images")
        lists = leak_free_lists(lists, groups, src_dir / "masks", seed=seed)
    return convert_index_masks(
        src_dir / "images", src_dir / "masks", out_dir, NEU_SEG_CLASSES, splits=lists, groups=groups,
        overwrite=overwrite, progress=progress,
    )


def _with_identical_images(groups: dict[str, str], images_dir: Path) -> dict[str, str]:
    """``groups`` (stem -> group) with byte-identical images of ``images_dir`` (:func:`audit.find_duplicates`) merged."""
    duplicates = audit.find_duplicates(images_dir, progress=False)
    for _, same in duplicates.groupby("hash", sort=True):
        stems = [Path(name).stem for name in same["file"]]
        old = {groups.get(stem, stem) for stem in stems}
        merged = min(old)
        groups = {stem: (merged if group in old else group) for stem, group in groups.items()}
        groups.update({stem: merged for stem in stems})
    return groups


# ----------------------------------------------------------------------------- 2. binary masks, class from folder


def convert_folder_masks(
    root: PathLike,
    out_dir: PathLike,
    class_folders: Mapping[str, str],
    free_folders: Sequence[str] = (),
    image_suffix: str = ".jpg",
    mask_suffix: str = ".png",
    threshold: int = 127,
    val_fraction: float = 0.2,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> pd.DataFrame:
    """Convert ``root/<folder>/<name><image_suffix>`` + ``<name><mask_suffix>`` binary masks.

    ``class_folders`` maps folder -> class name (class id = position + 1); images in
    ``free_folders`` are defect-free (a mask there is optional but must be empty). Defect
    = mask value ``> threshold`` (1-bit masks: value 1). Folders not listed are ignored.
    Split: seeded, stratified by folder (``round(val_fraction * n)`` per folder go to
    ``val``). Group = image name stem, which must be unique over all folders. A listed
    folder without ``image_suffix`` images raises ``ValueError`` (a class would silently vanish).
    A defect-folder image whose mask is empty is kept as defect-free and listed in
    ``attrs['empty_masks']`` (with a warning).
    """
    root = Path(root)
    folders = dict(class_folders)
    if not folders:
        raise ValueError("class_folders must map at least one folder to a class name, e.g. {'MT_Crack': 'Crack'}")
    if isinstance(free_folders, str):
        free_folders = (free_folders,)
    both = set(folders) & set(free_folders)
    if both:
        raise ValueError(f"folders {sorted(both)} are listed both as class and as free folders")
    names = _class_names({i: n for i, n in enumerate(folders.values(), start=1)})
    class_of = {folder: i for i, folder in enumerate(folders, start=1)}
    image_suffix, mask_suffix = _suffix("image_suffix", image_suffix), _suffix("mask_suffix", mask_suffix)
    if image_suffix.lower() == mask_suffix.lower():
        raise ValueError(f"image_suffix and mask_suffix must differ, both are {image_suffix!r}")
    threshold = _threshold(threshold)
    checks.fraction("val_fraction", val_fraction)
    seed = checks.seed("seed", seed)

    items: list[tuple[str, Path]] = []  # (folder, image path)
    seen: dict[str, Path] = {}
    for folder in [*folders, *free_folders]:
        path = root / folder
        if not path.is_dir():
            raise FileNotFoundError(f"folder not found: {path} (allowed folders here: {_subfolders(root)})")
        images = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() == image_suffix.lower())
        if not images:
            found = sorted({p.suffix.lower() for p in path.iterdir() if p.is_file() and p.suffix})
            raise ValueError(f"folder {path} holds no *{image_suffix} images (found {found}); check image_suffix, "
                             "or leave the folder out")
        image_stems = {p.stem for p in images}
        masks = (p for p in path.iterdir() if p.suffix.lower() == mask_suffix.lower())
        orphans = sorted(p.name for p in masks if p.stem not in image_stems)
        if orphans:
            raise ValueError(f"{len(orphans)} mask(s) in {path} have no image, e.g. {orphans[:3]}")
        for image in images:
            if image.stem in seen:
                raise ValueError(f"image name {image.stem!r} appears twice: {seen[image.stem]} and {image}")
            seen[image.stem] = image
            items.append((folder, image))
    if not items:
        raise ValueError(f"no *{image_suffix} images in {root} folders {[*folders, *free_folders]}")

    split_of: dict[str, str] = {}
    for k, folder in enumerate([*folders, *free_folders]):
        stems = [image.stem for f, image in items if f == folder]
        split_of.update(splits.split_groups(stems, val_fraction, seed=[seed, k]) if stems else {})
    output = _Output(Path(out_dir), names, overwrite, threshold=threshold)

    def body() -> None:
        for folder, image in tqdm(items, desc="folder masks", unit="image", disable=not progress):
            mask_path = image.with_suffix(mask_suffix)
            shape = files.image_size(image, decode=True)
            free = folder not in class_of
            if not mask_path.is_file():
                if not free:
                    raise FileNotFoundError(f"mask not found for image {image}: expected {mask_path}")
                mask = np.zeros(shape, dtype=bool)
            else:
                mask = _binary(mask_path, threshold, None if free else output.faint_masks)
                _check_size(mask_path, mask.shape, image, shape)
            if free and mask.any():
                n_defect = int(mask.sum())
                raise ValueError(f"mask {mask_path} of defect-free folder {folder!r} has {n_defect} defect pixels")
            if not free and not mask.any():
                output.empty_masks.append(image.name)
            masks = {} if free else {class_of[folder]: mask}
            shutil.copyfile(image, output.claim(image.name, image))
            output.add(image.name, masks, shape, split_of[image.stem], image.stem)

    return _run(output, body)


def _subfolders(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def convert_magnetic_tile(
    src_dir: PathLike,
    out_dir: PathLike,
    threshold: int = 127,
    val_fraction: float = 0.2,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    include_free: bool = True,
) -> pd.DataFrame:
    """Magnetic-tile (``MT_<Class>/<name>.jpg`` + ``<name>.png``; ``MT_Free`` = defect-free).

    Classes 1 Blowhole, 2 Break, 3 Crack, 4 Fray, 5 Uneven; soft mask edges, defect =
    value > ``threshold``. No official split: seeded split stratified by class folder;
    group = image name stem. ``include_free=False`` leaves ``MT_Free`` out (defect images only,
    the usual protocol of Magnetic-tile segmentation papers).
    """
    return convert_folder_masks(
        src_dir, out_dir, MAGNETIC_TILE_CLASS_FOLDERS, MAGNETIC_TILE_FREE_FOLDERS if include_free else (),
        threshold=threshold, val_fraction=val_fraction, seed=seed, overwrite=overwrite, progress=progress,
    )


# ----------------------------------------------------------------------------- 3. tiled radiographs


def convert_tiled_radiographs(
    pairs: Sequence[tuple[PathLike, PathLike | None]],
    out_dir: PathLike,
    tile: int = 256,
    stride: int | None = None,
    val_groups: Sequence[str] | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    threshold: int = 0,
    class_name: str = "defect",
    overwrite: bool = False,
    progress: bool = True,
) -> pd.DataFrame:
    """Tile large grey radiographs with binary masks into ``tile x tile`` PNG patches.

    ``pairs`` = ``[(image_path, mask_path), ...]``; a pair whose mask is ``None`` is
    skipped and reported (``attrs['skipped']`` = ``{file name: reason}`` + a warning).
    Defect = mask value ``> threshold`` (1-bit masks: value 1); one class ``class_name``.
    Tiles start every ``stride`` pixels (``1 <= stride <= tile``; ``None`` = ``tile``, no
    overlap) and the last row/column is aligned to the image edge, so every pixel is covered and nothing is padded --
    except an image smaller than ``tile`` along an axis, which is zero-padded at the
    bottom/right (mask padded with background) and listed in ``attrs['padded']``. All
    tiles are ``(tile, tile)``. ImageId = ``<stem>_y<top:04d>_x<left:04d>.png``;
    group = source stem. Split by whole radiograph: ``val_groups`` lists the val stems,
    else a seeded ``val_fraction`` of the radiographs goes to ``val``.
    """
    return _tile_radiographs(
        pairs, out_dir, tile, stride, val_groups, val_fraction, seed,
        threshold=threshold, class_name=class_name, overwrite=overwrite, progress=progress, skip_reasons={},
    )


def _tile_radiographs(
    pairs: Sequence[tuple[PathLike, PathLike | None]],
    out_dir: PathLike,
    tile: int,
    stride: int | None,
    val_groups: Sequence[str] | None,
    val_fraction: float,
    seed: int,
    threshold: int,
    class_name: str,
    overwrite: bool,
    progress: bool,
    skip_reasons: Mapping[str, str],
) -> pd.DataFrame:
    tile = checks.positive_int("tile", tile)
    stride = tile if stride is None else checks.positive_int("stride", stride)
    tile_origins(tile, tile, stride)  # validates stride <= tile
    threshold = _threshold(threshold)
    checks.fraction("val_fraction", val_fraction)
    seed = checks.seed("seed", seed)
    class_names = _class_names({1: class_name})
    sources: list[tuple[Path, Path]] = []
    skipped: dict[str, str] = {}
    stems: dict[str, Path] = {}
    for image, mask in pairs:
        image = Path(image)
        if image.stem in stems:
            raise ValueError(f"two radiographs share the stem {image.stem!r}: {stems[image.stem]} and {image}")
        stems[image.stem] = image
        if mask is None:
            skipped[image.name] = skip_reasons.get(image.name, "no mask")
            continue
        if not image.is_file():
            raise FileNotFoundError(f"radiograph not found: {image}")
        if not Path(mask).is_file():
            raise FileNotFoundError(f"mask not found for radiograph {image}: expected {mask}")
        sources.append((image, Path(mask)))
    if not sources:
        raise ValueError(f"no radiograph with a mask among {len(stems)} pair(s)")
    stems = [image.stem for image, _ in sources]
    split_of = _split_of_groups(stems, val_groups, val_fraction, seed, "converted radiographs")
    output = _Output(Path(out_dir), class_names, overwrite, threshold=threshold)
    output.skipped.update(skipped)

    def body() -> None:
        for image_path, mask_path in tqdm(sources, desc="tile radiographs", unit="radiograph", disable=not progress):
            image = files.read_grey(image_path)
            mask = _binary(mask_path, threshold, output.faint_masks)
            _check_size(mask_path, mask.shape, image_path, image.shape)
            _add_tiles(output, image_path, image, mask, tile, stride, split_of[image_path.stem], image_path.stem)

    return _run(output, body)


def _split_of_groups(
    groups: Sequence[str], val_groups: Sequence[str] | None, val_fraction: float, seed: int, what: str
) -> dict[str, str]:
    """``{group: split}``: ``val_groups`` go to ``val`` (each must be one of ``groups``), else a seeded fraction."""
    if val_groups is None:
        return splits.split_groups(groups, val_fraction, seed)
    val = {str(g) for g in ([val_groups] if isinstance(val_groups, str) else val_groups)}
    unknown = sorted(val - set(groups))
    if unknown:
        raise ValueError(f"val_groups {unknown} are not {what}; allowed: {sorted(set(groups))}")
    return {g: ("val" if g in val else "train") for g in groups}


def _add_tiles(
    output: _Output, source: Path, image: np.ndarray, mask: np.ndarray, tile: int, stride: int, split: str, group: str
) -> None:
    """Write the ``tile x tile`` PNG tiles of a grey ``image (H, W)`` and bool ``mask (H, W)`` of one source.

    ImageId = ``<stem>_y<top:04d>_x<left:04d>.png``; a source smaller than ``tile`` is
    zero-padded at the bottom/right and listed in ``output.padded``.
    """
    height, width = image.shape
    if height < tile or width < tile:
        output.padded.append(source.name)
        pad = ((0, max(0, tile - height)), (0, max(0, tile - width)))
        image, mask = np.pad(image, pad), np.pad(mask, pad)
    for y in tile_origins(height, tile, stride):
        for x in tile_origins(width, tile, stride):
            image_id = f"{source.stem}_y{y:04d}_x{x:04d}.png"
            crop = np.ascontiguousarray(image[y : y + tile, x : x + tile])
            files.write_image(output.claim(image_id, source), crop)
            output.add(image_id, {1: mask[y : y + tile, x : x + tile]}, (tile, tile), split, group)


def convert_gdxray_welds(
    src_dir: PathLike,
    out_dir: PathLike,
    tile: int = 256,
    stride: int | None = None,
    val_groups: Sequence[str] | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> pd.DataFrame:
    """GDXray Welds: radiographs ``W0001/W0001_<k>.png`` with 1-bit masks ``W0002/W0002_<k>.png``.

    A radiograph without a mask (``W0001_0000.png``, a byte copy of ``W0001_0001.png``) is
    skipped and listed in ``attrs['skipped']`` with the reason (and a warning). Tiling,
    split and groups as in :func:`convert_tiled_radiographs` (group = radiograph stem,
    e.g. ``W0001_0003``; ``val_groups`` takes such stems).
    """
    src_dir = Path(src_dir)
    image_dir, mask_dir = src_dir / "W0001", src_dir / "W0002"
    pattern = re.compile(r"W0001_(\d+)$")
    images = [p for p in files.list_images(image_dir) if pattern.match(p.stem)]
    if not images:
        raise ValueError(f"no W0001_<k>.png radiographs in {image_dir}")
    hashes = {p: files.content_hash(p) for p in images}
    pairs: list[tuple[Path, Path | None]] = []
    reasons: dict[str, str] = {}
    for image in images:
        mask = mask_dir / f"W0002_{pattern.match(image.stem).group(1)}{image.suffix}"
        if mask.is_file():
            pairs.append((image, mask))
            continue
        copies = [p.name for p in images if p != image and hashes[p] == hashes[image]]
        reasons[image.name] = f"no mask {mask.name}" + (f" (byte copy of {', '.join(copies)})" if copies else "")
        pairs.append((image, None))
    return _tile_radiographs(
        pairs, out_dir, tile, stride, val_groups, val_fraction, seed,
        threshold=0, class_name=GDXRAY_WELD_CLASSES[1], overwrite=overwrite, progress=progress, skip_reasons=reasons,
    )


# ----------------------------------------------------------------------------- 4. box annotations (GDXray Castings)


def _check_boxes(boxes: pd.DataFrame, paths: Sequence[Path]) -> pd.DataFrame:
    """``boxes`` with a ``where`` column (source of each box, for messages), checked for order and images.

    ``image`` must be the file name of one of ``paths`` or one of ``paths`` itself; it becomes the file name.
    """
    missing = [c for c in BOX_COLUMNS if c not in boxes.columns]
    if missing:
        raise ValueError(f"boxes need the columns {list(BOX_COLUMNS)} (+ optional 'where'), missing {missing}")
    boxes = boxes.reset_index(drop=True).copy()
    if "where" not in boxes.columns:
        boxes["where"] = [f"box {k} ({image})" for k, image in enumerate(boxes["image"])]
    name_of = {**{os.path.normpath(str(p)): p.name for p in paths}, **{p.name: p.name for p in paths}}
    given = [str(image) for image in boxes["image"]]
    names = [name_of.get(image, name_of.get(os.path.normpath(image))) for image in given]
    coordinates = boxes[["x1", "x2", "y1", "y2"]].apply(pd.to_numeric, errors="coerce").astype(np.float64)
    for k, row in enumerate(coordinates.itertuples(index=False)):
        where = boxes["where"].iloc[k]
        if names[k] is None:
            raise ValueError(f"{where}: image {given[k]!r} is not among the images to convert (give a file name "
                             f"or path of one of them, e.g. {paths[0].name!r})")
        for name, value in zip(("x1", "x2", "y1", "y2"), row):
            if not np.isfinite(value):
                raise ValueError(f"{where}: box {name} must be a finite number, got {str(boxes[name].iloc[k])!r}")
        if row.x2 < row.x1 or row.y2 < row.y1:
            raise ValueError(
                f"{where}: box x1={row.x1:g} x2={row.x2:g} y1={row.y1:g} y2={row.y2:g} needs x1 <= x2 and y1 <= y2"
            )
    boxes[["x1", "x2", "y1", "y2"]] = coordinates
    boxes["image"] = names
    return boxes


def _box_mask(boxes: pd.DataFrame, shape: tuple[int, int], clipped: list[str]) -> np.ndarray:
    """Bool ``(H, W)`` union of 1-based inclusive boxes; parts past the image are clipped (noted in ``clipped``)."""
    height, width = shape
    mask = np.zeros(shape, dtype=bool)
    for row in boxes.itertuples(index=False):
        x0, x1 = int(np.floor(row.x1 + 0.5)) - 1, int(np.floor(row.x2 + 0.5))  # 0-based, end exclusive
        y0, y1 = int(np.floor(row.y1 + 0.5)) - 1, int(np.floor(row.y2 + 0.5))
        cx0, cx1, cy0, cy1 = max(x0, 0), min(x1, width), max(y0, 0), min(y1, height)
        if cx1 <= cx0 or cy1 <= cy0:
            raise ValueError(
                f"{row.where}: box x1={row.x1:g} x2={row.x2:g} y1={row.y1:g} y2={row.y2:g} lies outside the "
                f"{width}x{height} (WxH) image {row.image}"
            )
        if (cx0, cx1, cy0, cy1) != (x0, x1, y0, y1):
            clipped.append(
                f"{row.where}: x {row.x1:g}..{row.x2:g}, y {row.y1:g}..{row.y2:g} clipped to "
                f"x {cx0 + 1}..{cx1}, y {cy0 + 1}..{cy1} ({width}x{height} image {row.image})"
            )
        mask[cy0:cy1, cx0:cx1] = True
    return mask


def convert_box_annotations(
    images: Sequence[PathLike],
    boxes: pd.DataFrame,
    out_dir: PathLike,
    tile: int | None = 256,
    stride: int | None = None,
    groups: Mapping[str, str] | None = None,
    val_groups: Sequence[str] | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    class_name: str = "defect",
    overwrite: bool = False,
    progress: bool = True,
) -> pd.DataFrame:
    """Grey images with rectangular defect boxes -> box masks of one class, whole or tiled.

    ``boxes``: one row per box with columns ``image`` (file name of one of ``images``) and
    ``x1, x2, y1, y2`` -- 1-based pixel coordinates, inclusive (the box covers columns
    ``x1..x2`` and rows ``y1..y2``, MATLAB's convention, as GDXray's ``ground_truth.txt``);
    non-integers are rounded. An optional ``where`` column names each box's source in
    messages (e.g. ``C0001/ground_truth.txt line 5``). Images without a box are defect-free.
    A box reaching past the image is clipped, listed in ``attrs['clipped_boxes']`` and
    warned about; ``x2 < x1``, ``y2 < y1``, non-numbers or a box wholly outside its image
    raise ``ValueError`` naming the box. ``tile=None``: whole images (bytes copied
    unchanged, ImageId = file name); else ``tile x tile`` PNG tiles as in
    :func:`convert_tiled_radiographs` (ImageId ``<stem>_y<top>_x<left>.png``, small images
    padded). ``groups``: image stem -> group (default: the stem); split by group,
    ``val_groups`` or a seeded ``val_fraction`` of the groups.
    """
    if tile is not None:
        tile = checks.positive_int("tile", tile)
        stride = tile if stride is None else checks.positive_int("stride", stride)
        tile_origins(tile, tile, stride)  # validates stride <= tile
    elif stride is not None:
        raise ValueError(f"stride needs a tile size; got tile=None and stride={stride!r}")
    checks.fraction("val_fraction", val_fraction)
    seed = checks.seed("seed", seed)
    class_names = _class_names({1: class_name})
    paths = [Path(p) for p in images]
    if not paths:
        raise ValueError("images is empty; pass the image files to convert")
    stems: dict[str, Path] = {}
    for path in paths:
        if path.stem in stems:
            raise ValueError(f"two images share the stem {path.stem!r}: {stems[path.stem]} and {path}")
        if not path.is_file():
            raise FileNotFoundError(f"image not found: {path}")
        stems[path.stem] = path
    unknown_groups = sorted(set(groups or {}) - set(stems))
    if unknown_groups:
        raise ValueError(f"groups names {len(unknown_groups)} stem(s) that are not images, e.g. {unknown_groups[:3]}")
    group_of = {stem: str((groups or {}).get(stem, stem)) for stem in stems}
    boxes = _check_boxes(boxes, paths)
    by_image = {name: rows for name, rows in boxes.groupby("image", sort=False)}
    split_of = _split_of_groups(list(group_of.values()), val_groups, val_fraction, seed, "groups of the images")
    output = _Output(Path(out_dir), class_names, overwrite)
    clipped: list[str] = []

    def body() -> None:
        for path in tqdm(paths, desc="box annotations", unit="image", disable=not progress):
            group = group_of[path.stem]
            if tile is None:
                shape = files.image_size(path, decode=True)
                mask = _box_mask(by_image.get(path.name, boxes.iloc[:0]), shape, clipped)
                shutil.copyfile(path, output.claim(path.name, path))
                output.add(path.name, {1: mask}, shape, split_of[group], group)
            else:
                image = files.read_grey(path)
                mask = _box_mask(by_image.get(path.name, boxes.iloc[:0]), image.shape, clipped)
                _add_tiles(output, path, image, mask, tile, stride, split_of[group], group)

    table = _run(output, body)
    table.attrs["clipped_boxes"] = list(clipped)
    if clipped:
        listed = "; ".join(clipped[:3])
        _warn(f"clipped {len(clipped)} box(es) reaching past their image (see table.attrs['clipped_boxes']): {listed}")
    return table


def read_gdxray_boxes(series_dir: PathLike) -> pd.DataFrame:
    """Boxes of one GDXray series: ``<series>/ground_truth.txt`` rows ``image_index x1 x2 y1 y2``.

    Returns the ``boxes`` table of :func:`convert_box_annotations` (``image`` =
    ``<series>_<index:04d>.png``, 1-based index; ``where`` = file and line). A row without
    five numbers, a non-integer, ``inf``/``nan`` or < 1 index, an index without its image, or a
    coordinate that is ``inf``/``nan`` or negative raises ``ValueError`` naming the file, line
    and field (``x2 < x1`` or ``y2 < y1``: see :func:`convert_box_annotations`).
    """
    series_dir = Path(series_dir)
    path = series_dir / "ground_truth.txt"
    if not path.is_file():
        raise FileNotFoundError(f"ground truth not found: {path}")
    rows = []
    for number, line in files.read_text_lines(path):
        where = f"{series_dir.name}/{path.name} line {number}"
        fields = line.split()
        try:
            values = [float(v) for v in fields]
        except ValueError:
            values = []
        if len(values) != 5:
            raise ValueError(f"{where}: expected 5 numbers 'image_index x1 x2 y1 y2', got {line!r}")
        index = values[0]
        if not math.isfinite(index) or index != int(index) or index < 1:
            raise ValueError(f"{where}: image index must be an integer >= 1 (1-based), got {fields[0]!r}")
        for name, text, value in zip(BOX_COLUMNS[1:], fields[1:], values[1:]):
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{where}: {name} must be a finite number >= 0, got {text!r}")
        image = f"{series_dir.name}_{int(index):04d}.png"
        if not (series_dir / image).is_file():
            raise ValueError(f"{where}: image index {int(index)} has no image {series_dir / image}")
        rows.append((image, *values[1:], where))
    return pd.DataFrame(rows, columns=[*BOX_COLUMNS, "where"])


def convert_gdxray_castings(
    src_dir: PathLike,
    out_dir: PathLike,
    tile: int | None = 256,
    stride: int | None = None,
    val_groups: Sequence[str] | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    groups: Mapping[str, str] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> pd.DataFrame:
    """GDXray Castings: series ``C00xx/C00xx_<index:04d>.png`` + ``C00xx/ground_truth.txt`` boxes.

    Boxes (:func:`read_gdxray_boxes`; 1-based inclusive pixel coordinates, the convention
    of the series' MATLAB display demo) become masks of one class ``defect``; images
    without a box are kept as defect-free. A few real boxes reach one pixel past the
    image (``x1 = 0``, ``x2 = width + 1``): they are clipped and reported. Tiling as in
    :func:`convert_box_annotations` (``tile=None``: whole images). Group = series, except
    the series merged by ``groups`` (series -> group; default
    :data:`GDXRAY_CASTING_GROUPS`: ``C0002`` holds crops of ``C0001`` radiographs, so it
    joins ``C0001``); whole groups go to one split (``val_groups`` takes group ids such as
    ``C0019``). A series without ``ground_truth.txt`` is skipped and listed in
    ``attrs['skipped']`` (with a warning).
    """
    src_dir = Path(src_dir)
    if not src_dir.is_dir():
        raise FileNotFoundError(f"GDXray castings folder not found: {src_dir}")
    series = sorted(d for d in src_dir.iterdir() if d.is_dir() and re.fullmatch(r"C\d{4}", d.name))
    if not series:
        raise ValueError(f"no series folders C<nnnn> in {src_dir}")
    merged = dict(GDXRAY_CASTING_GROUPS if groups is None else groups)
    images: list[Path] = []
    tables: list[pd.DataFrame] = []
    skipped: dict[str, str] = {}
    for folder in series:
        if not (folder / "ground_truth.txt").is_file():
            skipped[folder.name] = "no ground_truth.txt"
            continue
        tables.append(read_gdxray_boxes(folder))
        images += [p for p in files.list_images(folder) if re.fullmatch(rf"{folder.name}_\d{{4}}", p.stem)]
    if not images:
        raise ValueError(f"no series with ground_truth.txt and C<nnnn>_<index>.png images in {src_dir}")
    group_of = {p.stem: str(merged.get(p.parent.name, p.parent.name)) for p in images}
    table = convert_box_annotations(
        images, pd.concat(tables, ignore_index=True), out_dir, tile=tile, stride=stride, groups=group_of,
        val_groups=val_groups, val_fraction=val_fraction, seed=seed, class_name=GDXRAY_CASTING_CLASSES[1],
        overwrite=overwrite, progress=progress,
    )
    table.attrs["skipped"] = {**table.attrs["skipped"], **skipped}
    if skipped:
        _warn(f"skipped {len(skipped)} series without ground truth (see table.attrs['skipped']): {sorted(skipped)}")
    return table
