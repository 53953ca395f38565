"""Radiograph corpora and industrial classification tables (helpers.data.radiographs), on tiny hand-made fixtures."""

from __future__ import annotations

import gzip
import re
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers.data import radiographs

FINDINGS = list(radiographs.CHEXPERT_FINDINGS)
NAN = float("nan")

# ----------------------------------------------------------------------------- fixture builders


def chexpert_row(path: str, view: str = "Frontal", projection: str = "AP", sex: str = "Female", age: int = 60, **labels: str) -> str:
    """One CheXpert CSV line; ``labels`` maps finding (spaces as underscores) to its text (blank if absent)."""
    values = [labels.get(f.replace(" ", "_").replace("/", "_"), "") for f in FINDINGS]
    return ",".join([path, sex, str(age), view, projection, *values])


HEADER = ",".join(radiographs.CHEXPERT_COLUMNS)
ROWS = [
    chexpert_row("CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg", No_Finding="1.0", Pneumothorax="0.0", Support_Devices="1.0"),
    chexpert_row("CheXpert-v1.0-small/train/patient00002/study2/view1_frontal.jpg", age=87, Cardiomegaly="-1.0", Lung_Opacity="1.0", Edema="-1.0"),
    chexpert_row("CheXpert-v1.0-small/train/patient00002/study1/view1_frontal.jpg", sex="Male", Lung_Opacity="1.0", Consolidation="-1.0"),
    chexpert_row("CheXpert-v1.0-small/train/patient00002/study1/view2_lateral.jpg", view="Lateral", projection="", Lung_Opacity="1.0", Consolidation="-1.0"),
    chexpert_row("CheXpert-v1.0-small/train/patient00003/study1/view1_frontal.jpg", projection="PA", sex="Unknown", Pleural_Effusion="0.0"),
]


def write_chexpert(root: Path, rows: list[str] = ROWS, header: str = HEADER, name: str = "train.csv") -> Path:
    """``root/CheXpert-v1.0-small/<name>``, as in the real download."""
    path = root / "CheXpert-v1.0-small" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def png(path: Path, value: int = 0, shape: tuple[int, int] = (4, 5)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(shape, value, np.uint8)).save(path)
    return path


# ----------------------------------------------------------------------------- uncertainty policies


@pytest.mark.parametrize(
    "policy, value, expected",
    [
        (policy, value, expected)
        for policy, uncertain in (("ones", 1.0), ("zeros", 0.0), ("ignore", NAN))
        for value, expected in ((1.0, 1.0), (0.0, 0.0), (NAN, 0.0), (-1.0, uncertain))
    ],
)
def test_policy_maps_every_value_kind(policy, value, expected):
    out = radiographs.apply_uncertainty_policy(np.array([[value, 1.0], [0.0, value]]), policy)
    assert out.dtype == np.float32 and out.shape == (2, 2)
    np.testing.assert_array_equal(out, np.array([[expected, 1.0], [0.0, expected]], dtype=np.float32))


@pytest.mark.parametrize("values, found", [([2.0], r"\[2\.0\]"), ([0.5, 1.0], r"\[0\.5\]"), ([-2.0, np.nan, 3.0], r"\[-2\.0, 3\.0\]")])
def test_policy_rejects_unexpected_values(values, found):
    with pytest.raises(ValueError, match=r"1\.0, 0\.0, -1\.0 \(uncertain\) or blank/NaN; found " + found):
        radiographs.apply_uncertainty_policy(np.array(values), "ones")


@pytest.mark.parametrize("policy", ["U-Ones", None, "one"])
def test_policy_names_the_allowed_policies(policy):
    with pytest.raises(ValueError, match=r"policy must be one of \['ones', 'zeros', 'ignore'\], got "):
        radiographs.apply_uncertainty_policy(np.zeros(2), policy)


# ----------------------------------------------------------------------------- CheXpert


def test_read_chexpert_layout_and_paths(tmp_path):
    csv_path = write_chexpert(tmp_path)
    table = radiographs.read_chexpert(csv_path)
    assert list(table.columns) == [*radiographs.META_COLUMNS, *FINDINGS]
    assert radiographs.finding_columns(table) == FINDINGS
    assert len(table) == 4 and (table["view"] == "Frontal").all()  # the lateral row is dropped
    assert table["path"].iloc[0] == os.path.join(str(tmp_path), "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg")
    assert table["group"].tolist() == ["patient00001", "patient00002", "patient00002", "patient00003"]
    assert table["Sex"].tolist() == ["Female", "Female", "Male", "Unknown"]
    assert table["Age"].tolist() == [60.0, 87.0, 60.0, 60.0]
    assert table["projection"].tolist() == ["AP", "AP", "AP", "PA"]
    assert all(table[f].dtype == np.float32 for f in FINDINGS)
    assert not table[FINDINGS].isna().any().any()
    row = table.iloc[1]
    assert (row["Cardiomegaly"], row["Lung Opacity"], row["Edema"], row["Fracture"]) == (1.0, 1.0, 1.0, 0.0)


