"""Encoder weight files: the official ImageNet files (checksums, where they are looked up) and Keras ``.h5`` weights.

Official files
    :data:`OFFICIAL_CHECKSUMS` holds the checksum each library publishes for its no-top
    ImageNet file and :data:`OFFICIAL_URLS` where the library downloads it from
    (:func:`official_url`; the backbone -> file name rule is a backbone fact:
    :func:`helpers.modeling.builders.official_weights_file`). :func:`find_weights_file` looks the
    file up in ``weights_dir``, then ``$DEFECT_WEIGHTS_DIR``, then the Keras cache
    (``$KERAS_HOME/models``, default ``~/.keras/models``; :func:`weights_search_dirs`) and
    verifies its checksum. A missing file is downloaded into the Keras cache, as the libraries
    do (checksum verified before it is renamed into place), unless ``$DEFECT_ALLOW_DOWNLOAD`` is
    ``0``/``false``/``no``/``off``; offline, a ``FileNotFoundError`` comes within seconds
    (every network step waits ``timeout`` seconds at most) and no partial file is left.

File formats
    :func:`file_format` tells HDF5, zip (``.keras``), TFLite and empty files apart by their first
    bytes; :func:`check_hdf5` turns a file that is not HDF5, truncated or corrupt into a one-line
    ``ValueError`` naming it.

Keras ``.h5`` weights
    :func:`read_h5_weights` reads a Keras 2 weights file as data only (h5py: no model is built,
    no code runs): layer name -> ``[(weight name, array)]``, weight names shortened by
    :func:`short_name`; :func:`write_h5_weights` writes layers in that layout. Imports no TensorFlow.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import h5py
import numpy as np
from tqdm.auto import tqdm

from helpers.core import checks

__all__ = [
    "DOWNLOAD_ENV",
    "OFFICIAL_CHECKSUMS",
    "OFFICIAL_URLS",
    "WEIGHTS_DIR_ENV",
    "WeightsFile",
    "check_hdf5",
    "describe_format",
    "downloads_allowed",
    "file_checksum",
    "file_format",
    "find_weights_file",
    "official_url",
    "read_h5_weights",
    "short_name",
    "weights_search_dirs",
    "write_h5_weights",
]

WEIGHTS_DIR_ENV = "DEFECT_WEIGHTS_DIR"
DOWNLOAD_ENV = "DEFECT_ALLOW_DOWNLOAD"
_DOWNLOADS_OFF = ("0", "false", "no", "off")

# Checksums as the libraries check them (keras.utils.get_file: 32 hex digits = md5, 64 = sha256):
# classification_models/weights.py (md5), efficientnet/model.py WEIGHTS_HASHES (sha256, no-top).
# keras_applications publishes none for MobileNet; the 0.25/224 md5 is that of the official file.
OFFICIAL_CHECKSUMS: Mapping[str, str] = MappingProxyType(
    {
        "resnet18_imagenet_1000_no_top.h5": "318e3ac0cd98d51e917526c9f62f0b50",
        "resnet34_imagenet_1000_no_top.h5": "8caaa0ad39d927cb8ba5385bf945d582",
        "resnet50_imagenet_1000_no_top.h5": "db3b217156506944570ac220086f09b6",
        "efficientnet-b0_weights_tf_dim_ordering_tf_kernels_autoaugment_notop.h5": (
            "c1421ad80a9fc67c2cc4000f666aa50789ce39eedb4e06d531b0c593890ccff3"
        ),
        "efficientnet-b1_weights_tf_dim_ordering_tf_kernels_autoaugment_notop.h5": (
            "75de265d03ac52fa74f2f510455ba64f9c7c5fd96dc923cd4bfefa3d680c4b68"
        ),
        "efficientnet-b2_weights_tf_dim_ordering_tf_kernels_autoaugment_notop.h5": (
            "433b60584fafba1ea3de07443b74cfd32ce004a012020b07ef69e22ba8669333"
        ),
        "efficientnet-b3_weights_tf_dim_ordering_tf_kernels_autoaugment_notop.h5": (
            "c5d42eb6cfae8567b418ad3845cfd63aa48b87f1bd5df8658a49375a9f3135c7"
        ),
        "mobilenet_2_5_224_tf_no_top.h5": "f313cee49f5d33dfb06f2b255c4adb64",
    }
)

# Official file name (full match) -> base URL the library downloads it from (+ the name):
# classification_models/weights.py, efficientnet/model.py, tf_keras applications mobilenet(_v2).py.
OFFICIAL_URLS: Mapping[str, str] = MappingProxyType(
    {
        r"resnet(18|34|50)_imagenet_1000_no_top\.h5": (
            "https://github.com/qubvel/classification_models/releases/download/0.0.1/"
        ),
        r"efficientnet-b[0-7]_weights_tf_dim_ordering_tf_kernels_autoaugment_notop\.h5": (
            "https://github.com/Callidior/keras-applications/releases/download/efficientnet/"
        ),
        r"mobilenet_(1_0|7_5|5_0|2_5)_(128|160|192|224)_tf_no_top\.h5": (
            "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet/"
        ),
        (
            r"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_"
            r"(0\.35|0\.5|0\.75|1\.0|1\.3|1\.4)_(96|128|160|192|224)_no_top\.h5"
        ): "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/",
    }
)


# ------------------------------------------------------------------ official weight files
@dataclass(frozen=True)
class WeightsFile:
    """An official weight file: ``name``, ``checksum`` (md5 or sha256 hex, None when unpublished), download ``url``."""

    name: str
    checksum: str | None
    url: str | None = None

    @property
    def algorithm(self) -> str | None:
        """``"md5"`` or ``"sha256"`` (as ``keras.utils.get_file`` decides, by length), None without checksum."""
        if self.checksum is None:
            return None
        return "md5" if len(self.checksum) == 32 else "sha256"


def weights_search_dirs(weights_dir: str | os.PathLike | None = None) -> list[Path]:
    """Folders searched for official weight files, in order: ``weights_dir``, ``$DEFECT_WEIGHTS_DIR``, Keras cache."""
    dirs = []
    if weights_dir is not None:
        dirs.append(Path(weights_dir).expanduser())
    if os.environ.get(WEIGHTS_DIR_ENV):
        dirs.append(Path(os.environ[WEIGHTS_DIR_ENV]).expanduser())
    keras_home = os.environ.get("KERAS_HOME")
    dirs.append((Path(keras_home).expanduser() if keras_home else Path.home() / ".keras") / "models")
    return dirs


def file_checksum(path: str | os.PathLike, algorithm: str = "md5") -> str:
    """Hex digest (``"md5"`` or ``"sha256"``) of a file."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def official_url(name: str) -> str | None:
    """The URL the library downloads the official file ``name`` from (:data:`OFFICIAL_URLS`), None if unknown."""
    for pattern, base in OFFICIAL_URLS.items():
        if re.fullmatch(pattern, name):
            return base + name
    return None


