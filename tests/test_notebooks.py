"""Notebook conventions, and the whole collection executed by papermill in the smoke profile."""

import ast
import json
import re
from pathlib import Path

import nbformat
import papermill
import pytest

from helpers import run
from helpers.core import severstal

NOTEBOOKS = run.list_notebooks()
IDS = [nb.stem for nb in NOTEBOOKS]
PARAMETER_LINE = re.compile(r"^(?P<name>[a-z_][a-z0-9_]*): (?P<type>[\w\[\], |]+) = .+  # \S.*$")


def cells(path: Path):
    return nbformat.read(path, as_version=4).cells


def test_notebooks_are_numbered_in_order():
    numbers = [int(nb.stem[:2]) for nb in NOTEBOOKS]
    assert numbers == sorted(set(numbers)) and numbers[0] == 0


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_parameters_cell_is_first_typed_and_commented(path):
    first = cells(path)[0]
    assert first.cell_type == "code" and "parameters" in first.metadata.get("tags", [])
    lines = [line for line in first.source.splitlines() if line.strip()]
    bad = [line for line in lines if not PARAMETER_LINE.match(line)]
    assert not bad, f"parameter lines must read 'name: type = value  # comment': {bad}"
    names = {PARAMETER_LINE.match(line)["name"] for line in lines}
    assert {"data_dir", "output_dir", "seed", "profile"} <= names
    assert set(papermill.inspect_notebook(str(path))) == names, "papermill must see every parameter"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_header_prose_and_no_definitions(path):
    notebook = cells(path)
    assert notebook[1].cell_type == "markdown" and notebook[1].source.startswith("# ")
    for cell in notebook:
        if cell.cell_type != "code":
            continue
        tree = ast.parse(cell.source)
        assert not [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda))]
        assert not re.search(r"^\s*[!%]", cell.source, re.M), "no shell escapes or magics (!pip, %pip)"
    kinds = [cell.cell_type for cell in notebook[1:]]
    assert "code,code" not in ",".join(kinds), "every code cell opens with prose"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_committed_without_outputs(path):
    for cell in cells(path):
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


def test_notebook_defaults_are_the_smoke_profile():
    """Opened in JupyterLab after command 1, a notebook's own defaults name the data command 1 made."""
    profile = run.load_profile("smoke")
    for path in NOTEBOOKS:
        declared = papermill.inspect_notebook(str(path))
        smoke = {**profile["common"], **profile["notebooks"].get(path.stem, {})}
        for name, value in smoke.items():
            optional = {"segmenter_model", "segmenter_data_dir", "benchmark_batches"}  # steps that need other runs, or time
            if name not in declared or name in optional or path.stem == "09_report":
                continue
            default = ast.literal_eval(declared[name]["default"])
            expected = f"../{value}" if name.endswith("_dir") else value
            assert default == expected, f"{path.stem}: {name} defaults to {default!r}, the smoke profile says {value!r}"


@pytest.mark.notebooks
def test_notebooks_run_with_their_own_defaults_from_the_notebooks_folder(tmp_path):
    """As JupyterLab would: cwd notebooks/, no parameters; 00 writes ../data, then 01 and 02 read it."""
    import shutil

    folder = tmp_path / "notebooks"
    shutil.copytree(run.NOTEBOOKS_DIR, folder, ignore=shutil.ignore_patterns("kernel-ipc-*"))  # a running kernel's sockets
    for stem in ("00_prepare_data", "01_eda", "02_rle_masks"):
        executed = tmp_path / "executed" / f"{stem}.ipynb"
        run.execute_notebook(folder / f"{stem}.ipynb", executed, {}, progress=False)
        assert (tmp_path / "outputs" / "manual" / "metrics" / f"{stem}.json").is_file(), stem
    assert (tmp_path / "data" / "synthetic-smoke" / "train.csv").is_file()


