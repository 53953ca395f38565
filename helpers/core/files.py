"""Reading and writing image and table files, with errors that name the file."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = [
    "atomic_write_json",
    "check_same_device",
    "link_tree",
    "recover_folder",
    "replacing_folder",
    "swap_folder",
    "atomic_write_text",
    "content_hash",
    "decode_grey",
    "ImageError",
    "image_header",
    "image_size",
    "inside",
    "list_images",
    "read_csv",
    "read_grey",
    "read_json",
    "read_label_image",
    "read_text",
    "read_text_lines",
    "sixteen_to_eight_bits",
    "write_image",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
MAX_IMAGE_PIXELS = 89_478_485  # Pillow's default bomb limit (about 9459x9459), applied to every image we open
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
GREY_MODES = ("1", "L", "P", "RGB", "RGBA", "LA", *SIXTEEN_BIT_MODES)  # the pixel formats read_grey converts
DECODED_FORMATS = ("PNG", "JPEG", "BMP", "TIFF")  # what decode_grey opens (the formats of IMAGE_SUFFIXES)
IMAGE_ERROR_KINDS = ("unreadable", "too_large", "corrupt", "mode")


class ImageError(ValueError):
    """A ``ValueError`` about one image; ``kind`` is one of :data:`IMAGE_ERROR_KINDS`: not an image
    (``unreadable``), over a pixel limit (``too_large``), damaged pixel data (``corrupt``), or a pixel
    format with no grey conversion (``mode``)."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes it private (0600); written data is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | os.PathLike, value: object) -> Path:
    """Write ``value`` as indented JSON to ``path`` atomically (a reader sees the old file or the new one)."""
    return atomic_write_text(path, json.dumps(value, indent=2) + "\n")


def read_json(path: str | os.PathLike) -> object:
    """A JSON file; ``ValueError`` naming the file (and line) when it is empty, truncated or not UTF-8."""
    path = Path(path)
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text (byte {err.start}); expected a JSON file") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} line {err.lineno}: not valid JSON ({err.msg}); the file may be truncated") from None


def _file_bytes(path: Path) -> bytes:
    """A file's bytes, gunzipped when it is a gzip file (``ValueError`` naming it when that fails)."""
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise ValueError(f"{path}: not a readable gzip file ({err}); the download may be truncated") from None


def read_text(path: str | os.PathLike, what: str = "text") -> str:
    """A UTF-8 text file (BOM accepted, gzip unpacked); UTF-16 or other bytes raise ``ValueError`` naming file and line."""
    path = Path(path)
    raw = _file_bytes(path)
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")) or (len(raw) > 1 and b"\x00" in raw[:64]):
        raise ValueError(f"{path}: looks like UTF-16 {what}; save it as UTF-8")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ValueError(f"{path} line {line}: byte {raw[err.start]:#04x} is not UTF-8 (Latin-1 or another "
                         "encoding?); save the file as UTF-8") from None


def read_text_lines(path: str | os.PathLike) -> list[tuple[int, str]]:
    """Non-blank lines of a UTF-8 text file as ``(line number, stripped text)`` (errors as :func:`read_text`)."""
    text = read_text(path)
    return [(number, line.strip()) for number, line in enumerate(text.split("\n"), start=1) if line.strip()]


