"""Tests of helpers.modeling.weight_files: official weight files found or downloaded (checksums), file formats, HDF5 checks.

Downloads come from an HTTP server on 127.0.0.1 started by the test; no test reaches the internet
(``tests/conftest.py`` turns downloads off, the download tests pass ``allow_download=True``).
Model-level use of these files (``encoder_weights="imagenet"``, broken ``.h5`` files at build
time, saving and loading encoders) is tested in ``test_builders.py``.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import os
import socket
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

from helpers.modeling import weight_files

NAME = "resnet18_imagenet_1000_no_top.h5"
CONTENT = b"fake weights " * 1000


@pytest.fixture(autouse=True)
def _no_weights_folders_from_the_environment(monkeypatch):
    monkeypatch.delenv(weight_files.WEIGHTS_DIR_ENV, raising=False)
    monkeypatch.delenv("KERAS_HOME", raising=False)


def _dummy_official(folder: Path, content: bytes = b"weights") -> weight_files.WeightsFile:
    """A stand-in for the resnet18 file in ``folder``, described with its own md5 as the official one."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / NAME).write_bytes(content)
    return weight_files.WeightsFile(NAME, hashlib.md5(content).hexdigest())


def test_lookup_order_weights_dir_then_env_then_keras_cache(tmp_path, monkeypatch):
    home, env_dir, own_dir = tmp_path / "home", tmp_path / "env", tmp_path / "own"
    monkeypatch.setenv("HOME", str(home))
    official = _dummy_official(home / ".keras" / "models")
    assert weight_files.find_weights_file(official) == home / ".keras" / "models" / NAME
    _dummy_official(env_dir)
    monkeypatch.setenv(weight_files.WEIGHTS_DIR_ENV, str(env_dir))
    assert weight_files.find_weights_file(official) == env_dir / NAME
    _dummy_official(own_dir)
    assert weight_files.find_weights_file(official, weights_dir=own_dir) == own_dir / NAME
    assert weight_files.weights_search_dirs(own_dir) == [own_dir, env_dir, home / ".keras" / "models"]
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    assert weight_files.weights_search_dirs()[-1] == tmp_path / "kh" / "models"


def test_checksum_mismatch_names_both_checksums(tmp_path):
    official = weight_files.WeightsFile(NAME, weight_files.OFFICIAL_CHECKSUMS[NAME])
    (tmp_path / NAME).write_bytes(b"not the official file")
    with pytest.raises(ValueError) as error:
        weight_files.find_weights_file(official, weights_dir=tmp_path)
    assert official.checksum in str(error.value) and hashlib.md5(b"not the official file").hexdigest() in str(error.value)


def test_a_file_without_published_checksum_is_found_and_a_missing_one_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    unpublished = weight_files.WeightsFile("mobilenet_1_0_224_tf_no_top.h5", None)
    assert unpublished.algorithm is None and weight_files.WeightsFile(NAME, "0" * 64).algorithm == "sha256"
    with pytest.raises(FileNotFoundError, match="checksum not published by the library"):
        weight_files.find_weights_file(unpublished, tmp_path)
    (tmp_path / unpublished.name).write_bytes(b"anything")
    assert weight_files.find_weights_file(unpublished, tmp_path) == tmp_path / unpublished.name


def test_file_format_reads_the_first_bytes(tmp_path):
    with h5py.File(tmp_path / "a.h5", "w") as handle:
        handle.attrs["layer_names"] = []
    contents = {"b.keras": b"PK\x03\x04" + bytes(20), "c.tflite": b"\x1c\x00\x00\x00TFL3" + bytes(8),
                "d.h5": b"", "e.h5": b"not weights\n" * 50}
    for name, content in contents.items():
        (tmp_path / name).write_bytes(content)
    kinds = {name: weight_files.file_format(tmp_path / name) for name in ("a.h5", *contents)}
    assert kinds == {"a.h5": "hdf5", "b.keras": "zip", "c.tflite": "tflite", "d.h5": "empty", "e.h5": None}
    assert weight_files.describe_format(None) == "unrecognised bytes"
    assert weight_files.check_hdf5(tmp_path / "a.h5") == tmp_path / "a.h5"
    with pytest.raises(ValueError, match=r"b\.keras: not an HDF5 file \(a zip archive\); expected a Keras \.h5 weights file"):
        weight_files.check_hdf5(tmp_path / "b.keras")
    with pytest.raises(FileNotFoundError, match="nothing.h5"):
        weight_files.check_hdf5(tmp_path / "nothing.h5")


