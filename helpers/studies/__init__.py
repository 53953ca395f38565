"""Experiments built on data and models: transfer comparison, explanations, weak labels, speed profiling, the RLE benchmark.
"""

__all__ = [
    "explain",
    "profiling",
    "rle_benchmark",
    "transfer",
    "weak",
]