@pytest.mark.notebooks
def test_smoke_profile_runs_every_notebook(tmp_path):
    run_dir = run.run_notebooks("smoke", root=tmp_path, outputs_root=tmp_path / "outputs", progress=False)
    summary = json.loads((run_dir / "run.json").read_text())
    assert [nb["name"] for nb in summary["notebooks"]] == IDS
    data_dirs = {nb["name"]: nb["parameters"].get("data_dir") for nb in summary["notebooks"]}
    assert all(str(path).startswith(str(tmp_path)) for path in data_dirs.values() if path)  # the test's data stays apart
    assert all(nb["status"] == "ok" for nb in summary["notebooks"])
    for stem in IDS:
        metrics = json.loads((run_dir / "metrics" / f"{stem}.json").read_text())
        assert metrics, stem
        executed = nbformat.read(run_dir / "notebooks" / f"{stem}.ipynb", as_version=4)
        errors = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
        assert not errors, stem
    figures = sorted((run_dir / "figures").glob("*.png"))
    assert len(figures) >= len(IDS) and all(f.stat().st_size > 5000 for f in figures)
    trained = json.loads((run_dir / "models" / "unet-resnet18" / "run.json").read_text())["metrics"]
    assert set(trained["postprocessing"]) == {"1", "2", "3", "4"}  # tuned by 03, applied by defects-serve
    best = json.loads((run_dir / "metrics" / "04_compare_architectures.json").read_text())["best_arch"]
    (best_run,) = (run_dir / "compare" / best / "models").glob("*/run.json")
    assert json.loads(best_run.read_text())["metrics"]["postprocessing"]["1"]["flips"] == ["horizontal"]  # 04's, with its TTA
    grid = json.loads((run_dir / "metrics" / "06_transfer_comparison.json").read_text())["sensitivity"]
    assert sorted({(cell["batch_size_asked"], cell["learning_rate"]) for cell in grid}) == [(4, 0.001), (8, 0.001)]
    rle_metrics = json.loads((run_dir / "metrics" / "02_rle_masks.json").read_text())
    assert rle_metrics["rows_round_trip_exact"] == rle_metrics["rows_checked"] > 0
    assert rle_metrics["submission_round_trip_exact"] is True


@pytest.mark.notebooks
def test_resize_to_runs_training_and_export(tmp_path):
    # resized to a size that is not a multiple of 32, so validation also pads (100x500 -> 128x512)
    overrides = {"resize_to": [100, 500], "image_size": [96, 256]}
    run_dir = run.run_notebooks("smoke", only=["00", "03", "08"], overrides=overrides, root=tmp_path,
                                outputs_root=tmp_path / "outputs", progress=False)
    summary = json.loads((run_dir / "run.json").read_text())
    assert [nb["status"] for nb in summary["notebooks"]] == ["ok", "ok", "ok"]
    export = json.loads((run_dir / "metrics" / "08_tflite_quantisation.json").read_text())
    assert export["input_size"] == [128, 512]


@pytest.mark.notebooks
def test_mixed_sizes_train_on_crops_and_score_at_their_own_size_after_batchnorm_reestimation(tmp_path, mixed_steel_dir):
    overrides = {"data_dir": str(mixed_steel_dir), "image_size": [48, 96], "thresholds": [0.5], "min_areas": [0],
                 "bn_reestimate_batches": 2}
    run_dir = run.run_notebooks("smoke", only=["03"], overrides=overrides, root=tmp_path, outputs_root=tmp_path / "outputs",
                                progress=False)
    summary = json.loads((run_dir / "run.json").read_text())
    assert [nb["status"] for nb in summary["notebooks"]] == ["ok"]
    executed = nbformat.read(run_dir / "notebooks" / "03_train_segmentation.ipynb", as_version=4)
    printed = "".join(o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.outputs)
    assert "each scored at its own size on a 64x160 canvas" in printed
    assert "BatchNorm statistics re-estimated on 1 training batch(es)" in printed  # 4 training images: one batch of 4
    scores = json.loads((run_dir / "metrics" / "03_train_segmentation.json").read_text())
    assert 0.0 <= scores["severstal_score"] <= 1.0 and scores["mixed_sizes"] is True and scores["bn_reestimate_batches"] == 2


@pytest.mark.notebooks
def test_weak_supervision_on_a_multi_class_dataset(tmp_path):
    # 05 trains a per-class classifier on the synthetic strips; 07 turns its Grad-CAMs into pseudo-masks
    def run_only(stem, **overrides):
        return run.run_notebooks("smoke", only=[stem], run_name="weak", overrides=overrides, root=tmp_path,
                                 outputs_root=tmp_path / "outputs", progress=False)

    strips = str(tmp_path / "data" / "synthetic-smoke")
    run_only("00")
    run_only("05", corpus="severstal", data_dir=strips, per_class_labels=True, image_size=[128, 800], pretrain_name="strip-classes")
    run_only("06")
    run_dir = run_only("07", weak_dataset_dir=strips, weak_classifier="pretrained/strip-classes.json",
                       weak_dataset_size=[128, 800], weak_dataset_epochs=1, segmenter_model="")
    result = json.loads((run_dir / "metrics" / "07_tsne_gradcam.json").read_text())["weak_dataset"]
    rows = result["table"]
    assert sorted(rows) == ["U-Net on pseudo-masks (validation, vs truth)", "U-Net on true masks (validation)",
                            "pseudo-masks vs truth (training images)"]
    assert all(0.0 <= row["miou"] <= 1.0 for row in rows.values())
    assert result["classes"] and set(result["classes"]) <= {"pits", "scratches", "patches", "holes"}
    assert (run_dir / "figures" / "weak_dataset_pseudo_masks.png").stat().st_size > 5000


