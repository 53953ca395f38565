"""Tests of helpers.deploy.export: TFLite conversion in every mode, the predictor, op fallbacks, optional ONNX.

A tiny seeded U-Net-like model (Rescaling, 3 convolutions, BatchNorm, upsampling, skip, sigmoid
head; 32x48 input) converts in well under a second per mode; the architectures of
helpers.modeling.builders are covered on a MobileNet 0.25 backbone with small decoders (64x64, PSPNet 48x48).
"""

from __future__ import annotations

import json
import sys
import warnings
import zipfile

import numpy as np
import pytest

from helpers.core import files
from helpers.deploy import export
from helpers.modeling import builders, runs
from helpers.backend import keras, tf

SIZE = (32, 48)

# Largest |TFLite - Keras| allowed on the sigmoid outputs (in [0, 1]) of the tiny model, and the mean.
# Observed on the development machine (XNNPACK, 2 threads), max / mean:
#   float32        1.8e-7 / 3e-8    float rounding of a different op order only        -> 1e-5 / 1e-6
#   float16        6.5e-5 / 1.2e-5  weights rounded to 11-bit mantissas (rel. 2^-11 = 5e-4) before a sigmoid
#                                   (slope <= 0.25)                                     -> 2e-3 / 2e-4
#   dynamic_range  6.9e-4 / 1.1e-4  int8 weights (per channel, rel. ~1/254) and activations quantised on the fly
#                                                                                       -> 1e-2 / 1e-3
#   int8           4.4e-3 / 1.1e-3  activations int8 on calibrated ranges: the output step alone is 1/256 = 0.0039,
#                                   each of the 4 quantised layers adds about half a step of its own range
#                                                                                       -> 2.5e-2 / 5e-3 (~6 output steps)
TOLERANCES = {
    "float32": (1e-5, 1e-6),
    "float16": (2e-3, 2e-4),
    "dynamic_range": (1e-2, 1e-3),
    "int8": (2.5e-2, 5e-3),
}
# Random-initialised MobileNet backbones with spread BatchNorm statistics (architecture coverage; outputs std 0.06-0.26).
# Observed max: float32 9e-7; int8 0.02 (LinkNet), 0.019 (UNet++), 0.012 (FPN), 0.010 (U-Net), 0.004 (PSPNet),
# 0.0014 (classifier): ~15 quantised layers, each adding up to half a step of its own range -> int8 bound 0.05.
ARCH_TOLERANCES = {"float32": 1e-5, "int8": 5e-2}
ARCHITECTURES = {
    "unet": dict(decoder_filters=(16, 16, 8, 8, 8)),
    "linknet": dict(decoder_filters=(None, None, None, None, 8)),
    "unetpp": dict(decoder_filters=(16, 16, 8, 8, 8)),
    "fpn": dict(pyramid_block_filters=16),
    "pspnet": dict(psp_conv_filters=16),
}


def _tiny_segmenter(seed: int = 0, fixed: bool = False) -> keras.Model:
    """(B, H, W, 1) grey levels in [0, 255] -> (B, H, W, 3) sigmoid; any H, W divisible by 2 unless ``fixed``."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((*SIZE, 1) if fixed else (None, None, 1), name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)
    skip = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False)(skip)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    x = keras.layers.Concatenate()([skip, keras.layers.UpSampling2D()(x)])
    return keras.Model(inputs, keras.layers.Conv2D(3, 1, activation="sigmoid")(x), name="tiny")


def _with_op(op, name: str) -> keras.Model:
    """A small model with ``op`` (a TensorFlow function) between two convolutions."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 1))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = keras.layers.Lambda(op)(x)
    return keras.Model(inputs, keras.layers.Conv2D(2, 1, activation="sigmoid")(x), name=name)


