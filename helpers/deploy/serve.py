"""Serve a trained model over HTTP: a JSON API (FastAPI + uvicorn) and a small web page.

    defects-serve MODEL [--classifier MODEL] [--host 127.0.0.1] [--port 8000]
                  [--threshold 0.5 [...]] [--min-area 0 [...]] [--classes CSV] [--flip-tta]
                  [--max-upload-bytes N] [--max-pixels N] [--threads 2] [--trust-code]
    python -m helpers.deploy.serve ...       # the same

``MODEL``: what :func:`helpers.deploy.predict.load_predictor` loads (a ``.tflite`` file, or a run
folder ``outputs/<run>/models/<name>/`` written by notebook 03), loaded once at start-up.
``--classifier``: a Keras classifier run (notebooks 05/06) for ``/classify`` with Grad-CAM
(:func:`helpers.studies.explain.grad_cam`; a ``.tflite`` has no gradients, so it is refused).

Endpoints (JSON unless said otherwise)
    ``GET /`` the web page (``helpers/deploy/static/``: HTML + JS, no build step, nothing external);
    ``GET /health`` liveness; ``GET /ready`` 200 once the models are loaded and warmed up;
    ``GET /model/info`` architecture, encoder, classes, input size, post-processing, training data
    and scores (from the run's ``run.json``; for a ``.tflite`` in ``<run>/tflite/`` as notebook 08
    writes it, that run's); ``POST /segment`` one image as multipart field ``image`` -> per class
    the Kaggle RLE (1-based, column-major, :mod:`helpers.core.rle`), area in pixels and maximum
    probability, plus ``overlay_png`` (base64 PNG, :func:`helpers.core.viz.overlay`) with
    ``?overlay=true``; ``POST /classify`` (with ``--classifier``) class probabilities and a Grad-CAM
    overlay of the top class (or ``?target=K``).

Post-processing
    Per-class thresholds and minimum areas come from ``--threshold``/``--min-area`` when given, else
    from the run's tuned values when present (``run.json`` metrics ``"postprocessing"``:
    ``{"<ClassId>": {"threshold": t, "min_area": a, "flips": [...]}}``, written by notebooks 03 and 04
    with :func:`helpers.modeling.postprocess.tuned_record`), else 0.5 / 0. The flip TTA is
    ``--flip-tta`` when given, else the one the tuned values were tuned with, else none.
    Class names: ``--classes``, else the run's per-class ``dice_<name>`` scores (03), else ``class 1..C``.

Requests
    An upload is decoded with :func:`helpers.core.files.decode_grey` (PNG, JPEG, BMP, TIFF; colour
    to grey luma, 16 bits to 8). Refused with a JSON ``{"detail": message}``: no ``image`` field
    (422), over ``max_upload_bytes`` (413), not an image (415), corrupt (400), a pixel format with
    no grey conversion (422), more than ``max_pixels`` pixels or larger than a fixed model input
    (413). The server reads no file a request names. Inference runs under one lock per model (a
    TFLite interpreter must not be used by two threads at once, Grad-CAM swaps an activation for
    the duration of a call); decoding, post-processing and PNG encoding run in parallel threads.
"""

from __future__ import annotations

import argparse
import base64
import io
import re
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import uvicorn
from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image
from starlette.concurrency import run_in_threadpool

from helpers.core import checks, files, severstal, viz
from helpers.deploy import export, predict
from helpers.modeling import builders, runs
from helpers.studies import explain
from helpers.backend import tf

__all__ = ["MAX_PIXELS", "MAX_UPLOAD_BYTES", "Classifier", "Segmenter", "create_app", "load_test", "main"]

MAX_UPLOAD_BYTES = 16 * 2**20  # 16 MiB: a Severstal JPEG is ~100 kB, a 16-bit 2048x2048 PNG ~8 MB
MAX_PIXELS = 2048 * 2048  # decoded pixels per image (a Severstal image is 256x1600 = 409,600)
FIELD = "image"  # the multipart field of an upload
FORM_OVERHEAD = 64 * 2**10  # multipart headers and boundaries allowed on top of max_upload_bytes
STATUS = {"unreadable": 415, "too_large": 413, "corrupt": 400, "mode": 422}  # files.ImageError kind -> HTTP status
STATIC = {"app.js": "text/javascript", "style.css": "text/css"}  # the page's files besides index.html
# the page may load only its own files; images come back as data: URLs
PAGE_POLICY = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'"
_SCORE = re.compile(r"(severstal_score|mean_iou\w*|(dice|iou|precision|recall|f1|auc|accuracy|roc_auc)(_\w+)?|"
                    r"best_val_loss|mean_val_auc)")


