"""Multi-label radiograph corpora and industrial classification tables.

Chest radiograph readers return one row per image with the columns

- ``path``: absolute image path (str);
- ``group``: patient / case key, for group splits (:func:`helpers.data.splits.group_split`);
- ``Sex`` (``Male`` / ``Female`` / ``Unknown``), ``Age`` (float, NaN = unknown);
- ``view`` (``Frontal`` / ``Lateral`` / ``Unknown``) and ``projection`` (the source's own
  position text, e.g. ``AP``, ``PA``, ``AP Supine``; ``""`` if none);
- then one float32 column per finding (:func:`finding_columns`): 1 positive, 0 negative,
  NaN = ignored (masked out of the loss).

Readers: :func:`read_chexpert` (CheXpert CSV, uncertainty policies of
:func:`apply_uncertainty_policy`), :func:`read_nih` (NIH ChestX-ray14) and
:func:`read_chest_xray` (the small COVID chest X-ray collection). Industrial tables:
:func:`read_class_folders` (RIAWELC-style class folders or class prefixes; ``path``,
``label``, ``group``) and :func:`defect_labels` (image-level defect / defect-free labels of a
Severstal-layout table). :func:`label_summary` counts positives, negatives and ignored labels.

:func:`pretraining_corpus` gives any of these corpora as a training and a validation table with
their label columns, ready for :func:`helpers.data.pipeline.make_image_dataset`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from helpers.core import checks, files, severstal
from helpers.data import eda, splits

__all__ = [
    "CHEST_XRAY_FINDINGS",
    "CHEST_XRAY_PARENTS",
    "CHEXPERT_COLUMNS",
    "CHEXPERT_FINDINGS",
    "LABEL_POLICIES",
    "META_COLUMNS",
    "NIH_FINDINGS",
    "RIAWELC_CLASSES",
    "apply_uncertainty_policy",
    "chest_xray_group",
    "defect_labels",
    "finding_columns",
    "label_summary",
    "patch_group",
    "PRETRAINING_CORPORA",
    "pretraining_corpus",
    "read_chest_xray",
    "read_chexpert",
    "read_class_folders",
    "read_nih",
]

CHEXPERT_FINDINGS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
CHEXPERT_COLUMNS: tuple[str, ...] = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_FINDINGS)
LABEL_POLICIES = ("ones", "zeros", "ignore")
META_COLUMNS: tuple[str, ...] = ("path", "group", "Sex", "Age", "view", "projection")
NIH_FINDINGS: tuple[str, ...] = (
    "No Finding",
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)
CHEST_XRAY_FINDINGS: tuple[str, ...] = (
    "No Finding",
    "COVID-19",
    "SARS",
    "ARDS",
    "Pneumocystis",
    "Streptococcus",
    "Pneumonia",
    "Pneumonia (bacterial)",
    "Pneumonia (viral)",
)
# finding -> the broader finding it implies (a bacterial pneumonia is a pneumonia, COVID-19 a viral one)
CHEST_XRAY_PARENTS: dict[str, str] = {
    "COVID-19": "Pneumonia (viral)",
    "SARS": "Pneumonia (viral)",
    "Streptococcus": "Pneumonia (bacterial)",
    "Pneumocystis": "Pneumonia",
    "Pneumonia (bacterial)": "Pneumonia",
    "Pneumonia (viral)": "Pneumonia",
}
RIAWELC_CLASSES: dict[str, str] = {"CR": "crack", "LP": "lack of penetration", "ND": "no defect", "PO": "porosity"}

PathLike = str | os.PathLike
_UNCERTAIN_AS = {"ones": 1.0, "zeros": 0.0, "ignore": np.nan}
_SEX = {"m": "Male", "male": "Male", "f": "Female", "female": "Female"}
_FRONTAL = ("PA", "AP")
_LATERAL = ("L", "LL", "RL", "LATERAL")


# ----------------------------------------------------------------------------- label values


def _policy(policy: object, allow_raw: bool = False) -> str | None:
    if allow_raw and policy is None:
        return None
    try:
        return str(checks.choice("policy", policy, LABEL_POLICIES))
    except ValueError as err:
        raise ValueError(f"{err}{' (None keeps the raw 1/0/-1/NaN values)' if allow_raw else ''}") from None


def apply_uncertainty_policy(values: np.ndarray, policy: str) -> np.ndarray:
    """Float32 training targets (any shape) from CheXpert label values.

    ``1.0`` -> 1, ``0.0`` -> 0, blank/NaN -> 0 (a finding not mentioned is negative) and
    uncertain ``-1.0`` -> 1 for ``"ones"`` (U-Ones, as in the reproduced paper), 0 for
    ``"zeros"`` or NaN for ``"ignore"`` (masked out of the loss). Other values raise
    ``ValueError`` naming them.
    """
    policy = _policy(policy)
    try:
        array = np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError):
        raise ValueError("label values must be numbers: 1.0, 0.0, -1.0 (uncertain) or blank/NaN") from None
    blank = np.isnan(array)
    known = blank | (array == 1.0) | (array == 0.0) | (array == -1.0)
    if not known.all():
        bad = np.unique(array[~known])
        raise ValueError(
            f"label values must be 1.0, 0.0, -1.0 (uncertain) or blank/NaN; found {bad[:8].tolist()}"
        )
    out = np.where(blank, np.float32(0.0), array).astype(np.float32)
    out[array == -1.0] = _UNCERTAIN_AS[policy]
    return out


def finding_columns(table: pd.DataFrame) -> list[str]:
    """The label columns of a reader's table: every column not in :data:`META_COLUMNS`, in order."""
    return [c for c in table.columns if c not in META_COLUMNS]


