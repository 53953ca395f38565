"""Tests of helpers.deploy.predict: a folder of images -> submission.csv + overlay PNGs, with .tflite and Keras builders."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers.core import files, rle, severstal
from helpers.deploy import export, predict
from helpers.modeling import builders, runs
from helpers.backend import keras

ROOT = Path(__file__).resolve().parents[1]
SIZE = (64, 96)
SHAPES = [(64, 96), (64, 96), (50, 80)]  # the last one smaller: padded, then cropped back


def _tiny_segmenter() -> keras.Model:
    """(B, H, W, 1) in [0, 255] -> (B, H, W, 2): class 1 where the image is bright, class 2 where it is dark."""
    inputs = keras.Input((None, None, 1), name="image")
    x = keras.layers.Conv2D(2, 1, activation="sigmoid", name="head")(inputs)
    model = keras.Model(inputs, x, name="bright_dark")
    model.get_layer("head").set_weights([np.array([[[[0.1, -0.1]]]], np.float32), np.array([-20.0, 5.0], np.float32)])
    return model


@pytest.fixture(scope="module")
def images_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i, (height, width) in enumerate(SHAPES):
        image = rng.integers(80, 180, (height, width), dtype=np.uint8)
        image[5:20, 10:40] = 250  # bright: class 1
        image[30:45, 50:70] = 10  # dark: class 2
        files.write_image(folder / f"strip_{i}.png", image)
    return folder


@pytest.fixture(scope="module")
def tflite_model(tmp_path_factory) -> Path:
    return export.export_tflite(_tiny_segmenter(), tmp_path_factory.mktemp("tflite") / "tiny.tflite", input_size=SIZE)


def _expected_masks(image: np.ndarray) -> np.ndarray:
    return np.stack([image > 200, image < 50], axis=-1).astype(np.uint8)  # the two sigmoids cross 0.5 at 200 and 50


def _check_outputs(out_dir: Path, images_dir: Path) -> pd.DataFrame:
    submission = pd.read_csv(out_dir / "submission.csv", dtype=str, keep_default_na=False)
    names = [p.name for p in files.list_images(images_dir)]
    assert list(submission.columns) == ["ImageId", "EncodedPixels", "ClassId"]
    assert sorted(zip(submission["ImageId"], submission["ClassId"])) == [(n, c) for n in names for c in ("1", "2")]
    for name in names:
        image = files.read_grey(images_dir / name)
        expected = _expected_masks(image)
        for class_id in (1, 2):
            encoded = submission.query(f"ImageId == '{name}' and ClassId == '{class_id}'")["EncodedPixels"].item()
            np.testing.assert_array_equal(rle.decode(encoded, image.shape), expected[..., class_id - 1])
        overlay = files.read_grey(out_dir / "overlays" / f"{name}.png")  # the full file name: a.jpg and a.png differ
        assert overlay.shape == image.shape
    return submission


def test_a_tflite_model_predicts_a_folder(tflite_model, images_dir, tmp_path):
    wide = predict.predict_folder(tflite_model, images_dir, tmp_path / "out", batch_size=2, progress=False)
    assert list(wide.columns) == [1, 2] and len(wide) == len(SHAPES)
    _check_outputs(tmp_path / "out", images_dir)


def test_a_saved_run_as_written_by_notebook_03_predicts_a_folder(images_dir, tmp_path):
    keras.utils.set_random_seed(0)
    settings = dict(arch="unet", backbone="mobilenet", input_shape=[None, None, 1], classes=2, alpha=0.25,
                    decoder_filters=[16, 16, 8, 8, 8])
    model = builders.build_segmenter(**settings)
    run_dir = tmp_path / "models" / "unet-mobilenet"
    runs.save_run(run_dir, model, settings)
    predictor = predict.load_predictor(run_dir)
    assert isinstance(predictor, predict.KerasPredictor) and predictor.input_size is None and predictor.multiple == 32
    wide = predict.predict_folder(run_dir, images_dir, tmp_path / "out", overlays=False, progress=False)
    assert sorted(wide.index) == sorted(p.name for p in files.list_images(images_dir))
    assert not (tmp_path / "out" / "overlays").exists()
    # the same masks as thresholding the model's own probabilities on the padded image (96 is a multiple of 32)
    image = files.read_grey(images_dir / "strip_2.png")
    padded = np.pad(image, ((0, 64 - 50), (0, 96 - 80)))[None, ..., None].astype(np.float32)
    probs = model.predict(padded, verbose=0)[0, :50, :80]
    assert wide.loc["strip_2.png", 1] == rle.encode(probs[..., 0] > 0.5)


def test_a_saved_keras_file_predicts_like_its_tflite_conversion(tflite_model, images_dir, tmp_path):
    _tiny_segmenter().save(tmp_path / "tiny.keras")
    from_keras = predict.predict_folder(tmp_path / "tiny.keras", images_dir, tmp_path / "keras", progress=False)
    from_tflite = predict.predict_folder(tflite_model, images_dir, tmp_path / "tflite", progress=False)
    pd.testing.assert_frame_equal(from_keras, from_tflite)


@pytest.mark.parametrize(
    "thresholds, min_areas, nonempty",
    [
        (0.5, 0, {1, 2}),
        ([0.5, 0.999], 0, {1}),  # the dark sigmoid tops out below 0.999
        (0.5, [0, 10_000], {1}),  # class 2's component is smaller than 10,000 px
    ],
)
def test_thresholds_and_minimum_areas_apply_per_class(tflite_model, images_dir, tmp_path, thresholds, min_areas, nonempty):
    wide = predict.predict_folder(tflite_model, images_dir, tmp_path, thresholds=thresholds, min_areas=min_areas,
                                  overlays=False, progress=False)
    assert {c for c in (1, 2) if (wide[c] != "").any()} == nonempty


@pytest.mark.parametrize(
    "setup, message",
    [
        ("big_image", r"image big\.png is 80x96, larger than the model input 64x96"),
        ("no_images", r"no images"),
        ("three_thresholds", r"thresholds needs 1 value or one per class \(2\)"),
        ("threshold_above_1", r"thresholds must be .*>= 0.0 and <= 1.0, got 1.5"),
        ("fractional_area", r"min_areas must be an integer >= 0, got 2.5"),
        ("negative_area", r"min_areas must be an integer >= 0, got -1"),
        ("zero_threads", r"num_threads must be an integer >= 1, got 0"),
    ],
)
def test_problems_are_reported_clearly(tflite_model, tmp_path, setup, message):
    folder = tmp_path / "images"
    folder.mkdir()
    options = {
        "three_thresholds": dict(thresholds=[0.5, 0.5, 0.5]), "threshold_above_1": dict(thresholds=[0.5, 1.5]),
        "fractional_area": dict(min_areas=2.5), "negative_area": dict(min_areas=[0, -1]), "zero_threads": dict(num_threads=0),
    }.get(setup, {})
    if setup != "no_images":
        files.write_image(folder / "big.png", np.zeros((80 if setup == "big_image" else 64, 96), np.uint8))
    with pytest.raises(ValueError, match=message):
        predict.predict_folder(tflite_model, folder, tmp_path / "out", progress=False, **options)
    assert not (tmp_path / "out").exists()


def test_a_jpg_and_a_png_of_one_stem_get_their_own_overlays(tflite_model, tmp_path):
    folder = tmp_path / "images"
    bright, dark = np.full((40, 60), 250, np.uint8), np.full((30, 50), 10, np.uint8)
    files.write_image(folder / "a.png", bright)
    files.write_image(folder / "a.jpg", dark, quality=100)
    wide = predict.predict_folder(tflite_model, folder, tmp_path / "out", progress=False)
    assert sorted(wide.index) == ["a.jpg", "a.png"]  # ImageId = the file name, as in Kaggle's submissions
    assert sorted(p.name for p in (tmp_path / "out" / "overlays").iterdir()) == ["a.jpg.png", "a.png.png"]
    assert files.read_grey(tmp_path / "out" / "overlays" / "a.png.png").shape == bright.shape
    assert files.read_grey(tmp_path / "out" / "overlays" / "a.jpg.png").shape == dark.shape


def test_a_duplicate_image_id_is_an_error_naming_it(tflite_model, images_dir, tmp_path, monkeypatch):
    paths = files.list_images(images_dir)
    monkeypatch.setattr(predict.files, "list_images", lambda folder: [*paths, paths[0]])
    with pytest.raises(ValueError, match=r"ImageId 'strip_0\.png' appears twice"):
        predict.predict_folder(tflite_model, images_dir, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_a_failure_half_way_leaves_no_outputs_behind(tflite_model, tmp_path):
    folder = tmp_path / "images"
    files.write_image(folder / "a.png", np.zeros((64, 96), np.uint8))
    (folder / "b.png").write_bytes(b"not a png")
    out_dir = tmp_path / "out"
    with pytest.raises(ValueError, match=r"cannot read image .*b\.png"):
        predict.predict_folder(tflite_model, folder, out_dir, progress=False)
    assert not out_dir.exists() or not any(out_dir.rglob("*")), sorted(out_dir.rglob("*"))


def test_model_files_that_would_run_code_are_refused(hostile, images_dir, tmp_path, capsys):
    folder, marker = hostile
    for name in ("m.h5", "m.keras", "renamed.keras"):
        assert predict.main([str(folder / name), str(images_dir), str(tmp_path / "out")]) == 1
        error = capsys.readouterr().err
        assert error.startswith(f"error: {folder / name}: ") and error.count("\n") == 1, error
        assert not marker.exists() and not (tmp_path / "out").exists()
    assert predict.main([str(folder / "m.keras"), str(images_dir), str(tmp_path / "out"), "--trust-code"]) == 0
    assert marker.exists() and (tmp_path / "out" / "submission.csv").is_file()  # the documented risk of --trust-code


@pytest.mark.parametrize("name", ["model.tflite", "model.h5", "model.keras"])
def test_garbage_model_files_are_one_line_errors(images_dir, tmp_path, capsys, name):
    (tmp_path / name).write_bytes(b"\x00garbage" * 20)
    assert predict.main([str(tmp_path / name), str(images_dir), str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"error: {tmp_path / name}: ") and error.count("\n") == 1, error


def test_main_returns_1_with_the_message_on_errors(tflite_model, tmp_path, capsys):
    assert predict.main([str(tflite_model), str(tmp_path / "missing"), str(tmp_path / "out")]) == 1
    assert "error: image folder not found" in capsys.readouterr().err


@pytest.mark.slow  # in the full suite, not the fast tier
def test_command_line_entry_writes_submission_and_overlays(tflite_model, images_dir, tmp_path):
    command = [sys.executable, "-m", "helpers.deploy.predict", str(tflite_model), str(images_dir), str(tmp_path / "out"),
               "--threshold", "0.5", "--min-area", "0", "0", "--batch-size", "3", "--threads", "1"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"{len(SHAPES)} images, 6 defect masks" in result.stdout
    _check_outputs(tmp_path / "out", images_dir)


@pytest.mark.parametrize("layout", ["ImageId,EncodedPixels,ClassId", "ImageId_ClassId,EncodedPixels"])
def test_a_kaggle_sample_submission_sets_rows_order_and_layout(tflite_model, images_dir, tmp_path, layout):
    names = [p.name for p in files.list_images(images_dir)][::-1]  # not the folder's order
    pairs = [(name, c) for c in (2, 1) for name in names]
    if layout.startswith("ImageId,"):
        text = layout + "\n" + "".join(f"{n},1 1,{c}\n" for n, c in pairs)
    else:
        text = layout + "\n" + "".join(f"{n}_{c},1 1\n" for n, c in pairs)
    (tmp_path / "sample_submission.csv").write_text(text)
    assert predict.main([str(tflite_model), str(images_dir), str(tmp_path / "out"), "--no-overlays",
                         "--sample-submission", str(tmp_path / "sample_submission.csv")]) == 0
    written = (tmp_path / "out" / "submission.csv").read_text().splitlines()
    assert written[0] == layout and len(written) == 1 + len(pairs)
    back = severstal.read_sample_submission(tmp_path / "out" / "submission.csv")
    assert list(zip(back["ImageId"], back["ClassId"])) == pairs
    for name in names:
        image = files.read_grey(images_dir / name)
        wide = severstal.read_train_csv(tmp_path / "out" / "submission.csv", shape=image.shape, validate=False)
        np.testing.assert_array_equal(rle.decode(wide.loc[name, 2], image.shape), _expected_masks(image)[..., 1])


def test_a_sample_submission_naming_other_images_writes_nothing(tflite_model, images_dir, tmp_path, capsys):
    (tmp_path / "sample_submission.csv").write_text("ImageId,EncodedPixels,ClassId\nother.jpg,1 1,1\n")
    assert predict.main([str(tflite_model), str(images_dir), str(tmp_path / "out"),
                         "--sample-submission", str(tmp_path / "sample_submission.csv")]) == 1
    assert "images of the sample submission were not predicted" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_flip_tta_averages_the_flipped_predictions(tflite_model, images_dir, tmp_path):
    """The tiny model is pixel-wise, so flipping changes nothing: the masks must equal the plain ones."""
    plain = predict.predict_folder(tflite_model, images_dir, tmp_path / "plain", overlays=False, progress=False)
    flipped = predict.predict_folder(tflite_model, images_dir, tmp_path / "tta", overlays=False, progress=False,
                                     flips=("horizontal", "vertical"))
    pd.testing.assert_frame_equal(plain, flipped)
    with pytest.raises(ValueError, match=r"flips must be one of \['horizontal', 'vertical'\], got 'diagonal'"):
        predict.predict_folder(tflite_model, images_dir, tmp_path / "bad", flips=("diagonal",))


# ------------------------------------------------------------------ a split of a dataset
@pytest.fixture(scope="module")
def steel_dir(tmp_path_factory) -> Path:
    """Six 50x80 synthetic steel images (not multiples of 32: padded, then cropped back)."""
    from helpers.data.synth import steel

    folder = tmp_path_factory.mktemp("steel")
    steel.make_steel_dataset(folder, n_images=6, height=50, width=80, seed=0, progress=False)
    return folder


def test_read_split_decodes_once_pads_for_the_architecture_and_keeps_the_order(steel_dir):
    wide = severstal.read_dataset(steel_dir)
    ids = list(wide.index[::-1][:5])  # not the table's order
    split = predict.read_split(steel_dir, ids, wide, arch="unet", batch_size=2)
    assert split.image_ids == ids and split.shape == (50, 80) and split.probs is None
    assert split.inputs.shape == (5, 64, 96, 1) and split.inputs.dtype == np.float32
    assert not split.inputs[:, 50:].any() and not split.inputs[:, :, 80:].any()  # zero padding at the bottom/right
    for k, image_id in enumerate(ids):
        np.testing.assert_array_equal(split.images[k], files.read_grey(steel_dir / "train_images" / image_id))
        np.testing.assert_array_equal(split.truths[k], severstal.decode_masks(wide.loc[image_id]))
    assert predict.read_split(steel_dir, ids[:1], wide, arch="pspnet").inputs.shape[1:3] == (96, 96)  # multiples of 48


def test_predict_dataset_gives_the_models_probabilities_cropped_back(steel_dir):
    model = _tiny_segmenter()
    wide = severstal.read_dataset(steel_dir)
    ids = list(wide.index)
    split = predict.predict_dataset(model, steel_dir, ids, wide, batch_size=4)
    expected = model.predict(split.inputs, verbose=0)[:, :50, :80]
    np.testing.assert_allclose(split.probs, expected, atol=1e-6)
    assert split.probs.shape == (6, 50, 80, 2) and split.seconds > 0
    flipped = predict.predict_dataset(model, steel_dir, ids, wide, batch_size=4, flips=("horizontal",))
    mirrored = model.predict(split.inputs[:, :, ::-1], verbose=0)[:, :, ::-1][:, :50, :80]
    np.testing.assert_allclose(flipped.probs, (expected + mirrored) / 2, atol=1e-6)


def test_a_split_of_two_image_sizes_needs_resize_to_or_mixed_sizes(steel_dir):
    wide = severstal.read_dataset(steel_dir).copy()
    first, other = wide.index[:2]
    wide.loc[other, "Height"] = 40
    with pytest.raises(ValueError, match=rf"two sizes \({first} is 50x80, {other} is 40x80\): pass resize_to.*or mixed_sizes=True"):
        predict.split_shape(wide, [first, other])
    assert predict.split_shape(wide, [first, other], resize_to=[32, 64]) == (32, 64)
    assert predict.split_shape(wide, [other, first], mixed_sizes=True) == (50, 80)
    split = predict.read_split(steel_dir, list(severstal.read_dataset(steel_dir).index), resize_to=(32, 64))
    assert split.inputs.shape == (6, 32, 64, 1) and split.truths.shape[1:3] == (32, 64) and split.valid is None


def test_mixed_sizes_share_one_canvas_and_score_each_image_alone(mixed_steel_dir):
    from helpers.modeling import metrics

    wide = severstal.read_dataset(mixed_steel_dir)
    ids = list(wide.index)
    assert predict.has_mixed_sizes(wide, ids) and not predict.has_mixed_sizes(wide, ids, resize_to=(32, 32))
    model = _tiny_segmenter()
    split = predict.predict_dataset(model, mixed_steel_dir, ids, wide, batch_size=4, mixed_sizes=True)
    assert split.shape == (64, 160) and split.inputs.shape == (8, 64, 160, 1)
    assert split.sizes == [(64, 160), (48, 96)] * 4
    assert split.valid[1].sum() == 48 * 96 and split.valid[0].all()
    assert split.valid is split.valid  # built once per split, not per access
    assert not split.probs[1, 48:].any() and not split.probs[1, :, 96:].any()  # nothing outside an image's own pixels
    alone = []
    for k, image_id in enumerate(ids):
        truth = severstal.decode_masks(wide.loc[image_id])
        np.testing.assert_array_equal(split.own(k, split.truths[k]), truth)
        np.testing.assert_array_equal(split.own(k, split.images[k]), files.read_grey(mixed_steel_dir / "train_images" / image_id))
        height, width = truth.shape[:2]
        padded_height, padded_width = builders.padded_size((height, width), "unet")
        image = split.inputs[k : k + 1, :padded_height, :padded_width]
        alone.append((truth[None, ..., :2], model.predict(image, verbose=0)[:, :height, :width]))  # the model's 2 classes
    scores = metrics.evaluate(split.truths[..., :2], split.probs, threshold=0.5, valid=split.valid)
    expected = metrics.evaluate_batches(alone, threshold=0.5)
    assert scores.keys() == expected.keys()
    for key, value in expected.items():
        assert scores[key] == pytest.approx(value, abs=1e-3, nan_ok=True), key