def _png_base64(rgb: np.ndarray) -> str:
    """A uint8 ``(H, W[, 3])`` array as a base64 PNG."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _run_beside(path: Path) -> runs.Run | None:
    """The saved run (settings and metrics, no model) describing a model file or folder, or None.

    A run folder itself; the run holding a ``.keras``/``.h5`` file; a ``.tflite`` in ``<run>/tflite/`` (notebook 08).
    """
    if path.is_dir():
        return runs.load_run(path, build=False) if runs.is_run(path) else None
    for folder in (path.parent, path.parent.parent if path.parent.name == "tflite" else None):
        if folder is not None and runs.is_run(folder):
            try:
                return runs.load_run(folder, build=False)
            except ValueError:
                return None  # a broken record beside a .tflite: serve the model without its description
    return None


def _is_score(key: str, value: Any) -> bool:
    """A score of a run's metrics: a known name with a number, or a non-empty mapping of numbers (per-label AUC)."""
    numbers = (int, float)
    numeric = (isinstance(value, numbers) and not isinstance(value, bool)) or (
        isinstance(value, dict) and value and all(isinstance(v, numbers) and not isinstance(v, bool) for v in value.values()))
    return bool(_SCORE.fullmatch(key)) and bool(numeric)


def _split_metrics(metrics: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(training facts, scores)`` of a run's metrics; server paths (``model_dir``) left out."""
    scores = {key: value for key, value in metrics.items() if _is_score(key, value)}
    training = {key: value for key, value in metrics.items()
                if key not in scores and key not in ("model_dir", "postprocessing")}
    return training, scores


def _names_from_scores(metrics: dict[str, Any], n_classes: int) -> dict[int, str] | None:
    """``{ClassId: name}`` from the per-class ``dice_<name>`` scores 03 records (in class order), if there is one per class."""
    names = [key.removeprefix("dice_") for key, value in metrics.items() if key.startswith("dice_") and _is_score(key, value)]
    return dict(zip(range(1, n_classes + 1), names)) if len(names) == n_classes else None


def _tuned(metrics: dict[str, Any], n_classes: int, where: str) -> tuple[list[float], list[int], tuple[str, ...]] | None:
    """Per-class ``(thresholds, min_areas)`` and the ``flips`` they were tuned with, from a run's
    ``"postprocessing"`` record (:func:`helpers.modeling.postprocess.tuned_record`), or None when absent."""
    table = metrics.get("postprocessing")
    if table is None:
        return None
    try:
        rows = [table[str(class_id)] for class_id in range(1, n_classes + 1)]
        return ([checks.number("threshold", row["threshold"], 0.0, 1.0) for row in rows],
                [checks.integer("min_area", row["min_area"], low=0) for row in rows],
                tuple(rows[0].get("flips") or ()))
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{where}: metrics 'postprocessing' must map every ClassId 1..{n_classes} to "
                         f"{{'threshold': t, 'min_area': a}} ({err})") from None


