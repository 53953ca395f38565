"""A deterministic, built-in synthetic chest radiograph corpus in the CheXpert layout.

:func:`make_chexpert_dataset` writes ``<out_dir>/CheXpert-synthetic/`` with
``train/patientNNNNN/studyK/viewJ_frontal.png`` (some ``_lateral``), the same under
``valid/``, and ``train.csv`` / ``valid.csv`` with exactly CheXpert's columns
(:data:`helpers.data.radiographs.CHEXPERT_COLUMNS`, ``Path`` starting with ``CheXpert-synthetic/``),
so :func:`helpers.data.radiographs.read_chexpert` reads it. Patients go to one split only.

Images (:func:`render_chest`) are grey 8-bit radiographs built from an attenuation
("density") map: body and soft tissue, dark lung fields with vessel markings fanning out
of the hila, a bright mediastinum, heart, spine with vertebrae, posterior/anterior ribs,
clavicles, diaphragm domes with a bright abdomen and a gastric bubble, breast shadows,
AP-specific scapulae and magnification; then patient rotation/shift, exposure, detector
blur and noise. Lateral views have their own simpler geometry (one lung field, sternum,
vertebral column, heart anterior-inferior, raised arms). Each finding is drawn where a
radiologist would look for it (:func:`finding_regions` returns where it changed the
image): Cardiomegaly enlarges the heart; Enlarged Cardiomediastinum widens the upper
mediastinum; Lung Opacity adds diffuse soft patches; Lung Lesion nodules/masses; Edema a
bilateral perihilar haze with septal (Kerley B) lines; Consolidation a dense lobar
opacity with air bronchograms; Pneumonia patchy airspace opacity; Atelectasis plate-like
basal bands and often a raised hemidiaphragm; Pneumothorax a pleural edge line with a
dark, marking-free periphery; Pleural Effusion a basal opacity with a meniscus and a
blunted costophrenic angle; Pleural Other pleural thickening / calcified plaques; Fracture
rib discontinuities with a step or callus; Support Devices tubes, lines, ECG leads,
sternotomy wires or a pacemaker. Uncertain labels (-1) are drawn weaker.

Label vectors (:func:`sample_labels`) follow the real CheXpert table: its most frequent
positive-or-uncertain label patterns and their counts, the rest drawn per finding, then
uncertain/positive and explicit-0/blank per finding -- all from the small statistics
table :func:`derive_label_statistics` computed from the real CSV, shipped as
``helpers/data/synth/chexpert_label_stats.json`` (:func:`label_statistics`).

All randomness comes from ``numpy.random.default_rng`` streams seeded by ``(seed, ...)``:
the same arguments give byte-identical files. In :func:`render_chest` the anatomy, the
acquisition, each finding and the noise have their own streams, so a finding can be
switched on or off on a fixed base image.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from helpers.core import checks, files
from helpers.data import radiographs, splits
from helpers.data.synth import steel

__all__ = [
    "DATASET_FOLDER",
    "FINDINGS",
    "MIN_SIZE",
    "PROJECTIONS",
    "SEXES",
    "STATISTICS_FILE",
    "VIEWS",
    "derive_label_statistics",
    "finding_regions",
    "label_statistics",
    "make_chexpert_dataset",
    "render_chest",
    "sample_labels",
]

DATASET_FOLDER = "CheXpert-synthetic"
STATISTICS_FILE = "chexpert_label_stats.json"
FINDINGS = radiographs.CHEXPERT_FINDINGS
VIEWS = ("Frontal", "Lateral")
PROJECTIONS = ("PA", "AP")
SEXES = ("Male", "Female", "Unknown")
MIN_SIZE = 64

# Seed-sequence tags keep the streams of one image independent of one another.
_ANATOMY, _ACQUISITION, _FINDING, _NOISE = 0, 1, 2, 3
_PLAN, _LABELS = 10, 11
_AGE_BIN = 5  # years per age histogram bin


# =========================================================================== label statistics


def _flag_codes(flagged: np.ndarray) -> np.ndarray:
    """Int code of each row of a bool ``(n, 14)`` array (bit 13 = first finding)."""
    weights = 1 << np.arange(flagged.shape[1] - 1, -1, -1, dtype=np.int64)
    return flagged.astype(np.int64) @ weights


def _pattern(code: int) -> str:
    return format(int(code), f"0{len(FINDINGS)}b")


def derive_label_statistics(chexpert_csv: str | os.PathLike, coverage: float = 0.95) -> dict:
    """Small JSON-ready statistics of a real CheXpert label table (the generator's source).

    Keys: ``n_rows``; ``findings`` (order of the pattern strings); ``patterns``
    (``{"0101...": rows}``: the most frequent positive-or-uncertain label patterns, one
    character per finding, most frequent first (ties in pattern order), until they cover
    ``coverage`` of the rows); ``residual``
    (``rows`` not covered and, per finding, how many of them are positive or uncertain);
    ``values`` (per finding the counts of ``positive`` 1.0, ``uncertain`` -1.0,
    ``negative`` 0.0 and ``blank``); ``views`` (Frontal/Lateral rows); ``projection``
    (AP/PA/... among frontal rows); ``sex``; ``age`` (``bin_years``, ``counts`` per bin from
    0); ``studies_per_patient`` and ``views_per_study`` (e.g. ``"FL"`` = a frontal and a
    lateral image).
    """
    coverage = float(coverage)
    if not 0.0 < coverage <= 1.0:
        raise ValueError(f"coverage must be in (0, 1], got {coverage!r}")
    table = radiographs.read_chexpert(chexpert_csv, policy=None, frontal_only=False)
    values = table[list(FINDINGS)].to_numpy(dtype=np.float32)
    flagged = (values == 1.0) | (values == -1.0)
    codes = _flag_codes(flagged)
    unique, counts = np.unique(codes, return_counts=True)
    order = np.lexsort((unique, -counts))
    unique, counts = unique[order], counts[order]
    n_rows = len(table)
    kept = int(np.searchsorted(np.cumsum(counts), coverage * n_rows) + 1)
    kept = min(kept, len(unique))
    residual = ~np.isin(codes, unique[:kept])
    study = table["path"].str.extract(r"(patient\d+[/\\]study\d+)", expand=False)
    initials = table["view"].str[0].groupby(study)
    per_study = initials.agg(lambda views: "".join(sorted(views)))
    studies = study.groupby(table["group"]).nunique().value_counts().sort_index()
    ages = table["Age"].dropna().to_numpy()
    age_counts = np.bincount((ages // _AGE_BIN).astype(int))
    frontal = table["view"] == "Frontal"

    def counts_of(series: pd.Series) -> dict[str, int]:
        return {str(k): int(v) for k, v in series.value_counts().sort_index().items()}

    return {
        "source": f"{Path(chexpert_csv).name}: CheXpert label table, {n_rows} rows",
        "n_rows": n_rows,
        "findings": list(FINDINGS),
        "coverage": round(float(counts[:kept].sum() / n_rows), 4),
        "patterns": {_pattern(c): int(n) for c, n in zip(unique[:kept], counts[:kept])},
        "residual": {
            "rows": int(residual.sum()),
            "flagged": {f: int(n) for f, n in zip(FINDINGS, flagged[residual].sum(axis=0))},
        },
        "values": {
            f: {
                "positive": int((values[:, k] == 1.0).sum()),
                "uncertain": int((values[:, k] == -1.0).sum()),
                "negative": int((values[:, k] == 0.0).sum()),
                "blank": int(np.isnan(values[:, k]).sum()),
            }
            for k, f in enumerate(FINDINGS)
        },
        "views": counts_of(table["view"]),
        "projection": counts_of(table.loc[frontal, "projection"].replace("", "blank")),
        "sex": counts_of(table["Sex"]),
        "age": {"bin_years": _AGE_BIN, "counts": [int(n) for n in age_counts]},
        "studies_per_patient": {str(k): int(v) for k, v in studies.items()},
        "views_per_study": counts_of(per_study),
    }


def label_statistics() -> dict:
    """Statistics of the real CheXpert training table, shipped with the package (:func:`derive_label_statistics`)."""
    text = resources.files(__package__).joinpath(STATISTICS_FILE).read_text(encoding="utf-8")
    return json.loads(text)


def _shares(statistics: dict) -> tuple[np.ndarray, np.ndarray]:
    """Per finding: share of uncertain among positive-or-uncertain, share of explicit 0.0 among 0.0-or-blank."""
    uncertain, zero = [], []
    for f in FINDINGS:
        v = statistics["values"][f]
        uncertain.append(v["uncertain"] / max(v["positive"] + v["uncertain"], 1))
        zero.append(v["negative"] / max(v["negative"] + v["blank"], 1))
    return np.array(uncertain), np.array(zero)


def sample_labels(n: int, seed: int = 0, statistics: dict | None = None) -> pd.DataFrame:
    """``n`` CheXpert label rows (float32 1.0 / 0.0 / -1.0 / NaN, columns :data:`FINDINGS`).

    A row takes a stored positive-or-uncertain pattern with its real frequency, or (with
    the share of rows the patterns do not cover) flags each finding independently with its
    frequency among those rows; so every finding's positive-or-uncertain rate matches the
    real table in expectation. Flagged findings are uncertain (-1) with the finding's real
    share, others explicit 0.0 (vs blank) with theirs. ``statistics`` defaults to
    :func:`label_statistics`.
    """
    n = checks.positive_int("n", n)
    seed = checks.seed("seed", seed)
    stats = label_statistics() if statistics is None else statistics
    if list(stats["findings"]) != list(FINDINGS):
        raise ValueError(f"statistics list findings {stats['findings']}; expected {list(FINDINGS)}")
    patterns = np.array([[c == "1" for c in p] for p in stats["patterns"]], dtype=bool).reshape(-1, len(FINDINGS))
    weights = np.array([*stats["patterns"].values(), stats["residual"]["rows"]], dtype=np.float64)
    residual_rate = np.array([stats["residual"]["flagged"][f] for f in FINDINGS]) / max(stats["residual"]["rows"], 1)
    uncertain_share, zero_share = _shares(stats)
    rng = np.random.default_rng([seed, _LABELS])
    choice = rng.choice(len(weights), size=n, p=weights / weights.sum())
    independent = rng.random((n, len(FINDINGS))) < residual_rate
    uncertain = rng.random((n, len(FINDINGS))) < uncertain_share
    zero = rng.random((n, len(FINDINGS))) < zero_share
    in_pattern = choice < len(patterns)
    stored = patterns[np.minimum(choice, len(patterns) - 1)] if len(patterns) else independent
    flagged = np.where(in_pattern[:, None], stored, independent)
    values = np.where(flagged, np.where(uncertain, -1.0, 1.0), np.where(zero, 0.0, np.nan)).astype(np.float32)
    return pd.DataFrame(values, columns=list(FINDINGS))


# =========================================================================== rendering: small tools

Grid = tuple[np.ndarray, np.ndarray]  # normalised pixel centres: y (H, 1) and x (1, W), both in (0, 1)


def _soft(distance: np.ndarray, width: float) -> np.ndarray:
    """Soft inside-indicator in [0, 1] of a signed distance (positive inside), edge ``width`` wide."""
    return np.clip(np.float32(0.5) + distance * np.float32(1.0 / width), 0.0, 1.0)


def _polylines(
    canvas: np.ndarray, curves: Sequence[np.ndarray] | np.ndarray, thickness_px: float, value: float
) -> None:
    """Draw anti-aliased open polylines (normalised ``(n, 2)`` x, y points each) into a uint8 ``canvas (H, W)``."""
    if len(curves) == 0:
        return
    height, width = canvas.shape
    scale = np.array([width * 16.0, height * 16.0])
    if isinstance(curves, np.ndarray):  # (m, n, 2): one conversion for all
        points = list(np.rint(curves * scale).astype(np.int32))
    else:
        points = [np.rint(np.asarray(c) * scale).astype(np.int32) for c in curves]
    cv2.polylines(canvas, points, False, int(round(255 * value)), max(1, int(round(thickness_px))), cv2.LINE_AA, 4)


def _float(canvas: np.ndarray) -> np.ndarray:
    return canvas.astype(np.float32) * np.float32(1.0 / 255.0)


def _blur(image: np.ndarray, sigma_px: float) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), max(float(sigma_px), 0.3))


def _sample_points(rng: np.random.Generator, weight: np.ndarray, n: int) -> np.ndarray:
    """``(n, 2)`` normalised (x, y) points drawn uniformly where ``weight (H, W)`` > 0.5 (the centre if nowhere)."""
    height, width = weight.shape
    inside = np.flatnonzero(weight.ravel() > 0.5)
    picked = inside[rng.integers(0, max(inside.size, 1), size=n)] if inside.size else None
    if picked is None:
        return np.full((n, 2), 0.5)
    return np.stack([(picked % width + 0.5) / width, (picked // width + 0.5) / height], axis=1)


def _window(grid: Grid, x0: float, x1: float, y0: float, y1: float) -> tuple[slice, slice, np.ndarray, np.ndarray]:
    """Rows/columns of the box ``[x0, x1] x [y0, y1]`` (normalised) and their coordinates."""
    gy, gx = grid
    height, width = gy.shape[0], gx.shape[1]
    rows = slice(max(int(y0 * height), 0), min(int(math.ceil(y1 * height)) + 1, height))
    cols = slice(max(int(x0 * width), 0), min(int(math.ceil(x1 * width)) + 1, width))
    return rows, cols, gy[rows], gx[:, cols]


def _ellipse(grid: Grid, x: float, y: float, ax: float, ay: float, edge: float, angle: float = 0.0) -> np.ndarray:
    """Float32 ``(H, W)`` soft ellipse (semi-axes ``ax, ay``, rotated by ``angle`` radians towards +y)."""
    gy, gx = grid
    out = np.zeros((gy.shape[0], gx.shape[1]), dtype=np.float32)
    reach = max(ax, ay) + edge
    rows, cols, sy, sx = _window(grid, x - reach, x + reach, y - reach, y + reach)
    dx, dy = sx - x, sy - y
    if angle:
        c, s = math.cos(angle), math.sin(angle)
        dx, dy = dx * c + dy * s, dy * c - dx * s
    radius = np.sqrt((dx / ax) ** 2 + (dy / ay) ** 2)
    out[rows, cols] = _soft((1.0 - radius) * min(ax, ay), edge)
    return out


def _gauss(grid: Grid, x: float, y: float, sx: float, sy: float) -> np.ndarray:
    """Float32 ``(H, W)`` Gaussian bump of peak 1 (evaluated within 3 sigma)."""
    gy, gx = grid
    out = np.zeros((gy.shape[0], gx.shape[1]), dtype=np.float32)
    rows, cols, wy, wx = _window(grid, x - 3 * sx, x + 3 * sx, y - 3 * sy, y + 3 * sy)
    out[rows, cols] = np.exp(-(((wx - x) / sx) ** 2)) * np.exp(-(((wy - y) / sy) ** 2))
    return out


def _tree(
    rng: np.random.Generator, origin: tuple[float, float], angles: np.ndarray, length: float, generations: int
) -> list[np.ndarray]:
    """Branching vessel-like curves from ``origin``: per generation an array ``(m, 6, 2)`` of normalised points."""
    steps = 5
    starts = np.repeat(np.asarray(origin, dtype=np.float64)[None], len(angles), axis=0)
    heading, size, out = np.asarray(angles, dtype=np.float64), length, []
    for _ in range(generations + 1):
        turns = heading[:, None] + np.cumsum(rng.normal(0.0, 0.12, (len(heading), steps)), axis=1)
        deltas = np.stack([np.cos(turns), np.sin(turns)], axis=-1) * (size / steps)
        curves = np.concatenate([starts[:, None], starts[:, None] + np.cumsum(deltas, axis=1)], axis=1)
        out.append(curves)
        starts = curves[:, [2, 4]].reshape(-1, 2)
        spread = rng.uniform(0.3, 0.7, len(starts)) * rng.choice([-1.0, 1.0], len(starts))
        heading, size = turns[:, [1, 3]].reshape(-1) + spread, size * 0.55
    return out


# =========================================================================== anatomy


def _anatomy(rng: np.random.Generator, view: str, projection: str, sex: str, age: float) -> dict:
    """Patient parameters in normalised image coordinates (x right, y down, 0..1)."""
    ap = view == "Frontal" and projection == "AP"
    older = float(np.clip((age - 40.0) / 50.0, 0.0, 1.0))
    p: dict = {
        "view": view,
        "ap": ap,
        "female": sex == "Female",
        "soft": rng.uniform(0.42, 0.5),
        "lung_dark": rng.uniform(0.27, 0.33),
        "bone": rng.uniform(0.075, 0.1) * (1.0 - 0.25 * older),
        "vessel": rng.uniform(0.045, 0.065),
        "noise_seed": int(rng.integers(0, 2**31)),
        "breast": (rng.uniform(0.15, 0.19), rng.uniform(0.09, 0.12), rng.uniform(0.05, 0.08)),
        "vertebra": (rng.uniform(0.042, 0.05), rng.uniform(0.0, 1.0)),
        "rib_gap": rng.uniform(0.052, 0.06),
        "rib_px": rng.uniform(0.017, 0.021),
        "mediastinum_scale": 1.0,
        "fractures": [],
        "pneumothorax": None,
    }
    if view == "Frontal":
        cx, tw = 0.5 + rng.uniform(-0.015, 0.015), rng.uniform(0.32, 0.37)
        ya = rng.uniform(0.1, 0.14)
        dome = rng.uniform(0.64, 0.7) - (0.03 if ap else 0.0)
        carina = ya + rng.uniform(0.17, 0.21)
        p.update(
            cx=cx, tw=tw, ya=ya, carina=carina,
            domes={-1: dome, 1: dome + rng.uniform(0.015, 0.04)},
            depth=rng.uniform(0.05, 0.075),
            heart={"extent": rng.uniform(0.41, 0.47) * tw * (1.07 if ap else 1.0), "ratio": rng.uniform(0.68, 0.78),
                   "angle": rng.uniform(0.4, 0.6), "shift": rng.uniform(0.3, 0.36)},
            mw=rng.uniform(0.05, 0.062),
            knob=rng.uniform(0.014, 0.024) * (1.0 + 0.6 * older),
            sw=rng.uniform(0.028, 0.036),
            chest=tw + rng.uniform(0.06, 0.09),
            neck=rng.uniform(0.085, 0.11),
            arm=rng.uniform(0.07, 0.1),
            rib_top=ya - rng.uniform(0.01, 0.03),
            clavicle=ya + (-0.015 if ap else 0.02) + rng.uniform(-0.01, 0.01),
            bubble=(rng.uniform(0.13, 0.2), rng.random() < 0.8),
        )
        p["hila"] = {
            s: (cx + s * (p["mw"] + rng.uniform(0.035, 0.05)), carina + rng.uniform(0.06, 0.1)) for s in (-1, 1)
        }
        fan = np.linspace(-1.25, 1.35, 6)  # vessel directions, from up-outwards to down-outwards
        p["vessels"] = [
            _tree(rng, p["hila"][s], np.where(s > 0, fan, np.pi - fan) + rng.normal(0.0, 0.08, 6),
                  rng.uniform(0.12, 0.15), 3)
            for s in (-1, 1)
        ]
    else:
        front, back = rng.uniform(0.17, 0.21), rng.uniform(0.74, 0.77)
        dome = rng.uniform(0.6, 0.65)
        p.update(
            ya=rng.uniform(0.09, 0.12), front=front, back=back, carina=rng.uniform(0.34, 0.38),
            domes={-1: dome, 1: dome + rng.uniform(0.015, 0.03)},
            depth=rng.uniform(0.13, 0.17),
            heart={"extent": rng.uniform(0.13, 0.15), "ratio": rng.uniform(0.85, 0.95),
                   "angle": rng.uniform(-0.5, -0.3), "shift": 0.0},
            spine=rng.uniform(0.79, 0.82),
            arm=(rng.uniform(0.22, 0.3), rng.uniform(0.05, 0.08)),
            rib_top=rng.uniform(0.13, 0.17),
        )
        p["hila"] = {0: (rng.uniform(0.49, 0.54), rng.uniform(0.39, 0.44))}
        p["vessels"] = [_tree(rng, p["hila"][0], np.linspace(-2.7, 2.5, 8) + rng.normal(0.0, 0.08, 8), 0.12, 3)]
    return p


def _heart(p: dict) -> tuple[float, float, float, float, float]:
    """Heart ellipse ``(x, y, a, b, angle)`` of horizontal half-extent ``extent``, sitting on the diaphragm.

    Frontal: ``extent = ratio x lung half-width``, so twice it over the thorax width is the
    cardiothoracic ratio (normal 0.41-0.47; Cardiomegaly makes it about 0.55-0.65).
    """
    h = p["heart"]
    c, s = math.cos(h["angle"]), math.sin(h["angle"])
    a = h["extent"] / math.sqrt(c * c + (h["ratio"] * s) ** 2)
    b = a * h["ratio"]
    if p["view"] == "Frontal":
        return p["cx"] + h["shift"] * h["extent"], p["domes"][1] - 0.45 * b, a, b, h["angle"]
    return p["front"] + 0.75 * h["extent"], p["domes"][-1] - 0.4 * b, a, b, h["angle"]


def _rib_curves(p: dict) -> list[tuple[int, np.ndarray, np.ndarray | None]]:
    """Per side ``(side, posterior (k, 12, 2), anterior (k, 12, 2) or None)`` normalised rib centre lines."""
    t = np.linspace(0.0, 1.0, 12)[None, :]
    out = []
    if p["view"] == "Frontal":
        k = np.arange(10)[:, None]
        y0 = p["rib_top"] + k * p["rib_gap"] * (1.0 + 0.035 * k)
        reach = p["tw"] * np.minimum(0.7 + 0.12 * k, 1.0) + 0.015
        u = p["sw"] + 0.004 + t * (reach - p["sw"])
        y = y0 - 0.026 * np.sin(np.pi * t) + (0.045 + 0.004 * k) * t**3
        u_end = 0.07 + 0.012 * k
        ua = reach - t * (reach - u_end)
        ya_ = y[:, -1:] + (0.085 + 0.006 * k) * t - 0.02 * np.sin(np.pi * t)
        for side in (-1, 1):
            posterior = np.stack([p["cx"] + side * u, y], axis=-1)
            anterior = np.stack([p["cx"] + side * ua, ya_], axis=-1)[:7]
            out.append((side, posterior, anterior))
    else:
        k = np.arange(9)[:, None]
        for side in (-1, 1):
            y0 = p["rib_top"] + k * p["rib_gap"] + (0.01 if side > 0 else 0.0)
            x = p["spine"] - t * (p["spine"] - 0.4 - 0.012 * k) + (0.012 if side > 0 else 0.0)
            y = y0 + 0.11 * t**1.5 - 0.025 * np.sin(np.pi * t)
            out.append((side, np.stack([x, y], axis=-1), None))
    return out


def _clavicles(p: dict) -> dict[int, np.ndarray]:
    """Per side the ``(12, 2)`` centre line of the clavicle (frontal views), medial end first."""
    t = np.linspace(0.0, 1.0, 12)[:, None]
    u = 0.03 + t * (p["tw"] + 0.09)
    y = p["clavicle"] - (0.025 if p["ap"] else 0.05) * t + 0.012 * np.sin(2 * np.pi * t)
    return {side: np.hstack([p["cx"] + side * u, y]) for side in (-1, 1)}


def _broken(curve: np.ndarray, fracture: dict | None) -> list[np.ndarray]:
    """``[curve]``, or its two pieces with the outer one shifted by the fracture's step."""
    if fracture is None:
        return [curve]
    cut = fracture["index"]
    return [curve[: cut + 1], curve[cut:] + fracture["step"]]


def _bones(p: dict, shape: tuple[int, int]) -> np.ndarray:
    """Float32 ``(H, W)`` bones: ribs (bright cortex, darker marrow), clavicles or sternum, humeri; with fractures."""
    height = shape[0]
    canvas = np.zeros(shape, dtype=np.uint8)
    rib_px = p["rib_px"] * height
    breaks = {(f["bone"], f["side"], f["k"]): f for f in p["fractures"]}
    posterior_curves, anterior_curves = [], []
    for side, posterior, anterior in _rib_curves(p):
        for k, curve in enumerate(posterior):
            posterior_curves += _broken(curve, breaks.get(("rib", side, k)))
        if anterior is not None:
            anterior_curves += list(anterior)
    _polylines(canvas, anterior_curves, rib_px * 0.8, 0.5)
    _polylines(canvas, posterior_curves, rib_px, 1.0)
    _polylines(canvas, posterior_curves, max(rib_px - 2.6 * height / 256, 1.0), 0.6)
    if p["view"] == "Frontal":
        clavicles = [
            piece
            for side, curve in _clavicles(p).items()
            for piece in _broken(curve, breaks.get(("clavicle", side, 0)))
        ]
        _polylines(canvas, clavicles, 0.024 * height, 1.0)
        _polylines(canvas, clavicles, 0.011 * height, 0.75)
        for side in (-1, 1):  # humeral heads
            centre = (int((p["cx"] + side * (p["chest"] + 0.045)) * shape[1]), int((p["ya"] - 0.005) * height))
            cv2.ellipse(canvas, centre, (int(0.05 * shape[1]), int(0.06 * height)), 0, 0, 360, 200, -1, cv2.LINE_AA)
    else:  # sternum and the humeri of the raised arms
        _polylines(canvas, [np.array([[p["front"] - 0.022, 0.14], [p["front"] - 0.018, 0.56]])], 0.02 * height, 0.8)
        x0, tilt = p["arm"]
        humeri = [np.array([[x0 + d, -0.05], [x0 + d + 0.18, 0.16 + tilt]]) for d in (0.0, 0.07)]
        _polylines(canvas, humeri, 0.04 * height, 0.45)
    for fracture in p["fractures"]:  # a dark fracture line, or a bright callus when healing
        if fracture["callus"]:
            _polylines(canvas, [fracture["line"]], rib_px * 1.5, 1.0)
        else:
            _polylines(canvas, [fracture["line"]], 1.8 * height / 256, 0.0)
    return _blur(_float(canvas), 0.6 * height / 256)


def _vertebrae(grid: Grid, p: dict) -> np.ndarray:
    """Float32 ``(H, 1)`` pattern of vertebral bodies (bright) and disc spaces (dark) along y."""
    period, phase = p["vertebra"]
    wave = 0.5 + 0.5 * np.cos(2.0 * np.pi * (grid[0] / period - phase))
    return np.clip(1.8 * wave - 0.25, 0.3, 1.0).astype(np.float32)


class _Lung:
    """One lung field: soft ``mask (H, W)``; ``hbounds`` (the mask without its floor); ``wall``
    (distance to the outer chest wall or apex, normalised); ``across`` (0 at the mediastinum .. 1
    at the outer wall; lateral view: front .. back); ``floor`` (diaphragm y per column ``(1, W)``);
    ``base`` (y of the costophrenic angle); apex ``top``; ``hilum`` (x, y)."""

    def __init__(self, mask, hbounds, wall, across, floor, base, top, hilum):
        self.mask, self.hbounds, self.wall, self.across = mask, hbounds, wall, across
        self.floor, self.base, self.top, self.hilum = floor, base, top, hilum


def _mediastinum_half(grid: Grid, p: dict, side: int) -> np.ndarray:
    """``(H, 1)`` half-width of the mediastinum on ``side`` (-1 image left, +1 image right)."""
    gy = grid[0]
    upper = _soft(p["hila"][side][1] + 0.02 - gy, 0.06) * _soft(gy - p["ya"] + 0.03, 0.05)  # superior mediastinum
    lower = 1.0 + 0.3 * np.clip((gy - p["carina"]) / 0.15, 0.0, 1.0)
    half = p["mw"] * (1.0 + (p["mediastinum_scale"] - 1.0) * upper) * lower
    if side > 0:
        half = half + p["knob"] * p["mediastinum_scale"] * np.exp(-(((gy - p["carina"] + 0.05) / 0.03) ** 2))
    return half


def _frontal_lungs(grid: Grid, p: dict, edge: float) -> dict[int, _Lung]:
    gy, gx = grid
    cx, tw, ya = p["cx"], p["tw"], p["ya"]
    lungs = {}
    for side in (-1, 1):
        u = side * (gx - cx)
        dome = p["domes"][side]
        top = ya + 0.11 * ((u - 0.5 * tw) / (0.5 * tw)) ** 2
        outer = tw * (0.9 + 0.1 * np.clip((gy - ya) / (dome - ya), 0.0, 1.0))
        inner = _mediastinum_half(grid, p, side)
        floor = dome + p["depth"] * np.minimum(((u - 0.5 * tw) / (0.5 * tw)) ** 2, 1.6)
        hbounds = _soft(outer - u, edge) * _soft(u - inner, edge) * _soft(gy - top, edge)
        mask = hbounds * _soft(floor - gy, edge)
        wall = np.minimum(outer - u, gy - top)
        across = np.clip((u - inner) / np.maximum(outer - inner, 1e-3), 0.0, 1.0)
        lungs[side] = _Lung(mask, hbounds, wall, across, floor, dome + p["depth"], ya, p["hila"][side])
    return lungs


def _lateral_lungs(grid: Grid, p: dict, edge: float) -> dict[int, _Lung]:
    gy, gx = grid
    front = p["front"] + 0.03 * ((gy - 0.4) / 0.3) ** 2
    back = p["back"] - 0.02 * ((gy - 0.45) / 0.3) ** 2
    top = p["ya"] + 0.12 * ((gx - 0.48) / 0.3) ** 2
    slope = np.clip((gx - p["front"]) / (p["back"] - p["front"]), 0.0, 1.0)
    floor = p["domes"][-1] + p["depth"] * slope**2
    hbounds = _soft(gx - front, edge) * _soft(back - gx, edge) * _soft(gy - top, edge)
    mask = hbounds * _soft(floor - gy, edge)
    wall = np.minimum(gx - front, gy - top)
    across = np.clip((gx - front) / np.maximum(back - front, 1e-3), 0.0, 1.0)
    return {0: _Lung(mask, hbounds, wall, across, floor, p["domes"][-1] + p["depth"], p["ya"], p["hila"][0])}


class _Scene:
    """The built anatomy that findings draw into: grid, parameters, lungs, thorax and heart masks."""

    def __init__(self, grid: Grid, p: dict, shape: tuple[int, int]):
        self.grid, self.p, self.shape = grid, p, shape
        self.edge = 2.5 / shape[0]
        gy, gx = grid
        frontal = p["view"] == "Frontal"
        self.lungs = _frontal_lungs(grid, p, self.edge) if frontal else _lateral_lungs(grid, p, self.edge)
        if frontal:
            diaphragm = np.where(gx < p["cx"], self.lungs[-1].floor, self.lungs[1].floor)
        else:
            diaphragm = self.lungs[0].floor
        self.thorax = _soft(diaphragm - gy, self.edge)
        hx, hy, a, b, angle = _heart(p)
        self.heart = _ellipse(grid, hx, hy, a, b, self.edge, angle) * self.thorax
        for lung in self.lungs.values():  # little aerated lung is seen through the heart
            lung.mask = lung.mask * (1.0 - 0.8 * self.heart)
        self.air = np.clip(sum(lung.mask for lung in self.lungs.values()), 0.0, 1.0)

    def pick(self, rng: np.random.Generator, both: float = 0.0) -> list[_Lung]:
        """One lung at random, or every lung with probability ``both``."""
        keys = sorted(self.lungs)
        if len(keys) > 1 and rng.random() < both:
            return [self.lungs[k] for k in keys]
        return [self.lungs[keys[int(rng.integers(0, len(keys)))]]]


def _frontal_body(scene: _Scene) -> tuple[np.ndarray, np.ndarray]:
    """Body mask (torso + arms) and extra soft-tissue density of a frontal view."""
    p, (gy, gx), h = scene.p, scene.grid, scene.shape[0]
    cx = p["cx"]
    shoulders = 1.0 / (1.0 + np.exp(-(gy - p["ya"] + 0.05) / 0.025))
    half = p["neck"] + (p["chest"] - p["neck"]) * shoulders - 0.03 * np.clip((gy - 0.75) / 0.25, 0.0, 1.0)
    distance = np.abs(gx - cx)
    torso = _soft(half - distance, 4.0 / h)
    arms = _soft(half + p["arm"] - distance, 5.0 / h) * _soft(gy - p["ya"] + 0.06, 0.03)
    extra = np.zeros(scene.shape, dtype=np.float32)
    if p["ap"]:  # the scapulae project over the lateral lungs
        for side in (-1, 1):
            extra += 0.035 * _ellipse(scene.grid, cx + side * p["tw"] * 0.92, 0.32, 0.07, 0.17, 6.0 / h, 0.2 * side)
    if p["female"]:
        bx, by, strength = p["breast"]
        for side in (-1, 1):
            extra += strength * _ellipse(scene.grid, cx + side * p["tw"] * 0.62, p["domes"][side] - 0.03, bx, by, 0.04)
    return np.maximum(torso, 0.9 * arms), extra


def _lateral_body(scene: _Scene) -> tuple[np.ndarray, np.ndarray]:
    """Body mask and extra soft-tissue density (raised arms, breast) of a lateral view."""
    p, (gy, gx), h = scene.p, scene.grid, scene.shape[0]
    body = _soft(gx - 0.09 - 0.05 * (gy - 0.55) ** 2, 4.0 / h) * _soft(0.96 - gx, 4.0 / h)
    x0, tilt = p["arm"]
    along = (gx - x0) * 0.5 - (gy + 0.05) * 0.45  # distance from the arm axis (about 45 degrees)
    arms = _soft(0.06 - np.abs(along + 0.03), 0.02) * _soft(0.3 + tilt - gy, 0.05)
    extra = 0.07 * arms
    if p["female"]:
        _, by, strength = p["breast"]
        extra = extra + strength * _ellipse(scene.grid, p["front"] - 0.05, p["domes"][-1] - 0.06, 0.07, by * 1.6, 0.03)
    return body, extra


def _base_density(scene: _Scene) -> np.ndarray:
    """Float32 ``(H, W)`` density of the anatomy (without findings)."""
    p, grid, shape = scene.p, scene.grid, scene.shape
    gy, gx = grid
    edge = scene.edge
    frontal = p["view"] == "Frontal"
    body, extra = _frontal_body(scene) if frontal else _lateral_body(scene)
    abdomen = body * (1.0 - scene.thorax)
    heart = scene.heart
    if frontal:
        cx = p["cx"]
        half = np.where(gx < cx, _mediastinum_half(grid, p, -1), _mediastinum_half(grid, p, 1))
        mediastinum = _soft(half - np.abs(gx - cx), edge) * scene.thorax
        spine = _soft(p["sw"] - np.abs(gx - cx), edge) * _vertebrae(grid, p)
        trachea = _soft(0.013 - np.abs(gx - cx - 0.003), edge) * _soft(p["carina"] - gy, edge)
    else:
        axis = 0.5 - 0.08 * (0.5 - gy)  # the mediastinum leans forward towards the top
        mediastinum = 0.4 * _soft(0.1 - np.abs(gx - axis), 0.03) * _soft(p["carina"] + 0.05 - gy, 0.05)
        spine = _soft(0.05 - np.abs(gx - p["spine"] - 0.05), edge) * _vertebrae(grid, p) * 2.4
        spine += _soft(0.012 - np.abs(gx - p["front"] + 0.02), edge) * _soft(0.2 - np.abs(gy - 0.35), edge) * 0.8
        trachea = _soft(0.016 - np.abs(gx - 0.46 - 0.09 * gy), edge) * _soft(p["carina"] - gy, edge)
    density = p["soft"] * body + extra + 0.2 * abdomen + 0.23 * np.maximum(heart, mediastinum)
    density += 0.05 * spine - 0.13 * trachea
    texture = steel._smooth_noise(np.random.default_rng(p["noise_seed"]), shape, (14, 14))
    density -= scene.air * (p["lung_dark"] - 0.012 * texture)
    if frontal and p["bubble"][1]:
        density -= 0.16 * _ellipse(grid, p["cx"] + p["bubble"][0], p["domes"][1] + 0.045, 0.045, 0.025, edge) * abdomen
    density += _markings(scene)
    density += p["bone"] * _bones(p, shape) * body
    return density


def _markings(scene: _Scene) -> np.ndarray:
    """Float32 ``(H, W)`` vessel markings (tapering away from the hila) and hilar shadows, inside aerated lung."""
    p, height = scene.p, scene.shape[0]
    canvas = np.zeros(scene.shape, dtype=np.uint8)
    scale = height / 256.0
    for generation, (thickness, value) in enumerate([(2.6, 1.0), (1.9, 0.8), (1.3, 0.62), (1.0, 0.45)]):
        _polylines(canvas, np.concatenate([tree[generation] for tree in p["vessels"]]), thickness * scale, value)
    vessels = _blur(_float(canvas), 0.8 * scale)
    aerated = np.zeros(scene.shape, dtype=np.float32)
    hila = np.zeros(scene.shape, dtype=np.float32)
    for side, lung in scene.lungs.items():
        visible = lung.mask
        if p["pneumothorax"] is not None and p["pneumothorax"][0] == side:
            visible = visible * _soft(lung.wall - p["pneumothorax"][1], 1.5 / height)
        aerated += visible
        hila += _gauss(scene.grid, lung.hilum[0], lung.hilum[1], 0.035, 0.055)
    return p["vessel"] * vessels * aerated + 0.06 * hila * np.clip(aerated + 0.4, 0.0, 1.0)


# =========================================================================== findings
# A finding has ``modify(rng, p, strength)``, changing the anatomy before it is built, and/or
# ``draw(rng, scene, strength) -> density (H, W) | None``, added after. ``strength`` is
# 0.7-1 for a positive label, 0.35-0.6 for an uncertain one.


def _cardiomegaly(rng, p, strength):
    p["heart"]["extent"] *= 1.0 + rng.uniform(0.3, 0.42) * strength
    p["heart"]["ratio"] *= 1.0 + rng.uniform(0.0, 0.1) * strength


def _enlarged_mediastinum(rng, p, strength):
    p["mediastinum_scale"] = 1.0 + rng.uniform(0.7, 1.1) * strength


def _enlarged_mediastinum_draw(rng, scene, strength):
    if scene.p["view"] == "Frontal":
        return None  # drawn by the widened mediastinum
    gy, gx = scene.grid
    region = _soft(0.15 - np.abs(gy - 0.3), 0.03) * _soft(0.42 - gx, 0.03) * _soft(gx - scene.p["front"], 0.01)
    return 0.2 * strength * region * scene.thorax


def _patches(rng, scene, centres, radii, grid_size, threshold) -> np.ndarray:
    """Irregular soft patches around ``centres`` (normalised) of ``radii``: Gaussian envelopes cut by smooth noise."""
    envelope = np.zeros(scene.shape, dtype=np.float32)
    for (x, y), r in zip(centres, radii):
        envelope = np.maximum(envelope, _gauss(scene.grid, x, y, r, r))
    noise = steel._smooth_noise(rng, scene.shape, (grid_size, grid_size))
    return np.clip((envelope + 0.3 * noise - threshold) * 3.0, 0.0, 1.0)


def _lung_opacity(rng, scene, strength):
    n = int(rng.integers(2, 5))
    field = _patches(rng, scene, _sample_points(rng, scene.air, n), rng.uniform(0.08, 0.14, n), 6, 0.4)
    return 0.22 * strength * _blur(field, 2.0 * scene.shape[0] / 256) * scene.air


def _lung_lesion(rng, scene, strength):
    out = np.zeros(scene.shape, dtype=np.float32)
    inside = cv2.erode(scene.air, np.ones((9, 9), np.uint8))
    for x, y in _sample_points(rng, inside, int(rng.choice([1, 1, 2, 3]))):
        r = rng.uniform(0.018, 0.04) if rng.random() < 0.7 else rng.uniform(0.045, 0.07)
        aspect, lobes, phase = rng.uniform(0.8, 1.25), int(rng.integers(3, 7)), rng.uniform(0.0, 2 * np.pi)
        rows, cols, wy, wx = _window(scene.grid, x - 1.6 * r, x + 1.6 * r, y - 1.6 * r, y + 1.6 * r)
        bumpy = 1.0 + 0.08 * np.sin(lobes * np.arctan2(wy - y, wx - x) + phase)
        radius = np.sqrt(((wx - x) / (r * aspect)) ** 2 + ((wy - y) / (r / aspect)) ** 2) / bumpy
        out[rows, cols] = np.maximum(out[rows, cols], _soft((1.0 - radius) * r, 0.006))
    return rng.uniform(0.26, 0.34) * strength * out


def _edema(rng, scene, strength):
    gy, _ = scene.grid
    haze = np.zeros(scene.shape, dtype=np.float32)
    canvas = np.zeros(scene.shape, dtype=np.uint8)
    lines = []
    for lung in scene.lungs.values():
        hx, hy = lung.hilum
        haze += _gauss(scene.grid, hx, hy + 0.03, rng.uniform(0.1, 0.14), rng.uniform(0.13, 0.17)) * lung.mask
        zone = lung.mask * (lung.across > 0.7) * (gy > lung.base - 0.22)
        for x, y in _sample_points(rng, zone, int(rng.integers(8, 15))):
            length = rng.uniform(0.02, 0.035) * (-1.0 if x > 0.5 else 1.0)
            lines.append(np.array([[x, y], [x + length, y + rng.uniform(-0.003, 0.003)]]))
    _polylines(canvas, lines, 1.0, 1.0)
    septal = _blur(_float(canvas), 0.5) * scene.air
    return strength * (0.2 * haze + 0.13 * septal)


def _consolidation(rng, scene, strength):
    gy, gx = scene.grid
    lung = scene.pick(rng)[0]
    top, floor = lung.top, lung.base - 0.04
    lobe = rng.choice(["upper", "lower", "lower", "middle"])
    tilt = rng.uniform(-0.06, 0.06) * (gx - 0.5)
    if lobe == "upper":
        fissure = top + rng.uniform(0.28, 0.36) * (floor - top) + tilt
        region = _soft(fissure - gy, 0.006) * _soft(gy - top - 0.03, 0.06)
    elif lobe == "lower":
        fissure = top + rng.uniform(0.52, 0.64) * (floor - top) + tilt
        region = _soft(gy - fissure, 0.012)
    else:
        fissure = top + rng.uniform(0.42, 0.5) * (floor - top) + tilt
        region = _soft(gy - fissure, 0.006) * _soft(fissure + 0.14 - gy, 0.05)
    region = region * lung.mask
    texture = 0.85 + 0.15 * steel._smooth_noise(rng, scene.shape, (10, 10))
    hx, hy = lung.hilum
    canvas = np.zeros(scene.shape, dtype=np.uint8)
    for x, y in _sample_points(rng, region, 4):  # air bronchograms pointing away from the hilum
        angle = math.atan2(y - hy, x - hx)
        start = (x - 0.05 * math.cos(angle), y - 0.05 * math.sin(angle))
        for curves in _tree(rng, start, np.array([angle]), 0.08, 1):
            _polylines(canvas, list(curves), 1.6, 1.0)
    bronchi = _blur(_float(canvas), 0.6)
    return strength * region * (rng.uniform(0.3, 0.38) * texture - 0.09 * bronchi)


def _pneumonia(rng, scene, strength):
    gy, _ = scene.grid
    out = np.zeros(scene.shape, dtype=np.float32)
    for lung in scene.pick(rng, both=0.3):
        zone = lung.mask * (gy > lung.top + 0.35 * (lung.base - lung.top)) * (gy < lung.base - 0.06)
        n = int(rng.integers(1, 3))
        field = _patches(rng, scene, _sample_points(rng, zone, n), rng.uniform(0.1, 0.15, n), 18, 0.5)
        out += _blur(field, 1.5 * scene.shape[0] / 256) * lung.mask
    return 0.24 * strength * out


def _atelectasis(rng, p, strength):
    p["atelectasis_side"] = int(rng.choice([-1, 1])) if p["view"] == "Frontal" else 0
    if rng.random() < 0.5:  # volume loss: the hemidiaphragm rises
        side = p["atelectasis_side"] if p["view"] == "Frontal" else -1
        p["domes"][side] -= rng.uniform(0.03, 0.06) * strength


def _atelectasis_draw(rng, scene, strength):
    gy, _ = scene.grid
    lung = scene.lungs[scene.p["atelectasis_side"]]
    zone = lung.mask * (gy > lung.base - 0.2) * (gy < lung.base - 0.08)
    canvas = np.zeros(scene.shape, dtype=np.uint8)
    for x, y in _sample_points(rng, zone, int(rng.integers(1, 4))):  # plate-like (discoid) bands
        length, angle = rng.uniform(0.06, 0.12), rng.uniform(-0.25, 0.25)
        dx, dy = length * math.cos(angle), length * math.sin(angle)
        band = np.array([[x - dx, y - dy], [x + dx, y + dy]])
        _polylines(canvas, [band], rng.uniform(0.006, 0.011) * scene.shape[0], 1.0)
    return 0.3 * strength * _blur(_float(canvas), 1.2) * lung.mask


def _pneumothorax(rng, p, strength):
    side = int(rng.choice(sorted(p["hila"])))
    width = p["tw"] if p["view"] == "Frontal" else p["back"] - p["front"]
    p["pneumothorax"] = (side, width * rng.uniform(0.14, 0.3) * (0.5 + 0.5 * strength))


def _pneumothorax_draw(rng, scene, strength):
    side, depth = scene.p["pneumothorax"]
    lung = scene.lungs[side]
    height = scene.shape[0]
    space = lung.mask * _soft(depth - lung.wall, 1.5 / height)  # air without lung: dark, no markings
    line = np.exp(-(((lung.wall - depth) * height / 1.2) ** 2)) * lung.mask  # the visceral pleural edge
    return -0.08 * space + 0.17 * strength * line + 0.03 * (lung.mask - space)


def _pleural_effusion(rng, scene, strength):
    gy, _ = scene.grid
    out = np.zeros(scene.shape, dtype=np.float32)
    for lung in scene.pick(rng, both=0.35):
        rise = (0.06 + 0.16 * strength * rng.uniform(0.6, 1.0)) * (lung.base - lung.top)
        level = lung.base - rise - rng.uniform(0.04, 0.08) * lung.across**2  # meniscus: higher at the wall
        fluid = lung.hbounds * _soft(gy - level, 0.02) * _soft(lung.floor - gy, scene.edge) * (1.0 - 0.8 * scene.heart)
        out += fluid * (0.8 + 0.2 * np.clip((gy - level) / 0.05, 0.0, 1.0))
    return (scene.p["lung_dark"] + 0.2) * min(1.0, 0.45 + 0.6 * strength) * out


def _pleural_other(rng, scene, strength):
    gy, _ = scene.grid
    lung = scene.pick(rng)[0]
    height = scene.shape[0]
    out = np.zeros(scene.shape, dtype=np.float32)
    thickening = rng.random() < 0.6
    if thickening:  # a band along the outer wall over part of the height
        y0 = rng.uniform(lung.top + 0.1, lung.base - 0.2)
        band = _soft(rng.uniform(0.01, 0.02) - lung.wall, 1.5 / height) * _soft(0.13 - np.abs(gy - y0), 0.03)
        out += 0.3 * band * lung.mask
    near_wall = lung.mask * (lung.wall < 0.035) * (lung.wall > 0.0)
    for x, y in _sample_points(rng, near_wall, int(rng.integers(0, 3) if thickening else rng.integers(2, 5))):
        plaque = _ellipse(scene.grid, x, y, rng.uniform(0.01, 0.022), rng.uniform(0.022, 0.05), 0.004)
        out = np.maximum(out, 0.4 * plaque)  # calcified plaques
    return strength * out


def _fracture(rng, p, strength):
    ribs = [(side, k, curve) for side, posterior, _ in _rib_curves(p) for k, curve in enumerate(posterior)]
    ribs = [rib for rib in ribs if 2 <= rib[1] <= 8]  # ribs over the lungs
    for _ in range(int(rng.choice([1, 1, 2]))):
        side, k, curve = ribs[int(rng.integers(0, len(ribs)))]
        bone = "clavicle" if p["view"] == "Frontal" and rng.random() < 0.25 else "rib"
        if bone == "clavicle":
            side, k = int(rng.choice([-1, 1])), 0
            curve = _clavicles(p)[side]
        index = int(rng.integers(4, 10))
        direction = curve[index + 1] - curve[index - 1]
        normal = np.array([-direction[1], direction[0]]) / (np.linalg.norm(direction) + 1e-9)
        half = p["rib_px"] * (1.5 if bone == "clavicle" else 0.9)
        p["fractures"].append({
            "bone": bone, "side": side, "k": k, "index": index,
            "step": normal * rng.choice([-1.0, 1.0]) * rng.uniform(0.01, 0.016) * (0.6 + 0.4 * strength),
            "line": np.array([curve[index] - half * normal, curve[index] + half * normal]),
            "callus": rng.random() < 0.3,
        })


def _support_devices(rng, scene, strength):
    p, (height, width) = scene.p, scene.shape
    frontal = p["view"] == "Frontal"
    kinds = ("tube", "ng", "line", "ecg", "pacemaker", "wires")
    weights = np.array([0.3, 0.2, 0.3, 0.35, 0.1, 0.1])
    chosen = {kinds[int(i)] for i in rng.choice(len(kinds), size=int(rng.integers(1, 4)), p=weights / weights.sum())}
    canvas = np.zeros(scene.shape, dtype=np.uint8)
    px = height / 256.0
    cx = p["cx"] if frontal else 0.5
    dome, carina = p["domes"][1], p["carina"]
    if "tube" in chosen:  # endotracheal tube: a wide faint tube with a radio-opaque stripe
        end = carina - rng.uniform(0.03, 0.07)
        x = cx + rng.uniform(-0.01, 0.01)
        if frontal:
            tube = np.array([[x + 0.01, -0.02], [x, end * 0.5], [x - 0.002, end]])
        else:
            tube = np.array([[0.42, -0.02], [0.46 + 0.09 * end, end]])
        _polylines(canvas, [tube], 4.0 * px, 0.45)
        _polylines(canvas, [tube], 1.2 * px, 1.0)
    if "ng" in chosen:  # nasogastric tube down the oesophagus into the stomach
        x = cx + 0.012
        if frontal:
            path = [[x, -0.02], [x + 0.005, 0.4], [x + 0.01, dome], [x + 0.08, dome + 0.06], [x + 0.15, dome + 0.07]]
        else:
            path = [[0.55, -0.02], [0.62, 0.4], [0.6, dome + 0.05], [0.5, dome + 0.12]]
        _polylines(canvas, [np.array(path)], 2.0 * px, 0.95)
    if "line" in chosen:  # central venous catheter from the subclavian vein to the cavo-atrial junction
        s = float(rng.choice([-1.0, 1.0]))
        tip = carina + rng.uniform(0.05, 0.12)
        if frontal:
            path = [[cx + s * 0.33, 0.12], [cx + s * 0.2, 0.17], [cx + s * 0.06, 0.22], [cx - 0.025, 0.3],
                    [cx - 0.03, tip]]
        else:
            path = [[0.3, 0.05], [0.4, 0.15], [0.45, 0.3], [0.45, tip]]
        _polylines(canvas, [np.array(path)], 2.0 * px, 0.9)
    if "wires" in chosen:  # sternotomy wire loops
        x = cx if frontal else p["front"] - 0.02
        for y in np.linspace(0.3, 0.5, int(rng.integers(4, 7))):
            loop = np.array([[-1, -1], [1, 1], [-1, 1], [1, -1], [-1, -1]]) * 0.012 + (x, y)  # a figure of eight
            _polylines(canvas, [loop], 2.0 * px, 1.0)
    if "ecg" in chosen:  # electrode rings with their leads running off the image
        for x, y in rng.uniform([0.15, 0.08], [0.85, 0.7], size=(int(rng.integers(2, 6)), 2)):
            centre = (int(x * width), int(y * height))
            cv2.circle(canvas, centre, max(2, int(0.014 * height)), 255, max(1, int(round(1.5 * px))), cv2.LINE_AA)
            cv2.circle(canvas, centre, max(1, int(0.004 * height)), 255, -1, cv2.LINE_AA)
            bend = (x + rng.uniform(-0.15, 0.15), y + rng.uniform(-0.1, 0.1))
            end = (x + rng.uniform(-0.3, 0.3), float(rng.choice([-0.05, 1.05])))
            _polylines(canvas, [np.array([(x, y), bend, end])], 1.0, 0.65)
    if "pacemaker" in chosen:  # generator box in the upper chest, lead into the right ventricle
        bx, by = (cx + 0.27, 0.17) if frontal else (0.2, 0.2)
        hx, hy, *_ = _heart(p)
        lead = np.array([[bx, by], [bx - 0.1, by + 0.05], [cx + 0.01, 0.3], [hx - 0.03, hy + 0.03]])
        _polylines(canvas, [lead], 2.0 * px, 0.95)
        centre, axes = (int(bx * width), int(by * height)), (int(0.045 * width), int(0.035 * height))
        box = cv2.ellipse2Poly(centre, axes, int(rng.uniform(-20, 20)), 0, 360, 10)
        cv2.fillPoly(canvas, [box], 255, cv2.LINE_AA)
    return (0.5 + 0.3 * strength) * _blur(_float(canvas), 0.5 * px)


# name: (modify before the anatomy is built or None, draw after or None)
_FINDING_STEPS = {
    "No Finding": (None, None),
    "Enlarged Cardiomediastinum": (_enlarged_mediastinum, _enlarged_mediastinum_draw),
    "Cardiomegaly": (_cardiomegaly, None),
    "Lung Opacity": (None, _lung_opacity),
    "Lung Lesion": (None, _lung_lesion),
    "Edema": (None, _edema),
    "Consolidation": (None, _consolidation),
    "Pneumonia": (None, _pneumonia),
    "Atelectasis": (_atelectasis, _atelectasis_draw),
    "Pneumothorax": (_pneumothorax, _pneumothorax_draw),
    "Pleural Effusion": (None, _pleural_effusion),
    "Pleural Other": (None, _pleural_other),
    "Fracture": (_fracture, None),
    "Support Devices": (None, _support_devices),
}


# =========================================================================== render


def _strengths(labels: Mapping[str, float] | Sequence[float] | pd.Series) -> dict[str, float]:
    """``{finding: 1.0 positive | 0.5 uncertain}`` of the findings to draw (0 / NaN / absent: not drawn)."""
    if isinstance(labels, Mapping | pd.Series):
        items = dict(labels.items())
        unknown = sorted(set(items) - set(FINDINGS))
        if unknown:
            raise ValueError(f"unknown findings {unknown}; allowed: {list(FINDINGS)}")
    else:
        values = list(labels)
        if len(values) != len(FINDINGS):
            raise ValueError(
                f"labels must have {len(FINDINGS)} values in the order {list(FINDINGS)}, got {len(values)}"
            )
        items = dict(zip(FINDINGS, values))
    out = {}
    for finding, value in items.items():
        number = float("nan") if value is None else float(value)
        if not (math.isnan(number) or number in (0.0, 1.0, -1.0)):
            raise ValueError(f"label of {finding!r} must be 1.0, 0.0, -1.0 or NaN, got {value!r}")
        if number in (1.0, -1.0):
            out[finding] = 1.0 if number == 1.0 else 0.5
    return out


def _scene_arguments(labels, seed, size, view, projection, sex, age, variant) -> dict:
    """Checked arguments of :func:`render_chest` / :func:`finding_regions` for :func:`_density`."""
    seeds = [seed] if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) else list(np.atleast_1d(seed))
    if not seeds:
        raise ValueError("seed must be an integer >= 0 or a non-empty sequence of them")
    try:
        age = float(age)
    except (TypeError, ValueError):
        age = float("nan")
    if not 0.0 <= age <= 120.0:
        raise ValueError(f"age must be a number of years in 0..120, got {age!r}")
    return {
        "strengths": _strengths(labels),
        "seeds": [checks.seed("seed", s) for s in seeds],
        "shape": checks.size("size", size, MIN_SIZE),
        "view": checks.choice("view", view, VIEWS),
        "projection": checks.choice("projection", projection, PROJECTIONS),
        "sex": checks.choice("sex", sex, SEXES),
        "age": age,
        "variant": checks.integer("variant", variant, low=0),
    }


