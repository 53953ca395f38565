"""A trained run, saved and loaded one way: segmenters and classifiers alike.

A run folder holds what :func:`helpers.modeling.train.fit` writes (``log.csv``, ``best.weights.h5``,
...) and, once :func:`save_run` has been called, written last::

    model.weights.h5   the model's weights when it was saved (e.g. the best epoch's)
    run.json           {"format": 1, "builder": "segmenter" | "classifier", "settings": {...},
                        "metrics": {...}, "weights": "model.weights.h5"}

``settings`` are the keyword arguments of :func:`helpers.modeling.builders.build_segmenter`
(settings with an ``arch``) or :func:`~helpers.modeling.builders.build_classifier`. :func:`load_run`
builds the model from them (``encoder_weights=None``: the trained weights replace any pre-trained
file) and reads only weights: nothing in a run folder can run code.

Formats: ``1`` is this one; ``0`` is a folder written before ``run.json`` existed (notebook 03's
``build.json`` + ``best.weights.h5``; metrics then empty). A newer format, or a folder of neither
kind, is a ``ValueError`` that says what it found.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from helpers.core import files
from helpers.modeling import builders, train, weight_files
from helpers.backend import keras

__all__ = ["FORMAT", "RUN_FILE", "WEIGHTS_FILE", "Run", "add_metrics", "build_settings", "builder_of", "is_run", "load_run",
           "save_run"]

FORMAT = 1
RUN_FILE, WEIGHTS_FILE, LEGACY_BUILD_FILE = "run.json", "model.weights.h5", "build.json"
_BUILDERS = {"segmenter": builders.build_segmenter, "classifier": builders.build_classifier}


@dataclass(frozen=True)
class Run:
    """A loaded run: ``model`` (None when loaded with ``build=False``), its builder ``settings``,
    ``metrics``, epoch ``log`` (None without ``log.csv``) and the ``format`` it was saved in."""

    path: Path
    builder: str
    settings: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    log: pd.DataFrame | None = None
    model: keras.Model | None = None
    format: int = FORMAT


def builder_of(settings: dict[str, Any]) -> str:
    """``"segmenter"`` for settings with an ``arch``, else ``"classifier"``."""
    return "segmenter" if "arch" in settings else "classifier"


def _plain(value: Any) -> Any:
    """``value`` as JSON values: tuples and arrays as lists, numpy scalars as numbers, paths as strings."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    raise ValueError(f"cannot record {type(value).__name__} {value!r} in {RUN_FILE}: use numbers, strings, lists or dicts")


def save_run(
    run_dir: str | os.PathLike,
    model: keras.Model,
    settings: dict[str, Any],
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Save ``model``'s weights and ``run.json`` (settings, metrics) in ``run_dir``; returns ``run.json``.

    ``settings``: the builder's keyword arguments the model was built with (see the module
    docstring). The weights are written first and ``run.json`` last (atomically), so a folder with
    ``run.json`` always holds the weights it names. Saving again replaces both.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {"format": FORMAT, "builder": builder_of(settings), "settings": _plain(dict(settings)),
              "metrics": _plain(dict(metrics or {})), "weights": WEIGHTS_FILE}
    temporary = run_dir / f".tmp.{WEIGHTS_FILE}"
    model.save_weights(temporary)
    os.replace(temporary, run_dir / WEIGHTS_FILE)
    return files.atomic_write_json(run_dir / RUN_FILE, record)


def add_metrics(run_dir: str | os.PathLike, metrics: dict[str, Any]) -> Path:
    """Merge ``metrics`` into the ``run.json`` of a saved run (atomically; same keys replaced); returns ``run.json``.

    For values found after training, e.g. tuned post-processing (``{"postprocessing": {"<ClassId>":
    {"threshold": t, "min_area": a}}}``), which :mod:`helpers.deploy.serve` then applies.
    """
    run_dir = Path(run_dir)
    path = run_dir / RUN_FILE
    if not path.is_file():
        raise ValueError(f"{run_dir}: no {RUN_FILE} to add metrics to (save_run writes it)")
    _read_record(run_dir)  # checked: a broken record is not rewritten
    record = files.read_json(path)
    record["metrics"] = {**record["metrics"], **_plain(dict(metrics))}
    return files.atomic_write_json(path, record)


