"""Models: builders per architecture, encoder weight files, losses, metrics, training (one machine or several), post-processing and saved runs.

Imports only :mod:`helpers.core` and :mod:`helpers.backend`.
"""

__all__ = [
    "builders",
    "distributed",
    "keras_metrics",
    "losses",
    "metrics",
    "postprocess",
    "runs",
    "train",
    "weight_files",
]