def _density(strengths, seeds, shape, view, projection, sex, age, variant) -> tuple[np.ndarray, np.random.Generator]:
    """Float32 ``(H, W)`` density of the scene after patient positioning, and the acquisition stream."""
    height, width = shape
    grid = (
        ((np.arange(height, dtype=np.float32) + 0.5) / height)[:, None],
        ((np.arange(width, dtype=np.float32) + 0.5) / width)[None, :],
    )
    p = _anatomy(np.random.default_rng([*seeds, _ANATOMY]), view, projection, sex, age)
    drawn = {}  # finding: (its stream, its strength)
    for k, finding in enumerate(FINDINGS):  # fixed order; each finding has its own stream
        if finding in strengths:
            rng = np.random.default_rng([*seeds, _FINDING, variant, k])
            strength = rng.uniform(0.7, 1.0) if strengths[finding] == 1.0 else rng.uniform(0.35, 0.6)
            drawn[finding] = (rng, strength)
            modify = _FINDING_STEPS[finding][0]
            if modify is not None:
                modify(rng, p, strength)
    scene = _Scene(grid, p, shape)
    density = _base_density(scene)
    for finding, (rng, strength) in drawn.items():
        draw = _FINDING_STEPS[finding][1]
        added = None if draw is None else draw(rng, scene, strength)
        if added is not None:
            density += added
    acquisition = np.random.default_rng([*seeds, _ACQUISITION, variant])
    angle, scale = acquisition.uniform(-4.0, 4.0), acquisition.uniform(0.93, 1.05)  # patient positioning
    matrix = cv2.getRotationMatrix2D((width / 2.0, height / 2.0), angle, scale)
    matrix[:, 2] += acquisition.uniform(-0.03, 0.03, size=2) * (width, height)
    warped = cv2.warpAffine(density.astype(np.float32), matrix, (width, height), flags=cv2.INTER_LINEAR)
    return warped, acquisition


