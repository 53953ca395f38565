"""Metrics: hand-counted values of the numpy references, accumulation, Keras metrics in and out of a model."""

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers.modeling import keras_metrics, metrics

ROOT = Path(__file__).resolve().parents[1]


def grid(rows: list[str]) -> np.ndarray:
    """``(H, W)`` mask from strings of '0'/'1' (one string per image row)."""
    return np.array([[int(c) for c in row] for row in rows], dtype=np.uint8)


def masks(*images: list[list[str]]) -> np.ndarray:
    """``(N, H, W, C)`` uint8 masks; each image is a list of C grids (one per class)."""
    return np.stack([np.stack([grid(rows) for rows in image], axis=-1) for image in images])


E = ["000", "000"]  # empty 2x3 mask
F = ["111", "111"]  # full 2x3 mask


def test_masks_helper_layout():
    array = masks([["100", "000"], E])
    assert array.shape == (1, 2, 3, 2)
    assert array[0, :, :, 0].tolist() == [[1, 0, 0], [0, 0, 0]]


# (name, y_true, y_pred, expected per-pair Dice (N, C)) -- counted by hand
DICE_CASES = [
    ("all empty -> 1", masks([E]), masks([E]), [[1.0]]),
    ("prediction empty, truth not -> 0", masks([["100", "000"]]), masks([E]), [[0.0]]),
    ("truth empty, prediction not -> 0", masks([E]), masks([["010", "000"]]), [[0.0]]),
    ("both full -> 1", masks([F]), masks([F]), [[1.0]]),
    # |X| 2, |Y| 2, overlap 1 -> 2/4
    ("half overlap", masks([["110", "000"]]), masks([["011", "000"]]), [[0.5]]),
    # |X| 4, |Y| 4, overlap 3 -> 6/8
    ("three of four", masks([["111", "100"]]), masks([["110", "110"]]), [[0.75]]),
    # |X| 6, |Y| 1, overlap 1 -> 2/7
    ("one pixel of full", masks([F]), masks([["000", "001"]]), [[2 / 7]]),
    ("two images two classes",
     masks([["110", "000"], E], [["100", "000"], ["111", "100"]]),
     masks([["011", "000"], E], [E, ["110", "110"]]),
     [[0.5, 1.0], [0.0, 0.75]]),
]


@pytest.mark.parametrize("name, y_true, y_pred, expected", DICE_CASES, ids=[c[0] for c in DICE_CASES])
def test_dice_scores_match_hand_counts(name, y_true, y_pred, expected):
    expected = np.array(expected)
    np.testing.assert_allclose(metrics.dice_per_pair(y_true, y_pred), expected)
    assert metrics.severstal_score(y_true, y_pred) == pytest.approx(expected.mean())
    np.testing.assert_allclose(metrics.dice_per_class(y_true, y_pred), expected.mean(axis=0))
    # bool inputs give the same
    assert metrics.severstal_score(y_true.astype(bool), y_pred.astype(bool)) == pytest.approx(expected.mean())


def test_two_image_case_by_hand():
    *_, y_true, y_pred, _ = DICE_CASES[-1]
    assert metrics.severstal_score(y_true, y_pred) == pytest.approx(2.25 / 4)
    np.testing.assert_allclose(metrics.dice_per_class(y_true, y_pred), [0.25, 0.875])


def test_threshold_binarises_probabilities_strictly_above():
    y_true = masks([["110", "000"]])
    y_prob = np.array([0.9, 0.5, 0.7, 0.0, 0.49, 0.1]).reshape(1, 2, 3, 1)  # > 0.5: pixels 0 and 2
    assert metrics.severstal_score(y_true, y_prob, threshold=0.5) == pytest.approx(0.5)
    assert metrics.severstal_score(y_true, y_prob, threshold=0.4) == pytest.approx(2 * 2 / (2 + 4))
    assert metrics.severstal_score(y_true, y_prob, threshold=0.95) == 0.0


# The two-image, two-class case of DICE_CASES, counted by hand:
# class 1: image 1 TP 1 FP 1 FN 1, image 2 FN 1           -> TP 1 FP 1 FN 2, TN 12 - 4 = 8
# class 2: image 2 truth 111/100, pred 110/110            -> TP 3 FP 1 FN 1, TN 12 - 5 = 7
# background (no class): image 1 truth 001/111, pred 100/111 -> TP 3 FP 1 FN 1
#                        image 2 truth 000/011, pred 001/001 -> TP 1 FP 1 FN 1 -> TP 4 FP 2 FN 2, TN 4
TWO_CLASS_TRUE, TWO_CLASS_PRED = DICE_CASES[-1][1], DICE_CASES[-1][2]