def _per_class(name: str, values: list, n_classes: int) -> list:
    if len(values) not in (1, n_classes):
        raise ValueError(f"{name} needs 1 value or one per class ({n_classes}); got {values!r}")
    return list(values) * (n_classes // len(values))


class _Locked:
    """A predictor whose inference runs under a lock: one call at a time (TFLite interpreters are not thread-safe)."""

    def __init__(self, predictor: Any):
        self._predictor, self._lock = predictor, threading.Lock()
        self.input_size = predictor.input_size
        self.multiple = getattr(predictor, "multiple", 32)
        model = getattr(predictor, "model", None)
        if model is None:
            self._run = lambda x: predictor.predict(x, batch_size=len(x))
        else:  # one graph for every image size: ~2x faster than eager calls, and no per-call data pipeline of model.predict
            spec = tf.TensorSpec((None, None, None, model.inputs[0].shape[-1]), tf.float32)
            graph = tf.function(lambda x: model(x, training=False), input_signature=[spec], autograph=False)
            self._run = lambda x: np.asarray(graph(x), dtype=np.float32)

    def predict(self, images: np.ndarray, batch_size: int = 1, progress: bool = False) -> np.ndarray:
        with self._lock:
            return self._run(images)


class Segmenter:
    """A segmentation model loaded once: its predictor (under a lock), post-processing and description."""

    def __init__(self, model_path: str | Path, thresholds: list[float] | None = None, min_areas: list[int] | None = None,
                 class_names: dict[int, str] | None = None, flips: tuple[str, ...] | None = None, num_threads: int = 2,
                 trust_code: bool = False):
        self.path = Path(model_path)
        self.format = "tflite" if self.path.suffix == ".tflite" else "keras"
        self.predictor = _Locked(predict.load_predictor(self.path, num_threads=num_threads, trust_code=trust_code))
        self.run = _run_beside(self.path)
        warm = self.predictor.input_size or (self.predictor.multiple, self.predictor.multiple)
        probs, _ = predict.predict_image(self.predictor, np.zeros(warm, np.uint8), name="warm-up")
        self.n_classes = probs.shape[-1]
        tuned = _tuned(self.run.metrics, self.n_classes, str(self.run.path)) if self.run else None
        if thresholds is not None or min_areas is not None or tuned is None:
            self.postprocessing_source = "command line" if thresholds is not None or min_areas is not None else "defaults"
            tuned = tuned or ([0.5], [0], ())
            thresholds = tuned[0] if thresholds is None else thresholds
            min_areas = tuned[1] if min_areas is None else min_areas
        else:
            self.postprocessing_source = "run metrics (tuned)"
            thresholds, min_areas = tuned[:2]
            flips = tuned[2] if flips is None else flips  # the flip TTA the values were tuned with
        self.flips = tuple(checks.choice("flips", flip, ("horizontal", "vertical")) for flip in (flips or ()))
        self.thresholds = [checks.number("thresholds", t, 0.0, 1.0) for t in _per_class("thresholds", thresholds, self.n_classes)]
        self.min_areas = [checks.integer("min_areas", a, low=0) for a in _per_class("min_areas", min_areas, self.n_classes)]
        names = (class_names or (_names_from_scores(self.run.metrics, self.n_classes) if self.run else None)
                 or {c: f"class {c}" for c in range(1, self.n_classes + 1)})
        if sorted(names) != list(range(1, self.n_classes + 1)):
            raise ValueError(f"class names must cover ClassId 1..{self.n_classes} (the model's outputs); got {sorted(names)}")
        self.class_names = {int(c): str(n) for c, n in names.items()}

    def info(self) -> dict[str, Any]:
        """What ``/model/info`` reports."""
        settings = self.run.settings if self.run else {}
        training, scores = _split_metrics(self.run.metrics if self.run else {})
        size = self.predictor.input_size
        return {
            "model": self.path.name, "format": self.format, "architecture": settings.get("arch"),
            "encoder": settings.get("backbone"), "encoder_weights": training.get("encoder_weights"),
            "classes": [{"class_id": c, "name": n} for c, n in self.class_names.items()],
            "input": {"size": list(size) if size else None, "multiple": None if size else self.predictor.multiple,
                      "channels": 1, "range": [0, 255]},
            "postprocessing": {"thresholds": self.thresholds, "min_areas": self.min_areas, "flips": list(self.flips),
                               "source": self.postprocessing_source},
            "settings": {k: v for k, v in settings.items() if k not in ("weights_dir", "encoder_weights")},
            "training": training, "scores": scores, "run": self.run.path.name if self.run else None,
        }

    def segment(self, image: np.ndarray, name: str, overlay: bool) -> dict[str, Any]:
        """``/segment`` of a decoded ``(H, W)`` uint8 image."""
        started = time.perf_counter()
        probs, masks = predict.predict_image(self.predictor, image, self.thresholds, self.min_areas, self.flips, name=repr(name))
        areas = masks.reshape(-1, self.n_classes).sum(axis=0)
        peaks = probs.reshape(-1, self.n_classes).max(axis=0)
        classes = [{"class_id": c + 1, "name": self.class_names[c + 1], "rle": rle, "area": int(areas[c]),
                    "max_probability": float(peaks[c]), "threshold": self.thresholds[c], "min_area": self.min_areas[c]}
                   for c, rle in enumerate(severstal.encode_masks(masks))]
        result = {"image": {"name": name, "height": image.shape[0], "width": image.shape[1]}, "classes": classes,
                  "overlay_png": _png_base64(viz.overlay(image, masks)) if overlay else None}
        return result | {"seconds": time.perf_counter() - started}


class Classifier:
    """A Keras image classifier (a saved run) for ``/classify``: probabilities and Grad-CAM, under a lock."""

    def __init__(self, model_path: str | Path, trust_code: bool = False):
        self.path = Path(model_path)
        if self.path.suffix == ".tflite":
            raise ValueError(f"{self.path}: Grad-CAM needs the Keras classifier (its run folder), not a .tflite file")
        self.model, self.settings = export.load_keras_model(self.path, trust_code=trust_code)
        if len(self.model.outputs[0].shape) != 2:
            raise ValueError(f"{self.path}: outputs {tuple(self.model.outputs[0].shape)}, not (N, classes): "
                             "pass a classifier to --classifier and a segmenter as MODEL")
        height, width, self.channels = self.model.inputs[0].shape[1:4]
        self.input_size = (int(height), int(width)) if height is not None and width is not None else None
        self.run = _run_beside(self.path)
        self.n_classes = int(self.model.outputs[0].shape[-1])
        metrics = self.run.metrics if self.run else {}
        labels = metrics.get("labels") or list(metrics.get("auc") or {})
        self.names = [str(n) for n in labels] if len(labels) == self.n_classes else [f"class {k}" for k in range(self.n_classes)]
        self._lock = threading.Lock()
        self.classify(np.zeros(self.input_size or (32, 32), np.uint8), target=None, overlay=False)  # warm-up

    def info(self) -> dict[str, Any]:
        training, scores = _split_metrics(self.run.metrics if self.run else {})
        return {"model": self.path.name, "format": "keras", "encoder": self.settings.get("backbone"),
                "activation": self.settings.get("activation", "sigmoid"), "classes": self.names,
                "input": {"size": list(self.input_size) if self.input_size else None, "channels": int(self.channels),
                          "resized": True},
                "training": {k: v for k, v in training.items() if k not in ("auc", "labels")}, "scores": scores,
                "run": self.run.path.name if self.run else None}

    def classify(self, image: np.ndarray, target: int | None, overlay: bool = True) -> dict[str, Any]:
        """Probabilities of a ``(H, W)`` uint8 image, resized to the classifier's input, and Grad-CAM of ``target``."""
        started = time.perf_counter()
        if target is not None and not 0 <= target < self.n_classes:
            raise ValueError(f"target must be a class index in 0..{self.n_classes - 1}, got {target}")
        height, width = self.input_size or builders.round_up(image.shape, 32)
        shrink = height * width < image.shape[0] * image.shape[1]
        resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        batch = np.repeat(resized[None, ..., None].astype(np.float32), self.channels, axis=-1)
        with self._lock:
            probs = np.asarray(self.model(batch, training=False), dtype=np.float32)[0]
            chosen = int(np.argmax(probs)) if target is None else target
            cam = explain.grad_cam(self.model, batch, target=chosen)[0] if overlay else None
        result = {"classes": [{"index": k, "name": n, "probability": float(p)} for k, (n, p) in enumerate(zip(self.names, probs))],
                  "predicted": int(np.argmax(probs)), "target": chosen, "image": {"height": image.shape[0], "width": image.shape[1]},
                  "overlay_png": None}
        if cam is not None:
            full = cv2.resize(cam, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
            result["overlay_png"] = _png_base64(explain.overlay(image, full))
        return result | {"seconds": time.perf_counter() - started}


class _BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes is a 413 with a JSON message, before or while it is read."""

    def __init__(self, app: Any, limit: int, message: str):
        self.app, self.limit, self.message = app, limit, message

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await JSONResponse({"detail": self.message}, status_code=413)(scope, receive, send)
        received = 0

        async def limited():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise HTTPException(413, self.message)  # FastAPI's body parsing re-raises it: a JSON 413
            return message

        return await self.app(scope, limited, send)


def _validation_message(err: RequestValidationError) -> str:
    """One line per problem of a request that does not match an endpoint's parameters."""
    problems = []
    for error in err.errors():
        where, *path = error.get("loc") or ("request",)
        field = ".".join(str(p) for p in path) or where
        if error.get("type") == "missing" and where == "body":
            problems.append(f"missing field {field!r}: send the image as multipart/form-data field {FIELD!r}")
        elif where == "body" and "UploadFile" in str(error.get("msg")):
            problems.append(f"field {field!r} must be a file: send the image as a multipart/form-data file part, not text")
        elif error.get("type") == "missing":
            problems.append(f"missing {where} parameter {field!r}")
        else:
            problems.append(f"{where} parameter {field!r}: {error.get('msg')}, got {error.get('input')!r}")
    return "; ".join(problems)


def _static(name: str) -> str:
    return resources.files("helpers.deploy").joinpath("static", name).read_text(encoding="utf-8")


def create_app(
    model_path: str | Path,
    classifier_path: str | Path | None = None,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    max_pixels: int = MAX_PIXELS,
    thresholds: list[float] | None = None,
    min_areas: list[int] | None = None,
    class_names: dict[int, str] | None = None,
    flips: tuple[str, ...] | None = None,
    num_threads: int = 2,
    trust_code: bool = False,
) -> FastAPI:
    """The FastAPI app serving ``model_path`` (and ``classifier_path``); both load here, once (module doc)."""
    max_upload_bytes = checks.positive_int("max_upload_bytes", max_upload_bytes)
    max_pixels = checks.positive_int("max_pixels", max_pixels)
    segmenter = Segmenter(model_path, thresholds, min_areas, class_names, flips, num_threads, trust_code)
    classifier = Classifier(classifier_path, trust_code) if classifier_path is not None else None
    page = {name: _static(name) for name in ("index.html", *STATIC)}
    too_big = f"upload larger than the limit of {max_upload_bytes:,} bytes (max_upload_bytes)"

    app = FastAPI(title="defect-notebooks", summary="Steel defect segmentation and radiograph classification",
                  docs_url=None, redoc_url=None)  # the docs pages load scripts from a CDN; /openapi.json stays
    app.state.segmenter, app.state.classifier = segmenter, classifier
    app.add_middleware(_BodyLimit, limit=max_upload_bytes + FORM_OVERHEAD, message=too_big)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _validation_message(err)}, status_code=422)

    async def decode(upload: UploadFile, max_size: tuple[int, int] | None) -> tuple[np.ndarray, str]:
        name = upload.filename or FIELD
        data = await upload.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise HTTPException(413, too_big)
        try:
            return await run_in_threadpool(files.decode_grey, data, name, max_pixels, max_size), name
        except files.ImageError as err:
            status = STATUS[err.kind]
            hint = f" (max_pixels {max_pixels:,})" if status == 413 and max_size is None else ""
            raise HTTPException(status, f"{err}{hint}") from None

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> HTMLResponse:
        return HTMLResponse(page["index.html"], headers={"Content-Security-Policy": PAGE_POLICY})

    for name, media_type in STATIC.items():
        app.add_api_route(f"/static/{name}", lambda name=name, media_type=media_type: Response(page[name], media_type=media_type),
                          methods=["GET"], include_in_schema=False)

    @app.get("/health")
    def health() -> dict:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/ready")
    def ready() -> dict:
        """Readiness: the models are loaded and warmed up (they load before the server starts)."""
        return {"ready": True, "model": segmenter.path.name, "classifier": classifier.path.name if classifier else None}

    @app.get("/model/info")
    def model_info() -> dict:
        """The served models, their post-processing, training data and scores, and the request limits."""
        return {**segmenter.info(), "classifier": classifier.info() if classifier else None,
                "limits": {"max_upload_bytes": max_upload_bytes, "max_pixels": max_pixels, "field": FIELD}}

    @app.post("/segment")
    async def segment(image: UploadFile = File(..., description="the image (PNG, JPEG, BMP, TIFF)"),
                      overlay: bool = Query(False, description="also return the overlay as a base64 PNG")) -> dict:
        """Per-class RLE (Kaggle: 1-based, column-major), area (pixels) and maximum probability of one image."""
        grey, name = await decode(image, segmenter.predictor.input_size)
        return await run_in_threadpool(segmenter.segment, grey, name, overlay)

    @app.post("/classify")
    async def classify(image: UploadFile = File(..., description="the image (PNG, JPEG, BMP, TIFF)"),
                       target: int | None = Query(None, ge=0, description="class index to explain (default: the top class)"),
                       overlay: bool = Query(True, description="return the Grad-CAM overlay as a base64 PNG")) -> dict:
        """Class probabilities and the Grad-CAM overlay (:func:`helpers.studies.explain.grad_cam`) of one image."""
        if classifier is None:
            raise HTTPException(404, "no classifier is served: start defects-serve with --classifier MODEL")
        if target is not None and target >= classifier.n_classes:
            raise HTTPException(422, f"query parameter 'target' must be a class index in 0..{classifier.n_classes - 1}, got {target}")
        grey, name = await decode(image, None)
        result = await run_in_threadpool(classifier.classify, grey, target, overlay)
        return {**result, "image": {**result["image"], "name": name}}

    return app


