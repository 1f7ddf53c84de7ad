"""docs/architecture.md names every module of helpers/."""

from helpers import REPO_ROOT


def helpers_modules():
    """helpers/*.py and the modules of helpers/check/ where it is a package, but __init__ and __main__."""
    modules = [*(REPO_ROOT / "helpers").glob("*.py"), *(REPO_ROOT / "helpers").glob("check/*.py")]
    return sorted(str(p.relative_to(REPO_ROOT / "helpers")) for p in modules
                  if p.stem not in ("__init__", "__main__"))


def test_every_helpers_module_is_in_the_architecture_page():
    page = (REPO_ROOT / "docs" / "architecture.md").read_text()
    missing = [name for name in helpers_modules() if f"`{name}`" not in page]
    assert not missing, f"docs/architecture.md does not name {', '.join(missing)}: say what each holds"


def test_no_helpers_module_is_over_300_lines():
    lines = {name: len((REPO_ROOT / "helpers" / name).read_text().splitlines()) for name in helpers_modules()}
    long = {name: n for name, n in lines.items() if n > 300}
    assert not long, f"split these modules: {long}"
