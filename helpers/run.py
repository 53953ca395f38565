"""Run the notebooks headlessly with papermill, or the test suite, in a ready environment.

    python3 -m helpers.run                     # smoke profile, every notebook, -> outputs/smoke/
    python3 -m helpers.run --profile cpu --only 00 01 -p data_dir=data/neu-seg
    python3 -m helpers.run --tests             # the test suite (pytest)
    python3 -m helpers.run --browser           # optional: Debian's chromium + chromium-driver (the browser test)

Every call is tracked in MLflow (:mod:`helpers.core.tracking`): one parent run per call, one child
run per notebook, in ``outputs/mlruns`` or ``$MLFLOW_TRACKING_URI``; ``--no-track`` or
``DEFECT_TRACKING=0`` turns it off.

If the interpreter running this lacks the pinned packages of ``pyproject.toml``, a virtual
environment ``.venv`` is created (or updated when ``pyproject.toml`` changed) and the command
re-runs itself inside it. This module imports only the standard library at import time.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["BROWSER_PACKAGES", "PROJECT_ROOT", "check_overrides", "execute_notebook", "executed_parameters", "install_browser",
           "list_notebooks", "load_profile", "main", "notebook_parameters", "run_folder", "run_notebooks"]

PROJECT_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
PROFILES_FILE = NOTEBOOKS_DIR / "profiles.yaml"
VENV_DIR = PROJECT_ROOT / ".venv"
STAMP_NAME = ".defect-notebooks-installed"
BOOTSTRAP_FLAG = "DEFECT_NOTEBOOKS_BOOTSTRAPPED"
BROWSER_PACKAGES = ("chromium", "chromium-driver")  # Debian's; selenium (the dev extra) drives them in tests/test_serve.py


# ---------------------------------------------------------------- environment
def _pins() -> dict[str, str]:
    import tomllib

    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] + project["optional-dependencies"]["dev"]
    return dict(spec.split("==", 1) for spec in specs)


def missing_requirements() -> list[str]:
    """Pinned requirements the running interpreter lacks (empty when it is ready)."""
    from importlib import metadata

    missing = []
    for name, version in _pins().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            missing.append(f"{name}=={version} (found {installed})")
    try:
        metadata.version("defect-notebooks")
    except metadata.PackageNotFoundError:
        missing.append("defect-notebooks (this project, pip install -e .)")
    return missing


def _venv_python() -> Path:
    return VENV_DIR / "bin" / "python"


def _pyproject_digest() -> str:
    return hashlib.sha256((PROJECT_ROOT / "pyproject.toml").read_bytes()).hexdigest()


def ensure_venv() -> Path:
    """Create or update ``.venv`` with the project and its pinned dependencies; return its python."""
    python = _venv_python()
    stamp = VENV_DIR / STAMP_NAME
    if python.exists() and stamp.exists() and stamp.read_text() == _pyproject_digest():
        return python
    started = time.perf_counter()
    if not python.exists():
        print(f"Creating the environment {VENV_DIR} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV_DIR)], check=True)
    print("Installing the project and its pinned dependencies (a few minutes the first time) ...", flush=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", "-e", f"{PROJECT_ROOT}[dev]"],
        check=True,
    )
    stamp.write_text(_pyproject_digest())
    print(f"Environment ready in {time.perf_counter() - started:.0f} s.", flush=True)
    return python


def _enter_environment(mode: str, argv: list[str]) -> None:
    """Return if this interpreter can run the project; otherwise re-run ``argv`` inside ``.venv``."""
    if mode not in ("auto", "current", "venv"):
        raise ValueError(f"env must be one of auto, current, venv; got {mode!r}")
    in_project_venv = Path(sys.prefix).resolve() == VENV_DIR.resolve()
    if in_project_venv:
        ensure_venv()  # reinstall if pyproject.toml changed since the last install
    if mode == "current" or in_project_venv or os.environ.get(BOOTSTRAP_FLAG):
        missing = missing_requirements()
        if missing:
            raise SystemExit("This environment lacks pinned requirements:\n  " + "\n  ".join(missing))
        return
    if mode == "auto" and not missing_requirements():
        return
    python = ensure_venv()
    env = dict(os.environ, **{BOOTSTRAP_FLAG: "1"})
    env["PATH"] = f"{python.parent}{os.pathsep}{env.get('PATH', '')}"
    os.chdir(PROJECT_ROOT)
    os.execve(str(python), [str(python), "-m", "helpers.run", *argv], env)


def install_browser() -> int:
    """Install :data:`BROWSER_PACKAGES` with apt-get when running as root; otherwise print the command. Returns an exit code."""
    command = ["apt-get", "install", "-y", *BROWSER_PACKAGES]
    if shutil.which("chromium") and shutil.which("chromedriver"):
        print(f"chromium and chromedriver are installed: {shutil.which('chromium')}, {shutil.which('chromedriver')}")
        return 0
    if shutil.which("apt-get") is None:
        print(f"no apt-get here: install Chromium and its chromedriver with this system's package manager "
              f"(Debian: {' '.join(command)}); the browser test skips without them", file=sys.stderr)
        return 1
    if os.geteuid() != 0:
        print(f"run as root: sudo apt-get update && sudo {' '.join(command)}", file=sys.stderr)
        return 1
    subprocess.run(["apt-get", "update"], check=False)
    return subprocess.call(command, env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))


# ---------------------------------------------------------------- notebooks
def list_notebooks(only: list[str] | None = None, notebooks_dir: Path = NOTEBOOKS_DIR) -> list[Path]:
    """Ordered notebooks ``NN_name.ipynb``; ``only`` selects by number or name prefix (``"00"``, ``"01_eda"``)."""
    notebooks = sorted(Path(notebooks_dir).glob("[0-9][0-9]_*.ipynb"))
    if not only:
        return notebooks
    chosen = [nb for nb in notebooks if any(nb.stem.startswith(key) for key in only)]
    unknown = [key for key in only if not any(nb.stem.startswith(key) for nb in notebooks)]
    if unknown:
        raise ValueError(f"unknown notebook(s) {unknown}; choose from {[nb.stem for nb in notebooks]}")
    return chosen


def load_profile(name: str, notebooks_dir: Path = NOTEBOOKS_DIR) -> dict:
    """Profile ``name`` from ``<notebooks_dir>/profiles.yaml``: ``{"common": {...}, "notebooks": {stem: {...}}}``."""
    import yaml

    path = Path(notebooks_dir) / PROFILES_FILE.name
    try:
        profiles = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ValueError(f"{path}{where}: not valid YAML ({getattr(err, 'problem', None) or err})") from None
    if not isinstance(profiles, dict) or not all(isinstance(v, (dict, type(None))) for v in profiles.values()):
        raise ValueError(f"{path}: expected a mapping of profile name -> {{common: ..., notebooks: ...}}")
    if name not in profiles:
        raise ValueError(f"unknown profile {name!r}; choose from {sorted(profiles)}")
    profile = profiles[name] or {}
    return {"common": profile.get("common") or {}, "notebooks": profile.get("notebooks") or {}}


def notebook_parameters(profile: dict, notebook: str, declared: set[str], overrides: dict, root: Path = PROJECT_ROOT) -> dict:
    """Parameters for one notebook: profile common, then per-notebook, then overrides; only declared names.

    Relative ``*_dir`` paths, and relative weight files (``*_weights`` values that look like a path,
    ``*_encoders`` mapping values), are made absolute against ``root`` (default the project folder):
    the notebooks run in their own folder. ``encoder_weights=imagenet`` (a name) stays as it is.
    """
    merged = {**profile["common"], **profile["notebooks"].get(notebook, {}), **overrides}
    params = {}
    for key, value in merged.items():
        if key not in declared:
            continue
        if key.endswith("_dir") and isinstance(value, str) and value:
            value = _rooted(value, root)
        elif key.endswith("_weights") and isinstance(value, str) and ("/" in value or Path(value).suffix):
            value = _rooted(value, root)
        elif key.endswith("_encoders") and isinstance(value, dict):
            value = {label: _rooted(path, root) if isinstance(path, str) and path else path for label, path in value.items()}
        params[key] = value
    return params


def _rooted(path: str, root: Path) -> str:
    """``path`` made absolute against ``root`` when relative."""
    return path if os.path.isabs(path) else str((Path(root) / path).resolve())


def _parse_overrides(pairs: list[str]) -> dict:
    import yaml

    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_]\w*", key):
            raise ValueError(f"parameter override must look like name=value, got {pair!r}")
        try:
            overrides[key] = _parse_value(value, yaml)
        except yaml.YAMLError as err:
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ValueError(f"-p {pair}: the value is not valid YAML ({problem}); "
                             "quote lists and strings, e.g. -p 'archs=[\"unet\", \"fpn\"]'") from None
    return overrides


def _parse_value(text: str, yaml):
    for number in (int, float):  # YAML 1.1 reads "1e-3" as a string
        try:
            return number(text)
        except ValueError:
            pass
    return yaml.safe_load(text) if text else ""


def check_overrides(overrides: dict, declared: dict[str, set[str]]) -> None:
    """Refuse override names that no selected notebook declares (``declared``: notebook -> names)."""
    import difflib

    known = set().union(*declared.values()) if declared else set()
    unknown = sorted(set(overrides) - known)
    if not unknown:
        return
    lines = []
    for name in unknown:
        close = difflib.get_close_matches(name, sorted(known), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        lines.append(f"{name}{hint}")
    raise ValueError(f"parameter(s) not declared by any selected notebook ({', '.join(sorted(declared))}): "
                     + "; ".join(lines))


def run_folder(outputs_root: Path, run_name: str) -> Path:
    """``outputs_root/run_name``; the name must be a plain folder name (no ``/``, no ``..``)."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", run_name or ""):
        raise ValueError(f"run name must be a plain folder name (letters, digits, . _ -), got {run_name!r}")
    return Path(outputs_root) / run_name


