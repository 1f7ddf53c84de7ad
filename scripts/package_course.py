"""Package the course for a notebook opened outside a clone.

    python scripts/package_course.py wheel                 # dist/llama3_from_scratch-0.1.0-py3-none-any.whl
    python scripts/package_course.py kaggle --owner NAME   # dist/kaggle/, to upload as one Kaggle Dataset

The wheel holds `helpers` and the embedded tiny Llama 3 (pyproject.toml), for `%pip install` on Colab or
a laptop. The Kaggle folder holds that wheel; the same package unpacked in package/, which a notebook's
first cell puts on sys.path (Kaggle notebooks often run with Internet off, so nothing is installed);
the notebooks, English and Chinese (notebooks/zh/); the exercises' solutions (solutions/, as in a clone);
scripts/fetch_smollm2.py, which fetches the optional real model there once Internet is on; and
dataset-metadata.json. The `llama-models`
package, where the course finds Meta's tokenizer.model, is not on Kaggle: package/ also holds the few
of its files that Llama 3's tokenizer needs. The owner of the dataset comes from --owner, else
KAGGLE_USERNAME, else ~/.kaggle/kaggle.json; with none, nothing is written.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from importlib import resources
from importlib.metadata import version
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# What building the package reads from a clone; a file pyproject.toml starts to need must be added here.
SOURCES = ["pyproject.toml", "README.md", "helpers", "data/tiny-llama3"]
DIST = REPO_ROOT / "dist"
SLUG = "llama3-from-scratch"
TITLE = "Llama 3 from scratch"
SUBTITLE = "The notebook course's package, its tiny Llama 3 and its notebooks"
# The files of Meta's llama-models package that Llama 3's tokenizer needs (the package is not on Kaggle).
LLAMA_MODELS_FILES = ["__init__.py", "tokenizer_utils.py", "llama3/__init__.py", "llama3/tokenizer.py",
                      "llama3/tokenizer.model"]
# What the dataset holds beside package/, where a notebook's text points a learner (paths as in a clone). The
# wheel holds none of it: it is for import, and these are files to read or run.
BESIDE_PACKAGE = ["solutions", "scripts/fetch_smollm2.py"]
LICENCE_NOTE = (
    "package/llama_models holds the files of Meta's llama-models package that Llama 3's tokenizer needs, "
    "copied unchanged; tokenizer.model is distributed under the Llama 3 Community License "
    "(https://llama.meta.com/llama3/license/)."
)


class PackagingError(Exception):
    """Something the command cannot do, with what to do about it."""


def run_pip(*args):
    result = subprocess.run([sys.executable, "-m", "pip", *args, "--quiet", "--disable-pip-version-check"],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise PackagingError(f"pip {args[0]} failed:\n{result.stdout}{result.stderr}")


def copy_from_clone(names, folder):
    """Copy files and folders of the clone, by their paths in it, to the same paths under `folder`."""
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        if (REPO_ROOT / name).is_dir():
            shutil.copytree(REPO_ROOT / name, folder / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(REPO_ROOT / name, folder / name)


def build_wheel(out_dir):
    """Build the course's wheel into `out_dir` from a copy of the sources, so that the build's build/ and
    *.egg-info folders never land in the repository. Needs setuptools 70.1 or later (no network)."""
    with tempfile.TemporaryDirectory(prefix="course-source-") as source:
        copy_from_clone(SOURCES, Path(source))
        with tempfile.TemporaryDirectory(prefix="course-wheel-") as built:
            try:
                run_pip("wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", built, source)
            except PackagingError as error:
                raise PackagingError(f"{error}\nBuilding the wheel needs setuptools 70.1 or later in this "
                                     "environment: pip install 'setuptools>=70.1'") from None
            [wheel] = Path(built).glob("*.whl")
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            return Path(shutil.move(str(wheel), Path(out_dir) / wheel.name))


def kaggle_owner(owner=None):
    """The Kaggle username the dataset's id starts with: `owner`, else KAGGLE_USERNAME, else kaggle.json."""
    config = Path(os.environ.get("KAGGLE_CONFIG_DIR", Path.home() / ".kaggle")) / "kaggle.json"
    if owner:
        where = "--owner"
    elif os.environ.get("KAGGLE_USERNAME"):
        owner, where = os.environ["KAGGLE_USERNAME"], "KAGGLE_USERNAME"
    elif config.is_file():
        try:
            owner, where = json.loads(config.read_text())["username"], str(config)
        except (ValueError, KeyError, TypeError):
            raise PackagingError(f"{config} has no \"username\": download a new API token from Kaggle "
                                 "(Settings, API, Create New Token), or pass --owner.") from None
    else:
        raise PackagingError(
            f"Whose Kaggle dataset is this? Its id is your Kaggle username, a slash and {SLUG}, and no "
            "username was found: pass it (make kaggle OWNER=yourname, or --owner yourname), set "
            f"KAGGLE_USERNAME, or put Kaggle's API token in {config}.")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,49}", owner):
        raise PackagingError(f"{owner!r} (from {where}) is not a Kaggle username: letters, digits, '-' and '_'.")
    return owner


