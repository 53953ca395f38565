import numpy as np
import pandas as pd
import pytest

from helpers.core import rle
from helpers.modeling import postprocess


def test_remove_small_drops_components_below_the_area():
    mask = np.zeros((6, 8), np.uint8)
    mask[0:2, 0:2] = 1  # area 4
    mask[4:6, 3:8] = 1  # area 10
    mask[0, 7] = 1  # area 1
    kept = postprocess.remove_small(mask, 5)
    assert kept.sum() == 10 and kept[4:6, 3:8].all()
    np.testing.assert_array_equal(postprocess.remove_small(mask, 0), mask)


def test_apply_thresholds_areas_and_gate_per_class():
    probs = np.zeros((4, 4, 3), np.float32)
    probs[0:2, 0:2, 0] = 0.6  # class 1: 4 px at 0.6
    probs[:, :, 1] = 0.45  # class 2: everything at 0.45
    probs[3, 3, 2] = 0.9  # class 3: a single pixel
    out = postprocess.apply(probs, thresholds=[0.5, 0.4, 0.5], min_areas=[0, 0, 2])
    assert out[..., 0].sum() == 4 and out[..., 1].sum() == 16 and out[..., 2].sum() == 0
    gated = postprocess.apply(probs, thresholds=[0.5, 0.4, 0.5], image_probs=np.array([0.2, 0.9, 0.9]))
    assert gated[..., 0].sum() == 0 and gated[..., 1].sum() == 16


def _one_class_example() -> tuple[np.ndarray, np.ndarray]:
    """One image, one class: truth 4 px; the probability map has the 4 true px at 0.55 and a 1-px false blob at 0.8."""
    truth = np.zeros((1, 5, 5, 1), np.uint8)
    truth[0, 0:2, 0:2, 0] = 1
    probs = np.zeros((1, 5, 5, 1), np.float32)
    probs[0, 0:2, 0:2, 0] = 0.55
    probs[0, 4, 4, 0] = 0.8
    return probs, truth


def test_tune_finds_the_hand_computed_best():
    probs, truth = _one_class_example()
    best, grid = postprocess.tune(probs, truth, thresholds=[0.5, 0.7], min_areas=[0, 2])
    # threshold 0.5, no area filter: 2*4/(5+4) = 0.888...; with min_area 2 the false pixel goes: Dice 1
    assert grid.query("threshold == 0.5 and min_area == 0")["dice"].item() == pytest.approx(8 / 9)
    assert best.loc[1, "dice"] == pytest.approx(1.0)
    assert best.loc[1, "threshold"] == 0.5 and best.loc[1, "min_area"] == 2
    assert best.loc[1, "dice_default"] == pytest.approx(8 / 9)
    # threshold 0.7 keeps only the false pixel: Dice 0; with min_area 2 nothing is left but the truth is not empty: 0
    assert grid.query("threshold == 0.7")["dice"].tolist() == [0.0, 0.0]


def test_tune_counts_empty_pairs_as_one():
    probs = np.zeros((2, 3, 3, 1), np.float32)
    truths = np.zeros((2, 3, 3, 1), np.uint8)
    best, _ = postprocess.tune(probs, truths, thresholds=[0.5], min_areas=[0])
    assert best.loc[1, "dice"] == 1.0


def test_tune_matches_apply_plus_metric():
    probs = np.zeros((2, 6, 6, 2), np.float32)
    probs[0, 1:4, 1:4, 0] = 0.7
    probs[1, 0, 0:3, 1] = 0.6
    probs[1, 5, 5, 1] = 0.9
    truths = (probs > 0.65).astype(np.uint8)
    best, grid = postprocess.tune(probs, truths, thresholds=[0.5, 0.65], min_areas=[0, 2])
    for _, row in grid.iterrows():
        c = int(row["ClassId"]) - 1
        dices = []
        for i in range(2):
            pred = postprocess.apply(probs[i], [row["threshold"]] * 2, [row["min_area"]] * 2)[..., c]
            total = pred.sum() + truths[i, ..., c].sum()
            dices.append(1.0 if total == 0 else 2 * (pred & truths[i, ..., c]).sum() / total)
        assert row["dice"] == pytest.approx(np.mean(dices))


def test_flip_tta_averages_back_flipped_predictions():
    images = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4, 1)
    # a predictor that depends on position: flipping back must undo it exactly
    identity = postprocess.flip_tta(lambda x: x, images, flips=("horizontal", "vertical"))
    np.testing.assert_allclose(identity, images)
    scaled = postprocess.flip_tta(lambda x, factor: x * factor, images, flips=(), factor=2.0)
    np.testing.assert_allclose(scaled, 2 * images)
    with pytest.raises(ValueError, match="flips must be among"):
        postprocess.flip_tta(lambda x: x, images, flips=("diagonal",))


def test_write_submission_refuses_a_repeated_image_id(tmp_path):
    """Before: the second mask silently replaced the first (one row per id in the file)."""
    same = np.zeros((3, 4, 1), np.uint8)
    with pytest.raises(ValueError, match="ImageId 'a.jpg' appears more than once"):
        postprocess.write_submission(["a.jpg", "a.jpg"], [same, same], tmp_path / "submission.csv")
    assert not (tmp_path / "submission.csv").exists()


def test_write_submission_round_trips(tmp_path):
    masks = [np.zeros((3, 4, 2), np.uint8), np.zeros((3, 4, 2), np.uint8)]
    masks[0][0, 0, 0] = 1
    masks[1][:, 3, 1] = 1
    wide = postprocess.write_submission(["a.jpg", "b.jpg"], masks, tmp_path / "submission.csv")
    table = pd.read_csv(tmp_path / "submission.csv", keep_default_na=False)
    assert len(table) == 4 and list(table.columns) == ["ImageId", "EncodedPixels", "ClassId"]
    assert wide.loc["a.jpg", 1] == "1 1" and wide.loc["b.jpg", 2] == "10 3"
    np.testing.assert_array_equal(rle.decode(wide.loc["b.jpg", 2], (3, 4)), masks[1][..., 1])


@pytest.mark.parametrize("call, message", [
    (lambda: postprocess.apply(np.zeros((2, 2))), r"\(H, W, C\)"),
    (lambda: postprocess.remove_small(np.zeros((2, 2)), -1), "min_area must be >= 0"),
    (lambda: postprocess.tune(np.zeros((1, 2, 2, 1)), np.zeros((1, 2, 3, 1))), "both be"),
    (lambda: postprocess.write_submission(["a"], [], "x.csv"), "as many masks"),
])
def test_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_the_tuned_record_is_what_serving_reads():
    probs, truth = _one_class_example()
    best, _ = postprocess.tune(probs, truth, thresholds=[0.5, 0.7], min_areas=[0, 2], class_names={1: "a"})
    record = postprocess.tuned_record(best, flips=("horizontal",))
    assert record == {"1": {"threshold": 0.5, "min_area": 2, "dice": 1.0, "dice_default": pytest.approx(8 / 9),
                            "flips": ["horizontal"]}}
    with pytest.raises(ValueError, match="threshold and min_area"):
        postprocess.tuned_record(best.drop(columns="min_area"))
