"""Tests of helpers.studies.explain: Grad-CAM(++) on toy models with known answers and on resnet18 builders, nested and
shared sub-builders, pooled features, t-SNE and its scores, CAMs against masks, pictures.

The toy CNN (16x16 grey images of 0/1) has one 1x1 convolution ``features``: channel 0 = relu(x - 0.5)
(bright pixels), channel 1 = relu(0.5 - x) (dark pixels); global average pooling; a softmax head whose
logits are 10 * bright, 10 * dark and -(bright + dark). So the Grad-CAM of class 0 is exactly the
bright square, of class 1 exactly its complement, and of class 2 (negative evidence only) all zeros.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest

from helpers.modeling import builders
from helpers.studies import explain
from helpers.backend import keras, tf

SIZE = 16
SHAPE = (64, 64, 1)


def _images() -> np.ndarray:
    """Two toy images: a 12x12 bright square (class 0 predicted), a 4x4 one (class 1 predicted)."""
    x = np.zeros((2, SIZE, SIZE, 1), np.float32)
    x[0, 2:14, 3:15] = 1
    x[1, 4:8, 9:13] = 1
    return x


def _features_layer(name: str = "features") -> keras.layers.Conv2D:
    conv = keras.layers.Conv2D(2, 1, activation="relu", name=name)
    conv.build((None, SIZE, SIZE, 1))
    conv.set_weights([np.array([1.0, -1.0], np.float32).reshape(1, 1, 1, 2), np.array([-0.5, 0.5], np.float32)])
    return conv


def _class_head() -> keras.layers.Dense:
    """Softmax over logits 10 * bright, 10 * dark, -(bright + dark) of the pooled toy features."""
    head = keras.layers.Dense(3, activation="softmax", name="head")
    head.build((None, 2))
    head.set_weights([np.array([[10, 0, -1], [0, 10, -1]], np.float32), np.zeros(3, np.float32)])
    return head


def _mask_head() -> keras.layers.Conv2D:
    """Per-pixel sigmoid of 10 * bright (channel 0) and 10 * dark (channel 1)."""
    head = keras.layers.Conv2D(2, 1, activation="sigmoid", name="mask_head")
    head.build((None, SIZE, SIZE, 2))
    head.set_weights([10 * np.eye(2, dtype=np.float32).reshape(1, 1, 2, 2), np.zeros(2, np.float32)])
    return head


@pytest.fixture(scope="module")
def toy():
    """Flat, nested (Sequential around a backbone model) and shared (backbone on the image and its mirror) toys."""
    image = keras.Input((SIZE, SIZE, 1), name="image")
    features = _features_layer()(image)
    backbone = keras.Model(image, features, name="backbone")
    pool = keras.layers.GlobalAveragePooling2D(name="pool")
    head = _class_head()
    flat = keras.Model(image, head(pool(features)), name="flat")
    nested = keras.Sequential([backbone, pool, head], name="nested")
    mirror = keras.layers.Lambda(lambda t: tf.reverse(t, axis=[2]), name="mirror")(image)
    both = keras.layers.Average(name="average")([pool(backbone(image)), pool(backbone(mirror))])
    shared = keras.Model(image, head(both), name="shared")
    return {"flat": flat, "nested": nested, "shared": shared}


@pytest.fixture(scope="module")
def toy_segmenter():
    """Per-pixel sigmoid head on the toy features: channel 0 = bright pixels, channel 1 = dark pixels."""
    image = keras.Input((SIZE, SIZE, 1), name="image")
    return keras.Model(image, _mask_head()(_features_layer()(image)), name="toy_segmenter")


@pytest.fixture(scope="module")
def classifier():
    keras.utils.set_random_seed(0)
    return builders.build_classifier("resnet18", input_shape=SHAPE, n_outputs=2)


@pytest.fixture(scope="module")
def segmenter():
    keras.utils.set_random_seed(0)
    return builders.build_segmenter("unet", "resnet18", input_shape=SHAPE, classes=2)


@pytest.fixture(scope="module")
def grey():
    return np.random.default_rng(0).uniform(0, 255, (2, *SHAPE)).astype(np.float32)


def _assert_maps(cams: np.ndarray, n: int, size: tuple[int, int]) -> None:
    assert cams.shape == (n, *size) and cams.dtype == np.float32
    assert cams.min() >= 0 and cams.max() <= 1
    for cam in cams:
        assert cam.max() in (0.0, 1.0)


# ------------------------------------------------------------------ Grad-CAM on the toy CNN
@pytest.mark.parametrize("method", explain.METHODS)
def test_toy_map_is_the_square_for_its_class_and_the_rest_for_the_other(toy, method):
    x = _images()
    square = x[..., 0]
    np.testing.assert_array_equal(explain.grad_cam(toy["flat"], x, target=0, method=method), square)
    np.testing.assert_array_equal(explain.grad_cam(toy["flat"], x, target=1, method=method), 1 - square)


@pytest.mark.parametrize("method", explain.METHODS)
def test_toy_class_with_only_negative_evidence_gives_all_zero_maps(toy, method):
    cams = explain.grad_cam(toy["flat"], _images(), target=2, method=method)
    _assert_maps(cams, 2, (SIZE, SIZE))
    assert not cams.any()


def test_default_target_is_the_predicted_class_and_targets_may_differ_per_image(toy):
    x = _images()
    assert toy["flat"].predict(x, verbose=0).argmax(axis=1).tolist() == [0, 1]
    default = explain.grad_cam(toy["flat"], x)
    np.testing.assert_array_equal(default, explain.grad_cam(toy["flat"], x, target=np.array([0, 1])))
    np.testing.assert_array_equal(default, explain.grad_cam(toy["flat"], x, target=[0, 1], batch_size=1))
    np.testing.assert_array_equal(default[1], 1 - x[1, ..., 0])


def test_nested_model_equals_flat_model(toy):
    x = _images()
    assert explain.find_target_layer(toy["nested"]) == "backbone/features"
    for method in explain.METHODS:
        for target in (0, 1):
            flat = explain.grad_cam(toy["flat"], x, target=target, method=method)
            nested = explain.grad_cam(toy["nested"], x, target=target, method=method)
            np.testing.assert_array_equal(nested, flat)
    np.testing.assert_array_equal(explain.pooled_features(toy["nested"], x), explain.pooled_features(toy["flat"], x))


def test_shared_submodel_is_taken_at_the_chosen_call(toy):
    x = _images()
    assert explain.find_target_layer(toy["shared"]) == "backbone/features"
    runs = [explain.grad_cam(toy["shared"], x, target=0, call_index=i) for i in (0, 1)]
    square, mirrored = x[..., 0], x[:, :, ::-1, 0]
    # one run sees the image, the other its mirror (which one runs first is the model's execution order)
    assert sorted(np.array_equal(run, square) for run in runs) == [False, True]
    assert sorted(np.array_equal(run, mirrored) for run in runs) == [False, True]
    with pytest.raises(ValueError, match="ran 2 time\\(s\\) in one forward pass; call_index=2"):
        explain.grad_cam(toy["shared"], x, call_index=2)


def test_model_is_left_unchanged(toy):
    head, features = toy["flat"].get_layer("head"), toy["flat"].get_layer("features")
    with pytest.raises(ValueError, match="call_index"):
        explain.grad_cam(toy["flat"], _images(), call_index=1)
    explain.grad_cam(toy["flat"], _images())
    assert head.activation is keras.activations.softmax
    assert "call" not in vars(features)
    np.testing.assert_allclose(toy["flat"].predict(_images(), verbose=0).sum(axis=1), 1.0, rtol=1e-6)


# ------------------------------------------------------------------ Grad-CAM on segmentation outputs
def test_toy_segmenter_explains_a_channel_over_a_region(toy_segmenter):
    x = _images()
    square = x[..., 0]
    with pytest.raises(ValueError, match="name the layer"):
        explain.find_target_layer(toy_segmenter)
    # predicted regions: channel 0 = the square, channel 1 = the rest
    np.testing.assert_array_equal(explain.grad_cam(toy_segmenter, x, target=0, layer="features"), square)
    np.testing.assert_array_equal(explain.grad_cam(toy_segmenter, x, target=1, layer="features"), 1 - square)
    given = explain.grad_cam(toy_segmenter, x, target=0, layer="features", region=np.ones((2, SIZE, SIZE)), reduce="mean")
    np.testing.assert_array_equal(given, square)
    empty = explain.grad_cam(toy_segmenter, x, target=0, layer="features", region=np.zeros((2, SIZE, SIZE)))
    assert not empty.any()


def test_segmenter_maps_have_the_input_size(segmenter, grey):
    assert explain.find_target_layer(segmenter) == "relu1"
    region = np.zeros((2, *SHAPE[:2]), bool)
    region[:, 16:48, 16:48] = True
    for method in explain.METHODS:
        _assert_maps(explain.grad_cam(segmenter, grey, target=1, region=region, method=method), 2, SHAPE[:2])
    summed = explain.grad_cam(segmenter, grey, target=1, region=region, reduce="sum")
    mean = explain.grad_cam(segmenter, grey, target=1, region=region, reduce="mean")
    np.testing.assert_allclose(summed, mean, atol=1e-5)  # Grad-CAM ignores a positive factor per image
    _assert_maps(explain.grad_cam(segmenter, grey, layer="decoder_stage2b_relu"), 2, SHAPE[:2])


def test_multi_output_model_explains_the_chosen_output():
    image = keras.Input((SIZE, SIZE, 1), name="image")
    features = _features_layer()(image)
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(features)
    model = keras.Model(image, [_mask_head()(features), _class_head()(pooled)], name="two_outputs")
    x = _images()
    assert explain.find_target_layer(model, output=1) == "features"
    np.testing.assert_array_equal(explain.grad_cam(model, x, target=1, output=1), 1 - x[..., 0])
    np.testing.assert_array_equal(explain.grad_cam(model, x, target=0, output=0, layer="features"), x[..., 0])
    with pytest.raises(ValueError, match="name the layer"):
        explain.grad_cam(model, x, output=0)


# ------------------------------------------------------------------ Grad-CAM on resnet18 classifiers
def test_classifier_maps_despite_saturated_sigmoid(classifier, grey):
    assert explain.find_target_layer(classifier) == "relu1"
    assert np.all(classifier.predict(grey, verbose=0) > 0.9999)  # random weights, raw [0, 255] input: saturated
    for method in explain.METHODS:
        cams = explain.grad_cam(classifier, grey, method=method)
        _assert_maps(cams, 2, SHAPE[:2])
        assert cams.max(axis=(1, 2)).tolist() == [1.0, 1.0]  # logits, not probabilities: the maps are not empty


def test_nested_resnet_classifier_equals_flat(classifier, grey):
    backbone = keras.Model(classifier.input, classifier.get_layer("relu1").output, name="backbone")
    nested = keras.Sequential(
        [backbone, classifier.get_layer("classifier_pool"), classifier.get_layer("classifier_dense")], name="nested"
    )
    assert explain.find_target_layer(nested) == "backbone/relu1"
    for method in explain.METHODS:
        np.testing.assert_allclose(
            explain.grad_cam(nested, grey, target=1, method=method),
            explain.grad_cam(classifier, grey, target=1, method=method),
            atol=1e-5,
        )


# ------------------------------------------------------------------ pooled features
def test_pooled_features_of_the_toy_are_the_bright_and_dark_fractions(toy):
    x = _images()
    bright = x[..., 0].mean(axis=(1, 2))
    expected = np.stack([0.5 * bright, 0.5 * (1 - bright)], axis=1)
    np.testing.assert_allclose(explain.pooled_features(toy["flat"], x), expected, rtol=1e-6)
    batches = [(x[:1], "labels"), (x[1:], "labels")]  # (images, labels) like a tf.data pipeline
    np.testing.assert_allclose(explain.pooled_features(toy["flat"], batches), expected, rtol=1e-6)
    np.testing.assert_allclose(explain.pooled_features(toy["flat"], tf.data.Dataset.from_tensor_slices(x).batch(1)), expected, rtol=1e-6)
    assert explain.pooled_features(toy["flat"], x[:0]).shape == (0, 2)


@pytest.mark.parametrize("which", ["classifier", "segmenter"])
def test_pooled_features_are_the_pooled_encoder_output(which, request, grey):
    model = request.getfixturevalue(which)
    deepest = builders.encoder_model(model, "resnet18")(grey, training=False)[0]
    features = explain.pooled_features(model, grey, batch_size=1)
    assert features.shape == (2, 512)
    expected = np.asarray(deepest).mean(axis=(1, 2))  # batch of 2 against batches of 1: float rounding only
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())


# ------------------------------------------------------------------ layers
def test_resolve_layer_and_default_layer_errors(toy):
    assert explain.resolve_layer(toy["nested"], "backbone/features") is toy["flat"].get_layer("features")
    assert explain.resolve_layer(toy["nested"], "backbone").name == "backbone"
    dense_only = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)], name="dense_only")
    with pytest.raises(ValueError, match="no convolution or activation layer with a 4-D output"):
        explain.find_target_layer(dense_only)


# ------------------------------------------------------------------ argument errors
GRAD_CAM_ERRORS = [
    ({"method": "cam"}, "method must be one of \\['gradcam', 'gradcam\\+\\+'\\]"),
    ({"reduce": "max"}, "reduce must be one of \\['sum', 'mean'\\]"),
    ({"target": 3}, "indices in \\[0, 3\\)"),
    ({"target": [0]}, "one per image"),
    ({"target": 0.5}, "an int or an array"),
    ({"region": np.ones((2, SIZE, SIZE))}, "segmentation outputs"),
    ({"layer": "nope"}, "no layer 'nope' in model 'flat'.*\\['features'\\]"),
    ({"layer": "pool"}, "4-D output"),
    ({"layer": "features/kernel"}, "is a Conv2D, not a nested model"),
    ({"output": 1}, "output must be an index in \\[0, 1\\)"),
    ({"output": 1, "layer": "features"}, "output must be an index in \\[0, 1\\)"),
    ({"batch_size": 0}, "batch_size must be an integer >= 1"),
    ({"call_index": -1}, "call_index must be an integer >= 0"),
    ({"threshold": float("nan")}, "threshold must be a finite number"),
]


@pytest.mark.parametrize(("kwargs", "message"), GRAD_CAM_ERRORS)
def test_grad_cam_argument_errors(toy, kwargs, message):
    with pytest.raises(ValueError, match=message):
        explain.grad_cam(toy["flat"], _images(), **kwargs)


def test_grad_cam_checks_images_and_regions(toy, toy_segmenter):
    with pytest.raises(ValueError, match="images must be \\(N, H, W, C\\)"):
        explain.grad_cam(toy["flat"], _images()[..., 0])
    with pytest.raises(ValueError, match="one mask per image"):
        explain.grad_cam(toy_segmenter, _images(), layer="features", region=np.ones((1, SIZE, SIZE)))
    with pytest.raises(ValueError, match="region masks must be \\(N, 16, 16\\)"):
        explain.grad_cam(toy_segmenter, _images(), layer="features", region=np.ones((2, 8, 8)))


# ------------------------------------------------------------------ CAMs against true masks
def _grid(values: dict[tuple[int, int], float]) -> np.ndarray:
    """A 4x4 array, zero but for ``{(row, column): value}``."""
    array = np.zeros((4, 4))
    for (row, column), value in values.items():
        array[row, column] = value
    return array


MASK_11_12 = _grid({(1, 1): 1, (1, 2): 1})
CAM_CASES = [
    # cam, mask, tolerance, energy inside, pointing hit
    pytest.param(_grid({(1, 1): 1, (1, 2): 0.5, (3, 3): 0.5}), MASK_11_12, 0, 0.75, 1.0, id="peak-inside"),
    pytest.param(_grid({(3, 3): 1, (1, 1): 0.5}), MASK_11_12, 0, 1 / 3, 0.0, id="peak-outside"),
    pytest.param(_grid({(3, 3): 1, (1, 1): 0.5}), MASK_11_12, 2, 1 / 3, 0.0, id="peak-2.24-px-away-tolerance-2"),
    pytest.param(_grid({(3, 3): 1, (1, 1): 0.5}), MASK_11_12, 2.5, 1 / 3, 1.0, id="peak-2.24-px-away-tolerance-2.5"),
    pytest.param(_grid({(1, 1): 1, (1, 2): 1}), MASK_11_12, 0, 1.0, 1.0, id="tie-all-inside"),
    pytest.param(_grid({(1, 1): 1, (3, 0): 1}), MASK_11_12, 0, 0.5, 0.0, id="tie-one-outside"),
    pytest.param(np.ones((4, 4)), np.ones((4, 4)), 0, 1.0, 1.0, id="flat-map-full-mask"),
    pytest.param(np.ones((4, 4)), MASK_11_12, 0, 2 / 16, 0.0, id="flat-map-small-mask"),
    pytest.param(np.zeros((4, 4)), MASK_11_12, 0, 0.0, 0.0, id="zero-map"),
    pytest.param(_grid({(1, 1): 1}), np.zeros((4, 4)), 0, np.nan, np.nan, id="empty-mask"),
]


@pytest.mark.parametrize(("cam", "mask", "tolerance", "energy", "hit"), CAM_CASES)
def test_energy_and_pointing_game(cam, mask, tolerance, energy, hit):
    np.testing.assert_allclose(explain.cam_energy_in_mask(cam[None], mask[None]), [energy])
    np.testing.assert_array_equal(explain.pointing_game(cam[None], mask[None], tolerance), [hit])


def test_cam_scores_leave_out_images_without_defect():
    cams = np.stack([case.values[0] for case in CAM_CASES])
    masks = np.stack([case.values[1] for case in CAM_CASES])
    with_defect = [case.values for case in CAM_CASES if case.id != "empty-mask"]
    scores = explain.cam_scores(cams, masks)  # tolerance 0: the cases with a tolerance are misses here
    assert scores["n"] == len(with_defect) and scores["n_empty_masks"] == 1
    assert scores["energy_in_mask"] == pytest.approx(np.mean([energy for _, _, _, energy, _ in with_defect]))
    assert scores["pointing_hit_rate"] == pytest.approx(np.mean([hit if tol == 0 else 0.0 for _, _, tol, _, hit in with_defect]))
    empty = explain.cam_scores(cams[-1:], masks[-1:])
    assert np.isnan(empty["energy_in_mask"]) and np.isnan(empty["pointing_hit_rate"]) and empty["n"] == 0


@pytest.mark.parametrize(
    ("cams", "masks", "tolerance", "message"),
    [
        (np.zeros((4, 4)), np.zeros((4, 4)), 0, "cams must be \\(N, H, W\\)"),
        (np.zeros((1, 4, 4)), np.zeros((1, 4, 5)), 0, "same shape"),
        (-np.ones((1, 4, 4)), np.zeros((1, 4, 4)), 0, "non-negative"),
        (np.zeros((1, 4, 4)), np.zeros((1, 4, 4)), -1, "tolerance must be"),
    ],
)
def test_cam_mask_errors(cams, masks, tolerance, message):
    with pytest.raises(ValueError, match=message):
        explain.pointing_game(cams, masks, tolerance)


# ------------------------------------------------------------------ embeddings
def _clusters(n: int = 20, dims: int = 2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    points = np.concatenate([rng.normal(0, 0.5, (n, dims)), rng.normal(10, 0.5, (n, dims))])
    return points, np.repeat([0, 1], n)


def test_separated_clusters_score_high_and_shuffled_labels_low():
    points, labels = _clusters()
    scores = explain.embedding_scores(points, labels, k=5)
    assert scores["silhouette"] > 0.8 and scores["knn_accuracy"] == 1.0
    assert scores | {"silhouette": 0} == {"silhouette": 0, "knn_accuracy": 1.0, "majority_rate": 0.5, "n": 40, "k": 5, "n_classes": 2}
    shuffled = explain.embedding_scores(points, np.random.default_rng(1).permutation(labels), k=5)
    assert shuffled["silhouette"] < 0.2 and shuffled["knn_accuracy"] < 0.8


def test_knn_ties_go_to_the_nearest_label_and_duplicates_are_not_self():
    line = np.array([[0.0], [0.9], [2.0], [10.0], [10.9], [12.0]])
    # each point's 2 neighbours have one label each; the nearer one always has the other label
    assert explain.embedding_scores(line, [0, 1, 0, 1, 0, 1], k=2)["knn_accuracy"] == 0.0
    twins = np.array([[0.0, 0.0], [0.0, 0.0], [5.0, 5.0], [5.0, 5.0]])
    assert explain.embedding_scores(twins, ["a", "a", "b", "b"], k=1)["knn_accuracy"] == 1.0


@pytest.mark.parametrize(
    ("labels", "k", "message"),
    [
        ([0, 0, 0, 0], 1, "at least 2 classes"),
        ([0, 1, 0, 1], 4, "more samples than classes and than k"),
        ([0, 1, 0], 1, "labels must be \\(N,\\) = \\(4,\\)"),
        ([0, 1, 0, 1], 0, "k must be an integer >= 1"),
    ],
)
def test_embedding_score_errors(labels, k, message):
    with pytest.raises(ValueError, match=message):
        explain.embedding_scores(np.arange(8.0).reshape(4, 2), labels, k=k)


def test_tsne_is_deterministic_and_keeps_separated_clusters_apart():
    features, labels = _clusters(n=15, dims=60)
    with pytest.warns(UserWarning, match="perplexity 30.0 is too large for 30 samples; using 9.67"):
        first = explain.embed_tsne(features, seed=0)
    second = explain.embed_tsne(features, seed=0, perplexity=5)
    assert first.shape == (30, 2) and first.dtype == np.float32
    np.testing.assert_array_equal(second, explain.embed_tsne(features, seed=0, perplexity=5))
    assert explain.embedding_scores(second, labels)["knn_accuracy"] == 1.0


@pytest.mark.parametrize(
    ("features", "kwargs", "message"),
    [
        (np.zeros(10), {}, "finite \\(N, D\\) array"),
        (np.zeros((3, 2)), {}, "at least 4 samples"),
        (np.zeros((10, 2)), {"perplexity": 0}, "perplexity must be > 0"),
        (np.zeros((10, 2)), {"pca_dims": 0}, "pca_dims must be an integer >= 1"),
        (np.zeros((10, 2)), {"method": "fft"}, "method must be one of \\['exact', 'barnes_hut'\\]"),
    ],
)
def test_tsne_errors(features, kwargs, message):
    with pytest.raises(ValueError, match=message):
        explain.embed_tsne(features, **kwargs)


# ------------------------------------------------------------------ pictures
def test_overlay_blends_grey_and_the_cam_colormap():
    image = np.full((3, 4, 1), 100.0)
    cam = np.linspace(0, 1, 12).reshape(3, 4)
    out = explain.overlay(image, cam, alpha=0.0)
    assert out.shape == (3, 4, 3) and out.dtype == np.uint8 and (out == 100).all()
    colours = np.round(matplotlib.colormaps[explain.CAM_CMAP](cam)[..., :3] * 255)
    np.testing.assert_allclose(explain.overlay(image, cam, alpha=1.0), colours, atol=1)
    half = explain.overlay(image, cam)
    np.testing.assert_allclose(half, 0.55 * 100 + 0.45 * colours, atol=1)


@pytest.mark.parametrize(
    ("image", "cam", "alpha", "message"),
    [
        (np.zeros((3, 4, 3)), np.zeros((3, 4)), 0.5, "grey \\(H, W\\) or \\(H, W, 1\\)"),
        (np.zeros((3, 4)), np.zeros((4, 3)), 0.5, "cam must be \\(H, W\\)"),
        (np.zeros((3, 4)), np.zeros((3, 4)), 2.0, "alpha must be in \\[0, 1\\]"),
    ],
)
def test_overlay_errors(image, cam, alpha, message):
    with pytest.raises(ValueError, match=message):
        explain.overlay(image, cam, alpha=alpha)


def test_plot_cams_grid_with_titles_and_one_colorbar():
    x = _images()
    cams = {"ImageNet": x[..., 0], "radiographs": 1 - x[..., 0]}
    fig = explain.plot_cams(x * 255, cams, masks=x[..., 0], row_titles=["big", "small"])
    panels, colorbars = fig.axes[:6], fig.axes[6:]
    assert len(colorbars) == 1 and colorbars[0].get_ylabel().startswith("class activation")
    assert [ax.get_title() for ax in panels[:3]] == ["image + true mask", "ImageNet", "radiographs"]
    assert [panels[0].get_ylabel(), panels[3].get_ylabel()] == ["big", "small"]
    plt.close(fig)
    with pytest.raises(ValueError, match="cams\\['a'\\] must be \\(N, H, W\\)"):
        explain.plot_cams(x, {"a": x})


def test_plot_embeddings_panels_with_scores_and_legend():
    points, labels = _clusters(n=5)
    scores = explain.embedding_scores(points, labels, k=3)
    fig = explain.plot_embeddings({"ImageNet": points, "radiographs": -points}, labels, {0: "normal", 1: "defect"}, {"ImageNet": scores})
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == [f"ImageNet\nsilhouette {scores['silhouette']:.2f}, 3-NN accuracy 1.00", "radiographs"]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["normal", "defect"]
    plt.close(fig)