def render_chest(
    labels: Mapping[str, float] | Sequence[float] | pd.Series,
    seed: int | Sequence[int] = 0,
    size: tuple[int, int] = (256, 256),
    view: str = "Frontal",
    projection: str = "PA",
    sex: str = "Male",
    age: float = 60.0,
    variant: int = 0,
) -> np.ndarray:
    """A uint8 ``(H, W)`` synthetic chest radiograph showing the findings of ``labels``.

    ``labels``: ``{finding: value}`` or 14 values in :data:`FINDINGS` order; 1.0 draws the
    finding, -1.0 (uncertain) draws it weaker, 0.0 / NaN / absent do not. ``seed`` (int
    or ints) fixes the patient's anatomy; ``variant`` the acquisition (positioning,
    exposure, noise) and where the findings go. Same arguments, same pixels; switching one
    finding on or off leaves the rest of the image as it was. ``view`` ``Frontal`` /
    ``Lateral``; ``projection`` ``PA``/``AP`` (AP: larger heart, higher clavicles and
    domes, scapulae over the lungs; ignored for lateral views); ``sex`` ``Female`` adds
    breast shadows; ``age`` (years) thins the bones and unfolds the aorta.
    """
    arguments = _scene_arguments(labels, seed, size, view, projection, sex, age, variant)
    density, acquisition = _density(**arguments)
    return _expose(density, acquisition, np.random.default_rng([*arguments["seeds"], _NOISE, arguments["variant"]]))


