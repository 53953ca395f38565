"""MLflow tracking of notebook runs: one parent run per runner call, one child run per notebook.

What a notebook's child run holds: parameters = the notebook's parameters; metrics = its
``metrics/<notebook>.json`` flattened (:func:`flatten_metrics`) plus ``notebook_seconds``;
artifacts = the executed notebook and its kernel log, the metrics JSON, the figures and
``report.html`` it wrote, and the training folders it wrote (``fit``'s ``log.csv`` marks one: its
run record and weights, without the resume state). Each ``log.csv`` becomes per-epoch metric
histories ``epoch/<column>`` (``step`` = epoch). A notebook that wrote one training folder (03,
05) carries it itself; one that wrote several (04: ``compare/<arch>/...``, 06:
``transfer/<task>/<init>/frac<f>/fold<k>``) gets one nested child run per folder, with that
folder's ``run.json`` settings as parameters and its metrics.

Weight files (:func:`is_weight_file`) follow :func:`model_policy`: in the local store they are
logged by reference (``model_files.json``: path, bytes, sha256 of each; the files are in
``outputs/`` already, and one smoke run's weights are about 1 GB), on a tracking server copied;
``$DEFECT_TRACKING_MODELS=copy|reference`` chooses. The run's tag ``models`` says which.

"Written by the notebook" means created or changed in the run folder while it ran (see
:func:`snapshot`). The store is :func:`tracking_uri`: ``$MLFLOW_TRACKING_URI`` when set, else an
embedded SQLite store ``<outputs>/mlruns/mlflow.db`` (artifacts in ``<outputs>/mlruns/artifacts``):
nothing to start. A tracking server that cannot be reached gives one :class:`TrackingWarning` and
the run is tracked into that local store instead; any later tracking error warns once and stops
tracking for the call; the notebooks always run. MLflow is imported only when a run is tracked.

Notebooks run by hand (a Jupyter kernel not started by the runner) are tracked by
:func:`track_interactive`, which :func:`helpers.core.outputs.save_metrics` calls: the same child
run, under a parent named ``<notebook> (interactive)``, with the parameters as the kernel holds
them and the files written since the kernel started.
"""

from __future__ import annotations

import ast
import csv
import json
import math
import os
import re
import sys
import time
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path

__all__ = ["ENABLE_ENV", "MODELS_ENV", "MODEL_POLICIES", "STORE_DIR", "URI_ENV", "RUNNER_ENV", "RunTracker", "is_weight_file", "model_policy", "notebook_parameter_names", "track_interactive", "TrackingWarning", "epoch_history",
           "flatten_metrics", "flatten_params", "local_store_uri", "snapshot", "tracking_enabled",
           "tracking_uri", "written_since"]

ENABLE_ENV = "DEFECT_TRACKING"  # 0 / false / no / off turns tracking off
URI_ENV = "MLFLOW_TRACKING_URI"
RUNNER_ENV = "DEFECT_RUNNER"  # set for the kernels helpers.run starts: the runner tracks them, not the kernel
MODELS_ENV = "DEFECT_TRACKING_MODELS"  # how weight files are logged: auto | copy | reference
MODEL_POLICIES = ("auto", "copy", "reference")
REFERENCE_FILE = "model_files.json"  # what a run logs in place of its weight files under "reference"
STORE_DIR = "mlruns"
LOG_FILE = "log.csv"  # helpers.modeling.train.LOG: one row per epoch
RUN_FILE = "run.json"  # helpers.modeling.runs.RUN_FILE: settings and metrics of a saved run
_OFF = {"0", "false", "no", "off"}
_MAX_KEY, _MAX_VALUE, _MAX_PARAMS, _MAX_METRICS = 250, 6000, 100, 1000  # MLflow's limits
_MAX_LIST = 16  # lists up to this length are flattened by index; longer ones are left out
_SKIPPED_PARTS = {"resume", "__pycache__"}  # training state of fit, deleted when it finishes
# Training folders whose path says what they are (relative to the run folder) -> parameters
_FOLDER_PATTERNS = (
    re.compile(r"compare/(?P<arch>[^/]+)/models/(?P<model>[^/]+)"),  # 04
    re.compile(r"transfer/(?P<task>[^/]+)/(?P<init>[^/]+)/frac(?P<fraction>[^/]+)/fold(?P<fold>-?\d+)"),  # 06
)