def _kernel_manager(log_path: Path):
    """Kernel manager on local IPC sockets (no TCP ports) whose kernel writes its stderr to ``log_path``.

    The sockets go to a fresh temporary folder, not the notebooks' working folder (where JupyterLab
    would list them and a second run would pick among the same names).
    """
    from jupyter_client.manager import AsyncKernelManager

    class QuietKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs):
            kwargs.setdefault("transport", "ipc")
            if kwargs["transport"] == "ipc":
                kwargs.setdefault("ip", os.path.join(tempfile.mkdtemp(prefix="defects-kernel-"), "ipc"))
            super().__init__(**kwargs)

        def cleanup_ipc_files(self) -> None:
            super().cleanup_ipc_files()
            folder = os.path.dirname(self.ip)
            if os.path.basename(folder).startswith("defects-kernel-"):  # the folder made above
                shutil.rmtree(folder, ignore_errors=True)

        async def start_kernel(self, **kwargs):
            # the runner (or the notebook that ran this one, e.g. 04 running 03) tracks the kernel's
            # work: it does not track itself (helpers.core.tracking.RUNNER_ENV; stdlib-only module)
            kwargs["env"] = {**(kwargs.get("env") or os.environ), "DEFECT_RUNNER": "1"}
            with open(log_path, "ab") as log:
                kwargs.setdefault("stderr", log)
                return await super().start_kernel(**kwargs)

    return QuietKernelManager


