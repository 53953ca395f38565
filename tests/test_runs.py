"""Saved runs: one format for segmenters and classifiers, older folders, and clear refusals."""

import json

import numpy as np
import pytest

from helpers.backend import keras
from helpers.modeling import builders, runs, train

SEGMENTER = dict(arch="unet", backbone="mobilenet", input_shape=(None, None, 1), classes=2, alpha=0.25,
                 decoder_filters=(16, 16, 8, 8, 8))
CLASSIFIER = dict(backbone="mobilenet", input_shape=(32, 32, 1), n_outputs=3, activation="sigmoid", alpha=0.25)
IMAGES = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 1)).astype("float32")


def _model(settings):
    keras.utils.set_random_seed(0)
    build = builders.build_segmenter if "arch" in settings else builders.build_classifier
    return build(**settings)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A saved segmenter run: ``(folder, model)``."""
    folder = tmp_path_factory.mktemp("run")
    model = _model(SEGMENTER)
    runs.save_run(folder, model, SEGMENTER, {"score": np.float32(0.5), "per_class": {"a": 1}})
    return folder, model


@pytest.mark.parametrize("settings, builder", [(SEGMENTER, "segmenter"), (CLASSIFIER, "classifier")])
def test_a_saved_run_loads_back_with_the_same_outputs(settings, builder, tmp_path):
    model = _model(settings)
    record = runs.save_run(tmp_path, model, settings, {"auc": 0.75})
    assert record == tmp_path / runs.RUN_FILE
    run = runs.load_run(tmp_path)
    assert run.builder == builder and run.format == runs.FORMAT and run.metrics == {"auc": 0.75}
    assert run.settings["input_shape"] == list(settings["input_shape"])  # JSON lists
    np.testing.assert_allclose(run.model(IMAGES).numpy(), model(IMAGES).numpy(), atol=1e-6)


def test_run_json_records_format_builder_settings_metrics_and_weights(saved):
    folder, _ = saved
    record = json.loads((folder / runs.RUN_FILE).read_text())
    assert record == {"format": 1, "builder": "segmenter", "weights": runs.WEIGHTS_FILE,
                      "settings": {**SEGMENTER, "input_shape": [None, None, 1], "decoder_filters": [16, 16, 8, 8, 8]},
                      "metrics": {"score": 0.5, "per_class": {"a": 1}}}
    assert (folder / runs.WEIGHTS_FILE).is_file() and not list(folder.glob(".tmp*"))


def test_settings_only_without_building(saved, tmp_path):
    folder, _ = saved
    (tmp_path / runs.RUN_FILE).write_bytes((folder / runs.RUN_FILE).read_bytes())  # no weights beside it
    run = runs.load_run(tmp_path, build=False)
    assert run.model is None and run.settings["arch"] == "unet" and run.log is None


def test_another_weights_file_of_the_folder_and_the_log(saved, tmp_path):
    folder, model = saved
    for name in (runs.RUN_FILE, runs.WEIGHTS_FILE):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    other = _model(SEGMENTER)
    keras.utils.set_random_seed(1)
    other.set_weights([w + np.float32(0.01) for w in other.get_weights()])
    other.save_weights(tmp_path / train.LAST)
    (tmp_path / train.LOG).write_text("epoch,loss\n0,1.5\n1,1.25\n")
    run = runs.load_run(tmp_path, weights=train.LAST)
    np.testing.assert_allclose(run.model(IMAGES).numpy(), other(IMAGES).numpy(), atol=1e-6)
    assert list(run.log["loss"]) == [1.5, 1.25]
    with pytest.raises(ValueError, match="must name a file in"):
        runs.load_run(tmp_path, weights="../elsewhere.h5")


def test_older_folders_with_build_json_still_load(saved, tmp_path):
    folder, model = saved
    model.save_weights(tmp_path / train.BEST)
    (tmp_path / runs.LEGACY_BUILD_FILE).write_text(json.dumps({**SEGMENTER, "input_shape": [None, None, 1]}))
    run = runs.load_run(tmp_path)
    assert run.format == 0 and run.metrics == {} and run.builder == "segmenter"
    np.testing.assert_allclose(run.model(IMAGES).numpy(), model(IMAGES).numpy(), atol=1e-6)


def test_weights_are_written_before_the_record(tmp_path, monkeypatch):
    model = _model(CLASSIFIER)

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(model, "save_weights", fail)
    with pytest.raises(OSError, match="disk full"):
        runs.save_run(tmp_path, model, CLASSIFIER)
    assert not (tmp_path / runs.RUN_FILE).exists()


def test_settings_that_json_cannot_hold_are_refused_before_writing(tmp_path):
    with pytest.raises(ValueError, match="cannot record object"):
        runs.save_run(tmp_path, _model(CLASSIFIER), {**CLASSIFIER, "callback": object()})
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "record, message",
    [
        ({"format": 2, "builder": "segmenter", "settings": {}, "metrics": {}, "weights": "w.h5"},
         "format 2 is newer than this version reads"),
        ({"format": 0, "builder": "segmenter", "settings": {}, "metrics": {}, "weights": "w.h5"}, "format 0 is not"),
        ({"builder": "segmenter"}, "integer 'format'"),
        ([1, 2], "not a run record"),
        ({"format": 1, "builder": "detector", "settings": {}, "metrics": {}, "weights": "w.h5"},
         "builder 'detector'; allowed: segmenter, classifier"),
        ({"format": 1, "builder": "segmenter", "settings": [], "metrics": {}, "weights": "w.h5"}, "'settings' must be"),
        ({"format": 1, "builder": "segmenter", "settings": {}, "metrics": {}, "weights": "../w.h5"}, "must name a file"),
    ],
)
def test_bad_run_records_are_one_line_errors_naming_the_file(record, message, tmp_path):
    (tmp_path / runs.RUN_FILE).write_text(json.dumps(record))
    with pytest.raises(ValueError, match=message) as caught:
        runs.load_run(tmp_path, build=False)
    assert str(caught.value).startswith(str(tmp_path / runs.RUN_FILE)) and "\n" not in str(caught.value)


def test_settings_that_do_not_build_or_weights_that_do_not_fit(saved, tmp_path):
    folder, _ = saved
    (tmp_path / runs.RUN_FILE).write_text(json.dumps({
        "format": 1, "builder": "segmenter", "settings": {**SEGMENTER, "input_shape": [None, None, 1], "colour": True},
        "metrics": {}, "weights": runs.WEIGHTS_FILE}))
    (tmp_path / runs.WEIGHTS_FILE).write_bytes((folder / runs.WEIGHTS_FILE).read_bytes())
    with pytest.raises(ValueError, match=r"run\.json: cannot build the segmenter from its settings:.*colour"):
        runs.load_run(tmp_path)
    runs.save_run(tmp_path, _model(CLASSIFIER), {**SEGMENTER, "classes": 2})  # classifier weights, segmenter settings
    with pytest.raises(ValueError, match=r"model\.weights\.h5: does not fit the model built from"):
        runs.load_run(tmp_path)


def test_folders_that_hold_no_run_say_what_they_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="run folder not found"):
        runs.load_run(tmp_path / "missing")
    (tmp_path / "scores.json").write_text("{}")
    with pytest.raises(ValueError, match=r"not a saved run .*found \['scores.json'\]; a transfer run from before run.json"):
        runs.load_run(tmp_path)
    assert not runs.is_run(tmp_path)


def test_metrics_found_after_training_are_merged_into_the_record(saved, tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    for name in (runs.RUN_FILE, runs.WEIGHTS_FILE):
        (folder / name).write_bytes((saved[0] / name).read_bytes())
    tuned = {"1": {"threshold": np.float64(0.4), "min_area": np.int64(100)}}
    runs.add_metrics(folder, {"postprocessing": tuned, "score": 0.75})
    run = runs.load_run(folder, build=False)
    assert run.metrics == {"score": 0.75, "per_class": {"a": 1}, "postprocessing": {"1": {"threshold": 0.4, "min_area": 100}}}


def test_metrics_are_not_added_where_no_run_was_saved(tmp_path):
    with pytest.raises(ValueError, match="no run.json to add metrics to"):
        runs.add_metrics(tmp_path, {"score": 1.0})
    (tmp_path / runs.RUN_FILE).write_text('{"format": 1}')
    with pytest.raises(ValueError, match="'builder' must be"):
        runs.add_metrics(tmp_path, {"score": 1.0})
    assert json.loads((tmp_path / runs.RUN_FILE).read_text()) == {"format": 1}
