"""What a model looks at and what it has learned: Grad-CAM / Grad-CAM++, t-SNE of backbone features,
and CAMs scored against true masks (Grad-CAM pseudo-masks for weak supervision: :mod:`helpers.studies.weak`).

Everything is numpy in, numpy out. Models are single-input Keras models taking ``(N, H, W, C)``
images in their own input range (the models of :mod:`helpers.modeling.builders` take grey levels in [0, 255]).

Layers and paths
    A layer is named by its path from the model: ``"relu1"`` in a flat model,
    ``"backbone/relu1"`` for a layer of a nested ``keras.Model`` layer called ``backbone``
    (e.g. ``keras.Sequential([backbone, GlobalAveragePooling2D(), Dense(2)])``), ``"backbone"`` for
    the nested model's own output (:func:`resolve_layer`). Activations are taken *during* an eager
    forward pass of the whole model: the layer's ``call`` is wrapped for the duration of one call of
    this module and restored afterwards. No intermediate model is built, so nested and shared
    sub-models never raise "Graph disconnected", and the gradients are those of the model itself.
    A layer run several times in one forward pass (a sub-model applied to two inputs, a shared
    convolution) is taken at its ``call_index``-th run (0 = first) in the model's execution order
    (for a functional model: by graph depth, not necessarily the order of the code that built it).

Default layer (:func:`find_target_layer`)
    For a classifier output ``(B, K)``: the last convolution or activation layer with a 4-D
    output, nested models searched in layer order (the classic Grad-CAM choice; for the
    classifiers of :mod:`helpers.modeling.builders` it is the deepest backbone feature, e.g. ``relu1``).
    For a segmentation output ``(B, H, W, C)`` that rule would pick the output head, whose
    Grad-CAM is the prediction itself, so the default is the deepest backbone feature map of a
    :mod:`helpers.modeling.builders` backbone (the encoder end, as in Seg-Grad-CAM's bottleneck); other
    segmentation models must name a layer.

Scores and maps (:func:`grad_cam`)
    The score is the *pre-activation* output (logit) when the chosen output comes from a layer
    with a ``sigmoid`` or ``softmax`` activation (Dense/Conv2D ``activation=`` or an
    ``Activation`` layer), as in the Grad-CAM paper: saturated sigmoids have zero gradients, so
    confident predictions would give empty maps. The activation is switched to linear for the
    duration of the call; predicted classes and masks still use the probabilities. Classifier
    score: the target class's logit. Segmentation score: the target channel's logits summed (or
    averaged) over a region (Seg-Grad-CAM, Vinogradova et al. 2020). Grad-CAM (Selvaraju et al.
    2017): channel weights = spatial mean of the gradients; Grad-CAM++ (Chattopadhay et al. 2018,
    exponential-score closed form): weights = sum of ``alpha * relu(gradient)`` with
    ``alpha = g^2 / (2 g^2 + sum(A) g^3)`` (0 where the denominator is 0; derived for non-negative
    activations, i.e. a layer after a ReLU). Map = ReLU(weighted sum of the activation channels),
    upsampled bilinearly to the input size, divided by its maximum: values in [0, 1], maximum 1,
    and **all zeros when nothing is positive** (no evidence for the target; never NaN). Images are
    independent (the model runs with ``training=False``).

CAMs against true masks
    :func:`cam_energy_in_mask`: fraction of the CAM's sum inside the mask (the "energy-based
    pointing game", Wang et al. 2020); :func:`pointing_game` (Zhang et al. 2016): a hit when the
    CAM's maximum lies within ``tolerance`` pixels of the mask; ties: every pixel attaining the
    maximum must be within tolerance, so a flat map cannot hit by chance. Images with an **empty
    mask give NaN** (nothing to point at; left out of :func:`cam_scores`). A CAM that is all zeros
    on an image with a defect counts as energy 0 and a miss (explaining nothing is not rewarded).

Embeddings
    :func:`pooled_features` -> :func:`embed_tsne` -> :func:`embedding_scores` turns "clusters
    better" into numbers (silhouette, leave-one-out k-NN accuracy). t-SNE distorts distances, so
    report the scores on the features themselves too (``embedding_scores(features, labels)``).
    Each model (initialisation) has its own feature space: embed each separately and compare the
    panels of :func:`plot_embeddings` and their scores.

Keras/TensorFlow come only from :mod:`helpers.backend`.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.lines import Line2D
from scipy import ndimage
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from sklearn.metrics import silhouette_score
from sklearn.neighbors import NearestNeighbors
from sklearn.preprocessing import StandardScaler

from helpers.core import checks, viz
from helpers.modeling import builders
from helpers.backend import keras, tf

__all__ = [
    "CAM_CMAP",
    "MASK_COLOR",
    "METHODS",
    "PATH_SEP",
    "REDUCTIONS",
    "TSNE_EXACT_MAX",
    "TSNE_METHODS",
    "cam_energy_in_mask",
    "cam_scores",
    "embed_tsne",
    "embedding_scores",
    "find_target_layer",
    "grad_cam",
    "overlay",
    "plot_cams",
    "plot_embeddings",
    "pointing_game",
    "pooled_features",
    "resolve_layer",
]

CAM_CMAP = "inferno"
"""The one colormap of every CAM picture (perceptually uniform, readable in grey print)."""
MASK_COLOR = tuple(c / 255 for c in viz.class_color(2))
"""Outline colour of true masks drawn over CAMs (Okabe-Ito sky blue: stands out on inferno)."""
METHODS = ("gradcam", "gradcam++")
REDUCTIONS = ("sum", "mean")
PATH_SEP = "/"
TSNE_METHODS = ("exact", "barnes_hut")
TSNE_EXACT_MAX = 1000

_CONVOLUTIONS = (keras.layers.Conv2D, keras.layers.SeparableConv2D, keras.layers.DepthwiseConv2D)
_ACTIVATIONS = (
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
    keras.layers.PReLU,
    keras.layers.ThresholdedReLU,
    keras.layers.Softmax,
)
_LINEARISED = ("sigmoid", "softmax")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


# ------------------------------------------------------------------ argument checks
def _images(images: Any) -> np.ndarray:
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4:
        raise ValueError(f"images must be (N, H, W, C); got shape {images.shape}")
    return images


def _stack(array: Any, name: str, dtype: Any = np.float64) -> np.ndarray:
    array = np.asarray(array, dtype=dtype)
    if array.ndim != 3:
        raise ValueError(f"{name} must be (N, H, W); got shape {array.shape}")
    return array


def _cams_and_masks(cams: Any, masks: Any) -> tuple[np.ndarray, np.ndarray]:
    cams = _stack(cams, "cams")
    masks = _stack(masks, "masks") > 0
    if cams.shape != masks.shape:
        raise ValueError(f"cams and masks must have the same shape (N, H, W); got {cams.shape} and {masks.shape}")
    if not np.isfinite(cams).all() or (cams < 0).any():
        raise ValueError("cams must be finite and non-negative (as grad_cam returns them)")
    return cams, masks


def _output_index(model: keras.Model, output: int) -> int:
    if not model.outputs:
        raise ValueError(f"model {model.name!r} has no symbolic outputs: build it (keras.Input or model.build) first")
    if len(model.inputs) != 1:
        raise ValueError(f"model {model.name!r} has {len(model.inputs)} inputs; only single-input models are supported")
    n = len(model.outputs)
    if not isinstance(output, (int, np.integer)) or not 0 <= output < n:
        raise ValueError(f"output must be an index in [0, {n}) for model {model.name!r} with {n} output(s); got {output!r}")
    rank = len(model.outputs[output].shape)
    if rank not in (2, 4):
        raise ValueError(
            f"output {output} of model {model.name!r} has shape {tuple(model.outputs[output].shape)}: "
            "need a classifier (B, K) or a segmentation (B, H, W, C) output"
        )
    return int(output)


def _per_image(values: Any, n: int, n_classes: int, name: str) -> np.ndarray:
    """``values`` (an int or ``(n,)`` ints) as ``(n,)`` int32 class indices in [0, n_classes)."""
    array = np.asarray(values)
    if array.ndim == 0:
        array = np.full(n, array)
    if array.shape != (n,) or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must be an int or an array of {n} ints (one per image); got {values!r}")
    if ((array < 0) | (array >= n_classes)).any():
        raise ValueError(f"{name} must be class/channel indices in [0, {n_classes}); got {values!r}")
    return array.astype(np.int32)


# ------------------------------------------------------------------ layers
def _walk(model: keras.Model, prefix: str = "") -> Iterator[tuple[str, keras.layers.Layer]]:
    """``(path, layer)`` for every layer, nested models' layers right after the nested model."""
    for layer in model.layers:
        path = prefix + layer.name
        yield path, layer
        if isinstance(layer, keras.Model):
            yield from _walk(layer, path + PATH_SEP)


