"""TFLite export of trained Keras models (post-training quantisation), a TFLite predictor, optional ONNX.

Modes (:data:`MODES`, :func:`convert`)
    ``float32``: plain conversion (reference). ``float16``: weights stored as float16 (half the
    size), computed in float32. ``dynamic_range``: weights int8 (a quarter of the size),
    activations float, quantised on the fly inside each op; no calibration data needed.
    ``int8``: weights *and* activations int8 (full-integer model, the fastest on CPUs and the
    one integer-only accelerators run); the activation ranges are calibrated on a
    ``representative`` set of training images (:func:`representative_images`). Its input and
    output can stay float32 (quantise/dequantise ops inside the model) or be ``int8`` /
    ``uint8`` (``io_type``): the caller then quantises, which :class:`TFLitePredictor` does.

Fixed sizes
    TFLite needs a fixed input size: a model built with ``input_shape=(None, None, C)`` is
    converted through a concrete function at ``input_size = (H, W)`` and batch 1 (the interpreter
    input is resized for batches). Models take grey levels in [0, 255], shape ``(B, H, W, C)``
    (see :mod:`helpers.modeling.builders`); quantised grey input (``io_type="uint8"``) is then the pixel
    values themselves, scale about 1.

Ops TFLite lacks
    A model with an op that a mode cannot convert raises :class:`ConversionError` naming the
    op(s). With ``allow_select_ops=True`` the conversion falls back to TensorFlow "Select" ops
    (the TF kernels embedded in the model), with a warning. Such a model only runs on an
    interpreter linked with the Flex delegate, which the ``tf.lite`` interpreter of the
    TensorFlow 2.21 pip wheel is not: :class:`TFLitePredictor` says so, and ``int8`` calibration
    (which runs the model) fails for the same reason.

ONNX (optional, ``pip install -e ".[onnx]"``)
    :func:`export_onnx` converts with ``tf2onnx`` (same concrete function, dynamic batch);
    :class:`OnnxPredictor` runs it with ``onnxruntime``. Without those packages they raise
    ``ImportError`` saying what to install.

Loading trained models (:func:`load_keras_model`)
    Never runs code from a file: a run folder's weights are read into a model built from its
    settings (:mod:`helpers.modeling.runs`); a ``.keras`` file loads with tf-keras ``safe_mode``
    once its config is seen to name only Keras' own layers (``safe_mode`` alone stops ``Lambda``
    bytecode but imports and calls any function a config names); HDF5 full models (no safe mode in
    tf-keras) load only as weights of a run folder.
    ``trust_code=True`` is the only way around this, and then the file's code runs. Files whose
    bytes do not match their suffix (HDF5 signature, ``.keras`` zip, ``TFL3`` at byte 4 of a
    ``.tflite``), truncated or corrupt, are one-line ``ValueError`` errors naming the file.

Keras/TensorFlow come only from :mod:`helpers.backend`, imported by this module.
"""

from __future__ import annotations

import builtins
import json
import os
import re
import time
import warnings
import zipfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from helpers.core import checks, files
from helpers.data import augment
from helpers.modeling import builders, runs, weight_files
from helpers.backend import keras, tf

__all__ = [
    "IO_TYPES",
    "MODES",
    "ConversionError",
    "OnnxPredictor",
    "TFLitePredictor",
    "convert",
    "dequantize",
    "export_onnx",
    "export_tflite",
    "latencies",
    "load_keras_model",
    "onnx_available",
    "quantize",
    "representative_images",
]

MODES = ("float32", "dynamic_range", "float16", "int8")
IO_TYPES = ("float32", "int8", "uint8")
_ONNX_HINT = 'ONNX export needs tf2onnx and onnxruntime: pip install -e ".[onnx]" (pins in pyproject.toml)'


class ConversionError(RuntimeError):
    """A model that a TFLite mode cannot convert; ``ops`` names the TensorFlow ops at fault (may be empty)."""

    def __init__(self, message: str, ops: Sequence[str] = ()):
        super().__init__(message)
        self.ops = tuple(ops)


