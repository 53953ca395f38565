"""Tests of helpers.deploy.serve: every endpoint and every bad request with FastAPI's TestClient; a real
uvicorn under a bounded load test and the web page in headless Chromium (both slow: they start processes)."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from helpers.core import files, rle
from helpers.deploy import export, serve
from helpers.modeling import builders, runs
from helpers.backend import keras

ROOT = Path(__file__).resolve().parents[1]
SIZE = (64, 96)  # the TFLite model's fixed input (H, W)
TUNED = {"1": {"threshold": 0.4, "min_area": 3}, "2": {"threshold": 0.6, "min_area": 0},
         "3": {"threshold": 0.5, "min_area": 10}, "4": {"threshold": 0.7, "min_area": 5}}


def _tiny_segmenter() -> keras.Model:
    """(B, H, W, 1) in [0, 255] -> (B, H, W, 2): class 1 where the image is bright (> 200), class 2 where dark (< 50)."""
    inputs = keras.Input((None, None, 1), name="image")
    x = keras.layers.Conv2D(2, 1, activation="sigmoid", name="head")(inputs)
    model = keras.Model(inputs, x, name="bright_dark")
    model.get_layer("head").set_weights([np.array([[[[0.1, -0.1]]]], np.float32), np.array([-20.0, 5.0], np.float32)])
    return model


def _strip(height: int = 50, width: int = 80) -> np.ndarray:
    """A grey image with a bright block (class 1, 15x30 px) and a dark block (class 2, 15x20 px)."""
    image = np.full((height, width), 128, np.uint8)
    image[5:20, 10:40] = 250
    image[30:45, 50:70] = 10
    return image


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _encoded(array: np.ndarray, format: str, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(array)
    (image.convert(mode) if mode else image).save(buffer, format=format)
    return buffer.getvalue()


def _decode_png(text: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(text))))


def _upload(data: bytes, name: str = "strip.png") -> dict:
    return {"image": (name, data, "application/octet-stream")}


@pytest.fixture(scope="module")
def tflite_model(tmp_path_factory) -> Path:
    return export.export_tflite(_tiny_segmenter(), tmp_path_factory.mktemp("tflite") / "tiny.tflite", input_size=SIZE)


@pytest.fixture(scope="module")
def unet_run(tmp_path_factory) -> Path:
    """A run folder as notebook 03 writes it (tiny decoder, 4 classes), with tuned post-processing in its metrics."""
    keras.utils.set_random_seed(0)
    settings = dict(arch="unet", backbone="resnet18", input_shape=[None, None, 1], classes=4, decoder_filters=[8] * 5)
    model = builders.build_segmenter(**settings)
    run_dir = tmp_path_factory.mktemp("outputs") / "models" / "unet-resnet18"
    metrics = {"arch": "unet", "backbone": "resnet18", "encoder_weights": "random", "n_train": 51, "n_val": 13,
               "image_size": [128, 256], "epochs_run": 1, "severstal_score": 0.5, "dice_class_1": 0.25,
               "mean_iou": 0.125, "model_dir": "/somewhere/on/the/server", "postprocessing": TUNED,
               "precision": "float32", "precision_rates": {}}  # the precision policy of 03: not a score
    runs.save_run(run_dir, model, settings, metrics)
    return run_dir


@pytest.fixture(scope="module")
def classifier_run(tmp_path_factory) -> Path:
    keras.utils.set_random_seed(0)
    settings = dict(backbone="mobilenet", input_shape=[64, 64, 1], n_outputs=2, alpha=0.25)
    run_dir = tmp_path_factory.mktemp("outputs") / "pretrained" / "classifier"
    runs.save_run(run_dir, builders.build_classifier(**settings), settings,
                  {"best_val_loss": 0.69, "mean_val_auc": 0.5, "auc": {"normal": 0.5, "defect": 0.5}})
    return run_dir


@pytest.fixture(scope="module")
def tflite_client(tflite_model) -> TestClient:
    return TestClient(serve.create_app(tflite_model, max_upload_bytes=200_000, max_pixels=20_000))


@pytest.fixture(scope="module")
def run_client(unet_run, classifier_run) -> TestClient:
    return TestClient(serve.create_app(unet_run, classifier_run))


# ------------------------------------------------------------------ endpoints
def test_health_ready_and_the_page(tflite_client):
    assert tflite_client.get("/health").json() == {"status": "ok"}
    assert tflite_client.get("/ready").json() == {"ready": True, "model": "tiny.tflite", "classifier": None}
    page = tflite_client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert '<script src="/static/app.js"' in page.text
    for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
        answer = tflite_client.get(f"/static/{name}")
        assert answer.status_code == 200 and answer.headers["content-type"].startswith(kind)
    for name in ("index.html", "app.js", "style.css"):  # nothing from elsewhere: no CDN, no build step
        text = (ROOT / "helpers" / "deploy" / "static" / name).read_text()
        assert "http://" not in text and "https://" not in text and "import " not in text, name
    assert tflite_client.get("/static/../serve.py").status_code == 404
    assert tflite_client.get("/docs").status_code == 404  # its page loads scripts from a CDN


def test_model_info_of_a_tflite_file(tflite_client):
    info = tflite_client.get("/model/info").json()
    assert info["model"] == "tiny.tflite" and info["format"] == "tflite" and info["architecture"] is None
    assert info["classes"] == [{"class_id": 1, "name": "class 1"}, {"class_id": 2, "name": "class 2"}]
    assert info["input"] == {"size": list(SIZE), "multiple": None, "channels": 1, "range": [0, 255]}
    assert info["postprocessing"] == {"thresholds": [0.5, 0.5], "min_areas": [0, 0], "flips": [], "source": "defaults"}
    assert info["limits"] == {"max_upload_bytes": 200_000, "max_pixels": 20_000, "field": "image"}
    assert info["classifier"] is None and info["run"] is None


def test_model_info_of_a_run_folder_gives_its_training_scores_and_tuned_postprocessing(run_client):
    info = run_client.get("/model/info").json()
    assert (info["model"], info["format"], info["architecture"], info["encoder"]) == ("unet-resnet18", "keras", "unet", "resnet18")
    assert info["encoder_weights"] == "random" and len(info["classes"]) == 4
    assert info["input"] == {"size": None, "multiple": 32, "channels": 1, "range": [0, 255]}
    assert info["postprocessing"]["source"] == "run metrics (tuned)"
    assert info["postprocessing"]["thresholds"] == [0.4, 0.6, 0.5, 0.7] and info["postprocessing"]["min_areas"] == [3, 0, 10, 5]
    assert info["training"]["n_train"] == 51 and info["training"]["image_size"] == [128, 256]
    assert info["training"]["precision"] == "float32" and info["training"]["precision_rates"] == {}
    assert info["scores"] == {"severstal_score": 0.5, "dice_class_1": 0.25, "mean_iou": 0.125}
    assert "/somewhere/on/the/server" not in json.dumps(info)  # no server paths
    assert info["classifier"]["classes"] == ["normal", "defect"] and info["classifier"]["input"]["size"] == [64, 64]
    assert info["classifier"]["scores"] == {"best_val_loss": 0.69, "mean_val_auc": 0.5, "auc": {"normal": 0.5, "defect": 0.5}}


def test_a_tflite_model_in_a_run_folder_is_described_by_that_run(tflite_model, tmp_path):
    run_dir = tmp_path / "models" / "bright-dark"
    settings = dict(arch="unet", backbone="resnet18", input_shape=[None, None, 1], classes=2)
    (run_dir / "tflite").mkdir(parents=True)
    files.atomic_write_json(run_dir / runs.RUN_FILE, {"format": 1, "builder": "segmenter", "settings": settings,
                                                       "metrics": {"n_train": 7, "dice_bright": 0.9, "dice_dark": 0.8, "postprocessing": {"1": {"threshold": 0.3, "min_area": 2},
                                                                                                    "2": {"threshold": 0.9, "min_area": 0}}},
                                                       "weights": runs.WEIGHTS_FILE})
    shutil.copy(tflite_model, run_dir / "tflite" / "bright-dark_float32.tflite")  # where notebook 08 writes it
    info = TestClient(serve.create_app(run_dir / "tflite" / "bright-dark_float32.tflite")).get("/model/info").json()
    assert info["architecture"] == "unet" and info["training"] == {"n_train": 7} and info["run"] == "bright-dark"
    assert info["classes"] == [{"class_id": 1, "name": "bright"}, {"class_id": 2, "name": "dark"}]  # from 03's dice_<name>
    assert info["postprocessing"]["thresholds"] == [0.3, 0.9] and info["postprocessing"]["min_areas"] == [2, 0]
    overridden = TestClient(serve.create_app(run_dir / "tflite" / "bright-dark_float32.tflite", thresholds=[0.5]))
    assert overridden.get("/model/info").json()["postprocessing"] == {
        "thresholds": [0.5, 0.5], "min_areas": [2, 0], "flips": [], "source": "command line"}


def test_values_tuned_with_a_flip_tta_are_served_with_it_unless_told_otherwise(tflite_model, tmp_path):
    run_dir = tmp_path / "models" / "bright-dark"
    settings = dict(arch="unet", backbone="resnet18", input_shape=[None, None, 1], classes=2)
    (run_dir / "tflite").mkdir(parents=True)
    tuned = {str(c): {"threshold": 0.3, "min_area": 2, "flips": ["horizontal"]} for c in (1, 2)}
    files.atomic_write_json(run_dir / runs.RUN_FILE, {"format": 1, "builder": "segmenter", "settings": settings,
                                                       "metrics": {"postprocessing": tuned}, "weights": runs.WEIGHTS_FILE})
    model = run_dir / "tflite" / "bright-dark_float32.tflite"
    shutil.copy(tflite_model, model)
    served = TestClient(serve.create_app(model)).get("/model/info").json()["postprocessing"]
    assert served == {"thresholds": [0.3, 0.3], "min_areas": [2, 2], "flips": ["horizontal"], "source": "run metrics (tuned)"}
    plain = TestClient(serve.create_app(model, flips=())).get("/model/info").json()["postprocessing"]
    assert plain["flips"] == [] and plain["source"] == "run metrics (tuned)"


def test_segment_gives_kaggle_rle_areas_probabilities_and_the_overlay(tflite_client):
    image = _strip()  # 50x80, smaller than the model's 64x96: padded, then cropped back
    answer = tflite_client.post("/segment?overlay=true", files=_upload(_png(image)))
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["image"] == {"name": "strip.png", "height": 50, "width": 80}
    expected = np.stack([image > 200, image < 50], axis=-1)
    for c, entry in enumerate(result["classes"]):
        assert entry["class_id"] == c + 1 and entry["name"] == f"class {c + 1}"
        assert entry["rle"] == rle.encode(expected[..., c])  # 1-based, column-major
        np.testing.assert_array_equal(rle.decode(entry["rle"], image.shape), expected[..., c])
        assert entry["area"] == int(expected[..., c].sum()) == (450 if c == 0 else 300)
        assert entry["threshold"] == 0.5 and entry["min_area"] == 0
    sigmoid = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    assert result["classes"][0]["max_probability"] == pytest.approx(sigmoid(0.1 * 250 - 20), rel=1e-5)
    assert result["classes"][1]["max_probability"] == pytest.approx(sigmoid(-0.1 * 10 + 5), rel=1e-5)
    overlay = _decode_png(result["overlay_png"])
    assert overlay.shape == (50, 80, 3) and overlay.dtype == np.uint8
    assert tflite_client.post("/segment", files=_upload(_png(image))).json()["overlay_png"] is None


@pytest.mark.parametrize("kind", ["grey_rgb", "colour_jpeg", "rgba", "palette", "sixteen_bit", "bmp", "tiff"])
def test_segment_converts_what_read_grey_converts(tflite_client, kind):
    image = _strip()
    data = {
        "grey_rgb": lambda: _png(np.repeat(image[..., None], 3, axis=-1)),
        "colour_jpeg": lambda: _encoded(np.dstack([image, image // 2, image]), "JPEG"),
        "rgba": lambda: _png(np.dstack([image, image, image, np.full_like(image, 255)])),
        "palette": lambda: _encoded(image, "PNG", "P"),
        "sixteen_bit": lambda: _png(image.astype(np.uint16) * 257),
        "bmp": lambda: _encoded(image, "BMP"),
        "tiff": lambda: _encoded(image, "TIFF"),
    }[kind]()
    result = tflite_client.post("/segment", files=_upload(data, f"x.{kind}")).json()
    assert result["image"]["height"] == 50 and result["image"]["width"] == 80
    if kind != "colour_jpeg":  # lossless: the same grey levels, the same masks
        assert result["classes"][0]["area"] == 450 and result["classes"][1]["area"] == 300


def test_segment_with_a_run_folder_uses_its_tuned_postprocessing(run_client, unet_run):
    image = _strip(100, 200)  # not a multiple of 32: padded to 128x224, cropped back
    result = run_client.post("/segment?overlay=1", files=_upload(_png(image))).json()
    assert [c["threshold"] for c in result["classes"]] == [0.4, 0.6, 0.5, 0.7]
    assert [c["min_area"] for c in result["classes"]] == [3, 0, 10, 5]
    assert _decode_png(result["overlay_png"]).shape == (100, 200, 3)
    # the same masks as helpers.deploy.predict on the folder (one implementation of loading and post-processing)
    folder = unet_run.parent.parent / "images"
    files.write_image(folder / "strip.png", image)
    from helpers.deploy import predict

    wide = predict.predict_folder(unet_run, folder, unet_run.parent.parent / "predicted", thresholds=[0.4, 0.6, 0.5, 0.7],
                                  min_areas=[3, 0, 10, 5], overlays=False, progress=False)
    assert [c["rle"] for c in result["classes"]] == [wide.loc["strip.png", c] for c in (1, 2, 3, 4)]
    for entry in result["classes"]:
        assert entry["area"] == int(rle.decode(entry["rle"], image.shape).sum())
        assert 0 <= entry["max_probability"] <= 1


def test_classify_gives_probabilities_and_a_grad_cam_overlay(run_client):
    image = _strip(100, 120)  # resized to the classifier's 64x64; the CAM is drawn over the image itself
    result = run_client.post("/classify", files=_upload(_png(image), "weld.png")).json()
    assert [c["name"] for c in result["classes"]] == ["normal", "defect"] and [c["index"] for c in result["classes"]] == [0, 1]
    probabilities = [c["probability"] for c in result["classes"]]
    assert all(0 <= p <= 1 for p in probabilities)
    assert result["predicted"] == result["target"] == int(np.argmax(probabilities))
    assert result["image"] == {"height": 100, "width": 120, "name": "weld.png"}
    assert _decode_png(result["overlay_png"]).shape == (100, 120, 3)
    explained = run_client.post("/classify?target=1&overlay=false", files=_upload(_png(image))).json()
    assert explained["target"] == 1 and explained["overlay_png"] is None
    assert [c["probability"] for c in explained["classes"]] == pytest.approx(probabilities, abs=1e-6)


def test_classify_without_a_classifier_and_a_target_out_of_range(tflite_client, run_client):
    answer = tflite_client.post("/classify", files=_upload(_png(_strip())))
    assert answer.status_code == 404 and "--classifier" in answer.json()["detail"]
    answer = run_client.post("/classify?target=2", files=_upload(_png(_strip())))
    assert answer.status_code == 422 and answer.json()["detail"] == "query parameter 'target' must be a class index in 0..1, got 2"


# ------------------------------------------------------------------ bad requests
def _truncated_png() -> bytes:
    data = _png(np.arange(64 * 96, dtype=np.uint32).reshape(64, 96).astype(np.uint8))
    return data[: len(data) // 2]


def _png_declaring(height: int, width: int) -> bytes:
    """A 4x4 grey PNG whose header claims ``height x width`` pixels."""
    data = bytearray(_png(np.zeros((4, 4), np.uint8)))
    ihdr = data[12:29]
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    return bytes(data)


BAD_UPLOADS = {
    "not_an_image": (b"hello, I am text\n" * 10, 415, r"cannot read image 'bad': not an image file of a readable format \(PNG, JPEG, BMP, TIFF\)"),
    "empty": (b"", 415, r"cannot read image 'bad': the file is empty"),
    "corrupt": (_truncated_png(), 400, r"corrupt or truncated image 'bad'"),
    "cmyk": (_encoded(_strip(), "JPEG", "CMYK"), 422, r"unsupported image mode 'CMYK' in 'bad'; readable: 1, L, P, RGB"),
    "float": (_encoded(_strip().astype(np.float32), "TIFF"), 422, r"unsupported image mode 'F' in 'bad'"),
    "larger_than_the_model": (_png(np.zeros((80, 96), np.uint8)), 413,
                              r"refusing image 'bad': it is 80x96 \(HxW\), larger than the model input 64x96"),
    "over_max_pixels": (_png_declaring(200, 120), 413, r"declares 200x120 pixels \(HxW\), more than the limit of 20,000"),
    "bomb": (_png_declaring(30000, 30000), 413, r"refusing image 'bad'"),
}


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("kind", list(BAD_UPLOADS))
def test_bad_uploads_get_a_precise_4xx(tflite_client, kind):
    data, status, message = BAD_UPLOADS[kind]
    answer = tflite_client.post("/segment", files=_upload(data, "bad"))
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert re.search(message, answer.json()["detail"]), answer.json()["detail"]


def test_a_pixel_limit_applies_to_models_of_any_size(unet_run):
    client = TestClient(serve.create_app(unet_run, max_pixels=1000))
    answer = client.post("/segment", files=_upload(_png(np.zeros((40, 40), np.uint8))))
    assert answer.status_code == 413 and answer.json()["detail"].endswith("more than the limit of 1,000 (a decompression bomb, "
                                                                          "or an image to tile first) (max_pixels 1,000)")


def test_uploads_over_the_size_limit_are_refused_before_and_while_reading(tflite_client):
    message = "upload larger than the limit of 200,000 bytes (max_upload_bytes)"
    for size in (200_001, 400_000):  # the part alone, and the whole body over its allowance
        answer = tflite_client.post("/segment", files=_upload(b"\0" * size))
        assert (answer.status_code, answer.json()) == (413, {"detail": message})

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(40):
            yield b"\0" * 10_000

    answer = tflite_client.post("/segment", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"})
    assert (answer.status_code, answer.json()) == (413, {"detail": message})


@pytest.mark.parametrize(
    "request_kwargs, message",
    [
        (dict(), "missing field 'image': send the image as multipart/form-data field 'image'"),
        (dict(files={"picture": ("a.png", b"x")}), "missing field 'image'"),
        (dict(data={"image": "/etc/passwd"}), "field 'image' must be a file: send the image as a multipart/form-data file part"),
        (dict(content=b"\x89PNG...", headers={"content-type": "image/png"}), "missing field 'image'"),
        (dict(files=_upload(b"x"), params={"overlay": "maybe"}), "query parameter 'overlay': Input should be a valid boolean"),
    ],
)
def test_malformed_requests_name_the_field(tflite_client, request_kwargs, message):
    answer = tflite_client.post("/segment", **request_kwargs)
    assert answer.status_code == 422 and answer.json()["detail"].startswith(message), answer.text


def test_an_upload_name_is_only_echoed(tflite_client):
    result = tflite_client.post("/segment", files=_upload(_png(_strip()), "../../etc/passwd")).json()
    assert result["image"]["name"] == "../../etc/passwd" and result["classes"][0]["area"] == 450


def test_concurrent_requests_give_the_answers_of_sequential_ones(tflite_client):
    images = [_strip(), 255 - _strip(), _strip(64, 96), np.zeros((30, 30), np.uint8)]
    expected = [tflite_client.post("/segment", files=_upload(_png(im))).json()["classes"] for im in images]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: tflite_client.post("/segment", files=_upload(_png(images[i % 4]))).json()["classes"],
                                range(32)))
    assert answers == [expected[i % 4] for i in range(32)]


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(thresholds=[0.5, 0.5, 0.5]), r"thresholds needs 1 value or one per class \(2\)"),
        (dict(thresholds=[1.5]), r"thresholds must be a finite number >= 0.0 and <= 1.0, got 1.5"),
        (dict(min_areas=[-1]), r"min_areas must be an integer >= 0, got -1"),
        (dict(max_pixels=0), r"max_pixels must be an integer >= 1, got 0"),
        (dict(class_names={1: "a"}), r"class names must cover ClassId 1..2"),
        (dict(flips=("diagonal",)), r"flips must be one of \['horizontal', 'vertical'\], got 'diagonal'"),
    ],
)
def test_bad_settings_are_refused_at_start_up(tflite_model, options, message):
    with pytest.raises(ValueError, match=message):
        serve.create_app(tflite_model, **options)


def test_a_tflite_classifier_is_refused(tflite_model):
    with pytest.raises(ValueError, match=r"Grad-CAM needs the Keras classifier"):
        serve.create_app(tflite_model, classifier_path=tflite_model)


def test_the_command_line_reports_problems_in_one_line(tmp_path, capsys):
    assert serve.main([str(tmp_path / "missing.tflite")]) == 1
    assert capsys.readouterr().err.strip() == f"error: TFLite model not found: {tmp_path / 'missing.tflite'}"
    assert serve.main([str(tmp_path / "missing.tflite"), "--classes", str(tmp_path)]) == 1
    assert "expected a classes.csv file or a dataset folder holding one" in capsys.readouterr().err


# ------------------------------------------------------------------ a real server
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


@pytest.fixture(scope="module")
def server(unet_run, classifier_run, tmp_path_factory):
    """``defects-serve`` (python -m helpers.deploy.serve) on 127.0.0.1 in its own process: ``(base URL, process)``."""
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    command = [sys.executable, "-m", "helpers.deploy.serve", str(unet_run), "--classifier", str(classifier_run),
               "--port", str(port), "--log-level", "warning"]
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                   env=dict(os.environ, PYTHONPATH=str(ROOT)))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"defects-serve exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"defects-serve not ready after 180 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.slow
def test_load_test_against_a_real_server(server, tmp_path):
    """200 requests, 8 at a time, on a Severstal-sized (128x800) image: no errors, no memory growth; figures printed."""
    url, process = server
    image = _png(np.tile(_strip(128, 200), (1, 4)))
    warm = serve.load_test(f"{url}/segment", image, requests=16, concurrency=8)
    assert warm["errors"] == 0, warm
    before = _rss_mib(process.pid)
    figures = serve.load_test(f"{url}/segment", image, requests=200, concurrency=8)
    after = _rss_mib(process.pid)
    figures |= {"rss_before_mib": round(before, 1), "rss_after_mib": round(after, 1), "image": "128x800 PNG"}
    print("\nload test:", json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in figures.items()}))
    assert figures["errors"] == 0 and figures["statuses"] == {"200": 200}, figures
    assert after - before < 64, f"the server grew from {before:.0f} to {after:.0f} MiB over 200 requests"
    assert httpx.get(f"{url}/health").json() == {"status": "ok"}


def _browser():
    """A headless Chromium driven by selenium, or a pytest skip naming what is missing."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is missing: pip install -e '.[dev]'")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("chromium / chromedriver not installed: python3 -m helpers.run --browser "
                    "(apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,1000"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))


