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


@pytest.mark.parametrize("key, value, expected", [
    ("radiograph_weights", "outputs/r/pretrained/a.h5", "ROOT/outputs/r/pretrained/a.h5"),
    ("imagenet_weights", "w/mobilenet.h5", "ROOT/w/mobilenet.h5"),
    ("encoder_weights", "imagenet", "imagenet"),  # a name, not a path
    ("encoder_weights", "", ""),
    ("radiograph_weights", "/abs/a.h5", "/abs/a.h5"),
    ("radiograph_encoders", {"big": "outputs/r/pretrained/b.h5", "abs": "/abs/c.h5"},
     {"big": "ROOT/outputs/r/pretrained/b.h5", "abs": "/abs/c.h5"}),
])
def test_relative_weight_files_resolve_against_the_project_root(key, value, expected, tmp_path):
    """The notebooks run in their own folder: a relative weights path given to the runner means the project's."""
    params = run.notebook_parameters({"common": {}, "notebooks": {}}, "06_x", {key}, {key: value}, root=tmp_path)
    assert params == {key: json.loads(json.dumps(expected).replace("ROOT", str(tmp_path)))}


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


def test_a_misspelt_parameter_is_refused_with_close_matches(notebooks_dir, tmp_path):
    """Before: -p siez=7 was dropped silently and the notebooks ran with size 1."""
    with pytest.raises(ValueError, match=r"siez \(did you mean size\?\)"):
        run.run_notebooks("smoke", only=["00"], overrides={"siez": 7}, outputs_root=tmp_path / "out",
                          progress=False, notebooks_dir=notebooks_dir)
    assert not (tmp_path / "out").exists()


def test_a_parameter_of_another_notebook_is_refused(notebooks_dir, tmp_path):
    with pytest.raises(ValueError, match=r"not declared by any selected notebook \(01_second\): size"):
        run.run_notebooks("smoke", only=["01"], overrides={"size": 7}, outputs_root=tmp_path / "out",
                          progress=False, notebooks_dir=notebooks_dir)


@pytest.mark.parametrize("run_name", ["../../x", "..", "a/b", "/tmp/x", ".hidden"])
def test_run_names_stay_inside_outputs(notebooks_dir, tmp_path, run_name):
    with pytest.raises(ValueError, match="run name must be a plain folder name"):
        run.run_notebooks("smoke", only=["00"], run_name=run_name, outputs_root=tmp_path / "a" / "out",
                          progress=False, notebooks_dir=notebooks_dir)
    assert not (tmp_path / "a").exists() and not (tmp_path / "x").exists()


def test_an_unknown_notebook_creates_nothing(notebooks_dir, tmp_path):
    """Before: outputs/<run>/notebooks/ was made before the selection was checked."""
    with pytest.raises(ValueError, match="unknown notebook"):
        run.run_notebooks("smoke", only=["07"], outputs_root=tmp_path / "out", progress=False, notebooks_dir=notebooks_dir)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("text", ["smoke:\n  common: [unclosed\n", "smoke:\n\tcommon: {}\n", "- just\n- a list\n"])
def test_a_broken_profiles_file_is_one_line_naming_it(notebooks_dir, text):
    (notebooks_dir / "profiles.yaml").write_text(text)
    with pytest.raises(ValueError, match=r"profiles\.yaml") as err:
        run.load_profile("smoke", notebooks_dir)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("pair", ["archs=[unet, fpn", "x={a: 1", "s='open"])
def test_broken_yaml_in_an_override_is_one_line_naming_it(pair):
    with pytest.raises(ValueError, match="is not valid YAML") as err:
        run._parse_overrides([pair])
    assert pair in str(err.value) and "\n" not in str(err.value)


def test_main_reports_bad_arguments_in_one_line(capsys):
    assert run.main(["--env", "current", "-p", "archs=[unet", "--only", "00"]) == 1
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.parametrize("content", ['{"profile": "smoke", "notebooks": [{"na', "", '["not", "a", "record"]'])
def test_a_truncated_run_json_is_named_and_left_alone(notebooks_dir, tmp_path, content):
    run_dir = tmp_path / "out" / "smoke"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(content)
    with pytest.raises(ValueError, match=r"run\.json.*delete it or choose another --run"):
        run.run_notebooks("smoke", only=["00"], outputs_root=tmp_path / "out", progress=False, notebooks_dir=notebooks_dir)
    assert (run_dir / "run.json").read_text() == content and sorted(p.name for p in run_dir.iterdir()) == ["run.json"]


def test_run_json_is_written_atomically(notebooks_dir, tmp_path, monkeypatch):
    from helpers.core import files

    run_dir = run.run_notebooks("smoke", only=["00"], outputs_root=tmp_path / "out", progress=False, notebooks_dir=notebooks_dir)
    before = (run_dir / "run.json").read_text()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        run.run_notebooks("smoke", only=["00"], outputs_root=tmp_path / "out", progress=False, notebooks_dir=notebooks_dir)
    assert (run_dir / "run.json").read_text() == before
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]


def _readme_commands() -> list[list[str]]:
    """The ``python3 -m helpers.run`` commands of the README, as argument lists (line continuations joined)."""
    import shlex

    text = (run.PROJECT_ROOT / "README.md").read_text().replace("\\\n", " ")
    code = "\n".join(text.split("```")[1::2])  # inside fenced blocks only
    commands = []
    for line in code.splitlines():
        if line.lstrip().startswith("python3 -m helpers.run"):
            words = shlex.split(line.split("python3 -m helpers.run", 1)[1].split(" #")[0])
            commands.append(words)
    return commands


def test_the_kernel_sockets_stay_out_of_the_notebooks_folder(tmp_path):
    source = ("import json, os\nfrom ipykernel import get_connection_info\n"
              "print(sorted(f for f in os.listdir('.') if 'ipc' in f), json.loads(get_connection_info())['ip'])")
    nbformat.write(new_notebook(cells=[new_code_cell(source)]), tmp_path / "look.ipynb")
    executed = run.execute_notebook(tmp_path / "look.ipynb", tmp_path / "out" / "look.ipynb", {}, progress=False)
    (cell,) = nbformat.read(executed, as_version=4).cells
    listed, socket_prefix = cell.outputs[0]["text"].split()
    assert listed == "[]"
    assert Path(socket_prefix).parent.name.startswith("defects-kernel-") and not Path(socket_prefix).parent.exists()  # removed after


def test_every_readme_command_names_declared_parameters():
    """A -p in the README that no selected notebook declares would now stop the run: none may."""
    import papermill

    commands = _readme_commands()
    assert len(commands) >= 10
    declared_by = {nb.stem: set(papermill.inspect_notebook(str(nb))) for nb in run.list_notebooks()}
    for words in commands:
        args = run._parser().parse_args(words)
        if args.tests is not None or args.list:
            continue
        chosen = {nb.stem: declared_by[nb.stem] for nb in run.list_notebooks(args.only)}
        run.check_overrides(run._parse_overrides(args.param), chosen)
