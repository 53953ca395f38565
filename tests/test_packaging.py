"""Project layout, pins and the single place that configures Keras."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return dict(spec.split("==") for spec in project["dependencies"] + project["optional-dependencies"]["dev"])


def test_every_dependency_is_pinned():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for spec in project["dependencies"] + project["optional-dependencies"]["dev"]:
        assert re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[0-9][\w.]*", spec), spec


def test_environment_yml_declares_the_same_pins():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    pins = dict(spec.split("==") for spec in pip_section if "==" in spec)
    assert pins == pyproject_pins()
    assert "-e ." in pip_section


def test_required_stack_is_pinned():
    pins = pyproject_pins()
    for name in ("tensorflow", "tf-keras", "albumentations", "papermill", "jupyterlab", "ipykernel", "matplotlib",
                 "seaborn", "scikit-learn", "pandas", "pillow", "opencv-python-headless", "tqdm"):
        assert name in pins, name
    assert pins["segmentation-models"] == "1.0.1"


def test_keras_flavour_is_set_in_exactly_one_place():
    hits = [
        path.relative_to(ROOT).as_posix()
        for path in [*ROOT.glob("helpers/**/*.py"), *ROOT.glob("notebooks/*.ipynb"), *ROOT.glob("tests/*.py")]
        if re.search(r"environ\[\s*\"(SM_FRAMEWORK|TF_USE_LEGACY_KERAS)\"\s*\]\s*=", path.read_text())
    ]
    assert hits == ["helpers/backend.py"]


# What each layer may import (besides itself); see the helpers package docstring.
ALLOWED_IMPORTS = {
    "core": set(),
    "data": {"core", "backend"},
    "modeling": {"core", "backend"},
    "studies": {"core", "backend", "data", "modeling"},
    "deploy": {"core", "backend", "data", "modeling", "studies"},  # serve: Grad-CAM of helpers.studies.explain
    "backend": set(),
    "run": {"core"},
}


def helpers_modules() -> list[str]:
    return sorted(".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                  for path in (ROOT / "helpers").rglob("*.py"))


def imported_layers(path: Path) -> set[str]:
    """Layers of helpers that a module imports (``helpers.<layer>...``)."""
    text = path.read_text()
    assert not re.search(r"^\s*from \.", text, re.M), f"{path}: relative import; import helpers.<layer> explicitly"
    return set(re.findall(r"^\s*(?:from|import) helpers\.(\w+)", text, re.M))


def test_every_module_sits_in_a_layer_and_imports_only_the_layers_below():
    for path in sorted((ROOT / "helpers").rglob("*.py")):
        parts = path.relative_to(ROOT / "helpers").with_suffix("").parts
        if parts == ("__init__",):
            continue
        layer = parts[0]
        assert layer in ALLOWED_IMPORTS, f"{path}: not in a layer {sorted(ALLOWED_IMPORTS)}"
        wrong = imported_layers(path) - ALLOWED_IMPORTS[layer] - {layer}
        assert not wrong, f"{path} ({layer}) imports {sorted(wrong)}"


def test_every_package_lists_its_modules_in_all():
    for init in (ROOT / "helpers").rglob("__init__.py"):
        listed = __import__("ast").literal_eval(re.search(r"__all__ = (\[.*?\])", init.read_text(), re.S)[1])
        present = sorted(p.stem if p.suffix else p.name for p in init.parent.iterdir()
                         if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file())
        assert sorted(listed) == present, init


def test_importing_the_packages_and_the_numpy_modules_loads_no_keras():
    packages = [m for m in helpers_modules() if (ROOT / m.replace(".", "/") / "__init__.py").is_file()]
    numpy_only = ["helpers.core.rle", "helpers.core.severstal", "helpers.core.files", "helpers.core.viz",
                  "helpers.core.outputs", "helpers.core.tracking", "helpers.data.synth.steel", "helpers.data.synth.chest", "helpers.data.synth.weld",
                  "helpers.data.convert", "helpers.data.audit", "helpers.data.eda", "helpers.data.splits",
                  "helpers.data.radiographs", "helpers.data.augment", "helpers.modeling.losses",
                  "helpers.modeling.metrics", "helpers.modeling.postprocess", "helpers.studies.rle_benchmark",
                  "helpers.modeling.weight_files", "helpers.studies.weak", "helpers.deploy.report", "helpers.run"]
    code = (f"import sys, {', '.join(packages + numpy_only)}; "
            "print(any(m.split('.')[0] in ('tensorflow', 'tf_keras', 'keras') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"
    assert out.stderr == ""


def test_backend_selects_keras_2_and_segmentation_models_tf_keras():
    code = "from helpers.backend import keras, sm, tf; print(keras.__version__.split('.')[0], sm.framework())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip().splitlines()[-1] == "2 tf.keras"


def test_layout():
    for name in ("notebooks", "helpers", "data", "outputs", "tests", "environment.yml", "README.md", "pyproject.toml", ".ci/run"):
        assert (ROOT / name).exists(), name
    ignore = (ROOT / ".gitignore").read_text().splitlines()
    for folder in ("data", "outputs"):
        assert f"/{folder}/*" in ignore and f"!/{folder}/README.md" in ignore
        assert (ROOT / folder / "README.md").is_file()


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    test_command = "python3 -m helpers.run --tests"
    assert test_command in readme
    assert test_command in (ROOT / ".ci" / "run").read_text()


def _readme_layout() -> str:
    readme = (ROOT / "README.md").read_text()
    return readme[readme.index("## Layout\n"):readme.index("## Measurements")]


def test_readme_layout_shows_every_module_of_the_tree():
    layout = _readme_layout()
    for path in (ROOT / "helpers").rglob("*.py"):
        if path.stem != "__init__":
            assert re.search(rf"^\s+{re.escape(path.name)}\s", layout, re.M), f"README layout misses {path.relative_to(ROOT)}"


def test_readme_table_says_which_notebook_imports_which_module():
    rows = {}
    for line in _readme_layout().splitlines():
        if line.startswith("| `"):
            name, *marks = [cell.strip() for cell in line.strip("|").split("|")]
            rows[name.strip("`")] = {k for k, mark in enumerate(marks) if mark == "x"}
    assert set(rows) == {m.removeprefix("helpers.") for m in helpers_modules() if not m.endswith(("__init__",))} - {
        m.removeprefix("helpers.") for m in helpers_modules() if (ROOT / m.replace(".", "/") / "__init__.py").is_file()}
    imported: dict[str, set[int]] = {name: set() for name in rows}
    for number, notebook in enumerate(sorted((ROOT / "notebooks").glob("*.ipynb"))):
        code = "\n".join("".join(c["source"]) for c in __import__("json").loads(notebook.read_text())["cells"]
                         if c["cell_type"] == "code")
        for package, names in re.findall(r"^from helpers(\.[\w.]+)? import ([\w, ]+)", code, re.M):
            package = package.lstrip(".")
            for name in [n.strip() for n in names.split(",")]:
                module = package if package in rows else f"{package}.{name}".lstrip(".")
                imported[module].add(number)
    assert rows == imported