def _output_shape(layer: keras.layers.Layer) -> tuple | None:
    """Shape of the layer's (single) output at its first call, None when unknown or several outputs."""
    try:
        shape = layer.output_shape
    except (AttributeError, RuntimeError):  # called on inputs of different shapes
        try:
            shape = layer.get_output_shape_at(0)
        except (AttributeError, RuntimeError, ValueError):
            return None
    if isinstance(shape, list) or shape is None:
        return None
    return tuple(shape)


def _output_rank(layer: keras.layers.Layer) -> int | None:
    shape = _output_shape(layer)
    return None if shape is None else len(shape)


def _candidates(model: keras.Model) -> list[str]:
    """Paths of the convolution/activation layers with a 4-D output, in layer order."""
    return [
        path
        for path, layer in _walk(model)
        if isinstance(layer, _CONVOLUTIONS + _ACTIVATIONS) and _output_rank(layer) == 4
    ]


def _backbone_feature(model: keras.Model) -> str | None:
    """Path of the deepest encoder feature of a :mod:`helpers.modeling.builders` backbone in ``model`` (None if none)."""
    paths: dict[str, str] = {}
    for path, _ in _walk(model):
        paths.setdefault(path.rsplit(PATH_SEP, 1)[-1], path)
    for backbone in builders.BACKBONES:
        present = [paths[name] for name in builders.encoder_end_layers(backbone) if name in paths]
        if len(present) >= 2:  # two of its feature layer names: built on this backbone, not a name clash
            return present[0]
    return None


