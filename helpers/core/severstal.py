"""Severstal-format datasets: ``train_images/*.jpg`` + ``train.csv`` (+ optional files).

A dataset folder holds
- ``train_images/``: the images;
- ``train.csv``: one row per defect, ``ImageId,ClassId,EncodedPixels`` (Kaggle's final
  layout) or ``ImageId_ClassId,EncodedPixels`` (Kaggle's first layout, every class listed);
- ``classes.csv`` (optional): ``ClassId,Name``;
- ``splits.csv`` (optional): ``ImageId,split,group``.

In memory a dataset is a *wide* table: index ``ImageId``, one column per class id
(int 1..C) holding RLE strings (``""`` = no defect), plus ``Height`` and ``Width``.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pandas as pd

from helpers.core import checks, files, rle

__all__ = [
    "DATASET_ENTRIES",
    "SUBMISSION_LAYOUTS",
    "class_columns",
    "decode_masks",
    "encode_masks",
    "long_table",
    "read_classes",
    "read_dataset",
    "read_sample_submission",
    "read_splits",
    "read_train_csv",
    "stack_masks",
    "unstack_masks",
    "write_classes",
    "write_splits",
    "write_submission",
    "write_submission_like",
    "write_train_csv",
]

SUBMISSION_LAYOUTS = ("ImageId,EncodedPixels,ClassId", "ImageId_ClassId,EncodedPixels")
DATASET_ENTRIES = ("train_images", "train.csv", "classes.csv", "splits.csv")  # what a dataset folder holds
MAX_CLASSES = 255  # class ids fit an 8-bit index mask; a larger id is a typo, not a dataset


def class_columns(table: pd.DataFrame) -> list[int]:
    """The class-id columns (ints) of a wide table, in order."""
    return sorted(c for c in table.columns if isinstance(c, (int, np.integer)))


def _first_bad(bad: pd.Series | np.ndarray) -> int:
    return int(np.flatnonzero(np.asarray(bad))[0])


def _check_image_ids(ids: pd.Series, csv_path: Path) -> None:
    """ImageIds are file names inside the image folder: no folders, no ``..``, not empty."""
    bad = (ids.str.strip() == "") | ids.str.contains(r"[/\\]|^\.\.?$", regex=True)
    if bad.any():
        row = _first_bad(bad)
        raise ValueError(f"{csv_path} line {row + 2}: ImageId {ids.iloc[row]!r} must be a plain file name "
                         "(no folders, no '..'), as in train_images/")


def _class_ids(values: pd.Series, csv_path: Path, column: str = "ClassId") -> pd.Series:
    """Class ids as ints in 1..MAX_CLASSES; ``ValueError`` naming the line otherwise."""
    text = values.astype(str).str.strip()
    digits = text.str.fullmatch(r"\d{1,9}")
    numbers = pd.to_numeric(text.where(digits), errors="coerce")
    bad = numbers.isna() | (numbers < 1) | (numbers > MAX_CLASSES)
    if bad.any():
        row = _first_bad(bad)
        raise ValueError(f"{csv_path} line {row + 2}: {column} {values.iloc[row]!r} is not an integer in 1..{MAX_CLASSES}")
    return numbers.astype(int)


def _split_image_class(joined: pd.Series, csv_path: Path) -> tuple[pd.Series, pd.Series]:
    """ImageIds and class-id texts of Kaggle's first layout (``<ImageId>_<ClassId>``)."""
    parts = joined.str.rsplit("_", n=1, expand=True)
    if parts.shape[1] != 2 or parts[1].isna().any():
        row = _first_bad(parts.isna().any(axis=1)) if parts.shape[1] == 2 else 0
        raise ValueError(f"{csv_path} line {row + 2}: ImageId_ClassId {joined.iloc[row]!r} has no '_<class>'")
    return parts[0], parts[1]


def _read_long(csv_path: Path) -> pd.DataFrame:
    raw = files.read_csv(csv_path, dtype=str, keep_default_na=False)
    columns = list(raw.columns)
    new_layout = {"ImageId", "ClassId", "EncodedPixels"} <= set(columns)
    old_layout = {"ImageId_ClassId", "EncodedPixels"} <= set(columns)
    if new_layout and old_layout:
        raise ValueError(f"{csv_path}: holds both layouts' columns (ImageId,ClassId and ImageId_ClassId); "
                         "keep one: ImageId,ClassId,EncodedPixels or ImageId_ClassId,EncodedPixels")
    if new_layout:
        long = raw[["ImageId", "ClassId", "EncodedPixels"]].copy()
    elif old_layout:
        ids, classes = _split_image_class(raw["ImageId_ClassId"], csv_path)
        long = pd.DataFrame({"ImageId": ids, "ClassId": classes, "EncodedPixels": raw["EncodedPixels"]})
    else:
        raise ValueError(
            f"{csv_path}: unknown columns {columns}; expected ImageId,ClassId,EncodedPixels "
            "or ImageId_ClassId,EncodedPixels"
        )
    _check_image_ids(long["ImageId"], csv_path)
    long["ClassId"] = _class_ids(long["ClassId"], csv_path)
    long["EncodedPixels"] = long["EncodedPixels"].str.strip()
    duplicated = long.duplicated(["ImageId", "ClassId"], keep="first")
    if duplicated.any():
        row = _first_bad(duplicated)
        raise ValueError(
            f"{csv_path} line {row + 2}: ImageId {long['ImageId'].iloc[row]!r} ClassId "
            f"{long['ClassId'].iloc[row]} appears twice"
        )
    return long


