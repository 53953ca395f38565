import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest

from helpers.core import viz


def test_overlay_blends_class_colour_and_leaves_background_grey():
    image = np.full((6, 6), 100, np.uint8)
    masks = np.zeros((6, 6, 2), np.uint8)
    masks[1:5, 1:5, 1] = 1  # class 2, a 4x4 square
    out = viz.overlay(image, masks, alpha=0.5, outline=0)
    assert out.shape == (6, 6, 3) and out.dtype == np.uint8
    expected = np.round(0.5 * 100 + 0.5 * np.array(viz.class_color(2))).astype(np.uint8)
    np.testing.assert_allclose(out[2, 2], expected, atol=1)
    np.testing.assert_array_equal(out[0, 0], [100, 100, 100])


def test_overlay_outline_is_opaque_class_colour():
    image = np.zeros((8, 8), np.uint8)
    masks = np.zeros((8, 8, 1), np.uint8)
    masks[2:6, 2:6, 0] = 1
    out = viz.overlay(image, masks, alpha=0.0, outline=1)
    np.testing.assert_array_equal(out[2, 2], viz.class_color(1))  # boundary pixel
    np.testing.assert_array_equal(out[0, 7], [0, 0, 0])


@pytest.mark.parametrize(
    "image, masks, alpha, message",
    [
        (np.zeros((4, 4)), np.zeros((4, 5, 1)), 0.3, "same H, W"),
        (np.zeros((4, 4, 3)), np.zeros((4, 4, 1)), 0.3, "image \\(H, W\\)"),
        (np.zeros((4, 4)), np.zeros((4, 4, 1)), 1.5, "alpha must be in"),
    ],
)
def test_overlay_errors(image, masks, alpha, message):
    with pytest.raises(ValueError, match=message):
        viz.overlay(image, masks, alpha=alpha)


@pytest.mark.parametrize("shape, n, expected_columns", [((20, 100), 3, 1), ((20, 20), 3, 3), ((20, 20), 6, 4)])
def test_plot_overlays_grid(shape, n, expected_columns):
    images = [np.zeros(shape, np.uint8)] * n
    masks = [np.zeros(shape + (2,), np.uint8)] * n
    fig = viz.plot_overlays(images, masks, [str(i) for i in range(n)], {1: "a", 2: "b"})
    assert fig.axes[0].get_gridspec().ncols == expected_columns
    assert fig.get_size_inches()[0] == pytest.approx(12.0)


def test_class_colour_ids_start_at_one():
    with pytest.raises(ValueError, match="start at 1"):
        viz.class_color(0)
