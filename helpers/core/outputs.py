"""Where a notebook's figures and metrics go: ``<output_dir>/figures`` and ``<output_dir>/metrics``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from helpers.core import files, tracking

__all__ = ["figures_dir", "save_figure", "save_metrics", "load_metrics"]

FIGURE_FORMATS = ("png", "pdf", "svg")


def figures_dir(output_dir: str | os.PathLike) -> Path:
    """``<output_dir>/figures``, created if needed."""
    path = Path(output_dir) / "figures"
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_figure(fig, output_dir: str | os.PathLike, name: str, formats: tuple[str, ...] = ("png",), dpi: int = 150) -> list[Path]:
    """Save a matplotlib figure as ``figures/<name>.<fmt>`` for each format; return the paths."""
    unknown = set(formats) - set(FIGURE_FORMATS)
    if unknown:
        raise ValueError(f"figure formats must be among {FIGURE_FORMATS}, got {sorted(unknown)}")
    paths = [figures_dir(output_dir) / f"{name}.{fmt}" for fmt in formats]
    for path in paths:
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return paths


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def save_metrics(output_dir: str | os.PathLike, notebook: str, metrics: dict) -> Path:
    """Write ``metrics/<notebook>.json`` atomically (numpy values become plain JSON).

    In a notebook run by hand (a Jupyter kernel the runner did not start) the run is then tracked
    in MLflow unless tracking is off (:func:`helpers.core.tracking.track_interactive`).
    """
    path = Path(output_dir) / "metrics" / f"{notebook}.json"
    files.atomic_write_text(path, json.dumps(_plain(metrics), indent=2, sort_keys=True) + "\n")
    tracking.track_interactive(output_dir, notebook)
    return path


def load_metrics(output_dir: str | os.PathLike, notebook: str) -> dict:
    """Read ``metrics/<notebook>.json``."""
    return files.read_json(Path(output_dir) / "metrics" / f"{notebook}.json")
