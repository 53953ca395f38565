"""Run-length encoding in the Kaggle Severstal convention.

Pixels are numbered column by column (top to bottom, then left to right),
starting at 1. A mask is written as ``"start length start length ..."``;
an empty mask is the empty string.

>>> import numpy as np
>>> m = np.array([[0, 1], [1, 1]], dtype=np.uint8)
>>> encode(m)
'2 3'
>>> decode('2 3', (2, 2)).tolist()
[[0, 1], [1, 1]]
"""

from __future__ import annotations

import re

import numpy as np

__all__ = ["decode", "encode", "parse", "problem", "runs", "validate_shape"]


def validate_shape(shape: tuple[int, int]) -> tuple[int, int]:
    """Return ``(height, width)`` as ints; raise ``ValueError`` unless both are >= 1."""
    try:
        height, width = (int(v) for v in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be (height, width), got {shape!r}") from None
    if height < 1 or width < 1:
        raise ValueError(f"shape must have height >= 1 and width >= 1, got {shape!r}")
    return height, width


def runs(mask: np.ndarray) -> np.ndarray:
    """Runs of a 2-D 0/1 or bool mask as an ``(N, 2)`` int array of 1-based ``(start, length)``."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {mask.shape}")
    if mask.dtype != bool:
        if mask.dtype.kind in "ui":
            valid = mask.size == 0 or (mask.max() <= 1 and mask.min() >= 0)
        else:
            valid = bool(((mask == 0) | (mask == 1)).all())
        if not valid:
            raise ValueError(f"mask must hold only 0 and 1 (or bool), found values {np.unique(mask)[:8].tolist()}")
        mask = mask != 0
    flat = np.empty(mask.size + 2, dtype=bool)
    flat[0] = flat[-1] = False
    flat[1:-1] = mask.ravel(order="F")
    edges = np.flatnonzero(flat[1:] != flat[:-1])
    starts, stops = edges[0::2], edges[1::2]
    return np.stack([starts + 1, stops - starts], axis=1)


def encode(mask: np.ndarray) -> str:
    """Encode a 2-D ``(H, W)`` bool or 0/1 mask as a Kaggle RLE string (``""`` if empty)."""
    return " ".join(map(str, runs(mask).ravel().tolist()))


def _check_pairs(n_tokens: int) -> None:
    if n_tokens % 2:
        raise ValueError(f"RLE has an odd number of tokens ({n_tokens}); expected 'start length' pairs")


_PLAIN = re.compile(r"[0-9]{1,18}(?: [0-9]{1,18})*")  # what Kaggle writes: digits, single spaces, no sign


def _parse_tokens(rle: str) -> np.ndarray:
    """The integers of an RLE string; ``ValueError`` naming the first bad token."""
    if _PLAIN.fullmatch(rle):  # C-speed parse; 18 digits cannot overflow int64
        values = np.fromstring(rle, dtype=np.int64, sep=" ")
        _check_pairs(values.size)
        return values
    tokens = rle.split()
    _check_pairs(len(tokens))
    try:
        return np.array(tokens, dtype=np.int64)
    except (ValueError, OverflowError):
        for position, token in enumerate(tokens, start=1):
            try:
                value = int(token)
            except ValueError:
                raise ValueError(f"RLE token {position} is not an integer: {token!r}") from None
            if not -(2**63) <= value < 2**63:
                raise ValueError(f"RLE token {position} is far too large for any image: {token!r}") from None
        raise


_ALTERNATING = np.arange(4097, dtype=np.uint8) & 1  # 0, 1, 0, 1, ...: the gap/run pattern of up to 2048 runs


def parse(rle: str, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The validated runs of a Kaggle RLE string for ``shape = (H, W)``: int64 ``(starts, lengths)``, starts 1-based.

    Raises ``ValueError`` as :func:`decode` does; an empty string (or ``None``/NaN) gives two empty arrays.
    """
    height, width = validate_shape(shape)
    if rle is None or (isinstance(rle, float) and np.isnan(rle)):
        rle = ""
    if not isinstance(rle, str):
        raise ValueError(f"RLE must be a string, got {type(rle).__name__}")
    values = _parse_tokens(rle) if rle else np.empty(0, np.int64)
    starts, lengths = values[0::2], values[1::2]
    if starts.size:
        _check_runs(starts, lengths, height * width, (height, width))
    return starts, lengths


def decode(rle: str, shape: tuple[int, int]) -> np.ndarray:
    """Decode a Kaggle RLE string into a uint8 0/1 mask of ``shape = (H, W)``.

    Raises ``ValueError`` naming the problem for an odd token count, a non-integer
    token, a start < 1, a length < 1, runs that are out of order or overlap, and runs
    that go past the last pixel. Touching runs (one starting right after another
    ends) are accepted.
    """
    height, width = validate_shape(shape)
    n_pixels = height * width
    starts, lengths = parse(rle, (height, width))
    if not starts.size:
        return np.zeros((width, height), dtype=np.uint8).T
    # one pass over the pixels, no index per pixel: alternate 0/1 segments of the gap and run lengths
    counts = np.empty(2 * starts.size + 1, dtype=np.int64)
    counts[1::2] = lengths
    counts[0] = starts[0] - 1
    counts[2:-1:2] = starts[1:] - starts[:-1] - lengths[:-1]
    counts[-1] = n_pixels - (starts[-1] - 1 + lengths[-1])
    pattern = _ALTERNATING[: counts.size] if counts.size <= _ALTERNATING.size else np.arange(counts.size) % 2
    return np.repeat(pattern.astype(np.uint8, copy=False), counts).reshape(width, height).T


def _check_runs(starts: np.ndarray, lengths: np.ndarray, n_pixels: int, shape: tuple[int, int]) -> None:
    def first(bad: np.ndarray) -> int:
        return int(np.flatnonzero(bad)[0])

    if (starts < 1).any():
        i = first(starts < 1)
        raise ValueError(f"run {i + 1}: start {starts[i]} < 1 (starts are 1-based)")
    if (lengths < 1).any():
        i = first(lengths < 1)
        raise ValueError(f"run {i + 1}: length {lengths[i]} < 1")
    # bounded before any arithmetic: start + length of huge values would overflow int64
    if (starts > n_pixels).any():
        i = first(starts > n_pixels)
        raise ValueError(f"run {i + 1}: start {starts[i]} is past the last pixel {n_pixels} of a {shape[0]}x{shape[1]} image")
    if (lengths > n_pixels).any():
        i = first(lengths > n_pixels)
        raise ValueError(f"run {i + 1}: length {lengths[i]} is longer than the {n_pixels} pixels of a {shape[0]}x{shape[1]} image")
    ends = starts + lengths - 1
    if starts.size > 1 and (starts[1:] <= ends[:-1]).any():
        i = first(starts[1:] <= ends[:-1]) + 1
        kind = "is not after the previous start" if starts[i] <= starts[i - 1] else "overlaps the previous run"
        raise ValueError(
            f"run {i + 1}: start {starts[i]} {kind} (previous run {starts[i - 1]}..{ends[i - 1]}); "
            "runs must be strictly increasing and must not overlap"
        )
    if ends[-1] > n_pixels:
        raise ValueError(
            f"run {starts.size}: ends at pixel {ends[-1]}, past the last pixel {n_pixels} of a {shape[0]}x{shape[1]} image"
        )


def problem(rle: str, shape: tuple[int, int]) -> str | None:
    """What is wrong with an RLE string for ``shape = (H, W)``, or ``None`` if it decodes."""
    try:
        decode(rle, shape)
    except ValueError as err:
        return str(err)
    return None