def _report_failure(err: Exception, executed: Path) -> str:
    lines = [f"FAILED: {executed.stem}"]
    ename, evalue = getattr(err, "ename", type(err).__name__), getattr(err, "evalue", str(err))
    cell = getattr(err, "exec_count", None)
    lines.append(f"  cell [{cell}] raised {ename}: {evalue}" if cell else f"  {ename}: {evalue}")
    traceback = getattr(err, "traceback", None) or []
    ansi = re.compile(r"\x1b\[[0-9;]*m")
    tail = [ansi.sub("", line) for line in traceback[-3:]]
    lines += ["  " + part for line in tail for part in line.splitlines()[-6:]]
    lines.append(f"  executed notebook: {executed}")
    kernel_log = executed.with_suffix(".kernel.log")
    if kernel_log.is_file() and kernel_log.stat().st_size:
        lines.append(f"  kernel log: {kernel_log}")
    return "\n".join(lines)


def execute_notebook(notebook: Path, executed: Path, parameters: dict, progress: bool = True) -> Path:
    """Execute one notebook with papermill (cwd = its folder) into ``executed``; kernel stderr beside it."""
    import papermill

    executed = Path(executed)
    executed.parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(
        str(notebook), str(executed), parameters=parameters, cwd=str(Path(notebook).parent),
        kernel_name="python3", progress_bar=progress, request_save_on_cell_execute=True,
        kernel_manager_class=_kernel_manager(executed.with_suffix(".kernel.log")),
    )
    return executed