def label_summary(table: pd.DataFrame, label_columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Per label: ``positives``, ``negatives``, ``ignored`` (NaN) counts and ``prevalence``.

    ``prevalence`` = positives / (positives + negatives) (NaN when every value is ignored).
    Values must be 0, 1 or NaN (apply an uncertainty policy first); ``label_columns``
    defaults to :func:`finding_columns`.
    """
    columns = finding_columns(table) if label_columns is None else list(label_columns)
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"label columns {missing} are not in the table; columns: {list(table.columns)}")
    rows = {}
    for column in columns:
        values = pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~(np.isnan(values) | (values == 0) | (values == 1))
        bad |= table[column].notna().to_numpy() & np.isnan(values)
        if bad.any():
            found = pd.unique(table[column][bad])[:5].tolist()
            raise ValueError(
                f"label column {column!r} holds {found}; expected 0, 1 or NaN (apply an uncertainty policy first)"
            )
        positives, negatives = int((values == 1).sum()), int((values == 0).sum())
        known = positives + negatives
        rows[column] = (positives, negatives, int(np.isnan(values).sum()), positives / known if known else np.nan)
    summary = pd.DataFrame.from_dict(rows, orient="index", columns=["positives", "negatives", "ignored", "prevalence"])
    summary.index.name = "label"
    return summary


# ----------------------------------------------------------------------------- shared table pieces


def _image_paths(root: PathLike, relative: pd.Series, csv_path: Path, column: str) -> pd.Series:
    """``root/relative`` per row, as text; refuses paths that leave ``root`` and images listed twice.

    ``ValueError`` names the CSV file, line (row + 2) and column. Only rows that could leave
    ``root`` (absolute, or holding ``..``) go through :func:`helpers.core.files.inside` (tables of
    200,000 rows stay fast).
    """
    root = os.path.abspath(root)
    relative = relative.fillna("").astype(str)
    candidates = (relative.str.contains("..", regex=False) | relative.str.startswith(("/", os.sep))).to_numpy(bool)
    for row in np.flatnonzero(candidates):
        files.inside(root, relative.iloc[row], what=f"{csv_path} line {row + 2}: {column}")
    paths = root + os.sep + relative
    twice = paths.duplicated(keep="first").to_numpy()
    if twice.any():
        row = int(np.flatnonzero(twice)[0])
        first = int(np.flatnonzero((paths == paths.iloc[row]).to_numpy())[0])
        raise ValueError(f"{csv_path} line {row + 2}: {column} {relative.iloc[row]!r} is also on line {first + 2}; "
                         "each image may be listed once")
    return paths


def _require(path: Path, columns: Sequence[str], expected: Sequence[str], layout: str) -> None:
    missing = [c for c in expected if c not in columns]
    if missing:
        raise ValueError(f"{path}: not a {layout} table; missing columns {missing} (found {list(columns)})")


def _sex(values: pd.Series) -> pd.Series:
    """``Male`` / ``Female`` from M/F/Male/Female (any case), ``Unknown`` when blank; other text kept."""
    text = values.fillna("").astype(str).str.strip()
    return text.str.lower().map({**_SEX, "": "Unknown", "unknown": "Unknown"}).fillna(text)


def _age(values: pd.Series) -> pd.Series:
    """Float ages; text such as ``"50+"``, ``"058Y"``, ``"early 40s"`` gives its first number, else NaN."""
    numbers = pd.to_numeric(values, errors="coerce").astype(np.float64)
    text = values[numbers.isna()].astype(str).str.extract(r"(\d+(?:\.\d+)?)", expand=False)
    numbers[text.index] = pd.to_numeric(text, errors="coerce")
    return numbers


def _view(projection: pd.Series) -> pd.Series:
    """``Frontal`` / ``Lateral`` / ``Unknown`` from a position text (``PA``, ``AP Supine``, ``L``, ...)."""
    text = projection.fillna("").astype(str).str.strip().str.upper()
    first = text.map(lambda t: t.split()[0] if t.split() else "")  # a blank column stays text
    view = pd.Series("Unknown", index=projection.index, dtype=object)
    view[first.isin(_FRONTAL)] = "Frontal"
    view[first.isin(_LATERAL)] = "Lateral"
    return view


def _one_hot(findings: list[list[str]], known: Sequence[str], index: pd.Index) -> pd.DataFrame:
    """Float32 0/1 columns of the findings present (known order first, others sorted)."""
    present = {f for row in findings for f in row}
    order = [f for f in known if f in present] + sorted(present - set(known))
    position = {f: k for k, f in enumerate(order)}
    values = np.zeros((len(findings), len(order)), dtype=np.float32)
    for row, names in enumerate(findings):
        values[row, [position[f] for f in names]] = 1.0
    return pd.DataFrame(values, columns=order, index=index)


def _ancestors(finding: str, parents: dict[str, str]) -> list[str]:
    chain = []
    while finding in parents and parents[finding] not in chain:
        finding = parents[finding]
        chain.append(finding)
    return chain


def _hierarchical_labels(findings: Sequence[str], known: Sequence[str], parents: dict[str, str],
                         index: pd.Index) -> pd.DataFrame:
    """One finding per row (``""`` = unknown) as 0/1 columns: the finding and every finding it implies
    (``parents``) are 1; the narrower findings under it are unknown (NaN: a "Pneumonia" of unknown
    cause is neither bacterial nor viral for the loss); a blank row is NaN throughout."""
    labels = _one_hot([[f, *_ancestors(f, parents)] if f else [] for f in findings], known, index)
    for column in labels.columns:
        for broader in _ancestors(column, parents):
            labels.loc[np.asarray(findings) == broader, column] = np.nan
    labels.loc[np.asarray(findings) == ""] = np.nan
    return labels


def _finish(meta: dict[str, object], labels: pd.DataFrame, frontal_only: bool, check_files: bool) -> pd.DataFrame:
    table = pd.concat([pd.DataFrame(meta, index=labels.index), labels], axis=1)
    if frontal_only:
        table = table[table["view"] != "Lateral"]
    if check_files:
        missing = [p for p in table["path"] if not os.path.isfile(p)]
        if missing:
            raise FileNotFoundError(f"{len(missing)} image(s) of the table are missing, e.g. {missing[:3]}")
    return table.reset_index(drop=True)


# ----------------------------------------------------------------------------- CheXpert


def _chexpert_values(csv_path: Path, raw: pd.DataFrame) -> np.ndarray:
    """Float32 ``(N, 14)`` label values of a CheXpert table read as text; a bad value raises naming its line."""
    values = np.empty((len(raw), len(CHEXPERT_FINDINGS)), dtype=np.float32)
    for k, column in enumerate(CHEXPERT_FINDINGS):
        text = raw[column].fillna("").astype(str)
        numbers = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)  # spaces around are fine
        unread = np.flatnonzero(np.isnan(numbers) & (text != "").to_numpy())
        words = np.zeros(len(text), dtype=bool)  # text that is neither blank nor a number
        words[unread] = (text.iloc[unread].str.strip() != "").to_numpy()
        bad = words | ~(np.isnan(numbers) | np.isin(numbers, (1.0, 0.0, -1.0)))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            shown = f"{numbers[row]:g}" if not np.isnan(numbers[row]) else repr(raw[column].iloc[row])
            raise ValueError(
                f"{csv_path} line {row + 2}: {column} = {shown}; allowed 1.0, 0.0, -1.0 (uncertain) or blank"
            )
        values[:, k] = numbers
    return values


def read_chexpert(
    csv_path: PathLike,
    policy: str | None = "ones",
    frontal_only: bool = True,
    image_root: PathLike | None = None,
    check_files: bool = False,
) -> pd.DataFrame:
    """Read a CheXpert label CSV (``Path,Sex,Age,Frontal/Lateral,AP/PA`` + :data:`CHEXPERT_FINDINGS`).

    ``path`` = ``image_root / Path`` (the CSV's ``Path`` starts with the dataset folder, e.g.
    ``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg``); default
    ``image_root`` = the parent of the folder holding the CSV. ``group`` = the patient id
    (``patient00001``), ``view`` = ``Frontal/Lateral``, ``projection`` = ``AP/PA``. Labels
    follow ``policy`` (:func:`apply_uncertainty_policy`; ``None`` keeps the raw
    1/0/-1/NaN values). ``frontal_only`` drops lateral views. Images are not opened;
    ``check_files`` checks that they exist. Wrong layouts, bad values, a ``Path`` that leaves
    ``image_root`` (``..``) or one listed twice raise ``ValueError`` naming the file (and line);
    the table must be UTF-8 (plain or ``.gz``).
    """
    policy = _policy(policy, allow_raw=True)
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"CheXpert label table not found: {csv_path}")
    raw = files.read_csv(csv_path, dtype=str, keep_default_na=False)
    _require(csv_path, raw.columns.tolist(), CHEXPERT_COLUMNS, "CheXpert label")
    raw = raw[list(CHEXPERT_COLUMNS)]
    values = _chexpert_values(csv_path, raw)
    group = raw["Path"].str.extract(r"(patient\d+)", expand=False)
    view = raw["Frontal/Lateral"].str.strip()
    for ok, what in (
        (group.notna(), "Path has no patientNNNNN folder"),
        (view.isin(["Frontal", "Lateral"]), "Frontal/Lateral must be Frontal or Lateral"),
    ):
        if not ok.all():
            row = int(np.flatnonzero(~ok.to_numpy())[0])
            raise ValueError(f"{csv_path} line {row + 2}: {what}: {raw.iloc[row, :4].tolist()}")
    root = image_root if image_root is not None else csv_path.parent.parent
    meta = {
        "path": _image_paths(root, raw["Path"].str.lstrip("/"), csv_path, "Path"),
        "group": group,
        "Sex": _sex(raw["Sex"]),
        "Age": _age(raw["Age"]),
        "view": view,
        "projection": raw["AP/PA"].str.strip(),
    }
    labels = values if policy is None else apply_uncertainty_policy(values, policy)
    labels = pd.DataFrame(labels, columns=list(CHEXPERT_FINDINGS), index=raw.index)
    return _finish(meta, labels, frontal_only, check_files)


# ----------------------------------------------------------------------------- NIH ChestX-ray14


def read_nih(
    csv_path: PathLike, image_dir: PathLike, frontal_only: bool = True, check_files: bool = False
) -> pd.DataFrame:
    """Read an NIH ChestX-ray14 table (``Image Index,Finding Labels,...,Patient ID,...,View Position``).

    ``Finding Labels`` are ``|``-separated (``No Finding`` alone when none); one 0/1 column
    per finding present in the table (:data:`NIH_FINDINGS` order, others sorted after).
    ``path`` = ``image_dir / Image Index``, ``group`` = ``Patient ID``, ``projection`` =
    ``View Position`` (``PA``/``AP`` = frontal), ``Sex``/``Age`` from ``Patient Gender`` /
    ``Patient Age`` when present. Empty labels, ``No Finding`` together with a finding, an
    ``Image Index`` outside ``image_dir`` or listed twice raise ``ValueError`` naming the line.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"NIH label table not found: {csv_path}")
    raw = files.read_csv(csv_path, dtype=str, keep_default_na=False)
    raw.columns = [c.strip() for c in raw.columns]
    required = ("Image Index", "Finding Labels", "Patient ID", "View Position")
    _require(csv_path, raw.columns, required, "NIH ChestX-ray14")
    findings = [[f.strip() for f in text.split("|") if f.strip()] for text in raw["Finding Labels"]]
    for row, names in enumerate(findings):
        if not names or ("No Finding" in names and len(names) > 1):
            raise ValueError(
                f"{csv_path} line {row + 2}: Finding Labels {raw['Finding Labels'].iloc[row]!r}; expected "
                "findings separated by '|', or 'No Finding' alone"
            )
    blank = pd.Series("", index=raw.index)
    meta = {
        "path": _image_paths(image_dir, raw["Image Index"].str.strip(), csv_path, "Image Index"),
        "group": raw["Patient ID"].str.strip(),
        "Sex": _sex(raw.get("Patient Gender", blank)),
        "Age": _age(raw.get("Patient Age", blank)),
        "view": _view(raw["View Position"]),
        "projection": raw["View Position"].str.strip(),
    }
    return _finish(meta, _one_hot(findings, NIH_FINDINGS, raw.index), frontal_only, check_files)


