"""Formats and plumbing every other part uses: RLE, the Severstal layout, files, argument checks, output folders, plots, MLflow tracking.

Imports nothing else of :mod:`helpers`.
"""

__all__ = [
    "checks",
    "files",
    "outputs",
    "rle",
    "severstal",
    "tracking",
    "viz",
]