def resolve_layer(model: keras.Model, path: str) -> keras.layers.Layer:
    """The layer at ``path`` (``"name"`` or ``"nested_model/.../name"``, see the module doc)."""
    current: keras.layers.Layer = model
    parts = str(path).split(PATH_SEP)
    for depth, name in enumerate(parts):
        if not isinstance(current, keras.Model):
            raise ValueError(f"{PATH_SEP.join(parts[:depth])!r} in path {path!r} is a {type(current).__name__}, not a nested model")
        try:
            current = current.get_layer(name)
        except ValueError:
            tail = _candidates(model)[-5:]
            raise ValueError(
                f"no layer {name!r} in model {current.name!r} (path {path!r}); the last convolution/activation "
                f"layers with 4-D outputs are {tail}"
            ) from None
    return current


def find_target_layer(model: keras.Model, output: int = 0) -> str:
    """Path of the default Grad-CAM layer for ``model``'s output ``output`` (rules in the module doc).

    Raises ``ValueError`` when there is none: no convolution/activation with a 4-D output
    (classifier), or a segmentation model not built on a :mod:`helpers.modeling.builders` backbone.
    """
    output = _output_index(model, output)
    if len(model.outputs[output].shape) == 4:
        path = _backbone_feature(model)
        if path is None:
            raise ValueError(
                f"model {model.name!r} has a segmentation output and no helpers.modeling.builders backbone: its last "
                "convolution is the output head, whose Grad-CAM is the prediction itself; name the layer to "
                f"explain (layer='...'), e.g. the encoder's deepest feature; 4-D layers end with {_candidates(model)[-5:]}"
            )
        return path
    branch = model if len(model.outputs) == 1 else keras.Model(model.inputs, model.outputs[output])
    paths = _candidates(branch)
    if not paths:
        raise ValueError(
            f"model {model.name!r} has no convolution or activation layer with a 4-D output (nested models searched)"
        )
    return paths[-1]


def _target(model: keras.Model, layer: str | None, output: int) -> tuple[str, keras.layers.Layer]:
    """Path and layer to explain (``layer`` or the default); checks ``output`` too."""
    output = _output_index(model, output)
    path = find_target_layer(model, output) if layer is None else layer
    resolved = resolve_layer(model, path)
    if _output_rank(resolved) != 4:
        raise ValueError(f"layer {path!r} must have one 4-D output (B, h, w, channels); it is a {type(resolved).__name__}")
    return path, resolved


# ------------------------------------------------------------------ forward passes
class _Captured(Exception):
    """Stops a forward pass once the wanted activation is taken."""

    _keras_call_info_injected = True  # Keras re-raises it unchanged (no call-argument report)


