"""Speed and memory probes: they measure something finite and refuse bad arguments (no timing assertions)."""

import math

import numpy as np
import pytest

from helpers.studies import profiling
from helpers.backend import keras, tf


@pytest.fixture(scope="module")
def tiny_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 1))
    hidden = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    outputs = keras.layers.Conv2D(2, 1, activation="sigmoid")(hidden)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="binary_crossentropy")
    return model


def _batch(batch_size=4):
    images = np.arange(batch_size * 16 * 16, dtype=np.float32).reshape(batch_size, 16, 16, 1) % 255
    masks = np.zeros((batch_size, 16, 16, 2), np.float32)
    masks[:, 4:8, 4:8, 0] = 1
    return images, masks


def test_step_rate_is_positive(tiny_model):
    images, masks = _batch()
    rate = profiling.step_rate(tiny_model, images, masks, steps=3, warmup=1)
    assert math.isfinite(rate) and rate > 0


def test_fit_rate_counts_the_batches_of_the_pipeline(tiny_model):
    images, masks = _batch(8)
    dataset = tf.data.Dataset.from_tensor_slices((images, masks)).batch(4, drop_remainder=True)
    rate = profiling.fit_rate(tiny_model, dataset, steps=4, warmup=1)
    assert math.isfinite(rate) and rate > 0


def test_training_rates_report_consistent_ratios(tiny_model):
    images, masks = _batch(8)
    dataset = tf.data.Dataset.from_tensor_slices((images, masks)).batch(4, drop_remainder=True)
    rates = profiling.training_rates(tiny_model, dataset, steps=2, rounds=2)
    assert all(math.isfinite(value) and value > 0 for value in rates.values())
    assert rates["pipeline_over_step"] == pytest.approx(rates["pipeline_images_per_s"] / rates["step_images_per_s"])
    assert rates["end_to_end_over_step"] == pytest.approx(rates["end_to_end_images_per_s"] / rates["step_images_per_s"])


def test_fit_rate_needs_a_static_batch_size(tiny_model):
    images, masks = _batch(6)
    dataset = tf.data.Dataset.from_tensor_slices((images, masks)).batch(4)
    with pytest.raises(ValueError, match="static"):
        profiling.fit_rate(tiny_model, dataset, steps=1)


@pytest.mark.parametrize("steps, warmup", [(0, 1), (2, 0), (1.5, 1)])
def test_rates_refuse_bad_step_counts(tiny_model, steps, warmup):
    images, masks = _batch()
    with pytest.raises(ValueError):
        profiling.step_rate(tiny_model, images, masks, steps=steps, warmup=warmup)


@pytest.mark.slow  # in the full suite, not the fast tier
def test_peak_training_memory_of_a_small_unet():
    settings = {"arch": "unet", "backbone": "resnet18", "classes": 2, "input_shape": (None, None, 1)}
    result = profiling.peak_training_memory(settings, batch_size=2, image_size=(64, 64), steps=1)
    assert result["parameters"] > 1_000_000
    assert 0 < result["after_import_mib"] <= result["peak_mib"]
    assert result["training_mib"] == pytest.approx(result["peak_mib"] - result["after_import_mib"])


@pytest.mark.slow  # in the full suite, not the fast tier
def test_peak_training_memory_reports_the_childs_error():
    with pytest.raises(RuntimeError, match="unknown arch"):
        profiling.peak_training_memory({"arch": "segnet", "backbone": "resnet18"}, batch_size=1, image_size=(32, 32), steps=1)


@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"image_size": (64,)}, {"image_size": (0, 64)}, {"steps": 0}])
def test_peak_training_memory_checks_arguments(kwargs):
    arguments = {"batch_size": 1, "image_size": (32, 32), "steps": 1, **kwargs}
    with pytest.raises(ValueError):
        profiling.peak_training_memory({"arch": "unet", "backbone": "resnet18"}, **arguments)


def _tiny_segmenter(filters: int) -> keras.Model:
    inputs = keras.Input((16, 16, 1))
    hidden = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Conv2D(2, 1, activation="sigmoid", dtype="float32")(hidden))


def test_precision_rates_train_the_model_under_each_policy_and_restore_float32():
    rates = profiling.precision_rates(_tiny_segmenter, {"filters": 4}, batch_size=2, image_size=(16, 16), steps=1)
    assert set(rates) == {"float32", "mixed_bfloat16"} and min(rates.values()) > 0
    assert keras.mixed_precision.global_policy().name == "float32"


@pytest.mark.slow
def test_pipeline_scaling_times_each_engine_in_a_pinned_child(tmp_path):
    from helpers.data.synth import steel

    steel.make_steel_dataset(tmp_path / "steel", n_images=8, height=64, width=256, seed=0, progress=False)
    rows = profiling.pipeline_scaling(tmp_path / "steel", crop_size=(32, 128), cores=(1,), batch_size=4, n_batches=2, warmup=1)
    assert [(r["engine"], r["cores"]) for r in rows] == [("albumentations", 1), ("tf", 1)]
    for row in rows:
        assert row["images_per_s"] > 0 and row["speedup"] == 1.0 and row["cpu_ms_per_image"] > 0
        assert row["cores_used"] == pytest.approx(row["cpu_ms_per_image"] * row["images_per_s"] / 1000)


@pytest.mark.parametrize("kwargs, message", [
    ({"cores": (0,)}, "cores"), ({"cores": (10_000,)}, "cores"), ({"engines": ("auto",)}, "engines"),
    ({"crop_size": (0, 8)}, "crop_size"), ({"n_batches": 0}, "n_batches"),
])
def test_pipeline_scaling_checks_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        profiling.pipeline_scaling(tmp_path, **kwargs)


@pytest.mark.slow  # three child processes, each importing TensorFlow
def test_shard_reading_rates_time_files_and_shards_in_pinned_children(tmp_path):
    rows = profiling.shard_reading_rates(tmp_path, n_images=12, image_size=(64, 64), cores=(1,), batch_size=4, n_batches=2,
                                         warmup=1, progress=False)
    assert [(r["source"], r["engine"], r["cores"]) for r in rows] == [(*pair, 1) for pair in profiling.SHARD_SOURCES]
    for row in rows:
        assert row["images_per_s"] > 0 and row["cpu_ms_per_image"] > 0
        assert row["cores_used"] == pytest.approx(row["cpu_ms_per_image"] * row["images_per_s"] / 1000)
        assert row["vs_files_albumentations"] == pytest.approx(row["images_per_s"] / rows[0]["images_per_s"])
    from helpers.data import records

    (shards,) = [p for p in tmp_path.iterdir() if p.name.endswith("-shards")]
    assert records.verify(shards)["n_records"] == 12  # the corpus and its shards stay for the next call


@pytest.mark.parametrize("kwargs, message", [
    ({"n_images": 0}, "n_images"), ({"image_size": (32, 32)}, "image_size"), ({"cores": (0,)}, "cores"),
    ({"sources": (("shards", "albumentations"),)}, "sources must be one of"), ({"sources": ()}, "at least one pair"),
    ({"batch_size": 20}, r"batch_size must be an integer in 1..10"), ({"n_batches": 0}, "n_batches"), ({"warmup": 0}, "warmup"),
])
def test_shard_reading_rates_check_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        profiling.shard_reading_rates(tmp_path, **{"n_images": 10, "batch_size": 4, **kwargs})
    assert list(tmp_path.iterdir()) == []  # checked before anything is generated