@pytest.mark.parametrize("policy, uncertain", [("ones", 1.0), ("zeros", 0.0), ("ignore", NAN), (None, -1.0)])
def test_read_chexpert_policies(tmp_path, policy, uncertain):
    table = radiographs.read_chexpert(write_chexpert(tmp_path), policy=policy, frontal_only=False)
    assert len(table) == 5 and table["view"].tolist()[3] == "Lateral" and table["projection"].iloc[3] == ""
    np.testing.assert_array_equal(table["Consolidation"].to_numpy(), np.array([0 if policy else NAN, 0 if policy else NAN, uncertain, uncertain, 0 if policy else NAN], np.float32))
    assert table["Pleural Effusion"].iloc[4] == 0.0
    assert table[FINDINGS].isna().any().any() == (policy in ("ignore", None))


def test_read_chexpert_image_root_and_file_check(tmp_path):
    csv_path = write_chexpert(tmp_path)
    other = tmp_path / "elsewhere"
    table = radiographs.read_chexpert(csv_path, image_root=other)
    assert table["path"].iloc[0].startswith(str(other) + os.sep + "CheXpert-v1.0-small" + "/train")
    with pytest.raises(FileNotFoundError, match=r"4 image\(s\) of the table are missing"):
        radiographs.read_chexpert(csv_path, check_files=True)
    for path in radiographs.read_chexpert(csv_path, frontal_only=False)["path"]:
        png(Path(path))
    assert len(radiographs.read_chexpert(csv_path, check_files=True)) == 4


def test_read_chexpert_reads_gzip(tmp_path):
    path = tmp_path / "labels" / "chexpert_train.csv.gz"
    path.parent.mkdir()
    with gzip.open(path, "wt") as handle:
        handle.write("\n".join([HEADER, *ROWS]) + "\n")
    table = radiographs.read_chexpert(path, frontal_only=False)
    assert len(table) == 5 and table["path"].iloc[0].startswith(str(tmp_path) + os.sep + "CheXpert-v1.0-small")


@pytest.mark.parametrize(
    "rows, header, pattern",
    [
        (ROWS, HEADER.replace(",Edema", ""), r"train\.csv: not a CheXpert label table; missing columns \['Edema'\]"),
        (ROWS, HEADER.replace("Frontal/Lateral", "View"), r"missing columns \['Frontal/Lateral'\]"),
        (ROWS[:2] + [chexpert_row("CheXpert-v1.0-small/train/patient00004/study1/view1_frontal.jpg", Edema="2.0")], HEADER,
         r"train\.csv line 4: Edema = 2; allowed 1\.0, 0\.0, -1\.0 \(uncertain\) or blank"),
        (ROWS[:1] + [chexpert_row("CheXpert-v1.0-small/train/patient00004/study1/view1_frontal.jpg", Fracture="yes")], HEADER,
         r"train\.csv line 3: Fracture = 'yes'; allowed"),
        (ROWS[:1] + [chexpert_row("CheXpert-v1.0-small/train/p4/study1/view1_frontal.jpg")], HEADER,
         r"line 3: Path has no patientNNNNN folder"),
        (ROWS[:1] + [chexpert_row("CheXpert-v1.0-small/train/patient00004/study1/view1_frontal.jpg", view="Oblique")], HEADER,
         r"line 3: Frontal/Lateral must be Frontal or Lateral"),
    ],
)
def test_read_chexpert_errors_name_file_and_line(tmp_path, rows, header, pattern):
    with pytest.raises(ValueError, match=pattern):
        radiographs.read_chexpert(write_chexpert(tmp_path, rows, header))


def test_read_chexpert_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.csv"):
        radiographs.read_chexpert(tmp_path / "nothere.csv")
    with pytest.raises(ValueError, match=r"policy must be one of \['ones', 'zeros', 'ignore'\], got 'U-Ones' \(None keeps the raw"):
        radiographs.read_chexpert(write_chexpert(tmp_path), policy="U-Ones")


