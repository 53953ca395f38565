"""Tests of helpers.modeling.weight_files: official weight files found offline (checksums), file formats, HDF5 checks.

Model-level use of these files (``encoder_weights="imagenet"``, broken ``.h5`` files at build
time, saving and loading encoders) is tested in ``test_builders.py``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import h5py
import numpy as np
import pytest

from helpers.modeling import weight_files

NAME = "resnet18_imagenet_1000_no_top.h5"


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