def read_csv(path: str | os.PathLike, **options) -> "pd.DataFrame":
    """``pandas.read_csv`` of a UTF-8 file (BOM accepted, gzip unpacked), with errors naming the file and line.

    Refuses UTF-16, non-UTF-8 bytes (e.g. Latin-1) and empty files instead of reading garbage.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CSV file not found: {path}")
    text = read_text(path)
    if not text.strip():
        raise ValueError(f"{path}: the file is empty; expected a header line and rows")
    try:
        return pd.read_csv(io.StringIO(text), **options)
    except ValueError as err:  # pandas' ParserError is a ValueError; so is usecols naming a missing column
        raise ValueError(f"{path}: {err}") from None


def inside(root: str | os.PathLike, relative: str, what: str = "path") -> Path:
    """``root / relative``, refusing absolute paths and ``..`` steps that leave ``root`` (``ValueError``).

    The check is on the path's text: symbolic links inside ``root`` are followed as the user made them.
    """
    normal = os.path.normpath(str(relative).replace("\\", "/"))
    if os.path.isabs(str(relative)) or normal == ".." or normal.startswith("../"):
        raise ValueError(f"{what} {relative!r} points outside {root}")
    return Path(root) / relative


def _check_pixels(image: Image.Image, where: str, max_pixels: int, max_size: tuple[int, int] | None = None) -> None:
    """Refuse (``ImageError`` ``too_large``) an image whose header declares more than ``max_pixels`` or exceeds ``max_size``."""
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise ImageError(f"refusing image {where}: its header declares {height}x{width} pixels (HxW), more than "
                         f"the limit of {max_pixels:,} (a decompression bomb, or an image to tile first)", "too_large")
    if max_size is not None and (height > max_size[0] or width > max_size[1]):
        image.close()
        raise ImageError(f"refusing image {where}: it is {height}x{width} (HxW), larger than the model input "
                         f"{max_size[0]}x{max_size[1]}", "too_large")


def _open(path: Path) -> Image.Image:
    """Open an image's header; ``ValueError`` naming the file for non-images and decompression bombs."""
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        image = Image.open(path)
    except Image.DecompressionBombError as err:
        raise ImageError(f"refusing image {path}: {err}", "too_large") from None
    except (UnidentifiedImageError, OSError) as err:
        raise ImageError(f"cannot read image {path}: {err}", "unreadable") from None
    _check_pixels(image, str(path), MAX_IMAGE_PIXELS)
    return image


def image_size(path: str | os.PathLike, decode: bool = False) -> tuple[int, int]:
    """``(height, width)`` of an image file, from its header; ``decode`` also decodes the pixels,
    so a truncated or damaged file raises ``ValueError`` naming it."""
    path = Path(path)
    with _open(path) as image:
        width, height = image.size
        if decode:
            try:
                image.load()
            except (OSError, ValueError, SyntaxError) as err:
                raise ValueError(f"corrupt or truncated image {path}: {err}") from None
    return height, width


def image_header(path: str | os.PathLike) -> tuple[int, int, str, int]:
    """``(height, width, mode, bands)`` from an image's header (no pixel data decoded)."""
    with _open(Path(path)) as image:
        width, height = image.size
        return height, width, image.mode, len(image.getbands())


