"""Segmentation models (U-Net, Linknet, FPN, PSPNet, UNet++) and classifiers on segmentation-models backbones.

No code path here calls ``keras.utils.get_file``: the official ImageNet files are found, or
downloaded when missing and allowed, by :func:`helpers.modeling.weight_files.find_weights_file`.

Input contract (all models built here)
    Raw pixel intensities, float, **in [0, 255]**, shape ``(B, H, W, C)`` with ``C`` = 1 (grey) or 3
    (RGB). Do *not* apply ``sm.get_preprocessing``: each model starts with a fixed (non-trainable)
    1x1 convolution ``input_stem`` that maps the C input channels to the 3 channels the backbone
    expects, already normalised the way the backbone's library does it (:data:`PREPROCESSING`):
    resnets take raw ``[0, 255]`` (their ``bn_data`` layer normalises), efficientnets
    ``(x / 255 - mean) / std`` (ImageNet "torch" mode), the mobilenets ``x / 127.5 - 1`` ("tf" mode).

Grey fold (how a 1-channel model reuses RGB ImageNet weights exactly)
    A grey image ``g`` repeated over 3 channels and preprocessed is ``x_c = a_c * g + b_c`` per
    channel; ``input_stem`` (kernel ``a_c``, bias ``b_c``, see :func:`input_stem_weights`) computes
    exactly that, so every backbone layer keeps its official RGB weights unchanged and the
    encoder features equal those of the 3-channel model on the repeated, preprocessed image (up
    to float rounding). Folding further, into a first convolution with one input channel, cannot be
    exact: the zero padding after ``bn_data`` (resnets) or after the channel-wise normalisation
    (efficientnets) pads each channel with 0, i.e. with a *different grey level per channel*, so the
    border outputs would need a per-channel constant that a 1-channel convolution has no way to
    carry. Only the mobilenets ("tf" mode, the same shift for all channels) could be folded natively.
    The price is 3 instead of 1 input channels in the first convolution (a few % of the FLOPs).
    :func:`fold_to_grey` does the same to an existing 3-channel model (e.g. a plain ``sm.Unet``).

ImageNet weights (``encoder_weights="imagenet"``)
    The official no-top file of the backbone's library (:func:`official_weights_file`: names in
    :data:`BACKBONES`, checksums in :data:`helpers.modeling.weight_files.OFFICIAL_CHECKSUMS`) is
    looked up by :func:`helpers.modeling.weight_files.find_weights_file` in ``weights_dir``, then
    ``$DEFECT_WEIGHTS_DIR``, then the Keras cache (``$KERAS_HOME/models``, default
    ``~/.keras/models``), downloaded into the Keras cache when missing (unless
    ``$DEFECT_ALLOW_DOWNLOAD=0``), its checksum verified and its weights loaded by layer name
    (strictly: every layer must match). ``encoder_weights`` may also be the path of an ``.h5`` weights file:
    official-format (3-channel) or written by :func:`save_encoder_weights`. Weight files are read
    as data only (h5py); one that is not HDF5, truncated or corrupt is a one-line ``ValueError``
    naming it (:func:`helpers.modeling.weight_files.check_hdf5`).

Encoder
    The encoder of a model is the set of layers from the input up to the backbone's feature
    layers (``sm.Backbones.get_feature_layers(backbone)`` and the deepest layer, see
    :func:`encoder_end_layers`); :func:`encoder_layers` finds them in any model built on the
    backbone, so encoder weights move between classifiers and segmenters
    (:func:`copy_encoder_weights`, :func:`save_encoder_weights`, :func:`load_encoder_weights`).

UNet++ (``arch="unetpp"``, Zhou et al. 2018)
    Nested dense skip pathways on the same backbone features: node ``X^{i,j}`` (level ``i`` =
    stride ``2^(i+1)``, ``X^{i,0}`` = encoder feature, ``X^{4,0}`` the deepest) is two 3x3
    conv-BN-ReLU on ``concat(up2(X^{i+1,j-1}), X^{i,0}, ..., X^{i,j-1})``; a head (up2, two 3x3
    conv-BN-ReLU, 3x3 conv to ``classes``, activation) reads ``X^{0,4}``. With
    ``deep_supervision=True`` the model has 4 outputs, the heads on ``X^{0,1}`` ... ``X^{0,4}``
    (train with one loss per output, as in the paper); ``deep_supervision="average"`` returns their
    mean as one output (the paper's "accurate" inference mode). All three variants share layer
    names, so weights trained with deep supervision load into the others by name.

Keras/TensorFlow/segmentation-models come only from :mod:`helpers.backend`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from helpers.backend import keras, sm
from helpers.core import checks
from helpers.modeling import weight_files

__all__ = [
    "needs_fixed_size",
    "padded_size",
    "reestimate_batchnorm",
    "round_up",
    "size_multiple",
    "ARCHITECTURES",
    "ARCH_OPTIONS",
    "BACKBONES",
    "INPUT_NAME",
    "PREPROCESSING",
    "STEM_NAME",
    "BackboneSpec",
    "backbone_options",
    "build_backbone",
    "build_classifier",
    "build_segmenter",
    "copy_encoder_weights",
    "count_parameters",
    "encoder_end_layers",
    "encoder_layers",
    "encoder_model",
    "float32_outputs",
    "fold_to_grey",
    "input_stem_weights",
    "load_encoder_weights",
    "official_weights_file",
    "save_encoder_weights",
    "set_batchnorm_momentum",
    "set_encoder_batchnorm_trainable",
    "set_encoder_trainable",
]

INPUT_NAME = "image"
STEM_NAME = "input_stem"


# ------------------------------------------------------------------ backbone facts (data only)
@dataclass(frozen=True)
class BackboneSpec:
    """What this module knows about one backbone.

    ``output_layer``: deepest encoder layer (stride 32); ``first_layers``: the layers that see the
    normalised RGB pixels, in order; ``preprocessing``: key of :data:`PREPROCESSING` (the
    library's ``preprocess_input``); ``weights_file``: official no-top ImageNet file name
    (the mobilenets: a template with ``{alpha}`` and ``{rows}``); ``options``: extra keyword arguments
    the backbone builder takes, with their defaults.
    """

    library: str
    output_layer: str
    first_layers: tuple[str, ...]
    preprocessing: str
    weights_file: str
    options: Mapping[str, Any]


def _resnet(name: str) -> BackboneSpec:
    return BackboneSpec(
        library="classification_models",
        output_layer="relu1",
        first_layers=("bn_data", "conv0"),  # bn_data: per-channel affine, then zero padding 3, conv0 7x7/2
        preprocessing="none",
        weights_file=f"{name}_imagenet_1000_no_top.h5",
        options=MappingProxyType({}),
    )


def _efficientnet(variant: str) -> BackboneSpec:
    return BackboneSpec(
        library="efficientnet",
        output_layer="top_activation",
        first_layers=("stem_conv",),  # 3x3/2, padding "same" (zero) on the normalised input
        preprocessing="torch",
        weights_file=f"efficientnet-{variant}_weights_tf_dim_ordering_tf_kernels_autoaugment_notop.h5",
        options=MappingProxyType({"drop_connect_rate": 0.2}),
    )


BACKBONES: Mapping[str, BackboneSpec] = MappingProxyType(
    {
        "resnet18": _resnet("resnet18"),
        "resnet34": _resnet("resnet34"),
        "resnet50": _resnet("resnet50"),
        "efficientnetb0": _efficientnet("b0"),
        "efficientnetb1": _efficientnet("b1"),
        "efficientnetb2": _efficientnet("b2"),
        "efficientnetb3": _efficientnet("b3"),
        "mobilenet": BackboneSpec(
            library="keras_applications",
            output_layer="conv_pw_13_relu",
            first_layers=("conv1",),  # zero padding ((0, 1), (0, 1)), conv1 3x3/2
            preprocessing="tf",
            weights_file="mobilenet_{alpha}_{rows}_tf_no_top.h5",
            options=MappingProxyType({"alpha": 1.0, "depth_multiplier": 1}),
        ),
        "mobilenetv2": BackboneSpec(
            library="keras_applications",
            output_layer="out_relu",
            first_layers=("Conv1",),  # zero padding ((0, 1), (0, 1)) as Conv1_pad, Conv1 3x3/2
            preprocessing="tf",
            weights_file="mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_{rows}_no_top.h5",
            options=MappingProxyType({"alpha": 1.0}),
        ),
    }
)
"""Supported backbones (segmentation-models names)."""

# Per-channel input scaling x_c = a_c * pixel + b_c of each library's preprocess_input (RGB order).
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)
PREPROCESSING: Mapping[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = MappingProxyType(
    {
        "none": ((1.0, 1.0, 1.0), (0.0, 0.0, 0.0)),
        "tf": ((1 / 127.5,) * 3, (-1.0,) * 3),
        "torch": (
            tuple(1.0 / (255.0 * s) for s in _TORCH_STD),
            tuple(-m / s for m, s in zip(_TORCH_MEAN, _TORCH_STD)),
        ),
    }
)
"""``(scale a_c, offset b_c)`` per RGB channel: preprocessed ``x_c = a_c * pixel_c + b_c``, pixels in [0, 255]."""

_MOBILENET_ALPHAS = MappingProxyType({0.25: "2_5", 0.5: "5_0", 0.75: "7_5", 1.0: "1_0"})
_MOBILENET_ROWS = (128, 160, 192, 224)
_MOBILENETV2_ALPHAS = MappingProxyType({0.35: "0.35", 0.5: "0.5", 0.75: "0.75", 1.0: "1.0", 1.3: "1.3", 1.4: "1.4"})
_MOBILENETV2_ROWS = (96, 128, 160, 192, 224)

ARCHITECTURES: tuple[str, ...] = ("unet", "linknet", "fpn", "pspnet", "unetpp")

ARCH_OPTIONS: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {
        "unet": MappingProxyType(
            {"decoder_block_type": "upsampling", "decoder_filters": (256, 128, 64, 32, 16), "decoder_use_batchnorm": True}
        ),
        "linknet": MappingProxyType(
            {"decoder_block_type": "upsampling", "decoder_filters": (None, None, None, None, 16), "decoder_use_batchnorm": True}
        ),
        "fpn": MappingProxyType(
            {"pyramid_block_filters": 256, "pyramid_use_batchnorm": True, "pyramid_aggregation": "concat", "pyramid_dropout": None}
        ),
        "pspnet": MappingProxyType(
            {"downsample_factor": 8, "psp_conv_filters": 512, "psp_pooling_type": "avg", "psp_use_batchnorm": True, "psp_dropout": None}
        ),
        "unetpp": MappingProxyType(
            {"decoder_filters": (256, 128, 64, 32, 16), "decoder_use_batchnorm": True, "deep_supervision": False}
        ),
    }
)
"""Keyword arguments each architecture takes (flat, as the segmentation-models builders name them), with defaults."""

_DIVISOR = 32  # 5 stride-2 stages; decoders join features of matching size


# ------------------------------------------------------------------ validation helpers
def _spec(backbone: str) -> BackboneSpec:
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; allowed: {', '.join(BACKBONES)}")
    return BACKBONES[backbone]


def backbone_options(backbone: str, **values: Any) -> dict[str, Any]:
    """Of ``values`` (e.g. ``alpha=0.25`` from a notebook parameter), those ``backbone`` takes.

    The others are dropped, so one set of parameters serves every backbone:
    ``backbone_options("mobilenet", alpha=0.25) == {"alpha": 0.25}``, ``backbone_options("resnet18", alpha=0.25) == {}``.
    """
    spec = _spec(backbone)
    return {name: value for name, value in values.items() if name in spec.options}


def _split_options(arch: str | None, backbone: str, kwargs: Mapping[str, Any]) -> tuple[dict, dict]:
    """Split flat kwargs into (architecture options, backbone options) with defaults; reject unknown names."""
    spec = _spec(backbone)
    arch_defaults = dict(ARCH_OPTIONS[arch]) if arch is not None else {}
    unknown = [k for k in kwargs if k not in arch_defaults and k not in spec.options]
    if unknown:
        allowed = sorted(arch_defaults) + sorted(spec.options)
        where = f"{arch} with {backbone}" if arch is not None else backbone
        raise ValueError(f"unknown keyword argument(s) {unknown} for {where}; allowed: {allowed or 'none'}")
    arch_options = arch_defaults | {k: v for k, v in kwargs.items() if k in arch_defaults}
    backbone_options = dict(spec.options) | {k: v for k, v in kwargs.items() if k in spec.options}
    return arch_options, backbone_options


def _check_input_shape(input_shape: Sequence[int | None]) -> tuple[int | None, int | None, int]:
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (H, W, C); got {tuple(input_shape)}")
    height, width, channels = input_shape
    if channels not in (1, 3):
        raise ValueError(f"input channels C must be 1 (grey) or 3 (RGB); got input_shape {tuple(input_shape)}")
    for size in (height, width):
        if size is not None and (not isinstance(size, (int, np.integer)) or size < 32):
            raise ValueError(f"H and W must be integers >= 32 (or None); got input_shape {tuple(input_shape)}")
    return height, width, int(channels)


def _nearest_multiples(size: int, divisor: int) -> str:
    low = max(divisor, size // divisor * divisor)
    return f"{low} or {low + divisor}" if low != size else str(size)


def _check_divisibility(arch: str, input_shape: Sequence[int | None], options: Mapping[str, Any]) -> None:
    height, width, _ = input_shape
    if arch == "pspnet":
        factor = options["downsample_factor"]
        if factor not in (4, 8, 16):
            raise ValueError(f"pspnet downsample_factor must be 4, 8 or 16; got {factor!r}")
        divisor = 6 * factor
        rule = (
            f"pspnet with downsample_factor={factor} needs fixed H and W that are multiples of 6 * {factor} = {divisor} "
            f"(its pyramid pools the stride-{factor} features into 1, 2, 3 and 6 bins and upsamples them back)"
        )
        if height is None or width is None:
            raise ValueError(f"{rule}; got input_shape {tuple(input_shape)}")
    else:
        divisor = _DIVISOR
        rule = (
            f"{arch} needs H and W divisible by {divisor} (the encoder halves the size 5 times and the decoder "
            f"joins features of matching size)"
        )
    bad = [(axis, size) for axis, size in (("H", height), ("W", width)) if size is not None and size % divisor]
    if bad:
        hints = "; ".join(f"{axis}={size}: use {_nearest_multiples(size, divisor)}" for axis, size in bad)
        raise ValueError(f"{rule}; got input_shape {tuple(input_shape)} ({hints})")


def size_multiple(arch: str, downsample_factor: int = 8) -> int:
    """Input H and W must be multiples of this: 32, or ``6 * downsample_factor`` for pspnet."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown arch {arch!r}; allowed: {', '.join(ARCHITECTURES)}")
    return 6 * downsample_factor if arch == "pspnet" else _DIVISOR


