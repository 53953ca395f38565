"""MLflow tracking of runner calls: metric flattening, and tiny notebooks run into a temporary store."""

import hashlib
import json
import os
import socket
import time
import warnings
from pathlib import Path

import nbformat
import pytest

from helpers import run
from helpers.core import tracking


@pytest.mark.parametrize("metrics, expected", [
    ({"a": 1}, {"a": 1.0}),
    ({"a": {"b": 2, "c": {"d": 0.5}}}, {"a.b": 2.0, "a.c.d": 0.5}),
    ({"ok": True, "bad": False}, {"ok": 1.0, "bad": 0.0}),
    ({"name": "unet", "none": None, "nan": float("nan"), "inf": float("-inf")}, {}),
    ({"size": [128, 256]}, {"size.0": 128.0, "size.1": 256.0}),
    ({"rows": [{"f1": 0.5}, {"f1": 0.25}]}, {"rows.0.f1": 0.5, "rows.1.f1": 0.25}),
    ({"long": list(range(17))}, {}),
    ({"radiograph:chest": 1, "a b-c_d.e/f": 2}, {"radiograph_chest": 1.0, "a b-c_d.e/f": 2.0}),
    ({"k" * 300: 1}, {"k" * 250: 1.0}),
    ({"x": {"y": 1}, "x.y": 2}, {"x.y": 1.0}),  # the first of two clashing keys is kept
    ({}, {}),
])
def test_flatten_metrics(metrics, expected):
    assert tracking.flatten_metrics(metrics) == expected


@pytest.mark.parametrize("params, expected", [
    ({"epochs": 1, "lr": 0.001, "name": "unet"}, {"epochs": "1", "lr": "0.001", "name": "unet"}),
    ({"image_size": [128, 256], "opts": {"b": 1, "a": 2}}, {"image_size": "[128, 256]", "opts": '{"a": 2, "b": 1}'}),
    ({"flag": True, "empty": ""}, {"flag": "true", "empty": ""}),
    ({"long": "x" * 7000}, {"long": "x" * 6000}),
])
def test_flatten_params(params, expected):
    assert tracking.flatten_params(params) == expected


@pytest.mark.parametrize("env, track, expected", [
    (None, True, True), (None, False, False), ("0", True, False), ("off", True, False), ("1", True, True),
])
def test_tracking_enabled(monkeypatch, env, track, expected):
    if env is None:
        monkeypatch.delenv(tracking.ENABLE_ENV, raising=False)
    else:
        monkeypatch.setenv(tracking.ENABLE_ENV, env)
    assert tracking.tracking_enabled(track) is expected


def test_tracking_uri(monkeypatch, tmp_path):
    monkeypatch.delenv(tracking.URI_ENV, raising=False)
    assert tracking.tracking_uri(tmp_path) == f"sqlite:///{tmp_path.resolve().as_posix()}/mlruns/mlflow.db"
    monkeypatch.setenv(tracking.URI_ENV, "http://mlflow.example:5000")
    assert tracking.tracking_uri(tmp_path) == "http://mlflow.example:5000"


def test_epoch_history_and_written_files(tmp_path):
    (tmp_path / "old.txt").write_text("old")
    before = tracking.snapshot(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "log.csv").write_text("epoch,loss,val_loss\n0,1.5,2.0\n1,0.5,nan\n")
    assert tracking.written_since(tmp_path, before) == ["run/log.csv"]
    assert tracking.epoch_history(tmp_path / "run" / "log.csv") == [
        ("epoch/loss", 1.5, 0), ("epoch/val_loss", 2.0, 0), ("epoch/loss", 0.5, 1)]