def _expose(density: np.ndarray, acquisition: np.random.Generator, noise_rng: np.random.Generator) -> np.ndarray:
    """Film response, detector blur and noise: float density ``(H, W)`` -> uint8 ``(H, W)``."""
    height, width = density.shape
    gain = acquisition.uniform(1.6, 2.2)
    gamma = acquisition.uniform(0.85, 1.15)
    floor = acquisition.uniform(0.0, 0.05)
    signal = 1.0 - np.exp(-gain * np.maximum(density, 0.0))
    signal = (signal / np.float32(1.0 - math.exp(-gain * 1.15))).clip(0.0, 1.0) ** np.float32(gamma)
    signal = floor + (1.0 - floor) * signal
    signal = _blur(signal.astype(np.float32), acquisition.uniform(0.5, 1.0) * height / 256)
    grain = noise_rng.standard_normal((height, width), dtype=np.float32)
    sigma = acquisition.uniform(0.008, 0.02)
    image = signal + sigma * grain * np.sqrt(signal + 0.05, dtype=np.float32)
    return np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)


def finding_regions(
    labels: Mapping[str, float] | Sequence[float] | pd.Series,
    seed: int | Sequence[int] = 0,
    size: tuple[int, int] = (256, 256),
    view: str = "Frontal",
    projection: str = "PA",
    sex: str = "Male",
    age: float = 60.0,
    variant: int = 0,
    threshold: float = 0.02,
) -> dict[str, np.ndarray]:
    """``{finding: bool (H, W)}``: where each finding drawn by :func:`render_chest` changes the image.

    The scene is built with and without each finding (same streams); pixels whose density
    differs by more than ``threshold`` (about 5 grey levels) belong to the finding. For
    tests, figures and localisation checks (e.g. Grad-CAM against where a finding is).
    Renders the scene once per finding: slow.
    """
    arguments = _scene_arguments(labels, seed, size, view, projection, sex, age, variant)
    full, _ = _density(**arguments)
    regions = {}
    for finding in arguments["strengths"]:
        if finding != "No Finding":
            without = {f: s for f, s in arguments["strengths"].items() if f != finding}
            other, _ = _density(**{**arguments, "strengths": without})
            regions[finding] = np.abs(full - other) > threshold
    return regions


