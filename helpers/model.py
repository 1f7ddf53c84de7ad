"""Finding a Llama 3 model folder and loading it.

A model folder is in Meta's layout (params.json, tokenizer.model, consolidated.00.pth) or in Hugging
Face's (config.json, model*.safetensors, tokenizer.json: helpers/hf_format.py). `find_model` looks, in
order, at:

1. the path given to it;
2. the LLAMA3_DIR environment variable;
3. Kaggle inputs (under /kaggle/input, in either of Kaggle's mount layouts) that hold a model in either
   format ("pytorch" and "transformers" variations), in the order of their paths;
4. the folders where `download_llama3` puts each model of `MODELS`: llama-3-8B/original in the
   repository for Meta-Llama-3-8B, Llama-3.2-1B/original for Llama 3.2 1B, and so on, then the folders
   above them, where a download of Hugging Face's format lands (installed with pip: in the folder Python
   started in, such as /kaggle/working or /content);
5. the embedded tiny Llama 3 in data/tiny-llama3 (installed with pip: helpers/tiny_llama3).
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .checkpoint import load_weights
from .errors import LlamaError
from .hf_format import CONFIG, INDEX, SINGLE, hf_params, is_hf_model_dir, load_hf_weights
from .hf_tokenizer import HFTokenizer
from .params import LAYER_KEYS, MODELS, Params, load_params
from .rope import with_scaling_factor
from .tokenizer import Tokenizer
from .tokenizer_json import NotLlama3Tokenizer

REPO_ROOT = Path(__file__).resolve().parent.parent  # installed with pip, this is site-packages
# A clone has data/tiny-llama3 beside helpers/. Installed with pip (pyproject.toml), the tiny model is
# inside the package, and the 8B is downloaded into the working folder rather than into site-packages.
IN_CLONE = (REPO_ROOT / "data" / "tiny-llama3").is_dir()
TINY_MODEL_DIR = REPO_ROOT / "data" / "tiny-llama3" if IN_CLONE else Path(__file__).resolve().parent / "tiny_llama3"
DOWNLOAD_ROOT = REPO_ROOT if IN_CLONE else Path.cwd()
DEFAULT_REPO = "meta-llama/Meta-Llama-3-8B"

def download_dir(repo_id=DEFAULT_REPO):
    """Where `download_llama3(repo_id=...)` puts a model's original/ files, and `find_model` looks."""
    name = "llama-3-8B" if repo_id == DEFAULT_REPO else repo_id.split("/")[-1]
    return DOWNLOAD_ROOT / name / "original"


DOWNLOAD_DIR = download_dir()
# Where Kaggle mounts a notebook's inputs. The course's tests point LLAMA3_KAGGLE_INPUT at a folder of their own.
KAGGLE_INPUT = Path(os.environ.get("LLAMA3_KAGGLE_INPUT", "/kaggle/input"))

def is_meta_model_dir(path):
    path = Path(path)
    return (path / "params.json").is_file() and any(path.glob("consolidated.*.pth"))


def model_format(path):
    """"meta" for Meta's files (params.json, consolidated.*.pth), "hf" for Hugging Face's (config.json,
    model*.safetensors), None for neither. A folder holding both is read as Meta's."""
    return "meta" if is_meta_model_dir(path) else "hf" if is_hf_model_dir(path) else None


def is_model_dir(path):
    return model_format(path) is not None


def kaggle_model_dirs(max_depth=6):
    """Model folders among the notebook's Kaggle inputs, in the order of their paths.

    Kaggle Models sit up to six folders down: /kaggle/input/models/<owner>/<model>/<framework>/<variation>/
    <version> in the type-prefixed layout, /kaggle/input/<model>/<framework>/<variation>/<version> in the
    legacy one. A copy of the course (an attached course dataset) holds the tiny model: it is not an input.
    """
    found, level = [], [KAGGLE_INPUT] if KAGGLE_INPUT.is_dir() else []
    for _ in range(max_depth + 1):
        found += [d for d in level if is_model_dir(d)]
        level = sorted(sub for d in level if not is_model_dir(d) and not (d / "helpers" / "__init__.py").is_file()
                       for sub in d.iterdir() if sub.is_dir())
    return sorted(found)


def shown(path):
    """`path` relative to the repository when it lies inside it, so outputs do not depend on the machine."""
    path = Path(path).resolve()
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def downloaded_model_dirs():
    """The folders where notebook 00 downloads each model of `MODELS` (original/, or the folder above it for
    Hugging Face's format) that hold a model, in the order of `MODELS`."""
    return [d for repo in MODELS for d in (download_dir(repo), download_dir(repo).parent) if is_model_dir(d)]


def what_it_holds(path):
    """For a path that is not a model folder: that it does not exist, is a file, holds a model folder (original/, as
    a Hugging Face repository's root does), or which of the files a model needs it has."""
    if not path.exists():
        return "it does not exist"
    if not path.is_dir():
        return f"it is a file: give its folder, {path.parent}" if is_model_dir(path.parent) else "it is a file"
    inside = [sub for sub in sorted(path.iterdir(), key=lambda sub: sub.name != "original") if is_model_dir(sub)]
    if inside:
        return f"its subfolder {inside[0].name}/ is one: give {inside[0]}"
    needed = ["params.json", "consolidated.00.pth", CONFIG, SINGLE, INDEX]
    found = [name for name in needed if (path / name).exists()]
    return f"it has {' and '.join(found)}, but not the rest" if found else "it holds none of these"


