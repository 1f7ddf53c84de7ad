"""The course installed with pip, for a notebook opened outside a clone (Colab, a laptop): `make wheel`,
then `%pip install` the wheel and open the notebook alone.

The wheel is built as `make wheel` builds it (scripts/package_course.py, from a copy of the sources, with no
network) and installed with `pip --target` into a folder of its own, without its dependencies (this
environment has them). A notebook copied out of the repository then runs on it with that folder on
PYTHONPATH. (tests/test_kaggle.py runs every notebook from the same package, attached as a Kaggle Dataset.)
"""

import json
import subprocess
import sys
from importlib.metadata import PathDistribution

import pytest

import helpers.model
from helpers import REPO_ROOT, TINY_MODEL_DIR

from conftest import load_script
from test_environment import parse, pip_packages

runner = load_script("scripts/run_notebooks.py")
packaging = load_script("scripts/package_course.py")

# The fastest notebook that loads the tiny model, and checks its own code against helpers.
NOTEBOOK = REPO_ROOT / "notebooks" / "02_embeddings_rmsnorm.ipynb"
WHERE_FROM = "import helpers.model; print(helpers.model.__file__); print(helpers.model.DOWNLOAD_DIR)"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A folder holding the course as `pip install` of the wheel puts it into site-packages."""
    wheel = packaging.build_wheel(tmp_path_factory.mktemp("wheel"))
    site = tmp_path_factory.mktemp("site")
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
           "--no-index", "--target", str(site), str(wheel)]
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
    """The lines a notebook printed, its stdout outputs joined first: Jupyter may cut a printed line in two."""
    return "".join(output["text"] for cell in notebook.cells for output in cell.get("outputs", [])
                   if output.get("name") == "stdout").splitlines()


def test_the_package_holds_helpers_and_the_tiny_model(site):
    installed = {p.name for p in site.iterdir() if not p.name.endswith(".dist-info")}
    assert installed == {"helpers"}, "only helpers/ goes into site-packages"
    tiny = site / "helpers" / "tiny_llama3"
    assert {p.name: p.stat().st_size for p in tiny.iterdir()} == {p.name: p.stat().st_size
                                                                   for p in TINY_MODEL_DIR.iterdir()}


def test_the_package_holds_every_module_of_helpers(site):
    """A subpackage such as helpers/check/ is installed only when pyproject.toml lists it."""
    def modules(root):
        return {str(p.relative_to(root)) for p in (root / "helpers").rglob("*.py")}
    assert modules(site) == modules(REPO_ROOT)


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