def _spread_batchnorm(model: keras.Model, seed: int) -> None:
    """Non-trivial BatchNorm statistics, so randomly initialised backbones give outputs that vary between pixels."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.weights[0].shape[0]
            values = {"gamma": rng.uniform(0.5, 1.5, n), "beta": rng.normal(0, 0.5, n),
                      "moving_mean": rng.normal(0, 0.2, n), "moving_variance": rng.uniform(0.5, 2.0, n)}
            layer.set_weights([values[w.name.split("/")[-1].split(":")[0]].astype("float32") for w in layer.weights])


@pytest.fixture(scope="module")
def tiny():
    return _tiny_segmenter()


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(0, 255, (6, *SIZE, 1)).astype("float32")


@pytest.mark.parametrize(
    "mode, io_type, input_dtype",
    [
        ("float32", "float32", np.float32),
        ("float16", "float32", np.float32),
        ("dynamic_range", "float32", np.float32),
        ("int8", "float32", np.float32),
        ("int8", "int8", np.int8),
        ("int8", "uint8", np.uint8),
    ],
)
def test_each_mode_matches_keras_within_its_tolerance(tiny, images, mode, io_type, input_dtype):
    expected = tiny(images, training=False).numpy()
    content = export.convert(tiny, mode, input_size=SIZE, representative=images if mode == "int8" else None, io_type=io_type)
    predictor = export.TFLitePredictor(content)
    assert predictor.input_shape == (1, *SIZE, 1) and predictor.input_dtype == input_dtype
    if io_type != "float32":
        scale, zero_point = predictor.input_quantization
        assert scale == pytest.approx(255 / 255, rel=1e-3)  # grey levels 0..255 map onto the 256 integer codes
        assert zero_point == (-128 if io_type == "int8" else 0)
        assert predictor.output_quantization[0] == pytest.approx(1 / 256)  # sigmoid output range [0, 1]
    predicted = predictor.predict(images, batch_size=4)
    difference = np.abs(predicted - expected)
    max_allowed, mean_allowed = TOLERANCES[mode]
    assert predicted.shape == expected.shape and predicted.dtype == np.float32
    assert difference.max() <= max_allowed and difference.mean() <= mean_allowed, (difference.max(), difference.mean())


def test_quantised_models_are_smaller(tiny, images):
    sizes = {mode: len(export.convert(tiny, mode, input_size=SIZE, representative=images if mode == "int8" else None))
             for mode in export.MODES}
    # the tiny model's weights (~1.5k) are small next to the flatbuffer's fixed overhead, so only the order is checked here
    assert sizes["int8"] < sizes["float16"] < sizes["float32"] and sizes["dynamic_range"] < sizes["float32"]


@pytest.mark.parametrize("arch", [*ARCHITECTURES, "classifier"])
@pytest.mark.slow  # in the full suite, not the fast tier
def test_every_architecture_converts_in_float32_and_int8(arch):
    keras.utils.set_random_seed(0)
    side = 48 if arch == "pspnet" else 64
    if arch == "classifier":
        model = builders.build_classifier("mobilenet", input_shape=(None, None, 1), n_outputs=3, alpha=0.25)
    else:
        shape = (side, side, 1) if builders.needs_fixed_size(arch) else (None, None, 1)
        model = builders.build_segmenter(arch, "mobilenet", input_shape=shape, classes=2, alpha=0.25, **ARCHITECTURES[arch])
    _spread_batchnorm(model, seed=1)
    images = np.random.default_rng(0).uniform(0, 255, (3, side, side, 1)).astype("float32")
    expected = model(images, training=False).numpy()
    assert expected.std() > 1e-3  # outputs vary: the comparison below means something
    sizes = {}
    for mode, tolerance in ARCH_TOLERANCES.items():
        content = export.convert(model, mode, input_size=(side, side), representative=images if mode == "int8" else None)
        predicted = export.TFLitePredictor(content).predict(images, batch_size=2)
        assert predicted.shape == expected.shape
        assert np.abs(predicted - expected).max() <= tolerance, (mode, np.abs(predicted - expected).max())
        sizes[mode] = len(content)
    if arch != "pspnet":  # PSPNet with 16 filters has too few weights for the ratio to show
        # 4x on the weights; int32 biases and per-channel scales weigh more in these small models (LinkNet: 2.9x;
        # U-Net/ResNet-18 of notebook 03: 3.95x)
        assert sizes["float32"] / sizes["int8"] > 2.5


def test_batches_give_the_same_outputs_as_single_images(tiny, images):
    predictor = export.TFLitePredictor(export.convert(tiny, "float32", input_size=SIZE))
    one_by_one = predictor.predict(images, batch_size=1)
    np.testing.assert_allclose(predictor.predict(images, batch_size=4), one_by_one, atol=1e-6)
    np.testing.assert_allclose(predictor(images[:2]), one_by_one[:2], atol=1e-6)
    np.testing.assert_allclose(predictor.predict(images[..., 0]), one_by_one, atol=1e-6)  # (N, H, W) accepted


def test_fixed_size_models_need_no_input_size(images):
    model = _tiny_segmenter(fixed=True)
    predictor = export.TFLitePredictor(export.convert(model, "float32"))
    assert predictor.input_size == SIZE
    with pytest.raises(ValueError, match=r"built for H=32"):
        export.convert(model, "float32", input_size=(64, 48))


def test_export_tflite_writes_a_file_the_predictor_reads(tiny, images, tmp_path):
    path = export.export_tflite(tiny, tmp_path / "sub" / "tiny_int8.tflite", "int8", input_size=SIZE, representative=images)
    predictor = export.TFLitePredictor(path, num_threads=1)
    assert predictor.size_bytes == path.stat().st_size and not list(path.parent.glob(".*.tmp"))
    assert predictor.predict(images[:1]).shape == (1, *SIZE, 3)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mode": "int4"}, r"mode must be one of \['float32', 'dynamic_range', 'float16', 'int8'\], got 'int4'"),
        ({"mode": "int8", "io_type": "int16"}, r"io_type must be one of \['float32', 'int8', 'uint8'\], got 'int16'"),
        ({"mode": "float16", "io_type": "uint8"}, r"io_type 'uint8' needs mode='int8'"),
        ({"mode": "int8"}, r"needs representative images"),
        ({"mode": "int8", "representative": np.zeros((2, 16, 16, 1))}, r"representative must be \(N, 32, 48, 1\)"),
        ({"mode": "float32", "representative": np.zeros((2, 32, 48, 1))}, r"used by mode='int8' only"),
        ({"mode": "float32", "input_size": None}, r"pass input_size=\(H, W\)"),
        ({"mode": "float32", "input_size": (32,)}, r"input_size must be \(height, width\), two integers >= 1, got \(32,\)"),
        ({"mode": "float32", "input_size": (0, 48)}, r"input_size must be \(height, width\), two integers >= 1, got \(0, 48\)"),
    ],
)
def test_convert_rejects_bad_arguments(tiny, kwargs, message):
    kwargs = {"input_size": SIZE, **kwargs}
    with pytest.raises(ValueError, match=message):
        export.convert(tiny, **kwargs)


def test_models_with_several_outputs_are_refused():
    inputs = keras.Input((32, 32, 1))
    model = keras.Model(inputs, [keras.layers.Conv2D(1, 1)(inputs), keras.layers.Conv2D(1, 1)(inputs)])
    with pytest.raises(ValueError, match=r"1 input\(s\) and 2 output\(s\).*deep_supervision"):
        export.convert(model)


def test_an_unsupported_op_is_named_and_can_fall_back_to_select_ops(images):
    model = _with_op(lambda x: tf.math.cumprod(x, axis=2), "with_cumprod")
    with pytest.raises(export.ConversionError, match=r"cannot convert op\(s\) Cumprod of model 'with_cumprod'.*allow_select_ops=True") as caught:
        export.convert(model, "float32")
    assert caught.value.ops == ("Cumprod",)
    with pytest.warns(RuntimeWarning, match=r"Cumprod of model 'with_cumprod' fall back to TensorFlow Select ops"):
        content = export.convert(model, "dynamic_range", allow_select_ops=True)
    assert b"FlexCumprod" in content
    # TensorFlow 2.21's pip wheel has no Flex delegate: the predictor says so instead of a bare allocation error
    with pytest.raises(RuntimeError, match=r"uses TensorFlow Select op\(s\) Cumprod.*no Flex delegate"):
        export.TFLitePredictor(content)
    with pytest.warns(RuntimeWarning), pytest.raises(export.ConversionError, match=r"int8 calibration runs the model"):
        export.convert(model, "int8", representative=np.zeros((2, 16, 16, 1), np.float32), allow_select_ops=True)


def test_an_op_without_any_tflite_kernel_is_named_even_with_select_ops():
    model = _with_op(lambda x: tf.math.erfinv(tf.tanh(x / 300.0)), "with_erfinv")
    with pytest.raises(export.ConversionError, match=r"op\(s\) Erfinv of model 'with_erfinv'"):
        export.convert(model, "float16")
    with pytest.warns(RuntimeWarning), pytest.raises(export.ConversionError, match=r"Erfinv .*even with TensorFlow Select ops: they are neither"):
        export.convert(model, "float32", allow_select_ops=True)


@pytest.mark.parametrize(
    "dtype, scale, zero_point, values, codes",
    [
        (np.uint8, 1.0, 0, [0.0, 127.4, 255.0, 300.0, -5.0], [0, 127, 255, 255, 0]),
        (np.int8, 1.0, -128, [0.0, 127.6, 255.0], [-128, 0, 127]),
        (np.uint8, 1 / 256, 0, [0.0, 0.5, 0.999], [0, 128, 255]),
        (np.int8, 1 / 256, -128, [0.0, 0.5, 1.0], [-128, 0, 127]),
    ],
)
def test_quantize_rounds_clips_and_dequantize_inverts(dtype, scale, zero_point, values, codes):
    quantised = export.quantize(np.array(values), scale, zero_point, dtype)
    assert quantised.dtype == dtype and quantised.tolist() == codes
    restored = export.dequantize(quantised, scale, zero_point)
    inside = (np.array(values) >= export.dequantize(np.iinfo(dtype).min, scale, zero_point)) & (
        np.array(values) <= export.dequantize(np.iinfo(dtype).max, scale, zero_point))
    assert np.all(np.abs(restored - np.array(values))[inside] <= scale / 2 + 1e-6)


def test_quantize_refuses_float_types_and_zero_scale():
    with pytest.raises(ValueError, match="integer dtype and a scale > 0"):
        export.quantize(np.zeros(2), 1.0, 0, np.float32)
    with pytest.raises(ValueError, match="integer dtype and a scale > 0"):
        export.quantize(np.zeros(2), 0.0, 0, np.int8)


def test_predictor_checks_its_input(tiny, tmp_path):
    predictor = export.TFLitePredictor(export.convert(tiny, "float32", input_size=SIZE))
    with pytest.raises(ValueError, match=r"takes images \(N, 32, 48, 1\); got shape \(1, 30, 48, 1\).*pad_to"):
        predictor.predict(np.zeros((1, 30, 48, 1)))
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        predictor.predict(np.zeros((1, *SIZE, 1)), batch_size=0)
    with pytest.raises(FileNotFoundError, match="TFLite model not found"):
        export.TFLitePredictor(tmp_path / "missing.tflite")
    with pytest.raises(ValueError, match="num_threads must be an integer >= 1"):
        export.TFLitePredictor(tmp_path / "missing.tflite", num_threads=0)


def test_latencies_times_every_run(tiny, images):
    calls = []
    times = export.latencies(calls.append, images[:1], runs=4, warmup=2)
    assert times.shape == (4,) and (times >= 0).all() and len(calls) == 6
    with pytest.raises(ValueError, match="runs must be an integer >= 1"):
        export.latencies(calls.append, images[:1], runs=0)
    with pytest.raises(ValueError, match="warmup must be an integer >= 0"):
        export.latencies(calls.append, images[:1], warmup=-1)


def _write_images(folder, shapes, seed=0):
    rng = np.random.default_rng(seed)
    for i, shape in enumerate(shapes):
        files.write_image(folder / f"img{i}.png", rng.integers(0, 256, shape, dtype=np.uint8))
    return [f"img{i}.png" for i in range(len(shapes))]


def test_representative_images_are_a_seeded_padded_sample(tmp_path):
    ids = _write_images(tmp_path / "train_images", [(30, 40)] * 5)
    first = export.representative_images(tmp_path, ids, 3, SIZE, seed=1, progress=False)
    again = export.representative_images(tmp_path, ids, 3, SIZE, seed=1, progress=False)
    assert first.shape == (3, *SIZE, 1) and first.dtype == np.float32
    np.testing.assert_array_equal(first, again)
    assert (first[:, 30:] == 0).all() and (first[:, :, 40:] == 0).all()  # zero pad at the bottom/right, as validation
    originals = {files.read_grey(tmp_path / "train_images" / i).tobytes() for i in ids}
    assert {np.uint8(im[:30, :40, 0]).tobytes() for im in first} <= originals
    assert len(export.representative_images(tmp_path, ids, 50, SIZE, progress=False)) == 5  # at most all
    with pytest.raises(ValueError, match="larger than size"):
        export.representative_images(tmp_path, ids, 2, (16, 16), progress=False)
    with pytest.raises(ValueError, match="n_samples must be an integer >= 1"):
        export.representative_images(tmp_path, ids, 0, SIZE)


def test_load_keras_model_from_a_saved_run_and_model_files(tmp_path):
    keras.utils.set_random_seed(0)
    settings = dict(arch="unet", backbone="mobilenet", input_shape=[None, None, 1], classes=2, alpha=0.25,
                    decoder_filters=[16, 16, 8, 8, 8])
    model = builders.build_segmenter(**settings)
    _spread_batchnorm(model, seed=2)
    run_dir = tmp_path / "models" / "unet-mobilenet"
    runs.save_run(run_dir, model, settings, {"score": 0.5})
    model.save(run_dir / "model.keras")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model.save(run_dir / "model.h5")  # a full HDF5 model in a run folder: only its weights are read
    images = np.random.default_rng(0).uniform(0, 255, (1, 64, 64, 1)).astype("float32")
    expected = model(images).numpy()
    for path in (run_dir, run_dir / runs.WEIGHTS_FILE, run_dir / "model.keras", run_dir / "model.h5"):
        loaded, loaded_settings = export.load_keras_model(path)
        np.testing.assert_allclose(loaded(images).numpy(), expected, atol=1e-6)
        assert loaded_settings["arch"] == "unet"
    (run_dir / runs.RUN_FILE).unlink()
    loaded, loaded_settings = export.load_keras_model(run_dir)  # no run.json: model.keras
    assert loaded_settings == {} and loaded.output_shape == (None, None, None, 2)
    with pytest.raises(FileNotFoundError, match="model not found"):
        export.load_keras_model(tmp_path / "nothing")
    with pytest.raises(ValueError, match="expected a run folder"):
        export.load_keras_model(tmp_path)


# ------------------------------------------------------------------ hostile model files


@pytest.mark.parametrize(
    "name, message",
    [
        ("m.h5", r"m\.h5: refused: an HDF5 full-model file .*can run code.*trust_code=True"),
        ("m.keras", r"m\.keras: refused: .*Lambda.*trust_code=True"),
        ("renamed.keras", r"renamed\.keras: an HDF5 file, not a \.keras model \(a zip archive.*run folder"),
    ],
)
def test_model_files_that_would_run_code_are_refused_and_nothing_runs(hostile, name, message):
    folder, marker = hostile
    with pytest.raises(ValueError, match=message) as caught:
        export.load_keras_model(folder / name)
    assert "\n" not in str(caught.value)
    assert not marker.exists()


def test_trust_code_is_the_only_way_to_load_a_model_with_code(hostile, tmp_path):
    folder, marker = hostile
    images = np.full((1, 32, 32, 1), 100, np.float32)
    for name in ("m.keras", "m.h5"):
        model, settings = export.load_keras_model(folder / name, trust_code=True)  # the documented risk: its code runs
        assert settings == {} and model(images).shape == (1, 32, 32, 2)
        assert marker.exists()
        marker.unlink()
    with pytest.raises(ValueError, match=r"an HDF5 file, not a \.keras model"):  # bytes that lie about the suffix: never
        export.load_keras_model(folder / "renamed.keras", trust_code=True)
    assert not marker.exists()


def _tamper(source, target, change) -> None:
    """Copy the ``.keras`` zip ``source`` to ``target`` with its ``config.json`` passed through ``change``."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as out:
        for item in original.infolist():
            content = original.read(item)
            if item.filename == "config.json":
                content = json.dumps(change(json.loads(content))).encode()
            out.writestr(item, content)


