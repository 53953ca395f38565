"""Helpers for the industrial defect recognition notebooks.

Import submodules explicitly (``from helpers import rle``); importing the package
itself loads nothing heavy and has no side effects. Keras/TensorFlow are only
imported through :mod:`helpers.backend`.
"""

__version__ = "0.1.0"

__all__ = [
    "audit",
    "augment",
    "backend",
    "benchmark",
    "checks",
    "convert",
    "datasets",
    "eda",
    "export",
    "explain",
    "files",
    "losses",
    "metrics",
    "models",
    "outputs",
    "pipeline",
    "postprocess",
    "predict",
    "rle",
    "run",
    "severstal",
    "splits",
    "synth",
    "synth_chest",
    "train",
    "viz",
]
