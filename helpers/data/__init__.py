"""Datasets: converters of public data, audits, EDA, splits, augmentation (albumentations and TF ops), the tf.data input pipeline, sharded TFRecord corpora, radiograph tables and (in :mod:`helpers.data.synth`) the built-in synthetic data.

Imports only :mod:`helpers.core` and :mod:`helpers.backend`.
"""

__all__ = [
    "audit",
    "augment",
    "convert",
    "eda",
    "pipeline",
    "radiographs",
    "records",
    "splits",
    "synth",
    "tf_augment",
]
