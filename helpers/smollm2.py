"""SmolLM2-135M-Instruct, a real trained model with Llama's architecture (Apache-2.0), for the notebooks
to show what the same code does on trained weights: where the course keeps it once converted
(`scripts/fetch_smollm2.py`, `make smollm2`), as a Hugging Face-format folder with its own tokenizer."""

from pathlib import Path

NAME = "SmolLM2-135M-Instruct"
FILES = ("config.json", "model.safetensors", "tokenizer.json")
# The package the conversion reads GGUF files with, at the version the course tests (requirements-test.txt).
GGUF = "gguf==0.19.0"
# The Kaggle dataset (scripts/package_course.py) has the fetch script beside package/, the folder that holds
# helpers/. Not resolved, so that it is the path under /kaggle/input that the notebook's first cell put on sys.path.
DATASET_SCRIPT = Path(__file__).parent.parent.parent / "scripts" / "fetch_smollm2.py"


def default_dir():
    """Where the converted model lives: .cache/ in a clone of the course, else the working folder's."""
    from .model import DOWNLOAD_ROOT
    return DOWNLOAD_ROOT / ".cache" / NAME


def how_to_fetch():
    """How to fetch and convert the model from where the course is: a clone, the Kaggle dataset, or pip."""
    from .model import IN_CLONE
    if IN_CLONE:
        return "`make smollm2` (or `python scripts/fetch_smollm2.py`) fetches and converts it, a 93 MB download."
    if DATASET_SCRIPT.is_file():
        return ("To fetch and convert it (a 93 MB download), turn this notebook's Internet on (on Kaggle: "
                f"Settings > Internet on) and run in a cell\n    %pip install {GGUF}\n    %run {DATASET_SCRIPT}\n"
                "then this cell and the ones after it again.")
    return "They need a clone of the course, where `make smollm2` fetches and converts it (a 93 MB download)."


def find_smollm2(folder=None):
    """The converted model's folder, or None after saying how to make it."""
    folder = Path(folder or default_dir())
    if all((folder / name).is_file() for name in FILES):
        return folder
    print(f"{NAME} is not in .cache/, so the cells that use it are skipped. {how_to_fetch()}")
    return None