class TrackingWarning(UserWarning):
    """Tracking could not be done as asked; the notebooks ran all the same."""


def tracking_enabled(track: bool = True) -> bool:
    """``track``, unless ``$DEFECT_TRACKING`` is 0 / false / no / off."""
    return bool(track) and os.environ.get(ENABLE_ENV, "1").strip().lower() not in _OFF


def local_store_uri(outputs_root: str | os.PathLike) -> str:
    """The embedded store ``sqlite:///<outputs_root>/mlruns/mlflow.db`` (absolute path)."""
    return f"sqlite:///{(Path(outputs_root) / STORE_DIR / 'mlflow.db').resolve().as_posix()}"


def tracking_uri(outputs_root: str | os.PathLike) -> str:
    """``$MLFLOW_TRACKING_URI`` when set (a team's server), else :func:`local_store_uri`."""
    return os.environ.get(URI_ENV, "").strip() or local_store_uri(outputs_root)


def model_policy(local: bool, policy: str | None = None) -> str:
    """``"copy"`` or ``"reference"``: how a run's weight files are logged.

    ``policy`` (default ``$DEFECT_TRACKING_MODELS``, else ``auto``): ``copy`` uploads them as
    artifacts; ``reference`` logs ``model_files.json`` instead (each file's path, bytes and sha256),
    so the store does not hold a second copy of ``outputs/``; ``auto``: ``reference`` in the local
    store (``local=True``: the files lie beside it), ``copy`` on a tracking server (for the team).
    """
    from helpers.core import checks

    chosen = checks.choice(MODELS_ENV, (policy or os.environ.get(MODELS_ENV) or "auto").strip().lower(), MODEL_POLICIES)
    return ("reference" if local else "copy") if chosen == "auto" else chosen


def _file_sha256(path: Path) -> str:
    from helpers.core import files

    return files.content_hash(path, "sha256")


def is_weight_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds model weights (HDF5, Keras, TFLite, ONNX, TF checkpoint or graph files)."""
    name = Path(path).name
    return Path(name).suffix in {".h5", ".keras", ".tflite", ".onnx", ".pb", ".index"} or ".data-" in name



def _key(text: str) -> str:
    """A valid MLflow metric/parameter name: letters, digits, ``_ - . /`` and spaces, at most 250 characters."""
    key = re.sub(r"[^\w.\- /]", "_", text).strip("/")
    key = re.sub(r"/+", "/", key)
    key = "/".join(part if part not in (".", "..") else "_" for part in key.split("/"))
    return key[:_MAX_KEY] or "_"


def _leaves(value, prefix: str):
    if isinstance(value, Mapping):
        for name, item in value.items():
            yield from _leaves(item, f"{prefix}.{name}" if prefix else str(name))
    elif isinstance(value, (list, tuple)):
        if len(value) <= _MAX_LIST:
            for index, item in enumerate(value):
                yield from _leaves(item, f"{prefix}.{index}" if prefix else str(index))
    else:
        yield prefix, value


def flatten_metrics(metrics: Mapping, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of nested ``metrics`` as ``{"a.b": float}``: bools as 0/1, non-finite numbers,
    strings and ``None`` left out, lists of up to 16 items by index (``size.0``); keys made valid
    for MLflow (other characters become ``_``); the first of two keys that clash is kept."""
    flat: dict[str, float] = {}
    for name, value in _leaves(metrics, prefix):
        if isinstance(value, bool):
            value = float(value)
        elif isinstance(value, (int, float)) and math.isfinite(value):
            value = float(value)
        else:
            continue
        flat.setdefault(_key(name), value)
    return flat