def read_classes(dataset_dir: str | os.PathLike) -> dict[int, str]:
    """``{class_id: name}`` from ``classes.csv``; Severstal's 4 numbered classes if absent."""
    path = Path(dataset_dir) / "classes.csv"
    if not path.is_file():
        return {i: f"class {i}" for i in range(1, 5)}
    table = files.read_csv(path, dtype=str, keep_default_na=False)
    missing = {"ClassId", "Name"} - set(table.columns)
    if missing:
        raise ValueError(f"{path}: missing columns {sorted(missing)}; expected ClassId,Name")
    ids = _class_ids(table["ClassId"], path)
    repeated = ids.duplicated()
    if repeated.any():
        row = _first_bad(repeated)
        raise ValueError(f"{path} line {row + 2}: ClassId {ids.iloc[row]} appears twice")
    return {int(i): str(n) for i, n in zip(ids, table["Name"])}


def write_classes(dataset_dir: str | os.PathLike, names: dict[int, str]) -> Path:
    """Write ``classes.csv`` atomically."""
    table = pd.DataFrame({"ClassId": list(names), "Name": list(names.values())})
    return files.atomic_write_text(Path(dataset_dir) / "classes.csv", table.to_csv(index=False))


def read_train_csv(
    csv_path: str | os.PathLike,
    images_dir: str | os.PathLike | None = None,
    n_classes: int | None = None,
    shape: tuple[int, int] | None = None,
    validate: bool = True,
) -> pd.DataFrame:
    """Read a Severstal ``train.csv`` (either Kaggle layout) into a wide table.

    ``images_dir``: images there but absent from the CSV are added as defect-free, and
    CSV rows naming a missing image raise ``ValueError``. Image sizes come from ``shape``
    (all images alike, as in Severstal's 256x1600) or from the image headers.
    ``validate`` decodes every RLE; a bad one raises ``ValueError`` naming ImageId and ClassId.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"train.csv not found: {csv_path}")
    long = _read_long(csv_path)
    if n_classes is not None:
        n_classes = checks.integer("n_classes", n_classes, 1, MAX_CLASSES)
    n_classes = int(n_classes or max(4, long["ClassId"].max() if len(long) else 0))
    too_big = long["ClassId"] > n_classes
    if too_big.any():
        row = int(np.flatnonzero(too_big.to_numpy())[0])
        raise ValueError(f"{csv_path} line {row + 2}: ClassId {long['ClassId'].iloc[row]} > n_classes={n_classes}")
    pivot = long.pivot(index="ImageId", columns="ClassId", values="EncodedPixels")
    empty = pd.Series("", index=pivot.index, dtype=str)
    wide = pd.DataFrame(
        {c: pivot[c].fillna("") if c in pivot.columns else empty for c in range(1, n_classes + 1)}, index=pivot.index
    ).astype(str)
    if images_dir is not None:
        present = [p.name for p in files.list_images(images_dir)]
        missing = wide.index.difference(present)
        if len(missing):
            raise ValueError(
                f"{csv_path}: {len(missing)} ImageId(s) not found in {images_dir}, e.g. {list(missing[:3])}"
            )
        wide = wide.reindex(sorted(set(present) | set(wide.index)), fill_value="")
    wide = wide.sort_index()
    wide.index.name = "ImageId"
    if shape is not None:
        height, width = rle.validate_shape(shape)
        wide["Height"], wide["Width"] = height, width
    elif images_dir is not None:
        sizes = [files.image_size(Path(images_dir) / name) for name in wide.index]
        wide["Height"] = [h for h, _ in sizes]
        wide["Width"] = [w for _, w in sizes]
    if validate and "Height" in wide:
        for image_id, row in wide.iterrows():
            decode_masks(row, image_id=image_id)
    return wide


def read_dataset(dataset_dir: str | os.PathLike, validate: bool = True) -> pd.DataFrame:
    """Wide table of a dataset folder (``train.csv`` + ``train_images/``, classes from ``classes.csv``)."""
    dataset_dir = Path(dataset_dir)
    if not (dataset_dir / "train.csv").is_file():
        raise FileNotFoundError(
            f"no dataset in {dataset_dir} (train.csv not found): write one with notebooks/00_prepare_data.ipynb "
            "(python3 -m helpers.run --only 00 makes data/synthetic-smoke; "
            "-p dataset=... -p source_dir=... -p data_dir=... converts a real one)"
        )
    n_classes = max(read_classes(dataset_dir))
    return read_train_csv(dataset_dir / "train.csv", dataset_dir / "train_images", n_classes=n_classes, validate=validate)


def decode_masks(row: pd.Series, image_id: str | None = None) -> np.ndarray:
    """Decode one wide-table row into a uint8 ``(H, W, C)`` mask stack.

    Errors name the ImageId and ClassId of the bad RLE.
    """
    image_id = image_id if image_id is not None else row.name
    shape = (int(row["Height"]), int(row["Width"]))
    classes = class_columns(row.to_frame().T)
    masks = np.zeros(shape + (len(classes),), dtype=np.uint8)
    for k, class_id in enumerate(classes):
        try:
            masks[..., k] = rle.decode(row[class_id], shape)
        except ValueError as err:
            raise ValueError(f"ImageId {image_id} ClassId {class_id}: {err}") from None
    return masks


def encode_masks(masks: np.ndarray) -> list[str]:
    """RLE strings of each channel of an ``(H, W, C)`` mask stack."""
    return [rle.encode(m) for m in unstack_masks(masks)]


def stack_masks(masks: list[np.ndarray]) -> np.ndarray:
    """Stack C masks of shape ``(H, W)`` into a uint8 ``(H, W, C)`` array."""
    if not masks:
        raise ValueError("stack_masks needs at least one (H, W) mask")
    shapes = {np.shape(m) for m in masks}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(f"masks must all be 2-D with the same shape, got {sorted(shapes)}")
    return np.stack([np.asarray(m, dtype=np.uint8) for m in masks], axis=-1)


def unstack_masks(masks: np.ndarray) -> list[np.ndarray]:
    """Split an ``(H, W, C)`` stack into C masks of shape ``(H, W)``."""
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks must be (H, W, C), got shape {masks.shape}")
    return [masks[..., k] for k in range(masks.shape[-1])]


def long_table(wide: pd.DataFrame, keep_empty: bool = False) -> pd.DataFrame:
    """``ImageId, ClassId, EncodedPixels`` rows, sorted; empty masks dropped unless ``keep_empty``."""
    classes = class_columns(wide)
    long = (
        wide[classes]
        .rename_axis("ImageId")
        .reset_index()
        .melt(id_vars="ImageId", var_name="ClassId", value_name="EncodedPixels")
    )
    long["ClassId"] = long["ClassId"].astype(int)
    long["EncodedPixels"] = long["EncodedPixels"].fillna("").astype(str)
    if not keep_empty:
        long = long[long["EncodedPixels"] != ""]
    return long.sort_values(["ImageId", "ClassId"]).reset_index(drop=True)


def _to_csv(table: pd.DataFrame) -> str:
    buffer = io.StringIO()
    table.to_csv(buffer, index=False, lineterminator="\n")
    return buffer.getvalue()


def _check_unique_ids(wide: pd.DataFrame) -> None:
    repeated = wide.index[wide.index.duplicated()]
    if len(repeated):
        raise ValueError(f"ImageId {repeated[0]!r} appears more than once ({len(repeated)} repeated id(s)); "
                         "each image must have one row")


def write_train_csv(wide: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write Kaggle's ``ImageId,ClassId,EncodedPixels`` (defects only) atomically."""
    _check_unique_ids(wide)
    return files.atomic_write_text(path, _to_csv(long_table(wide)))


