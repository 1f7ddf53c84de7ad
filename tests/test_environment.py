"""environment.yml (conda) and requirements.txt (pip) must list the same packages and bounds."""

import ast
import re
import sys
from importlib.metadata import packages_distributions

import nbformat
import yaml

from helpers import REPO_ROOT

CONDA_TO_PIP = {"pytorch": "torch"}


def parse(spec):
    name, bound = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*(.*?)\s*", spec).groups()
    return name.lower().replace("_", "-"), bound


def pip_packages():
    lines = (REPO_ROOT / "requirements.txt").read_text().splitlines()
    return dict(parse(line) for line in lines if line.strip() and not line.startswith("#"))


def conda_packages():
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    packages = {}
    for dep in env["dependencies"]:
        for spec in dep["pip"] if isinstance(dep, dict) else [dep]:
            name, bound = parse(spec)
            packages[CONDA_TO_PIP.get(name, name)] = bound
    assert "conda-forge" in env["channels"]
    return {name: bound for name, bound in packages.items() if name not in ("python", "pip")}


def test_same_packages_and_bounds():
    assert conda_packages() == pip_packages()


def test_requirements_use_lower_bounds_only():
    """An upper bound or a pin would make pip replace Kaggle's preinstalled torch."""
    for name, bound in pip_packages().items():
        assert bound.startswith(">=") and "," not in bound, f"{name}{bound}"


# Modules a platform provides, which the course imports only where it runs there (and survives their absence).
PLATFORM_MODULES = {"kaggle_secrets": "Kaggle's notebooks' secrets (helpers/download.py)"}


def imported_modules(source):
    """The top-level names of the absolute imports in Python source (IPython's % and ! lines left out)."""
    code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
    names = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def what_learners_import():
    """Every module that helpers/ and the notebooks' code cells import, with where each is imported."""
    sources = {str(path.relative_to(REPO_ROOT)): path.read_text() for path in (REPO_ROOT / "helpers").rglob("*.py")}
    for path in sorted((REPO_ROOT / "notebooks").glob("*.ipynb")):
        cells = nbformat.read(path, as_version=4).cells
        sources |= {f"{path.name}, cell {i}": cell.source for i, cell in enumerate(cells) if cell.cell_type == "code"}
    imports = {}
    for where, source in sources.items():
        for name in imported_modules(source):
            imports.setdefault(name, where)
    return imports


def test_every_package_that_helpers_and_the_notebooks_import_is_declared():
    """requirements.txt (and so pyproject.toml and environment.yml, checked above and in test_install.py)
    names the distribution of every module the course imports, but Python's own and the course's."""
    declared = set(pip_packages())
    distributions = packages_distributions()
    undeclared = {}
    for name, where in what_learners_import().items():
        if name in sys.stdlib_module_names or name == "helpers" or name in PLATFORM_MODULES:
            continue
        names = {parse(d)[0] for d in distributions.get(name, [])}
        if not names & declared:
            undeclared[name] = (where, sorted(names) or "no installed distribution")
    assert not undeclared, f"imported but not in requirements.txt: {undeclared}"


def test_the_declaration_check_sees_an_import():
    assert imported_modules("%pip install x\nimport a.b\nfrom c import d\nfrom . import e\n") == {"a", "c"}
