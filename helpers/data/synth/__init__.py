"""Built-in synthetic data, generated with a seed: steel strips, chest radiographs, weld radiographs.
"""

__all__ = [
    "chest",
    "steel",
    "weld",
]