# ------------------------------------------------------------------ checks
def _single_input_output(model: keras.Model) -> tuple[int | None, int | None, int]:
    """``(H, W, C)`` of the one input (H, W may be None); one output required."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            f"model {model.name!r} has {len(model.inputs)} input(s) and {len(model.outputs)} output(s); export needs one "
            "of each (build UNet++ with deep_supervision=False or 'average': the trained weights load by name)"
        )
    _, height, width, channels = model.inputs[0].shape
    return height, width, int(channels)


def _input_size(model: keras.Model, input_size: Sequence[int] | None) -> tuple[int, int, int]:
    """The ``(H, W, C)`` to convert at: the model's fixed size, or ``input_size`` for a ``(None, None, C)`` model."""
    height, width, channels = _single_input_output(model)
    if input_size is None:
        if height is None or width is None:
            raise ValueError(f"model {model.name!r} takes any size {(height, width)}: pass input_size=(H, W)")
        return int(height), int(width), channels
    size = checks.size("input_size", input_size)
    for axis, fixed, wanted in (("H", height, size[0]), ("W", width, size[1])):
        if fixed is not None and fixed != wanted:
            raise ValueError(f"model {model.name!r} is built for {axis}={fixed}; got input_size {size}")
    return size[0], size[1], channels


# ------------------------------------------------------------------ conversion
_OP_PATTERNS = (
    r"TF Select ops: ([^\n]+)",
    r"Custom ops: ([^\n]+)",
    r"'tf\.(\w+)' op is neither a custom op nor a flex op",
    r"\(Flex(\w+)\) failed to prepare",
    r"Quantization not yet supported for op: '?(\w+)",
)


def _ops_in(message: str) -> list[str]:
    """Names of the TensorFlow ops an error message of the converter or interpreter blames, in order."""
    found: list[str] = []
    for pattern in _OP_PATTERNS:
        for match in re.findall(pattern, message):
            found += [op.strip() for op in match.split(",") if op.strip()]
    return list(dict.fromkeys(found))


def _first_line(err: BaseException) -> str:
    lines = [line for line in str(err).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(err).__name__


def _converter(concrete: Any, model: keras.Model, mode: str, representative: np.ndarray | None, io_type: str, select: bool):
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], model)
    converter.experimental_lower_to_saved_model = False  # same model, ~10x faster than the SavedModel round trip
    builtins = tf.lite.OpsSet.TFLITE_BUILTINS_INT8 if mode == "int8" else tf.lite.OpsSet.TFLITE_BUILTINS
    converter.target_spec.supported_ops = [builtins] + ([tf.lite.OpsSet.SELECT_TF_OPS] if select else [])
    if mode != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if mode == "int8":
        samples = representative

        def calibration():
            for sample in samples:
                yield [sample[None]]

        converter.representative_dataset = calibration
        if io_type != "float32":
            converter.inference_input_type = converter.inference_output_type = getattr(tf, io_type)
    return converter


def _convert(converter) -> bytes:
    with warnings.catch_warnings():  # the int8 converter warns that it calibrates the input range itself
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected", category=UserWarning)
        return converter.convert()