def flatten_params(params: Mapping, prefix: str = "") -> dict[str, str]:
    """``params`` as MLflow parameters: top-level names, values as text (lists and dicts as JSON),
    cut to MLflow's 6000 characters."""
    flat = {}
    for name, value in params.items():
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
        flat.setdefault(_key(f"{prefix}{name}"), text[:_MAX_VALUE])
    return flat


def snapshot(folder: str | os.PathLike) -> dict[str, tuple[int, int]]:
    """``relative path -> (mtime_ns, size)`` of every file under ``folder`` (empty if it is missing)."""
    folder = Path(folder)
    found = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if d not in _SKIPPED_PARTS]
        for filename in filenames:
            path = Path(dirpath) / filename
            try:
                stat = path.stat()
            except OSError:  # removed meanwhile
                continue
            found[path.relative_to(folder).as_posix()] = (stat.st_mtime_ns, stat.st_size)
    return found


def written_since(folder: str | os.PathLike, before: Mapping[str, tuple[int, int]]) -> list[str]:
    """Relative paths of the files under ``folder`` created or changed since the :func:`snapshot` ``before``."""
    return sorted(path for path, stamp in snapshot(folder).items() if before.get(path) != stamp)


def epoch_history(log_csv: str | os.PathLike, prefix: str = "epoch/") -> list[tuple[str, float, int]]:
    """``(prefix + column, value, epoch)`` for every finite value of a ``log.csv`` written by ``train.fit``."""
    rows = []
    with open(log_csv, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            try:
                step = int(float(row.pop("epoch")))
            except (KeyError, TypeError, ValueError):
                continue
            for column, text in row.items():
                try:
                    value = float(text)
                except (TypeError, ValueError):
                    continue
                if math.isfinite(value):
                    rows.append((_key(prefix + column), value, step))
    return rows


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _model_files(folder: Path) -> list[Path]:
    """A training folder's files worth keeping: all but the resume state, temporaries, and the
    best/last weights when ``model.weights.h5`` (what a saved run loads) is there."""
    has_model = (folder / "model.weights.h5").is_file()
    kept = []
    for path in sorted(folder.rglob("*")):
        parts = path.relative_to(folder).parts
        if not path.is_file() or _SKIPPED_PARTS & set(parts) or any(p.startswith(".") for p in parts):
            continue
        if has_model and len(parts) == 1 and parts[0] in ("best.weights.h5", "last.weights.h5"):
            continue
        kept.append(path)
    return kept


def _folder_params(relative: str) -> dict[str, str]:
    for pattern in _FOLDER_PATTERNS:
        match = pattern.fullmatch(relative)
        if match:
            return match.groupdict()
    return {}


def _server_down(uri: str, timeout: float = 5.0) -> str | None:
    """Why the HTTP tracking server at ``uri`` cannot be reached, or None (reachable, or not HTTP)."""
    if not uri.startswith(("http://", "https://")):
        return None
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout):
            return None
    except urllib.error.HTTPError:  # it answered: up (behind a proxy or auth, say)
        return None
    except (urllib.error.URLError, OSError) as err:
        return str(getattr(err, "reason", err))