# ----------------------------------------------------------------------------- NIH ChestX-ray14

NIH = """Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,OriginalImage[Width
00000001_000.png,Cardiomegaly,0,1,58,M,PA,2682
00000001_001.png,Cardiomegaly|Emphysema,1,1,58,M,PA,2894
00000002_000.png,No Finding,0,2,081Y,F,AP,2500
00000003_000.png,Hernia|Mass|Nodule,0,3,74,F,LL,2500
"""


def test_read_nih(tmp_path):
    (tmp_path / "Data_Entry.csv").write_text(NIH)
    table = radiographs.read_nih(tmp_path / "Data_Entry.csv", tmp_path / "images")
    found = ["No Finding", "Cardiomegaly", "Mass", "Nodule", "Emphysema", "Hernia"]  # in the file, NIH order
    assert list(table.columns) == [*radiographs.META_COLUMNS, *found]
    assert table["group"].tolist() == ["1", "1", "2"]
    assert table["path"].tolist()[2] == os.path.join(str(tmp_path), "images", "00000002_000.png")
    assert table[["Sex", "Age", "view", "projection"]].values.tolist() == [
        ["Male", 58.0, "Frontal", "PA"], ["Male", 58.0, "Frontal", "PA"], ["Female", 81.0, "Frontal", "AP"]
    ]
    np.testing.assert_array_equal(table[found].to_numpy(), [[0, 1, 0, 0, 0, 0], [0, 1, 0, 0, 1, 0], [1, 0, 0, 0, 0, 0]])
    every = radiographs.read_nih(tmp_path / "Data_Entry.csv", tmp_path / "images", frontal_only=False)
    assert radiographs.finding_columns(every) == found and every["view"].iloc[3] == "Lateral"
    np.testing.assert_array_equal(every[found].iloc[3].to_numpy(), [0, 0, 1, 1, 0, 1])


@pytest.mark.parametrize(
    "line, pattern",
    [
        ("00000004_000.png,No Finding|Mass,0,4,50,F,PA,1", r"line 6: Finding Labels 'No Finding\|Mass'"),
        ("00000004_000.png,,0,4,50,F,PA,1", r"line 6: Finding Labels ''; expected findings separated by '\|'"),
    ],
)
def test_read_nih_errors(tmp_path, line, pattern):
    (tmp_path / "nih.csv").write_text(NIH + line + "\n")
    with pytest.raises(ValueError, match=pattern):
        radiographs.read_nih(tmp_path / "nih.csv", tmp_path)
    (tmp_path / "wrong.csv").write_text("Image,Labels\na.png,Mass\n")
    with pytest.raises(ValueError, match=r"wrong\.csv: not a NIH ChestX-ray14 table; missing columns \['Image Index'"):
        radiographs.read_nih(tmp_path / "wrong.csv", tmp_path)


# ----------------------------------------------------------------------------- COVID chest X-ray collection

CHEST = [
    ("images/ieee8023_auntminnie-a-2020_01_28_x.png", "ieee8023", "COVID-19", "PA", "M", "65.0"),
    ("images/ieee8023_auntminnie-b-2020_01_28_x.png", "ieee8023", "COVID-19", "PA", "M", "65.0"),
    ("images/ieee8023_covid-19-pneumonia-7-L.png", "ieee8023", "COVID-19", "L", "M", "70.0"),
    ("images/figure1_COVID-00003a.png", "figure1", "", "AP erect", "", "50+"),
    ("images/figure1_COVID-00023.png", "figure1", "No finding", "", "F", "early 40s"),
    ("images/actualmed_CR.1.2.840.113564.1.png", "actualmed", "No Finding", "AP Supine", "", ""),
    ("images/ieee8023_SARS-Fig8a-day0.png", "ieee8023", "SARS", "PA", "F", "29"),
    ("images/ieee8023_x.png", "ieee8023", "Legionella", "PA", "F", "30"),
]


@pytest.fixture
def chest_folder(tmp_path: Path) -> Path:
    lines = ["path,source,finding,view,sex,age,license"] + [",".join(row) + "," for row in CHEST]
    (tmp_path / "metadata.csv").write_text("\n".join(lines) + "\n")
    for row in CHEST:
        png(tmp_path / row[0])
    return tmp_path