def find_model(path=None, verbose=True):
    """The folder of the model to use, chosen in the order of this module's docstring."""
    others = []
    if path is None and os.environ.get("LLAMA3_DIR"):
        path, reason, fix = os.environ["LLAMA3_DIR"], "from LLAMA3_DIR", "Fix LLAMA3_DIR, or unset it"
    else:
        reason, fix = "the path you gave", "Fix the path, or leave it out"
    if path is not None:
        path = Path(path).expanduser()
        if not is_model_dir(path):
            raise LlamaError(
                f"{path} ({reason}) is not a Llama 3 model folder: it needs params.json and "
                "consolidated.00.pth (Meta's format, as in the original/ subfolder of meta-llama/Meta-Llama-3-8B), "
                "or config.json and model.safetensors or model.safetensors.index.json (Hugging Face's format); "
                f"{what_it_holds(path)}. {fix} to use the embedded tiny model."
            )
    elif kaggle := kaggle_model_dirs():
        (path, *others), reason = kaggle, "a Kaggle input"
    elif downloaded := downloaded_model_dirs():
        (path, *others), reason = downloaded, "downloaded by notebook 00"
    else:
        path, reason = TINY_MODEL_DIR, "the embedded tiny Llama 3; no larger model was found"
    if verbose:
        hf = ", Hugging Face format" if model_format(path) == "hf" else ""  # Meta's format: said by no word
        print(f"Model: {shown(path)} ({reason}{hf}).")
        if others:
            print(f"Also found: {', '.join(map(shown, others))}.")
        print("To use another model, pass its folder to load_model() or --model, or set LLAMA3_DIR.")
    return path


@dataclass
class Llama:
    """A loaded model: its folder, hyperparameters, memory-mapped weights and tokenizer."""

    path: Path
    params: Params
    weights: dict
    tokenizer: Tokenizer

    def layer(self, i):
        """Layer i's weights under short names: wq, wk, wv, wo, w1, w2, w3, attention_norm, ffn_norm."""
        return {short: self.weights[f"layers.{i}.{key}"] for short, key in LAYER_KEYS.items()}

    @property
    def tied_output(self):
        """True when the output layer is the embedding table itself (Llama 3.2 1B and 3B)."""
        return self.weights["output.weight"] is self.weights["tok_embeddings.weight"]

    @property
    def is_tiny(self):
        return Path(self.path).resolve() == TINY_MODEL_DIR.resolve()


def load_tokenizer(model_dir):
    """The model folder's own tokenizer.model, else its tokenizer.json (Llama 3's vocabulary: the course's
    tokenizer; another: `HFTokenizer`, which stops at the eos_token_id of config.json), else Meta's copy in
    llama-models when the folder has neither."""
    folder = Path(model_dir)
    if (folder / "tokenizer.model").exists():
        return Tokenizer(folder / "tokenizer.model")
    if (folder / "tokenizer.json").exists():
        try:
            return Tokenizer(folder / "tokenizer.json")
        except NotLlama3Tokenizer:
            eos = json.loads((folder / "config.json").read_text(encoding="utf-8-sig")).get("eos_token_id")
            return HFTokenizer(folder / "tokenizer.json", stop_ids=eos if isinstance(eos, list) else [eos])
    return Tokenizer(None)


def tokenizer_for(model_dir, params, source):
    """The tokenizer of the model in `model_dir`, checked against the vocabulary its params (from `source`) give."""
    tokenizer = load_tokenizer(model_dir)
    if tokenizer.n_vocab != params.vocab_size:
        raise LlamaError(
            f"{source} says vocab_size={params.vocab_size}, but the tokenizer has {tokenizer.n_vocab} tokens "
            f"({tokenizer.path.name}). Llama 3 has 128,256: are the two from the same model?"
        )
    return tokenizer


def load_model(path=None, verbose=True, rope_scaling_factor=None):
    """Find, check and memory-map a model; see `find_model` for where it looks.

    `rope_scaling_factor` overrides the RoPE scale factor of a Llama 3.1+ model (helpers/rope.py's
    `rope_scaling_for` says how it is chosen otherwise).
    """
    model_dir = find_model(path, verbose=verbose)
    hf = model_format(model_dir) == "hf"
    params = hf_params(model_dir) if hf else load_params(model_dir)
    if rope_scaling_factor is not None:
        params = with_scaling_factor(params, rope_scaling_factor, where=str(model_dir))
    if verbose and params.rope_scaling_factor:
        print(f"RoPE: scaled by {params.rope_scaling_factor:g} ({params.rope_scaling_source}); context "
              f"{params.max_seq_len:,} tokens.")
        print("To choose another factor, pass rope_scaling_factor= to load_model() or --rope-scaling-factor.")
    tokenizer = tokenizer_for(model_dir, params, "config.json" if hf else "params.json")
    weights = load_hf_weights(model_dir, params) if hf else load_weights(model_dir, params)
    return Llama(Path(model_dir), params, weights, tokenizer)
