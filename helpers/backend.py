"""The one place that selects the Keras flavour, then imports TensorFlow, Keras 2 and segmentation-models.

``SM_FRAMEWORK=tf.keras`` and ``TF_USE_LEGACY_KERAS=1`` must be set before the first Keras
import, so every module that needs Keras imports it from here::

    from helpers.backend import keras, sm, tf
"""

import contextlib
import io
import os

os.environ["SM_FRAMEWORK"] = "tf.keras"
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402
with contextlib.redirect_stdout(io.StringIO()):  # it prints the framework it chose
    import segmentation_models as sm  # noqa: E402

__all__ = ["keras", "sm", "tf"]