def test_confusion_counts_by_hand():
    counts = metrics.confusion_counts(TWO_CLASS_TRUE, TWO_CLASS_PRED)
    assert counts.n_classes == 2
    assert counts.tp.tolist() == [4, 1, 3]
    assert counts.fp.tolist() == [2, 1, 1]
    assert counts.fn.tolist() == [2, 2, 1]
    assert counts.tn.tolist() == [4, 8, 7]


def test_iou_precision_recall_by_hand():
    np.testing.assert_allclose(metrics.iou_per_class(TWO_CLASS_TRUE, TWO_CLASS_PRED), [1 / 4, 3 / 5])
    np.testing.assert_allclose(metrics.iou_per_class(TWO_CLASS_TRUE, TWO_CLASS_PRED, include_background=True),
                               [4 / 8, 1 / 4, 3 / 5])
    assert metrics.mean_iou(TWO_CLASS_TRUE, TWO_CLASS_PRED, include_background=False) == pytest.approx(0.425)
    assert metrics.mean_iou(TWO_CLASS_TRUE, TWO_CLASS_PRED, include_background=True) == pytest.approx(0.45)
    precision, recall = metrics.pixel_precision_recall(TWO_CLASS_TRUE, TWO_CLASS_PRED)
    np.testing.assert_allclose(precision, [1 / 2, 3 / 4])
    np.testing.assert_allclose(recall, [1 / 3, 3 / 4])


def test_binary_task_is_paper_eq6_mean_of_defect_and_background_iou():
    # defect: truth 110/000, pred 011/000 -> TP 1 FP 1 FN 1 -> 1/3
    # background: truth 001/111, pred 100/111 -> TP 3 FP 1 FN 1 -> 3/5
    y_true, y_pred = masks([["110", "000"]]), masks([["011", "000"]])
    assert metrics.mean_iou(y_true, y_pred, include_background=False) == pytest.approx(1 / 3)
    assert metrics.mean_iou(y_true, y_pred, include_background=True) == pytest.approx((1 / 3 + 3 / 5) / 2)


def test_single_label_masks_give_the_confusion_matrix_miou():
    # label maps (0 = background): truth 012/210, pred 011/200
    # bg: truth {00, 12}, pred {00, 11, 12} -> 2/3; class 1: truth {01, 11}, pred {01, 02} -> 1/3;
    # class 2: truth {02, 10}, pred {10} -> 1/2
    y_true = masks([["010", "010"], ["001", "100"]])
    y_pred = masks([["011", "000"], ["000", "100"]])
    np.testing.assert_allclose(metrics.iou_per_class(y_true, y_pred, include_background=True), [2 / 3, 1 / 3, 1 / 2])
    assert metrics.mean_iou(y_true, y_pred, include_background=True) == pytest.approx(0.5)
    assert metrics.mean_iou(y_true, y_pred, include_background=False) == pytest.approx(5 / 12)


def test_classes_absent_everywhere_have_no_iou_and_are_left_out():
    y_true = masks([["110", "000"], E])
    y_pred = masks([["010", "000"], E])
    iou = metrics.iou_per_class(y_true, y_pred)
    assert iou[0] == pytest.approx(0.5) and math.isnan(iou[1])
    assert metrics.mean_iou(y_true, y_pred, include_background=False) == pytest.approx(0.5)
    empty = masks([E, E])
    assert math.isnan(metrics.mean_iou(empty, empty, include_background=False))
    assert metrics.mean_iou(empty, empty, include_background=True) == 1.0
    precision, recall = metrics.pixel_precision_recall(empty, empty)
    assert np.isnan(precision).all() and np.isnan(recall).all()