def test_read_chest_xray(chest_folder):
    table = radiographs.read_chest_xray(chest_folder)
    assert len(table) == 7 and "images/ieee8023_covid-19-pneumonia-7-L.png" not in " ".join(table["path"])
    columns = ["No Finding", "COVID-19", "SARS", "Pneumonia", "Pneumonia (viral)", "Legionella"]
    assert radiographs.finding_columns(table) == columns
    labels = table[columns].to_numpy()
    unknown = table["path"].str.endswith("COVID-00003a.png").to_numpy()
    assert np.isnan(labels[unknown]).all() and not np.isnan(labels[~unknown]).any()
    expected_positives = {"COVID-19": 3, "SARS": 3, "No Finding": 1, "No finding": 1, "Legionella": 1}
    assert labels[~unknown].sum(axis=1).tolist() == [expected_positives[row[2]] for row in CHEST if row[2] and row[3] != "L"]
    assert table.loc[table["path"].str.endswith("COVID-00023.png"), "No Finding"].item() == 1.0
    assert table.loc[table["path"].str.contains("actualmed"), "No Finding"].item() == 1.0
    assert table["view"].tolist() == ["Frontal", "Frontal", "Frontal", "Unknown", "Frontal", "Frontal", "Frontal"]
    assert table["Sex"].tolist() == ["Male", "Male", "Unknown", "Female", "Unknown", "Female", "Female"]
    np.testing.assert_array_equal(table["Age"].to_numpy(), [65, 65, 50, 40, np.nan, 29, 30])
    assert table["group"].iloc[0] == table["group"].iloc[1] == "ieee8023_auntminnie-2020_01_28_x"
    lateral = radiographs.read_chest_xray(chest_folder, frontal_only=False)
    assert len(lateral) == 8 and lateral["view"].iloc[2] == "Lateral"


@pytest.mark.parametrize(
    "finding, expected",
    [  # columns: Pneumonia, Pneumonia (bacterial), Pneumonia (viral), COVID-19, No Finding
        ("COVID-19", [1, 0, 1, 1, 0]),
        ("Pneumonia (viral)", [1, 0, 1, np.nan, 0]),  # a viral pneumonia of unknown virus
        ("Pneumonia (bacterial)", [1, 1, 0, 0, 0]),
        ("Pneumonia", [1, np.nan, np.nan, np.nan, 0]),  # cause unknown: no subtype is learnt from it
        ("No finding", [0, 0, 0, 0, 1]),
        ("", [np.nan] * 5),
    ],
)
def test_a_chest_finding_implies_the_broader_ones_and_leaves_the_narrower_unknown(tmp_path, finding, expected):
    findings = ["COVID-19", "Pneumonia (viral)", "Pneumonia (bacterial)", "Pneumonia", "No finding", ""]
    lines = ["path,source,finding,view,sex,age,license"] + [f"images/kermany_{k}.jpg,kermany,{f},,,," for k, f in enumerate(findings)]
    (tmp_path / "metadata.csv").write_text("\n".join(lines) + "\n")
    table = radiographs.read_chest_xray(tmp_path, check_files=False)
    row = table.loc[findings.index(finding), ["Pneumonia", "Pneumonia (bacterial)", "Pneumonia (viral)", "COVID-19", "No Finding"]]
    np.testing.assert_array_equal(row.to_numpy(np.float64), np.array(expected, np.float64))


def test_read_chest_xray_checks_files(chest_folder):
    (chest_folder / CHEST[1][0]).unlink()
    with pytest.raises(FileNotFoundError, match="auntminnie-b"):
        radiographs.read_chest_xray(chest_folder)
    assert len(radiographs.read_chest_xray(chest_folder, check_files=False)) == 7
    with pytest.raises(FileNotFoundError, match="metadata.csv"):
        radiographs.read_chest_xray(chest_folder / "images")


