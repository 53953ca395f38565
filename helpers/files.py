"""Reading and writing image and table files, with errors that name the file."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = [
    "atomic_write_text",
    "content_hash",
    "image_size",
    "list_images",
    "read_grey",
    "write_image",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


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


def _open(path: Path) -> Image.Image:
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        return Image.open(path)
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from None


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(height, width)`` of an image file, read from its header only."""
    with _open(Path(path)) as image:
        width, height = image.size
    return height, width


def read_grey(path: str | os.PathLike) -> np.ndarray:
    """Read an image as a uint8 ``(H, W)`` grey array (colour is converted with ITU-R 601 luma).

    Grey images stored as 3 identical channels (as in Severstal and NEU-Seg) come back exactly;
    JPEGs are decoded straight to luma by libjpeg.
    """
    path = Path(path)
    with _open(path) as image:
        if image.format == "JPEG" and image.mode == "RGB":
            image.draft("L", image.size)  # let libjpeg decode luma only: same pixels, about 2x faster
        try:
            image.load()
        except OSError as err:
            raise ValueError(f"corrupt or truncated image {path}: {err}") from None
        if image.mode in ("1", "L", "P", "RGB", "RGBA", "LA", "I;16", "I"):
            if image.mode in ("I;16", "I"):
                array = np.asarray(image, dtype=np.float64)
                peak = 65535.0 if array.max() > 255 else 255.0
                return np.round(array / peak * 255).astype(np.uint8)
            if image.mode in ("RGB", "RGBA"):
                rgb = np.asarray(image.convert("RGB"))
                if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
                    return np.ascontiguousarray(rgb[..., 0])
            return np.asarray(image.convert("L"))
        raise ValueError(f"unsupported image mode {image.mode!r} in {path}")


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


def content_hash(path: str | os.PathLike) -> str:
    """SHA-1 of a file's bytes (for exact-duplicate audits)."""
    digest = hashlib.sha1()
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
