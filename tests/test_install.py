"""The course installed with pip, for a notebook opened outside a clone (Kaggle's Import Notebook,
Colab's Open from GitHub): `%pip install "git+<repository URL>"`, then the notebook alone.

The package is built from a copy of the sources in a temporary folder, so that the build's build/
and *.egg-info folders never land in the repository, and installed with `pip --target` into a
folder of its own, without its dependencies (this environment has them) and with no network.
A notebook copied out of the repository then runs on it with that folder on PYTHONPATH.
"""

import json
import shutil
import subprocess
import sys
from importlib.metadata import PathDistribution
from pathlib import Path

import pytest
from conftest import load_script
from nbclient.exceptions import CellExecutionError
from test_environment import parse, pip_packages

import helpers.model
from helpers import REPO_ROOT, TINY_MODEL_DIR

runner = load_script("scripts/run_notebooks.py")

# What `pip install` needs from a clone; a file pyproject.toml starts to need must be added here.
SOURCES = ["pyproject.toml", "README.md", "helpers", "data/tiny-llama3"]
# The fastest notebook that loads the tiny model, and checks its own code against helpers.
NOTEBOOK = REPO_ROOT / "notebooks" / "02_embeddings_rmsnorm.ipynb"
WHERE_FROM = "import helpers.model; print(helpers.model.__file__); print(helpers.model.DOWNLOAD_DIR)"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A folder holding the course as `pip install` puts it into site-packages."""
    source = tmp_path_factory.mktemp("source")
    for name in SOURCES:
        if (REPO_ROOT / name).is_dir():
            shutil.copytree(REPO_ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(REPO_ROOT / name, source / name)
    site = tmp_path_factory.mktemp("site")
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
           "--no-build-isolation", "--target", str(site), str(source)]
    result = subprocess.run(pip, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return site


# This environment has the clone installed with `pip install -e .` (the Makefile does so): a cell run first
# hides it from the notebook's kernel, as on a machine that has only the notebook.
NOT_FROM_THE_CLONE = f"""import sys
sys.meta_path[:] = [finder for finder in sys.meta_path if "__editable__" not in getattr(finder, "__module__", "")]
sys.path[:] = [p for p in sys.path if p != {str(REPO_ROOT)!r}]"""


@pytest.fixture
def outside_the_clone(tmp_path, monkeypatch):
    """A copy of NOTEBOOK in a folder outside the repository, as Kaggle or Colab would run it."""
    assert not any((p / "helpers" / "__init__.py").is_file() for p in [tmp_path, *tmp_path.parents])
    # conftest.py points LLAMA3_DIR at the repository's tiny model; an installed course has its own.
    monkeypatch.delenv("LLAMA3_DIR", raising=False)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    notebook = json.loads(NOTEBOOK.read_text())
    notebook["cells"].insert(0, {"cell_type": "code", "id": "not-from-the-clone", "metadata": {}, "outputs": [],
                                 "execution_count": None, "source": NOT_FROM_THE_CLONE})
    copy = tmp_path / NOTEBOOK.name
    copy.write_text(json.dumps(notebook))
    return copy


def printed(notebook):
    return [line for cell in notebook.cells for output in cell.get("outputs", []) if output.get("name") == "stdout"
            for line in output["text"].splitlines()]


def test_the_package_holds_helpers_and_the_tiny_model(site):
    installed = {p.name for p in site.iterdir() if not p.name.endswith(".dist-info")}
    assert installed == {"helpers"}, "only helpers/ goes into site-packages"
    tiny = site / "helpers" / "tiny_llama3"
    assert {p.name: p.stat().st_size for p in tiny.iterdir()} == {p.name: p.stat().st_size
                                                                   for p in TINY_MODEL_DIR.iterdir()}


def test_the_package_needs_what_requirements_txt_lists_but_jupyter(site):
    """The notebook that installs the course already runs in a Jupyter, which pip must not upgrade."""
    [dist_info] = site.glob("llama3_from_scratch-*.dist-info")
    required = dict(parse(spec) for spec in PathDistribution(dist_info).requires)
    assert required == {name: bound for name, bound in pip_packages().items() if name not in ("jupyter", "nbval")}


def test_a_notebook_outside_the_clone_runs_on_the_installed_package(site, outside_the_clone, monkeypatch):
    if helpers.model.kaggle_model_dirs():
        pytest.skip("a Kaggle input holds a model: find_model would take it before the tiny one")
    monkeypatch.setenv("PYTHONPATH", str(site))
    notebook, _ = runner.execute(outside_the_clone, extra_cells=[WHERE_FROM])
    lines = printed(notebook)
    assert "Model: helpers/tiny_llama3 (the embedded tiny Llama 3; no larger model was found)." in lines
    assert lines[-2:] == [str(site / "helpers" / "model.py"),  # the 8B would be downloaded beside the notebook
                          str(outside_the_clone.parent / "llama-3-8B" / "original")]


def test_in_a_clone_its_helpers_come_before_an_installed_one(site, monkeypatch, capfd):
    monkeypatch.setenv("PYTHONPATH", str(site))
    notebook, _ = runner.execute(REPO_ROOT / "notebooks" / "01_tokenizer.ipynb", extra_cells=[WHERE_FROM])
    assert printed(notebook)[-2:] == [str(REPO_ROOT / "helpers" / "model.py"),
                                      str(REPO_ROOT / "llama-3-8B" / "original")]
    # The kernel writes to the runner's stderr: no warning there either (over TCP, ipykernel warns that
    # the connection is not encrypted; scripts/run_notebooks.py connects by Unix sockets).
    assert "WARNING" not in capfd.readouterr().err


HOW_TO_GET_IT = ['%pip install "git+', "git clone "]


@pytest.mark.parametrize("beside, ename, message", [
    ({}, "ImportError", HOW_TO_GET_IT),
    ({"helpers.py": "def something_else():\n    pass\n"}, "ImportError", HOW_TO_GET_IT),  # not the course's
    # The course's helpers is there, but a package it imports is not: say which, not "install the course".
    ({"helpers/__init__.py": "import tiktoken_not_installed\n"}, "ModuleNotFoundError",
     ["No module named 'tiktoken_not_installed'"]),
], ids=["nothing", "another-helpers-module", "a-missing-dependency"])
def test_without_the_course_the_first_cell_says_how_to_get_it(outside_the_clone, beside, ename, message):
    for name, text in beside.items():
        (outside_the_clone.parent / name).parent.mkdir(exist_ok=True)
        (outside_the_clone.parent / name).write_text(text)
    with pytest.raises(CellExecutionError) as raised:
        runner.execute(outside_the_clone)
    assert raised.value.ename == ename
    assert all(text in raised.value.evalue for text in message), raised.value.evalue
    first_cell = next(c for c in json.loads(NOTEBOOK.read_text())["cells"] if c["cell_type"] == "code")
    assert "".join(first_cell["source"]) in str(raised.value), "it must stop in the first cell"
