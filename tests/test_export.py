"""Tests of helpers.export: TFLite conversion in every mode, the predictor, op fallbacks, optional ONNX.

A tiny seeded U-Net-like model (Rescaling, 3 convolutions, BatchNorm, upsampling, skip, sigmoid
head; 32x48 input) converts in well under a second per mode; the architectures of
helpers.models are covered on a MobileNet 0.25 backbone with small decoders (64x64, PSPNet 48x48).
"""

from __future__ import annotations

import json
import sys
import warnings

import numpy as np
import pytest

from helpers import export, files, models
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
def test_every_architecture_converts_in_float32_and_int8(arch):
    keras.utils.set_random_seed(0)
    side = 48 if arch == "pspnet" else 64
    if arch == "classifier":
        model = models.build_classifier("mobilenet", input_shape=(None, None, 1), n_outputs=3, alpha=0.25)
    else:
        shape = (side, side, 1) if models.needs_fixed_size(arch) else (None, None, 1)
        model = models.build_segmenter(arch, "mobilenet", input_shape=shape, classes=2, alpha=0.25, **ARCHITECTURES[arch])
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
        ({"mode": "int4"}, r"mode must be one of float32, dynamic_range, float16, int8; got 'int4'"),
        ({"mode": "int8", "io_type": "int16"}, r"io_type must be one of float32, int8, uint8"),
        ({"mode": "float16", "io_type": "uint8"}, r"io_type 'uint8' needs mode='int8'"),
        ({"mode": "int8"}, r"needs representative images"),
        ({"mode": "int8", "representative": np.zeros((2, 16, 16, 1))}, r"representative must be \(N, 32, 48, 1\)"),
        ({"mode": "float32", "representative": np.zeros((2, 32, 48, 1))}, r"used by mode='int8' only"),
        ({"mode": "float32", "input_size": None}, r"pass input_size=\(H, W\)"),
        ({"mode": "float32", "input_size": (32,)}, r"input_size must be \(H, W\)"),
        ({"mode": "float32", "input_size": (0, 48)}, r"input_size H and W must be an integer >= 1"),
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


def test_load_keras_model_from_what_notebook_03_writes(tmp_path):
    keras.utils.set_random_seed(0)
    settings = dict(arch="unet", backbone="mobilenet", input_shape=[None, None, 1], classes=2, alpha=0.25,
                    decoder_filters=[16, 16, 8, 8, 8])
    model = models.build_segmenter(**settings)
    _spread_batchnorm(model, seed=2)
    run_dir = tmp_path / "models" / "unet-mobilenet"
    run_dir.mkdir(parents=True)
    model.save_weights(run_dir / "best.weights.h5")
    (run_dir / "build.json").write_text(json.dumps(settings))
    model.save(run_dir / "model.keras")
    images = np.random.default_rng(0).uniform(0, 255, (1, 64, 64, 1)).astype("float32")
    expected = model(images).numpy()
    for path in (run_dir, run_dir / "best.weights.h5", run_dir / "model.keras"):
        loaded, loaded_settings = export.load_keras_model(path)
        np.testing.assert_allclose(loaded(images).numpy(), expected, atol=1e-6)
        assert loaded_settings["arch"] == "unet"
    (run_dir / "build.json").unlink()
    loaded, loaded_settings = export.load_keras_model(run_dir)  # no build.json: model.keras
    assert loaded_settings == {} and loaded.output_shape == (None, None, None, 2)
    with pytest.raises(FileNotFoundError, match="model not found"):
        export.load_keras_model(tmp_path / "nothing")
    with pytest.raises(ValueError, match="expected a folder with build.json"):
        export.load_keras_model(tmp_path)


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