@pytest.mark.parametrize(
    "function, named",
    [
        ({"class_name": "function", "module": "builtins", "config": "print", "registered_name": "function"}, r"'builtins\.print'"),
        ({"class_name": "function", "module": "os", "config": "system", "registered_name": "system"}, r"'os\.system'"),
        ({"class_name": "function", "module": "keras.activations", "config": "deserialize", "registered_name": None},
         r"'keras\.activations\.deserialize'"),  # Keras' lookup helpers are not activations
    ],
)
def test_keras_files_naming_python_outside_keras_are_refused(hostile, tiny, tmp_path, capsys, function, named):
    """tf-keras' safe_mode stops Lambda bytecode only: it imports and calls any function a config names (here on load)."""

    def call_it(config):
        layer = next(layer for layer in config["config"]["layers"] if layer["class_name"] == "Lambda")
        layer["config"].update(function=function, function_type="function", module=function["module"],
                               arguments={"end": " <- called while loading\n"} if function["config"] == "print" else {})
        return config

    _tamper(hostile[0] / "m.keras", tmp_path / "tampered.keras", call_it)
    with pytest.raises(ValueError, match=rf"tampered\.keras: refused: its config names {named}.*trust_code=True"):
        export.load_keras_model(tmp_path / "tampered.keras")
    assert "called while loading" not in capsys.readouterr().out
    tiny.save(tmp_path / "tiny.keras")
    model, _ = export.load_keras_model(tmp_path / "tiny.keras")  # Keras' own layers load
    np.testing.assert_allclose(model(np.ones((1, *SIZE, 1))).numpy(), tiny(np.ones((1, *SIZE, 1))).numpy(), atol=1e-6)