# ----------------------------------------------------------------------------- COVID chest X-ray collection


def chest_xray_group(name: str) -> str:
    """Case key of a chest-xray file name: ``<source>_<case>`` (see :func:`read_chest_xray`).

    >>> chest_xray_group("images/ieee8023_auntminnie-b-2020_01_28_x.png")
    'ieee8023_auntminnie-2020_01_28_x'
    >>> chest_xray_group("figure1_COVID-00003a.png"), chest_xray_group("ieee8023_covid-19-pneumonia-7-L.png")
    ('figure1_COVID-00003', 'ieee8023_covid-19-pneumonia-7')
    """
    stem = Path(name).stem
    source, _, case = stem.partition("_")
    if not case:
        return stem
    case = re.sub(r"[-_](PA|AP|L)$", "", case)  # view tag of a PA / lateral pair
    case = re.sub(r"[-_]day\d+$", "", case)  # follow-up day of one patient
    case = re.sub(r"(?<=\d)[a-h](?=$|[-_])", "", case)  # panel letter glued to a number: f1a, Fig8a, 00003a
    case = re.sub(r"(?<=[-_])[a-h]\d?(?=$|[-_])", "", case)  # panel token: -a-, -b, -a1, _f4
    case = re.sub(r"[-_]{2,}", lambda m: m.group(0)[0], case).strip("-_")
    return f"{source}_{case or stem}"


