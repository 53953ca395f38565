"""Tests of helpers.data.synth.chest: the built-in synthetic chest radiographs in the CheXpert layout."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers.data import radiographs
from helpers.data.synth import chest

FINDINGS = list(chest.FINDINGS)
SIZE = (256, 256)


def _folder_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Normalised (y, x) coordinates of every pixel, each ``(H, W)``."""
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    return (y + 0.5) / shape[0], (x + 0.5) / shape[1]


# --------------------------------------------------------------------------- label statistics


@pytest.fixture(scope="module")
def stats() -> dict:
    return chest.label_statistics()


def test_shipped_statistics_are_small_and_consistent(stats):
    path = Path(chest.__file__).with_name(chest.STATISTICS_FILE)
    assert 2_000 < path.stat().st_size < 30_000
    assert stats["findings"] == FINDINGS
    n = stats["n_rows"]
    assert sum(stats["patterns"].values()) + stats["residual"]["rows"] == n
    assert sum(stats["patterns"].values()) >= 0.9 * n  # the stored patterns cover >= 90% of the rows
    assert all(len(p) == len(FINDINGS) and set(p) <= {"0", "1"} for p in stats["patterns"])
    counts = list(stats["patterns"].values())
    assert counts == sorted(counts, reverse=True)
    for finding, values in stats["values"].items():
        assert sum(values.values()) == n, finding
    assert stats["values"]["No Finding"]["uncertain"] == stats["values"]["No Finding"]["negative"] == 0
    assert sum(stats["views"].values()) == n and sum(stats["sex"].values()) == n
    assert sum(stats["age"]["counts"]) == n and stats["age"]["bin_years"] == 5
    assert sum(int(k) * v for k, v in stats["studies_per_patient"].items()) == sum(stats["views_per_study"].values())
    assert sum(len(k) * v for k, v in stats["views_per_study"].items()) == n


def test_flagged_rates_of_patterns_match_the_stored_value_counts(stats):
    """Patterns and residual counts reproduce every finding's positive-or-uncertain count exactly."""
    for k, finding in enumerate(FINDINGS):
        from_patterns = sum(n for p, n in stats["patterns"].items() if p[k] == "1") + stats["residual"]["flagged"][finding]
        values = stats["values"][finding]
        assert from_patterns == values["positive"] + values["uncertain"], finding


CSV_ROWS = [  # (findings flagged 1.0, findings flagged -1.0, findings 0.0, view, projection)
    (["No Finding"], [], [], "Frontal", "PA"),
    (["No Finding"], [], ["Pneumothorax"], "Frontal", "AP"),
    (["No Finding"], [], [], "Lateral", ""),
    (["Edema"], ["Pleural Effusion"], [], "Frontal", "AP"),
    (["Edema"], [], ["Pleural Effusion"], "Frontal", "AP"),
    (["Fracture"], [], [], "Frontal", "PA"),
]


