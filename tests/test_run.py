"""The notebook runner: profiles, parameters, ordering and failure reports (with two tiny notebooks)."""

import json
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from helpers import run


def write_notebook(path: Path, parameters: str, body: str) -> None:
    nb = new_notebook(cells=[new_code_cell(parameters, metadata={"tags": ["parameters"]}), new_code_cell(body)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture
def notebooks_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "notebooks"
    folder.mkdir()
    (folder / "profiles.yaml").write_text(
        "smoke:\n  common:\n    data_dir: data/x\n    seed: 3\n  notebooks:\n    00_first:\n      size: 5\n"
        "cpu:\n  common:\n    seed: 4\n"
    )
    write_notebook(folder / "00_first.ipynb",
                   'output_dir: str = "."\ndata_dir: str = ""\nseed: int = 0\nsize: int = 1\nprofile: str = ""',
                   "import json, pathlib\n"
                   "pathlib.Path(output_dir, 'metrics').mkdir(parents=True, exist_ok=True)\n"
                   "pathlib.Path(output_dir, 'metrics', '00_first.json').write_text(json.dumps("
                   "{'seed': seed, 'size': size, 'data_dir': data_dir, 'profile': profile}))")
    write_notebook(folder / "01_second.ipynb", 'output_dir: str = "."\nseed: int = 0',
                   "x = seed * 2\nraise ValueError(f'broken on purpose {x}')")
    return folder


def test_parameters_come_from_profile_then_overrides(notebooks_dir, tmp_path):
    run_dir = run.run_notebooks("smoke", only=["00"], overrides={"size": 7}, outputs_root=tmp_path / "out",
                                progress=False, notebooks_dir=notebooks_dir)
    assert run_dir == tmp_path / "out" / "smoke"
    metrics = json.loads((run_dir / "metrics" / "00_first.json").read_text())
    assert metrics == {"seed": 3, "size": 7, "data_dir": str(run.PROJECT_ROOT / "data" / "x"), "profile": "smoke"}
    assert (run_dir / "notebooks" / "00_first.ipynb").is_file()
    recorded = run.executed_parameters(run_dir / "notebooks" / "00_first.ipynb")
    assert recorded["size"] == 7 and recorded["seed"] == 3 and recorded["profile"] == "smoke"
    assert run.executed_parameters(run_dir / "notebooks" / "missing.ipynb") is None
    summary = json.loads((run_dir / "run.json").read_text())
    assert [nb["status"] for nb in summary["notebooks"]] == ["ok"]



def test_relative_dirs_resolve_against_the_given_root(notebooks_dir, tmp_path):
    run_dir = run.run_notebooks("smoke", only=["00"], outputs_root=tmp_path / "out", root=tmp_path / "elsewhere",
                                progress=False, notebooks_dir=notebooks_dir)
    assert json.loads((run_dir / "metrics" / "00_first.json").read_text())["data_dir"] == str(tmp_path / "elsewhere" / "data" / "x")

def test_failure_stops_and_names_the_cell_and_notebook(notebooks_dir, tmp_path, capsys):
    with pytest.raises(RuntimeError) as info:
        run.run_notebooks("cpu", run_name="r1", outputs_root=tmp_path, progress=False, notebooks_dir=notebooks_dir)
    message = str(info.value)
    assert "FAILED: 01_second" in message
    assert "ValueError: broken on purpose 8" in message
    assert str(tmp_path / "r1" / "notebooks" / "01_second.ipynb") in message
    assert "FAILED: 01_second" in capsys.readouterr().err
    summary = json.loads((tmp_path / "r1" / "run.json").read_text())
    assert [nb["status"] for nb in summary["notebooks"]] == ["ok", "failed"]



def test_a_later_partial_run_updates_its_entries_in_run_json(notebooks_dir, tmp_path):
    with pytest.raises(RuntimeError):
        run.run_notebooks("cpu", run_name="r2", outputs_root=tmp_path, progress=False, notebooks_dir=notebooks_dir)
    run.run_notebooks("cpu", run_name="r2", only=["00"], overrides={"size": 9}, outputs_root=tmp_path, progress=False,
                      notebooks_dir=notebooks_dir)
    summary = json.loads((tmp_path / "r2" / "run.json").read_text())
    assert [(nb["name"], nb["status"]) for nb in summary["notebooks"]] == [("00_first", "ok"), ("01_second", "failed")]
    assert summary["notebooks"][0]["parameters"]["size"] == 9
    run.run_notebooks("smoke", run_name="r2", only=["00"], outputs_root=tmp_path, progress=False, notebooks_dir=notebooks_dir)
    summary = json.loads((tmp_path / "r2" / "run.json").read_text())
    assert summary["profile"] == "smoke" and [nb["name"] for nb in summary["notebooks"]] == ["00_first"]

@pytest.mark.parametrize(
    "only, expected",
    [(None, ["00_first", "01_second"]), (["01"], ["01_second"]), (["00_first", "01"], ["00_first", "01_second"])],
)
def test_notebook_selection(notebooks_dir, only, expected):
    assert [nb.stem for nb in run.list_notebooks(only, notebooks_dir)] == expected


def test_unknown_notebook_and_profile(notebooks_dir):
    with pytest.raises(ValueError, match="unknown notebook"):
        run.list_notebooks(["07"], notebooks_dir)
    with pytest.raises(ValueError, match="unknown profile 'huge'; choose from"):
        run.load_profile("huge", notebooks_dir)


def test_only_declared_parameters_are_passed():
    profile = {"common": {"seed": 1, "data_dir": "data/a"}, "notebooks": {"00_x": {"epochs": 2}}}
    params = run.notebook_parameters(profile, "00_x", {"seed", "epochs"}, {"seed": 5, "unused": 1})
    assert params == {"seed": 5, "epochs": 2}
    params = run.notebook_parameters(profile, "01_y", {"data_dir"}, {})
    assert params == {"data_dir": str(run.PROJECT_ROOT / "data" / "a")}


@pytest.mark.parametrize("pair, expected", [("epochs=3", {"epochs": 3}), ("arch=unet", {"arch": "unet"}),
                                            ("lr=1e-3", {"lr": 1e-3}), ("flag=true", {"flag": True}), ("name=", {"name": ""})])
def test_override_parsing(pair, expected):
    assert run._parse_overrides([pair]) == expected


@pytest.mark.parametrize("pair", ["epochs", "3x=1", "=3"])
def test_bad_overrides(pair):
    with pytest.raises(ValueError, match="name=value"):
        run._parse_overrides([pair])


def test_this_environment_satisfies_the_pins():
    assert run.missing_requirements() == []