class RunTracker:
    """The MLflow runs of one runner call; an inert tracker (``enabled=False``) does nothing.

    Use as a context manager: the parent run ends FINISHED, FAILED on an exception, KILLED on
    Ctrl-C. Per notebook: :meth:`begin` before it runs, :meth:`end` after it (ok or failed).
    Never raises for a tracking problem: it warns once (:class:`TrackingWarning`) and stops tracking.
    """

    def __init__(self, run_dir: str | os.PathLike, outputs_root: str | os.PathLike, experiment: str,
                 run_name: str | None = None, params: Mapping | None = None, tags: Mapping | None = None,
                 enabled: bool = True):
        self.run_dir, self.outputs_root = Path(run_dir), Path(outputs_root)
        self.experiment, self.run_name = experiment, run_name or experiment
        self._params, self._tags = dict(params or {}), dict(tags or {})
        self.enabled, self.uri, self.parent_id, self.models = enabled, None, None, None
        self._client, self._experiment_id, self._before, self._counts = None, None, {}, {"ok": 0, "failed": 0}

    # ------------------------------------------------------------ lifecycle
    def __enter__(self) -> RunTracker:
        if self.enabled:
            self._guard("start tracking", self._start, starting=True)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        status = "FINISHED" if exc_type is None else "KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED"
        self._guard("finish the parent run", self._finish, status)

    @property
    def active(self) -> bool:
        """Whether runs are being recorded."""
        return self._client is not None

    def _guard(self, what: str, action, *args, starting: bool = False) -> None:
        if not (self.active or starting):
            return
        try:
            action(*args)
        except Exception as err:  # any tracking failure: warn, stop tracking, let the notebooks go on
            self._client = None
            warnings.warn(f"MLflow tracking at {self.uri} failed to {what} ({type(err).__name__}: {err}); "
                          f"tracking is off for the rest of this call, the notebooks' outputs are in {self.run_dir}. "
                          f"Check ${URI_ENV} (unset: the local store under {self.outputs_root / STORE_DIR}) "
                          "or turn tracking off with --no-track / DEFECT_TRACKING=0.", TrackingWarning, stacklevel=3)

    def _start(self) -> None:
        self.uri = tracking_uri(self.outputs_root)
        local = local_store_uri(self.outputs_root)
        reason = _server_down(self.uri) if self.uri != local else None
        if reason:
            warnings.warn(f"MLflow tracking server {self.uri} cannot be reached ({reason}); tracking this run into "
                          f"the local store {local} instead. Start the server or fix ${URI_ENV}; "
                          "--no-track / DEFECT_TRACKING=0 turns tracking off.", TrackingWarning, stacklevel=4)
            self.uri = local
        from mlflow.tracking import MlflowClient

        artifacts = (self.outputs_root / STORE_DIR / "artifacts").resolve().as_uri() if self.uri == local else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # SQLAlchemy's, inside MLflow's store
            if artifacts and not (self.outputs_root / STORE_DIR / "mlflow.db").is_file():
                (self.outputs_root / STORE_DIR).mkdir(parents=True, exist_ok=True)
                from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

                SqlAlchemyStore(self.uri, artifacts)  # a new store: its Default experiment's artifacts beside it too
            client = MlflowClient(tracking_uri=self.uri)
            found = client.get_experiment_by_name(self.experiment)
            if found is None:
                try:
                    self._experiment_id = client.create_experiment(self.experiment, artifact_location=artifacts)
                except Exception:  # created meanwhile by another runner
                    found = client.get_experiment_by_name(self.experiment)
                    if found is None:
                        raise
            if found is not None:
                self._experiment_id = found.experiment_id
            tags = {"mlflow.source.name": "helpers.run", **self._tags}
            parent = client.create_run(self._experiment_id, run_name=self.run_name, tags=tags)
        self._client, self.parent_id = client, parent.info.run_id
        self.models = model_policy(local=self.uri == local)
        client.set_tag(self.parent_id, "models", self.models)
        self._log(self.parent_id, params=flatten_params(self._params))

    def _finish(self, status: str) -> None:
        record = self.run_dir / RUN_FILE
        if record.is_file():
            self._client.log_artifact(self.parent_id, str(record))
        self._log(self.parent_id, metrics={"notebooks_ok": self._counts["ok"], "notebooks_failed": self._counts["failed"]})
        self._client.set_terminated(self.parent_id, status)

    # ------------------------------------------------------------ per notebook
    def begin(self) -> None:
        """Call right before a notebook runs: remembers what the run folder holds."""
        if self.active:
            self._before = snapshot(self.run_dir)

    def end(self, notebook: str, status: str, seconds: float, parameters: Mapping, executed: str | os.PathLike) -> str | None:
        """Record one notebook (``status`` ok or failed) as a child run; its run id, or None when not tracked."""
        if not self.active:
            return None
        self._counts["failed" if status != "ok" else "ok"] += 1
        child = []
        self._guard(f"log {notebook}", lambda: child.append(self._log_notebook(notebook, status, seconds, parameters, Path(executed))))
        return child[0] if child else None

    def _log_notebook(self, notebook, status, seconds, parameters, executed) -> str:
        client, run_dir = self._client, self.run_dir
        written = written_since(run_dir, self._before)
        tags = {"mlflow.parentRunId": self.parent_id, "notebook": notebook, "status": status}
        run_id = client.create_run(self._experiment_id, run_name=notebook, tags=tags).info.run_id
        metrics_file = f"metrics/{notebook}.json"
        metrics = flatten_metrics(_read_json(run_dir / metrics_file)) if metrics_file in written else {}
        self._log(run_id, params=flatten_params(parameters), metrics={**metrics, "notebook_seconds": seconds})
        for path in (executed, executed.with_suffix(".kernel.log")):
            if path.is_file() and path.stat().st_size:
                client.log_artifact(run_id, str(path), "notebook")
        for relative in written:
            if relative == metrics_file or relative == "report.html" or relative.startswith("figures/"):
                client.log_artifact(run_id, str(run_dir / relative), str(Path(relative).parent).strip(".") or None)
        trained = sorted({str(Path(p).parent) for p in written if Path(p).name == LOG_FILE})
        for folder in trained:
            target = run_id if len(trained) == 1 else self._nested_run(run_id, notebook, folder)
            self._log_training_folder(target, folder, "models/" + Path(folder).name if len(trained) == 1 else "model")
            if target != run_id:
                client.set_terminated(target, "FINISHED")
        client.set_terminated(run_id, "FINISHED" if status == "ok" else "FAILED")
        return run_id

    def _nested_run(self, parent_id: str, notebook: str, folder: str) -> str:
        record = _read_json(self.run_dir / folder / RUN_FILE)
        recipe = _read_json(self.run_dir / folder / "recipe.json")
        tags = {"mlflow.parentRunId": parent_id, "notebook": notebook, "folder": folder}
        name = folder.split("/", 1)[1] if "/" in folder else folder
        run_id = self._client.create_run(self._experiment_id, run_name=name, tags=tags).info.run_id
        params = {**flatten_params(recipe), **flatten_params(record.get("settings") or {}), **_folder_params(folder)}
        self._log(run_id, params=params, metrics=flatten_metrics(record.get("metrics") or {}))
        return run_id

    def _log_training_folder(self, run_id: str, folder: str, artifact_path: str) -> None:
        path = self.run_dir / folder
        history = epoch_history(path / LOG_FILE) if (path / LOG_FILE).is_file() else []
        self._log(run_id, history=history)
        referenced = {}
        for file in _model_files(path):
            relative = file.relative_to(path)
            if self.models == "reference" and is_weight_file(file):
                referenced[relative.as_posix()] = {"path": str(file.resolve()), "bytes": file.stat().st_size,
                                                   "sha256": _file_sha256(file)}
                continue
            parent = relative.parent.as_posix()
            self._client.log_artifact(run_id, str(file), artifact_path if parent == "." else f"{artifact_path}/{parent}")
        if referenced:
            self._client.log_text(run_id, json.dumps(referenced, indent=2) + "\n", f"{artifact_path}/{REFERENCE_FILE}")
        self._client.set_tag(run_id, "models", self.models)

    def _delete_runs_of(self, kernel_id: str, notebook: str) -> None:
        """Delete the earlier interactive runs (parent and children) of ``notebook`` in this kernel."""
        query = f"tags.kernel = '{kernel_id}' and tags.notebook = '{notebook}' and tags.source = 'interactive'"
        for found in self._client.search_runs([self._experiment_id], filter_string=query):
            if found.info.run_id == self.parent_id:
                continue
            for child in self._client.search_runs([self._experiment_id], filter_string=f"tags.mlflow.parentRunId = '{found.info.run_id}'"):
                self._client.delete_run(child.info.run_id)
            self._client.delete_run(found.info.run_id)

    # ------------------------------------------------------------ batches
    def _log(self, run_id: str, params: Mapping[str, str] | None = None, metrics: Mapping[str, float] | None = None,
             history: Iterable[tuple[str, float, int]] = ()) -> None:
        from mlflow.entities import Metric, Param

        now = int(time.time() * 1000)
        entries = [Metric(k, float(v), now, 0) for k, v in (metrics or {}).items()]
        entries += [Metric(k, v, now, step) for k, v, step in history]
        params = [Param(k, str(v)) for k, v in (params or {}).items()]
        for start in range(0, len(params), _MAX_PARAMS):
            self._client.log_batch(run_id, params=params[start:start + _MAX_PARAMS])
        for start in range(0, len(entries), _MAX_METRICS):
            self._client.log_batch(run_id, metrics=entries[start:start + _MAX_METRICS])