def test_read_h5_weights_gives_short_names_and_attributes(tmp_path):
    path = tmp_path / "w.h5"
    with h5py.File(path, "w") as handle:
        handle.attrs["layer_names"] = [b"conv", b"pool"]
        handle.attrs["backbone"] = b"resnet18"
        conv, pool = handle.create_group("conv"), handle.create_group("pool")
        conv.attrs["weight_names"] = [b"conv/kernel:0", b"conv/bias:0"]
        conv.create_dataset("conv/kernel:0", data=np.ones((1, 1, 1, 2), np.float32))
        conv.create_dataset("conv/bias:0", data=np.zeros(2, np.float32))
        pool.attrs["weight_names"] = []
    weights, attrs = weight_files.read_h5_weights(path)
    assert list(weights) == ["conv"] and [name for name, _ in weights["conv"]] == ["kernel", "bias"]
    assert weights["conv"][0][1].shape == (1, 1, 1, 2) and attrs == {"backbone": "resnet18"}
    assert weight_files.short_name("conv1_bn/moving_mean:0") == "moving_mean"


# ------------------------------------------------------------------ downloads (from a local server only)
@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """The Keras cache folder ``tmp_path/keras/models`` (not created); HOME and proxies kept out of the way."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("no_proxy", "*")
    return tmp_path / "keras" / "models"


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving ``folder``; ``requests`` lists the paths asked for, ``stop()`` closes it."""
    folder = tmp_path / "served"
    folder.mkdir()
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(folder), **kwargs)

        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):  # quiet
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()

    def stop():
        if thread.is_alive():
            httpd.shutdown()
            httpd.server_close()
            thread.join()

    yield SimpleNamespace(folder=folder, port=httpd.server_address[1], requests=requests, stop=stop)
    stop()


def _served(server, content: bytes = CONTENT, checksum: str | None = None) -> weight_files.WeightsFile:
    """``content`` served as ``NAME``, described with ``checksum`` (default: its own md5) and its local URL."""
    (server.folder / NAME).write_bytes(content)
    checksum = hashlib.md5(content).hexdigest() if checksum is None else checksum
    return weight_files.WeightsFile(NAME, checksum, url=f"http://127.0.0.1:{server.port}/{NAME}")


@contextlib.contextmanager
def _raw_server(reply: bytes | None):
    """Port of a TCP server on 127.0.0.1 that answers one request with ``reply`` and closes (None: never answers)."""
    listener = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def serve():
        try:
            connection, _ = listener.accept()
        except OSError:  # closed before any client came
            return
        with connection:
            connection.recv(65536)
            if reply is None:
                done.wait(30)
            else:
                connection.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        done.set()
        listener.close()
        thread.join(5)


def test_a_missing_file_is_downloaded_into_the_keras_cache_and_found_there_next_time(server, cache, capsys):
    official = _served(server)
    path = weight_files.find_weights_file(official, allow_download=True, progress=False)
    assert path == cache / NAME and path.read_bytes() == CONTENT
    assert sorted(os.listdir(cache)) == [NAME] and server.requests == [f"/{NAME}"]
    assert capsys.readouterr().err == ""  # progress=False: no bar
    server.stop()
    assert weight_files.find_weights_file(official, allow_download=True) == path
    assert server.requests == [f"/{NAME}"]


def test_the_download_shows_a_progress_bar(server, cache, capsys):
    weight_files.find_weights_file(_served(server), allow_download=True)
    assert NAME in capsys.readouterr().err


def test_a_wrong_checksum_raises_and_leaves_nothing_behind(server, cache):
    official = _served(server, checksum=hashlib.md5(b"the official bytes").hexdigest())
    with pytest.raises(ValueError) as error:
        weight_files.find_weights_file(official, allow_download=True, progress=False)
    message = str(error.value)
    for part in (NAME, official.checksum, hashlib.md5(CONTENT).hexdigest(), official.url):
        assert part in message
    assert list(cache.iterdir()) == []


def test_a_corrupt_local_file_is_reported_not_downloaded_over(server, cache):
    official = _served(server)
    cache.mkdir(parents=True)
    (cache / NAME).write_bytes(b"damaged")
    with pytest.raises(ValueError, match="corrupt or not the official one"):
        weight_files.find_weights_file(official, allow_download=True, progress=False)
    assert server.requests == [] and (cache / NAME).read_bytes() == b"damaged"


def test_an_unreachable_server_fails_fast_naming_file_url_checksum_and_folders(server, cache, tmp_path):
    official = _served(server)
    server.stop()  # the port is closed now: connection refused
    start = time.monotonic()
    with pytest.raises(FileNotFoundError) as error:
        weight_files.find_weights_file(official, tmp_path / "own", allow_download=True, progress=False)
    assert time.monotonic() - start < 10  # a bound, not a benchmark
    message = str(error.value)
    for part in (NAME, official.checksum, official.url, str(tmp_path / "own"), str(cache), "ConnectionRefusedError",
                 "weights_dir=", weight_files.WEIGHTS_DIR_ENV, "encoder_weights=None", "DEFECT_ALLOW_DOWNLOAD=0"):
        assert part in message, part
    assert "\n" not in message and list(cache.iterdir()) == []