def downloads_allowed(allow_download: bool | None = None) -> bool:
    """``allow_download``, or when None ``$DEFECT_ALLOW_DOWNLOAD``: ``0``/``false``/``no``/``off`` (any case) = off."""
    checks.choice("allow_download", allow_download, [None, True, False])
    if allow_download is None:
        return os.environ.get(DOWNLOAD_ENV, "").strip().lower() not in _DOWNLOADS_OFF
    return bool(allow_download)


def find_weights_file(
    official: WeightsFile,
    weights_dir: str | os.PathLike | None = None,
    allow_download: bool | None = None,
    timeout: float = 5.0,
    progress: bool = True,
) -> Path:
    """Path of the ``official`` file (e.g. :func:`helpers.modeling.builders.official_weights_file`), checksum verified.

    Looked up in :func:`weights_search_dirs`; when absent, downloaded from ``official.url`` into the
    last of them (the Keras cache) if :func:`downloads_allowed` (``allow_download``), each network
    step waiting ``timeout`` seconds at most. Raises ``FileNotFoundError`` (file name, checksum, URL,
    folders searched, why it was not downloaded, how to fix it) when absent and not downloaded, and
    ``ValueError`` naming both checksums when the file found or downloaded differs from the official one.
    """
    allowed = downloads_allowed(allow_download)
    timeout = checks.number("timeout", timeout, low=0, low_open=True)
    searched = weights_search_dirs(weights_dir)
    found = next((d / official.name for d in searched if (d / official.name).is_file()), None)
    if found is None:
        if not allowed:
            source = "allow_download=False" if allow_download is False else f"${DOWNLOAD_ENV}={os.environ[DOWNLOAD_ENV]}"
            raise FileNotFoundError(_not_found(official, searched, f"Downloads are off ({source})"))
        if official.url is None:
            raise FileNotFoundError(_not_found(official, searched, "No download URL is known for this file"))
        try:
            return _download(official, searched[-1], timeout, progress)
        except (OSError, http.client.HTTPException) as err:
            reason = f"Download failed ({_network_error(err)}; timeout {timeout:g} s)"
            raise FileNotFoundError(_not_found(official, searched, reason, tried=True)) from None
    if official.checksum is not None:
        actual = file_checksum(found, official.algorithm)
        if actual != official.checksum:
            raise ValueError(
                f"{found}: {official.algorithm} {actual} does not match the official {official.algorithm} "
                f"{official.checksum} of {official.name}; the file is corrupt or not the official one"
            )
    return found