# =========================================================================== dataset


def _draw(rng: np.random.Generator, counts: Mapping[str, int]) -> str:
    """One key of ``counts`` drawn with probability proportional to its count."""
    keys = list(counts)
    weights = np.array([counts[k] for k in keys], dtype=np.float64)
    return keys[int(rng.choice(len(keys), p=weights / weights.sum()))]


def _plan(n_images: int, seed: int, lateral_fraction: float, stats: dict) -> pd.DataFrame:
    """One row per image: ``patient, study, number, kind, projection, sex, age, study_index``."""
    rng = np.random.default_rng([seed, _PLAN])
    studies = {k: v for k, v in stats["studies_per_patient"].items() if int(k) <= 20}
    lateral_per_study = min(1.0, lateral_fraction / (1.0 - lateral_fraction))
    projections = {k: v for k, v in stats["projection"].items() if k in PROJECTIONS}
    sexes = {k: v for k, v in stats["sex"].items() if k in ("Male", "Female")}
    ages = {str(k): n for k, n in enumerate(stats["age"]["counts"])}
    rows: list[tuple] = []
    patient = study_index = 0
    while len(rows) < n_images:
        patient += 1
        n_studies, sex = int(_draw(rng, studies)), _draw(rng, sexes)
        age = int(_draw(rng, ages)) * stats["age"]["bin_years"] + int(rng.integers(0, stats["age"]["bin_years"]))
        for study in range(1, n_studies + 1):
            kinds = ["frontal"] + (["lateral"] if rng.random() < lateral_per_study else [])
            projection = _draw(rng, projections)
            for number, kind in enumerate(kinds, start=1):
                if len(rows) < n_images:
                    rows.append((patient, study, number, kind, projection if kind == "frontal" else "", sex,
                                 int(np.clip(age + study - 1, 18, 90)), study_index))
            study_index += 1
    return pd.DataFrame(rows, columns=["patient", "study", "number", "kind", "projection", "sex", "age", "study_index"])


