"""Reading Meta's checkpoint folder: params.json and consolidated.00.pth.

The checkpoint is memory-mapped: tensors stay in the file (and the OS page
cache) in bfloat16, and only what a computation touches is read.
"""

import json
import math
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import LlamaError

# The context: 8,192 tokens for Llama 3, 131,072 for Llama 3.1 and later (the
# ones with use_scaled_rope). Meta's params.json does not say so, so a
# `max_seq_len` key is optional.
DEFAULT_MAX_SEQ_LEN = 8192
SCALED_ROPE_MAX_SEQ_LEN = 131072

# Llama 3.1 and later scale RoPE (helpers/rope.py), but Meta's params.json says only
# `use_scaled_rope: true`, not by how much: the factor depends on the model. These are the
# factors of Hugging Face's published config.json for each (rope_scaling.factor), told apart
# here by their width, `dim`.
ROPE_SCALING_BY_DIM = {
    2048: ("Llama 3.2 1B", 32.0),
    3072: ("Llama 3.2 3B", 32.0),
    4096: ("Llama 3.1 8B", 8.0),
    8192: ("Llama 3.1 70B and 3.3 70B", 8.0),
    16384: ("Llama 3.1 405B", 8.0),
}
LLAMA_3_1_FACTOR = 8.0

# Meta-Llama-3-8B's params.json, key for key: the real sizes the diagrams show beside the model's own,
# and the shape scripts/write_synthetic_checkpoint.py writes by default.
LLAMA3_8B_PARAMS = {
    "dim": 4096,
    "n_layers": 32,
    "n_heads": 32,
    "n_kv_heads": 8,
    "vocab_size": 128256,
    "multiple_of": 1024,
    "ffn_dim_multiplier": 1.3,
    "norm_eps": 1e-05,
    "rope_theta": 500000.0,
}

_NUMBER = (int, float)
_REQUIRED = {
    "dim": int,
    "n_layers": int,
    "n_heads": int,
    "n_kv_heads": int,
    "vocab_size": int,
    "multiple_of": int,
    "norm_eps": _NUMBER,
    "rope_theta": _NUMBER,
}
_OPTIONAL = {"ffn_dim_multiplier": _NUMBER, "max_seq_len": int, "use_scaled_rope": bool,
             "rope_scaling_factor": _NUMBER}