def executed_parameters(executed: Path) -> dict | None:
    """The parameters papermill recorded in an executed notebook, or None (no such file, or none recorded)."""
    import nbformat

    if not Path(executed).is_file():
        return None
    return nbformat.read(executed, as_version=4).metadata.get("papermill", {}).get("parameters")


def run_notebooks(
    profile_name: str = "smoke",
    only: list[str] | None = None,
    run_name: str | None = None,
    overrides: dict | None = None,
    outputs_root: Path | None = None,
    progress: bool = True,
    notebooks_dir: Path = NOTEBOOKS_DIR,
    root: Path = PROJECT_ROOT,
    track: bool = True,
) -> Path:
    """Execute notebooks in order with papermill; return ``outputs/<run>/``.

    ``root``: folder against which the profile's relative ``*_dir`` paths are resolved (default
    the project folder; the tests use a temporary one so that their data stays apart).

    Writes ``notebooks/`` (executed copies and each kernel's stderr log), ``figures/``, ``metrics/``
    and ``run.json`` (profile; per notebook its status, time and parameters), updated after every
    notebook; a later run of some notebooks into the same folder and profile replaces their entries.
    Stops at the first failing notebook, printing its error; raises ``RuntimeError``.

    ``track``: record the call in MLflow (:class:`helpers.core.tracking.RunTracker`: experiment =
    the run folder's name, a parent run, a child run per notebook, FAILED for a failed one);
    ``DEFECT_TRACKING=0`` turns it off too. A tracking problem only warns.
    """
    import papermill

    profile = load_profile(profile_name, notebooks_dir)
    run_dir = run_folder(Path(outputs_root or PROJECT_ROOT / "outputs"), run_name or profile_name)
    notebooks = list_notebooks(only, notebooks_dir)
    inspected = {nb.stem: papermill.inspect_notebook(str(nb)) for nb in notebooks}
    declared = {stem: set(names) for stem, names in inspected.items()}
    check_overrides(overrides or {}, declared)
    record = _RunRecord(run_dir / "run.json", profile_name)  # a broken run.json stops us before anything is written
    executed_dir = run_dir / "notebooks"
    executed_dir.mkdir(parents=True, exist_ok=True)
    tracker = _tracker(track, run_dir, profile_name, notebooks, overrides or {})
    overrides = {**(overrides or {}), "output_dir": str(run_dir.resolve()), "profile": profile_name}
    with tracker:
        for index, notebook in enumerate(notebooks, start=1):
            params = notebook_parameters(profile, notebook.stem, declared[notebook.stem], overrides, root)
            every = {**_defaults(inspected[notebook.stem]), **params}  # what the notebook ran with, for tracking
            executed = executed_dir / notebook.name
            print(f"[{index}/{len(notebooks)}] {notebook.stem}  ({profile_name} profile)", flush=True)
            tracker.begin()
            started = time.perf_counter()
            try:
                execute_notebook(notebook, executed, params, progress=progress)
            except Exception as err:  # papermill wraps cell errors; report and stop
                seconds = time.perf_counter() - started
                record.add(notebook.stem, "failed", seconds, params)
                tracker.end(notebook.stem, "failed", seconds, every, executed)
                message = _report_failure(err, executed)
                print(message, file=sys.stderr, flush=True)
                raise RuntimeError(message) from None
            seconds = time.perf_counter() - started
            record.add(notebook.stem, "ok", seconds, params)
            tracker.end(notebook.stem, "ok", seconds, every, executed)
            print(f"    done in {seconds:.1f} s -> {executed}", flush=True)
    total = sum(entry["seconds"] for entry in record.entries if entry["name"] in {nb.stem for nb in notebooks})
    print(f"All {len(notebooks)} notebook(s) ran in {total:.0f} s. Outputs: {run_dir}", flush=True)
    return run_dir