def _checksum_text(official: WeightsFile) -> str:
    return f"{official.algorithm} {official.checksum}" if official.checksum else "checksum not published by the library"


def _not_found(official: WeightsFile, searched: list[Path], reason: str, tried: bool = False) -> str:
    """The one-line message of a missing official file: what, where looked, why not downloaded, how to fix."""
    never = f"; set {DOWNLOAD_ENV}=0 to never try a download" if tried else ""
    return (
        f"ImageNet weights not found: {official.name} ({_checksum_text(official)}; official URL "
        f"{official.url or 'unknown'}). Searched: {', '.join(str(d) for d in searched)}. {reason}. To work offline, "
        f"put the official file {official.name} into one of these folders (or pass weights_dir=..., or set "
        f"${WEIGHTS_DIR_ENV}), or build with encoder_weights=None{never}."
    )


def _network_error(err: BaseException) -> str:
    """A network error in one line: ``HTTP Error 404: Not Found``, ``ConnectionRefusedError: [Errno 111] ...``."""
    if isinstance(err, urllib.error.URLError) and not isinstance(err, urllib.error.HTTPError):
        err = err.reason if isinstance(err.reason, BaseException) else OSError(str(err.reason))
    return _one_line(err) if isinstance(err, urllib.error.HTTPError) else f"{type(err).__name__}: {_one_line(err)}"