def test_counts_accumulate_over_batches():
    first, second = (slice(0, 1), slice(1, 2))
    total = (metrics.ConfusionCounts.zeros(2)
             + metrics.confusion_counts(TWO_CLASS_TRUE[first], TWO_CLASS_PRED[first])
             + metrics.confusion_counts(TWO_CLASS_TRUE[second], TWO_CLASS_PRED[second]))
    assert total == metrics.confusion_counts(TWO_CLASS_TRUE, TWO_CLASS_PRED)
    batches = [(TWO_CLASS_TRUE[first], TWO_CLASS_PRED[first]), (TWO_CLASS_TRUE[second], TWO_CLASS_PRED[second])]
    assert metrics.evaluate_batches(batches) == metrics.evaluate(TWO_CLASS_TRUE, TWO_CLASS_PRED)
    with pytest.raises(ValueError, match="2 and 3 classes"):
        total + metrics.ConfusionCounts.zeros(3)


def test_summarise_flat_dict_with_class_names():
    result = metrics.evaluate(TWO_CLASS_TRUE, TWO_CLASS_PRED, class_names={1: "pits", 2: "scratches"})
    assert result == pytest.approx({
        "severstal_score": 0.5625, "dice_pits": 0.25, "dice_scratches": 0.875,
        "mean_iou": 0.425, "mean_iou_with_background": 0.45,
        "iou_background": 0.5, "iou_pits": 0.25, "iou_scratches": 0.6,
        "precision_pits": 0.5, "precision_scratches": 0.75, "recall_pits": 1 / 3, "recall_scratches": 0.75,
    })
    counts = metrics.confusion_counts(TWO_CLASS_TRUE, TWO_CLASS_PRED)
    assert "severstal_score" not in metrics.summarise(counts)
    assert "iou_class_2" in metrics.summarise(counts)
    with pytest.raises(ValueError, match="2 names"):
        metrics.summarise(counts, class_names=["a"])
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        metrics.summarise(counts, np.ones((2, 3)))


@pytest.mark.parametrize("fn", [metrics.severstal_score, metrics.dice_per_class, metrics.confusion_counts,
                                metrics.iou_per_class, metrics.pixel_precision_recall])
def test_shape_mismatch_names_both_shapes(fn):
    with pytest.raises(ValueError, match=r"\(1, 2, 3, 1\).*\(1, 2, 3, 2\)"):
        fn(np.zeros((1, 2, 3, 1)), np.zeros((1, 2, 3, 2)))


# two images of their own sizes, 2x3 and 2x2, on one 2x3 canvas (column 2 of the second is padding)
CANVAS_TRUE = masks([["010", "100"]], [["110", "000"]])
CANVAS_PRED = masks([["011", "100"]], [["100", "010"]])
CANVAS_VALID = np.array([grid(["111", "111"]), grid(["110", "110"])], bool)


def test_valid_pixels_count_as_if_each_image_were_alone():
    alone = metrics.evaluate_batches([(CANVAS_TRUE[:1], CANVAS_PRED[:1]), (masks([["11", "00"]]), masks([["10", "01"]]))])
    assert metrics.evaluate(CANVAS_TRUE, CANVAS_PRED, valid=CANVAS_VALID) == alone
    padded = metrics.confusion_counts(CANVAS_TRUE, CANVAS_PRED)
    counted = metrics.confusion_counts(CANVAS_TRUE, CANVAS_PRED, valid=CANVAS_VALID)
    assert padded.tn[0] == counted.tn[0] and padded.tp[0] == counted.tp[0] + 2  # the 2 padded pixels: background hits
    ones = np.ones(CANVAS_VALID.shape, bool)
    assert metrics.confusion_counts(CANVAS_TRUE, CANVAS_PRED, valid=ones) == padded


def test_valid_also_hides_predictions_in_the_padding():
    stray = CANVAS_PRED.copy()
    stray[1, 0, 2, 0] = 1  # a prediction in the second image's padding
    kept = metrics.evaluate(CANVAS_TRUE, CANVAS_PRED, valid=CANVAS_VALID)
    assert metrics.evaluate(CANVAS_TRUE, stray, valid=CANVAS_VALID) == kept
    assert metrics.dice_per_pair(CANVAS_TRUE, stray, valid=CANVAS_VALID).tolist() == \
        metrics.dice_per_pair(CANVAS_TRUE, CANVAS_PRED, valid=CANVAS_VALID).tolist()


@pytest.mark.parametrize("valid, match", [(np.ones((2, 2, 2), bool), r"valid must have the masks' \(N, H, W\) shape"),
                                          (np.full((2, 2, 3), 0.5), "valid must be binary")])