def _defaults(inspected: dict) -> dict:
    """A notebook's parameter defaults from :func:`papermill.inspect_notebook` (source text where not a literal)."""
    import ast

    defaults = {}
    for name, spec in inspected.items():
        try:
            defaults[name] = ast.literal_eval(spec["default"])
        except (ValueError, SyntaxError, TypeError, KeyError):
            defaults[name] = spec.get("default")
    return defaults


def _tracker(track: bool, run_dir: Path, profile_name: str, notebooks: list[Path], overrides: dict):
    """The MLflow runs of this call (inert when tracking is off): experiment = the run folder's name."""
    from helpers.core import tracking

    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    params = {"profile": profile_name, "notebooks": " ".join(nb.stem for nb in notebooks),
              **{f"override.{name}": value for name, value in overrides.items()}}
    return tracking.RunTracker(run_dir, run_dir.parent, experiment=run_dir.name, run_name=f"{run_dir.name} {stamp}",
                               params=params, tags={"run_dir": str(run_dir.resolve()), "profile": profile_name},
                               enabled=tracking.tracking_enabled(track))


class _RunRecord:
    """``run.json`` of a run folder, rewritten after every notebook (entries of the same profile kept)."""

    def __init__(self, path: Path, profile: str):
        from helpers.core import files

        self.path, self.profile, self.entries = path, profile, []
        if path.is_file():
            try:
                previous = files.read_json(path)
            except ValueError as err:
                raise ValueError(f"{err}; delete it or choose another --run") from None
            entries = previous.get("notebooks", []) if isinstance(previous, dict) else None
            if not isinstance(entries, list) or not all(isinstance(e, dict) and "name" in e for e in entries):
                raise ValueError(f"{path}: not a run record (expected profile and notebooks); "
                                 "delete it or choose another --run")
            if previous.get("profile") == profile:
                self.entries = entries

    def add(self, name: str, status: str, seconds: float, parameters: dict) -> None:
        entry = {"name": name, "status": status, "seconds": round(seconds, 1), "parameters": parameters}
        self.entries = sorted([e for e in self.entries if e["name"] != name] + [entry], key=lambda e: e["name"])
        from helpers.core import files

        summary = {"profile": self.profile, "notebooks": self.entries,
                   "total_seconds": round(sum(e["seconds"] for e in self.entries), 1)}
        files.atomic_write_json(self.path, summary)


# ---------------------------------------------------------------- command line
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python3 -m helpers.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="smoke", help="profile from notebooks/profiles.yaml: smoke, cpu or gpu (default smoke)")
    parser.add_argument("--only", nargs="+", metavar="NB", help="run only these notebooks (number or name prefix)")
    parser.add_argument("--run", dest="run_name", help="name of the outputs/<run>/ folder (default: the profile name)")
    parser.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE", help="override a notebook parameter (repeatable)")
    parser.add_argument("--env", default="auto", choices=("auto", "current", "venv"), help="auto: use this interpreter if it has the pinned packages, else .venv")
    parser.add_argument("--no-progress", action="store_true", help="no per-cell progress bars")
    parser.add_argument("--no-track", action="store_true",
                        help="do not record the run in MLflow (default: outputs/mlruns, or $MLFLOW_TRACKING_URI)")
    parser.add_argument("--list", action="store_true", help="list notebooks and profiles, then exit")
    parser.add_argument("--browser", action="store_true",
                        help="install Debian's chromium + chromium-driver for the browser test (apt-get, as root), then exit")
    parser.add_argument("--tests", nargs=argparse.REMAINDER, metavar="PYTEST_ARGS", help="run the test suite (pytest) with optional arguments")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.list:
        print("Notebooks:", *[f"  {nb.stem}" for nb in list_notebooks()], sep="\n")
        print("Profiles are defined in", PROFILES_FILE)
        return 0
    if args.browser:
        return install_browser()
    _enter_environment(args.env, argv)
    if args.tests is not None:
        return subprocess.call([sys.executable, "-m", "pytest", *args.tests], cwd=PROJECT_ROOT)
    try:
        overrides = _parse_overrides(args.param)
        run_notebooks(args.profile, args.only, args.run_name, overrides, progress=not args.no_progress,
                      track=not args.no_track)
    except (RuntimeError, ValueError) as err:
        if isinstance(err, ValueError):
            print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