@pytest.mark.parametrize(
    "name, group",
    [
        ("images/ieee8023_auntminnie-c-2020_01_28_23_51_6665_2020_01_28_Vietnam_coronavirus.png",
         "ieee8023_auntminnie-2020_01_28_23_51_6665_2020_01_28_Vietnam_coronavirus"),
        ("ieee8023_nejmc2001573_f1a.png", "ieee8023_nejmc2001573"),
        ("ieee8023_nejmoa2001191_f1-PA.png", "ieee8023_nejmoa2001191"),
        ("ieee8023_nejmoa2001191_f4.png", "ieee8023_nejmoa2001191"),
        ("ieee8023_lancet-case2b.png", "ieee8023_lancet-case2"),
        ("ieee8023_SARS-10.1148rg.242035193-g04mr34g04b-Fig4b-day12.png", "ieee8023_SARS-10.1148rg.242035193-g04mr34g04-Fig4"),
        ("ieee8023_SARS-10.1148rg.242035193-g04mr34g0-Fig8c-day10.png", "ieee8023_SARS-10.1148rg.242035193-g04mr34g0-Fig8"),
        ("ieee8023_ryct.2020200034.fig5-day4.png", "ieee8023_ryct.2020200034.fig5"),
        ("ieee8023_ryct.2020200034.fig2.png", "ieee8023_ryct.2020200034.fig2"),
        ("ieee8023_jkms-35-e79-g001-l-b.png", "ieee8023_jkms-35-e79-g001-l"),
        ("ieee8023_1-s2.0-S1684118220300682-main.pdf-003-b2.png", "ieee8023_1-s2.0-S1684118220300682-main.pdf-003"),
        ("ieee8023_covid-19-pneumonia-15-L.png", "ieee8023_covid-19-pneumonia-15"),
        ("ieee8023_streptococcus-pneumoniae-pneumonia-temporal-evolution-1-day3.png",
         "ieee8023_streptococcus-pneumoniae-pneumonia-temporal-evolution-1"),
        ("ieee8023_7C69C012-7479-493F-8722-ABC29C60A2DD.png", "ieee8023_7C69C012-7479-493F-8722-ABC29C60A2DD"),
        ("figure1_COVID-00039c.png", "figure1_COVID-00039"),
        ("actualmed_CR.1.2.840.113564.1722810170.20200320011259312440.1003000225002.png",
         "actualmed_CR.1.2.840.113564.1722810170.20200320011259312440.1003000225002"),
        ("plain.png", "plain"),
    ],
)
def test_chest_xray_group_rule(name, group):
    assert radiographs.chest_xray_group(name) == group


# ----------------------------------------------------------------------------- class folders (RIAWELC)


def test_class_sub_folders(tmp_path):
    for name in ("CR/bam5_Img1_A80_S2_[4][21].png", "CR/bam5_Img1_A80_S2_[5][18].png", "lp/RRT-13R_Img1_A80_S1_[8][11].png",
                 "ND/RRT-12R_Img1_A80_S2_[1][56].png", "PO/other.png"):
        png(tmp_path / name)
    (tmp_path / "notes").mkdir()  # a folder without images is not a class
    table = radiographs.read_class_folders(tmp_path)
    assert list(table.columns) == ["path", "label", "group"]
    assert table["label"].tolist() == ["CR", "CR", "LP", "ND", "PO"]
    assert list(table["label"].cat.categories) == ["CR", "LP", "ND", "PO"] and table["label"].cat.codes.tolist() == [0, 0, 1, 2, 3]
    assert table["group"].tolist() == ["bam5", "bam5", "RRT-13R", "RRT-12R", "other"]
    assert table["path"].iloc[2] == str(tmp_path / "lp" / "RRT-13R_Img1_A80_S1_[8][11].png")
    chosen = radiographs.read_class_folders(tmp_path, classes=["po", "Cr"])
    assert chosen["label"].tolist() == ["PO", "CR", "CR"] and list(chosen["label"].cat.categories) == ["PO", "CR"]


def test_class_prefixes(tmp_path):
    for name in ("cr_01.png", "cr_example.png", "LP_01.png", "nd_01.png", "po_02.png", "po_01.png"):
        png(tmp_path / name)
    table = radiographs.read_class_folders(tmp_path)
    assert table["label"].tolist() == ["CR", "CR", "LP", "ND", "PO", "PO"]
    assert [Path(p).name for p in table["path"]] == ["cr_01.png", "cr_example.png", "LP_01.png", "nd_01.png", "po_01.png", "po_02.png"]
    assert table["group"].tolist() == ["cr_01", "cr_example", "LP_01", "nd_01", "po_01", "po_02"]


@pytest.mark.parametrize(
    "names, classes, error, pattern",
    [
        (["CR/a.png", "ND/b.png"], ["CR", "XX"], ValueError, r"classes must be distinct names from \['CR', 'ND'\] \(case-insensitive\), got \['CR', 'XX'\]"),
        (["CR/a.png", "ND/b.png"], ["CR", "cr"], ValueError, r"distinct names"),
        (["CR/a.png", "cr_01.png"], None, ValueError, r"holds both images and image folders \['CR'\]"),
        (["cr_01.png", "example.png"], None, ValueError, r"1 image\(s\) .* have no class prefix .*example\.png"),
        (["notes.txt"], None, ValueError, r"no images"),
    ],
)
def test_class_folder_errors(tmp_path, names, classes, error, pattern):
    for name in names:
        png(tmp_path / name) if name.endswith(".png") else (tmp_path / name).write_text("x")
    with pytest.raises(error, match=pattern):
        radiographs.read_class_folders(tmp_path, classes=classes)