def notebook_parameter_names(notebook: str | os.PathLike) -> list[str]:
    """Names assigned in the cell tagged ``parameters`` of a notebook file (empty when there is none)."""
    try:
        cells = json.loads(Path(notebook).read_text(encoding="utf-8"))["cells"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    for cell in cells:
        if "parameters" in (cell.get("metadata", {}).get("tags") or []):
            try:
                tree = ast.parse("".join(cell.get("source", "")))
            except SyntaxError:
                return []
            return [node.target.id for node in tree.body if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)] + [
                target.id for node in tree.body if isinstance(node, ast.Assign) for target in node.targets if isinstance(target, ast.Name)]
    return []


def _kernel() -> tuple[dict, float | None] | None:
    """``(user namespace, process start time)`` of the Jupyter kernel running this, or None outside one."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is None or type(shell).__name__ != "ZMQInteractiveShell":
        return None
    try:
        import psutil  # ipykernel's dependency

        started = psutil.Process().create_time()
    except Exception:  # no psutil: every file of the folder counts as written by this kernel
        started = None
    return shell.user_ns, started


def track_interactive(output_dir: str | os.PathLike, notebook: str, notebooks_dir: str | os.PathLike | None = None,
                      kernel: tuple[dict, float | None] | None = None) -> str | None:
    """Track a notebook run by hand as an MLflow run; its run id, or None when not tracked.

    Tracked when tracking is on (:func:`tracking_enabled`), the runner did not start the kernel
    (``$DEFECT_RUNNER`` unset: it tracks its own) and this runs in a Jupyter kernel (``kernel``:
    ``(namespace, start time)``, default this process's). Experiment = the name of ``output_dir``
    (e.g. ``manual``); parameters = the names of the notebook's ``parameters`` cell
    (``notebooks_dir/<notebook>.ipynb``, default the project's) with their values in the kernel;
    files = those under ``output_dir`` written since the kernel started. A later call for the
    same notebook in the same kernel (a notebook saving its metrics twice, or run again)
    replaces the earlier run. Never raises for a tracking problem (it warns).
    """
    if not tracking_enabled() or os.environ.get(RUNNER_ENV):
        return None
    kernel = kernel or _kernel()
    if kernel is None:
        return None
    namespace, started = kernel
    output_dir = Path(output_dir).resolve()
    notebooks_dir = Path(notebooks_dir) if notebooks_dir else Path(__file__).resolve().parents[2] / "notebooks"
    names = notebook_parameter_names(notebooks_dir / f"{notebook}.ipynb")
    parameters = {name: namespace[name] for name in names if name in namespace}
    kernel_id = f"{os.getpid()}-{started}"
    tracker = RunTracker(output_dir, output_dir.parent, experiment=output_dir.name, run_name=f"{notebook} (interactive)",
                         params=parameters, tags={"source": "interactive", "kernel": kernel_id, "notebook": notebook})
    child = []
    with tracker:
        if not tracker.active:
            return None
        tracker._guard("replace an earlier run of this kernel", tracker._delete_runs_of, kernel_id, notebook)
        since_ns = None if started is None else int(started * 1e9)
        tracker._before = {} if since_ns is None else {
            path: stamp for path, stamp in snapshot(output_dir).items() if stamp[0] < since_ns}
        seconds = 0.0 if started is None else time.time() - started
        child.append(tracker.end(notebook, "ok", seconds, parameters, output_dir / "notebooks" / f"{notebook}.ipynb"))
    return child[0] if child else None