@dataclass(frozen=True)
class Params:
    """The hyperparameters in params.json, and the sizes that follow from them."""

    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    multiple_of: int
    norm_eps: float
    rope_theta: float
    ffn_dim_multiplier: float | None = None
    max_seq_len: int = DEFAULT_MAX_SEQ_LEN
    # RoPE's scale factor (Llama 3.1 and later), None for none; and where it came from.
    rope_scaling_factor: float | None = None
    rope_scaling_source: str = ""

    @property
    def head_dim(self):
        return self.dim // self.n_heads

    @property
    def n_rep(self):
        """How many query heads share one key/value head (grouped-query attention)."""
        return self.n_heads // self.n_kv_heads

    @property
    def hidden_dim(self):
        """The feed-forward width: 2/3 of 4*dim, scaled, rounded up to a multiple of `multiple_of`."""
        hidden = int(2 * (4 * self.dim) / 3)
        if self.ffn_dim_multiplier is not None:
            hidden = int(self.ffn_dim_multiplier * hidden)
        return -(-hidden // self.multiple_of) * self.multiple_of


def params_from_dict(raw, source="params.json"):
    """Validate a params.json dictionary and return `Params`."""
    if not isinstance(raw, dict):
        raise LlamaError(f"{source} must hold a JSON object, not {type(raw).__name__}.")
    for key, kind in {**_REQUIRED, **_OPTIONAL}.items():
        if key not in raw:
            if key in _REQUIRED:
                raise LlamaError(
                    f"{source} has no {key!r} key. A Llama 3 params.json has "
                    f"{', '.join(_REQUIRED)} and ffn_dim_multiplier; is this the right file?"
                )
            continue
        value = raw[key]
        if key in ("ffn_dim_multiplier", "rope_scaling_factor") and value is None:
            continue
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # bool is an int in Python; a JSON true is never a valid size.
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            expected = " or ".join(k.__name__ for k in kinds)
            raise LlamaError(
                f"{source}: {key!r} should be {expected}, but it is {value!r} ({type(value).__name__})."
            )
    values = {key: raw[key] for key in (*_REQUIRED, *_OPTIONAL)
              if raw.get(key) is not None and key != "use_scaled_rope"}
    for key in ("dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "multiple_of", "max_seq_len"):
        if key in values and values[key] <= 0:
            raise LlamaError(f"{source}: {key!r} must be positive, but it is {values[key]}.")
    # Python's json reads NaN and Infinity: any of these being either would turn the output into NaN.
    for key in ("norm_eps", "rope_theta", "rope_scaling_factor"):
        if key in values and not (math.isfinite(values[key]) and values[key] > 0):
            raise LlamaError(f"{source}: {key!r} must be a finite number above 0, but it is {values[key]}.")
    if raw.get("use_scaled_rope"):
        values.setdefault("max_seq_len", SCALED_ROPE_MAX_SEQ_LEN)
        if "rope_scaling_factor" in values:
            values["rope_scaling_source"] = "from params.json"
        else:
            values["rope_scaling_factor"], values["rope_scaling_source"] = rope_scaling_for(values["dim"])
    elif "rope_scaling_factor" in values:
        raise LlamaError(f"{source} gives a rope_scaling_factor but not use_scaled_rope: true. Add "
                         "\"use_scaled_rope\": true to scale RoPE, or remove rope_scaling_factor.")
    if values["dim"] % values["n_heads"] or (values["dim"] // values["n_heads"]) % 2:
        raise LlamaError(
            f"{source}: dim ({values['dim']}) must split into n_heads ({values['n_heads']}) heads "
            "of an even size, for RoPE's pairs."
        )
    if values["n_heads"] % values["n_kv_heads"]:
        raise LlamaError(
            f"{source}: n_heads ({values['n_heads']}) must be a multiple of n_kv_heads "
            f"({values['n_kv_heads']}), so that each key/value head serves the same number of query heads."
        )
    return Params(**{k: float(v) if k in ("norm_eps", "rope_theta", "rope_scaling_factor") else v
                     for k, v in values.items()})


def rope_scaling_for(dim):
    """The RoPE scale factor of the Llama 3.1+ model of width `dim`, and a sentence saying why."""
    if dim in ROPE_SCALING_BY_DIM:
        name, factor = ROPE_SCALING_BY_DIM[dim]
        return factor, f"{name}'s factor: params.json says use_scaled_rope, and dim {dim} is {name}'s"
    return LLAMA_3_1_FACTOR, (f"Llama 3.1's factor: params.json says use_scaled_rope, and dim {dim} is "
                              "no model this course knows")


def load_params(model_dir):
    """Read and validate `model_dir/params.json`."""
    path = Path(model_dir) / "params.json"
    if not path.is_file():
        raise LlamaError(f"{path} does not exist. A Llama 3 model folder holds params.json, tokenizer.model "
                         "and consolidated.00.pth; check the path.")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise LlamaError(f"{path} is not valid JSON ({error}). Download it again.") from None
    return params_from_dict(raw, source=str(path))


def expected_shapes(params):
    """Every tensor name in a Meta Llama 3 checkpoint, with the shape params.json implies."""
    p = params
    shapes = {"tok_embeddings.weight": (p.vocab_size, p.dim)}
    for i in range(p.n_layers):
        shapes |= {
            f"layers.{i}.attention.wq.weight": (p.n_heads * p.head_dim, p.dim),
            f"layers.{i}.attention.wk.weight": (p.n_kv_heads * p.head_dim, p.dim),
            f"layers.{i}.attention.wv.weight": (p.n_kv_heads * p.head_dim, p.dim),
            f"layers.{i}.attention.wo.weight": (p.dim, p.n_heads * p.head_dim),
            f"layers.{i}.feed_forward.w1.weight": (p.hidden_dim, p.dim),
            f"layers.{i}.feed_forward.w2.weight": (p.dim, p.hidden_dim),
            f"layers.{i}.feed_forward.w3.weight": (p.hidden_dim, p.dim),
            f"layers.{i}.attention_norm.weight": (p.dim,),
            f"layers.{i}.ffn_norm.weight": (p.dim,),
        }
    shapes |= {"norm.weight": (p.dim,), "output.weight": (p.vocab_size, p.dim)}
    return shapes


def checkpoint_file(model_dir):
    """The single `consolidated.*.pth` file of `model_dir`."""
    files = sorted(Path(model_dir).glob("consolidated.*.pth"))
    if not files:
        raise LlamaError(
            f"No consolidated.00.pth in {model_dir}. Download it (notebook 00) or point to the folder "
            "that has it (for meta-llama/Meta-Llama-3-8B, the `original/` subfolder)."
        )
    if len(files) > 1:
        raise LlamaError(
            f"{model_dir} holds {len(files)} checkpoint shards; this course loads single-file checkpoints "
            "such as Meta-Llama-3-8B's. The 70B model is split across 8 files and needs 140 GB anyway."
        )
    if files[0].is_dir():
        raise LlamaError(
            f"{files[0]} is a directory, not a file: Meta's checkpoint is a single file (16 GB for the 8B). "
            "Delete or rename the directory, then download the file again (notebook 00) or copy it there."
        )
    return files[0]


def load_weights(model_dir, params):
    """Memory-map the checkpoint and check every tensor against `params`.

    Returns a dict of tensors whose storage is the file itself: nothing is
    copied into memory until a computation reads it.
    """
    path = checkpoint_file(model_dir)
    try:
        weights = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's own message suggests weights_only=False: the one thing not to do with this file.
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        raise LlamaError(
            f"{path} holds objects other than tensors, and was refused: it asks for "
            f"{found[1] if found else 'a Python object'}, and loading it fully could run code hidden in "
            "the file. Only load checkpoints from Meta or this course."
        ) from None
    except (RuntimeError, zipfile.BadZipFile, EOFError, OSError, ValueError) as error:
        if "mmap can only be used" in str(error):  # torch found no zip file at all
            with open(path, "rb") as f:
                head = f.read(24)
            what = f"its first bytes are {head!r}" if head else "it is empty"
            raise LlamaError(
                f"{path} is not a zip-format PyTorch checkpoint like Meta's consolidated.00.pth "
                f"({what}): an interrupted download, "
                "an old torch.save file, a plain pickle, or another file saved under this name. "
                "Download Meta's original/consolidated.00.pth again."
            ) from None
        raise LlamaError(
            f"{path} ({path.stat().st_size:,} bytes) cannot be read as a PyTorch checkpoint: "
            f"{_first_line(error)}. It is probably truncated (an interrupted download): "
            "delete it and download it again."
        ) from None
    if not isinstance(weights, dict):
        raise LlamaError(f"{path} holds a {type(weights).__name__}, not a dictionary of named tensors.")
    # Llama 3.2 1B and 3B have no output.weight: their output layer is the embedding table itself
    # ("tied" weights). Share the tensor, never copy it (a copy would be 0.5 to 0.8 GB for nothing).
    if "output.weight" not in weights and "tok_embeddings.weight" in weights:
        weights["output.weight"] = weights["tok_embeddings.weight"]
    check_weights(weights, params, source=str(path))
    return weights


def check_weights(weights, params, source="the checkpoint"):
    """Raise a clear error if names or shapes disagree with params.json."""
    expected = expected_shapes(params)
    missing = [name for name in expected if name not in weights]
    if missing:
        raise LlamaError(
            f"{source} has no tensor {missing[0]!r} ({len(missing)} missing in all), though params.json "
            f"says n_layers={params.n_layers}. The checkpoint and params.json come from different models, "
            "or the file is incomplete."
        )
    unexpected = [name for name in weights if name not in expected]
    if unexpected:
        layers = [int(found[1]) for name in unexpected if (found := re.match(r"layers\.(\d+)\.", name))]
        if layers and max(layers) >= params.n_layers:
            why = f"params.json says n_layers={params.n_layers}, but the checkpoint has {max(layers) + 1} layers."
        else:
            why = "The checkpoint and params.json come from different models, or the file holds other tensors."
        named = ", ".join(map(repr, unexpected[:3])) + (", ..." if len(unexpected) > 3 else "")
        raise LlamaError(
            f"{source} holds {len(unexpected)} tensor{'s' if len(unexpected) != 1 else ''} that params.json does "
            f"not explain ({named}). {why} "
            "Computing with part of the weights would give wrong output without a warning: take params.json "
            "from the same download as the checkpoint."
        )
    for name, shape in expected.items():
        tensor = weights[name]
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
            raise LlamaError(f"{source}: {name!r} is not a floating-point tensor.")
        if tuple(tensor.shape) != shape:
            raise LlamaError(
                f"{source}: {name!r} has shape {tuple(tensor.shape)}, but params.json implies {shape}. "
                "params.json and the checkpoint come from different models."
            )


def _first_line(error):
    """The first sentence of an error message: torch adds paragraphs of advice after it."""
    text = str(error).strip()
    return text.splitlines()[0].split(". ")[0].rstrip(".") if text else type(error).__name__