def sixteen_to_eight_bits(array: np.ndarray) -> np.ndarray:
    """Map 16-bit grey values 0..65535 linearly onto 0..255 (``round(v / 257)``): one rule for every image.

    ``v = 257 * g`` gives back ``g`` exactly, so 8-bit data stored in 16 bits is unchanged.
    """
    array = np.asarray(array)
    if array.size and (array.min() < 0 or array.max() > 65535):
        raise ValueError(f"16-bit grey values must lie in 0..65535, found {array.min()}..{array.max()}")
    return ((array.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _grey(image: Image.Image, where: str) -> np.ndarray:
    """Decode an opened image to a uint8 ``(H, W)`` grey array (the rules of :func:`read_grey`)."""
    if image.format == "JPEG" and image.mode == "RGB":
        image.draft("L", image.size)  # let libjpeg decode luma only: same pixels, about 2x faster
    try:
        image.load()
    except (OSError, ValueError, SyntaxError) as err:
        raise ImageError(f"corrupt or truncated image {where}: {err}", "corrupt") from None
    if image.mode not in GREY_MODES:
        raise ImageError(f"unsupported image mode {image.mode!r} in {where}; readable: {', '.join(GREY_MODES)}", "mode")
    if image.mode in SIXTEEN_BIT_MODES:
        try:
            return sixteen_to_eight_bits(np.asarray(image))
        except ValueError as err:
            raise ImageError(f"{where}: {err}", "mode") from None
    if image.mode in ("RGB", "RGBA"):
        rgb = np.asarray(image.convert("RGB"))
        if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
            return np.ascontiguousarray(rgb[..., 0])
    return np.asarray(image.convert("L"))


def read_grey(path: str | os.PathLike) -> np.ndarray:
    """Read an image as a uint8 ``(H, W)`` grey array (colour is converted with ITU-R 601 luma).

    Grey images stored as 3 identical channels (as in Severstal and NEU-Seg) come back exactly;
    JPEGs are decoded straight to luma by libjpeg. 16-bit grey images go through
    :func:`sixteen_to_eight_bits` (the full 0..65535 range onto 0..255, the same for every image).
    Problems are :class:`ImageError` (a ``ValueError``) naming the file.
    """
    path = Path(path)
    with _open(path) as image:
        return _grey(image, str(path))


def decode_grey(data: bytes, name: str = "upload", max_pixels: int = MAX_IMAGE_PIXELS,
                max_size: tuple[int, int] | None = None) -> np.ndarray:
    """:func:`read_grey` of an image file's bytes (e.g. an upload): a uint8 ``(H, W)`` array.

    Only :data:`DECODED_FORMATS` are opened. The header is checked before any pixel is decoded:
    more than ``max_pixels`` pixels, or larger than ``max_size = (H, W)``, is refused. Problems are
    :class:`ImageError` naming ``name``, whose ``kind`` tells them apart.
    """
    where = repr(name)
    if not data:
        raise ImageError(f"cannot read image {where}: the file is empty", "unreadable")
    try:
        image = Image.open(io.BytesIO(data), formats=DECODED_FORMATS)
    except Image.DecompressionBombError as err:
        raise ImageError(f"refusing image {where}: {err}", "too_large") from None
    except (UnidentifiedImageError, OSError):
        raise ImageError(f"cannot read image {where}: not an image file of a readable format "
                         f"({', '.join(DECODED_FORMATS)})", "unreadable") from None
    _check_pixels(image, where, max_pixels, max_size)
    with image:
        return _grey(image, where)


def read_label_image(path: str | os.PathLike) -> tuple[np.ndarray, str]:
    """Raw label values of a mask file as ``(array (H, W), PIL mode)``.

    Unlike :func:`read_grey`, palette (``P``) masks give their palette *indices*
    and 1-bit masks give 0/1, so index masks keep their class ids. Grey masks stored as
    identical RGB channels give one channel; colour masks raise ``ValueError``. The header is
    checked as in :func:`read_grey` before any pixel is decoded (decompression bombs are refused).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mask not found: {path}")
    with _open(path) as image:
        try:
            image.load()
        except (OSError, ValueError, SyntaxError) as err:
            raise ImageError(f"cannot read mask {path}: {err}", "corrupt") from None
        mode = image.mode
        array = np.asarray(image)
    if mode == "1":
        array = array.astype(np.uint8)
    elif array.ndim == 3:
        if mode in ("LA", "PA"):
            array = array[..., 0]
        elif (array[..., :3] == array[..., :1]).all():
            array = array[..., 0]
        else:
            raise ValueError(f"mask {path} is a colour ({mode}) image; expected one channel of labels")
    return np.ascontiguousarray(array), mode


def write_image(path: str | os.PathLike, array: np.ndarray, quality: int = 90) -> Path:
    """Write a uint8 ``(H, W)`` or ``(H, W, 3)`` array; JPEG quality applies to .jpg files."""
    path = Path(path)
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"write_image needs uint8, got {array.dtype} for {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"quality": int(quality)} if path.suffix.lower() in (".jpg", ".jpeg") else {}
    Image.fromarray(array).save(path, **options)
    return path


def content_hash(path: str | os.PathLike, algorithm: str = "sha1") -> str:
    """Hex digest of a file's bytes: SHA-1 by default (exact-duplicate audits), ``sha256`` for checksums."""
    from helpers.core import checks

    digest = hashlib.new(checks.choice("algorithm", algorithm, ("sha1", "sha256")))
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


# ----------------------------------------------------------------------------- whole-folder replacement
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True  # a process of another user
    except (OSError, OverflowError):
        return False
    return True


def link_tree(source: Path, target: Path) -> None:
    """Recreate ``source`` (file, folder or link) at ``target`` with hard links (copies where links fail)."""
    if source.is_symlink():
        os.symlink(os.readlink(source), target)
    elif source.is_dir():
        target.mkdir()
        for child in sorted(source.iterdir()):
            link_tree(child, target / child.name)
        shutil.copystat(source, target)
    else:
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)


def check_same_device(root: Path, entry: Path) -> None:
    """Refuse an entry of ``root`` on another file system (a mount point inside a folder we replace whole)."""
    device = root.stat().st_dev
    if entry.is_symlink():
        return  # carried as a link, its target is not touched
    for folder, subfolders, _ in os.walk(entry):
        if Path(folder).lstat().st_dev != device:
            raise OSError(f"{folder} is on another file system than {root}; write into a folder of its own "
                          "(it is replaced whole)")
        subfolders[:] = [d for d in subfolders if not Path(folder, d).is_symlink()]


def _old_sibling(final: Path) -> Path:
    return final.with_name(f".{final.name}.old")


def recover_folder(final: str | os.PathLike) -> None:
    """Repair what a killed :func:`replacing_folder` left beside ``final``: restore or delete ``.old``, delete dead builds."""
    final = Path(final)
    old = _old_sibling(final)
    if old.is_dir():
        if final.exists():
            shutil.rmtree(old)  # killed after the swap, before the old folder was deleted
        else:
            os.rename(old, final)  # killed between the two renames of the swap
    for build in final.parent.glob(f".{final.name}.building-*"):
        pid = build.name.rsplit("-", 1)[-1]
        if build.is_dir() and pid.isdigit() and (int(pid) == os.getpid() or not _pid_alive(int(pid))):
            shutil.rmtree(build, ignore_errors=True)


def swap_folder(building: Path, final: Path) -> None:
    """Put the folder ``building`` in place of ``final`` with two renames (the old one deleted after)."""
    if not final.exists():
        os.rename(building, final)
        return
    old = _old_sibling(final)
    os.rename(final, old)
    try:
        os.rename(building, final)
    except BaseException:
        os.rename(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def replacing_folder(final: str | os.PathLike, carry: Iterable[str | os.PathLike] = ()) -> Iterator[Path]:
    """Yield an empty hidden sibling of ``final`` to fill; when the block ends it replaces ``final`` at once.

    A reader sees the old folder or the new one, never a mix (except the instant between two renames,
    when ``final`` is missing; :func:`recover_folder`, run first here, repairs a kill there). On an
    error the new folder is deleted and ``final`` is untouched. ``carry``: entries of the old folder
    to keep in the new one (hard links). A link to a folder has its target replaced.
    """
    final = Path(os.path.abspath(final)).resolve()
    if final.parent == final:
        raise ValueError(f"cannot replace the root folder {final}")
    recover_folder(final)
    if final.exists() and not final.is_dir():
        raise NotADirectoryError(f"{final} is a file, not a folder")
    carried = [Path(entry) for entry in carry]
    for entry in carried:
        check_same_device(final, entry)
    final.parent.mkdir(parents=True, exist_ok=True)
    building = final.with_name(f".{final.name}.building-{os.getpid()}")
    if building.exists():
        shutil.rmtree(building)
    building.mkdir()
    try:
        yield building
        for entry in carried:
            if not (building / entry.name).exists():
                link_tree(entry, building / entry.name)
        swap_folder(building, final)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