def _read_record(run_dir: Path) -> tuple[int, str, dict, dict, str]:
    """``(format, builder, settings, metrics, weights file name)`` of a run folder, checked."""
    path = run_dir / RUN_FILE
    if path.is_file():
        record = files.read_json(path)
        if not isinstance(record, dict) or not isinstance(record.get("format"), int):
            raise ValueError(f"{path}: not a run record (a JSON object with an integer 'format')")
        if record["format"] > FORMAT:
            raise ValueError(f"{path}: format {record['format']} is newer than this version reads ({FORMAT}): update the project")
        if record["format"] < 1:
            raise ValueError(f"{path}: format {record['format']} is not a run.json format (1..{FORMAT})")
        for key, kind in (("builder", str), ("settings", dict), ("metrics", dict), ("weights", str)):
            if not isinstance(record.get(key), kind):
                raise ValueError(f"{path}: '{key}' must be a JSON {'object' if kind is dict else 'string'}")
        if record["builder"] not in _BUILDERS:
            raise ValueError(f"{path}: builder {record['builder']!r}; allowed: {', '.join(_BUILDERS)}")
        if Path(record["weights"]).name != record["weights"]:
            raise ValueError(f"{path}: 'weights' must name a file in the run folder, got {record['weights']!r}")
        return record["format"], record["builder"], record["settings"], record["metrics"], record["weights"]
    legacy = run_dir / LEGACY_BUILD_FILE
    if legacy.is_file():
        settings = files.read_json(legacy)
        if not isinstance(settings, dict):
            raise ValueError(f"{legacy}: expected a JSON object of build settings; got a {type(settings).__name__}")
        return 0, builder_of(settings), settings, {}, train.BEST
    found = sorted(p.name for p in run_dir.iterdir())[:8] if run_dir.is_dir() else []
    hint = "; a transfer run from before run.json: delete it to train again" if "scores.json" in found else ""
    raise ValueError(f"{run_dir}: not a saved run (expected {RUN_FILE}, or {LEGACY_BUILD_FILE} + {train.BEST}); "
                     f"found {found or 'nothing'}{hint}")


def build_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` as the builder takes them: ``input_shape`` a tuple, no pre-trained encoder file."""
    built = {**settings, "encoder_weights": None, "weights_dir": None}
    if "input_shape" in built:
        built["input_shape"] = tuple(built["input_shape"])
    return built


def is_run(run_dir: str | os.PathLike) -> bool:
    """Whether ``run_dir`` holds a saved run: ``run.json``, or the older ``build.json``."""
    run_dir = Path(run_dir)
    return (run_dir / RUN_FILE).is_file() or (run_dir / LEGACY_BUILD_FILE).is_file()


def load_run(run_dir: str | os.PathLike, build: bool = True, weights: str | None = None) -> Run:
    """The run saved in ``run_dir``: its model with the saved weights, settings, metrics and log.

    ``build=False``: no model (settings and metrics only). ``weights``: another weights file of the
    folder to load instead of the saved one (e.g. ``last.weights.h5``).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder not found: {run_dir}")
    version, builder, settings, metrics, weights_name = _read_record(run_dir)
    if weights is not None:
        if Path(weights).name != weights:
            raise ValueError(f"weights must name a file in {run_dir}, got {weights!r}")
        weights_name = weights
    where = run_dir / (RUN_FILE if version else LEGACY_BUILD_FILE)
    log = train.read_log(run_dir) if (run_dir / train.LOG).is_file() else None
    model = None
    if build:
        weights = weight_files.check_hdf5(run_dir / weights_name, "a Keras HDF5 weights file (.h5)")
        try:
            model = _BUILDERS[builder](**build_settings(settings))
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}: cannot build the {builder} from its settings: {str(err).splitlines()[0]}") from None
        try:
            model.load_weights(weights)
        except (ValueError, OSError, KeyError) as err:
            raise ValueError(f"{weights}: does not fit the model built from {where}: {str(err).splitlines()[0]}") from None
    return Run(path=run_dir, builder=builder, settings=settings, metrics=metrics, log=log, model=model, format=version)