def _tiny_chexpert(folder: Path) -> Path:
    lines = [",".join(radiographs.CHEXPERT_COLUMNS)]
    for i, (positive, uncertain, negative, view, projection) in enumerate(CSV_ROWS):
        values = ["1.0" if f in positive else "-1.0" if f in uncertain else "0.0" if f in negative else "" for f in FINDINGS]
        kind = "frontal" if view == "Frontal" else "lateral"
        patient, study, number = [(1, 1, 1), (1, 2, 1), (1, 2, 2), (2, 3, 1), (2, 4, 1), (2, 5, 1)][i]
        path = f"CheXpert-v1.0-small/train/patient{patient:05d}/study{study}/view{number}_{kind}.jpg"
        lines.append(",".join([path, "Male" if i % 2 else "Female", str(20 + 10 * i), view, projection, *values]))
    path = folder / "CheXpert-v1.0-small" / "train.csv"
    path.parent.mkdir(parents=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_derive_label_statistics_on_a_tiny_table(tmp_path):
    stats = chest.derive_label_statistics(_tiny_chexpert(tmp_path), coverage=0.8)
    no_finding = "1" + "0" * 13
    edema_only = "".join("1" if g == "Edema" else "0" for g in FINDINGS)
    edema_effusion = "".join("1" if g in ("Edema", "Pleural Effusion") else "0" for g in FINDINGS)
    fracture = "0" * 12 + "10"
    # most frequent first, ties in pattern order, until 5 of 6 rows (>= 80%) are covered
    assert list(stats["patterns"].items()) == [(no_finding, 3), (fracture, 1), (edema_only, 1)]
    assert stats["residual"]["rows"] == 1
    assert {f for f, n in stats["residual"]["flagged"].items() if n} == {"Edema", "Pleural Effusion"}
    assert edema_effusion not in stats["patterns"]
    assert stats["values"]["Pleural Effusion"] == {"positive": 0, "uncertain": 1, "negative": 1, "blank": 4}
    assert stats["values"]["Pneumothorax"] == {"positive": 0, "uncertain": 0, "negative": 1, "blank": 5}
    assert stats["views"] == {"Frontal": 5, "Lateral": 1}
    assert stats["projection"] == {"AP": 3, "PA": 2}
    assert stats["sex"] == {"Female": 3, "Male": 3}
    assert stats["age"]["counts"] == [0, 0, 0, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1]
    assert stats["studies_per_patient"] == {"2": 1, "3": 1}
    assert stats["views_per_study"] == {"F": 4, "FL": 1}
    assert json.loads(json.dumps(stats)) == stats  # JSON-ready
    full = chest.derive_label_statistics(tmp_path / "CheXpert-v1.0-small" / "train.csv", coverage=1.0)
    assert full["residual"]["rows"] == 0 and len(full["patterns"]) == 4


@pytest.mark.parametrize("coverage", [0.0, 1.5, -1])
def test_derive_label_statistics_rejects_bad_coverage(tmp_path, coverage):
    with pytest.raises(ValueError, match=r"coverage must be in \(0, 1\]"):
        chest.derive_label_statistics(tmp_path / "x.csv", coverage=coverage)


# --------------------------------------------------------------------------- label sampling


@pytest.fixture(scope="module")
def sampled(stats) -> pd.DataFrame:
    return chest.sample_labels(4000, seed=0, statistics=stats)


def test_sampled_labels_use_chexpert_coding(sampled):
    assert list(sampled.columns) == FINDINGS and len(sampled) == 4000
    assert (sampled.dtypes == np.float32).all()
    values = sampled.to_numpy()
    assert np.isin(values[~np.isnan(values)], [1.0, 0.0, -1.0]).all()
    assert not (sampled["No Finding"] == -1).any() and not (sampled["No Finding"] == 0).any()


def test_sampled_marginals_follow_the_real_table(sampled, stats):
    n, values = len(sampled), sampled.to_numpy()
    for k, finding in enumerate(FINDINGS):
        real = stats["values"][finding]
        flagged_real = (real["positive"] + real["uncertain"]) / stats["n_rows"]
        flagged = np.isin(values[:, k], [1.0, -1.0])
        assert abs(flagged.mean() - flagged_real) <= 4 * np.sqrt(flagged_real * (1 - flagged_real) / n) + 0.005, finding
        if flagged.sum() >= 100:
            uncertain_real = real["uncertain"] / (real["positive"] + real["uncertain"])
            share = (values[flagged, k] == -1.0).mean()
            assert abs(share - uncertain_real) <= 4 * np.sqrt(uncertain_real * (1 - uncertain_real) / flagged.sum()) + 0.01, finding


def test_sampled_cooccurrence_follows_the_patterns(sampled, stats):
    """The most frequent real pattern is also the most frequent sampled one, at about its real share."""
    flagged = np.isin(sampled.to_numpy(), [1.0, -1.0])
    patterns = pd.Series(["".join("1" if v else "0" for v in row) for row in flagged]).value_counts(normalize=True)
    top, count = next(iter(stats["patterns"].items()))
    assert patterns.index[0] == top
    assert abs(patterns.iloc[0] - count / stats["n_rows"]) < 0.015


def test_sample_labels_is_seeded(stats):
    first = chest.sample_labels(50, seed=3, statistics=stats)
    pd.testing.assert_frame_equal(first, chest.sample_labels(50, seed=3, statistics=stats))
    assert not first.equals(chest.sample_labels(50, seed=4, statistics=stats))


def test_sample_labels_from_custom_statistics():
    pattern = "".join("1" if f in ("Edema", "Support Devices") else "0" for f in FINDINGS)
    stats = {
        "findings": FINDINGS,
        "patterns": {pattern: 10},
        "residual": {"rows": 0, "flagged": dict.fromkeys(FINDINGS, 0)},
        "values": {f: {"positive": 1, "uncertain": 0, "negative": 0, "blank": 1} for f in FINDINGS},
    }
    labels = chest.sample_labels(20, seed=1, statistics=stats)
    assert (labels[["Edema", "Support Devices"]] == 1.0).all().all()
    assert labels.drop(columns=["Edema", "Support Devices"]).isna().all().all()
    with pytest.raises(ValueError, match="statistics list findings"):
        chest.sample_labels(5, statistics={**stats, "findings": FINDINGS[::-1]})
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        chest.sample_labels(0, statistics=stats)


# --------------------------------------------------------------------------- rendering


def test_render_is_deterministic_grey_uint8():
    labels = {"Cardiomegaly": 1.0, "Support Devices": 1.0, "Pneumonia": -1.0}
    image = chest.render_chest(labels, seed=5, size=SIZE)
    assert image.dtype == np.uint8 and image.shape == SIZE
    np.testing.assert_array_equal(image, chest.render_chest(labels, seed=5, size=SIZE))
    assert image.std() > 30  # a radiograph, not a flat image
    for other in (dict(seed=6), dict(seed=5, variant=1), dict(seed=[5, 1])):
        assert not np.array_equal(image, chest.render_chest(labels, size=SIZE, **other))
    by_list = chest.render_chest([labels.get(f, np.nan) for f in FINDINGS], seed=5, size=SIZE)
    np.testing.assert_array_equal(image, by_list)


@pytest.mark.parametrize("size", [(64, 64), (128, 96), (320, 256)])
@pytest.mark.parametrize("view", ["Frontal", "Lateral"])
def test_render_sizes_and_views(size, view):
    image = chest.render_chest({"Pleural Effusion": 1.0, "Lung Lesion": 1.0}, seed=1, size=size, view=view)
    assert image.shape == size and image.dtype == np.uint8
    centre = image[size[0] // 4 : 3 * size[0] // 4, size[1] // 4 : 3 * size[1] // 4]
    assert np.percentile(image, 2) < 0.5 * centre.mean()  # air around the body is darker than the chest


# Where each finding shows on a frontal view (normalised x, y boxes that hold the changed pixels,
# allowing for the patient's rotation/shift) and whether it brightens (+1) or darkens (-1) the image.
EXPECTED = {
    "Enlarged Cardiomediastinum": ((0.3, 0.7), (0.0, 0.6), +1),
    "Cardiomegaly": ((0.2, 0.9), (0.3, 0.95), +1),
    "Lung Opacity": ((0.03, 0.97), (0.03, 0.95), +1),
    "Lung Lesion": ((0.03, 0.97), (0.03, 0.95), +1),
    "Edema": ((0.03, 0.97), (0.1, 0.95), +1),
    "Consolidation": ((0.03, 0.97), (0.03, 0.95), +1),
    "Pneumonia": ((0.03, 0.97), (0.2, 0.95), +1),
    "Atelectasis": ((0.03, 0.97), (0.35, 1.0), +1),
    "Pneumothorax": ((0.03, 0.97), (0.03, 0.95), 0),  # dark space + bright pleural line: see below
    "Pleural Effusion": ((0.03, 0.97), (0.4, 1.0), +1),
    "Pleural Other": ((0.03, 0.97), (0.03, 0.95), +1),
    "Fracture": ((0.03, 0.97), (0.0, 0.9), 0),
    "Support Devices": ((0.0, 1.0), (0.0, 1.0), +1),
}


@pytest.mark.parametrize("seed", [3, 11, 20])
@pytest.mark.parametrize("finding", list(EXPECTED))
def test_each_finding_changes_its_region_of_a_fixed_base(finding, seed):
    base = chest.render_chest({}, seed=seed, size=SIZE).astype(int)
    shown = chest.render_chest({finding: 1.0}, seed=seed, size=SIZE).astype(int)
    diff = shown - base
    changed = np.abs(diff) >= 6
    assert changed.sum() >= 15, f"{finding} barely visible"
    assert (diff == 0).mean() > 0.4  # the rest of the image stays as it was
    (x0, x1), (y0, y1), sign = EXPECTED[finding]
    y, x = _grid(SIZE)
    inside = (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
    assert np.abs(diff[changed & inside]).sum() >= 0.9 * np.abs(diff[changed]).sum()
    if sign:
        assert sign * diff[changed].sum() > 0
    if finding == "Fracture":
        assert changed.mean() < 0.01  # a local break of one or two bones


@pytest.mark.parametrize("seed", [3, 11])
def test_effusion_brightens_the_lower_zone_of_the_same_base(seed):
    base = chest.render_chest({}, seed=seed, size=SIZE).astype(float)
    regions = chest.finding_regions({"Pleural Effusion": 1.0}, seed=seed, size=SIZE)["Pleural Effusion"]
    shown = chest.render_chest({"Pleural Effusion": 1.0}, seed=seed, size=SIZE).astype(float)
    y, _ = _grid(SIZE)
    assert regions.any() and y[regions].mean() > 0.55  # a basal opacity
    assert shown[regions].mean() - base[regions].mean() > 25


@pytest.mark.parametrize("seed", [3, 7, 20])
def test_pneumothorax_shows_a_dark_periphery_behind_a_pleural_line(seed):
    base = chest.render_chest({}, seed=seed, size=SIZE).astype(float)
    shown = chest.render_chest({"Pneumothorax": 1.0}, seed=seed, size=SIZE).astype(float)
    region = chest.finding_regions({"Pneumothorax": 1.0}, seed=seed, size=SIZE, threshold=0.05)["Pneumothorax"]
    space, line = region & (shown < base), region & (shown > base)
    _, x = _grid(SIZE)
    assert space.sum() > 500 and np.abs(x[space] - 0.5).mean() > 0.2  # along the chest wall
    assert line.sum() > 100 and shown[line].mean() > shown[space].mean() + 30
    next_to_space = cv2.dilate(space.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    assert (line & next_to_space).sum() >= 0.85 * line.sum()  # the visceral pleural edge borders the space


def test_uncertain_findings_are_drawn_weaker():
    base = chest.render_chest({}, seed=9, size=SIZE).astype(int)
    for finding in ("Lung Lesion", "Pleural Effusion", "Edema"):
        sure = np.abs(chest.render_chest({finding: 1.0}, seed=9, size=SIZE).astype(int) - base).sum()
        unsure = np.abs(chest.render_chest({finding: -1.0}, seed=9, size=SIZE).astype(int) - base).sum()
        assert 0 < unsure < sure, finding


@pytest.mark.parametrize("finding", [f for f in FINDINGS if f != "No Finding"])
def test_each_finding_shows_on_lateral_views(finding):
    base = chest.render_chest({}, seed=4, size=SIZE, view="Lateral").astype(int)
    shown = chest.render_chest({finding: 1.0}, seed=4, size=SIZE, view="Lateral").astype(int)
    assert (np.abs(shown - base) >= 6).sum() >= 10


def test_lateral_and_ap_views_differ_from_pa():
    pa = chest.render_chest({}, seed=2, size=SIZE)
    assert not np.array_equal(pa, chest.render_chest({}, seed=2, size=SIZE, projection="AP"))
    lateral = chest.render_chest({}, seed=2, size=SIZE, view="Lateral")
    # frontal views are about left-right symmetric, lateral views are not
    asymmetry = [np.abs(v.astype(float) - v[:, ::-1]).mean() for v in (pa, lateral)]
    assert asymmetry[1] > 1.5 * asymmetry[0]


def test_finding_regions_match_the_rendered_change():
    labels = {"Lung Lesion": 1.0, "Support Devices": 1.0, "No Finding": 0.0}
    regions = chest.finding_regions(labels, seed=2, size=SIZE)
    assert sorted(regions) == ["Lung Lesion", "Support Devices"]
    assert all(r.dtype == bool and r.shape == SIZE and r.any() for r in regions.values())
    only_lesion = chest.render_chest({"Support Devices": 1.0}, seed=2, size=SIZE).astype(int)
    both = chest.render_chest(labels, seed=2, size=SIZE).astype(int)
    changed = np.abs(both - only_lesion) >= 6
    region = cv2.dilate(regions["Lung Lesion"].astype(np.uint8), np.ones((5, 5), np.uint8)) > 0  # detector blur
    assert changed.sum() > 50 and (changed & region).sum() >= 0.95 * changed.sum()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"labels": {"Nodule": 1.0}}, r"unknown findings \['Nodule'\]; allowed: \['No Finding'"),
        ({"labels": [1.0, 0.0]}, r"labels must have 14 values in the order"),
        ({"labels": {"Edema": 2.0}}, r"label of 'Edema' must be 1\.0, 0\.0, -1\.0 or NaN, got 2\.0"),
        ({"view": "Oblique"}, r"view must be one of \['Frontal', 'Lateral'\]"),
        ({"projection": "LL"}, r"projection must be one of \['PA', 'AP'\]"),
        ({"sex": "M"}, r"sex must be one of \['Male', 'Female', 'Unknown'\]"),
        ({"age": float("nan")}, r"age must be a number of years in 0\.\.120"),
        ({"size": (32, 256)}, r"size must be \(height, width\), two integers >= 64"),
        ({"size": (100.5, 100)}, r"size must be \(height, width\)"),
        ({"seed": -1}, r"seed must be an integer >= 0"),
        ({"seed": []}, r"seed must be an integer >= 0 or a non-empty sequence"),
        ({"variant": -2}, r"variant must be an integer >= 0"),
    ],
)
def test_render_rejects_bad_arguments(kwargs, message):
    arguments = {"labels": {}, **kwargs}
    with pytest.raises(ValueError, match=message):
        chest.render_chest(**arguments)


