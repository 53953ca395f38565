"""Models: builders per architecture, encoder weight files, losses, metrics, training, post-processing and saved runs.

Imports only :mod:`helpers.core` and :mod:`helpers.backend`.
"""

__all__ = [
    "builders",
    "keras_metrics",
    "losses",
    "metrics",
    "postprocess",
    "runs",
    "train",
    "weight_files",
]