@pytest.mark.parametrize(
    ("reply", "expected"),
    [(None, "TimeoutError"), (b"HTTP/1.0 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10, "incomplete download")],
    ids=["silent", "truncated"],
)
def test_a_silent_or_truncating_server_leaves_no_partial_file(cache, reply, expected):
    with _raw_server(reply) as port:
        official = weight_files.WeightsFile(NAME, None, url=f"http://127.0.0.1:{port}/{NAME}")
        start = time.monotonic()
        with pytest.raises(FileNotFoundError, match=expected):
            weight_files.find_weights_file(official, allow_download=True, timeout=0.5, progress=False)
        assert time.monotonic() - start < 10
    assert list(cache.iterdir()) == []


def test_a_hanging_dns_lookup_is_cut_at_the_timeout(cache, monkeypatch):
    released = threading.Event()
    monkeypatch.setattr(weight_files.socket, "getaddrinfo", lambda *args, **kwargs: released.wait(30))
    official = weight_files.WeightsFile(NAME, None, url=f"https://weights.invalid/{NAME}")
    start = time.monotonic()
    try:
        with pytest.raises(FileNotFoundError, match=r"DNS lookup of weights\.invalid timed out after 0\.2 s"):
            weight_files.find_weights_file(official, allow_download=True, timeout=0.2, progress=False)
    finally:
        released.set()
    assert time.monotonic() - start < 10 and not cache.exists()


@pytest.mark.parametrize(("allow_download", "env_value"), [(False, "1"), (None, "0"), (None, "FALSE"), (None, "No"), (None, "off")])
def test_downloads_off_make_no_request_and_say_so(server, cache, monkeypatch, allow_download, env_value):
    monkeypatch.setenv(weight_files.DOWNLOAD_ENV, env_value)
    with pytest.raises(FileNotFoundError) as error:
        weight_files.find_weights_file(_served(server), allow_download=allow_download, progress=False)
    source = "allow_download=False" if allow_download is False else f"$DEFECT_ALLOW_DOWNLOAD={env_value}"
    assert f"Downloads are off ({source})" in str(error.value)
    assert server.requests == [] and not cache.exists()


def test_download_switch_and_arguments(monkeypatch):
    assert os.environ[weight_files.DOWNLOAD_ENV] == "0" and not weight_files.downloads_allowed()  # tests/conftest.py
    for value in ("1", "yes", ""):
        monkeypatch.setenv(weight_files.DOWNLOAD_ENV, value)
        assert weight_files.downloads_allowed()
    monkeypatch.delenv(weight_files.DOWNLOAD_ENV)
    assert weight_files.downloads_allowed() and not weight_files.downloads_allowed(False)
    with pytest.raises(ValueError, match=r"allow_download must be one of \[None, True, False\], got 'yes'"):
        weight_files.find_weights_file(weight_files.WeightsFile(NAME, None), allow_download="yes")
    with pytest.raises(ValueError, match="timeout must be a finite number > 0"):
        weight_files.find_weights_file(weight_files.WeightsFile(NAME, None), timeout=0)


def test_a_file_without_url_is_not_downloaded(cache):
    with pytest.raises(FileNotFoundError, match="official URL unknown.*No download URL is known for this file"):
        weight_files.find_weights_file(weight_files.WeightsFile("own_weights.h5", None), allow_download=True)


@pytest.mark.parametrize(
    ("name", "base"),
    [
        *[(f"resnet{n}_imagenet_1000_no_top.h5", "https://github.com/qubvel/classification_models/releases/download/0.0.1/")
          for n in (18, 34, 50)],
        *[(f"efficientnet-b{b}_weights_tf_dim_ordering_tf_kernels_autoaugment_notop.h5",
           "https://github.com/Callidior/keras-applications/releases/download/efficientnet/") for b in range(4)],
        *[(name, "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet/")
          for name in ("mobilenet_2_5_224_tf_no_top.h5", "mobilenet_1_0_128_tf_no_top.h5")],
        *[(f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{size}_no_top.h5",
           "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/") for size in ("1.0_224", "0.35_96")],
        ("resnet18_imagenet_1000.h5", None),  # with top: not a file the builders use
        ("mobilenet_3_0_224_tf_no_top.h5", None),
        ("vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5", None),
    ],
)
def test_official_url(name, base):
    assert weight_files.official_url(name) == (None if base is None else base + name)