def test_bad_valid_raises(valid, match):
    with pytest.raises(ValueError, match=match):
        metrics.confusion_counts(CANVAS_TRUE, CANVAS_PRED, valid=valid)


@pytest.mark.parametrize("y_true, y_pred, kwargs, match", [
    (np.zeros((1, 2, 3, 1)), np.full((1, 2, 3, 1), 0.7), {}, "y_pred must be binary.*threshold"),
    (np.full((1, 2, 3, 1), 0.7), np.zeros((1, 2, 3, 1)), {}, "y_true must be binary"),
    (np.zeros((1, 2, 3, 1)), np.full((1, 2, 3, 1), 1.7), {"threshold": 0.5}, r"probabilities in \[0, 1\]"),
    (np.zeros((1, 2, 3, 1)), np.zeros((1, 2, 3, 1)), {"threshold": 2.0}, "threshold"),
    (np.zeros((2, 3)), np.zeros((2, 3)), {}, "4-D"),
    (np.zeros((0, 2, 3, 1)), np.zeros((0, 2, 3, 1)), {}, "empty"),
])
def test_bad_inputs_raise(y_true, y_pred, kwargs, match):
    with pytest.raises(ValueError, match=match):
        metrics.severstal_score(y_true, y_pred, **kwargs)


# ----------------------------------------------------------------------------- Keras

def fixed_set() -> tuple[np.ndarray, np.ndarray]:
    """Deterministic (5, 6, 7, 3) truths and probabilities: blocks of defects, empty pairs, exact 0.5 values."""
    rng = np.random.default_rng(2024)
    y_true = np.zeros((5, 6, 7, 3), dtype=np.float32)
    y_true[0, :3, :4, 0] = 1
    y_true[1, 2:, 3:, 1] = 1
    y_true[2, 1:4, 1:5, 0] = 1
    y_true[2, 3:, :2, 2] = 1
    y_true[4, :, 5:, 2] = 1  # image 3 is defect-free
    y_prob = (y_true * 0.4 + rng.random(y_true.shape) * 0.6).astype(np.float32)  # noisy: errors both ways
    y_prob[3] *= 0.5  # nothing predicted on the defect-free image
    y_prob[1, ..., 2] *= 0.5  # and an empty (image, class) pair predicted empty
    y_prob[0, 0, 0] = 0.5  # exactly at the threshold: not predicted
    return y_true, y_prob


def keras_result(metric, y_true, y_prob, splits=(2, 4)) -> float:
    metric.reset_state()
    for yt, yp in zip(np.split(y_true, splits), np.split(y_prob, splits)):
        metric.update_state(yt, yp)
    return float(metric.result())


def test_keras_metrics_agree_with_numpy_over_batches():
    y_true, y_prob = fixed_set()
    expected = metrics.evaluate(y_true, y_prob, threshold=0.5)
    assert 0 < expected["severstal_score"] < 1  # a non-trivial case
    for metric in keras_metrics.keras_metrics(3, threshold=0.5):
        assert keras_result(metric, y_true, y_prob) == pytest.approx(expected[metric.name], abs=1e-6), metric.name
        assert keras_result(metric, y_true, y_prob, splits=(1,)) == pytest.approx(expected[metric.name], abs=1e-6)
    low = keras_metrics.severstal_score_metric(threshold=0.3)
    assert keras_result(low, y_true, y_prob) == pytest.approx(metrics.severstal_score(y_true, y_prob, 0.3), abs=1e-6)


def test_keras_metrics_per_image_sample_weights_select_images():
    y_true, y_prob = fixed_set()
    keep = np.array([1, 0, 1, 1, 0], dtype=np.float32)
    expected = metrics.evaluate(y_true[keep == 1], y_prob[keep == 1], threshold=0.5)
    for metric in keras_metrics.keras_metrics(3):
        metric.update_state(y_true[:2], y_prob[:2], sample_weight=keep[:2])
        metric.update_state(y_true[2:], y_prob[2:], sample_weight=keep[2:])
        assert float(metric.result()) == pytest.approx(expected[metric.name], abs=1e-6), metric.name