def convert(
    model: keras.Model,
    mode: str = "float32",
    input_size: Sequence[int] | None = None,
    representative: np.ndarray | None = None,
    io_type: str = "float32",
    allow_select_ops: bool = False,
) -> bytes:
    """The TFLite flatbuffer of ``model`` (one ``(B, H, W, C)`` input, one output) in ``mode``.

    ``mode``: one of :data:`MODES`; ``input_size = (H, W)`` for models built with ``None`` sizes;
    ``representative``: ``(N, H, W, C)`` float images in [0, 255] (int8 only, required there,
    e.g. :func:`representative_images`); ``io_type``: int8 input/output type, one of
    :data:`IO_TYPES`. Raises :class:`ConversionError` naming the ops a mode cannot convert;
    ``allow_select_ops`` then retries with TensorFlow Select ops, with a warning (module doc).
    """
    checks.choice("mode", mode, MODES)
    checks.choice("io_type", io_type, IO_TYPES)
    if mode != "int8" and io_type != "float32":
        raise ValueError(f"io_type {io_type!r} needs mode='int8' (only full-integer models take integer input); got mode {mode!r}")
    height, width, channels = _input_size(model, input_size)
    if mode == "int8":
        if representative is None:
            raise ValueError("mode='int8' needs representative images (N, H, W, C) to calibrate the activation ranges")
        representative = np.asarray(representative, dtype=np.float32)
        if representative.ndim != 4 or representative.shape[1:] != (height, width, channels) or not len(representative):
            raise ValueError(f"representative must be (N, {height}, {width}, {channels}) images; got shape {representative.shape}")
    elif representative is not None:
        raise ValueError(f"representative images are used by mode='int8' only; got mode {mode!r}")

    serve = tf.function(lambda images: model(images, training=False))
    concrete = serve.get_concrete_function(tf.TensorSpec((1, height, width, channels), tf.float32, name=builders.INPUT_NAME))
    try:
        return _convert(_converter(concrete, model, mode, representative, io_type, select=False))
    except Exception as err:  # the converter raises ConverterError, RuntimeError or ValueError
        ops = _ops_in(str(err))
        blamed = f"op(s) {', '.join(ops)}" if ops else f"the model ({_first_line(err)})"
        if not allow_select_ops:
            raise ConversionError(
                f"TFLite mode {mode!r} cannot convert {blamed} of model {model.name!r} with the TFLite builtin ops; "
                "pass allow_select_ops=True to fall back to TensorFlow Select ops (needs an interpreter with the Flex delegate), "
                f"or try another mode of {', '.join(MODES)}",
                ops,
            ) from err
    warnings.warn(
        f"TFLite mode {mode!r}: {blamed} of model {model.name!r} fall back to TensorFlow Select ops; the model runs only "
        "on an interpreter linked with the Flex delegate (not the tf.lite interpreter of the TensorFlow pip wheel)",
        RuntimeWarning,
        stacklevel=2,
    )
    try:
        return _convert(_converter(concrete, model, mode, representative, io_type, select=True))
    except Exception as err:
        more = _ops_in(str(err)) or ops
        reason = (
            "int8 calibration runs the model, and this TensorFlow's tf.lite interpreter has no Flex delegate; "
            "use mode 'dynamic_range' or 'float16' for this model"
            if mode == "int8" and "Flex" in str(err)
            else "they are neither TFLite builtin nor TensorFlow Select ops (a custom op would be needed)"
        )
        raise ConversionError(
            f"TFLite mode {mode!r} cannot convert op(s) {', '.join(more) or _first_line(err)} of model {model.name!r} "
            f"even with TensorFlow Select ops: {reason}",
            more,
        ) from err


def export_tflite(model: keras.Model, path: str | os.PathLike, mode: str = "float32", **options: Any) -> Path:
    """:func:`convert` ``model`` (``options`` as there) and write the ``.tflite`` file; return its path."""
    content = convert(model, mode, **options)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        temporary.write_bytes(content)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def representative_images(
    dataset_dir: str | os.PathLike,
    image_ids: Sequence[str],
    n_samples: int,
    size: Sequence[int],
    seed: int = 0,
    resize_to: Sequence[int] | None = None,
    progress: bool = True,
) -> np.ndarray:
    """``(n, H, W, 1)`` float32 grey levels of ``n_samples`` training images (seeded draw, ``n`` = at most all).

    Read from ``dataset_dir/train_images`` as validation images are (:func:`augment.eval_transforms`:
    optional ``resize_to``, then a top-left zero pad to ``size = (H, W)``, the conversion size).
    """
    n_samples = checks.positive_int("n_samples", n_samples)
    if isinstance(image_ids, str) or not len(image_ids):
        raise ValueError(f"image_ids must be a non-empty sequence of ImageIds; got {image_ids!r}")
    rng = np.random.default_rng(checks.seed("seed", seed))
    chosen = rng.choice(len(image_ids), size=min(n_samples, len(image_ids)), replace=False)
    transforms = augment.eval_transforms(resize_to=resize_to, pad_to=size)
    target = tuple(int(v) for v in size)
    out = []
    for index in tqdm(sorted(chosen), desc="representative images", unit="img", disable=not progress):
        path = Path(dataset_dir) / "train_images" / image_ids[index]
        image = files.read_grey(path)
        image, _ = augment.apply(transforms, image, np.zeros((*image.shape, 1), np.uint8))
        if image.shape != target:
            raise ValueError(f"image {path} is {image.shape[0]}x{image.shape[1]} after resize/pad, larger than size {target} (HxW)")
        out.append(image)
    return np.stack(out)[..., None].astype(np.float32)