# ------------------------------------------------------------------ load test
def load_test(url: str, image: bytes, requests: int = 200, concurrency: int = 8, timeout: float = 120.0,
              name: str = "load.png") -> dict[str, Any]:
    """POST ``image`` (field ``image``) to ``url`` ``requests`` times from ``concurrency`` threads.

    Returns ``{"requests", "concurrency", "errors", "statuses", "seconds", "requests_per_s",
    "p50_ms", "p95_ms", "max_ms"}``; an error is any answer but 200 (or no answer within ``timeout``).
    """
    requests = checks.positive_int("requests", requests)
    concurrency = checks.positive_int("concurrency", concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with httpx.Client(timeout=timeout, limits=limits) as client, ThreadPoolExecutor(concurrency) as pool:
        def one(_: int) -> tuple[float, int]:
            started = time.perf_counter()
            try:
                status = client.post(url, files={FIELD: (name, image, "application/octet-stream")}).status_code
            except httpx.HTTPError:
                status = 0
            return time.perf_counter() - started, status

        started = time.perf_counter()
        results = list(pool.map(one, range(requests)))
        seconds = time.perf_counter() - started
    latencies = np.array([latency for latency, _ in results]) * 1000
    statuses: dict[str, int] = {}
    for _, status in results:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    return {"requests": requests, "concurrency": concurrency, "errors": requests - statuses.get("200", 0), "statuses": statuses,
            "seconds": seconds, "requests_per_s": requests / seconds, "p50_ms": float(np.percentile(latencies, 50)),
            "p95_ms": float(np.percentile(latencies, 95)), "max_ms": float(latencies.max())}


# ------------------------------------------------------------------ command line
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="defects-serve", description="Serve a segmentation model (and a classifier) over HTTP.")
    parser.add_argument("model", help=".tflite file, or a run folder written by notebook 03 (outputs/<run>/models/<name>)")
    parser.add_argument("--classifier", metavar="MODEL", help="a Keras classifier run folder (05/06) for /classify with Grad-CAM")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--threshold", type=float, nargs="+", help="probability threshold, one or one per class (default: the run's tuned values, else 0.5)")
    parser.add_argument("--min-area", type=int, nargs="+", help="minimum component area in pixels, one or one per class (default: tuned, else 0)")
    parser.add_argument("--classes", metavar="CSV_OR_DATASET", help="classes.csv (ClassId,Name), or a dataset folder holding it")
    parser.add_argument("--flip-tta", action="store_true", help="average each prediction with its horizontal flip")
    parser.add_argument("--max-upload-bytes", type=int, default=MAX_UPLOAD_BYTES, help=f"largest upload (default {MAX_UPLOAD_BYTES:,})")
    parser.add_argument("--max-pixels", type=int, default=MAX_PIXELS, help=f"largest image in pixels (default {MAX_PIXELS:,})")
    parser.add_argument("--threads", type=int, default=2, help="TFLite interpreter threads (default 2)")
    parser.add_argument("--trust-code", action="store_true", help="load model files holding Python code (that code runs)")
    parser.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    return parser


def _class_names(where: str | None) -> dict[int, str] | None:
    """``{ClassId: name}`` of ``--classes``: a ``classes.csv`` file, or a dataset folder holding one."""
    if where is None:
        return None
    path = Path(where)
    folder = path.parent if path.is_file() and path.name == "classes.csv" else path
    if not (folder / "classes.csv").is_file():
        raise FileNotFoundError(f"--classes {path}: expected a classes.csv file or a dataset folder holding one")
    return severstal.read_classes(folder)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: load the models, then serve until interrupted; errors exit 1 with a one-line message."""
    args = _parser().parse_args(argv)
    try:
        port = checks.integer("port", args.port, 0, 65535)
        app = create_app(args.model, args.classifier, args.max_upload_bytes, args.max_pixels, args.threshold, args.min_area,
                         _class_names(args.classes), ("horizontal",) if args.flip_tta else None, args.threads, args.trust_code)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    uvicorn.run(app, host=args.host, port=port, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
