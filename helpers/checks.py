"""Argument checks shared by the data modules; each raises ``ValueError`` saying what is allowed."""

from __future__ import annotations

import numpy as np

__all__ = ["fraction", "positive_int", "seed"]


def positive_int(name: str, value: object) -> int:
    """``value`` as an int >= 1 (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def seed(value: object) -> int:
    """A random seed: an int >= 0 (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"seed must be an integer >= 0, got {value!r}")
    return int(value)


def fraction(value: object, name: str = "val_fraction") -> float:
    """A share in [0, 1)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not 0.0 <= number < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return number