@pytest.mark.parametrize(
    "name, group",
    [("RRT-30R_Img1_A80_S1_[9][58].png", "RRT-30R"), ("bam5_Img3_A80_S3_[3][17].png", "bam5"), ("cr_01.png", "cr_01")],
)
def test_patch_group(name, group):
    assert radiographs.patch_group(name) == group


# ----------------------------------------------------------------------------- labels


def test_defect_labels_of_a_wide_table():
    wide = pd.DataFrame({1: ["1 3", "", ""], 2: ["", "", "5 2"], "Height": 4, "Width": 4}, index=pd.Index(["a", "b", "c"], name="ImageId"))
    labels = radiographs.defect_labels(wide)
    assert labels.to_dict() == {"a": 1, "b": 0, "c": 1} and labels.name == "defect" and labels.dtype == np.int64
    with pytest.raises(ValueError, match="no class columns"):
        radiographs.defect_labels(wide[["Height", "Width"]])


def test_label_summary_counts():
    table = pd.DataFrame({"path": ["a", "b", "c", "d"], "A": [1.0, 0.0, np.nan, 1.0], "B": [np.nan] * 4, "C": [0.0, 0.0, 0.0, 1.0]})
    summary = radiographs.label_summary(table, ["A", "B", "C"])
    assert summary[["positives", "negatives", "ignored"]].to_dict("index") == {
        "A": {"positives": 2, "negatives": 1, "ignored": 1},
        "B": {"positives": 0, "negatives": 0, "ignored": 4},
        "C": {"positives": 1, "negatives": 3, "ignored": 0},
    }
    assert summary.loc["A", "prevalence"] == pytest.approx(2 / 3) and np.isnan(summary.loc["B", "prevalence"])
    pd.testing.assert_frame_equal(radiographs.label_summary(table), summary)  # default: every non-meta column


def test_label_summary_rejects_raw_values_and_missing_columns():
    table = pd.DataFrame({"A": [1.0, -1.0]})
    with pytest.raises(ValueError, match=r"label column 'A' holds \[-1\.0\]; expected 0, 1 or NaN"):
        radiographs.label_summary(table, ["A"])
    with pytest.raises(ValueError, match=r"label columns \['Z'\] are not in the table"):
        radiographs.label_summary(table, ["Z"])


# ----------------------------------------------------------------------------- pre-training corpora


def test_pretraining_corpus_chexpert_uses_the_official_division(tmp_path):
    write_chexpert(tmp_path)
    write_chexpert(tmp_path, rows=ROWS[:1], name="valid.csv")
    train, val, columns = radiographs.pretraining_corpus("chexpert", tmp_path / "CheXpert-v1.0-small", policy="zeros")
    assert columns == FINDINGS and len(train) == 4 and len(val) == 1  # lateral row dropped
    assert train.loc[train["path"].str.contains("patient00002/study2"), "Cardiomegaly"].item() == 0.0  # uncertain -> 0
    assert train["path"].iloc[0].startswith(str(tmp_path))


def test_pretraining_corpus_chexpert_without_valid_splits_by_patient(tmp_path):
    write_chexpert(tmp_path)
    train, val, _ = radiographs.pretraining_corpus("chexpert", tmp_path / "CheXpert-v1.0-small", val_fraction=0.4, seed=1)
    assert len(train) + len(val) == 4 and len(val) > 0
    assert not set(train["group"]) & set(val["group"])


def test_pretraining_corpus_chest_xray_splits_by_case(chest_folder):
    train, val, columns = radiographs.pretraining_corpus("chest-xray", chest_folder, val_fraction=0.3, seed=0)
    assert columns == ["No Finding", "COVID-19", "SARS", "Pneumonia", "Pneumonia (viral)", "Legionella"]
    assert len(train) + len(val) == 7 and not set(train["group"]) & set(val["group"])