# ------------------------------------------------------------------ quantisation arithmetic
def quantize(values: np.ndarray, scale: float, zero_point: int, dtype: np.dtype | type) -> np.ndarray:
    """``round(values / scale + zero_point)`` clipped to the range of the integer ``dtype`` (any shape)."""
    dtype = np.dtype(dtype)
    if dtype.kind not in "iu" or not scale > 0:
        raise ValueError(f"quantize needs an integer dtype and a scale > 0; got {dtype} and {scale!r}")
    info = np.iinfo(dtype)
    return np.clip(np.round(np.asarray(values, np.float64) / scale + zero_point), info.min, info.max).astype(dtype)


def dequantize(values: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """``(values - zero_point) * scale`` as float32 (any shape)."""
    return ((np.asarray(values, np.float32) - np.float32(zero_point)) * np.float32(scale)).astype(np.float32)


# ------------------------------------------------------------------ running models
def _batches(images: np.ndarray, batch_size: int, progress: bool, what: str):
    batch_size = checks.positive_int("batch_size", batch_size)
    starts = range(0, len(images), batch_size)
    for start in tqdm(starts, desc=what, unit="batch", disable=not progress):
        yield images[start:start + batch_size]


def _check_images(images: np.ndarray, shape: tuple[int, ...], where: str) -> np.ndarray:
    images = np.asarray(images, dtype=np.float32)
    if images.ndim == len(shape) - 1 and shape[-1] == 1:
        images = images[..., None]
    if images.ndim != len(shape) or images.shape[1:] != shape[1:] or not len(images):
        hint = "; pad them with augment.eval_transforms(pad_to=(H, W)) first" if len(shape) == 4 else ""
        raise ValueError(f"{where} takes images (N, {', '.join(map(str, shape[1:]))}); got shape {images.shape}{hint}")
    return images


class TFLitePredictor:
    """Runs a ``.tflite`` model (path or bytes) on ``(N, H, W, C)`` float images in [0, 255].

    Quantised input/output (int8/uint8) is quantised/dequantised with the tensors' scale and zero
    point, so :meth:`predict` always takes and returns float32. ``num_threads``: CPU threads of
    the interpreter (XNNPACK). The batch is resized as needed.
    """

    def __init__(self, model: str | os.PathLike | bytes, num_threads: int = 2):
        self.num_threads = checks.positive_int("num_threads", num_threads)
        if isinstance(model, (bytes, bytearray)):
            content, self.source = bytes(model), "<bytes>"
        else:
            path = Path(model)
            if not path.is_file():
                raise FileNotFoundError(f"TFLite model not found: {path}")
            content, self.source = path.read_bytes(), str(path)
        if content[4:8] != b"TFL3":
            found = "not a TFLite file" if isinstance(model, (bytes, bytearray)) else weight_files.describe_format(weight_files.file_format(path))
            raise ValueError(f"{self.source}: {found}, not a TFLite flatbuffer ('TFL3' at byte 4)")
        self.size_bytes = len(content)
        with warnings.catch_warnings():  # tf.lite.Interpreter warns that LiteRT (ai_edge_litert) will replace it
            warnings.filterwarnings("ignore", message=r"\s*Warning: tf\.lite\.Interpreter is deprecated", category=UserWarning)
            try:
                self._interpreter = tf.lite.Interpreter(model_content=content, num_threads=self.num_threads)
            except ValueError as err:  # the flatbuffer verifier: truncated or corrupt
                raise ValueError(f"{self.source}: truncated or corrupt TFLite flatbuffer ({_first_line(err)})") from None
        inputs, outputs = self._interpreter.get_input_details(), self._interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(f"{self.source}: a model with one input and one output is needed; got {len(inputs)} and {len(outputs)}")
        self._input, self._output = inputs[0], outputs[0]
        self.input_shape: tuple[int, ...] = tuple(int(v) for v in self._input["shape"])  # (1, H, W, C) as converted
        self._batch = None
        self._allocate(1)

    def _allocate(self, batch: int) -> None:
        if batch == self._batch:
            return
        self._interpreter.resize_tensor_input(self._input["index"], [batch, *self.input_shape[1:]])
        try:
            self._interpreter.allocate_tensors()
        except RuntimeError as err:
            ops = _ops_in(str(err))
            if "Flex" not in str(err) and "Select TensorFlow" not in str(err):
                raise
            raise RuntimeError(
                f"{self.source} uses TensorFlow Select op(s) {', '.join(ops) or '?'} (converted with allow_select_ops=True); "
                "the tf.lite interpreter of this TensorFlow build has no Flex delegate to run them: convert without them "
                "or use a runtime linked with the Flex delegate"
            ) from None
        self._batch = batch

    @property
    def input_size(self) -> tuple[int, int]:
        """``(H, W)`` the model takes."""
        return self.input_shape[1], self.input_shape[2]

    @property
    def input_dtype(self) -> np.dtype:
        return np.dtype(self._input["dtype"])

    @property
    def output_dtype(self) -> np.dtype:
        return np.dtype(self._output["dtype"])

    @property
    def input_quantization(self) -> tuple[float, int]:
        """``(scale, zero_point)`` of the input; ``(0.0, 0)`` for float input."""
        scale, zero_point = self._input["quantization"]
        return float(scale), int(zero_point)

    @property
    def output_quantization(self) -> tuple[float, int]:
        """``(scale, zero_point)`` of the output; ``(0.0, 0)`` for float output."""
        scale, zero_point = self._output["quantization"]
        return float(scale), int(zero_point)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        self._allocate(len(batch))
        if self.input_dtype.kind in "iu":
            batch = quantize(batch, *self.input_quantization, self.input_dtype)
        self._interpreter.set_tensor(self._input["index"], batch.astype(self.input_dtype, copy=False))
        self._interpreter.invoke()
        out = self._interpreter.get_tensor(self._output["index"])
        return dequantize(out, *self.output_quantization) if self.output_dtype.kind in "iu" else out.astype(np.float32)

    def predict(self, images: np.ndarray, batch_size: int = 1, progress: bool = False) -> np.ndarray:
        """Float32 outputs ``(N, ...)`` (segmenters ``(N, H, W, classes)``) of images ``(N, H, W[, C])`` in [0, 255]."""
        images = _check_images(images, self.input_shape, f"TFLite model {self.source}")
        return np.concatenate([self._run(batch) for batch in _batches(images, batch_size, progress, "tflite")])

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """:meth:`predict` in one batch."""
        return self.predict(images, batch_size=len(images))


def latencies(function: Callable[[np.ndarray], Any], batch: np.ndarray, runs: int = 20, warmup: int = 2) -> np.ndarray:
    """Seconds of each of ``runs`` calls ``function(batch)`` after ``warmup`` untimed ones, shape ``(runs,)``.

    Report the median (robust to the noise of a shared machine); batch 1 gives the per-image latency.
    """
    runs = checks.positive_int("runs", runs)
    for _ in range(checks.integer("warmup", warmup, low=0)):
        function(batch)
    times = np.empty(runs)
    for i in range(runs):
        started = time.perf_counter()
        function(batch)
        times[i] = time.perf_counter() - started
    return times


# ------------------------------------------------------------------ trained Keras models
_EXPECTED = (
    "expected a run folder (run.json, or build.json + best.weights.h5) or a folder with model.keras, "
    "a .weights.h5/.h5 file of a run folder, or a .keras model file"
)
_TRUST = "pass trust_code=True (--trust-code) only if you trust its source"
# What a .keras config may name (tf-keras imports any module a config names, even with safe_mode=True).
_CLASS_MODULES = {
    "keras.layers": keras.layers,
    "keras.initializers": keras.initializers,
    "keras.regularizers": keras.regularizers,
    "keras.constraints": keras.constraints,
}
_MODEL_CLASSES = {
    ("keras", "Sequential"), ("keras", "Model"), ("keras", "Functional"), ("keras.models", "Sequential"),
    ("keras.models", "Model"), ("tf_keras.src.engine.functional", "Functional"),
    ("tf_keras.src.engine.sequential", "Sequential"), ("tf_keras.src.engine.training", "Model"),
    ("efficientnet.model", "FixedDropout"),  # segmentation-models' EfficientNet backbones
}
_REFUSED_LAYERS = {"TFSMLayer"}  # loads a SavedModel from a path the config gives
_NOT_FUNCTIONS = {"get", "serialize", "deserialize"}  # Keras' lookup helpers, not activations


def _allowed(module: str, class_name: Any, inner: Any) -> bool:
    """Whether a ``{"module", "class_name", "config"}`` entry of a ``.keras`` config names only Keras' own objects."""
    if class_name == "function":  # a function reference: Keras activations; "builtins" = Keras' built-in names
        if not isinstance(inner, str) or inner in _NOT_FUNCTIONS:
            return False
        if module == "keras.activations":
            return callable(getattr(keras.activations, inner, None))
        return module == "builtins" and not hasattr(builtins, inner)
    if class_name == "__typespec__":
        return module.startswith("tensorflow.")
    if (module, class_name) in _MODEL_CLASSES:
        return True
    namespace = _CLASS_MODULES.get(module)
    return (namespace is not None and class_name not in _REFUSED_LAYERS
            and isinstance(getattr(namespace, str(class_name), None), type))


def _code_in_config(value: Any, top: bool = True) -> str | None:
    """The first thing in a ``.keras`` config that would import or run Python outside Keras' layers, or None."""
    if isinstance(value, list):
        return next((found for item in value if (found := _code_in_config(item, False))), None)
    if not isinstance(value, dict):
        return None
    class_name, inner, module = value.get("class_name"), value.get("config"), value.get("module")
    if class_name == "__lambda__":
        return "a Python lambda (bytecode)"
    if class_name == "Lambda" and isinstance(inner, dict) and "lambda" in (inner.get("function_type"), inner.get("output_shape_type")):
        return f"its Lambda layer {inner.get('name')!r} holds Python bytecode"
    if isinstance(module, str) and class_name is not None and not _allowed(module, class_name, inner):
        name = inner if class_name == "function" else value.get("spec_name", class_name)
        return f"its config names {module + '.' + str(name)!r}, Python outside Keras' own layers"
    items = (item for key, item in value.items() if not (top and key == "compile_config"))  # compile=False drops it
    return next((found for item in items if (found := _code_in_config(item, False))), None)


def _load_keras_file(path: Path, trust_code: bool) -> keras.Model:
    """A ``.keras`` archive, checked to be one; with ``safe_mode`` and only Keras' own objects unless ``trust_code``."""
    kind = weight_files.file_format(path)
    if kind != "zip":
        hint = ": HDF5 full models can run code on load, load its weights from a run folder" if kind == "hdf5" else ""
        raise ValueError(f"{path}: {weight_files.describe_format(kind)}, not a .keras model (a zip archive with config.json){hint}")
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, zlib.error, KeyError, OSError, ValueError) as err:
        raise ValueError(f"{path}: truncated or corrupt .keras model (a zip archive with config.json): {_first_line(err)}") from None
    if not trust_code:
        found = _code_in_config(config)
        if found:
            raise ValueError(f"{path}: refused: {found} that loading would run; {_TRUST}, or load its weights from a run folder")
    try:
        return keras.models.load_model(path, compile=False, safe_mode=not trust_code)
    except Exception as err:  # tf-keras and h5py raise ValueError, TypeError, OSError, KeyError, ...
        raise ValueError(f"{path}: cannot load this .keras model: {_first_line(err)}") from None