@pytest.mark.notebooks
def test_pretraining_on_a_patient_subset_starting_from_given_encoder_weights(tmp_path):
    # a chest folder of the chest-xray-large layout: 8 patients, 2 images each; 05 keeps 3 of the 7 training patients
    import numpy as np
    from PIL import Image

    from helpers.modeling import builders

    findings = ["No finding", "Pneumonia (bacterial)", "Pneumonia (viral)", "COVID-19"]
    rows = []
    for k in range(16):
        name = f"images/kermany_person{k // 2}_{k}.jpg"
        pixels = (np.add.outer(np.arange(64), np.arange(64)) * (k + 1)) % 256
        (tmp_path / "chests" / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels.astype(np.uint8)).save(tmp_path / "chests" / name)
        rows.append(f"{name},kermany,{findings[k % 4]},,,,,kermany:person{k // 2}")
    (tmp_path / "chests" / "metadata.csv").write_text("path,source,finding,view,sex,age,license,patient\n" + "\n".join(rows) + "\n")
    start = builders.build_classifier("mobilenet", input_shape=(64, 64, 1), n_outputs=2, alpha=0.25)
    saved = builders.save_encoder_weights(start, tmp_path / "start.h5", "mobilenet")
    run_dir = run.run_notebooks("smoke", only=["05"], run_name="subset", root=tmp_path, outputs_root=tmp_path / "outputs",
                                overrides={"corpus": "chest-xray", "data_dir": str(tmp_path / "chests"), "val_fraction": 0.125,
                                           "train_patients": 3, "encoder_weights": str(tmp_path / "start.h5"), "batch_size": 2},
                                progress=False)
    manifest = json.loads((run_dir / "metrics" / "05_pretrain_radiographs.json").read_text())
    assert (manifest["train_groups"], manifest["n_train"], manifest["n_val"]) == (3, 6, 2)
    assert manifest["encoder_start"] == str(tmp_path / "start.h5") and saved > 0
    assert manifest["labels"] == ["No Finding", "COVID-19", "Pneumonia", "Pneumonia (bacterial)", "Pneumonia (viral)"]


@pytest.mark.notebooks
def test_transfer_with_radiograph_encoders_of_two_corpus_sizes_draws_the_corpus_curve(tmp_path):
    from helpers.modeling import builders

    encoders = {}
    for label, n_train in (("small", 240), ("large", 7000)):
        model = builders.build_classifier("mobilenet", (128, 128, 1), n_outputs=3, alpha=0.25)
        path = tmp_path / "pretrained" / f"{label}.h5"
        path.parent.mkdir(exist_ok=True)
        builders.save_encoder_weights(model, path, "mobilenet")
        path.with_suffix(".json").write_text(json.dumps({"weights": str(path), "backbone": "mobilenet", "alpha": 0.25,
                                                         "corpus": "chest-xray", "n_train": n_train}))
        encoders[label] = str(path)
    run_dir = run.run_notebooks("smoke", only=["06"], run_name="corpus", root=tmp_path, outputs_root=tmp_path / "outputs",
                                overrides={"inits": ["random"], "radiograph_encoders": encoders, "sweep_tasks": [],
                                           "tasks": ["classification"]},
                                progress=False)
    result = json.loads((run_dir / "metrics" / "06_transfer_comparison.json").read_text())
    assert result["initialisations"] == ["random", "radiograph:small", "radiograph:large"]
    assert [row["corpus_images"] for row in result["corpus_curve"]] == [240, 7000]
    assert set(result["classification"]["table"]) == set(result["initialisations"])
    assert result["segmentation"] is None and not (run_dir / "transfer" / "segmentation").exists()
    assert (run_dir / "figures" / "transfer_corpus_size.png").stat().st_size > 5000