def test_keras_metrics_on_hand_counted_case():
    expected = {"severstal_score": 0.5625, "dice_class_1": 0.25, "dice_class_2": 0.875,
                "mean_iou": 0.425, "mean_iou_with_background": 0.45}
    y_pred = TWO_CLASS_PRED.astype(np.float32)
    for metric in keras_metrics.keras_metrics(2):
        assert keras_result(metric, TWO_CLASS_TRUE, y_pred, splits=(1,)) == pytest.approx(expected[metric.name])


def test_keras_metric_edge_cases_and_arguments():
    empty = np.zeros((2, 2, 3, 1), dtype=np.float32)
    assert keras_result(keras_metrics.severstal_score_metric(), empty, empty, splits=(1,)) == 1.0
    assert math.isnan(keras_result(keras_metrics.mean_iou_metric(1), empty, empty, splits=(1,)))
    assert keras_result(keras_metrics.mean_iou_metric(1, include_background=True), empty, empty, splits=(1,)) == 1.0
    assert keras_metrics.dice_metric(0).name == "dice_class_1"
    assert [m.name for m in keras_metrics.keras_metrics(2, class_names=["pits", "holes"])] == [
        "severstal_score", "dice_pits", "dice_holes", "mean_iou", "mean_iou_with_background"]
    assert keras_metrics.SeverstalScore is keras_metrics.custom_objects()["SeverstalScore"]
    with pytest.raises(ValueError, match="threshold"):
        keras_metrics.severstal_score_metric(threshold=1.5)
    with pytest.raises(ValueError, match="n_classes"):
        keras_metrics.mean_iou_metric(0)
    with pytest.raises(AttributeError):
        metrics.NotAMetric  # noqa: B018


def test_keras_metrics_in_compile_fit_evaluate_save_and_load(tmp_path):
    from helpers.modeling import losses
    from helpers.backend import keras

    x = np.linspace(0, 1, 2 * 8 * 8, dtype=np.float32).reshape(2, 8, 8, 1)
    y = np.zeros((2, 8, 8, 2), dtype=np.float32)
    y[0, :4, :4, 0] = 1
    y[1, 2:6, 3:7, 1] = 1
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.Input((8, 8, 1)),
                              keras.layers.Conv2D(2, 3, padding="same", activation="sigmoid")])
    model.compile(optimizer="adam", loss=losses.get_loss("bce_dice"), metrics=keras_metrics.keras_metrics(2))
    history = model.fit(x, y, batch_size=2, epochs=1, verbose=0)
    names = ["severstal_score", "dice_class_1", "dice_class_2", "mean_iou", "mean_iou_with_background"]
    assert set(names) <= set(history.history)

    result = model.evaluate(x, y, batch_size=1, verbose=0, return_dict=True)
    y_prob = model.predict(x, verbose=0)
    expected = metrics.evaluate(y, y_prob, threshold=0.5)
    for name in names:
        assert result[name] == pytest.approx(expected[name], abs=1e-6, nan_ok=True), name
    assert result["loss"] == pytest.approx(losses.bce_dice(y, y_prob), rel=1e-5)

    path = tmp_path / "model.keras"
    model.save(path)
    objects = {**keras_metrics.custom_objects(), "bce_dice_loss": losses.get_loss("bce_dice")}
    loaded = keras.models.load_model(path, custom_objects=objects)
    assert loaded.evaluate(x, y, batch_size=1, verbose=0, return_dict=True) == pytest.approx(result, nan_ok=True)
    np.testing.assert_allclose(keras.models.load_model(path, compile=False).predict(x, verbose=0), y_prob)


def test_class_keys_make_valid_metric_names():
    from helpers.modeling import metrics as m

    assert m.class_keys({1: "class 1", 2: "Blow-hole", 3: "pits"}) == {1: "class_1", 2: "Blow_hole", 3: "pits"}


# --------------------------------------------------------------------------- binary tasks, classification

# 2 images of 2x2: truth and prediction of one defect class
BINARY_TRUE = np.array([[[1, 1], [0, 0]], [[0, 0], [0, 0]]])
BINARY_PRED = np.array([[[1, 0], [1, 0]], [[0, 0], [0, 0]]])
# defect: TP 1, FP 1, FN 1 -> precision 1/2, recall 1/2, IoU 1/3; background: TP 5, FP 1, FN 1 -> recall 5/6, IoU 5/7