@pytest.mark.slow
def test_the_page_in_a_real_browser_shows_the_apis_numbers(server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, _ = server
    image = _strip(128, 256)
    path = files.write_image(tmp_path / "upload.png", image)
    expected = httpx.post(f"{url}/segment?overlay=true", files=_upload(path.read_bytes(), "upload.png"), timeout=60).json()
    browser = _browser()
    try:
        browser.get(f"{url}/")
        wait = WebDriverWait(browser, 90)
        wait.until(lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "ready")
        assert "unet-resnet18" in browser.find_element(By.ID, "model").text
        browser.find_element(By.ID, "file").send_keys(str(path))
        wait.until(lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-state") in ("done", "error"))
        assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "done", \
            browser.find_element(By.ID, "status").text
        overlay = browser.find_element(By.ID, "overlay")
        assert overlay.get_attribute("data-image") == "upload.png"
        assert overlay.get_attribute("src") == "data:image/png;base64," + expected["overlay_png"]
        assert browser.execute_script("return document.getElementById('overlay').naturalWidth") == 256
        rows = browser.find_elements(By.CSS_SELECTOR, "#classes tbody tr")
        assert len(rows) == len(expected["classes"]) == 4
        for row, entry in zip(rows, expected["classes"]):
            cells = [td.text for td in row.find_elements(By.TAG_NAME, "td")]
            assert cells[0] == str(entry["class_id"]) and cells[1] == entry["name"]
            assert cells[2] == str(entry["area"])
            assert cells[3] == f"{entry['max_probability']:.4f}"
            assert float(row.find_element(By.CSS_SELECTOR, ".max-probability").get_attribute("data-value")) == entry["max_probability"]
            assert float(cells[4]) == entry["threshold"] and int(cells[5]) == entry["min_area"]
            assert row.find_element(By.CSS_SELECTOR, ".runs").get_attribute("data-value") == entry["rle"]
        cam = browser.find_element(By.ID, "cam")  # the classifier is served too: its probabilities and Grad-CAM
        assert cam.get_attribute("src").startswith("data:image/png;base64,")
        assert len(browser.find_elements(By.CSS_SELECTOR, "#probabilities tbody tr")) == 2
    finally:
        browser.quit()