@contextlib.contextmanager
def _capture(layer: keras.layers.Layer, tape: tf.GradientTape | None = None, stop_after: int | None = None):
    """Record every output of ``layer`` while the context is open (watched by ``tape``).

    ``stop_after``: raise :class:`_Captured` once that many outputs are recorded.
    """
    seen: list[Any] = []
    original = layer.call
    previous = vars(layer).get("call")

    def call(*args, **kwargs):
        out = original(*args, **kwargs)
        if tape is not None:
            tape.watch(out)
        seen.append(out)
        if stop_after is not None and len(seen) >= stop_after:
            raise _Captured()
        return out

    object.__setattr__(layer, "call", call)  # instance attribute: shadows the class's call until restored
    try:
        yield seen
    finally:
        if previous is None:
            object.__delattr__(layer, "call")
        else:
            object.__setattr__(layer, "call", previous)


def _taken(seen: list[Any], call_index: int, path: str) -> Any:
    if len(seen) <= call_index:
        raise ValueError(
            f"layer {path!r} ran {len(seen)} time(s) in one forward pass; call_index={call_index} is out of range"
        )
    return seen[call_index]


def _output_layer(model: keras.Model, output: int) -> keras.layers.Layer:
    layer = model.get_layer(model.output_names[output])
    if isinstance(layer, keras.Model) and len(layer.outputs) == 1:
        return _output_layer(layer, 0)
    return layer


@contextlib.contextmanager
def _linear_output(model: keras.Model, output: int):
    """Switch the final sigmoid/softmax of output ``output`` to linear; yield the original activation (or None)."""
    layer = _output_layer(model, output)
    activation = getattr(layer, "activation", None)
    if getattr(activation, "__name__", None) not in _LINEARISED:
        yield None
        return
    layer.activation = keras.activations.linear
    try:
        yield activation
    finally:
        layer.activation = activation


def _batches(images: Any, batch_size: int) -> Iterator[Any]:
    """Batches of an ``(N, H, W, C)`` array, or the image part of each batch of an iterable."""
    if isinstance(images, np.ndarray) or hasattr(images, "ndim"):
        images = _images(images)
        for start in range(0, len(images), batch_size):
            yield images[start : start + batch_size]
        return
    for batch in images:
        if isinstance(batch, (tuple, list)):
            batch = batch[0]
        yield tf.cast(batch, tf.float32)


def pooled_features(
    model: keras.Model,
    images: np.ndarray | Iterable[Any],
    layer: str | None = None,
    output: int = 0,
    call_index: int = 0,
    batch_size: int = 32,
) -> np.ndarray:
    """Global-average-pooled activations of ``layer`` (default :func:`find_target_layer`): ``(N, channels)`` float32.

    ``images``: an ``(N, H, W, C)`` array, or an iterable of batches (arrays, tensors, or tuples
    whose first element is the images, e.g. :func:`helpers.data.pipeline.make_dataset`). For the models
    of :mod:`helpers.modeling.builders` the default layer is the deepest backbone feature, i.e. the first
    output of :func:`helpers.modeling.builders.encoder_model`. The forward pass stops at the layer.
    """
    batch_size = checks.positive_int("batch_size", batch_size)
    call_index = checks.integer("call_index", call_index, low=0)
    path, target = _target(model, layer, output)
    features = []
    for batch in _batches(images, batch_size):
        with _capture(target, stop_after=call_index + 1) as seen:
            try:
                model(batch, training=False)
            except _Captured:
                pass
        activations = tf.cast(_taken(seen, call_index, path), tf.float32)
        features.append(tf.reduce_mean(activations, axis=(1, 2)).numpy())
    if not features:
        channels = (_output_shape(target) or (None,))[-1]
        return np.zeros((0, channels or 0), np.float32)
    return np.concatenate(features).astype(np.float32)


# ------------------------------------------------------------------ Grad-CAM
def _scores(
    outputs: tf.Tensor,
    probs: np.ndarray,
    targets: np.ndarray,
    regions: np.ndarray | None,
    threshold: float,
    reduce: str,
) -> tf.Tensor:
    """Per-image score ``(B,)``: the target logit (classifier) or the target channel over the region (segmenter)."""
    onehot = tf.one_hot(targets, outputs.shape[-1], dtype=outputs.dtype)
    if outputs.shape.rank == 2:
        return tf.reduce_sum(outputs * onehot, axis=-1)
    maps = tf.reduce_sum(outputs * onehot[:, None, None, :], axis=-1)
    if regions is None:
        regions = np.take_along_axis(probs, targets[:, None, None, None], axis=-1)[..., 0] > threshold
    elif regions.shape[1:] != tuple(maps.shape[1:]):
        raise ValueError(f"region masks must be (N, {maps.shape[1]}, {maps.shape[2]}) like the output; got (N, *{regions.shape[1:]})")
    region = tf.cast(regions, maps.dtype)
    score = tf.reduce_sum(maps * region, axis=(1, 2))
    if reduce == "mean":
        score = score / tf.maximum(tf.reduce_sum(region, axis=(1, 2)), 1.0)
    return score