# --------------------------------------------------------------------------- dataset


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """60 images of 64x64, 25% of the patients in valid."""
    out = tmp_path_factory.mktemp("chest")
    return chest.make_chexpert_dataset(out, n_images=60, image_size=(64, 64), seed=1, valid_fraction=0.25, progress=False)


def test_corpus_layout_reads_back_with_read_chexpert(corpus):
    assert corpus.name == chest.DATASET_FOLDER
    assert sorted(p.name for p in corpus.iterdir()) == ["train", "train.csv", "valid", "valid.csv"]
    tables = {}
    for split in ("train", "valid"):
        header = (corpus / f"{split}.csv").read_text().splitlines()[0]
        assert header == ",".join(radiographs.CHEXPERT_COLUMNS)
        raw = pd.read_csv(corpus / f"{split}.csv", keep_default_na=False, dtype=str)
        assert raw["Path"].str.match(rf"CheXpert-synthetic/{split}/patient\d{{5}}/study\d+/view\d_(frontal|lateral)\.png$").all()
        assert set(raw["AP/PA"][raw["Frontal/Lateral"] == "Lateral"]) <= {""}
        assert set(raw["AP/PA"][raw["Frontal/Lateral"] == "Frontal"]) <= {"AP", "PA"}
        assert set(raw[FINDINGS].to_numpy().ravel()) <= {"1.0", "0.0", "-1.0", ""}
        tables[split] = radiographs.read_chexpert(corpus / f"{split}.csv", policy=None, frontal_only=False, check_files=True)
    assert len(tables["train"]) + len(tables["valid"]) == 60
    assert set(tables["train"]["group"]).isdisjoint(tables["valid"]["group"])  # split by patient
    assert tables["valid"]["group"].nunique() >= 1
    every = pd.concat(tables.values())
    assert set(every["view"]) == {"Frontal", "Lateral"}
    assert (every["path"].str.endswith("_lateral.png") == (every["view"] == "Lateral")).all()
    with Image.open(every["path"].iloc[0]) as image:
        assert image.format == "PNG" and image.mode == "L" and image.size == (64, 64)