def test_binary_segmentation_scores_hand_computed():
    scores = metrics.binary_segmentation_scores(BINARY_TRUE, BINARY_PRED)
    assert scores == pytest.approx({
        "precision": 0.5, "recall": 0.5, "accuracy": (0.5 + 5 / 6) / 2, "pixel_accuracy": 6 / 8,
        "iou_defect": 1 / 3, "iou_background": 5 / 7, "miou": (1 / 3 + 5 / 7) / 2,
    })
    assert metrics.binary_segmentation_scores(BINARY_TRUE[..., None], BINARY_PRED[..., None]) == scores
    assert metrics.binary_segmentation_scores(BINARY_TRUE, BINARY_PRED * 0.9, threshold=0.5) == scores


def test_binary_segmentation_scores_refuse_several_classes():
    with pytest.raises(ValueError, match="one class"):
        metrics.binary_segmentation_scores(TWO_CLASS_TRUE, TWO_CLASS_PRED)


@pytest.mark.parametrize("y_true, y_pred, expected", [
    ([1, 1, 0, 0], [1, 0, 1, 0], {"accuracy": 0.5, "precision": 0.5, "recall": 0.5, "f1": 0.5}),
    ([1, 1, 1, 0], [1, 1, 1, 1], {"accuracy": 0.75, "precision": 0.75, "recall": 1.0, "f1": 6 / 7}),
    ([0, 0], [0, 0], {"accuracy": 1.0, "precision": np.nan, "recall": np.nan, "f1": np.nan}),
])
def test_binary_classification_scores(y_true, y_pred, expected):
    assert metrics.binary_classification_scores(y_true, y_pred) == pytest.approx(expected, nan_ok=True)


@pytest.mark.parametrize("y_true, y_pred", [([1, 2], [1, 0]), ([1, 0], [1]), ([], []), ([[1]], [[1]])])
def test_binary_classification_scores_refuse_bad_labels(y_true, y_pred):
    with pytest.raises(ValueError):
        metrics.binary_classification_scores(y_true, y_pred)


def test_per_label_auc_ignores_nan_and_one_class_labels():
    nan = np.nan
    y_true = np.array([[1, 0, 1], [0, 0, nan], [1, 0, 0], [0, 0, 1]])
    y_prob = np.array([[0.9, 0.1, 0.8], [0.2, 0.2, 0.99], [0.4, 0.3, 0.1], [0.6, 0.4, 0.7]])
    aucs = metrics.per_label_auc(y_true, y_prob)
    # label 0: positives 0.9, 0.4 vs negatives 0.2, 0.6 -> 3 of 4 pairs ordered; label 1 has no positive;
    # label 2 (third row ignored): positives 0.8, 0.7 vs negative 0.1 -> 1.0
    np.testing.assert_allclose(aucs, [0.75, nan, 1.0])
    with pytest.raises(ValueError, match=r"\(N, K\)"):
        metrics.per_label_auc(y_true[:, 0], y_prob[:, 0])


@pytest.mark.parametrize("mixed", ["mixed_bfloat16", "mixed_float16"])
def test_keras_metrics_and_loss_match_the_numpy_reference_under_mixed_precision(mixed):
    from helpers.modeling import builders, losses
    from helpers.backend import keras

    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 1)).astype(np.float32)
    y = np.zeros((2, 32, 32, 2), dtype=np.float32)
    y[0, :12, :10, 0] = 1
    y[1, 8:20, 5:30, 1] = 1
    keras.mixed_precision.set_global_policy(mixed)
    try:
        keras.utils.set_random_seed(0)
        model = builders.build_segmenter("unet", "mobilenet", (None, None, 1), classes=2, alpha=0.25,
                                         decoder_filters=(16, 16, 8, 8, 8))
        model.compile(optimizer="adam", loss=losses.get_loss("bce_dice"), metrics=keras_metrics.keras_metrics(2))
        result = model.evaluate(x, y, batch_size=2, verbose=0, return_dict=True)
        y_prob = model.predict(x, batch_size=2, verbose=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert y_prob.dtype == np.float32
    expected = metrics.evaluate(y, y_prob, threshold=0.5)
    for name in ("severstal_score", "dice_class_1", "dice_class_2", "mean_iou", "mean_iou_with_background"):
        assert result[name] == pytest.approx(expected[name], abs=1e-6, nan_ok=True), name
    assert result["loss"] == pytest.approx(losses.bce_dice(y, y_prob), rel=1e-4)