def _default_targets(probs: np.ndarray) -> np.ndarray:
    """Predicted class (classifier) or the channel with the highest peak probability (segmenter)."""
    peaks = probs if probs.ndim == 2 else probs.max(axis=(1, 2))
    return peaks.argmax(axis=-1).astype(np.int32)


def _cam(activations: tf.Tensor, gradients: tf.Tensor, method: str, size: tuple[int, int]) -> np.ndarray:
    """``(B, H, W)`` maps in [0, 1] from ``(B, h, w, K)`` activations and gradients."""
    a = tf.cast(activations, tf.float32)
    g = tf.cast(gradients, tf.float32)
    if method == "gradcam":
        weights = tf.reduce_mean(g, axis=(1, 2))
    else:
        g2 = tf.square(g)
        denominator = 2.0 * g2 + tf.reduce_sum(a, axis=(1, 2), keepdims=True) * g2 * g
        alpha = tf.math.divide_no_nan(g2, denominator)
        weights = tf.reduce_sum(alpha * tf.nn.relu(g), axis=(1, 2))
    cam = tf.nn.relu(tf.einsum("bhwk,bk->bhw", a, weights))
    if tuple(cam.shape[1:]) != size:
        cam = tf.image.resize(cam[..., None], size, method="bilinear")[..., 0]
    peak = tf.reduce_max(cam, axis=(1, 2), keepdims=True)
    return tf.math.divide_no_nan(cam, peak).numpy()


def grad_cam(
    model: keras.Model,
    images: np.ndarray,
    target: int | Sequence[int] | np.ndarray | None = None,
    layer: str | None = None,
    method: str = "gradcam",
    output: int = 0,
    region: np.ndarray | None = None,
    threshold: float = 0.5,
    reduce: str = "sum",
    call_index: int = 0,
    batch_size: int = 16,
) -> np.ndarray:
    """Grad-CAM (``method="gradcam"``) or Grad-CAM++ (``"gradcam++"``) maps ``(N, H, W)`` float32 in [0, 1].

    ``images``: ``(N, H, W, C)`` in the model's input range. ``layer``: a path (module doc),
    default :func:`find_target_layer`. ``output``: which output of a multi-output model.
    ``target``: class index (classifier ``(B, K)`` output) or channel (segmentation
    ``(B, H, W, C)`` output), an int or one per image; default the predicted class, resp. the
    channel with the highest peak probability. Segmentation only: the score is the target
    channel's logits summed (``reduce="sum"``) or averaged (``"mean"``) over ``region``
    (``(N, H, W)`` masks of the output size), default the predicted mask ``probability >
    threshold`` (an empty region gives an all-zero map). Maps are upsampled to ``(H, W)``,
    ReLU'd and divided by their maximum per image (all zeros when no pixel is positive).
    """
    images = _images(images)
    checks.choice("method", method, METHODS)
    checks.choice("reduce", reduce, REDUCTIONS)
    batch_size = checks.positive_int("batch_size", batch_size)
    call_index = checks.integer("call_index", call_index, low=0)
    path, target_layer = _target(model, layer, output)
    output_shape = tuple(model.outputs[output].shape)
    n, size = len(images), images.shape[1:3]
    targets = None if target is None else _per_image(target, n, output_shape[-1], "target")
    if region is not None:
        if len(output_shape) == 2:
            raise ValueError("region applies to segmentation outputs (B, H, W, C) only; this output is (B, K)")
        region = _stack(region, "region", dtype=bool)
        if len(region) != n:
            raise ValueError(f"region must hold one mask per image: {n}; got {len(region)}")
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number; got {threshold!r}")
    cams = np.zeros((n, *size), np.float32)
    with _linear_output(model, output) as activation:
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            with tf.GradientTape() as tape:
                with _capture(target_layer, tape=tape) as seen:
                    outputs = model(images[start:stop], training=False)
                activations = _taken(seen, call_index, path)
                if isinstance(outputs, (list, tuple)):
                    outputs = outputs[output]
                outputs = tf.cast(outputs, tf.float32)
                probs = (outputs if activation is None else activation(outputs)).numpy()
                batch_targets = _default_targets(probs) if targets is None else targets[start:stop]
                batch_region = None if region is None else region[start:stop]
                score = tf.reduce_sum(_scores(outputs, probs, batch_targets, batch_region, threshold, reduce))
            gradients = tape.gradient(score, activations)
            if gradients is None:
                raise ValueError(f"output {output} of model {model.name!r} does not depend on layer {path!r}")
            cams[start:stop] = _cam(activations, gradients, method, size)
    return cams