def _resolve(host: str, port: int, timeout: float) -> None:
    """Look ``host`` up within ``timeout`` seconds (``urlopen``'s timeout does not cover DNS), else ``TimeoutError``."""
    outcome: list[BaseException | None] = []

    def lookup() -> None:
        try:
            socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            outcome.append(None)
        except socket.gaierror as err:
            outcome.append(socket.gaierror(err.errno, f"DNS lookup of {host} failed: {err.strerror}"))
        except OSError as err:
            outcome.append(err)

    thread = threading.Thread(target=lookup, name=f"resolve {host}", daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        raise TimeoutError(f"DNS lookup of {host} timed out after {timeout:g} s")
    if outcome[0] is not None:
        raise outcome[0]


def _download(official: WeightsFile, folder: Path, timeout: float, progress: bool) -> Path:
    """Download ``official.url`` to ``folder/official.name`` via a temporary file there, checksum verified first."""
    parts = urllib.parse.urlsplit(official.url)
    via_proxy = parts.scheme in urllib.request.getproxies() and not urllib.request.proxy_bypass(parts.hostname or "")
    if parts.hostname and not via_proxy:  # behind a proxy, the proxy resolves the name
        _resolve(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80), timeout)
    folder.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{official.name}.", suffix=".part", dir=folder)
    digest = hashlib.new(official.algorithm) if official.checksum else None
    try:
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(official.url, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            received = 0
            bar = tqdm(total=total, desc=official.name, unit="B", unit_scale=True, unit_divisor=1024, disable=not progress)
            with bar:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
                    if digest is not None:
                        digest.update(chunk)
        if total is not None and received != total:
            raise ConnectionError(f"incomplete download: {received} of {total} bytes")
        if digest is not None and digest.hexdigest() != official.checksum:
            raise ValueError(
                f"{official.url}: the downloaded {official.name} has {official.algorithm} {digest.hexdigest()}, "
                f"not the official {official.algorithm} {official.checksum}; nothing was kept in {folder}"
            )
        target = folder / official.name
        os.replace(temporary, target)  # atomic: the file appears complete or not at all
        return target
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


# ------------------------------------------------------------------ file formats and Keras .h5 weights
def short_name(weight_name: str) -> str:
    """A weight's name within its layer: ``"conv1_bn/moving_mean:0"`` -> ``"moving_mean"``."""
    return weight_name.split("/")[-1].split(":")[0]


_SIGNATURES = {"hdf5": b"\x89HDF\r\n\x1a\n", "zip": b"PK\x03\x04"}
_FORMAT_NAMES = {"hdf5": "an HDF5 file", "zip": "a zip archive", "tflite": "a TFLite flatbuffer", "empty": "an empty file"}


def file_format(path: str | os.PathLike) -> str | None:
    """What a file's first bytes say it is: ``"hdf5"``, ``"zip"`` (``.keras``), ``"tflite"``, ``"empty"`` or None."""
    with open(path, "rb") as handle:
        head = handle.read(8)
        if not head:
            return "empty"
        if head[4:8] == b"TFL3":
            return "tflite"
        if head.startswith(_SIGNATURES["zip"]):
            return "zip"
        offset = 0
        while len(head) == 8:  # HDF5 may sit after a user block of 512, 1024, 2048, ... bytes
            if head == _SIGNATURES["hdf5"]:
                return "hdf5"
            offset = 512 if offset == 0 else offset * 2
            handle.seek(offset)
            head = handle.read(8)
    return None


def describe_format(kind: str | None) -> str:
    """``"an HDF5 file"``, ``"a zip archive"``, ... for a :func:`file_format` result."""
    return _FORMAT_NAMES.get(kind, "unrecognised bytes")


def check_hdf5(path: str | os.PathLike, expected: str = "a Keras .h5 weights file") -> Path:
    """``path`` if it is a complete HDF5 file, else a one-line ``ValueError`` naming it and ``expected``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found; expected {expected}")
    kind = file_format(path)
    if kind != "hdf5":
        raise ValueError(f"{path}: not an HDF5 file ({describe_format(kind)}); expected {expected}")
    try:
        h5py.File(path, "r").close()
    except OSError as err:  # h5py reports truncation on open: the superblock records the file's length
        raise ValueError(f"{path}: truncated or corrupt HDF5 file ({_one_line(err)}); expected {expected}") from None
    return path


def _one_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(err).__name__


def read_h5_weights(path: str | os.PathLike) -> tuple[dict[str, list[tuple[str, np.ndarray]]], dict[str, str]]:
    """Layer name -> ``[(weight name, array)]`` (layers with weights only) and the string attributes of a Keras ``.h5`` file.

    A file that is not HDF5, truncated or corrupt is a one-line ``ValueError`` naming it.
    """
    path = check_hdf5(path)
    try:
        with h5py.File(path, "r") as handle:
            group = handle["model_weights"] if "model_weights" in handle else handle
            if "layer_names" not in group.attrs:
                raise ValueError(f"{path} is not a Keras weights file (no 'layer_names' attribute)")
            weights = {}
            for raw in group.attrs["layer_names"]:
                name = raw.decode() if isinstance(raw, bytes) else str(raw)
                layer_group = group[name]
                names = [w.decode() if isinstance(w, bytes) else str(w) for w in layer_group.attrs.get("weight_names", [])]
                if names:
                    weights[name] = [(short_name(w), np.asarray(layer_group[w])) for w in names]
            attrs = {k: (v.decode() if isinstance(v, bytes) else str(v)) for k, v in handle.attrs.items() if k != "layer_names"}
    except (OSError, KeyError) as err:  # a damaged object inside a file that opened
        raise ValueError(f"{path}: truncated or corrupt HDF5 file ({_one_line(err)}); expected a Keras .h5 weights file") from None
    return weights, attrs


def write_h5_weights(path: str | os.PathLike, layers: Iterable[Any], attrs: Mapping[str, str]) -> None:
    """Write Keras layers' weights in the Keras 2 ``.h5`` layout (``model.load_weights(by_name=True)`` reads it too).

    ``attrs``: string attributes of the file (e.g. ``{"backbone": "resnet18"}``), read back by :func:`read_h5_weights`.
    """
    from helpers.backend import keras  # the layers come from Keras: it is loaded already

    layers = list(layers)
    with h5py.File(path, "w") as handle:
        handle.attrs["layer_names"] = [layer.name.encode() for layer in layers]
        handle.attrs["backend"] = b"tensorflow"
        handle.attrs["keras_version"] = keras.__version__.encode()
        for key, value in attrs.items():
            handle.attrs[key] = value.encode()
        for layer in layers:
            group = handle.create_group(layer.name)
            names = [f"{layer.name}/{w.name.split('/')[-1]}" for w in layer.weights]
            group.attrs["weight_names"] = [n.encode() for n in names]
            for name, value in zip(names, layer.get_weights()):
                group.create_dataset(name, data=value)