@pytest.mark.parametrize("with_splits", [True, False])
def test_pretraining_corpus_of_a_severstal_dataset(tmp_path, with_splits):
    from helpers.core import rle, severstal

    ids = [f"C{k:04d}_y0000_x0000.png" for k in range(6)]
    for k, image_id in enumerate(ids):
        png(tmp_path / "train_images" / image_id, value=10 * k, shape=(8, 8))
    wide = pd.DataFrame({1: [rle.encode(np.eye(8, dtype=np.uint8)) if k % 2 else "" for k in range(6)]}, index=pd.Index(ids, name="ImageId"))
    severstal.write_train_csv(wide, tmp_path / "train.csv")
    severstal.write_classes(tmp_path, {1: "defect"})
    if with_splits:
        table = pd.DataFrame({"split": ["train"] * 4 + ["val"] * 2, "group": ["a", "a", "b", "b", "c", "c"]},
                             index=pd.Index(ids, name="ImageId"))
        severstal.write_splits(tmp_path, table)
    train, val, columns = radiographs.pretraining_corpus("severstal", tmp_path, val_fraction=0.34, seed=0)
    assert columns == ["defect"] and len(train) + len(val) == 6 and len(val) == 2
    labels = pd.concat([train, val])["defect"].sort_index()
    assert labels.tolist() == [0.0, 1.0] * 3  # odd images hold the defect
    if with_splits:
        assert list(val.index) == ids[4:]


def test_pretraining_corpus_names_the_kinds(tmp_path):
    with pytest.raises(ValueError, match=r"kind must be one of \['chexpert', 'chest-xray', 'severstal'\]"):
        radiographs.pretraining_corpus("imagenet", tmp_path)


def test_pretraining_corpus_of_a_severstal_dataset_per_class(tmp_path):
    from helpers.core import rle, severstal

    ids = [f"N{k}.png" for k in range(4)]
    for image_id in ids:
        png(tmp_path / "train_images" / image_id, value=0, shape=(8, 8))
    mask = rle.encode(np.eye(8, dtype=np.uint8))
    wide = pd.DataFrame({1: [mask, "", mask, ""], 2: ["", mask, mask, ""]}, index=pd.Index(ids, name="ImageId"))
    severstal.write_train_csv(wide, tmp_path / "train.csv")
    severstal.write_classes(tmp_path, {1: "inclusion", 2: "scratches"})
    severstal.write_splits(tmp_path, pd.DataFrame({"split": ["train", "train", "train", "val"], "group": ids},
                                                  index=pd.Index(ids, name="ImageId")))
    train, val, columns = radiographs.pretraining_corpus("severstal", tmp_path, per_class=True)
    assert columns == ["inclusion", "scratches"] and list(val.index) == ["N3.png"]
    assert train[columns].to_numpy().tolist() == [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]
    assert val[columns].to_numpy().tolist() == [[0.0, 0.0]]


# ----------------------------------------------------------------------------- hostile tables


def _chexpert_table(tmp_path: Path, text: bytes) -> tuple[Path, object]:
    path = write_chexpert(tmp_path)
    path.write_bytes(text)
    return path, lambda: radiographs.read_chexpert(path)


def _nih_table(tmp_path: Path, text: bytes) -> tuple[Path, object]:
    path = tmp_path / "Data_Entry.csv"
    path.write_bytes(text)
    return path, lambda: radiographs.read_nih(path, tmp_path / "images")


def _chest_table(tmp_path: Path, text: bytes) -> tuple[Path, object]:
    path = tmp_path / "metadata.csv"
    path.write_bytes(text)
    return path, lambda: radiographs.read_chest_xray(tmp_path, check_files=False)


GOOD_TEXT = {
    _chexpert_table: "\n".join([HEADER, *ROWS]) + "\n",
    _nih_table: NIH,
    _chest_table: "path,source,finding,view,sex,age\n" + "".join(",".join(row) + "\n" for row in CHEST),
}


@pytest.mark.parametrize("table", [_chexpert_table, _nih_table, _chest_table])
@pytest.mark.parametrize(
    "encode, pattern",
    [
        (lambda text: b"", r"the file is empty"),
        (lambda text: text.encode("utf-16"), r"looks like UTF-16 text; save it as UTF-8"),
        (lambda text: text.replace("Male", "Mâle").replace(",M,", ",Mâle,").encode("latin-1"), r"line \d+: byte 0xe2 is not UTF-8"),
    ],
)
def test_readers_name_the_file_of_an_empty_utf16_or_latin1_table(tmp_path, table, encode, pattern):
    path, read = table(tmp_path, encode(GOOD_TEXT[table]))
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*" + pattern):
        read()


def test_read_chexpert_names_a_broken_gzip(tmp_path):
    path = tmp_path / "chexpert_train.csv.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("\n".join([HEADER, *ROWS]) + "\n")
    path.write_bytes(path.read_bytes()[:-20])  # truncated download
    with pytest.raises(ValueError, match=re.escape(str(path)) + r": not a readable gzip file"):
        radiographs.read_chexpert(path)