@pytest.fixture(scope="module")
def saved_files(tmp_path_factory, tiny):
    """The tiny model as ``tiny.h5`` (full model), ``tiny.weights.h5``, ``tiny.keras`` and ``tiny.tflite``."""
    folder = tmp_path_factory.mktemp("saved")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        tiny.save(folder / "tiny.h5")
    tiny.save_weights(folder / "tiny.weights.h5")
    tiny.save(folder / "tiny.keras")
    export.export_tflite(tiny, folder / "tiny.tflite", input_size=SIZE)
    return folder


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
@pytest.mark.parametrize(
    "suffix, expected",
    [
        (".h5", r"HDF5"),
        (".weights.h5", r"HDF5"),
        (".keras", r"\.keras model \(a zip archive"),
        (".tflite", r"TFLite flatbuffer"),
    ],
)
def test_garbage_or_truncated_model_files_give_one_line_naming_the_file(saved_files, tmp_path, suffix, expected, damage):
    content = (saved_files / f"tiny{suffix}").read_bytes()
    path = tmp_path / f"broken{suffix}"
    path.write_bytes({"garbage": b"this is not a model\n" * 10, "truncated": content[: len(content) // 2], "empty": b""}[damage])
    (tmp_path / "run.json").write_text(json.dumps({"format": 1, "builder": "classifier", "metrics": {}, "weights": "w.h5",
                                                   "settings": dict(backbone="mobilenet", alpha=0.25)}))  # beside it: not what fails
    with pytest.raises(ValueError, match=expected) as caught:
        if suffix == ".tflite":
            export.TFLitePredictor(path)
        else:
            export.load_keras_model(path, trust_code=True)
    message = str(caught.value)
    assert message.startswith(str(path)) and "\n" not in message, message


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A saved run of a small U-Net, as notebook 03 writes it."""
    keras.utils.set_random_seed(0)
    settings = dict(arch="unet", backbone="mobilenet", input_shape=[None, None, 1], classes=2, alpha=0.25,
                    decoder_filters=[16, 16, 8, 8, 8])
    folder = tmp_path_factory.mktemp("run")
    runs.save_run(folder, builders.build_segmenter(**settings), settings)
    return folder


@pytest.mark.parametrize(
    "file, content, message",
    [
        ("model.weights.h5", "half", r"model\.weights\.h5: truncated or corrupt HDF5 file"),
        ("run.json", '{"format": 1, "builder"', r"run\.json line 1: not valid JSON"),
        ("run.json", "[1, 2]", r"run\.json: not a run record"),
        ("run.json", '{"format": 1, "builder": "segmenter", "metrics": {}, "weights": "model.weights.h5", '
                     '"settings": {"arch": "unet", "backbone": "mobilenet", "colour": true}}', r"run\.json: cannot build.*colour"),
    ],
)
def test_damaged_run_folders_name_the_file(run_dir, tmp_path, file, content, message):
    for name in ("model.weights.h5", "run.json"):
        (tmp_path / name).write_bytes((run_dir / name).read_bytes())
    if content == "half":
        content = (run_dir / file).read_bytes()[:5000]
    (tmp_path / file).write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ValueError, match=message) as caught:
        export.load_keras_model(tmp_path)
    assert "\n" not in str(caught.value)


def test_onnx_export_says_what_to_install_when_tf2onnx_is_missing(tiny, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # import fails as if not installed
    with pytest.raises(ImportError, match=r'pip install -e "\.\[onnx\]"'):
        export.export_onnx(tiny, tmp_path / "tiny.onnx", input_size=SIZE)


@pytest.mark.skipif(not export.onnx_available(), reason='tf2onnx/onnxruntime not installed (pip install -e ".[onnx]")')
def test_onnx_export_runs_in_onnxruntime_like_keras(tiny, images, tmp_path):
    path = export.export_onnx(tiny, tmp_path / "tiny.onnx", input_size=SIZE)
    predictor = export.OnnxPredictor(path, num_threads=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        predicted = predictor.predict(images, batch_size=4)
    # float32 both sides, different kernels: the float32 bound of TFLite
    np.testing.assert_allclose(predicted, tiny(images, training=False).numpy(), atol=TOLERANCES["float32"][0])