def _settings_beside(path: Path) -> dict:
    """The build settings of the run folder holding ``path``, or ``{}``."""
    return runs.load_run(path.parent, build=False).settings if runs.is_run(path.parent) else {}


def load_keras_model(path: str | os.PathLike, trust_code: bool = False) -> tuple[keras.Model, dict]:
    """A trained model and its build settings (``{}`` when unknown); never runs code from the files.

    ``path``: a run folder (:func:`helpers.modeling.runs.load_run`: ``run.json``, or the older
    ``build.json`` + ``best.weights.h5``) or else a folder with ``model.keras``; an ``.h5`` weights
    file of a run folder (loaded instead of the run's saved weights); or a ``.keras`` model file
    (no compiling, tf-keras ``safe_mode``, and only Keras' own layers and functions).

    A ``.keras`` file with a ``Lambda`` (bytecode) or naming other Python, and an HDF5 full model
    outside a run folder, are refused. With ``trust_code=True`` they load and *their code runs*:
    only for files you trust. A file whose bytes do not match its suffix, or that is truncated or
    corrupt, is a one-line ``ValueError`` naming it.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model not found: {path}")
    if path.is_dir():
        if runs.is_run(path):
            run = runs.load_run(path)
            return run.model, run.settings
        if not (path / "model.keras").is_file():
            raise ValueError(f"{path}: {_EXPECTED}")
        return _load_keras_file(path / "model.keras", trust_code), {}
    if path.suffix == ".h5":
        weight_files.check_hdf5(path, "a Keras HDF5 model or weights file (.h5)")
        if runs.is_run(path.parent):
            run = runs.load_run(path.parent, weights=path.name)
            return run.model, run.settings
        if path.name.endswith(".weights.h5"):
            raise ValueError(f"{path}: a weights file needs the run.json of its run beside it; {_EXPECTED}")
        if not trust_code:
            raise ValueError(
                f"{path}: refused: an HDF5 full-model file can run code on load (tf-keras has no safe mode for HDF5); "
                f"load its weights from a run folder (helpers.modeling.runs) instead, or {_TRUST}"
            )
        try:
            return keras.models.load_model(path, compile=False), {}
        except Exception as err:  # tf-keras and h5py raise ValueError, TypeError, OSError, KeyError, ...
            raise ValueError(f"{path}: cannot load this HDF5 model: {_first_line(err)}") from None
    if path.suffix == ".keras":
        return _load_keras_file(path, trust_code), _settings_beside(path)
    raise ValueError(f"{path}: {_EXPECTED}")


# ------------------------------------------------------------------ ONNX (optional)
def onnx_available() -> bool:
    """True when ``tf2onnx`` and ``onnxruntime`` are installed (the ``onnx`` extra)."""
    from importlib.util import find_spec

    return find_spec("tf2onnx") is not None and find_spec("onnxruntime") is not None


def _import(name: str):
    try:
        return __import__(name)
    except ImportError as err:
        raise ImportError(f"{_ONNX_HINT}; {name} is missing ({err})") from None


def export_onnx(model: keras.Model, path: str | os.PathLike, input_size: Sequence[int] | None = None, opset: int = 17) -> Path:
    """Write ``model`` as ONNX (tf2onnx), input ``(batch, H, W, C)`` named ``image``; return the path.

    ``input_size = (H, W)`` as for :func:`convert`; the batch stays dynamic.
    """
    tf2onnx = _import("tf2onnx")
    height, width, channels = _input_size(model, input_size)
    serve = tf.function(lambda images: model(images, training=False))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    signature = [tf.TensorSpec((None, height, width, channels), tf.float32, name=builders.INPUT_NAME)]
    tf2onnx.convert.from_function(serve, input_signature=signature, opset=checks.positive_int("opset", opset), output_path=str(path))
    return path


class OnnxPredictor:
    """Runs an ONNX model with onnxruntime (CPU) on ``(N, H, W, C)`` float images in [0, 255]."""

    def __init__(self, path: str | os.PathLike, num_threads: int = 2):
        ort = _import("onnxruntime")
        self.source = str(path)
        if not Path(path).is_file():
            raise FileNotFoundError(f"ONNX model not found: {path}")
        self.size_bytes = Path(path).stat().st_size
        options = ort.SessionOptions()
        options.intra_op_num_threads = checks.positive_int("num_threads", num_threads)
        options.log_severity_level = 3  # errors only
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0]
        self.input_shape = tuple(1 if not isinstance(v, int) else v for v in self._input.shape)

    def predict(self, images: np.ndarray, batch_size: int = 1, progress: bool = False) -> np.ndarray:
        """Float32 outputs ``(N, ...)`` of images ``(N, H, W[, C])`` in [0, 255]."""
        images = _check_images(images, self.input_shape, f"ONNX model {self.source}")
        runs = (self._session.run(None, {self._input.name: batch})[0] for batch in _batches(images, batch_size, progress, "onnx"))
        return np.concatenate(list(runs)).astype(np.float32)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """:meth:`predict` in one batch."""
        return self.predict(images, batch_size=len(images))