# ---------------------------------------------------------------- tiny notebooks through the runner
TRAIN = """
import json
from pathlib import Path
out = Path(output_dir)
def train(folder, value):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "log.csv").write_text("epoch,loss,val_score\\n0,1.0,0.25\\n1,0.5,0.5\\n")
    (folder / "run.json").write_text(json.dumps({"format": 1, "settings": {"arch": "unet"}, "metrics": {"score": value}}))
    (folder / "model.weights.h5").write_bytes(b"weights")
    (folder / "best.weights.h5").write_bytes(b"weights")
    (folder / "resume").mkdir(exist_ok=True)
    (folder / "resume" / "epoch-0001.index").write_bytes(b"state")
"""
CELLS = {
    "00_train": [
        'epochs: int = 2  # epochs\nfail: bool = False  # raise in the second cell\n'
        'output_dir: str = "."  # the run folder\nprofile: str = "manual"  # set by the runner',
        TRAIN + """
if fail:
    raise RuntimeError("asked to fail")
train(out / "models" / "tiny", 0.5)
(out / "figures").mkdir(exist_ok=True)
(out / "figures" / "train_curves.png").write_bytes(b"png")
(out / "metrics").mkdir(exist_ok=True)
metrics = {"score": 0.75, "per_class": {"a": 0.5, "b": True}, "name": "tiny", "size": [2, 3]}
(out / "metrics" / "00_train.json").write_text(json.dumps(metrics))
""",
    ],
    "01_folds": [
        'output_dir: str = "."  # the run folder\nprofile: str = "manual"  # set by the runner',
        TRAIN + """
for fold in (0, 1):
    train(out / "transfer" / "classification" / "random" / "frac1" / f"fold{fold}", fold / 2)
(out / "report.html").write_text("<html></html>")
(out / "metrics").mkdir(exist_ok=True)
(out / "metrics" / "01_folds.json").write_text(json.dumps({"f1": {"random": 0.25}}))
""",
    ],
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A notebooks folder of two tiny notebooks (00 trains one fake model, 01 two folds), its
    profile ``tiny``, and one outputs folder (one MLflow store) for the module."""
    root = tmp_path_factory.mktemp("tracking")
    notebooks = root / "notebooks"
    notebooks.mkdir()
    for stem, (parameters, body) in CELLS.items():
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]}),
                                             nbformat.v4.new_code_cell(body)])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, notebooks / f"{stem}.ipynb")
    (notebooks / "profiles.yaml").write_text("tiny:\n  common: {}\n  notebooks:\n    00_train:\n      epochs: 2\n")
    return {"notebooks_dir": notebooks, "root": root, "outputs_root": root / "outputs", "progress": False}


@pytest.fixture
def tracked(monkeypatch):
    monkeypatch.setenv(tracking.ENABLE_ENV, "1")
    monkeypatch.delenv(tracking.URI_ENV, raising=False)


def store(tiny):
    from mlflow.tracking import MlflowClient  # a pinned dependency

    return MlflowClient(tracking.local_store_uri(tiny["outputs_root"]))


def runs_of(client, experiment: str):
    found = client.get_experiment_by_name(experiment)
    assert found is not None, experiment
    runs = client.search_runs([found.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") in {p.info.run_id for p in parents}}
    return parents, children, runs


def artifacts(client, run_id: str, path: str | None = None) -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        found |= artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return found


@pytest.mark.slow
def test_runner_call_becomes_a_parent_run_with_a_child_per_notebook(tiny, tracked):
    run_dir = run.run_notebooks("tiny", run_name="tiny-ok", **tiny)
    client = store(tiny)
    (parent,), children, runs = runs_of(client, "tiny-ok")
    assert parent.info.status == "FINISHED" and set(children) == {"00_train", "01_folds"}
    assert parent.data.params["profile"] == "tiny" and parent.data.metrics["notebooks_ok"] == 2
    assert artifacts(client, parent.info.run_id) == {"run.json"}

    train = children["00_train"]
    assert train.info.status == "FINISHED" and train.data.tags["status"] == "ok"
    assert train.data.params == {"epochs": "2", "fail": "false", "output_dir": str(run_dir.resolve()), "profile": "tiny"}
    expected = {"score": 0.75, "per_class.a": 0.5, "per_class.b": 1.0, "size.0": 2.0, "size.1": 3.0,
                "epoch/loss": 0.5, "epoch/val_score": 0.5}
    assert {k: v for k, v in train.data.metrics.items() if k != "notebook_seconds"} == expected
    assert train.data.metrics["notebook_seconds"] > 0
    curve = client.get_metric_history(train.info.run_id, "epoch/val_score")
    assert [(m.step, m.value) for m in sorted(curve, key=lambda m: m.step)] == [(0, 0.25), (1, 0.5)]
    logged = artifacts(client, train.info.run_id) - {"notebook/00_train.kernel.log"}  # logged when not empty
    assert logged == {  # local store: weights by reference, they lie in outputs/ already
        "notebook/00_train.ipynb", "metrics/00_train.json",
        "figures/train_curves.png", "models/tiny/log.csv", "models/tiny/run.json", "models/tiny/model_files.json"}
    assert train.data.tags["models"] == "reference" and parent.data.tags["models"] == "reference"
    weights = run_dir / "models" / "tiny" / "model.weights.h5"
    downloaded = client.download_artifacts(train.info.run_id, "models/tiny/model_files.json", str(tiny["root"]))
    reference = json.loads(Path(downloaded).read_text())
    assert reference == {"model.weights.h5": {"path": str(weights.resolve()), "bytes": 7,
                                              "sha256": hashlib.sha256(b"weights").hexdigest()}}

    folds = children["01_folds"]
    assert folds.data.metrics.keys() == {"f1.random", "notebook_seconds"}
    assert "report.html" in artifacts(client, folds.info.run_id)
    nested = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == folds.info.run_id}
    assert set(nested) == {"classification/random/frac1/fold0", "classification/random/frac1/fold1"}
    fold1 = nested["classification/random/frac1/fold1"]
    assert fold1.data.params == {"arch": "unet", "task": "classification", "init": "random", "fraction": "1", "fold": "1"}
    assert fold1.data.metrics == {"score": 0.5, "epoch/loss": 0.5, "epoch/val_score": 0.5}
    assert artifacts(client, fold1.info.run_id) == {"model/log.csv", "model/run.json", "model/model_files.json"}
    default = client.get_experiment("0")  # MLflow's own experiment, made with the store: its artifacts beside it too
    assert default.artifact_location.startswith((tiny["outputs_root"] / "mlruns").resolve().as_uri())


@pytest.mark.slow
def test_weight_files_are_copied_into_the_store_when_asked(tiny, tracked, monkeypatch):
    monkeypatch.setenv(tracking.MODELS_ENV, "copy")
    run.run_notebooks("tiny", only=["00"], run_name="tiny-copy", **tiny)
    (parent,), children, _ = runs_of(store(tiny), "tiny-copy")
    train = children["00_train"]
    assert train.data.tags["models"] == "copy"
    assert {"models/tiny/model.weights.h5", "models/tiny/run.json"} <= artifacts(store(tiny), train.info.run_id)
    assert "models/tiny/model_files.json" not in artifacts(store(tiny), train.info.run_id)


@pytest.mark.parametrize("local, policy, expected", [
    (True, None, "reference"), (False, None, "copy"), (True, "auto", "reference"), (False, "AUTO", "copy"),
    (True, "copy", "copy"), (False, "reference", "reference")])
def test_model_policy(local, policy, expected):
    assert tracking.model_policy(local, policy) == expected


def test_model_policy_from_the_environment_and_its_check(monkeypatch):
    monkeypatch.setenv(tracking.MODELS_ENV, "copy")
    assert tracking.model_policy(local=True) == "copy"
    with pytest.raises(ValueError, match="'auto', 'copy', 'reference'"):
        tracking.model_policy(local=True, policy="upload")


@pytest.mark.parametrize("name, weights", [
    ("model.weights.h5", True), ("unet_int8.tflite", True), ("model.onnx", True), ("ckpt.index", True),
    ("ckpt.data-00000-of-00001", True), ("saved_model.pb", True), ("run.json", False), ("log.csv", False),
    ("events.out.tfevents.1", False)])
def test_weight_files_are_told_by_name(name, weights):
    assert tracking.is_weight_file(Path("models") / name) is weights


@pytest.mark.slow
def test_a_failing_notebook_is_a_failed_child_run(tiny, tracked):
    with pytest.raises(RuntimeError, match="asked to fail"):
        run.run_notebooks("tiny", only=["00"], run_name="tiny-failed", overrides={"fail": True}, **tiny)
    client = store(tiny)
    (parent,), children, _ = runs_of(client, "tiny-failed")
    assert parent.info.status == "FAILED" and parent.data.metrics["notebooks_failed"] == 1
    failed = children["00_train"]
    assert failed.info.status == "FAILED" and failed.data.params["fail"] == "true"
    assert failed.data.metrics.keys() == {"notebook_seconds"}  # no metrics file written, no training
    assert "notebook/00_train.ipynb" in artifacts(client, failed.info.run_id)


@pytest.mark.slow
def test_tracking_off_writes_no_store(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv(tracking.ENABLE_ENV, "0")
    outputs = tmp_path / "outputs"
    run.run_notebooks("tiny", only=["01"], run_name="untracked", **{**tiny, "outputs_root": outputs})
    assert (outputs / "untracked" / "report.html").is_file() and not (outputs / "mlruns").exists()


@pytest.mark.slow
def test_a_tracking_server_that_is_down_warns_and_the_run_goes_to_the_local_store(tiny, tracked, monkeypatch):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv(tracking.URI_ENV, f"http://127.0.0.1:{port}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_dir = run.run_notebooks("tiny", only=["00"], run_name="tiny-down", **tiny)
    raised = [str(w.message) for w in caught if issubclass(w.category, tracking.TrackingWarning)]
    assert len(raised) == 1 and f"127.0.0.1:{port}" in raised[0] and "local store" in raised[0]
    assert time.perf_counter() - started < 120
    assert json.loads((run_dir / "run.json").read_text())["notebooks"][0]["status"] == "ok"
    assert (run_dir / "models" / "tiny" / "model.weights.h5").is_file()
    (parent,), children, _ = runs_of(store(tiny), "tiny-down")  # never a lost run
    assert parent.info.status == "FINISHED" and children["00_train"].data.metrics["score"] == 0.75


@pytest.mark.slow
def test_a_tracking_error_mid_run_warns_once_and_the_notebooks_go_on(tiny, tracked, monkeypatch):
    def broken(self, *args):
        raise ConnectionError("server gone")

    monkeypatch.setattr(tracking.RunTracker, "_log_notebook", broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_dir = run.run_notebooks("tiny", run_name="tiny-broken", **tiny)
    raised = [str(w.message) for w in caught if issubclass(w.category, tracking.TrackingWarning)]
    assert len(raised) == 1 and "server gone" in raised[0] and "--no-track" in raised[0]
    statuses = [nb["status"] for nb in json.loads((run_dir / "run.json").read_text())["notebooks"]]
    assert statuses == ["ok", "ok"] and (run_dir / "report.html").is_file()


def test_importing_the_runner_and_tracking_loads_no_mlflow():
    import subprocess
    import sys

    code = "import sys, helpers.run, helpers.core.tracking; print('mlflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_cli_has_no_track():
    args = run._parser().parse_args(["--no-track", "--only", "02"])
    assert args.no_track is True and run._parser().parse_args([]).no_track is False


# ---------------------------------------------------------------- notebooks run by hand
@pytest.fixture
def by_hand(tiny, tmp_path, tracked, monkeypatch):
    """An output folder ``manual`` with a file from before the kernel started and the work of one notebook run."""
    monkeypatch.delenv(tracking.RUNNER_ENV, raising=False)
    out = tmp_path / "outputs" / "manual"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "old.png").write_bytes(b"old")
    os.utime(out / "figures" / "old.png", (1_000_000, 1_000_000))
    started = 2_000_000.0
    (out / "figures" / "train_curves.png").write_bytes(b"png")
    (out / "metrics").mkdir()
    (out / "metrics" / "00_train.json").write_text(json.dumps({"score": 0.75}))
    return out, ({"epochs": 3, "fail": False, "output_dir": str(out), "unrelated": 1}, started)


def test_a_notebook_run_by_hand_is_tracked_with_its_kernel_values(tiny, by_hand):
    out, kernel = by_hand
    run_id = tracking.track_interactive(out, "00_train", notebooks_dir=tiny["notebooks_dir"], kernel=kernel)
    client = store({"outputs_root": out.parent})
    (parent,), children, _ = runs_of(client, "manual")
    child = children["00_train"]
    assert child.info.run_id == run_id and parent.info.run_name == "00_train (interactive)"
    assert parent.data.tags["source"] == "interactive" and child.data.metrics["score"] == 0.75
    assert child.data.params == {"epochs": "3", "fail": "false", "output_dir": str(out)}  # the parameters cell's names only
    assert artifacts(client, run_id) == {"metrics/00_train.json", "figures/train_curves.png"}  # not the file from before


def test_saving_again_in_the_same_kernel_replaces_the_run(tiny, by_hand):
    out, kernel = by_hand
    first = tracking.track_interactive(out, "00_train", notebooks_dir=tiny["notebooks_dir"], kernel=kernel)
    (out / "metrics" / "00_train.json").write_text(json.dumps({"score": 0.75, "speed": 2.0}))
    second = tracking.track_interactive(out, "00_train", notebooks_dir=tiny["notebooks_dir"], kernel=kernel)
    client = store({"outputs_root": out.parent})
    (parent,), children, _ = runs_of(client, "manual")
    assert second != first and children["00_train"].info.run_id == second
    assert children["00_train"].data.metrics["speed"] == 2.0
    assert client.get_run(first).info.lifecycle_stage == "deleted"


def test_runs_not_by_hand_are_not_tracked_here(tiny, by_hand, monkeypatch):
    out, kernel = by_hand
    assert tracking.track_interactive(out, "00_train", notebooks_dir=tiny["notebooks_dir"]) is None  # not in a kernel
    monkeypatch.setenv(tracking.RUNNER_ENV, "1")  # a kernel the runner started: the runner tracks it
    assert tracking.track_interactive(out, "00_train", notebooks_dir=tiny["notebooks_dir"], kernel=kernel) is None
    monkeypatch.delenv(tracking.RUNNER_ENV)
    monkeypatch.setenv(tracking.ENABLE_ENV, "0")
    assert tracking.track_interactive(out, "00_train", notebooks_dir=tiny["notebooks_dir"], kernel=kernel) is None
    assert not (out.parent / "mlruns").exists()


def test_kernels_started_by_the_runner_are_marked(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv(tracking.ENABLE_ENV, "0")
    monkeypatch.delenv(tracking.RUNNER_ENV, raising=False)
    notebook = tmp_path / "probe.ipynb"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import os, pathlib; pathlib.Path('marked.txt').write_text(os.environ.get('DEFECT_RUNNER', ''))")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, notebook)
    run.execute_notebook(notebook, tmp_path / "out" / "probe.ipynb", {}, progress=False)
    assert (tmp_path / "marked.txt").read_text() == "1" and tracking.RUNNER_ENV not in os.environ


@pytest.mark.parametrize("cell, names", [
    ('epochs: int = 2  # epochs\nname = "x"', ["epochs", "name"]),
    ("x: int = 1\nimport os", ["x"]),
    ("def broken(:", []),
])
def test_notebook_parameter_names(cell, names, tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell, metadata={"tags": ["parameters"]})])
    nbformat.write(nb, tmp_path / "nb.ipynb")
    assert tracking.notebook_parameter_names(tmp_path / "nb.ipynb") == names
    assert tracking.notebook_parameter_names(tmp_path / "missing.ipynb") == []


@pytest.mark.slow
def test_a_jupyter_kernel_saving_its_metrics_is_tracked(tmp_path, tracked, monkeypatch):
    import nbclient

    monkeypatch.delenv(tracking.RUNNER_ENV, raising=False)
    out = tmp_path / "outputs" / "manual"
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell(f'seed: int = 7  # as in 00\noutput_dir: str = {str(out)!r}  # where outputs go',
                                  metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell('from helpers.core import outputs\noutputs.save_metrics(output_dir, "00_prepare_data", {"n_images": 4})')])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    (parent,), children, _ = runs_of(store({"outputs_root": out.parent}), "manual")
    run = children["00_prepare_data"]
    assert parent.data.tags["source"] == "interactive" and run.data.metrics["n_images"] == 4
    assert run.data.params["seed"] == "7" and run.data.params["output_dir"] == str(out)