def read_chest_xray(folder: PathLike, frontal_only: bool = True, check_files: bool = True) -> pd.DataFrame:
    """Read the chest X-ray collection: ``folder/metadata.csv`` (``path,source,finding,view,sex,age``).

    One 0/1 column per finding (:data:`CHEST_XRAY_FINDINGS` order, unknown findings sorted
    after; ``No finding``/``No Finding`` are one), one finding per row; that finding implies the
    broader ones of :data:`CHEST_XRAY_PARENTS` (COVID-19 -> viral pneumonia -> pneumonia), and the
    narrower ones under it are unknown (NaN); a blank finding is NaN in every column (masked out). ``view`` ``L`` is lateral (dropped by
    ``frontal_only``), ``PA``/``AP ...`` frontal, blank ``Unknown`` (kept). Age text such as
    ``50+`` or ``early 40s`` gives its first number.

    ``group`` is the ``patient`` column where the table has one and it is not blank (as in
    the larger collection, whose patient ids are merged across sources); else a case key
    from the file name (:func:`chest_xray_group`): after the
    source prefix it drops a final view tag (``-PA``, ``-L``), a final ``-dayN`` and figure
    panel tags -- a letter a-h glued to a number (``f1a``, ``Fig8b``, ``COVID-00003a``) or a
    separate one-letter token, optionally with one digit (``auntminnie-a-...``, ``gr2_lrg-b``,
    ``pdf-002-a1``, ``_f4``) -- so panels, views and follow-ups of one figure/case share a
    group; other names (e.g. actualmed's DICOM UIDs) keep their stem. Panels of one figure
    may show different patients: they are grouped together anyway (over-grouping never
    leaks between splits). A ``path`` outside ``folder`` or listed twice raises ``ValueError``
    naming the line.
    """
    folder = Path(folder)
    csv_path = folder / "metadata.csv"
    if not csv_path.is_file():
        raise FileNotFoundError(f"metadata.csv not found in {folder}")
    raw = files.read_csv(csv_path, dtype=str, keep_default_na=False)
    _require(csv_path, raw.columns, ("path", "source", "finding", "view", "sex", "age"), "chest-xray metadata")
    spelling = {f.lower(): f for f in CHEST_XRAY_FINDINGS}
    finding = raw["finding"].str.strip()
    finding = finding.map(lambda f: spelling.get(f.lower(), f))
    labels = _hierarchical_labels(finding.tolist(), CHEST_XRAY_FINDINGS, CHEST_XRAY_PARENTS, raw.index)
    group = raw["path"].map(chest_xray_group)
    if "patient" in raw.columns:
        patient = raw["patient"].fillna("").str.strip()
        group = patient.where(patient != "", group)
    meta = {
        "path": _image_paths(folder, raw["path"].str.strip(), csv_path, "path"),
        "group": group,
        "Sex": _sex(raw["sex"]),
        "Age": _age(raw["age"]),
        "view": _view(raw["view"]),
        "projection": raw["view"].str.strip(),
    }
    return _finish(meta, labels, frontal_only, check_files)