def test_views_of_a_study_share_labels(corpus):
    table = radiographs.read_chexpert(corpus / "train.csv", policy=None, frontal_only=False)
    study = table["path"].str.extract(r"(patient\d+/study\d+)", expand=False)
    per_study = table.groupby(study)[FINDINGS].nunique(dropna=False).max(axis=1)
    assert (per_study <= 1).all()


def test_same_arguments_give_identical_bytes(tmp_path):
    arguments = dict(n_images=8, image_size=(64, 64), seed=2, progress=False)
    first = chest.make_chexpert_dataset(tmp_path / "a", **arguments)
    second = chest.make_chexpert_dataset(tmp_path / "b", **arguments)
    written = _folder_bytes(first)
    assert len(written) == 8 + 2 and written == _folder_bytes(second)
    other = chest.make_chexpert_dataset(tmp_path / "c", **{**arguments, "seed": 3})
    assert (first / "train.csv").read_bytes() != (other / "train.csv").read_bytes()


def test_existing_corpus_needs_overwrite(tmp_path):
    chest.make_chexpert_dataset(tmp_path, n_images=3, image_size=(64, 64), progress=False)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        chest.make_chexpert_dataset(tmp_path, n_images=2, image_size=(64, 64), progress=False)
    root = chest.make_chexpert_dataset(tmp_path, n_images=2, image_size=(64, 64), valid_fraction=0.0, overwrite=True, progress=False)
    assert len(list(root.rglob("*.png"))) == 2 and not (tmp_path / f"{chest.DATASET_FOLDER}.partial").exists()
    assert (root / "valid.csv").read_text().strip() == ",".join(radiographs.CHEXPERT_COLUMNS)  # no patient in valid


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n_images": 0}, r"n_images must be an integer >= 1"),
        ({"image_size": (32, 32)}, r"size must be \(height, width\), two integers >= 64"),
        ({"valid_fraction": 1.0}, r"valid_fraction must be in \[0, 1\)"),
        ({"lateral_fraction": -0.1}, r"lateral_fraction must be in \[0, 1\)"),
        ({"seed": -1}, r"seed must be an integer >= 0"),
    ],
)
def test_make_rejects_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        chest.make_chexpert_dataset(tmp_path, **{"n_images": 2, "progress": False, **kwargs})
    assert not any(tmp_path.iterdir())


def test_progress_bar(tmp_path, capsys):
    chest.make_chexpert_dataset(tmp_path, n_images=2, image_size=(64, 64), progress=True)
    assert "synthetic chest" in capsys.readouterr().err
