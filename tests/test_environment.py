"""environment.yml (conda) and requirements.txt (pip) must list the same packages and bounds."""

import re

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
