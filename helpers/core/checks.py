"""Argument checks shared by every module.

One convention: ``check(name, value, *limits)`` returns the value in its clean type or raises
``ValueError`` naming the argument and what is allowed, e.g.
``positive_int("epochs", 0)`` -> ``epochs must be an integer >= 1, got 0``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

__all__ = ["choice", "choices", "fraction", "integer", "number", "positive_int", "seed", "size"]


def integer(name: str, value: object, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int in ``low..high`` (either bound optional; bools refused)."""
    if low is not None and high is not None:
        allowed = f"an integer in {low}..{high}"
    elif low is not None:
        allowed = f"an integer >= {low}"
    elif high is not None:
        allowed = f"an integer <= {high}"
    else:
        allowed = "an integer"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return int(value)


def positive_int(name: str, value: object) -> int:
    """``value`` as an int >= 1."""
    return integer(name, value, low=1)


def seed(name: str, value: object) -> int:
    """A random seed: an int >= 0."""
    return integer(name, value, low=0)


def number(name: str, value: object, low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a finite float within the bounds (``*_open``: the bound itself is excluded)."""
    left = "" if low is None else f"{'>' if low_open else '>='} {low}"
    right = "" if high is None else f"{'<' if high_open else '<='} {high}"
    bounds = " and ".join(part for part in (left, right) if part)
    try:
        result = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        result = math.nan
    inside = math.isfinite(result)
    if inside and low is not None:
        inside = result > low if low_open else result >= low
    if inside and high is not None:
        inside = result < high if high_open else result <= high
    if not inside:
        raise ValueError(f"{name} must be a finite number{' ' + bounds if bounds else ''}, got {value!r}")
    return result


def fraction(name: str, value: object, zero: bool = True, one: bool = False) -> float:
    """A share in [0, 1) by default; ``zero``/``one`` say whether 0 and 1 themselves are allowed."""
    interval = ("[" if zero else "(") + "0, 1" + ("]" if one else ")")
    try:
        return number(name, value, 0.0, 1.0, low_open=not zero, high_open=not one)
    except ValueError:
        raise ValueError(f"{name} must be in {interval}, got {value!r}") from None


def _is_one_of(value: object, allowed: Sequence[object]) -> bool:
    try:
        return value in allowed
    except TypeError:  # unhashable value against a set
        return False


def choice(name: str, value: object, allowed: Sequence[object]) -> object:
    """``value`` if it is one of ``allowed``."""
    if not _is_one_of(value, allowed):
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")
    return value


def choices(name: str, values: object, allowed: Sequence[object]) -> list:
    """``values`` as a list of distinct members of ``allowed`` (empty allowed)."""
    if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple)) \
            or not all(_is_one_of(value, allowed) for value in values):
        raise ValueError(f"{name} must be a list of {list(allowed)}, got {values!r}")
    for index, value in enumerate(values):
        if value in values[:index]:
            raise ValueError(f"{name} names {value!r} twice, got {values!r}")
    return list(values)


def size(name: str, value: object, minimum: int = 1) -> tuple[int, int]:
    """``(height, width)``: two integers >= ``minimum``."""
    try:
        height, width = value  # type: ignore[misc]
        return integer(name, height, low=minimum), integer(name, width, low=minimum)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be (height, width), two integers >= {minimum}, got {value!r}") from None