@pytest.mark.notebooks
def test_transfer_with_no_tasks_trains_the_sensitivity_grid_alone(tmp_path):
    run_dir = run.run_notebooks("smoke", only=["06"], run_name="grid", root=tmp_path, outputs_root=tmp_path / "outputs",
                                overrides={"inits": ["random"], "tasks": [], "sweep_tasks": [],
                                           "sensitivity_batch_sizes": [4], "sensitivity_learning_rates": [0.001, 0.01]},
                                progress=False)
    result = json.loads((run_dir / "metrics" / "06_transfer_comparison.json").read_text())
    assert result["tasks"] == [] and result["classification"] is None and result["segmentation"] is None
    assert sorted((cell["init"], cell["learning_rate"]) for cell in result["sensitivity"]) == [("random", 0.001), ("random", 0.01)]
    assert sorted(path.name for path in (run_dir / "transfer").iterdir()) == ["folds.csv", "sensitivity"]
    assert (run_dir / "figures" / "transfer_sensitivity.png").stat().st_size > 5000


def _fake_competition(folder: Path, layout: str) -> list[tuple[str, int]]:
    """A tiny Severstal competition folder (train.csv + sample_submission.csv in one of Kaggle's layouts).

    Returns the sample submission's (ImageId, ClassId) rows, in its order (not sorted: the
    submission must follow the sample, not its own order).
    """
    import shutil

    import pandas as pd

    from helpers.data.synth import steel

    train = steel.make_steel_dataset(folder, n_images=16, height=64, width=320, seed=3, progress=False)
    (folder / "classes.csv").unlink()  # Kaggle ships none: classes 1-4 by default
    if layout == "ImageId_ClassId,EncodedPixels":  # the 2019 layout: every image x class, empty masks included
        rows = [f"{image}_{c},{train.loc[image, c]}" for image in train.index for c in range(1, 5)]
        (folder / "train.csv").write_text("ImageId_ClassId,EncodedPixels\n" + "\n".join(rows) + "\n")
    steel.make_steel_dataset(folder.parent / "test-source", n_images=3, height=64, width=320, seed=4,
                             min_images_per_class=0, progress=False)
    shutil.move(folder.parent / "test-source" / "train_images", folder / "test_images")
    names = sorted(p.name for p in (folder / "test_images").iterdir())[::-1]
    pairs = [(name, c) for c in (4, 3, 2, 1) for name in names]
    if layout == "ImageId,EncodedPixels,ClassId":
        lines = [f"{name},1 1,{c}" for name, c in pairs]
    else:
        lines = [f"{name}_{c},1 1" for name, c in pairs]
    (folder / "sample_submission.csv").write_text(layout + "\n" + "\n".join(lines) + "\n")
    pd.testing.assert_frame_equal(  # the fake train.csv reads as the dataset it was made from
        severstal.read_dataset(folder)[[1, 2, 3, 4]], train[[1, 2, 3, 4]])
    return pairs


@pytest.mark.notebooks
@pytest.mark.parametrize("layout", ["ImageId,EncodedPixels,ClassId", "ImageId_ClassId,EncodedPixels"])
def test_kaggle_profile_writes_a_valid_submission_in_the_samples_order(tmp_path, layout):
    competition = tmp_path / "input" / "severstal-steel-defect-detection"
    pairs = _fake_competition(competition, layout)
    before = {p.relative_to(competition): p.stat().st_mtime_ns for p in competition.rglob("*")}
    overrides = {  # the profile's Kaggle paths, pointed at the fake folder; a tiny, random-init training
        "data_dir": str(competition), "test_images_dir": str(competition / "test_images"),
        "sample_submission": str(competition / "sample_submission.csv"),
        "submission_path": str(tmp_path / "working" / "submission.csv"),
        "encoder_weights": "", "weights_dir": "", "backbone": "resnet18", "image_size": [64, 160], "epochs": 1,
        "batch_size": 4, "thresholds": [0.5], "min_areas": [0, 20],
    }
    run_dir = run.run_notebooks("kaggle", only=["00", "04"], overrides=overrides, root=tmp_path,
                                outputs_root=tmp_path / "outputs", progress=False)
    assert {p.relative_to(competition): p.stat().st_mtime_ns for p in competition.rglob("*")} == before  # in place
    written = tmp_path / "working" / "submission.csv"
    assert written.read_text() == (run_dir / "test" / "submission.csv").read_text()
    assert written.read_text().splitlines()[0] == layout
    back = severstal.read_sample_submission(written)
    assert list(zip(back["ImageId"], back["ClassId"])) == pairs
    masks = severstal.read_train_csv(written, shape=(64, 320), n_classes=4)  # every RLE decodes at the image size
    assert sorted(masks.index) == sorted({name for name, _ in pairs})
    summary = json.loads((run_dir / "metrics" / "04_compare_architectures.json").read_text())
    assert summary["test"]["rows"] == len(pairs) and summary["test"]["images"] == 3
