"""Fixtures shared by several test files."""

import warnings

import pytest


@pytest.fixture(scope="session", autouse=True)
def _no_downloads():
    """No test touches the network: ImageNet downloads are off unless a test passes ``allow_download=True``."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DEFECT_ALLOW_DOWNLOAD", "0")  # weight_files.DOWNLOAD_ENV; subprocesses inherit it
        yield


@pytest.fixture(scope="session", autouse=True)
def _no_tracking():
    """No test writes an MLflow store (``outputs/mlruns``) unless it turns tracking on (tests/test_tracking.py)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DEFECT_TRACKING", "0")  # tracking.ENABLE_ENV
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)  # tracking.URI_ENV: never a real server
        yield


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """``m.h5`` and ``m.keras`` of a model whose Lambda writes ``marker`` when it runs, and
    ``renamed.keras`` = the HDF5 bytes; returns ``(folder, marker)`` with the marker absent."""
    from helpers.backend import keras

    folder = tmp_path_factory.mktemp("hostile")
    marker = folder / "marker"
    inputs = keras.Input((None, None, 1), name="image")
    x = keras.layers.Conv2D(2, 3, padding="same", name="conv")(inputs)
    x = keras.layers.Lambda(lambda t, marker=str(marker): (open(marker, "w").close(), t)[1], name="side_effect")(x)
    model = keras.Model(inputs, keras.layers.Activation("sigmoid")(x), name="hostile")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # HDF5 is a legacy format
        model.save(folder / "m.h5")
    model.save(folder / "m.keras")
    (folder / "renamed.keras").write_bytes((folder / "m.h5").read_bytes())
    marker.unlink()  # building the model called the Lambda once
    return folder, marker


@pytest.fixture(scope="session")
def mixed_steel_dir(tmp_path_factory):
    """Eight synthetic steel images in the Severstal layout: four 64x160, four cut to 48x96 (masks cut alike).

    ``splits.csv``: images 0-1 and 4-5 train, 2-3 and 6-7 val (each split holds both sizes).
    """
    import pandas as pd

    from helpers.core import files, rle, severstal
    from helpers.data.synth import steel

    folder = tmp_path_factory.mktemp("mixed") / "steel"
    wide = steel.make_steel_dataset(folder, n_images=8, height=64, width=160, seed=0, progress=False)
    for image_id in wide.index[1::2]:
        path = folder / "train_images" / image_id
        files.write_image(path, files.read_grey(path)[:48, :96])
        cut = severstal.decode_masks(wide.loc[image_id])[:48, :96]
        for k, class_id in enumerate(c for c in wide.columns if isinstance(c, int)):
            wide.at[image_id, class_id] = rle.encode(cut[..., k])
    severstal.write_train_csv(wide, folder / "train.csv")
    split = ["train" if k % 4 < 2 else "val" for k in range(len(wide))]
    severstal.write_splits(folder, pd.DataFrame({"split": split, "group": list(wide.index)}, index=wide.index.rename("ImageId")))
    return folder