def make_chexpert_dataset(
    out_dir: str | os.PathLike,
    n_images: int = 1000,
    image_size: tuple[int, int] = (256, 256),
    seed: int = 0,
    valid_fraction: float = 0.1,
    lateral_fraction: float | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write a synthetic CheXpert-layout corpus to ``out_dir/CheXpert-synthetic``; return that folder.

    ``n_images`` grey 8-bit PNGs of ``image_size = (H, W)`` in
    ``{train,valid}/patientNNNNN/studyK/viewJ_{frontal,lateral}.png`` plus ``train.csv`` and
    ``valid.csv`` (CheXpert's columns; ``Path`` relative to ``out_dir``). Patients draw
    their number of studies, sex and age, studies their labels (:func:`sample_labels`,
    shared by the study's views) and projection from the real statistics; a study adds a
    lateral view so that about ``lateral_fraction`` of the images are lateral (default: the
    real share, ~14.5%). A seeded ``valid_fraction`` of the *patients* goes to ``valid``.
    Built in a staging folder and moved into place at the end; an existing dataset folder
    needs ``overwrite=True``. Same arguments, byte-identical files.
    """
    n_images = checks.positive_int("n_images", n_images)
    shape = checks.size("image_size", image_size, MIN_SIZE)
    seed = checks.seed("seed", seed)
    valid_fraction = checks.fraction("valid_fraction", valid_fraction)
    stats = label_statistics()
    if lateral_fraction is None:
        lateral_fraction = stats["views"]["Lateral"] / stats["n_rows"]
    lateral_fraction = checks.fraction("lateral_fraction", lateral_fraction)
    out_dir = Path(out_dir)
    final = out_dir / DATASET_FOLDER
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} already exists; pass overwrite=True to replace it")
    plan = _plan(n_images, seed, lateral_fraction, stats)
    labels = sample_labels(int(plan["study_index"].max()) + 1, seed, stats).to_numpy()
    patients = [f"patient{p:05d}" for p in plan["patient"]]
    split_of = splits.split_groups(patients, valid_fraction, seed, val_split="valid")
    rows = {"train": [], "valid": []}
    with files.replacing_folder(final) as staging:  # a killed run leaves the old corpus whole
        images = tqdm(plan.itertuples(index=False), total=len(plan), disable=not progress, desc="synthetic chest",
                      unit="img")
        for i, row in enumerate(images):
            split = split_of[patients[i]]
            inner = f"{split}/{patients[i]}/study{row.study}/view{row.number}_{row.kind}.png"
            values = labels[row.study_index]
            view = "Frontal" if row.kind == "frontal" else "Lateral"
            image = render_chest(
                values, seed=[seed, int(row.patient)], size=shape, view=view, projection=row.projection or "PA",
                sex=row.sex, age=row.age, variant=int(row.study) * 4 + int(row.number),
            )
            files.write_image(staging / inner, image)
            rows[split].append([f"{DATASET_FOLDER}/{inner}", row.sex, int(row.age), view, row.projection, *values])
        for split in ("train", "valid"):
            table = pd.DataFrame(rows[split], columns=list(radiographs.CHEXPERT_COLUMNS))
            buffer = io.StringIO()
            table.to_csv(buffer, index=False, lineterminator="\n")
            files.atomic_write_text(staging / f"{split}.csv", buffer.getvalue())
    return final