# ------------------------------------------------------------------ CAMs against true masks
def cam_energy_in_mask(cams: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Fraction of each CAM's sum inside its mask: ``(N,)`` float64 in [0, 1].

    ``cams`` ``(N, H, W)`` non-negative, ``masks`` ``(N, H, W)`` (> 0 = defect). NaN where the
    mask is empty; 0 where the CAM is all zeros and the mask is not.
    """
    cams, masks = _cams_and_masks(cams, masks)
    inside = (cams * masks).sum(axis=(1, 2))
    total = cams.sum(axis=(1, 2))
    energy = np.divide(inside, total, out=np.zeros_like(total), where=total > 0)
    energy[~masks.any(axis=(1, 2))] = np.nan
    return energy


def pointing_game(cams: np.ndarray, masks: np.ndarray, tolerance: float = 0) -> np.ndarray:
    """Pointing-game result per image: ``(N,)`` float64, 1.0 hit, 0.0 miss, NaN for an empty mask.

    A hit when every pixel attaining the CAM's maximum is within ``tolerance`` pixels (Euclidean)
    of the mask; an all-zero CAM is a miss.
    """
    cams, masks = _cams_and_masks(cams, masks)
    if not np.isfinite(tolerance) or tolerance < 0:
        raise ValueError(f"tolerance must be a number of pixels >= 0; got {tolerance!r}")
    hits = np.full(len(cams), np.nan)
    for i, (cam, mask) in enumerate(zip(cams, masks)):
        if not mask.any():
            continue
        peak = cam.max()
        near = mask if tolerance == 0 else ndimage.distance_transform_edt(~mask) <= tolerance
        hits[i] = float(peak > 0 and near[cam == peak].all())
    return hits


def _nanmean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def cam_scores(cams: np.ndarray, masks: np.ndarray, tolerance: float = 0) -> dict[str, float | int]:
    """Summary over images with a defect: ``energy_in_mask`` (mean), ``pointing_hit_rate``, ``n``, ``n_empty_masks``.

    Images with an empty mask are left out (``n_empty_masks`` of them); the means are NaN when ``n`` is 0.
    """
    energy = cam_energy_in_mask(cams, masks)
    hits = pointing_game(cams, masks, tolerance)
    n = int((~np.isnan(energy)).sum())
    return {
        "energy_in_mask": _nanmean(energy),
        "pointing_hit_rate": _nanmean(hits),
        "n": n,
        "n_empty_masks": len(energy) - n,
    }


# ------------------------------------------------------------------ embeddings
def _features_2d(features: Any, name: str) -> np.ndarray:
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or not np.isfinite(features).all():
        raise ValueError(f"{name} must be a finite (N, D) array; got shape {features.shape}")
    return features


def embed_tsne(
    features: np.ndarray,
    seed: int = 0,
    perplexity: float = 30.0,
    pca_dims: int | None = 50,
    method: str | None = None,
) -> np.ndarray:
    """2-D t-SNE of ``(N, D)`` features: ``(N, 2)`` float32, deterministic for a given ``seed``.

    Features are standardised, reduced by PCA to ``pca_dims`` when ``D`` is larger (None: never),
    then embedded by scikit-learn's TSNE (``init="pca"``, ``random_state=seed``). Perplexity is
    clipped to ``(N - 1) / 3`` (the neighbours t-SNE can use) with a ``UserWarning`` when larger.
    ``method``: ``"exact"`` or ``"barnes_hut"``; default exact up to :data:`TSNE_EXACT_MAX` samples
    (as fast as Barnes-Hut there on a CPU, and far faster for small sets), Barnes-Hut above.
    """
    features = _features_2d(features, "features")
    n = len(features)
    if n < 4:
        raise ValueError(f"t-SNE needs at least 4 samples; got {n}")
    if not perplexity > 0:
        raise ValueError(f"perplexity must be > 0; got {perplexity!r}")
    if pca_dims is not None:
        checks.positive_int("pca_dims", pca_dims)
    method = ("exact" if n <= TSNE_EXACT_MAX else "barnes_hut") if method is None else method
    checks.choice("method", method, TSNE_METHODS)
    limit = (n - 1) / 3
    if perplexity > limit:
        warnings.warn(f"perplexity {perplexity} is too large for {n} samples; using {limit:.3g}", UserWarning, stacklevel=2)
        perplexity = limit
    x = StandardScaler().fit_transform(features)
    if pca_dims is not None and x.shape[1] > pca_dims:
        x = PCA(n_components=min(pca_dims, n), random_state=seed).fit_transform(x)
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed, method=method)
    return tsne.fit_transform(x).astype(np.float32)


def _knn_votes(labels: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """Majority label of each row of neighbour indices (nearest first); ties go to the nearest tied label."""
    predicted = np.empty(len(neighbours), dtype=labels.dtype)
    for i, row in enumerate(neighbours):
        votes = labels[row]
        values, counts = np.unique(votes, return_counts=True)
        tied = set(values[counts == counts.max()])
        predicted[i] = next(v for v in votes if v in tied)
    return predicted


def embedding_scores(embedding: np.ndarray, labels: Sequence[Any] | np.ndarray, k: int = 5) -> dict[str, float | int]:
    """How well ``labels`` cluster in an ``(N, D)`` embedding (t-SNE output or the features themselves).

    ``silhouette`` (Euclidean, in [-1, 1], higher = tighter, better separated classes);
    ``knn_accuracy``: leave-one-out accuracy of a ``k``-nearest-neighbour vote (ties: nearest);
    ``majority_rate``: accuracy of always answering the most common label (the chance level to
    beat); ``n``, ``k``, ``n_classes``. ``ValueError`` for fewer than 2 classes or ``k >= N``.
    """
    embedding = _features_2d(embedding, "embedding")
    labels = np.asarray(labels)
    n = len(embedding)
    if labels.shape != (n,):
        raise ValueError(f"labels must be (N,) = ({n},); got shape {labels.shape}")
    k = checks.positive_int("k", k)
    values, counts = np.unique(labels, return_counts=True)
    if len(values) < 2:
        raise ValueError(f"need at least 2 classes to score an embedding; got {values.tolist()}")
    if not len(values) < n or k >= n:
        raise ValueError(f"need more samples than classes and than k: N={n}, classes={len(values)}, k={k}")
    _, index = NearestNeighbors(n_neighbors=k + 1).fit(embedding).kneighbors(embedding)
    # drop each point itself (not necessarily first when points coincide), keep the k nearest others
    others = np.array([[j for j in row if j != i][:k] for i, row in enumerate(index)])
    return {
        "silhouette": float(silhouette_score(embedding, labels)),
        "knn_accuracy": float((_knn_votes(labels, others) == labels).mean()),
        "majority_rate": float(counts.max() / n),
        "n": n,
        "k": k,
        "n_classes": len(values),
    }


# ------------------------------------------------------------------ pictures
def _grey(image: Any) -> np.ndarray:
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim != 2:
        raise ValueError(f"image must be grey (H, W) or (H, W, 1); got shape {image.shape}")
    return image


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.45, cmap: str = CAM_CMAP) -> np.ndarray:
    """``(H, W, 3)`` uint8: the grey image (levels in [0, 255]) blended with ``cam`` in [0, 1] coloured by ``cmap``."""
    image = _grey(image)
    cam = np.asarray(cam, dtype=np.float32)
    if cam.shape != image.shape:
        raise ValueError(f"cam must be (H, W) like the image {image.shape}; got {cam.shape}")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1]; got {alpha!r}")
    colours = colormaps[cmap](np.clip(cam, 0, 1))[..., :3] * 255
    grey = np.clip(image, 0, 255)[..., None]
    return np.clip((1 - alpha) * grey + alpha * colours, 0, 255).round().astype(np.uint8)


def _bare(ax) -> None:
    """No ticks or frame, but keep the y label (used for row titles)."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def plot_cams(
    images: np.ndarray | Sequence[np.ndarray],
    cams: Mapping[str, np.ndarray],
    masks: np.ndarray | None = None,
    row_titles: Sequence[str] | None = None,
    alpha: float = 0.45,
    width: float = 12.0,
):
    """Grid figure: a row per image; the image, then one overlay per entry of ``cams`` (e.g. per initialisation).

    ``images``: N grey ``(H, W)`` or ``(H, W, 1)`` images in [0, 255]; ``cams``: ``{column title:
    (N, H, W) maps}``; ``masks`` ``(N, H, W)``: true masks outlined in :data:`MASK_COLOR` on every
    panel; ``row_titles``: N labels on the left. One colorbar for all panels.
    """
    images = [_grey(image) for image in images]
    if not images or not cams:
        raise ValueError("need at least one image and one entry in cams")
    n, shape = len(images), images[0].shape
    for name, maps in cams.items():
        if np.shape(maps) != (n, *shape):
            raise ValueError(f"cams[{name!r}] must be (N, H, W) = {(n, *shape)}; got {np.shape(maps)}")
    if masks is not None and np.shape(masks) != (n, *shape):
        raise ValueError(f"masks must be (N, H, W) = {(n, *shape)}; got {np.shape(masks)}")
    if row_titles is not None and len(row_titles) != n:
        raise ValueError(f"row_titles must hold {n} titles; got {len(row_titles)}")
    columns = 1 + len(cams)
    panel = (width - 1.0) / columns  # about an inch goes to the colorbar
    fig, axes = plt.subplots(
        n, columns, figsize=(width, panel * shape[0] / shape[1] * n + 0.4), squeeze=False, layout="constrained"
    )
    titles = ["image" + (" + true mask" if masks is not None else ""), *cams]
    for i, image in enumerate(images):
        pictures = [np.clip(image, 0, 255).astype(np.uint8), *(overlay(image, maps[i], alpha) for maps in cams.values())]
        for j, (ax, picture) in enumerate(zip(axes[i], pictures)):
            ax.imshow(picture, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            if masks is not None and np.any(masks[i]):
                ax.contour(np.asarray(masks[i]) > 0, levels=[0.5], colors=[MASK_COLOR], linewidths=1.0)
            _bare(ax)
            if i == 0:
                ax.set_title(titles[j], fontsize=10)
        if row_titles is not None:
            axes[i, 0].set_ylabel(row_titles[i], fontsize=9)
    mappable = ScalarMappable(norm=Normalize(0, 1), cmap=CAM_CMAP)
    fig.colorbar(mappable, ax=axes.ravel().tolist(), shrink=0.8, label="class activation (per-image normalised)")
    return fig


def _label_style(i: int) -> dict[str, Any]:
    """Colour (the overlay palette of :mod:`helpers.core.viz`) and marker of the ``i``-th label, for colour-blind and grey print."""
    return {"color": np.array(viz.CLASS_COLORS[i % len(viz.CLASS_COLORS)]) / 255, "marker": _MARKERS[i % len(_MARKERS)]}


def plot_embeddings(
    embeddings: Mapping[str, np.ndarray],
    labels: Sequence[Any] | np.ndarray,
    class_names: Mapping[Any, str] | None = None,
    scores: Mapping[str, Mapping[str, float]] | None = None,
    width: float = 12.0,
):
    """One scatter panel per ``{title: (N, 2) embedding}`` (e.g. per initialisation), points coloured and marked by label.

    ``class_names``: ``{label: name}`` for the legend; ``scores``: ``{title:``
    :func:`embedding_scores` ``dict}`` printed under each title. Axes carry no units (t-SNE).
    """
    labels = np.asarray(labels)
    if not embeddings:
        raise ValueError("need at least one embedding")
    for name, points in embeddings.items():
        if np.shape(points) != (len(labels), 2):
            raise ValueError(f"embeddings[{name!r}] must be (N, 2) with N = {len(labels)} labels; got {np.shape(points)}")
    values = np.unique(labels)
    names = {value: str(value) for value in values} | dict(class_names or {})
    columns = min(3, len(embeddings))
    rows = -(-len(embeddings) // columns)
    panel = width / columns
    fig, axes = plt.subplots(rows, columns, figsize=(width, panel * rows + 0.6), squeeze=False, layout="constrained")
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (title, points) in zip(axes.ravel(), embeddings.items()):
        points = np.asarray(points)
        for i, value in enumerate(values):
            chosen = labels == value
            ax.scatter(*points[chosen].T, s=14, alpha=0.8, linewidths=0, **_label_style(i))
        ax.axis("on")
        _bare(ax)
        ax.set_aspect("equal", adjustable="datalim")
        if scores is not None and title in scores:
            s = scores[title]
            title = f"{title}\nsilhouette {s['silhouette']:.2f}, {s['k']}-NN accuracy {s['knn_accuracy']:.2f}"
        ax.set_title(title, fontsize=10)
    handles = [
        Line2D([], [], linestyle="", markersize=6, label=names[value], **_label_style(i))
        for i, value in enumerate(values)
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False)
    return fig
