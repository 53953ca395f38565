"""One self-contained HTML report per run: every figure and the key tables of ``outputs/<run>/``.

:func:`build_report` reads what the notebooks of a run wrote -- ``run.json`` (the runner's record:
profile, and per notebook its parameters and time), ``metrics/<notebook>.json`` and
``figures/*.png`` -- and writes ``report.html`` with the figures embedded (base64), each captioned
with the notebook, data, split and profile it came from, and the notebook's tables.

Which figures and tables belong to which notebook is data (:data:`FIGURE_PREFIXES`,
:data:`TABLE_KEYS`); a notebook that did not run is left out, a figure of no known notebook goes to
a last section.
"""

from __future__ import annotations

import base64
import html
import json
import os
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from helpers.core import files

__all__ = ["FIGURE_PREFIXES", "SPLIT_PARAMETERS", "TABLE_KEYS", "build_report", "caption", "table_html"]

FIGURE_PREFIXES: Mapping[str, tuple[str, ...]] = {
    "00_prepare_data": ("prepare_",),
    "01_eda": ("eda_",),
    "02_rle_masks": ("rle_",),
    "03_train_segmentation": ("train_",),
    "04_compare_architectures": ("compare_",),
    "05_pretrain_radiographs": ("pretrain_",),
    "06_transfer_comparison": ("transfer_",),
    "07_tsne_gradcam": ("tsne_", "gradcam_", "weak_"),
    "08_tflite_quantisation": ("tflite_",),
}
"""Figure name prefixes written by each notebook."""

TABLE_KEYS: Mapping[str, tuple[tuple[str, str], ...]] = {
    "00_prepare_data": (("images per class", "images_per_class"),),
    "03_train_segmentation": (("speed and memory", "speed"),),
    "04_compare_architectures": (("architectures", "table"), ("post-processing per class", "postprocessing")),
    "05_pretrain_radiographs": (("validation AUC per label", "auc"),),
    "06_transfer_comparison": (("classification (paper Table 3)", "classification.table"),
                               ("segmentation (paper Table 4)", "segmentation.table")),
    "07_tsne_gradcam": (("feature separation", "embedding"), ("Grad-CAM against true masks", "gradcam"),
                        ("weak supervision", "weak.table"), ("segmentation model Grad-CAM", "segmenter.table")),
    "08_tflite_quantisation": (("TFLite modes", "models"),),
}
"""``(title, dotted key in the metrics JSON)`` of the tables shown per notebook."""

SPLIT_PARAMETERS = ("split", "allow_leaky_split", "val_fraction", "folds", "fold", "segmenter_split")
"""Parameters that say which split a notebook's numbers come from."""

_CSS = """
body { font-family: system-ui, -apple-system, Segoe UI, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }
h1 { margin-bottom: 0.2rem; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2rem; margin-top: 2.5rem; }
figure { margin: 1.2rem 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption, .meta { color: #555; font-size: 0.9rem; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.6rem 0 1.2rem; }
th, td { border: 1px solid #ddd; padding: 0.25rem 0.5rem; text-align: right; } th { background: #f4f4f4; }
td:first-child, th:first-child { text-align: left; }
"""


def _lookup(metrics: Mapping[str, Any], dotted: str) -> Any:
    value: Any = metrics
    for key in dotted.split("."):
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return value


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return "–" if value != value else f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return html.escape(", ".join(_cell(v) for v in value))
    if isinstance(value, Mapping):
        return html.escape(json.dumps(value)[:120])
    return html.escape(str(value))


def table_html(value: Any) -> str:
    """An HTML table of ``{row: {column: value}}`` or ``{key: value}`` (empty string for anything else)."""
    if not isinstance(value, Mapping) or not value:
        return ""
    if all(isinstance(v, Mapping) for v in value.values()):
        columns = list(dict.fromkeys(c for row in value.values() for c in row))
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in ["", *columns])
        rows = "".join(
            f"<tr><td>{html.escape(str(name))}</td>" + "".join(f"<td>{_cell(row.get(c))}</td>" for c in columns) + "</tr>"
            for name, row in value.items()
        )
    else:
        head = "<th></th><th>value</th>"
        rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{_cell(v)}</td></tr>" for k, v in value.items())
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def caption(notebook: str, parameters: Mapping[str, Any], profile: str) -> str:
    """``notebook · data … · split … · profile …`` from a notebook's run parameters."""
    data = parameters.get("data_dir")
    parts = [notebook, f"data: {Path(data).name if data else 'notebook default'}"]
    split = [f"{key}={parameters[key]}" for key in SPLIT_PARAMETERS if key in parameters]
    parts.append("split: " + (", ".join(split) if split else "notebook default"))
    parts.append(f"profile: {profile}")
    return " · ".join(parts)


def _figure_html(path: Path, text: str) -> str:
    encoded = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{html.escape(path.stem)}" src="data:image/png;base64,{encoded}">'
            f"<figcaption><b>{html.escape(path.stem)}</b> — {html.escape(text)}</figcaption></figure>")


def build_report(run_dir: str | os.PathLike, out_path: str | os.PathLike | None = None, title: str | None = None) -> Path:
    """Write the HTML report of ``run_dir`` (default ``run_dir/report.html``); return its path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder not found: {run_dir}")
    record_path = run_dir / "run.json"
    record = files.read_json(record_path) if record_path.is_file() else {"profile": "unknown", "notebooks": []}
    profile = record.get("profile", "unknown")
    ran = {entry["name"]: entry for entry in record.get("notebooks", [])}
    figures = sorted((run_dir / "figures").glob("*.png")) if (run_dir / "figures").is_dir() else []
    placed: set[Path] = set()
    sections = []
    for notebook, prefixes in FIGURE_PREFIXES.items():
        metrics_path = run_dir / "metrics" / f"{notebook}.json"
        own = [f for f in figures if f.name.startswith(prefixes)]
        if notebook not in ran and not metrics_path.is_file() and not own:
            continue
        entry = ran.get(notebook, {})
        parameters = entry.get("parameters", {})
        text = caption(notebook, parameters, profile)
        parts = [f"<h2>{html.escape(notebook)}</h2>",
                 f'<p class="meta">{html.escape(text)}' + (f" · {entry['seconds']:.0f} s" if "seconds" in entry else "") + "</p>"]
        metrics = files.read_json(metrics_path) if metrics_path.is_file() else {}
        for table_title, key in TABLE_KEYS.get(notebook, ()):
            table = table_html(_lookup(metrics, key))
            if table:
                parts.append(f"<h3>{html.escape(table_title)}</h3>{table}")
        parts += [_figure_html(f, text) for f in own]
        placed.update(own)
        sections.append("\n".join(parts))
    others = [f for f in figures if f not in placed]
    if others:
        sections.append("<h2>Other figures</h2>" + "".join(_figure_html(f, f"profile: {profile}") for f in others))
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    heading = title or f"Defect recognition run “{run_dir.name}”"
    document = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(heading)}</title>"
                f"<style>{_CSS}</style></head><body><h1>{html.escape(heading)}</h1>"
                f'<p class="meta">profile {html.escape(profile)} · {len(figures)} figures · built {stamp}</p>'
                + "\n".join(sections) + "</body></html>\n")
    return files.atomic_write_text(Path(out_path) if out_path else run_dir / "report.html", document)