def write_submission(
    wide: pd.DataFrame, path: str | os.PathLike, layout: str = SUBMISSION_LAYOUTS[0]
) -> Path:
    """Write a submission with a row for every ImageId x ClassId (empty mask = empty string), atomically."""
    checks.choice("layout", layout, SUBMISSION_LAYOUTS)
    _check_unique_ids(wide)
    long = long_table(wide, keep_empty=True)
    if layout == SUBMISSION_LAYOUTS[0]:
        table = long[["ImageId", "EncodedPixels", "ClassId"]]
    else:
        table = pd.DataFrame(
            {"ImageId_ClassId": long["ImageId"] + "_" + long["ClassId"].astype(str), "EncodedPixels": long["EncodedPixels"]}
        )
    return files.atomic_write_text(path, _to_csv(table))


def read_sample_submission(path: str | os.PathLike) -> pd.DataFrame:
    """The ``ImageId, ClassId`` rows of a Kaggle sample submission (either layout), in file order.

    ``attrs["layout"]`` is the header, one of :data:`SUBMISSION_LAYOUTS`. Repeated rows, unknown
    headers and bad ids raise ``ValueError`` naming the file and line.
    """
    path = Path(path)
    raw = files.read_csv(path, dtype=str, keep_default_na=False)
    layout = ",".join(raw.columns)
    checks.choice(f"{path}: the header", layout, SUBMISSION_LAYOUTS)
    if layout == SUBMISSION_LAYOUTS[0]:
        ids, classes = raw["ImageId"], raw["ClassId"]
    else:
        ids, classes = _split_image_class(raw["ImageId_ClassId"], path)
    _check_image_ids(ids, path)
    table = pd.DataFrame({"ImageId": ids.to_numpy(), "ClassId": _class_ids(classes, path).to_numpy()})
    repeated = table.duplicated()
    if repeated.any():
        row = _first_bad(repeated)
        raise ValueError(f"{path} line {row + 2}: ImageId {table['ImageId'].iloc[row]!r} ClassId "
                         f"{table['ClassId'].iloc[row]} appears twice")
    table.attrs["layout"] = layout
    return table


