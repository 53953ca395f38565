"""Tests of helpers.modeling.builders: segmenters/classifiers on segmentation-models backbones, grey fold, offline weights.

Tiny inputs (32x64, PSPNet 48x96) keep the file fast on 2 CPU cores. "Pretrained" weights are
random (seeded) 3-channel backbones saved under the official file names in tmp_path; the only
real ImageNet file (MobileNet 0.25) is used by one test that is skipped when it is absent.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import h5py
import numpy as np
import pytest

from helpers.modeling import builders, weight_files
from helpers.backend import keras, sm, tf

SHAPE = (32, 64, 1)
PSP_SHAPE = (48, 96, 1)
SHARED_WEIGHTS = Path(__file__).resolve().parents[2] / "shared" / "weights"
REAL_MOBILENET = SHARED_WEIGHTS / "mobilenet_2_5_224_tf_no_top.h5"
REAL_MOBILENET_MD5 = "f313cee49f5d33dfb06f2b255c4adb64"
SUBMODULES = {"backend": keras.backend, "layers": keras.layers, "models": keras.models, "utils": keras.utils}
TOLERANCE = 1e-4


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """Fixed seed, no weights folders from the environment, and any download attempt fails the test."""
    keras.utils.set_random_seed(0)
    monkeypatch.delenv(weight_files.WEIGHTS_DIR_ENV, raising=False)
    monkeypatch.delenv("KERAS_HOME", raising=False)

    def no_download(*args, **kwargs):
        raise AssertionError(f"download attempted: get_file{args}")

    for module in {id(m): m for m in (keras.utils, sm._KERAS_UTILS, tf.keras.utils)}.values():
        monkeypatch.setattr(module, "get_file", no_download)


def _grey(shape=SHAPE, batch=2, seed=0) -> np.ndarray:
    """Random grey images in [0, 255], ``(batch, H, W, 1)``: strong content up to the borders."""
    return np.random.default_rng(seed).uniform(0, 255, (batch, *shape[:2], 1)).astype("float32")


def _randomize_batchnorm(model: keras.Model, seed: int) -> None:
    """Non-trivial BatchNorm statistics (``bn_data`` like ImageNet pixel statistics), so folds are really tested."""
    rng = np.random.default_rng(seed)
    draw = {
        "gamma": lambda n: rng.uniform(0.5, 1.5, n),
        "beta": lambda n: rng.normal(0, 0.2, n),
        "moving_mean": lambda n: rng.normal(0, 0.2, n),
        "moving_variance": lambda n: rng.uniform(0.5, 2.0, n),
    }
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization):
            continue
        names = [w.name.split("/")[-1].split(":")[0] for w in layer.weights]
        values = {name: draw[name](w.shape[0]) for name, w in zip(names, layer.weights)}
        if layer.name == "bn_data":  # sees raw pixels in [0, 255]: per-channel means and variances differ
            values["moving_mean"] = np.array([123.7, 116.3, 103.5]) + rng.normal(0, 5, 3)
            values["moving_variance"] = np.array([58.4, 57.1, 57.4]) ** 2
            values["beta"] = rng.normal(0, 0.5, 3)
        layer.set_weights([values[name].astype("float32") for name in names])


def _checksum(path: Path, reference: str | None) -> str:
    algorithm = "sha256" if reference is not None and len(reference) == 64 else "md5"
    return hashlib.new(algorithm, path.read_bytes()).hexdigest()


def _fake_pretrained(backbone: str, folder: Path, monkeypatch, seed: int = 1, **options) -> tuple[Path, keras.Model]:
    """A random 3-channel backbone saved as ``folder/<official name>``; its checksum made the official one."""
    rgb = sm.Backbones.get_backbone(
        backbone, input_shape=(None, None, 3), weights=None, include_top=False, **options, **SUBMODULES
    )
    _randomize_batchnorm(rgb, seed)
    official = builders.official_weights_file(backbone, SHAPE, **options)
    path = folder / official.name
    rgb.save_weights(str(path))
    checksums = dict(weight_files.OFFICIAL_CHECKSUMS) | {official.name: _checksum(path, official.checksum)}
    monkeypatch.setattr(weight_files, "OFFICIAL_CHECKSUMS", checksums)
    return path, rgb


def _features(model: keras.Model, backbone: str, images: np.ndarray) -> dict[str, np.ndarray]:
    encoder = builders.encoder_model(model, backbone)
    names = [name for name in builders.encoder_end_layers(backbone) if name in {l.name for l in model.layers}]
    outputs = encoder(images, training=False)
    return {name: np.asarray(out) for name, out in zip(names, outputs)}


def _max_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


# ------------------------------------------------------------------ architectures and backbones
SM_BUILDERS = {"unet": sm.Unet, "linknet": sm.Linknet, "fpn": sm.FPN, "pspnet": sm.PSPNet}
ARCH_CASES = [
    ("unet", SHAPE),
    ("linknet", SHAPE),
    ("fpn", SHAPE),
    ("pspnet", PSP_SHAPE),
    ("unetpp", SHAPE),
]


@pytest.mark.parametrize(("arch", "shape"), ARCH_CASES)
def test_each_arch_with_resnet18_gives_per_class_maps(arch, shape):
    model = builders.build_segmenter(arch, "resnet18", shape, classes=4)
    out = np.asarray(model(_grey(shape), training=False))
    assert model.input_shape == (None, *shape)
    assert out.shape == (2, shape[0], shape[1], 4)
    assert np.all((out >= 0) & (out <= 1))
    if arch in SM_BUILDERS:  # the segmentation-models decoder itself: same layers as sm's builder, plus the stem
        reference = SM_BUILDERS[arch](
            "resnet18", input_shape=(shape[0], shape[1], 3), classes=4, activation="sigmoid", encoder_weights=None
        )
        ours = {l.name for l in model.layers if l.weights} - {builders.STEM_NAME}
        theirs = {l.name for l in reference.layers if l.weights}
        if arch == "linknet":  # sm leaves Linknet's head conv unnamed ("conv2d_<n>"); ours is "final_conv"
            theirs = {n for n in theirs if not n.startswith("conv2d")} | {"final_conv"}
        assert ours == theirs
        assert builders.count_parameters(model)["total"] == reference.count_params() + 6


BACKBONE_CASES = [
    ("resnet18", {}),
    ("resnet34", {}),
    ("resnet50", {}),
    ("efficientnetb0", {}),
    ("efficientnetb1", {}),
    ("efficientnetb2", {}),
    ("efficientnetb3", {}),
    ("mobilenet", {"alpha": 0.25}),
    ("mobilenetv2", {"alpha": 0.35}),
]


def test_backbone_cases_cover_the_table():
    assert [name for name, _ in BACKBONE_CASES] == list(builders.BACKBONES)


@pytest.mark.parametrize(("backbone", "options"), BACKBONE_CASES)
def test_unet_on_each_backbone(backbone, options):
    model = builders.build_segmenter("unet", backbone, SHAPE, classes=3, **options)
    assert model.output_shape == (None, *SHAPE[:2], 3)
    strides = [32, 16, 8, 4, 2]
    features = _features(model, backbone, _grey(batch=1))
    assert [f.shape[1:3] for f in features.values()] == [(SHAPE[0] // s, SHAPE[1] // s) for s in strides]
    stem = model.get_layer(builders.STEM_NAME)
    assert not stem.trainable and model.layers[1] is stem


def test_mobilenet_alpha_is_passed_through():
    narrow = builders.build_segmenter("linknet", "mobilenet", SHAPE, alpha=0.25)
    assert narrow.get_layer("conv1").kernel.shape == (3, 3, 3, 8)
    assert narrow.get_layer("conv_pw_13").kernel.shape[-1] == 256


def test_flat_options_reach_the_builders():
    fpn = builders.build_segmenter("fpn", "resnet18", SHAPE, pyramid_block_filters=64, pyramid_dropout=0.1)
    assert fpn.get_layer("fpn_stage_p5_conv").filters == 64 and fpn.get_layer("pyramid_dropout").rate == 0.1
    psp = builders.build_segmenter(
        "pspnet", "resnet18", (48, 72, 1), downsample_factor=4, psp_conv_filters=32, psp_dropout=0.2
    )
    assert psp.output_shape == (None, 48, 72, 4) and psp.get_layer("spatial_dropout").rate == 0.2
    assert psp.get_layer("psp_level1_conv").filters == 32
    unet = builders.build_segmenter(
        "unet", "resnet18", SHAPE, decoder_filters=(64, 32, 16, 8, 4), decoder_block_type="transpose"
    )
    assert unet.get_layer("decoder_stage4a_transpose").filters == 4


def test_rgb_input_has_a_diagonal_stem():
    model = builders.build_backbone("efficientnetb0", (32, 64, 3))
    kernel, bias = model.get_layer(builders.STEM_NAME).get_weights()
    scale, offset = builders.PREPROCESSING["torch"]
    np.testing.assert_allclose(kernel[0, 0], np.diag(scale), rtol=1e-6)
    np.testing.assert_allclose(bias, offset, rtol=1e-6)


ERROR_CASES = [
    ({"arch": "segnet"}, "allowed: unet, linknet, fpn, pspnet, unetpp"),
    ({"backbone": "vgg16"}, "allowed: resnet18, resnet34, resnet50, efficientnetb0"),
    ({"input_shape": (60, 64, 1)}, "divisible by 32"),
    ({"input_shape": (64, 80, 1)}, "W=80: use 64 or 96"),
    ({"arch": "unetpp", "input_shape": (32, 48, 1)}, "divisible by 32"),
    ({"arch": "pspnet", "input_shape": (64, 64, 1)}, "multiples of 6 * 8 = 48"),
    ({"arch": "pspnet", "input_shape": (None, None, 1)}, "needs fixed H and W"),
    ({"arch": "pspnet", "input_shape": (48, 48, 1), "downsample_factor": 5}, "must be 4, 8 or 16"),
    ({"input_shape": (32, 64, 2)}, "must be 1 (grey) or 3 (RGB)"),
    ({"input_shape": (16, 64, 1)}, ">= 32"),
    ({"alpha": 0.25}, "allowed: ['decoder_block_type', 'decoder_filters', 'decoder_use_batchnorm']"),
    ({"psp_dropout": 0.1}, "unknown keyword argument(s) ['psp_dropout'] for unet with resnet18"),
    ({"decoder_filters": (64, 32, 16, 8)}, "needs 5 values"),
    ({"decoder_block_type": "pixelshuffle"}, "must be one of ['upsampling', 'transpose']"),
    ({"arch": "unetpp", "deep_supervision": "max"}, "False, True or 'average'"),
    ({"classes": 0}, "positive integer"),
]


@pytest.mark.parametrize(("change", "message"), ERROR_CASES)
def test_invalid_arguments_raise_value_error(change, message):
    arguments = {"arch": "unet", "backbone": "resnet18", "input_shape": SHAPE} | change
    with pytest.raises(ValueError) as error:
        builders.build_segmenter(**arguments)
    assert message in str(error.value)


def test_none_sizes_are_allowed_except_for_pspnet():
    model = builders.build_segmenter("unet", "resnet18", (None, None, 1))
    assert np.asarray(model(_grey((64, 32, 1), batch=1))).shape == (1, 64, 32, 4)


# ------------------------------------------------------------------ UNet++ deep supervision
@pytest.mark.slow  # in the full suite, not the fast tier
def test_unetpp_deep_supervision_outputs_and_average():
    images = _grey()
    small = {"classes": 2, "decoder_filters": (32, 16, 16, 8, 8)}
    sides = builders.build_segmenter("unetpp", "resnet18", SHAPE, deep_supervision=True, **small)
    assert [tuple(o.shape) for o in sides.outputs] == [(None, *SHAPE[:2], 2)] * 4
    assert [o.name.split("/")[0] for o in sides.outputs] == [f"sigmoid_x0{j}" for j in (1, 2, 3, 4)]
    average = builders.build_segmenter("unetpp", "resnet18", SHAPE, deep_supervision="average", **small)
    single = builders.build_segmenter("unetpp", "resnet18", SHAPE, **small)
    for model in (average, single):  # same layer names: trained deep-supervision weights load into both
        for layer in model.layers:
            if layer.weights:
                layer.set_weights(sides.get_layer(layer.name).get_weights())
    side_outputs = [np.asarray(o) for o in sides(images, training=False)]
    np.testing.assert_allclose(np.asarray(average(images, training=False)), np.mean(side_outputs, axis=0), atol=1e-6)
    np.testing.assert_allclose(np.asarray(single(images, training=False)), side_outputs[-1], atol=1e-6)
    assert len(single.layers) < len(average.layers)


def test_unetpp_nodes_follow_the_nested_pattern():
    model = builders.build_segmenter("unetpp", "resnet18", SHAPE)
    nodes = sorted(l.name[len("decoder_x") : -len("_concat")] for l in model.layers if l.name.endswith("_concat"))
    assert nodes == sorted(f"{i}{j}" for j in range(1, 5) for i in range(5 - j))
    # X^{0,4} joins up(X^{1,3}) with X^{0,0..3}: 64 + 64 (relu0) + 3 * 32 channels
    assert model.get_layer("decoder_x04_concat").output.shape[-1] == 64 + 64 + 3 * 32


# ------------------------------------------------------------------ input scaling (the model includes it)
@pytest.mark.parametrize("backbone", list(builders.BACKBONES))
def test_input_stem_reproduces_the_library_preprocessing(backbone):
    grey = _grey(batch=1)
    kernel, bias = builders.input_stem_weights(backbone, channels=1)
    expected = sm.get_preprocessing(backbone)(np.repeat(grey, 3, axis=-1).copy())
    np.testing.assert_allclose(grey @ kernel[0, 0] + bias, expected, rtol=1e-5, atol=1e-5)
    rgb = np.random.default_rng(1).uniform(0, 255, (1, 4, 4, 3)).astype("float32")
    kernel3, bias3 = builders.input_stem_weights(backbone, channels=3)
    expected_rgb = sm.get_preprocessing(backbone)(rgb.copy())
    np.testing.assert_allclose(rgb @ kernel3[0, 0] + bias3, expected_rgb, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ the exact grey fold
FOLD_CASES = [("resnet18", {}), ("efficientnetb0", {}), ("mobilenet", {}), ("mobilenetv2", {})]  # sm.Unet cannot pass alpha: 1.0 here


@pytest.mark.parametrize(("backbone", "options"), FOLD_CASES)
def test_grey_model_equals_rgb_model_on_repeated_image(backbone, options, tmp_path, monkeypatch):
    path, rgb = _fake_pretrained(backbone, tmp_path, monkeypatch, **options)
    grey = _grey()
    rgb_input = sm.get_preprocessing(backbone)(np.repeat(grey, 3, axis=-1).copy())
    model = builders.build_segmenter(
        "unet", backbone, SHAPE, encoder_weights="imagenet", weights_dir=tmp_path, **options
    )
    for name in builders.BACKBONES[backbone].first_layers:
        for ours, theirs in zip(model.get_layer(name).get_weights(), rgb.get_layer(name).get_weights()):
            np.testing.assert_array_equal(ours, theirs)

    # encoder features: the 3-channel pretrained backbone on the repeated, preprocessed image
    reference_features = _features(rgb, backbone, rgb_input)
    assert _max_diff(_features(model, backbone, grey), reference_features) <= TOLERANCE
    assert max(float(np.max(np.abs(f))) for f in reference_features.values()) > 0.5  # not trivially small

    # full model: segmentation-models' own 3-channel Unet, its encoder loaded from the same file by Keras
    reference = sm.Unet(backbone, input_shape=(*SHAPE[:2], 3), classes=4, encoder_weights=str(path))
    encoder = {l.name for l in builders.encoder_layers(model, backbone)}
    for layer in reference.layers:
        if layer.weights and layer.name not in encoder:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    difference = np.abs(np.asarray(model(grey, training=False)) - np.asarray(reference(rgb_input, training=False)))
    assert difference.max() <= TOLERANCE


def test_fold_to_grey_converts_an_rgb_segmentation_models_unet():
    rgb_model = sm.Unet("resnet18", input_shape=(*SHAPE[:2], 3), classes=4, encoder_weights=None)
    _randomize_batchnorm(rgb_model, seed=3)
    grey_model = builders.fold_to_grey(rgb_model, "resnet18")
    grey = _grey()
    expected = rgb_model(np.repeat(grey, 3, axis=-1), training=False)
    assert grey_model.input_shape == (None, *SHAPE)
    assert np.max(np.abs(np.asarray(grey_model(grey, training=False)) - np.asarray(expected))) <= TOLERANCE
    with pytest.raises(ValueError, match="already has an 'input_stem'"):
        builders.fold_to_grey(builders.build_segmenter("unet", "resnet18", (32, 64, 3)), "resnet18")


@pytest.mark.skipif(not REAL_MOBILENET.is_file(), reason="the real MobileNet 0.25 ImageNet file is not on this machine")
def test_real_imagenet_mobilenet_file(tmp_path):
    assert weight_files.file_checksum(REAL_MOBILENET) == REAL_MOBILENET_MD5
    found = weight_files.find_weights_file(builders.official_weights_file("mobilenet", SHAPE, alpha=0.25), SHARED_WEIGHTS)
    assert found == REAL_MOBILENET
    model = builders.build_segmenter(
        "unet", "mobilenet", SHAPE, encoder_weights="imagenet", weights_dir=SHARED_WEIGHTS, alpha=0.25
    )
    reference = sm.Backbones.get_backbone(
        "mobilenet", input_shape=(*SHAPE[:2], 3), weights=None, include_top=False, alpha=0.25, **SUBMODULES
    )
    reference.load_weights(str(REAL_MOBILENET))
    grey = _grey()
    rgb_input = sm.get_preprocessing("mobilenet")(np.repeat(grey, 3, axis=-1).copy())
    assert _max_diff(_features(model, "mobilenet", grey), _features(reference, "mobilenet", rgb_input)) <= TOLERANCE
    with pytest.raises(ValueError, match="conv1"):  # alpha 0.5 model, 0.25 file: shapes differ
        builders.build_backbone("mobilenet", SHAPE, encoder_weights=REAL_MOBILENET, alpha=0.5)


# ------------------------------------------------------------------ weights lookup (downloads off: tests/conftest.py)
def test_missing_file_names_file_checksum_folders_and_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.raises(FileNotFoundError) as error:
        builders.build_segmenter("unet", "resnet18", SHAPE, encoder_weights="imagenet", weights_dir=tmp_path / "nowhere")
    message = str(error.value)
    searched = (str(tmp_path / "nowhere"), str(tmp_path / "home" / ".keras" / "models"))
    for part in ("resnet18_imagenet_1000_no_top.h5", "318e3ac0cd98d51e917526c9f62f0b50", "offline", *searched):
        assert part in message


def test_official_names_and_checksums_match_the_libraries():
    import classification_models.weights as cm_weights
    import efficientnet.model as eff_model

    for entry in cm_weights.WEIGHTS_COLLECTION:
        if entry["model"] in builders.BACKBONES and entry["dataset"] == "imagenet" and not entry["include_top"]:
            official = builders.official_weights_file(entry["model"])
            assert (official.name, official.checksum, official.algorithm) == (entry["name"], entry["md5"], "md5")
            assert official.url == entry["url"]
    for b in range(4):
        official = builders.official_weights_file(f"efficientnetb{b}")
        assert official.name == f"efficientnet-b{b}_weights_tf_dim_ordering_tf_kernels_autoaugment_notop.h5"
        assert (official.checksum, official.algorithm) == (eff_model.WEIGHTS_HASHES[f"efficientnet-b{b}"][1], "sha256")
        assert official.url == eff_model.BASE_WEIGHTS_PATH + official.name
    expected = weight_files.WeightsFile(
        "mobilenet_2_5_224_tf_no_top.h5", REAL_MOBILENET_MD5,
        url="https://storage.googleapis.com/tensorflow/keras-applications/mobilenet/mobilenet_2_5_224_tf_no_top.h5",
    )
    assert builders.official_weights_file("mobilenet", (64, 64, 1), alpha=0.25) == expected
    assert builders.official_weights_file("mobilenet", (128, 128, 1), alpha=0.5).name == "mobilenet_5_0_128_tf_no_top.h5"
    with pytest.raises(ValueError, match="alpha in"):
        builders.official_weights_file("mobilenet", alpha=0.3)
    assert all(builders.official_weights_file(backbone).url for backbone in builders.BACKBONES)


@pytest.mark.parametrize(
    "shape, alpha, name",
    [
        ((224, 224, 1), 1.0, "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"),
        ((None, None, 1), 1.0, "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"),
        ((96, 96, 1), 0.35, "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5"),
        ((128, 256, 1), 1.4, "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.4_224_no_top.h5"),
    ],
)
def test_official_mobilenetv2_file_follows_keras_applications(shape, alpha, name):
    official = builders.official_weights_file("mobilenetv2", shape, alpha=alpha)
    assert (official.name, official.checksum) == (name, None)  # keras-applications publishes no checksum for it
    assert official.url == f"https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/{name}"


def test_mobilenetv2_refuses_a_width_without_imagenet_weights():
    with pytest.raises(ValueError, match=r"mobilenetv2 ImageNet weights exist for alpha in \[0\.35, 0\.5, 0\.75, 1\.0, 1\.3, 1\.4\]"):
        builders.official_weights_file("mobilenetv2", alpha=0.25)
    with pytest.raises(ValueError, match="unknown keyword argument"):
        builders.build_backbone("mobilenetv2", depth_multiplier=2)


@pytest.mark.parametrize(("arch", "shape"), ARCH_CASES)
def test_each_arch_on_mobilenetv2(arch, shape):
    model = builders.build_segmenter(arch, "mobilenetv2", shape, classes=2, alpha=0.35)
    out = np.asarray(model(_grey(shape), training=False))
    assert out.shape == (2, shape[0], shape[1], 2) and np.all((out >= 0) & (out <= 1))
    assert model.get_layer("Conv1").kernel.shape == (3, 3, 3, 16)  # alpha 0.35: 32 * 0.35 rounded to 8


def test_encoder_weights_path_must_exist(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.h5"):
        builders.build_classifier("resnet18", SHAPE, encoder_weights=tmp_path / "nothing.h5")


def _broken_weights_file(folder: Path, damage: str) -> Path:
    """An ``.h5`` encoder weights file: ``garbage`` bytes, ``truncated`` half of a real one, ``empty`` or a ``zip``."""
    path = folder / f"{damage}.h5"
    if damage == "truncated":
        with h5py.File(path, "w") as handle:
            handle.attrs["layer_names"] = [b"conv"]
            group = handle.create_group("conv")
            group.attrs["weight_names"] = [b"conv/kernel:0"]
            group.create_dataset("conv/kernel:0", data=np.zeros((3, 3, 1, 64), np.float32))
        path.write_bytes(path.read_bytes()[:3000])
    else:
        path.write_bytes({"garbage": b"not weights\n" * 50, "empty": b"", "zip": b"PK\x03\x04" + bytes(100)}[damage])
    return path


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "zip"])
def test_broken_encoder_weights_files_give_one_line_naming_the_file(tmp_path, damage):
    path = _broken_weights_file(tmp_path, damage)
    expected = r"truncated or corrupt HDF5 file" if damage == "truncated" else r"not an HDF5 file"
    tiny = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(1, 1)])
    for load in (
        lambda: builders.build_classifier("resnet18", SHAPE, encoder_weights=path),
        lambda: builders.load_encoder_weights(tiny, path, "resnet18"),
    ):
        with pytest.raises(ValueError, match=rf"{damage}\.h5: {expected}.*expected a Keras \.h5 weights file") as caught:
            load()
        assert str(caught.value).startswith(str(path)) and "\n" not in str(caught.value)
    with pytest.raises(FileNotFoundError, match="nothing.h5"):
        builders.load_encoder_weights(tiny, tmp_path / "nothing.h5", "resnet18")


# ------------------------------------------------------------------ moving encoder weights
@pytest.fixture(scope="module")
def classifier() -> keras.Model:
    """A 1-channel resnet18 classifier with non-trivial encoder weights (a stand-in for a trained one)."""
    keras.utils.set_random_seed(5)
    model = builders.build_classifier("resnet18", (None, None, 1), n_outputs=4, dropout=0.2)
    _randomize_batchnorm(model, seed=5)
    return model


@pytest.mark.parametrize(("arch", "shape"), ARCH_CASES)
def test_classifier_encoder_into_each_arch(classifier, arch, shape):
    target = builders.build_segmenter(arch, "resnet18", shape)
    grey = _grey(shape)
    before = _features(target, "resnet18", grey)
    matched = builders.copy_encoder_weights(classifier, target, "resnet18")
    expected = sum(1 for l in builders.encoder_layers(target, "resnet18") if l.weights)
    assert matched == expected
    if arch == "pspnet":  # PSPNet keeps the encoder up to stride 8 only
        assert matched < sum(1 for l in builders.encoder_layers(classifier, "resnet18") if l.weights)
    else:
        assert matched == sum(1 for l in builders.encoder_layers(classifier, "resnet18") if l.weights)
    after = _features(target, "resnet18", grey)
    source = {k: v for k, v in _features(classifier, "resnet18", grey).items() if k in after}
    assert _max_diff(after, source) == 0.0 and _max_diff(before, source) > 0.01


@pytest.mark.slow  # in the full suite, not the fast tier
def test_copy_between_different_encoders_raises_and_copies_nothing(classifier):
    resnet34 = builders.build_segmenter("unet", "resnet34", SHAPE)
    before = [w.copy() for w in resnet34.get_weights()]
    with pytest.raises(ValueError, match="stage1_unit3"):
        builders.copy_encoder_weights(classifier, resnet34, "resnet34")
    with pytest.raises(ValueError, match="stage1_unit3"):  # resnet34 -> resnet18: extra layers in the source
        builders.copy_encoder_weights(resnet34, classifier, "resnet18")
    assert all(np.array_equal(a, b) for a, b in zip(before, resnet34.get_weights()))
    with pytest.raises(ValueError, match="none of the resnet18 encoder layers"):
        builders.copy_encoder_weights(classifier, builders.build_segmenter("fpn", "mobilenet", SHAPE, alpha=0.25), "resnet18")
    narrow = builders.build_classifier("mobilenet", SHAPE, alpha=0.25)
    with pytest.raises(ValueError, match="layer 'conv1'"):
        builders.copy_encoder_weights(narrow, builders.build_segmenter("unet", "mobilenet", SHAPE, alpha=0.5), "mobilenet")
    rgb_classifier = builders.build_classifier("resnet18", (32, 64, 3))
    with pytest.raises(ValueError, match="input_stem"):  # an RGB classifier's stem does not fit a grey model
        builders.copy_encoder_weights(rgb_classifier, builders.build_segmenter("unet", "resnet18", SHAPE), "resnet18")


@pytest.mark.slow  # in the full suite, not the fast tier
def test_save_and_load_encoder_weights(classifier, tmp_path):
    path = tmp_path / "encoder.h5"
    saved = builders.save_encoder_weights(classifier, path, "resnet18")
    grey = _grey()
    expected = _features(classifier, "resnet18", grey)
    unet = builders.build_segmenter("unet", "resnet18", SHAPE)
    assert builders.load_encoder_weights(unet, path, "resnet18") == saved
    assert _max_diff(_features(unet, "resnet18", grey), expected) == 0.0
    built = builders.build_segmenter("linknet", "resnet18", SHAPE, encoder_weights=path)  # a path works at build time too
    assert _max_diff(_features(built, "resnet18", grey), expected) == 0.0
    psp = builders.build_segmenter("pspnet", "resnet18", PSP_SHAPE)
    assert builders.load_encoder_weights(psp, path, "resnet18") < saved
    keras_loaded = builders.build_classifier("resnet18", SHAPE)
    keras_loaded.load_weights(str(path), by_name=True)  # the file has the Keras layout
    assert _max_diff(_features(keras_loaded, "resnet18", grey), expected) == 0.0
    with h5py.File(path, "r+") as handle:  # weights within a layer are matched by name, not position
        handle["bn_data"].attrs["weight_names"] = handle["bn_data"].attrs["weight_names"][::-1]
    shuffled = builders.build_segmenter("unet", "resnet18", SHAPE)
    builders.load_encoder_weights(shuffled, path, "resnet18")
    assert _max_diff(_features(shuffled, "resnet18", grey), expected) == 0.0
    with pytest.raises(ValueError, match="holds resnet18 encoder weights, not resnet34"):
        builders.load_encoder_weights(builders.build_segmenter("unet", "resnet34", SHAPE), path, "resnet34")


# ------------------------------------------------------------------ freezing, counting
def test_encoder_freeze_excludes_encoder_including_batchnorm():
    model = builders.build_segmenter("fpn", "resnet18", SHAPE, encoder_freeze=True)
    encoder = builders.encoder_layers(model, "resnet18")
    encoder_weights = {id(w) for layer in encoder for w in layer.weights}
    assert not any(id(w) in encoder_weights for w in model.trainable_weights)
    assert model.trainable_weights and any(isinstance(l, keras.layers.BatchNormalization) for l in encoder)
    assert not any(l.trainable for l in encoder if l.weights)
    counts = builders.count_parameters(model)
    assert counts["total"] == model.count_params() and counts["trainable"] < counts["non_trainable"]
    assert builders.set_encoder_trainable(model, "resnet18", True) > 0
    assert builders.count_parameters(model)["non_trainable"] < counts["non_trainable"]


def test_classifier_shape_and_freeze():
    model = builders.build_classifier(
        "efficientnetb0", SHAPE, n_outputs=3, activation="softmax", dropout=0.3, encoder_freeze=True
    )
    out = np.asarray(model(_grey(), training=False))
    assert out.shape == (2, 3) and np.allclose(out.sum(axis=1), 1, atol=1e-5)
    assert {w.name.split("/")[0] for w in model.trainable_weights} == {"classifier_dense"}


@pytest.mark.parametrize("arch, multiple, fixed", [("unet", 32, False), ("unetpp", 32, False), ("pspnet", 48, True)])
def test_size_rules(arch, multiple, fixed):
    assert builders.size_multiple(arch) == multiple
    assert builders.needs_fixed_size(arch) is fixed
    with pytest.raises(ValueError, match="allowed"):
        builders.size_multiple("segnet")


@pytest.mark.parametrize(
    "shape, arch, expected",
    [
        ((200, 200), "unet", (224, 224)),
        ((256, 1600), "unet", (256, 1600)),
        ((1, 33), "linknet", (32, 64)),
        ((200, 200), "pspnet", (240, 240)),
        ((128, 256), "pspnet", (144, 288)),
    ],
)
def test_padded_size(shape, arch, expected):
    assert builders.padded_size(shape, arch) == expected


def test_padded_size_rejects_bad_values():
    with pytest.raises(ValueError, match="positive"):
        builders.padded_size((0, 64), "unet")
    with pytest.raises(ValueError, match="allowed"):
        builders.padded_size((64, 64), "segnet")


@pytest.mark.parametrize(("shape", "multiple", "expected"), [((1, 32), 32, (32, 32)), ((33, 64), 32, (64, 64)), ((7, 8), 1, (7, 8))])
def test_round_up(shape, multiple, expected):
    assert builders.round_up(shape, multiple) == expected


@pytest.mark.parametrize(("shape", "multiple"), [((0, 8), 32), ((8, 8), 0)])
def test_round_up_rejects_bad_values(shape, multiple):
    with pytest.raises(ValueError, match="positive"):
        builders.round_up(shape, multiple)


def test_set_batchnorm_momentum_reaches_nested_layers_and_drives_the_moving_mean():
    inner = keras.Sequential([keras.layers.BatchNormalization(name="inner_bn")], name="inner")
    inputs = keras.Input((2,))
    model = keras.Model(inputs, inner(keras.layers.BatchNormalization(name="outer_bn")(inputs)))
    assert builders.set_batchnorm_momentum(model, 0.0) == 2
    assert [layer.momentum for layer in (model.get_layer("outer_bn"), inner.get_layer("inner_bn"))] == [0.0, 0.0]
    batch = np.array([[1.0, 10.0], [3.0, 30.0]], np.float32)
    model.compile(optimizer="sgd", loss="mse")
    model.train_on_batch(batch, np.zeros_like(batch))
    # momentum 0: the moving mean is the last batch's mean, not 1% of it
    np.testing.assert_allclose(model.get_layer("outer_bn").moving_mean.numpy(), [2.0, 20.0], rtol=1e-6)


def test_reestimate_batchnorm_sets_the_mean_of_the_batch_statistics_and_restores_momentum():
    inputs = keras.Input((4, 4, 1))
    x = keras.layers.Conv2D(2, 1, use_bias=False, kernel_initializer="ones", name="conv")(inputs)
    model = keras.Model(inputs, keras.layers.BatchNormalization(momentum=0.99, name="bn")(x))
    model.get_layer("bn").trainable = False  # a frozen encoder's BatchNorm is re-estimated too
    kernel = model.get_layer("conv").get_weights()
    first = np.arange(32, dtype=np.float32).reshape(2, 4, 4, 1)  # mean 15.5
    second = np.full((2, 4, 4, 1), 100.0, np.float32)  # mean 100, variance 0
    batches = [(first, "masks"), (second, "masks"), (np.full((2, 4, 4, 1), -1e6, np.float32), "masks")]
    assert builders.reestimate_batchnorm(model, batches, n_batches=2) == 2  # the third batch is not read
    bn = model.get_layer("bn")
    np.testing.assert_allclose(bn.moving_mean.numpy(), [(15.5 + 100.0) / 2] * 2, rtol=1e-6)
    batch_variance = np.var(first) * first.size / (first.size - 1)  # Keras keeps the unbiased batch variance
    np.testing.assert_allclose(bn.moving_variance.numpy(), [batch_variance / 2] * 2, rtol=1e-5)
    assert bn.momentum == 0.99 and not bn.trainable
    assert builders.reestimate_batchnorm(model, batches[1:2], n_batches=5) == 1  # a shorter stream: what it holds
    np.testing.assert_allclose(bn.moving_mean.numpy(), [100.0] * 2, rtol=1e-6)
    np.testing.assert_array_equal(model.get_layer("conv").get_weights()[0], kernel[0])  # no weight changed


@pytest.mark.parametrize("n_batches, batches, message", [(0, [np.zeros((1, 4, 4, 1))], "n_batches must be an integer >= 1"),
                                                         (2, [], "batches is empty")])
def test_reestimate_batchnorm_refuses_nothing_to_read(n_batches, batches, message):
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.BatchNormalization()])
    with pytest.raises(ValueError, match=message):
        builders.reestimate_batchnorm(model, batches, n_batches)


@pytest.mark.parametrize("momentum", [1.0, -0.1, 1, "0.9", True])
def test_set_batchnorm_momentum_refuses_values_outside_0_1(momentum):
    model = keras.Sequential([keras.Input((2,)), keras.layers.BatchNormalization()])
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        builders.set_batchnorm_momentum(model, momentum)


@pytest.mark.parametrize(
    "backbone, values, expected",
    [
        ("mobilenet", {"alpha": 0.25}, {"alpha": 0.25}),
        ("resnet18", {"alpha": 0.25}, {}),
        ("efficientnetb0", {"alpha": 0.25, "drop_connect_rate": 0.1}, {"drop_connect_rate": 0.1}),
        ("mobilenet", {}, {}),
    ],
)
def test_backbone_options_keep_what_the_backbone_takes(backbone, values, expected):
    assert builders.backbone_options(backbone, **values) == expected


def test_backbone_options_name_the_allowed_backbones():
    with pytest.raises(ValueError, match="unknown backbone 'vgg'; allowed: resnet18"):
        builders.backbone_options("vgg", alpha=1.0)


@pytest.fixture
def policy():
    """Sets a Keras dtype policy for one test and restores float32 after it."""
    yield keras.mixed_precision.set_global_policy
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("mixed", ["mixed_bfloat16", "mixed_float16"])
@pytest.mark.parametrize("kind", ["segmenter", "classifier", "unetpp deep supervision"])
def test_probabilities_are_float32_under_every_policy(policy, mixed, kind):
    def build():
        keras.utils.set_random_seed(0)
        if kind == "classifier":
            return builders.build_classifier("mobilenet", (32, 32, 1), n_outputs=3, alpha=0.25)
        if kind == "segmenter":
            return builders.build_segmenter("unet", "mobilenet", (None, None, 1), classes=2, alpha=0.25,
                                            decoder_filters=(16, 16, 8, 8, 8))
        return builders.build_segmenter("unetpp", "mobilenet", (None, None, 1), classes=2, alpha=0.25,
                                        decoder_filters=(16, 16, 8, 8, 8), deep_supervision=True)

    reference = build()
    policy(mixed)
    model = build()
    policy("float32")
    assert all(output.dtype == "float32" for output in model.outputs)
    for output in model.outputs:  # the sigmoid itself runs in float32, not only a cast after it
        assert output._keras_history.layer.compute_dtype == "float32"
    assert [w.shape for w in model.weights] == [w.shape for w in reference.weights]
    assert all(w.dtype == tf.float32 for w in model.weights)  # variables, BatchNorm statistics included
    model.set_weights(reference.get_weights())
    stem = model.get_layer(builders.STEM_NAME)
    assert stem.compute_dtype == "float32"
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 1)).astype(np.float32)
    folded = keras.Model(model.input, stem.output)(images)
    np.testing.assert_array_equal(folded.numpy(), keras.Model(reference.input, reference.get_layer(builders.STEM_NAME).output)(images).numpy())
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 1)).astype(np.float32)
    got, expected = model(images), reference(images)
    for got, expected in zip(got if isinstance(got, list) else [got], expected if isinstance(expected, list) else [expected]):
        assert got.dtype == tf.float32
        np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=0.1)


def test_float32_models_are_left_as_built():
    model = builders.build_segmenter("unet", "mobilenet", (None, None, 1), classes=1, alpha=0.25, decoder_filters=(8,) * 5)
    assert builders.float32_outputs(model) is model and model.layers[-1].name == "sigmoid"


def test_frozen_encoder_batchnorm_keeps_its_statistics_while_the_rest_trains():
    model = builders.build_segmenter("unet", "mobilenetv2", (32, 32, 1), classes=1, alpha=0.35, decoder_filters=(8,) * 5)
    frozen = builders.set_encoder_batchnorm_trainable(model, "mobilenetv2", False)
    encoder = builders.encoder_layers(model, "mobilenetv2")
    encoder_bn = [l for l in encoder if isinstance(l, keras.layers.BatchNormalization)]
    assert frozen == len(encoder_bn) > 30
    decoder_bn = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization) and l not in encoder_bn]
    before = {l.name: [w.copy() for w in l.get_weights()] for l in encoder_bn + decoder_bn}
    conv_before = model.get_layer("Conv1").get_weights()[0].copy()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="binary_crossentropy")
    images = np.arange(2 * 32 * 32, dtype=np.float32).reshape(2, 32, 32, 1) % 251
    model.train_on_batch(images, (images > 120).astype(np.float32))
    for layer in encoder_bn:
        for old, new in zip(before[layer.name], layer.get_weights()):
            np.testing.assert_array_equal(old, new)
    assert any(not np.array_equal(old, new) for l in decoder_bn for old, new in zip(before[l.name], l.get_weights()))
    assert not np.array_equal(conv_before, model.get_layer("Conv1").get_weights()[0])
    with pytest.raises(ValueError, match="trainable must be True or False"):
        builders.set_encoder_batchnorm_trainable(model, "mobilenetv2", "no")