def metadata(owner):
    """dataset-metadata.json, as `kaggle datasets create` reads it."""
    return {"title": TITLE, "subtitle": SUBTITLE, "id": f"{owner}/{SLUG}", "licenses": [{"name": "other"}],
            "description": "The package and notebooks of the course Llama 3 from scratch. Attach this dataset "
                           "to a notebook and run the notebook's first cell: it imports the course from "
                           "package/. The exercises' solutions are in solutions/ (solutions/01_tokenizer.py and "
                           "so on). scripts/fetch_smollm2.py fetches SmolLM2-135M-Instruct, the real model of the "
                           "notebooks' optional sections, once the notebook's Internet is on; those sections say "
                           "how when it is missing. "
                           f"{LICENCE_NOTE}"}


def copy_meta_tokenizer(package):
    """Copy into `package` the part of Meta's `llama-models` that holds Llama 3's tokenizer: its
    tokenizer.model, which the tiny model uses, and the reference tokenizer notebook 01 compares with."""
    try:
        source = Path(resources.files("llama_models"))
    except ModuleNotFoundError:
        raise PackagingError("Meta's tokenizer comes from the llama-models package, which is not installed "
                             "here: pip install -r requirements.txt") from None
    for name in LLAMA_MODELS_FILES:
        if not (source / name).is_file():
            raise PackagingError(f"llama-models {version('llama-models')} has no {name}; this script knows the "
                                 "layout of versions 0.1 to 0.3: pip install 'llama-models<0.4'")
        (package / "llama_models" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source / name, package / "llama_models" / name)


def build_kaggle(out_dir, owner):
    """Write the dataset folder at `out_dir`, replacing an earlier one whole, or leaving it as it was."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not (out_dir / "dataset-metadata.json").is_file():
        raise PackagingError(f"{out_dir} exists and is not a dataset folder this command wrote: "
                             "choose another --out, or move it away.")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".kaggle-", dir=out_dir.parent) as work:
        new = Path(work) / "dataset"
        wheel = build_wheel(new)
        run_pip("install", "--no-deps", "--no-index", "--no-compile", "--target", str(new / "package"), str(wheel))
        # pip records where it installed from, a temporary folder of this machine's: not for the dataset
        [record] = (new / "package").glob("*.dist-info/direct_url.json")
        record.unlink()
        copy_meta_tokenizer(new / "package")
        (new / "notebooks" / "zh").mkdir(parents=True)
        for notebook in sorted((REPO_ROOT / "notebooks").glob("*.ipynb")):
            shutil.copy(notebook, new / "notebooks")
        for notebook in sorted((REPO_ROOT / "notebooks" / "zh").glob("*.ipynb")):  # the Chinese edition
            shutil.copy(notebook, new / "notebooks" / "zh")
        copy_from_clone(BESIDE_PACKAGE, new)
        (new / "dataset-metadata.json").write_text(json.dumps(metadata(owner), indent=2) + "\n")
        (new / "NOTICE.txt").write_text(LICENCE_NOTE + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        new.rename(out_dir)
    return out_dir


def size_mb(path):
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 1e6


def main(argv=None):
    parser = argparse.ArgumentParser(description="Package the course as a wheel, or as a Kaggle Dataset folder.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("wheel", help="build dist/llama3_from_scratch-*.whl")
    kaggle = commands.add_parser("kaggle", help="write dist/kaggle/, a folder to upload as one Kaggle Dataset")
    kaggle.add_argument("--owner", help="your Kaggle username (default: KAGGLE_USERNAME, or ~/.kaggle/kaggle.json)")
    kaggle.add_argument("--out", type=Path, default=DIST / "kaggle", help="the folder to write (default: dist/kaggle)")
    args = parser.parse_args(argv)
    try:
        if args.command == "wheel":
            for old in DIST.glob("llama3_from_scratch-*.whl"):
                old.unlink()
            wheel = build_wheel(DIST)
            print(f"{wheel} ({wheel.stat().st_size / 1e6:.1f} MB): %pip install it on Colab or a laptop.")
        else:
            owner = kaggle_owner(args.owner)
            out = build_kaggle(args.out, owner)
            print(f"{out} ({size_mb(out):.1f} MB), the dataset {metadata(owner)['id']}. Upload it with\n"
                  f"    kaggle datasets create -p {out} --dir-mode zip\n"
                  "or on kaggle.com: Datasets, New Dataset, and drop in everything the folder holds.")
    except PackagingError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