def write_submission_like(wide: pd.DataFrame, sample_path: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Write ``wide``'s masks in exactly the rows, order and layout of a Kaggle sample submission, then check it.

    Every image of the sample must be predicted and nothing else; the file is written atomically and
    read back: same ``ImageId, ClassId`` rows in the same order, every RLE decoding (against
    ``Height``/``Width`` when ``wide`` has them).
    """
    sample = read_sample_submission(sample_path)
    _check_unique_ids(wide)
    predicted, wanted = set(wide.index), set(sample["ImageId"])
    for names, what in ((sorted(wanted - predicted), "images of the sample submission were not predicted"),
                        (sorted(predicted - wanted), "predicted images are not in the sample submission")):
        if names:
            raise ValueError(f"{sample_path}: {len(names)} {what}, e.g. {names[:3]}")
    unknown = sorted(set(sample["ClassId"]) - set(class_columns(wide)))
    if unknown:
        raise ValueError(f"{sample_path}: ClassId {unknown[0]} is not a class of the predictions {class_columns(wide)}")
    encoded = [wide.at[image_id, class_id] for image_id, class_id in zip(sample["ImageId"], sample["ClassId"])]
    if "Height" in wide and "Width" in wide:
        for (image_id, class_id), text in zip(zip(sample["ImageId"], sample["ClassId"]), encoded):
            shape = (int(wide.at[image_id, "Height"]), int(wide.at[image_id, "Width"]))
            error = rle.problem(text, shape)
            if error:
                raise ValueError(f"ImageId {image_id} ClassId {class_id}: {error}")
    if sample.attrs["layout"] == SUBMISSION_LAYOUTS[0]:
        table = pd.DataFrame({"ImageId": sample["ImageId"], "EncodedPixels": encoded, "ClassId": sample["ClassId"]})
    else:
        table = pd.DataFrame({"ImageId_ClassId": sample["ImageId"] + "_" + sample["ClassId"].astype(str),
                              "EncodedPixels": encoded})
    written = files.atomic_write_text(path, _to_csv(table))
    back = read_sample_submission(written)
    if back.attrs["layout"] != sample.attrs["layout"] or not back[["ImageId", "ClassId"]].equals(sample[["ImageId", "ClassId"]]):
        raise ValueError(f"{written}: does not read back with the rows of {sample_path}")
    return written


def read_splits(dataset_dir: str | os.PathLike) -> pd.DataFrame:
    """``splits.csv`` as a table indexed by ImageId with columns ``split`` and ``group``."""
    path = Path(dataset_dir) / "splits.csv"
    if not path.is_file():
        raise FileNotFoundError(f"splits.csv not found in {dataset_dir}")
    table = files.read_csv(path, dtype=str, keep_default_na=False)
    missing = {"ImageId", "split", "group"} - set(table.columns)
    if missing:
        raise ValueError(f"{path}: missing columns {sorted(missing)}")
    repeated = table["ImageId"].duplicated()
    if repeated.any():
        row = _first_bad(repeated)
        raise ValueError(f"{path} line {row + 2}: ImageId {table['ImageId'].iloc[row]!r} appears twice")
    return table.set_index("ImageId")


def write_splits(dataset_dir: str | os.PathLike, splits: pd.DataFrame) -> Path:
    """Write ``splits.csv`` (``ImageId,split,group``) atomically."""
    table = splits.reset_index()[["ImageId", "split", "group"]].sort_values("ImageId")
    return files.atomic_write_text(Path(dataset_dir) / "splits.csv", _to_csv(table))