def round_up(shape: Sequence[int], multiple: int) -> tuple[int, ...]:
    """``(H, W)`` rounded up on each side to a multiple of ``multiple``."""
    if any(int(side) < 1 for side in shape):
        raise ValueError(f"shape sides must be positive integers; got {tuple(shape)}")
    if int(multiple) < 1:
        raise ValueError(f"multiple must be a positive integer; got {multiple!r}")
    return tuple(-(-int(side) // int(multiple)) * int(multiple) for side in shape)


def padded_size(shape: Sequence[int], arch: str, downsample_factor: int = 8) -> tuple[int, ...]:
    """``(H, W)`` rounded up on each side to the architecture's :func:`size_multiple` (pad target)."""
    return round_up(shape, size_multiple(arch, downsample_factor))


def needs_fixed_size(arch: str) -> bool:
    """True if the architecture must be built for one input size (pspnet), not ``(None, None, C)``."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown arch {arch!r}; allowed: {', '.join(ARCHITECTURES)}")
    return arch == "pspnet"


# ------------------------------------------------------------------ official weight files
def official_weights_file(
    backbone: str, input_shape: Sequence[int | None] = (None, None, 1), **backbone_options: Any
) -> weight_files.WeightsFile:
    """Name, checksum and URL of the official no-top ImageNet file the library would download.

    ``input_shape`` ``(H, W, C)`` matters for the mobilenets only (like keras_applications: square
    H = W in 128/160/192/224 -- v2 also 96 -- picks that size, anything else 224); so does ``alpha``.
    """
    spec = _spec(backbone)
    _, options = _split_options(None, backbone, backbone_options)
    name = spec.weights_file
    if backbone in ("mobilenet", "mobilenetv2"):
        alphas, all_rows = ((_MOBILENET_ALPHAS, _MOBILENET_ROWS) if backbone == "mobilenet"
                            else (_MOBILENETV2_ALPHAS, _MOBILENETV2_ROWS))
        alpha, depth_multiplier = options["alpha"], options.get("depth_multiplier", 1)
        if alpha not in alphas or depth_multiplier != 1:
            raise ValueError(
                f"{backbone} ImageNet weights exist for alpha in {sorted(alphas)}"
                f"{' and depth_multiplier=1' if backbone == 'mobilenet' else ''}; "
                f"got alpha={alpha!r}" + (f", depth_multiplier={depth_multiplier!r}" if backbone == "mobilenet" else "")
            )
        height, width = input_shape[0], input_shape[1]
        rows = height if height == width and height in all_rows else 224
        name = name.format(alpha=alphas[alpha], rows=rows)
    return weight_files.WeightsFile(
        name=name, checksum=weight_files.OFFICIAL_CHECKSUMS.get(name), url=weight_files.official_url(name)
    )


# ------------------------------------------------------------------ setting layer weights (all or nothing)
def _assign(
    layers: Sequence[keras.layers.Layer],
    weights: Mapping[str, Sequence[tuple[str, np.ndarray]]],
    source: str,
    optional: Iterable[str] = (),
    allow_extra: bool = False,
) -> int:
    """Check every weighted layer against ``weights`` (names, counts, shapes), then assign all; return the count.

    Within a layer, weights are matched by name (``gamma``, ``moving_mean``, ...) when both sides
    have the same names, else by position (as Keras does). Layers named in ``optional`` may be
    absent from ``weights``; weights of layers not in ``layers`` are an error unless
    ``allow_extra``. Nothing is assigned when any check fails.
    """
    optional = set(optional)
    weighted = [layer for layer in layers if layer.weights]
    names = {layer.name for layer in weighted}
    plan = []
    for layer in weighted:
        if layer.name not in weights:
            if layer.name in optional:
                continue
            raise ValueError(f"encoder layer {layer.name!r} has no weights in {source}")
        values = list(weights[layer.name])
        model_names = [weight_files.short_name(w.name) for w in layer.weights]
        if sorted(n for n, _ in values) == sorted(model_names) and len(set(model_names)) == len(model_names):
            by_name = dict(values)
            values = [(n, by_name[n]) for n in model_names]
        model_shapes = [tuple(w.shape) for w in layer.weights]
        source_shapes = [tuple(np.shape(v)) for _, v in values]
        if model_shapes != source_shapes:
            raise ValueError(
                f"layer {layer.name!r}: {source} has weight shapes {source_shapes}, the model has {model_shapes}"
            )
        plan.append((layer, [v for _, v in values]))
    extra = [name for name in weights if name not in names]
    if extra and not allow_extra:
        raise ValueError(f"{source} has weights for layer {extra[0]!r} (and {len(extra) - 1} more) that the encoder lacks")
    if not plan:
        raise ValueError(f"no encoder layer matched {source}")
    for layer, values in plan:
        layer.set_weights(values)
    return len(plan)


# ------------------------------------------------------------------ input stem (the grey fold)
def input_stem_weights(backbone: str, channels: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Kernel ``(1, 1, channels, 3)`` and bias ``(3,)`` of ``input_stem`` for pixels in [0, 255].

    Grey (``channels=1``): ``x_c = a_c * g + b_c`` = the library's preprocessing of ``g`` repeated
    to RGB; RGB (``channels=3``): the diagonal ``x_c = a_c * p_c + b_c``.
    """
    scale, offset = PREPROCESSING[_spec(backbone).preprocessing]
    if channels == 1:
        kernel = np.asarray(scale, np.float32).reshape(1, 1, 1, 3)
    elif channels == 3:
        kernel = np.diag(np.asarray(scale, np.float32)).reshape(1, 1, 3, 3)
    else:
        raise ValueError(f"channels must be 1 or 3; got {channels!r}")
    return kernel, np.asarray(offset, np.float32)


def _replace_inbound(value: Any, old: str, new: str) -> Any:
    """Rename ``old`` to ``new`` in a serialized ``inbound_nodes`` structure."""
    if isinstance(value, list):
        if len(value) == 4 and value[0] == old and isinstance(value[1], int):
            return [new, *value[1:]]
        return [_replace_inbound(v, old, new) for v in value]
    if isinstance(value, tuple):
        return tuple(_replace_inbound(list(value), old, new))
    if isinstance(value, dict):
        return {k: _replace_inbound(v, old, new) for k, v in value.items()}
    return value


def _with_input_stem(model: keras.Model, backbone: str, channels: int) -> keras.Model:
    """Rebuild a single-input functional model as ``image (H, W, channels) -> input_stem -> model``.

    Rebuilt from the model's config (segmentation-models' efficientnet cannot take a tf-keras
    ``input_tensor``), so the new layers are fresh; weights are not copied.
    """
    if any(layer.name == STEM_NAME for layer in model.layers):
        raise ValueError(f"model {model.name!r} already has an {STEM_NAME!r} layer")
    config = model.get_config()
    if len(config["input_layers"]) != 1:
        raise ValueError(f"model {model.name!r} must have exactly one input")
    old_input = config["input_layers"][0][0]
    kernel, bias = input_stem_weights(backbone, channels)
    stem = keras.layers.Conv2D(3, 1, name=STEM_NAME, trainable=False, dtype="float32")  # the exact fold, under every policy
    layers = []
    for layer in config["layers"]:
        if layer["name"] == old_input:
            layer["name"] = layer["config"]["name"] = INPUT_NAME
            layer["config"]["batch_input_shape"] = (*layer["config"]["batch_input_shape"][:-1], channels)
            layers.append(layer)
            stem_config = {"class_name": "Conv2D", "config": stem.get_config(), "name": STEM_NAME}
            layers.append(stem_config | {"inbound_nodes": [[[INPUT_NAME, 0, 0, {}]]]})
        else:
            layer["inbound_nodes"] = _replace_inbound(layer["inbound_nodes"], old_input, STEM_NAME)
            layers.append(layer)
    config["layers"] = layers
    config["input_layers"] = [[INPUT_NAME, 0, 0]]
    rebuilt = keras.Model.from_config(config)
    rebuilt.get_layer(STEM_NAME).set_weights([kernel, bias])
    return rebuilt


def fold_to_grey(model: keras.Model, backbone: str, channels: int = 1) -> keras.Model:
    """Turn a model with 3-channel *preprocessed* input into one taking ``(H, W, channels)`` pixels in [0, 255].

    For any single-input model built on ``backbone`` (e.g. ``sm.Unet(backbone, input_shape=(H, W, 3))``
    with trained or ImageNet weights): the result on a grey image equals ``model`` on that image
    repeated over 3 channels and preprocessed with ``sm.get_preprocessing(backbone)``. All weights
    are copied by layer name; ``input_stem`` holds the fold (see :func:`input_stem_weights`).
    """
    if model.input_shape[-1] != 3:
        raise ValueError(f"fold_to_grey needs a model with 3 input channels; got input shape {model.input_shape}")
    folded = _with_input_stem(model, backbone, channels)
    source = {layer.name: layer for layer in model.layers}
    for layer in folded.layers:
        if layer.weights and layer.name != STEM_NAME:
            layer.set_weights(source[layer.name].get_weights())
    return folded


# ------------------------------------------------------------------ backbones
def _submodules() -> dict[str, Any]:
    return {"backend": keras.backend, "layers": keras.layers, "models": keras.models, "utils": keras.utils}


def build_backbone(
    backbone: str,
    input_shape: Sequence[int | None] = (None, None, 1),
    encoder_weights: str | os.PathLike | None = None,
    weights_dir: str | os.PathLike | None = None,
    **backbone_options: Any,
) -> keras.Model:
    """The encoder ``image (H, W, C) -> input_stem -> backbone``, output its deepest feature map (stride 32).

    ``encoder_weights``: None, ``"imagenet"`` (the :func:`official_weights_file`, found by
    :func:`helpers.modeling.weight_files.find_weights_file`) or the path of an ``.h5`` file
    (official layout, or from :func:`save_encoder_weights`).
    ``backbone_options``: ``alpha`` (the mobilenets), ``depth_multiplier`` (mobilenet), ``drop_connect_rate`` (efficientnet).
    """
    height, width, channels = _check_input_shape(input_shape)
    _, options = _split_options(None, backbone, backbone_options)
    weights_path = None
    if encoder_weights is not None and str(encoder_weights) == "imagenet":
        weights_path = weight_files.find_weights_file(official_weights_file(backbone, input_shape, **options), weights_dir)
    elif encoder_weights is not None:
        weights_path = Path(encoder_weights)
        if not weights_path.is_file():
            raise FileNotFoundError(f"encoder_weights file not found: {weights_path} (expected None, 'imagenet' or an .h5 path)")
    if weights_path is not None:  # read before building: a damaged file fails fast
        weights, attrs = weight_files.read_h5_weights(weights_path)
        if attrs.get("backbone", backbone) != backbone:
            raise ValueError(f"{weights_path} holds {attrs['backbone']} weights, not {backbone}")
    rgb = sm.Backbones.get_backbone(
        backbone, input_shape=(height, width, 3), weights=None, include_top=False, **options, **_submodules()
    )
    model = _with_input_stem(rgb, backbone, channels)
    if weights_path is not None:
        _assign(model.layers, weights, str(weights_path), optional=[STEM_NAME])
    return model


def encoder_end_layers(backbone: str) -> tuple[str, ...]:
    """The backbone's deepest layer and its 4 skip feature layers (strides 32, 16, 8, 4, 2)."""
    return (_spec(backbone).output_layer, *sm.Backbones.get_feature_layers(backbone, n=4))


def _present_ends(model: keras.Model, backbone: str) -> list[str]:
    names = {layer.name for layer in model.layers}
    return [name for name in encoder_end_layers(backbone) if name in names]


def encoder_model(model: keras.Model, backbone: str) -> keras.Model:
    """A model sharing ``model``'s layers whose outputs are the encoder features present (deepest first)."""
    ends = _present_ends(model, backbone)
    if not ends:
        raise ValueError(
            f"model {model.name!r} has none of the {backbone} encoder layers {list(encoder_end_layers(backbone))}: "
            f"is it built on {backbone}?"
        )
    return keras.Model(model.inputs, [model.get_layer(name).output for name in ends], name=f"{model.name}_encoder")


def encoder_layers(model: keras.Model, backbone: str) -> list[keras.layers.Layer]:
    """The layers of ``model`` between its input and the ``backbone`` feature layers (the stem included)."""
    return list(encoder_model(model, backbone).layers)


def set_encoder_trainable(model: keras.Model, backbone: str, trainable: bool) -> int:
    """Set ``trainable`` on every encoder layer (BatchNormalization too; ``input_stem`` stays frozen); return the count."""
    layers = [layer for layer in encoder_layers(model, backbone) if layer.name != STEM_NAME]
    for layer in layers:
        layer.trainable = trainable
    return len(layers)


def set_encoder_batchnorm_trainable(model: keras.Model, backbone: str, trainable: bool) -> int:
    """Set ``trainable`` on the encoder's BatchNormalization layers only; return their count.

    ``False`` keeps them in inference mode with their (pretrained) moving statistics and
    fixed scale/offset while the convolutions train -- for encoders whose statistics do not
    suit training-mode BatchNorm (e.g. weights recovered from int8 releases). Call before compile.
    """
    if not isinstance(trainable, (bool, np.bool_)):
        raise ValueError(f"trainable must be True or False, got {trainable!r}")
    layers = [layer for layer in encoder_layers(model, backbone) if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in layers:
        layer.trainable = bool(trainable)
    return len(layers)


def reestimate_batchnorm(model: keras.Model, batches: Iterable, n_batches: int) -> int:
    """Replace every BatchNormalization layer's moving statistics by their mean over the first ``n_batches`` of ``batches``.

    AdaBN-style re-estimation on the target's images before fine-tuning, for an encoder whose
    stored statistics come from another domain or from few images (the int8-recovered ImageNet
    files were calibrated on 136 photos). ``batches`` yields images ``(B, H, W, 1)`` or
    ``(images, ...)`` tuples (a training dataset). The model runs forward in training mode, no
    weight changes; batch ``k`` is averaged in with momentum ``(k - 1) / k``, so each statistic is
    the plain mean over the batches (fewer when ``batches`` ends first). Frozen BatchNorm layers
    (``trainable=False``) are re-estimated too; momentum and ``trainable`` are restored after.
    Returns the number of batches read. Call it before ``compile``.
    """
    n_batches = checks.positive_int("n_batches", n_batches)
    layers = [layer for layer in model.submodules if isinstance(layer, keras.layers.BatchNormalization)]
    saved = [(layer.momentum, layer.trainable) for layer in layers]
    seen = 0
    try:
        for layer in layers:
            layer.trainable = True  # a frozen BatchNorm runs in inference mode: it would learn nothing
        for batch in batches:
            if seen == n_batches:
                break
            seen += 1
            for layer in layers:
                layer.momentum = (seen - 1) / seen
            model(batch[0] if isinstance(batch, (tuple, list)) else batch, training=True)
    finally:
        for layer, (momentum, trainable) in zip(layers, saved):
            layer.momentum, layer.trainable = momentum, trainable
    if seen == 0:
        raise ValueError("batches is empty: nothing to re-estimate the BatchNorm statistics on")
    return seen


def set_batchnorm_momentum(model: keras.Model, momentum: float) -> int:
    """Set the moving-average ``momentum`` of every BatchNormalization layer (nested ones too); return the count.

    Keras convention: ``moving = momentum * moving + (1 - momentum) * batch`` (PyTorch's
    ``momentum=0.1`` is Keras' 0.9). Keras' default 0.99 needs hundreds of steps to forget its
    initial statistics, too many for a randomly initialised network trained on a few hundred
    images. Call it before ``compile``/``fit``: a traced training step keeps the old value.
    """
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be a number in [0, 1); got {momentum!r}")
    layers = [layer for layer in model.submodules if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in layers:
        layer.momentum = float(momentum)
    return len(layers)


# ------------------------------------------------------------------ decoders
def _bind_sm_module(module: Any) -> Any:
    """Give a segmentation-models decoder module its Keras submodules, as its public builder does on each call."""
    module.backend, module.layers, module.models, module.keras_utils = (
        keras.backend,
        keras.layers,
        keras.models,
        keras.utils,
    )
    return module


def _conv_bn_relu(filters: int, use_batchnorm: bool, name: str):
    return sm.models._common_blocks.Conv2dBn(
        filters,
        kernel_size=3,
        activation="relu",
        kernel_initializer="he_uniform",
        padding="same",
        use_batchnorm=use_batchnorm,
        name=name,
        **_submodules(),
    )


def _unetpp(
    encoder: keras.Model,
    backbone: str,
    classes: int,
    activation: str,
    decoder_filters: Sequence[int],
    decoder_use_batchnorm: bool,
    deep_supervision: bool | str,
) -> keras.Model:
    layers = keras.layers
    features = sm.Backbones.get_feature_layers(backbone, n=4)  # strides 16, 8, 4, 2
    nodes = {(4, 0): encoder.output}
    for level, name in zip((3, 2, 1, 0), features):
        nodes[(level, 0)] = encoder.get_layer(name).output
    for j in range(1, 5):
        for i in range(0, 5 - j):
            up = layers.UpSampling2D(2, name=f"decoder_x{i}{j}_upsampling")(nodes[(i + 1, j - 1)])
            x = layers.Concatenate(axis=-1, name=f"decoder_x{i}{j}_concat")([up] + [nodes[(i, k)] for k in range(j)])
            x = _conv_bn_relu(decoder_filters[3 - i], decoder_use_batchnorm, f"decoder_x{i}{j}a")(x)
            nodes[(i, j)] = _conv_bn_relu(decoder_filters[3 - i], decoder_use_batchnorm, f"decoder_x{i}{j}b")(x)
    heads = (1, 2, 3, 4) if deep_supervision else (4,)
    outputs = []
    for j in heads:
        x = layers.UpSampling2D(2, name=f"head_x0{j}_upsampling")(nodes[(0, j)])
        x = _conv_bn_relu(decoder_filters[4], decoder_use_batchnorm, f"head_x0{j}a")(x)
        x = _conv_bn_relu(decoder_filters[4], decoder_use_batchnorm, f"head_x0{j}b")(x)
        x = layers.Conv2D(classes, 3, padding="same", kernel_initializer="glorot_uniform", name=f"final_conv_x0{j}")(x)
        name = f"{activation}_x0{j}" if deep_supervision else activation
        outputs.append(layers.Activation(activation, name=name)(x))
    if deep_supervision == "average":
        outputs = layers.Average(name=activation)(outputs)
    elif not deep_supervision:
        outputs = outputs[0]
    return keras.Model(encoder.input, outputs, name=f"unetpp_{backbone}")


_BLOCK_TYPES = ("upsampling", "transpose")


def _decoder_block(module: Any, block_type: str) -> Any:
    return {"upsampling": module.DecoderUpsamplingX2Block, "transpose": module.DecoderTransposeX2Block}[block_type]


def float32_outputs(model: keras.Model) -> keras.Model:
    """``model`` with float32 outputs under a mixed precision policy; the same model under float32.

    An output made by an ``Activation`` layer (sigmoid, softmax) is recomputed in float32 from its
    input, so probabilities, losses and metrics never round to 16 bits; any other output is cast.
    Weights are untouched (``Activation`` layers hold none), so weights saved under one policy load
    under another.
    """
    if all(output.dtype == "float32" for output in model.outputs):
        return model
    outputs = []
    for output in model.outputs:
        layer = output._keras_history.layer
        if output.dtype == "float32":
            outputs.append(output)
        elif isinstance(layer, keras.layers.Activation):
            outputs.append(keras.layers.Activation(layer.activation, dtype="float32", name=layer.name)(layer.input))
        else:
            outputs.append(keras.layers.Activation("linear", dtype="float32", name=f"{layer.name}_float32")(output))
    return keras.Model(model.inputs, outputs if len(outputs) > 1 else outputs[0], name=model.name)


def _named_linknet_head(model: keras.Model, classes: int, activation: str) -> keras.Model:
    """segmentation-models 1.0.1 leaves Linknet's head convolution unnamed (``conv2d_<n>``, varying with what was
    built before); redo the head as ``final_conv`` (like Unet's) so weights match by name across sessions."""
    head = model.layers[-2]
    if not isinstance(head, keras.layers.Conv2D) or model.layers[-1].name != activation:
        raise RuntimeError(f"unexpected Linknet head {head.name!r} -> {model.layers[-1].name!r}")
    x = keras.layers.Conv2D(
        classes, 3, padding="same", use_bias=True, kernel_initializer="glorot_uniform", name="final_conv"
    )(head.input)
    x = keras.layers.Activation(activation, name=activation)(x)
    return keras.Model(model.input, x, name=model.name)


def _check_filters(arch: str, filters: Sequence[Any]) -> None:
    if len(filters) != 5:
        raise ValueError(f"{arch} decoder_filters needs 5 values (one per x2 upsampling stage); got {tuple(filters)}")


def build_segmenter(
    arch: str,
    backbone: str,
    input_shape: Sequence[int | None] = (256, 1600, 1),
    classes: int = 4,
    encoder_weights: str | os.PathLike | None = None,
    encoder_freeze: bool = False,
    activation: str = "sigmoid",
    weights_dir: str | os.PathLike | None = None,
    **kwargs: Any,
) -> keras.Model:
    """Segmentation model ``(B, H, W, C)`` pixels in [0, 255] -> ``(B, H, W, classes)`` ``activation`` outputs.

    ``arch``: one of :data:`ARCHITECTURES`; ``backbone``: one of :data:`BACKBONES`; ``kwargs``:
    the architecture's options (:data:`ARCH_OPTIONS`, e.g. ``decoder_filters``, ``pyramid_dropout``,
    ``psp_dropout``, ``deep_supervision``) and the backbone's (``alpha``, ``drop_connect_rate``).
    H and W: multiples of 32 (None allowed), pspnet fixed multiples of ``6 * downsample_factor``.
    ``encoder_freeze`` makes every encoder layer non-trainable, BatchNormalization included.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown arch {arch!r}; allowed: {', '.join(ARCHITECTURES)}")
    _spec(backbone)
    if not isinstance(classes, (int, np.integer)) or classes < 1:
        raise ValueError(f"classes must be a positive integer; got {classes!r}")
    input_shape = _check_input_shape(input_shape)
    options, backbone_options = _split_options(arch, backbone, kwargs)
    _check_divisibility(arch, input_shape, options)
    if arch in ("unet", "linknet", "unetpp"):
        _check_filters(arch, options["decoder_filters"])
    if arch == "unetpp" and options["deep_supervision"] not in (False, True, "average"):
        raise ValueError(f"deep_supervision must be False, True or 'average'; got {options['deep_supervision']!r}")
    if arch in ("unet", "linknet") and options["decoder_block_type"] not in _BLOCK_TYPES:
        raise ValueError(f"decoder_block_type must be one of {list(_BLOCK_TYPES)}; got {options['decoder_block_type']!r}")

    encoder = build_backbone(backbone, input_shape, encoder_weights, weights_dir, **backbone_options)
    skips = sm.Backbones.get_feature_layers(backbone, n=4)
    if arch in ("unet", "linknet"):
        module = _bind_sm_module(getattr(sm.models, arch))
        build = module.build_unet if arch == "unet" else module.build_linknet
        model = build(
            backbone=encoder,
            decoder_block=_decoder_block(module, options["decoder_block_type"]),
            skip_connection_layers=skips,
            decoder_filters=tuple(options["decoder_filters"]),
            n_upsample_blocks=5,
            classes=classes,
            activation=activation,
            use_batchnorm=options["decoder_use_batchnorm"],
        )
        if arch == "linknet":
            model = _named_linknet_head(model, classes, activation)
    elif arch == "fpn":
        module = _bind_sm_module(sm.models.fpn)
        model = module.build_fpn(
            backbone=encoder,
            skip_connection_layers=skips,
            pyramid_filters=options["pyramid_block_filters"],
            segmentation_filters=options["pyramid_block_filters"] // 2,
            classes=classes,
            activation=activation,
            use_batchnorm=options["pyramid_use_batchnorm"],
            aggregation=options["pyramid_aggregation"],
            dropout=options["pyramid_dropout"],
        )
    elif arch == "pspnet":
        module = _bind_sm_module(sm.models.pspnet)
        factor = options["downsample_factor"]
        model = module.build_psp(
            encoder,
            sm.Backbones.get_feature_layers(backbone, n=3)[{16: 0, 8: 1, 4: 2}[factor]],
            pooling_type=options["psp_pooling_type"],
            conv_filters=options["psp_conv_filters"],
            use_batchnorm=options["psp_use_batchnorm"],
            final_upsampling_factor=factor,
            classes=classes,
            activation=activation,
            dropout=options["psp_dropout"],
        )
    else:
        model = _unetpp(
            encoder,
            backbone,
            classes,
            activation,
            options["decoder_filters"],
            options["decoder_use_batchnorm"],
            options["deep_supervision"],
        )
    if encoder_freeze:
        set_encoder_trainable(model, backbone, False)
    return float32_outputs(model)


def build_classifier(
    backbone: str,
    input_shape: Sequence[int | None] = (256, 1600, 1),
    n_outputs: int = 4,
    activation: str = "sigmoid",
    encoder_weights: str | os.PathLike | None = None,
    dropout: float = 0.0,
    encoder_freeze: bool = False,
    weights_dir: str | os.PathLike | None = None,
    **backbone_options: Any,
) -> keras.Model:
    """Classifier ``(B, H, W, C)`` pixels in [0, 255] -> ``(B, n_outputs)``: encoder, global average pooling, dense.

    Same encoder (names, weights, stem) as :func:`build_segmenter`, so a trained classifier's
    encoder moves into any segmenter on the same backbone with :func:`copy_encoder_weights`.
    """
    if not isinstance(n_outputs, (int, np.integer)) or n_outputs < 1:
        raise ValueError(f"n_outputs must be a positive integer; got {n_outputs!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1); got {dropout!r}")
    encoder = build_backbone(backbone, input_shape, encoder_weights, weights_dir, **backbone_options)
    x = keras.layers.GlobalAveragePooling2D(name="classifier_pool")(encoder.output)
    if dropout:
        x = keras.layers.Dropout(dropout, name="classifier_dropout")(x)
    outputs = keras.layers.Dense(n_outputs, name="classifier_dense")(x)
    outputs = keras.layers.Activation(activation, dtype="float32", name="classifier_probabilities")(outputs)  # float32 under every policy
    model = keras.Model(encoder.input, outputs, name=f"classifier_{backbone}")
    if encoder_freeze:
        set_encoder_trainable(model, backbone, False)
    return model


# ------------------------------------------------------------------ moving encoder weights
def _layer_weights(layer: keras.layers.Layer) -> list[tuple[str, np.ndarray]]:
    return [(weight_files.short_name(w.name), value) for w, value in zip(layer.weights, layer.get_weights())]


def _weighted_encoder(model: keras.Model, ends: Sequence[str]) -> dict[str, keras.layers.Layer]:
    """Layers with weights between the input of ``model`` and its layers ``ends``."""
    sub = keras.Model(model.inputs, [model.get_layer(name).output for name in ends])
    return {layer.name: layer for layer in sub.layers if layer.weights}


def copy_encoder_weights(source: keras.Model, target: keras.Model, backbone: str) -> int:
    """Copy the ``backbone`` encoder weights of ``source`` into ``target``; return how many layers were set.

    Both models must hold the same encoder (up to the feature layers ``target`` has; pspnet holds
    only part): any missing layer, extra layer or different shape raises ``ValueError`` naming the
    layer, and then nothing is copied.
    """
    ends = _present_ends(target, backbone)
    if not ends:
        raise ValueError(
            f"target {target.name!r} has none of the {backbone} encoder layers {list(encoder_end_layers(backbone))}"
        )
    source_names = {layer.name for layer in source.layers}
    missing = [name for name in ends if name not in source_names]
    if missing:
        raise ValueError(f"source {source.name!r} lacks the {backbone} encoder layer {missing[0]!r}: is it built on {backbone}?")
    source_layers = _weighted_encoder(source, ends)
    target_layers = _weighted_encoder(target, ends)
    extra = [name for name in source_layers if name not in target_layers]
    if extra:
        raise ValueError(
            f"encoder layer {extra[0]!r} of source {source.name!r} has no counterpart in target {target.name!r} "
            f"({len(extra)} such layers): the encoders differ"
        )
    weights = {name: _layer_weights(layer) for name, layer in source_layers.items()}
    return _assign(list(target_layers.values()), weights, f"source model {source.name!r}")


def save_encoder_weights(model: keras.Model, path: str | os.PathLike, backbone: str) -> int:
    """Write the encoder weights of ``model`` (stem included) to a Keras-layout ``.h5`` file; return the layer count."""
    layers = [layer for layer in encoder_layers(model, backbone) if layer.weights]
    weight_files.write_h5_weights(path, layers, {"backbone": backbone})
    return len(layers)


def load_encoder_weights(model: keras.Model, path: str | os.PathLike, backbone: str) -> int:
    """Load encoder weights (from :func:`save_encoder_weights` or an official 3-channel file) into ``model``.

    Every encoder layer of ``model`` must be in the file with equal shapes (an official file has
    no ``input_stem``: the model's own is kept); extra layers in the file are an error unless the
    model holds only part of the encoder (pspnet). Returns the number of layers set.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"encoder weights file not found: {path}")
    weights, attrs = weight_files.read_h5_weights(path)
    if attrs.get("backbone", backbone) != backbone:
        raise ValueError(f"{path} holds {attrs['backbone']} encoder weights, not {backbone}")
    ends = _present_ends(model, backbone)
    if not ends:
        raise ValueError(f"model {model.name!r} has none of the {backbone} encoder layers {list(encoder_end_layers(backbone))}")
    layers = list(_weighted_encoder(model, ends).values())
    partial = _spec(backbone).output_layer not in ends
    return _assign(layers, weights, str(path), optional=[STEM_NAME], allow_extra=partial)


# ------------------------------------------------------------------ misc
def count_parameters(model: keras.Model) -> dict[str, int]:
    """Numbers of parameters: ``{"total", "trainable", "non_trainable"}``."""
    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    non_trainable = int(sum(np.prod(w.shape) for w in model.non_trainable_weights))
    return {"total": trainable + non_trainable, "trainable": trainable, "non_trainable": non_trainable}