@pytest.mark.parametrize(
    "table, text, pattern",
    [
        (_chexpert_table, "\n".join([HEADER, ROWS[0], chexpert_row("CheXpert-v1.0-small/../../patient00009/x.jpg")]) + "\n",
         r"line 3: Path 'CheXpert-v1.0-small/\.\./\.\./patient00009/x\.jpg' points outside"),
        (_nih_table, NIH + "../00000009_000.png,Mass,0,9,50,F,PA,1\n", r"line 6: Image Index '\.\./00000009_000\.png' points outside"),
        (_nih_table, NIH + "/etc/00000009_000.png,Mass,0,9,50,F,PA,1\n", r"line 6: Image Index '/etc/00000009_000\.png' points outside"),
        (_chest_table, GOOD_TEXT[_chest_table] + "images/../../x.png,x,COVID-19,PA,F,30\n",
         r"line 10: path 'images/\.\./\.\./x\.png' points outside"),
    ],
)
def test_readers_refuse_paths_outside_their_root(tmp_path, table, text, pattern):
    path, read = table(tmp_path, text.encode())
    with pytest.raises(ValueError, match=re.escape(str(path)) + " " + pattern):
        read()


def test_paths_with_dot_dot_inside_the_root_are_fine(tmp_path):
    text = NIH + "sub/../00000009_000.png,Mass,0,9,50,F,PA,1\n"
    _, read = _nih_table(tmp_path, text.encode())
    assert read()["path"].iloc[-1] == os.path.join(str(tmp_path), "images", "sub/../00000009_000.png")


@pytest.mark.parametrize(
    "table, text, pattern",
    [
        (_chexpert_table, "\n".join([HEADER, *ROWS, ROWS[1]]) + "\n", r"line 7: Path '.*study2/view1_frontal\.jpg' is also on line 3"),
        (_nih_table, NIH + "00000001_000.png,Mass,0,1,58,M,PA,2682\n", r"line 6: Image Index '00000001_000\.png' is also on line 2"),
        (_chest_table, GOOD_TEXT[_chest_table] + ",".join(CHEST[0]) + "\n", r"line 10: path '.*auntminnie-a.*' is also on line 2"),
    ],
)
def test_readers_refuse_an_image_listed_twice(tmp_path, table, text, pattern):
    path, read = table(tmp_path, text.encode())
    with pytest.raises(ValueError, match=re.escape(str(path)) + " " + pattern):
        read()


def test_chest_xray_groups_by_the_patient_column_when_there_is_one(tmp_path):
    lines = ["path,source,finding,view,sex,age,license,patient",
             "images/kermany_person1_bacteria_1.jpg,kermany,Pneumonia,,,,,kermany:person1",
             "images/kermany_person1_bacteria_2.jpg,kermany,Pneumonia,,,,,kermany:person1",
             "images/kermany_person2_virus_1.jpg,kermany,Pneumonia,,,,,kermany:person2",
             "images/figure1_COVID-00003a.png,figure1,COVID-19,,,,,"]
    (tmp_path / "metadata.csv").write_text("\n".join(lines) + "\n")
    table = radiographs.read_chest_xray(tmp_path, check_files=False)
    assert table["group"].tolist() == ["kermany:person1", "kermany:person1", "kermany:person2", "figure1_COVID-00003"]


def test_class_prefix_must_not_be_empty(tmp_path):
    for name in ("cr_01.png", "_cr_02.png"):
        png(tmp_path / name)
    with pytest.raises(ValueError, match=r"1 image\(s\) .* have no class prefix .*_cr_02\.png"):
        radiographs.read_class_folders(tmp_path)


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"val_fraction": 1.5}, r"val_fraction must be in \[0, 1\), got 1\.5"),
        ({"seed": -1}, r"seed must be an integer >= 0, got -1"),
        ({"kind": "imagenet"}, r"kind must be one of \['chexpert', 'chest-xray', 'severstal'\], got 'imagenet'"),
    ],
)
def test_pretraining_corpus_checks_its_arguments_even_with_an_official_division(tmp_path, kwargs, pattern):
    write_chexpert(tmp_path)
    write_chexpert(tmp_path, rows=ROWS[:1], name="valid.csv")
    with pytest.raises(ValueError, match=pattern):
        radiographs.pretraining_corpus(**{"kind": "chexpert", "folder": tmp_path / "CheXpert-v1.0-small", **kwargs})
