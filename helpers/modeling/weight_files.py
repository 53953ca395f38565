"""Encoder weight files: the official ImageNet files (checksums, where they are looked up) and Keras ``.h5`` weights.

Official files
    :data:`OFFICIAL_CHECKSUMS` holds the checksum each library publishes for its no-top
    ImageNet file (the backbone -> file name rule is a backbone fact:
    :func:`helpers.modeling.builders.official_weights_file`). :func:`find_weights_file` looks the
    file up in ``weights_dir``, then ``$DEFECT_WEIGHTS_DIR``, then the Keras cache
    (``$KERAS_HOME/models``, default ``~/.keras/models``; :func:`weights_search_dirs`) and
    verifies its checksum; nothing is ever downloaded.

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
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import h5py
import numpy as np

__all__ = [
    "OFFICIAL_CHECKSUMS",
    "WEIGHTS_DIR_ENV",
    "WeightsFile",
    "check_hdf5",
    "describe_format",
    "file_checksum",
    "file_format",
    "find_weights_file",
    "read_h5_weights",
    "short_name",
    "weights_search_dirs",
    "write_h5_weights",
]

WEIGHTS_DIR_ENV = "DEFECT_WEIGHTS_DIR"

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


# ------------------------------------------------------------------ official weight files
@dataclass(frozen=True)
class WeightsFile:
    """An official weight file: ``name`` and ``checksum`` (md5 or sha256 hex, None when unpublished)."""

    name: str
    checksum: str | None

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


def find_weights_file(official: WeightsFile, weights_dir: str | os.PathLike | None = None) -> Path:
    """Path of the ``official`` file (e.g. :func:`helpers.modeling.builders.official_weights_file`), checksum verified.

    Looked up in :func:`weights_search_dirs`; never downloads. Raises ``FileNotFoundError``
    (file name, checksum, folders searched) when absent and ``ValueError`` naming both
    checksums when the file found differs from the official one.
    """
    searched = weights_search_dirs(weights_dir)
    found = next((d / official.name for d in searched if (d / official.name).is_file()), None)
    checksum_text = (
        f"{official.algorithm} {official.checksum}" if official.checksum else "checksum not published by the library"
    )
    if found is None:
        raise FileNotFoundError(
            f"ImageNet weights not found: {official.name} ({checksum_text}). "
            f"Searched: {', '.join(str(d) for d in searched)}. This machine is offline and weights are never "
            f"downloaded: put the official file {official.name} into one of these folders (or pass weights_dir=..., "
            f"or set ${WEIGHTS_DIR_ENV}), or build with encoder_weights=None."
        )
    if official.checksum is not None:
        actual = file_checksum(found, official.algorithm)
        if actual != official.checksum:
            raise ValueError(
                f"{found}: {official.algorithm} {actual} does not match the official {official.algorithm} "
                f"{official.checksum} of {official.name}; the file is corrupt or not the official one"
            )
    return found


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
