"""Transfer experiments on a tiny hand-made dataset: subsets, initialisations, one fold per task, resumed sweeps."""

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers.core import files, rle, severstal
from helpers.data import radiographs
from helpers.modeling import builders, runs, weight_files
from helpers.studies import transfer

SIZE = 32
TINY = transfer.FoldRecipe(backbone="mobilenet", image_size=(SIZE, SIZE), epochs=2, batch_size=2, options={"alpha": 0.25})


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    """12 grey 32x32 patches in 4 groups; the even ones hold a bright square defect (one class)."""
    root = tmp_path_factory.mktemp("transfer") / "patches"
    rows = {}
    for index in range(12):
        image = np.full((SIZE, SIZE), 60 + 5 * (index % 3), np.uint8)
        mask = np.zeros((SIZE, SIZE), np.uint8)
        if index % 2 == 0:
            top, left = 4 + index, 6 + index // 2
            image[top:top + 6, left:left + 6] = 220
            mask[top:top + 6, left:left + 6] = 1
        files.write_image(root / "train_images" / f"p{index:02d}.png", image)
        rows[f"p{index:02d}.png"] = {1: rle.encode(mask)}
    wide = pd.DataFrame.from_dict(rows, orient="index")
    wide.index.name = "ImageId"
    severstal.write_train_csv(wide, root / "train.csv")
    severstal.write_classes(root, {1: "defect"})
    wide = severstal.read_dataset(root)
    folds = pd.Series([(i // 3) % 2 for i in range(12)], index=wide.index, name="fold")
    return root, wide, folds


@pytest.mark.parametrize("fraction, expected", [(0.25, 4), (0.5, 8), (0.75, 12), (1.0, 16)])
def test_training_subset_keeps_the_balance_and_nests(fraction, expected):
    ids = [f"i{k}" for k in range(16)]
    labels = pd.Series([k % 2 for k in range(16)], index=ids)
    subset = transfer.training_subset(ids, labels, fraction, seed=3)
    assert len(subset) == expected and labels[subset].sum() == expected // 2
    assert set(transfer.training_subset(ids, labels, 0.25, seed=3)) <= set(subset)
    assert subset == transfer.training_subset(ids, labels, fraction, seed=3)


@pytest.mark.parametrize("fraction", [0, 1.5, -0.1])
def test_training_subset_refuses_bad_fractions(fraction):
    with pytest.raises(ValueError, match="fraction"):
        transfer.training_subset(["a"], pd.Series([0], index=["a"]), fraction)


@pytest.fixture(scope="module")
def radiograph_weights(tmp_path_factory):
    """Encoder weights of a 'pre-trained' multi-label classifier (deterministic values)."""
    model = builders.build_classifier("mobilenet", (SIZE, SIZE, 1), n_outputs=3, alpha=0.25)
    for layer in builders.encoder_layers(model, "mobilenet"):
        if layer.weights and layer.name != builders.STEM_NAME:
            layer.set_weights([np.full(w.shape, 0.01 * (i + 1), np.float32) for i, w in enumerate(layer.get_weights())])
    path = tmp_path_factory.mktemp("weights") / "radiograph-mobilenet.h5"
    count = builders.save_encoder_weights(model, path, "mobilenet")
    return path, count


@pytest.mark.parametrize("task", transfer.TASKS)
def test_radiograph_initialisation_loads_every_encoder_layer(task, radiograph_weights):
    path, saved = radiograph_weights
    model, loaded, settings = transfer.build_model(task, "radiograph", transfer.FoldRecipe(**{**vars(TINY), "radiograph_weights": path}))
    assert loaded == saved > 20 and settings["alpha"] == 0.25 and ("arch" in settings) == (task == "segmentation")
    depthwise = model.get_layer("conv_dw_1").get_weights()[0]
    np.testing.assert_array_equal(depthwise, np.full(depthwise.shape, 0.01, np.float32))


def test_an_imagenet_file_by_path_initialises_the_encoder_and_is_recorded(radiograph_weights, tmp_path):
    path, saved = radiograph_weights  # any encoder file stands in for an int8-recovered ImageNet one
    recipe = transfer.FoldRecipe(**{**vars(TINY), "imagenet_weights": path, "encoder_batchnorm": "frozen"})
    model, loaded, _ = transfer.build_model("classification", "imagenet", recipe)
    depthwise = model.get_layer("conv_dw_1").get_weights()[0]
    np.testing.assert_array_equal(depthwise, np.full(depthwise.shape, 0.01, np.float32))
    assert recipe.record("imagenet")["imagenet_weights"] == str(path) and "imagenet_weights" not in recipe.record("random")
    assert recipe.record("random")["encoder_batchnorm"] == "frozen"
    assert transfer.FoldRecipe.from_record(recipe.record("imagenet")) == dataclasses.replace(recipe, weights_dir=None)
    found = transfer.check_initialisations(["imagenet"], "mobilenet", (SIZE, SIZE), imagenet_weights=path, alpha=0.25)
    assert found["available"] == ["imagenet"] and found["imagenet_file"] == str(path)
    found = transfer.check_initialisations(["imagenet"], "mobilenet", (SIZE, SIZE), imagenet_weights=tmp_path / "no.h5", alpha=0.25)
    assert "imagenet_weights file not found" in found["skipped"]["imagenet"]


def test_a_default_recipe_records_no_later_field():  # runs recorded before those fields existed still resume
    record = TINY.record("imagenet")
    assert "imagenet_weights" not in record and "encoder_batchnorm" not in record and "bn_reestimate_batches" not in record
    assert dataclasses.replace(TINY, bn_reestimate_batches=3).record("random")["bn_reestimate_batches"] == 3
    with pytest.raises(ValueError, match=r"encoder_batchnorm must be one of \['trainable', 'frozen'\]"):
        transfer.FoldRecipe(encoder_batchnorm="fixed")


def test_initialisation_errors_name_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.delenv(weight_files.WEIGHTS_DIR_ENV, raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # no Keras cache with the file either
    with pytest.raises(FileNotFoundError, match="notebook 05"):
        transfer.build_model("classification", "radiograph", TINY)
    with pytest.raises(FileNotFoundError, match="mobilenet_2_5_224_tf_no_top.h5"):
        transfer.build_model("classification", "imagenet",
                             transfer.FoldRecipe(image_size=(224, 224), weights_dir=tmp_path, options={"alpha": 0.25}))
    with pytest.raises(ValueError, match=r"init must be one of \['random', 'imagenet', 'radiograph'\]"):
        transfer.build_model("classification", "scratch", TINY)
    with pytest.raises(ValueError, match=r"task must be one of \['classification', 'segmentation'\]"):
        transfer.build_model("detection", "random", TINY)


@pytest.mark.parametrize(
    "field, value, message",
    [("epochs", 0, "epochs must be an integer >= 1"), ("image_size", (32,), "image_size"),
     ("bn_momentum", 1.0, r"bn_momentum must be in \[0, 1\)"), ("seed", -1, "seed"),
     ("bn_reestimate_batches", -1, "bn_reestimate_batches must be an integer >= 0")],
)
def test_fold_recipes_are_checked_when_made(field, value, message):
    with pytest.raises(ValueError, match=message):
        transfer.FoldRecipe(**{field: value})


def test_a_recipe_records_json_values_and_only_the_weight_files_its_init_reads():
    recipe = transfer.FoldRecipe(image_size=[64, 64], crop_size=[32, 32], weights_dir="/w", radiograph_weights="/r.h5",
                                 options={"alpha": 0.25, "decoder_filters": [8, 8, 8, 8, 8]})
    assert recipe.image_size == (64, 64) and recipe.options["decoder_filters"] == (8, 8, 8, 8, 8)
    record = recipe.record("random")
    assert record["image_size"] == [64, 64] and record["decoder_filters"] == [8, 8, 8, 8, 8] and record["alpha"] == 0.25
    assert "weights_dir" not in record and "radiograph_weights" not in record and "options" not in record
    assert recipe.record("imagenet")["weights_dir"] == "/w" and recipe.record("radiograph")["radiograph_weights"] == "/r.h5"
    assert json.loads(json.dumps(record)) == record
    assert transfer.FoldRecipe.from_record(recipe.record("imagenet") | {"train_ids": ["a"]}) == dataclasses.replace(
        recipe, radiograph_weights=None)


@pytest.mark.parametrize("task, score, crop", [("classification", "f1", None), ("segmentation", "miou", None),
                                               ("segmentation", "miou", (32, 32))])
@pytest.mark.slow  # in the full suite, not the fast tier
def test_run_fold_scores_every_epoch_and_reports_the_last(task, score, crop, tiny_dataset, tmp_path):
    root, wide, folds = tiny_dataset
    ids = list(wide.index) if task == "classification" else list(wide.index[radiographs.defect_labels(wide) == 1])
    train_ids, val_ids = ids[: len(ids) // 2], ids[len(ids) // 2:]
    recipe = transfer.FoldRecipe(**{**vars(TINY), "crop_size": crop})
    scores, log = transfer.run_fold(task, "random", root, wide, train_ids, val_ids, tmp_path / "run", recipe)
    assert len(log) == 2 and f"val_{score}" in log and log[f"val_{score}"].notna().all()
    assert scores[score] == pytest.approx(log[f"val_{score}"].iloc[-1])
    assert scores["n_train"] == len(train_ids) and scores["n_val"] == len(val_ids) and scores["encoder_layers_loaded"] == 0
    assert scores["bn_momentum"] == transfer.BN_MOMENTUM == 0.9
    run = runs.load_run(tmp_path / "run")
    assert run.metrics[score] == pytest.approx(scores[score]) and run.settings == json.loads(json.dumps(
        transfer.model_settings(task, recipe)))
    images = np.zeros((1, SIZE, SIZE, 1), np.float32)
    assert run.model.predict(images, verbose=0).shape == ((1, 2) if task == "classification" else (1, SIZE, SIZE, 1))


def test_run_fold_reestimates_batchnorm_on_its_training_batches_when_asked(tiny_dataset, tmp_path, monkeypatch):
    root, wide, _ = tiny_dataset
    calls = []
    monkeypatch.setattr(transfer.builders, "reestimate_batchnorm", lambda model, batches, n: calls.append((model.name, n)) or n)
    recipe = dataclasses.replace(TINY, epochs=1, bn_reestimate_batches=2)
    transfer.run_fold("classification", "random", root, wide, list(wide.index[:6]), list(wide.index[6:]), tmp_path / "run", recipe)
    assert len(calls) == 1 and calls[0][1] == 2


def test_run_fold_times_every_epoch_of_a_run_resumed_from_an_earlier_session(tiny_dataset, tmp_path, monkeypatch):
    root, wide, _ = tiny_dataset
    # the log of a run whose first epoch ran in an earlier session: 40 s then, 2 s in this call
    resumed_log = pd.DataFrame({"epoch": [0, 1], "epoch_seconds": [40.0, 2.0], "val_accuracy": [0.5, 0.5],
                                "val_precision": [0.5, 0.5], "val_recall": [0.5, 0.5], "val_f1": [0.5, 0.5]})
    monkeypatch.setattr(transfer.train, "fit", lambda *args, **kwargs: resumed_log)
    scores, _ = transfer.run_fold("classification", "random", root, wide, list(wide.index[:6]), list(wide.index[6:]),
                                  tmp_path / "run", TINY)
    assert scores["train_seconds"] == pytest.approx(42.0)
    assert 0 < scores["session_seconds"] < 40.0


def test_run_fold_refuses_crops_for_classification(tiny_dataset, tmp_path):
    root, wide, _ = tiny_dataset
    with pytest.raises(ValueError, match="crop_size is for segmentation"):
        transfer.run_fold("classification", "random", root, wide, list(wide.index[:4]), list(wide.index[4:]), tmp_path,
                          transfer.FoldRecipe(crop_size=(16, 16), options={"alpha": 0.25}))


@pytest.mark.slow  # in the full suite, not the fast tier
def test_cross_validate_runs_each_combination_once_then_resumes(tiny_dataset, tmp_path, monkeypatch):
    root, wide, folds = tiny_dataset
    settings = {**vars(TINY), "epochs": 1}
    scores, logs = transfer.cross_validate("classification", ["random"], root, wide, folds, tmp_path,
                                           transfer.FoldRecipe(**settings), fractions=(0.5, 1.0), progress=False)
    assert len(scores) == 4 and sorted(scores["fold"].unique()) == [0, 1]
    assert scores.groupby("fraction")["n_train"].first().to_dict() == {0.5: 3, 1.0: 6}
    assert set(logs.columns) >= {"init", "fold", "fraction", "epoch", "val_f1"}

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(transfer, "run_fold", no_training)
    again, _ = transfer.cross_validate("classification", ["random"], root, wide, folds, tmp_path,
                                       transfer.FoldRecipe(**settings), fractions=(0.5, 1.0), progress=False)
    pd.testing.assert_frame_equal(again, scores)
    with pytest.raises(ValueError, match=r"fold0 was run with other settings \(epochs\)"):
        transfer.cross_validate("classification", ["random"], root, wide, folds, tmp_path,
                                transfer.FoldRecipe(**(settings | {"epochs": 2})), fractions=(0.5, 1.0), progress=False)
    with pytest.raises(ValueError, match=r"fold0 was run with other settings \(bn_momentum\)"):
        transfer.cross_validate("classification", ["random"], root, wide, folds, tmp_path,
                                transfer.FoldRecipe(**(settings | {"bn_momentum": 0.99})), fractions=(0.5, 1.0), progress=False)
    with pytest.raises(ValueError, match=r"other settings \(seed, train_ids\)"):
        transfer.cross_validate("classification", ["random"], root, wide, folds, tmp_path,
                                transfer.FoldRecipe(**(settings | {"seed": 1})), fractions=(0.5,), progress=False)
    legacy = transfer.run_path(tmp_path, "classification", "random", 0.5, 0)
    (legacy / runs.RUN_FILE).unlink()
    (legacy / "scores.json").write_text("{}")  # a run of the version before run.json
    with pytest.raises(ValueError, match="a transfer run from before run.json: delete it to train again"):
        transfer.cross_validate("classification", ["random"], root, wide, folds, tmp_path,
                                transfer.FoldRecipe(**settings), fractions=(0.5, 1.0), progress=False)


def test_fold_summary_formats_mean_and_std():
    scores = pd.DataFrame({"init": ["a", "a", "b", "b"], "f1": [0.5, 0.7, 1.0, 1.0]})
    table = transfer.fold_summary(scores, ["f1"])
    assert table.loc["a", "f1"] == "0.6000 ± 0.1414" and table.loc["b", "f1"] == "1.0000 ± 0.0000"
    assert table["n"].tolist() == [2, 2]


def test_fold_summary_of_one_fold_gives_the_score_without_a_spread():
    scores = pd.DataFrame({"init": ["a", "b", "b"], "f1": [0.37, 0.5, 0.7]})
    table = transfer.fold_summary(scores, ["f1"])
    assert table.loc["a", "f1"] == "0.3700" and table.loc["b", "f1"] == "0.6000 ± 0.1414"


@pytest.mark.parametrize("dataset, task, init, column, expected", [
    ("gdxray-weld", "classification", "random", "paper F1", 0.8529),
    ("gdxray-weld", "segmentation", "radiograph:chest-large", "paper mIoU %", 73.92),
    ("zju-casting", "classification", "imagenet", "paper accuracy %", 89.56),
    ("zju-casting", "segmentation", "radiograph", "paper recall %", 54.93),
])
def test_with_paper_figures_adds_the_papers_row_of_each_initialisation(dataset, task, init, column, expected):
    table = pd.DataFrame({"f1": ["0.5"]}, index=pd.Index([init], name="init"))
    assert transfer.with_paper_figures(table, task, dataset).loc[init, column] == expected


def test_with_paper_figures_names_the_allowed_datasets():
    with pytest.raises(ValueError, match="gdxray-weld"):
        transfer.with_paper_figures(pd.DataFrame(index=["random"]), "classification", "neu-seg")


def _manifest(folder, name, weights, mtime, **fields):
    path = folder / f"{name}.json"
    path.write_text(json.dumps({"weights": str(weights), **fields}))
    os.utime(path, (mtime, mtime))
    return path


def test_find_radiograph_encoder_takes_the_newest_matching_manifest(tmp_path):
    _manifest(tmp_path, "old", "old.h5", 100, backbone="mobilenet", alpha=0.25)
    _manifest(tmp_path, "new", "new.h5", 200, backbone="mobilenet", alpha=0.25)
    _manifest(tmp_path, "wide", "wide.h5", 300, backbone="mobilenet", alpha=1.0)
    _manifest(tmp_path, "resnet", "resnet.h5", 400, backbone="resnet18")
    assert transfer.find_radiograph_encoder(tmp_path, "mobilenet", alpha=0.25)["weights"] == "new.h5"
    assert transfer.find_radiograph_encoder(tmp_path, "resnet18")["weights"] == "resnet.h5"
    assert transfer.find_radiograph_encoder(tmp_path, "resnet34") is None
    assert transfer.find_radiograph_encoder(tmp_path / "absent", "resnet18") is None


def test_check_initialisations_says_what_is_missing(tmp_path, monkeypatch, radiograph_weights):
    monkeypatch.delenv(weight_files.WEIGHTS_DIR_ENV, raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    inits = ["random", "imagenet", "radiograph"]
    found = transfer.check_initialisations(inits, "mobilenet", (SIZE, SIZE), weights_dir=tmp_path, pretrained_dir=tmp_path, alpha=0.25)
    assert found["available"] == ["random"]
    assert "mobilenet_2_5_224_tf_no_top.h5" in found["skipped"]["imagenet"]
    assert "run notebook 05" in found["skipped"]["radiograph"]
    path, _ = radiograph_weights
    _manifest(tmp_path, "chest", path, 100, backbone="mobilenet", alpha=0.25, corpus="chest-xray")
    found = transfer.check_initialisations(inits, "mobilenet", (SIZE, SIZE), weights_dir=tmp_path, pretrained_dir=tmp_path, alpha=0.25)
    assert found["available"] == ["random", "radiograph"] and found["radiograph_weights"] == str(path)
    assert found["manifest"]["corpus"] == "chest-xray"


def test_a_garbled_manifest_is_named(tmp_path):
    """Before: a bare JSONDecodeError naming no file."""
    (tmp_path / "chest.json").write_text('{"backbone": "mobilenet", "weights": "ch')
    with pytest.raises(ValueError, match=r"chest\.json line 1: not valid JSON"):
        transfer.find_radiograph_encoder(tmp_path, "mobilenet", alpha=0.25)


def test_holdout_folds_validate_on_val_and_train_on_train_only(tiny_dataset, tmp_path, monkeypatch):
    root, wide, _ = tiny_dataset
    split = pd.Series(["val" if k % 4 == 0 else "train" for k in range(len(wide))], index=wide.index)
    folds = transfer.holdout_folds(split)
    assert folds.to_dict() == {i: (0 if s == "val" else -1) for i, s in split.items()}
    seen = []

    def record_fold(task, init, data_dir, wide_table, train_ids, val_ids, run_dir, recipe):
        seen.append((sorted(train_ids), sorted(val_ids)))
        return {"f1": 0.5}, pd.DataFrame({"epoch": [0], "val_f1": [0.5]})

    monkeypatch.setattr(transfer, "run_fold", record_fold)
    scores, _ = transfer.cross_validate("classification", ["random"], root, wide, folds, tmp_path, TINY, progress=False)
    assert scores["fold"].tolist() == [0]
    assert seen == [(sorted(split.index[split == "train"]), sorted(split.index[split == "val"]))]


def test_sensitivity_grid_runs_one_fold_per_cell_with_its_recipe(tiny_dataset, tmp_path, monkeypatch):
    root, wide, folds = tiny_dataset
    seen = []

    def record_fold(task, init, data_dir, wide_table, train_ids, val_ids, run_dir, recipe):
        seen.append((recipe.batch_size, recipe.learning_rate, sorted(val_ids), Path(run_dir).relative_to(tmp_path).parts[0]))
        return {"f1": recipe.learning_rate * recipe.batch_size}, pd.DataFrame({"epoch": [0], "val_f1": [0.5]})

    monkeypatch.setattr(transfer, "run_fold", record_fold)
    grid = transfer.sensitivity_grid("classification", ["random"], root, wide, folds, tmp_path, TINY,
                                     batch_sizes=[2, 4], learning_rates=[0.01, 0.001], fold=1, progress=False)
    fold_one = sorted(folds.index[folds == 1])
    assert seen == [(2, 0.01, fold_one, "b2-lr0.01"), (2, 0.001, fold_one, "b2-lr0.001"),
                    (4, 0.01, fold_one, "b4-lr0.01"), (4, 0.001, fold_one, "b4-lr0.001")]
    assert grid[["batch_size_asked", "learning_rate", "fold"]].values.tolist() == [[2, 0.01, 1], [2, 0.001, 1], [4, 0.01, 1], [4, 0.001, 1]]
    assert grid["f1"].tolist() == pytest.approx([0.02, 0.002, 0.04, 0.004])


@pytest.mark.parametrize("options, message", [(dict(fold=3), r"fold must be one of \[0, 1\], got 3"),
                                              (dict(batch_sizes=[0]), "batch_sizes"),
                                              (dict(learning_rates=[]), "at least one value")])
def test_sensitivity_grid_checks_its_arguments(tiny_dataset, tmp_path, options, message):
    root, wide, folds = tiny_dataset
    with pytest.raises(ValueError, match=message):
        transfer.sensitivity_grid("classification", ["random"], root, wide, folds, tmp_path, TINY, progress=False, **options)


@pytest.mark.parametrize("values, message", [(["train", "test"], "must be 'train' or 'val'"),
                                             (["train", "train"], "needs both train and val")])
def test_holdout_folds_refuse_other_splits(values, message):
    with pytest.raises(ValueError, match=message):
        transfer.holdout_folds(pd.Series(values, index=["a", "b"]))


@pytest.mark.parametrize("init, kind", [("random", "random"), ("imagenet", "imagenet"), ("radiograph", "radiograph"),
                                        ("radiograph:chest-large", "radiograph"), ("radiograph:n1000_v2.1", "radiograph")])
def test_named_radiograph_initialisations_are_radiograph_kind(init, kind):
    assert transfer.init_kind(init) == kind
    assert transfer.run_path("out", "classification", init, 1.0, 0).parts[2] == init.replace(":", "-")


@pytest.mark.parametrize("init", ["radiograph:", "imagenet:x", "radiograph:../up", "radiograph:a b", "scratch"])
def test_other_initialisation_names_are_refused(init):
    with pytest.raises(ValueError, match=r"init must be one of \['random', 'imagenet', 'radiograph'\] or 'radiograph:<label>'"):
        transfer.check_init(init)


def test_each_named_radiograph_encoder_trains_with_its_own_file(tiny_dataset, tmp_path, monkeypatch, radiograph_weights):
    root, wide, folds = tiny_dataset
    path, _ = radiograph_weights
    (tmp_path / "small.h5").write_bytes(path.read_bytes())
    files.atomic_write_json(tmp_path / "small.json", {"n_train": 240, "corpus": "chest-xray"})
    encoders = {"radiograph:small": str(tmp_path / "small.h5"), "radiograph:large": str(path)}
    found = transfer.check_initialisations(["random", "radiograph:small", "radiograph:large", "radiograph:absent"], "mobilenet",
                                           (SIZE, SIZE), radiograph_encoders=encoders, alpha=0.25)
    assert found["available"] == ["random", "radiograph:small", "radiograph:large"]
    assert found["manifests"] == {"radiograph:small": {"n_train": 240, "corpus": "chest-xray"}, "radiograph:large": None}
    assert "radiograph:absent" in found["skipped"]
    used = {}

    def record_fold(task, init, data_dir, wide_table, train_ids, val_ids, run_dir, recipe):
        used[init] = (recipe.radiograph_weights, run_dir.relative_to(tmp_path).parts[:2])
        return {"f1": 0.5}, pd.DataFrame({"epoch": [0], "val_f1": [0.5]})

    monkeypatch.setattr(transfer, "run_fold", record_fold)
    transfer.cross_validate("classification", ["radiograph:small", "radiograph:large"], root, wide, folds[folds == 0].reindex(
        wide.index).fillna(-1).astype(int), tmp_path, TINY, progress=False, radiograph_encoders=encoders)
    assert used == {"radiograph:small": (encoders["radiograph:small"], ("classification", "radiograph-small")),
                    "radiograph:large": (encoders["radiograph:large"], ("classification", "radiograph-large"))}
    recorded = files.read_json(transfer.run_path(tmp_path, "classification", "radiograph:small", 1.0, 0) / "recipe.json")
    assert recorded["radiograph_weights"] == encoders["radiograph:small"]
    with pytest.raises(ValueError, match="'radiograph:other' has no encoder file in radiograph_encoders"):
        transfer.cross_validate("classification", ["radiograph:other"], root, wide, folds, tmp_path, TINY, progress=False)