# ----------------------------------------------------------------------------- industrial tables


def patch_group(name: str) -> str:
    """Source radiograph of a RIAWELC patch name (``RRT-30R_Img1_A80_S1_[9][58].png`` -> ``RRT-30R``), else the stem."""
    stem = Path(name).stem
    match = re.match(r"(.+?)_Img\d+_", stem)
    return match.group(1) if match else stem


def read_class_folders(root: PathLike, classes: Sequence[str] | None = None) -> pd.DataFrame:
    """Image classification table ``path, label, group`` of a RIAWELC-style folder.

    Two layouts: class sub-folders (``root/CR/*.png``, ``root/LP/...``) or class prefixes in
    the file names (``root/cr_01.png``: the text before the first ``_``). Class names are
    case-insensitive and come back upper case (``label`` is a categorical in class order,
    so ``label.cat.codes`` are the class indices). ``classes`` restricts and orders them
    (default: every class found, sorted); a class not found raises ``ValueError`` listing
    the allowed ones. ``group`` = source radiograph (:func:`patch_group`). Rows are sorted
    by class, then path.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    folders = sorted(d for d in root.iterdir() if d.is_dir() and files.list_images(d))
    flat = files.list_images(root)
    if folders and flat:
        raise ValueError(
            f"{root} holds both images and image folders {[d.name for d in folders]}; "
            "use either class sub-folders or class prefixes in the file names"
        )
    if folders:
        items = [(d.name.upper(), p) for d in folders for p in files.list_images(d)]
    elif flat:
        unprefixed = [p.name for p in flat if "_" not in p.stem.strip("_") or not p.stem.split("_")[0]]
        if unprefixed:
            raise ValueError(
                f"{len(unprefixed)} image(s) in {root} have no class prefix ('<class>_...'), e.g. {unprefixed[:3]}"
            )
        items = [(p.stem.split("_")[0].upper(), p) for p in flat]
    else:
        raise ValueError(f"no images ({', '.join(files.IMAGE_SUFFIXES)}) in {root} or its sub-folders")
    found = sorted({label for label, _ in items})
    if classes is None:
        order = found
    else:
        order = [str(c).upper() for c in ([classes] if isinstance(classes, str) else classes)]
        unknown = [c for c in order if c not in found]
        if unknown or len(set(order)) != len(order) or not order:
            raise ValueError(f"classes must be distinct names from {found} (case-insensitive), got {order}")
    rank = {c: k for k, c in enumerate(order)}
    items = sorted(((rank[label], str(path.absolute()), label) for label, path in items if label in rank))
    return pd.DataFrame(
        {
            "path": [path for _, path, _ in items],
            "label": pd.Categorical([label for _, _, label in items], categories=order),
            "group": [patch_group(path) for _, path, _ in items],
        }
    )


def defect_labels(wide: pd.DataFrame) -> pd.Series:
    """``ImageId -> 1`` if any class mask of a Severstal-layout table is non-empty, else ``0`` (int).

    ``wide``: :func:`helpers.core.severstal.read_dataset` output (RLE strings in int class
    columns, ``""`` = no defect), e.g. a tiled radiograph dataset for patch classification.
    """
    present = eda.label_sets(wide)
    if present.shape[1] == 0:
        raise ValueError(f"wide table has no class columns (ints 1..C); got columns {list(wide.columns)}")
    return present.any(axis=1).astype(np.int64).rename("defect")


# ----------------------------------------------------------------------------- pre-training corpora

PRETRAINING_CORPORA = ("chexpert", "chest-xray", "severstal")


def pretraining_corpus(
    kind: str,
    folder: PathLike,
    policy: str = "ones",
    frontal_only: bool = True,
    val_fraction: float = 0.1,
    seed: int = 0,
    per_class: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """``(train, val, label_columns)`` tables (``path``, ``group``, labels) of a pre-training corpus.

    ``kind``: ``chexpert`` -- ``folder`` holds ``train.csv`` (and ``valid.csv``: the official
    division, as the paper uses; without it a group split of ``train.csv``), image paths resolved
    against the folder's parent, uncertain labels by ``policy``; ``chest-xray`` -- the
    ``metadata.csv`` layout of :func:`read_chest_xray`, split by case; ``severstal`` -- a
    Severstal-layout dataset (e.g. converted GDXray casting patches) with one label ``defect``
    (:func:`defect_labels`) or, with ``per_class``, one label per class of ``classes.csv``
    (image-level labels, e.g. for Grad-CAM pseudo-masks), split by its ``splits.csv``
    (``train``/``val``) or else by group.
    Group splits send a seeded ``val_fraction`` of the groups to validation.
    """
    checks.choice("kind", kind, PRETRAINING_CORPORA)
    val_fraction, seed = checks.fraction("val_fraction", val_fraction), checks.seed("seed", seed)
    folder = Path(folder)
    if kind == "chexpert":
        table = read_chexpert(folder / "train.csv", policy=policy, frontal_only=frontal_only, image_root=folder.parent)
        if (folder / "valid.csv").is_file():
            val = read_chexpert(folder / "valid.csv", policy=policy, frontal_only=frontal_only, image_root=folder.parent)
            return table, val, finding_columns(table)
    elif kind == "chest-xray":
        table = read_chest_xray(folder, frontal_only=frontal_only)
    else:
        wide = severstal.read_dataset(folder)
        if per_class:
            present = eda.label_sets(wide)
            names = severstal.read_classes(folder)
            labels = {names.get(int(c), f"class {c}"): present[c].astype(np.float32).to_numpy() for c in present.columns}
        else:
            labels = {"defect": defect_labels(wide).astype(np.float32).to_numpy()}
        table = pd.DataFrame({"path": [str(folder / "train_images" / i) for i in wide.index], **labels}, index=wide.index)
        if (folder / "splits.csv").is_file():
            recorded = severstal.read_splits(folder).reindex(wide.index)
            table.insert(1, "group", recorded["group"].to_numpy())
            if set(recorded["split"]) >= {"train", "val"}:
                split = recorded["split"]
                return table[split == "train"], table[split == "val"], list(labels)
        else:
            table.insert(1, "group", list(wide.index))
    split = splits.group_split(table["group"].astype(str), val_fraction=val_fraction, seed=seed)
    return table[split == "train"], table[split == "val"], [c for c in table.columns if c not in META_COLUMNS]
